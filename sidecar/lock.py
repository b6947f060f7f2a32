"""Single instance per database: an OS file lock on ``<db>.lock`` held for the process life.

The OS drops the lock when the process dies, however it dies, so a crash never leaves a
stale lock behind. A process that refuses the database (exit 4) removes the lock file it
created, so a refused file finds nothing new beside it; because a lock file can then vanish,
:meth:`DatabaseLock.acquire` checks that the file it locked is still the one at the path.
"""

from __future__ import annotations

import os
import sys
from contextlib import suppress
from pathlib import Path
from typing import IO

__all__ = ["AlreadyLocked", "DatabaseLock"]


class AlreadyLocked(Exception):
    pass


class DatabaseLock:
    def __init__(self, db: Path) -> None:
        self.path = db.with_name(db.name + ".lock")
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
            self._file.close()  # closing drops the lock
            self._file = None


def _same_file(f: IO[bytes], path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(f.fileno())
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
