"""One writer per run folder: a second command is refused with the holder named; a dead holder's lock is taken."""

import json
import os
import socket
import subprocess
import sys

import pytest

from pipeline.errors import PipelineError
from pipeline.run_lock import RunLock


def test_second_holder_is_refused_with_pid_and_host(tmp_path):
    path = tmp_path / "run" / ".lock"
    with RunLock(path, command="pipeline run a.yaml"):
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(PipelineError) as refused:
            RunLock(path).acquire()
        message = str(refused.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message and "(pipeline run a.yaml)" in message
        assert "\n" not in message
    assert not path.exists()  # released
    RunLock(path).acquire()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    path = tmp_path / ".lock"
    gone = dead_pid()
    path.write_text(json.dumps({"pid": gone, "host": socket.gethostname(), "since": "earlier"}))
    with RunLock(path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"taking over the lock of pid {gone}, no longer running" in capsys.readouterr().err


def test_lock_from_another_host_is_never_taken(tmp_path):
    path = tmp_path / ".lock"
    path.write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere.example", "since": "earlier"}))
    with pytest.raises(PipelineError, match="in use by pid .* on elsewhere.example"):
        RunLock(path).acquire()
    assert json.loads(path.read_text())["host"] == "elsewhere.example"


def test_release_leaves_a_lock_someone_else_took(tmp_path):
    path = tmp_path / ".lock"
    lock = RunLock(path)
    lock.acquire()
    path.write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))  # e.g. taken over after a long pause
    lock.release()
    assert path.exists()


def test_second_pipeline_command_on_the_same_folder_exits_2_naming_the_holder(fake_stages, tmp_path, capsys):
    from pipeline.cli import main

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("alpha: {value: 5}\n")
    with RunLock(folder / ".lock", command="pipeline run other.yaml"):
        assert main(["stage", "alpha", "--run", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pid {os.getpid()}" in err[0] and "other.yaml" in err[0]
    assert not (folder / "alpha").exists()
    assert main(["stage", "alpha", "--run", str(folder)]) == 0


RACER = """
import sys, time
from pipeline.errors import PipelineError
from pipeline.run_lock import RunLock
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
try:
    with RunLock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(1.0)
except PipelineError:
    print("refused", flush=True)
"""


@pytest.mark.parametrize("stale", [False, True])
def test_of_processes_racing_for_a_lock_exactly_one_gets_it(tmp_path, stale):
    import time

    path = tmp_path / ".lock"
    if stale:  # a dead holder's file: every racer may try to take it over, one must win
        path.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "since": "earlier"}))
    start = time.time() + 1.5
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(path), str(start)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True) for _ in range(4)]
    outcomes = sorted(racer.communicate(timeout=60)[0].strip() for racer in racers)
    assert outcomes == ["held", "refused", "refused", "refused"]
    assert not path.exists()
