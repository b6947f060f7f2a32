"""What the file-writing executors share: payload decoding, OS error kinds, checkpoints.

A destination is written as ``<dst>.taskmill-part`` next to it, made durable (fsync) and then
renamed over ``dst`` in one step, so a reader never sees a half-written ``dst``. A run that is
interrupted leaves the part file behind together with a checkpoint ``{"offset": n}``; the next
run keeps the first ``n`` bytes (when the part file still has them) and appends the rest. The
part file itself is opened, created and renamed by :mod:`sidecar.builtin.confined`.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator, Mapping
from typing import Any

from sidecar.builtin.confined import Refused
from taskmill_core.errors import ExecutorError, PermanentError, RetryableError
from taskmill_core.executors.builtin import decode_payload

__all__ = [
    "CHECKPOINT_BYTES",
    "CHUNK",
    "PART_SUFFIX",
    "decode_payload",
    "os_errors",
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
    if isinstance(exc, Refused):  # a symlink in the way, never followed
        return PermanentError(
            f"{what}: {exc.filename!r} {detail}; the file executors stay inside --allow-path",
            kind="forbidden",
        )
    if isinstance(exc, FileNotFoundError):
        return PermanentError(message, kind="notFound")
    if isinstance(exc, PermissionError):
        return PermanentError(message, kind="permissionDenied")
    if isinstance(exc, IsADirectoryError):
        return PermanentError(message, kind="notAFile")
    if exc.errno == errno.ELOOP:  # a symlink met by O_NOFOLLOW
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
