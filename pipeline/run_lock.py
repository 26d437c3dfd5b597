"""One writer per run folder: `<run>/.lock` holds the pid, host and start time of the command writing it.

    with RunLock(run.root / ".lock", command="pipeline run recipes/tiny.yaml"):
        ...                                   # stages run; a second command on the folder is refused

The lock is the kernel's (`fcntl.flock` on the file, non-blocking): of two commands starting at once exactly
one gets it, and it is released when its process ends, however it ends. The file's record (pid, host, since,
command) only names the holder in the refusal a second command gets. A file left by a process that is gone
(SIGKILL) holds no flock: it is taken over with a warning. A record from another host is never taken over (a
flock on a shared disk may not be visible from here): the message says which file to remove once that run is
known to be dead. In an `accelerate launch`, only the main process takes the lock; the other ranks belong to the
same command.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from pipeline.artifacts import read_json_object
from pipeline.errors import PipelineError


class RunLock:
    """Exclusive ownership of a run folder for one process (`with RunLock(path): ...`)."""

    def __init__(self, path: Path, command: str = ""):
        self.path = Path(path)
        self.command = command
        self.held = False
        self.fd = -1

    @classmethod
    def of_run(cls, folder) -> "RunLock":
        """The lock of run folder `folder` (`<folder>/.lock`), recorded with this process's command line."""
        return cls(Path(folder) / ".lock", command=" ".join(sys.argv))

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # again only if the file was replaced between our open and our lock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:  # a folder in its place, no permission
                raise PipelineError(busy_message(self.path, None)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise PipelineError(busy_message(self.path, read_holder(self.path))) from None
            if not self._same_file(fd):  # released and removed by its holder after our open: take the new one
                os.close(fd)
                continue
            holder = read_holder(self.path)
            if holder is not None and holder.get("host") != socket.gethostname():
                os.close(fd)  # another machine's lock on a shared disk: its flock may be invisible from here
                raise PipelineError(busy_message(self.path, holder))
            if holder is not None and holder.get("pid") != os.getpid():
                print(f"warning: {self.path}: taking over the lock of pid {holder['pid']}, no longer running",
                      file=sys.stderr)
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": self.command}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            os.fsync(fd)
            self.fd, self.held = fd, True
            return
        raise PipelineError(busy_message(self.path, read_holder(self.path)))

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.held:
            holder = read_holder(self.path)
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)  # while still holding the flock: no one can take it in between
            os.close(self.fd)  # releases the flock
            self.held = False


def read_holder(path: Path) -> dict | None:
    """The lock's record, or None when it cannot be read (gone, a folder, not JSON, no pid)."""
    holder = read_json_object(Path(path))
    return holder if holder is not None and isinstance(holder.get("pid"), int) else None


def busy_message(path: Path, holder: dict | None) -> str:
    folder = Path(path).parent
    if holder is None:
        return f"{folder}: in use by another command (lock {path} is being written or unreadable); remove it if no command is running"
    what = f" ({holder['command']})" if holder.get("command") else ""
    return (f"{folder}: in use by pid {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')}{what}; "
            f"wait for it to finish, or remove {path} if that process is gone")
