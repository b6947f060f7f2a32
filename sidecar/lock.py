"""Single instance per database: an OS file lock on ``<db>.lock`` held for the process life.

The OS drops the lock when the process dies, however it dies, so a crash never leaves a
stale lock behind.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

__all__ = ["AlreadyLocked", "DatabaseLock"]


class AlreadyLocked(Exception):
    pass


class DatabaseLock:
    def __init__(self, db: Path) -> None:
        self.path = db.with_name(db.name + ".lock")
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None
