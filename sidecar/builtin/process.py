"""``process.run {argv}``: run one of the programs named with ``--allow-program``.

``argv[0]`` and every allowed program are resolved with :func:`shutil.which` (then made
absolute, symlinks *not* resolved: a multi-call binary such as busybox must not let one allowed
name stand for all of its applets). The resolved path is what runs, with no shell. Output is
captured, keeping the last 64 KiB of each stream (read for at most a second more once the
program has exited, in case a background grandchild holds the pipes). A cancelled run
terminates the process (its whole process group on POSIX: it starts in a new session) and kills
what is left of the group a second later. A run that ends normally leaves background
grandchildren alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from typing import Annotated, Any

import anyio
import anyio.abc
import msgspec
from msgspec import Meta

from sidecar.builtin._files import decode_payload
from taskmill_core.context import TaskContext
from taskmill_core.errors import PermanentError

__all__ = ["OUTPUT_TAIL", "ProcessPayload", "resolve_program", "run_process"]

OUTPUT_TAIL = 64 << 10
"""Bytes of stdout and of stderr kept (the last ones)."""
KILL_AFTER_S = 1.0
DRAIN_AFTER_EXIT_S = 1.0
MESSAGE_TAIL = 2000


class ProcessPayload(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    argv: Annotated[list[str], Meta(min_length=1, max_length=4096)]


def resolve_program(name: str) -> str | None:
    """The absolute path :func:`shutil.which` finds for ``name``, or None."""
    if not name or "\x00" in name:
        return None
    found = shutil.which(name)
    return os.path.normcase(os.path.abspath(found)) if found else None


class _Tail:
    """The last ``limit`` bytes written to it."""

    def __init__(self, limit: int = OUTPUT_TAIL) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        self.buf += data
        excess = len(self.buf) - self.limit
        if excess > 0:
            del self.buf[:excess]
            self.dropped += excess

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


async def _drain(
    stream: anyio.abc.ByteReceiveStream | None, tail: _Tail, finished: anyio.Event
) -> None:
    try:
        if stream is not None:
            async for chunk in stream:
                tail.add(chunk)
    finally:
        finished.set()


def _signal_group(process: anyio.abc.Process, sig: int) -> None:
    try:
        if os.name == "posix":
            os.killpg(process.pid, sig)
        elif sig == getattr(signal, "SIGKILL", None):
            process.kill()
        else:
            process.terminate()
    except (ProcessLookupError, PermissionError):
        pass


async def _stop(process: anyio.abc.Process) -> None:
    """Terminate the process group, kill it after :data:`KILL_AFTER_S`, and reap it.

    Shielded: this runs while the task is being cancelled.
    """
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            _signal_group(process, signal.SIGTERM)
            with anyio.move_on_after(KILL_AFTER_S):
                await process.wait()
        # Whatever is left of the group (the leader, or grandchildren it started) goes too.
        _signal_group(process, getattr(signal, "SIGKILL", signal.SIGTERM))
        await process.aclose()


async def run_process(ctx: TaskContext, payload: Any, *, allowed: Sequence[str]) -> dict[str, Any]:
    """``process.run {argv}`` → ``{exitCode, stdout, stderr}``; non-zero exit → ``exitStatus``."""
    p: ProcessPayload = decode_payload(payload, ProcessPayload)
    program = resolve_program(p.argv[0])
    permitted = {r for r in (resolve_program(a) for a in allowed) if r is not None}
    if program is None or program not in permitted:
        where = "" if program is None else f" (resolves to {program!r})"
        raise PermanentError(
            f"program {p.argv[0]!r}{where} is not allowed (see --allow-program)", kind="forbidden"
        )
    out, err = _Tail(), _Tail()
    try:
        process = await anyio.open_process(
            [program, *p.argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=os.name == "posix",
        )
    except OSError as exc:
        raise PermanentError(f"cannot start {program!r}: {exc}", kind="exec") from exc
    finished = (anyio.Event(), anyio.Event())
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain, process.stdout, out, finished[0])
            tg.start_soon(_drain, process.stderr, err, finished[1])
            await process.wait()
            # A background grandchild may hold the pipes open: read on only briefly.
            with anyio.move_on_after(DRAIN_AFTER_EXIT_S):
                for event in finished:
                    await event.wait()
            tg.cancel_scope.cancel()
    except BaseException:
        await _stop(process)
        raise
    with anyio.CancelScope(shield=True):
        await process.aclose()
    code = process.returncode
    assert code is not None
    if code != 0:
        tail = err.text()[-MESSAGE_TAIL:] or out.text()[-MESSAGE_TAIL:]
        raise PermanentError(
            f"{p.argv[0]} exited with status {code}" + (f": {tail.strip()}" if tail else ""),
            kind="exitStatus",
        )
    return {"exitCode": code, "stdout": out.text(), "stderr": err.text()}
