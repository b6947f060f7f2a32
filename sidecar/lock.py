"""Single instance per database: an OS file lock on ``<db>.lock`` held for the process life.

The OS drops the lock when the process dies, however it dies, so a crash never leaves a
stale lock behind. A process that refuses the database (exit 4) removes the lock file it
created, so a refused file finds nothing new beside it; because a lock file can then vanish,
:meth:`DatabaseLock.acquire` checks that the file it locked is still the one at the path.

The holder writes who it is into the file (:class:`Holder`: pid and process start time, as
JSON after the first byte, which is the byte Windows locks), and empties it on release, so
``taskmill doctor`` can name the process without touching the lock (:func:`read_holder`). A
holder that died keeps its record; :meth:`Holder.alive` tells a live one from a stale one.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["AlreadyLocked", "DatabaseLock", "Holder", "lock_path", "read_holder"]


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


@dataclass(frozen=True, slots=True)
class Holder:
    """The process that took the lock, as it recorded itself."""

    pid: int
    started: float
    """The process's start time (``psutil.Process().create_time()``): a pid can be reused."""

    def alive(self) -> bool:
        """Whether that very process still runs (then it still holds the lock)."""
        import psutil

        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except (psutil.Error, OSError):
            return False

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": self.started}


def read_holder(db: Path) -> Holder | None:
    """Who recorded itself in ``db``'s lock file (None: no file, or nobody holds it now)."""
    try:
        with open(lock_path(db), "rb") as f:
            f.seek(1)
            raw = json.loads(f.read().decode() or "null")
        return Holder(int(raw["pid"]), float(raw["started"])) if raw else None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _me() -> bytes:
    import psutil

    me = {"pid": os.getpid(), "started": psutil.Process().create_time()}
    return b"\n" + json.dumps(me).encode() + b"\n"


class AlreadyLocked(Exception):
    pass


class DatabaseLock:
    def __init__(self, db: Path) -> None:
        self.path = lock_path(db)
        self._file: IO[bytes] | None = None
        self._created = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self._created = not self.path.exists()
            f = open(self.path, "a+b")  # noqa: SIM115 (held open for the life of the process)
            try:
                if sys.platform == "win32":
                    import msvcrt

                    f.seek(0)
                    msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
                else:
                    import fcntl

                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                raise AlreadyLocked(str(self.path)) from None
            if _same_file(f, self.path):
                self._file = f
                self._record(_me())
                return
            f.close()  # its holder removed it after we opened it: lock the new one

    def release(self, *, remove_created: bool = False) -> None:
        """Drop the lock; with ``remove_created``, also remove the lock file if this process
        created it (after refusing the database: leave nothing behind)."""
        if self._file is not None:
            if remove_created and self._created:
                # Still locked: nobody can take this file meanwhile. (On Windows a file
                # another process has open cannot be removed: it stays.)
                with suppress(OSError):
                    self.path.unlink()
            self._record(b"")
            self._file.close()  # closing drops the lock
            self._file = None

    def _record(self, data: bytes) -> None:
        """Replace the file's content (the holder record); best effort, never fatal."""
        assert self._file is not None
        with suppress(OSError):
            self._file.truncate(0)
            self._file.write(data)  # append mode: at the end, which is now offset 0
            self._file.flush()


def _same_file(f: IO[bytes], path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(f.fileno())
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
