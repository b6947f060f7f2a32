"""What the file-writing executors share: payload decoding, OS error kinds, part files.

A destination is written as ``<dst>.taskmill-part`` next to it, made durable (fsync) and then
renamed over ``dst`` in one step, so a reader never sees a half-written ``dst``. A run that is
interrupted leaves the part file behind together with a checkpoint ``{"offset": n}``; the next
run keeps the first ``n`` bytes (when the part file still has them) and appends the rest.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from taskmill_core.errors import ExecutorError, PermanentError, RetryableError
from taskmill_core.executors.builtin import decode_payload

__all__ = [
    "CHECKPOINT_BYTES",
    "CHUNK",
    "PART_SUFFIX",
    "decode_payload",
    "fsync_dir",
    "open_part",
    "os_errors",
    "publish",
    "resume_offset",
]

CHUNK = 1 << 20
"""Bytes moved per worker-thread hop: cancellation and progress come between chunks."""
CHECKPOINT_BYTES = 8 << 20
"""A checkpoint (after an fsync of the part file) every this many bytes."""
PART_SUFFIX = ".taskmill-part"


def os_error(exc: OSError, what: str) -> ExecutorError:
    """The executor error for an OS error: missing or refused files are permanent."""
    detail = exc.strerror or str(exc)
    name = f" {exc.filename!r}" if exc.filename else ""
    message = f"{what}: {detail}{name}"
    if isinstance(exc, FileNotFoundError):
        return PermanentError(message, kind="notFound")
    if isinstance(exc, PermissionError):
        return PermanentError(message, kind="permissionDenied")
    if isinstance(exc, IsADirectoryError):
        return PermanentError(message, kind="notAFile")
    if exc.errno == errno.ELOOP:  # a symlink where a part file should be (O_NOFOLLOW)
        return PermanentError(message, kind="forbidden")
    if isinstance(exc, NotADirectoryError):
        return PermanentError(message, kind="notADirectory")
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return RetryableError(message, kind="noSpace")
    return RetryableError(message, kind="io")


@contextlib.contextmanager
def os_errors(what: str) -> Iterator[None]:
    """Turn an :class:`OSError` raised inside into the matching executor error."""
    try:
        yield
    except OSError as exc:
        raise os_error(exc, what) from exc


def resume_offset(state: Any, **expected: Any) -> int:
    """The offset a checkpoint allows resuming from (0 when there is none).

    ``expected`` lists facts the checkpoint must agree with (the source's size, a URL...);
    a key the checkpoint lacks is not held against it.
    """
    if not isinstance(state, Mapping):
        return 0
    for key, value in expected.items():
        if key in state and state[key] != value:
            return 0
    offset = state.get("offset")
    return offset if isinstance(offset, int) and offset > 0 else 0


def open_part(part: Path, offset: int) -> tuple[io.FileIO, int]:
    """Open the part file positioned at ``offset`` — or at 0 when it holds fewer bytes.

    Parent directories are created. Returns the (unbuffered) file and the offset used.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(part, flags, 0o644)
    f = os.fdopen(fd, "r+b", buffering=0)
    try:
        size = os.fstat(fd).st_size
        if offset > size:
            offset = 0
        f.truncate(offset)
        f.seek(offset)
    except BaseException:
        f.close()
        raise
    return f, offset


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories can't be opened)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(part: Path, dst: Path, *, overwrite: bool) -> None:
    """Rename the finished part file to ``dst`` atomically.

    Without ``overwrite`` an existing ``dst`` raises :class:`FileExistsError`; a hard link makes
    that check atomic where the file system has them.
    """
    if overwrite:
        os.replace(part, dst)
    else:
        try:
            os.link(part, dst)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some network shares): check, then rename
            if os.path.lexists(dst):
                raise FileExistsError(errno.EEXIST, "file exists", str(dst)) from None
            os.replace(part, dst)
        else:
            os.unlink(part)
    fsync_dir(dst.parent)
