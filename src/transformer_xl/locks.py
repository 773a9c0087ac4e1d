"""One owner per directory: an exclusive advisory lock on ``DIR/.lock``.

A training run (``txl train``) and a data preparation (``txl prepare --out``) each hold the lock of the
directory they write for as long as they run. A second process that asks for it gets a one-line
:class:`~transformer_xl.config.TransformerXLError` naming the holder ("RUN is in use by process N (since
...)") instead of both writing the same files. The lock is ``flock`` on an open file: the operating system
drops it when the holder exits for any reason (``kill -9`` included), so a crash never leaves a stale lock
behind. The file itself stays (removing it would race with the next owner); its content only describes
the holder. Standard library only.

    with DirectoryLock(out, what="run directory"):
        ...  # write into out
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .config import TransformerXLError

__all__ = ["LOCK_FILE", "DirectoryLock", "lock_holder"]

LOCK_FILE = ".lock"


def lock_holder(directory: str | Path) -> dict[str, Any] | None:
    """What the lock file of ``directory`` says about its holder (pid, since, host, command), or None.
    The content is informative only: whether the lock is held is decided by ``flock``."""
    try:
        with open(Path(directory) / LOCK_FILE, encoding="utf-8") as file:
            info = json.loads(file.read(4096) or "null")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


class DirectoryLock:
    """An exclusive, non-blocking lock on ``directory/.lock`` (the directory is created if needed).

    :meth:`acquire` raises TransformerXLError when another process (or another lock object in this
    process) holds it. ``what`` names the directory in the message ("run directory", "data directory").
    Where ``fcntl`` does not exist (Windows) the lock is a no-op.
    """

    def __init__(self, directory: str | Path, *, what: str = "directory") -> None:
        self.directory = Path(directory)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "DirectoryLock":
        if self._fd is not None:
            return self
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return self
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise TransformerXLError(f"cannot write the {self.what} {self.directory}: {exc.strerror or exc}; "
                                     "choose a writable directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise TransformerXLError(self._busy_message()) from None
        info = {"pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": socket.gethostname(),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500] if sys.argv else ""}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        except OSError:  # a full disk: the lock holds all the same, only its description is missing
            pass
        self._fd = fd
        return self

    def _busy_message(self) -> str:
        holder = lock_holder(self.directory) or {}
        who = f"process {holder['pid']}" if "pid" in holder else "another process"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on {holder['host']}"
        since = f" (since {holder['since']})" if holder.get("since") else ""
        return (f"{self.directory} is in use by {who}{since}: one process at a time may write a {self.what}; "
                f"wait for it to finish, stop it, or choose another directory")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
