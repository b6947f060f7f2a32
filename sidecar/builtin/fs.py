"""File executors: ``fs.copy``, ``fs.hash`` and ``fs.scan`` (PROTOCOL.md "Built-in executors").

Every path goes through the :class:`~sidecar.builtin.scope.PathScope` when the task runs and is
then opened through :mod:`~sidecar.builtin.confined` (from a descriptor of its root, symlinks
refused), so a name swapped while the task runs cannot lead it out of the scope.
Blocking file work runs in worker threads one chunk (1 MiB) per hop, so cancellation
(anyio cancellation at the next ``await``) stops a run within one chunk, and progress is
reported from the event loop between chunks.

``fs.copy`` and ``fs.hash`` are *paced* (registered with ``paced=True``): before each chunk they
draw its bytes from the IO governor with ``ctx.consume_io`` (``diskRead``, and ``diskWrite``
for a copy), which waits while the budget is spent, so one big copy is spread over time instead
of bursting. Those draws are the run's IO accounting; the bytes are not recorded again.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import os
import stat
from collections.abc import Iterator
from itertools import islice
from typing import Any, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec

from sidecar.builtin import confined
from sidecar.builtin._files import (
    CHECKPOINT_BYTES,
    CHUNK,
    PART_SUFFIX,
    decode_payload,
    os_errors,
    resume_offset,
)
from sidecar.builtin.confined import Directory
from sidecar.builtin.scope import PathScope
from taskmill_core.context import TaskContext
from taskmill_core.errors import InvalidParams, PermanentError
from taskmill_core.iomonitor import Resource
from taskmill_core.types import PriorityName, PriorityValue, TaskSpec, TaskType

__all__ = ["CopyPayload", "HashPayload", "ScanPayload", "copy", "hash_file", "scan"]

SCAN_BATCH = 256
"""Directory entries examined per worker-thread hop in ``fs.scan``."""


# --- fs.copy -------------------------------------------------------------------------------


class CopyPayload(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    src: str
    dst: str
    overwrite: bool = False


class _Copier:
    """The blocking half of a copy; each method runs in a worker thread.

    The source is read through the descriptor opened (and checked) at the start; the part file
    is created, renamed and removed only within the destination's directory descriptor.
    """

    def __init__(self, fin: io.FileIO, directory: Directory, name: str, offset: int) -> None:
        self.fin = fin
        self.dir = directory
        self.name = name
        self.part = name + PART_SUFFIX
        self.fout: io.FileIO | None = None
        self.offset = offset
        self._buf = bytearray(CHUNK)

    def open(self) -> int:
        self.fout, self.offset = self.dir.open_part(self.part, self.offset)
        self.fin.seek(self.offset)
        return self.offset

    def step(self, limit: int = CHUNK) -> int:
        """Copy at most ``limit`` (≤ one chunk) bytes; 0 at the end of the source."""
        assert self.fout is not None
        view = memoryview(self._buf)[:limit]
        n = self.fin.readinto(view)
        if n:
            self.fout.write(view[:n])
        return n or 0

    def sync(self) -> None:
        assert self.fout is not None
        os.fsync(self.fout.fileno())

    def finish(self) -> None:
        """Make the part file durable and give it the source's permission bits."""
        assert self.fout is not None
        os.fsync(self.fout.fileno())
        mode = stat.S_IMODE(os.fstat(self.fin.fileno()).st_mode)
        if hasattr(os, "fchmod"):
            os.fchmod(self.fout.fileno(), mode)
            self.fout.close()
        else:  # Windows (no fchmod before 3.13): only the read-only bit means anything there
            self.fout.close()
            os.chmod(self.dir.path / self.part, mode)

    def close(self) -> None:
        if self.fout is not None:
            self.fout.close()

    def dst_size(self) -> int | None:
        """The size of what is at the destination (not followed), or None when nothing is."""
        st = self.dir.lstat(self.name)
        return None if st is None else st.st_size


async def copy(ctx: TaskContext, payload: Any, *, scope: PathScope) -> dict[str, Any]:
    """``fs.copy {src, dst, overwrite?}`` → ``{bytes, dst}``: an atomic, resumable copy.

    The checkpoint is ``{"offset", "size", "mtimeNs"}`` (the source's size and mtime: a changed
    source restarts from 0). Just before the rename it also holds ``"renamed": true``, so a run
    repeated after a crash that came between the rename and the task's completion finds the
    copy done instead of failing with ``exists``.
    """
    p: CopyPayload = decode_payload(payload, CopyPayload)
    src = scope.check(p.src, field="src")
    dst = scope.check(p.dst, field="dst")
    scope.check(str(dst) + PART_SUFFIX, field="dst")
    if src == dst:
        raise PermanentError(f"src and dst are the same file: {str(src)!r}", kind="invalidPayload")
    with os_errors("src cannot be read"):
        fin = await anyio.to_thread.run_sync(lambda: confined.open_file(scope, p.src, field="src"))
    try:
        with os_errors("cannot write dst"):
            directory, name = await anyio.to_thread.run_sync(
                lambda: confined.open_parent(scope, p.dst, field="dst", create=True)
            )
        with directory:
            return await _copy(ctx, p, _Copier(fin, directory, name, 0))
    finally:
        fin.close()


async def _copy(ctx: TaskContext, p: CopyPayload, copier: _Copier) -> dict[str, Any]:
    st = os.fstat(copier.fin.fileno())
    size, mtime = st.st_size, st.st_mtime_ns
    state = ctx.resume_state
    facts = {"size": size, "mtimeNs": mtime}
    if (
        not p.overwrite
        and (existing := await anyio.to_thread.run_sync(copier.dst_size)) is not None
    ):
        if (
            isinstance(state, dict)
            and state.get("renamed")
            and resume_offset(state, **facts) == size
            and existing == size
        ):
            return {"bytes": size, "dst": p.dst}
        raise PermanentError(
            f"dst {p.dst!r} already exists (set overwrite to replace it)", kind="exists"
        )

    copier.offset = resume_offset(state, **facts) if size else 0
    done = 0
    try:
        with os_errors("copy failed"):
            done = await anyio.to_thread.run_sync(copier.open)
        ctx.progress(bytes_done=done, bytes_total=size)
        since_checkpoint = 0
        while True:
            await anyio.lowlevel.checkpoint_if_cancelled()
            drawn = await _draw(ctx, ("diskRead", "diskWrite"), min(CHUNK, size - done))
            with os_errors("copy failed"):
                n = await anyio.to_thread.run_sync(copier.step, drawn or CHUNK)
            if n > drawn:  # the source grew past its size at the start: draw the extra too
                await _draw(ctx, ("diskRead", "diskWrite"), n - drawn)
            if not n:
                break
            done += n
            since_checkpoint += n
            ctx.progress(bytes_done=done, bytes_total=max(size, done))
            if since_checkpoint >= CHECKPOINT_BYTES:
                with os_errors("copy failed"):
                    await anyio.to_thread.run_sync(copier.sync)
                ctx.checkpoint({"offset": done, **facts})
                since_checkpoint = 0
        with os_errors("copy failed"):
            await anyio.to_thread.run_sync(copier.finish)
    except BaseException:
        # Interrupted (preempted, paused, shut down) or failed: what is written stays in the
        # part file for the next run. The bytes reached the OS (unbuffered writes), so only a
        # power loss could lose them — and then the part file is shorter and we start over.
        copier.close()
        if done:
            ctx.checkpoint({"offset": done, **facts})
        elif copier.fout is not None:  # an empty part file is not worth keeping
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_unlink_quietly, copier.dir, copier.part)
        raise
    ctx.checkpoint({"offset": done, **facts, "renamed": True})
    try:
        with os_errors("cannot rename the copy into place"):
            await anyio.to_thread.run_sync(
                lambda: copier.dir.publish(copier.part, copier.name, overwrite=p.overwrite)
            )
    except PermanentError as exc:
        if exc.kind != "notFound" and await anyio.to_thread.run_sync(copier.dst_size) is not None:
            await anyio.to_thread.run_sync(_unlink_quietly, copier.dir, copier.part)
            ctx.checkpoint(None)
            raise PermanentError(
                f"dst {p.dst!r} already exists (set overwrite to replace it)", kind="exists"
            ) from None
        raise
    ctx.progress(1.0, bytes_done=done, bytes_total=done)
    return {"bytes": done, "dst": p.dst}


async def _draw(ctx: TaskContext, resources: tuple[Resource, ...], nbytes: int) -> int:
    """Draw ``nbytes`` (if positive) of each resource through the IO governor; returns what
    was drawn. A chunk is drawn before it is moved, so a spent budget holds the next chunk
    back; the draw also counts the bytes as the run's IO."""
    if nbytes <= 0:
        return 0
    for resource in resources:
        await ctx.consume_io(resource, nbytes)
    return nbytes


def _unlink_quietly(directory: Directory, name: str) -> None:
    with contextlib.suppress(OSError):
        directory.unlink(name)


# --- fs.hash -------------------------------------------------------------------------------


class HashPayload(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    path: str
    algorithm: Literal["sha256", "blake2b"] = "sha256"


async def hash_file(ctx: TaskContext, payload: Any, *, scope: PathScope) -> dict[str, Any]:
    """``fs.hash {path, algorithm?}`` → ``{algorithm, digest (hex), bytes}``."""
    p: HashPayload = decode_payload(payload, HashPayload)
    with os_errors("path cannot be read"):
        f = await anyio.to_thread.run_sync(lambda: confined.open_file(scope, p.path))
    try:
        return await _hash(ctx, p, f)
    finally:
        f.close()


async def _hash(ctx: TaskContext, p: HashPayload, f: io.FileIO) -> dict[str, Any]:
    st = os.fstat(f.fileno())
    hasher = hashlib.new(p.algorithm)
    buf = bytearray(CHUNK)

    def step(f: io.FileIO, limit: int) -> int:
        view = memoryview(buf)[:limit]
        n = f.readinto(view) or 0
        hasher.update(view[:n])
        return n

    done = 0
    while True:
        await anyio.lowlevel.checkpoint_if_cancelled()
        drawn = await _draw(ctx, ("diskRead",), min(CHUNK, st.st_size - done))
        with os_errors("hash failed"):
            n = await anyio.to_thread.run_sync(step, f, drawn or CHUNK)
        if n > drawn:  # the file grew since it was stat'ed
            await _draw(ctx, ("diskRead",), n - drawn)
        if not n:
            break
        done += n
        ctx.progress(bytes_done=done, bytes_total=max(st.st_size, done))
    ctx.progress(1.0, bytes_done=done, bytes_total=done)
    return {"algorithm": p.algorithm, "digest": hasher.hexdigest(), "bytes": done}


# --- fs.scan -------------------------------------------------------------------------------


class ScanPayload(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    root: str
    glob: str = "*"
    child_type: TaskType | None = None
    child_priority: PriorityValue | PriorityName | None = None


Found = tuple[str, tuple[str, ...], int]
"""A matching file: its absolute path, its path relative to the root (parts) and its size."""


class _Walker:
    """Lists a tree in a stable order: the files sorted by their path's parts.

    The walk goes through directory descriptors: each subdirectory is opened from its parent's
    descriptor without following symlinks, so a directory swapped for a symlink mid-walk is
    skipped, never entered. Symlinks are never descended into (no cycles, nothing counted
    twice); a symlinked file is listed only when its target lies inside the scope, and its size
    is taken through a confined walk to that target. ``after`` resumes a walk behind the file
    a checkpoint named. Unreadable entries are counted in ``skipped``. :meth:`close` closes the
    directories still open.
    """

    def __init__(
        self, root: Directory, pattern: str, scope: PathScope, after: tuple[str, ...] | None
    ) -> None:
        self.pattern = pattern
        self.by_path = "/" in pattern
        self.scope = scope
        self.after = after
        self.skipped = 0
        self._root = root
        self._stack: list[tuple[Directory, Iterator[os.DirEntry[str]], tuple[str, ...]]] = []
        self._it = self._walk()

    def _push(self, directory: Directory, rel: tuple[str, ...]) -> None:
        try:
            entries = directory.entries()
        except OSError:
            self.skipped += 1
            entries = []
        self._stack.append((directory, iter(entries), rel))

    def _matches(self, rel: tuple[str, ...]) -> bool:
        subject = "/".join(rel) if self.by_path else rel[-1]
        return fnmatch.fnmatch(subject, self.pattern)

    def _symlinked_size(self, path: str) -> int | None:
        """The size of the file a symlink leads to inside the scope; None for a directory.
        Raises (:class:`PermanentError` or :class:`OSError`) for anything out of bounds."""
        st = confined.stat_path(self.scope, path)
        if stat.S_ISDIR(st.st_mode):
            return None
        if not stat.S_ISREG(st.st_mode):
            raise PermanentError(f"{path!r} is not a regular file", kind="notAFile")
        return st.st_size

    def _walk(self) -> Iterator[Found]:
        after = self.after
        stack = self._stack
        self._push(self._root, ())  # here, in the worker thread of the first batch
        while stack:
            directory, it, rel = stack[-1]
            entry = next(it, None)
            if entry is None:
                stack.pop()
                directory.close()
                continue
            parts = (*rel, entry.name)
            if after is not None and parts <= after and after[: len(parts)] != parts:
                continue  # this entry, and everything under it, comes before the resume point
            path = str(directory.path / entry.name)
            try:
                if entry.is_symlink():
                    size = self._symlinked_size(path)
                    if size is None:
                        continue
                elif entry.is_dir(follow_symlinks=False):
                    self._push(directory.open_dir(entry.name), parts)
                    continue
                elif entry.is_file(follow_symlinks=False):
                    size = entry.stat(follow_symlinks=False).st_size
                else:
                    continue
                if (after is not None and parts <= after) or not self._matches(parts):
                    continue
                yield path, parts, size
            except (OSError, PermanentError):
                self.skipped += 1

    def batch(self) -> list[Found]:
        return list(islice(self._it, SCAN_BATCH))

    def close(self) -> None:
        while self._stack:
            self._stack.pop()[0].close()
        self._root.close()


async def scan(ctx: TaskContext, payload: Any, *, scope: PathScope) -> dict[str, Any]:
    """``fs.scan {root, glob?, childType?, childPriority?}`` → ``{files, bytes, children}``.

    Lists the regular files under ``root`` (recursively) whose name matches ``glob`` (fnmatch;
    a pattern containing ``/`` is matched against the path relative to ``root`` instead, with
    ``*`` crossing directories). With ``childType`` each file becomes a child task
    ``{"path": <absolute path>}`` (``dedupKey: true``; ``childPriority`` or this task's
    priority), and this task completes once its children are final. The checkpoint
    ``{"after": [parts], "files", "bytes", "children"}`` lets an interrupted scan go on behind
    the last file whose child was submitted.
    """
    p: ScanPayload = decode_payload(payload, ScanPayload)
    try:
        with os_errors("root cannot be read"):
            root = await anyio.to_thread.run_sync(
                lambda: confined.open_dir(scope, p.root, field="root")
            )
    except PermanentError as exc:
        if exc.kind == "notADirectory":
            raise PermanentError(f"root {p.root!r} is not a directory", kind=exc.kind) from None
        raise
    state = ctx.resume_state
    if not (
        p.child_type is not None
        and isinstance(state, dict)
        and isinstance(state.get("after"), list)
    ):
        state = None
    walker = _Walker(root, p.glob, scope, tuple(map(str, state["after"])) if state else None)
    try:
        return await _scan(ctx, p, walker, state)
    finally:
        walker.close()


async def _scan(
    ctx: TaskContext, p: ScanPayload, walker: _Walker, state: dict[str, Any] | None
) -> dict[str, Any]:
    priority = p.child_priority if p.child_priority is not None else ctx.task.priority
    files = total = children = 0
    if state is not None:
        files, total, children = (int(state.get(k, 0)) for k in ("files", "bytes", "children"))

    while True:
        await anyio.lowlevel.checkpoint_if_cancelled()
        found = await anyio.to_thread.run_sync(walker.batch)
        if not found:
            break
        for path, _, size in found:
            files += 1
            total += size
            if p.child_type is not None:
                spec = TaskSpec(
                    type=p.child_type, payload={"path": path}, priority=priority, dedup_key=True
                )
                try:
                    await ctx.submit_child(spec)
                except InvalidParams as exc:
                    raise PermanentError(
                        f"cannot submit a child task: {exc}", kind="invalidPayload"
                    ) from None
                children += 1
        if p.child_type is not None:
            last = found[-1][1]
            ctx.checkpoint(
                {"after": list(last), "files": files, "bytes": total, "children": children}
            )
        ctx.progress(message=f"{files} files found")
    message = f"{files} files found" + (f", {walker.skipped} skipped" if walker.skipped else "")
    ctx.progress(1.0, message=message)
    return {"files": files, "bytes": total, "children": children}
