"""One writer per run folder: `<run>/.lock` holds the pid, host and start time of the command writing it.

    with RunLock(run.root / ".lock", command="pipeline run recipes/tiny.yaml"):
        ...                                   # stages run; a second command on the folder is refused

The lock file is created with `O_CREAT | O_EXCL`, so of two commands starting at once exactly one gets it. A
second command gets a `PipelineError` naming the holder. A lock left by a process that is gone (same host, pid no
longer running, e.g. after SIGKILL) is stale: it is taken over with a warning. A lock from another host cannot be
checked and is never taken over: the message says which file to remove once that run is known to be dead.
In an `accelerate launch`, only the main process takes the lock; the other ranks belong to the same command.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from pipeline.errors import PipelineError


class RunLock:
    """Exclusive ownership of a run folder for one process (`with RunLock(path): ...`)."""

    def __init__(self, path: Path, command: str = ""):
        self.path = Path(path)
        self.command = command
        self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": self.command}
        for _ in range(2):  # a second try only after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(self.path)
                if holder is None or not is_stale(holder):
                    raise PipelineError(busy_message(self.path, holder)) from None
                print(f"warning: {self.path}: taking over a stale lock of pid {holder['pid']} (no longer running)",
                      file=sys.stderr)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self.held = True
            return
        raise PipelineError(busy_message(self.path, read_holder(self.path)))

    def release(self) -> None:
        if self.held:
            holder = read_holder(self.path)
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False


def read_holder(path: Path) -> dict | None:
    """The lock's record, or None when it cannot be read (being written right now, or not JSON)."""
    try:
        holder = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):  # gone, a folder, unreadable, not JSON
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def is_stale(holder: dict) -> bool:
    """True when the holder ran on this host and its pid is no longer a running process."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by another user
        return False
    return False


def busy_message(path: Path, holder: dict | None) -> str:
    folder = Path(path).parent
    if holder is None:
        return f"{folder}: in use by another command (lock {path} is being written or unreadable); remove it if no command is running"
    what = f" ({holder['command']})" if holder.get("command") else ""
    return (f"{folder}: in use by pid {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')}{what}; "
            f"wait for it to finish, or remove {path} if that process is gone")
