"""The sidecar's lifecycle: open, announce ``sidecar.ready``, serve, shut down gracefully.

One task group holds everything: the stdout writer, the stdin reader feeding the JSON-RPC
protocol, the event forwarder (scheduler events → notifications), and the watchers that turn
stdin EOF, SIGTERM/SIGINT, a ``shutdown`` request or the death of ``--parent-pid`` into the
same graceful shutdown: stop taking requests (``-32005``), let running tasks finish for
``graceMs``, interrupt the rest back to ``pending``, deliver every queued event, send
``sidecar.exiting`` and flush.
"""

from __future__ import annotations

import asyncio
import gc
import select
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.abc
import psutil
import structlog

from sidecar.admin.repair import repair_command
from sidecar.builtin import PathScope, builtin_executors
from sidecar.framing import LineReader
from sidecar.frozen import host_pid
from sidecar.hostexec import HostExecutors
from sidecar.jsonrpc import JsonRpcProtocol
from sidecar.lock import AlreadyLocked, DatabaseLock
from sidecar.methods import Methods
from sidecar.params import PROTOCOL_VERSION, ExitingParams, ReadyParams, Recovered, ServerInfo
from sidecar.redact import redact_event
from sidecar.schemas import openrpc_document
from sidecar.selection import EventSelection
from sidecar.signals import StartupSignals
from sidecar.writer import LineWriter
from taskmill_core import Scheduler, SchedulerConfig, __version__
from taskmill_core.errors import (
    DamagedDatabase,
    NotATaskmillDatabase,
    StorageError,
    is_damage,
)
from taskmill_core.events import Subscription

__all__ = ["ExitCode", "Options", "Sidecar"]

log = structlog.get_logger("taskmill.sidecar")

# Grace for running tasks once the parent is gone: nobody is left to see them finish, and a
# relaunched app must not find the database still locked by us; the rest goes back to pending.
PARENT_GONE_GRACE_MS = 500


class ExitCode(Exception):
    """Leave with this exit code after writing ``message`` (one sentence) to stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Options:
    db: Path
    allow_paths: list[str] = field(default_factory=list)
    allow_programs: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    parent_pid: int | None = None
    max_concurrency: int | None = None
    durability: str = "normal"
    max_message_bytes: int = 4 * 1024 * 1024
    parent_poll_s: float = 0.5
    check_tls: bool = False


class Sidecar:
    """One sidecar process's worth of state."""

    def __init__(
        self,
        options: Options,
        stdin: BinaryIO,
        stdout: BinaryIO,
        *,
        startup: StartupSignals | None = None,
    ) -> None:
        """``startup``: the signals noted before the sidecar watched for them (they stop it)."""
        self.options = options
        self._stdin = stdin
        self._stdout = stdout
        self._startup = startup
        self._stop = anyio.Event()
        self._reason = "shutdown"
        self._grace_ms = 5000
        self._parent: tuple[int, float | None] | None = None  # --parent-pid, its start time
        self._fatal: str | None = None  # why the scheduler stopped, when an internal error did
        self._damage: BaseException | None = None  # the file turned out damaged while serving

    def request_stop(self, reason: str, grace_ms: int | None = None) -> None:
        if self._stop.is_set():
            return
        self._reason = reason
        if grace_ms is not None:
            self._grace_ms = grace_ms
        log.info("shutting down", reason=reason, grace_ms=self._grace_ms)
        self._stop.set()

    async def run(self) -> int:
        """Serve until shutdown; returns the exit code (raises :class:`ExitCode` early)."""
        opts = self.options
        lock = DatabaseLock(opts.db)
        try:
            lock.acquire()
        except AlreadyLocked:
            raise ExitCode(
                3, f"Another taskmill sidecar is already using the database {opts.db}."
            ) from None
        refused = False
        try:
            return await self._run_locked()
        except ExitCode as exc:
            refused = exc.code == 4 and self._damage is None
            raise
        finally:
            lock.release(remove_created=refused)  # a refused file finds nothing new beside it

    async def _run_locked(self) -> int:
        opts = self.options
        config = SchedulerConfig(durability=opts.durability)  # type: ignore[arg-type]
        sched = Scheduler(opts.db, config)
        for module in opts.plugins:
            try:
                sched.load_plugin(module)
            except Exception as exc:
                raise ExitCode(2, f"Cannot load the plugin module {module!r}: {exc}.") from None
        writer = LineWriter(self._stdout)
        proto = JsonRpcProtocol(writer, ready=False)
        failure: ExitCode | None = None
        code = 1
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            try:
                await sched.open(lift_ended_pauses=False)  # lifted after sidecar.ready
            except DamagedDatabase as exc:
                failure = ExitCode(4, self._damaged_sentence(exc.message, opts.db))
            except NotATaskmillDatabase as exc:
                failure = ExitCode(4, f"{exc.message}; the file was left untouched.")
            except Exception as exc:
                # Recovery and settings are read after the store opened: the first full
                # scan of the tasks table is where a damaged page usually shows.
                if not is_damage(exc):
                    raise
                message = f"{opts.db} cannot be read: {exc}"
                failure = ExitCode(4, self._damaged_sentence(message, opts.db))
            else:
                try:
                    code = await self._serve(sched, proto, writer, tg)
                finally:
                    # (Not shielded: the scheduler's task group must close in this scope.)
                    if not sched.closing:
                        await sched.close(0)
            tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if self._fatal is not None:
            raise ExitCode(4 if self._damage is not None else 1, self._fatal)
        return code

    @staticmethod
    def _damaged_sentence(message: str, db: Path, *, untouched: bool = True) -> str:
        state = "damaged and was left untouched" if untouched else "damaged"
        return (
            f"{message}; the file is {state}; run `{repair_command(db)}` "
            "to save what is still readable into a fresh database."
        )

    def _on_handler_error(self, exc: Exception) -> Exception | None:
        """A request met a damaged database file: answer it with a storage error and stop as
        on an internal error (the next requests would meet it too), with the repair command
        in the sentence."""
        if not is_damage(exc):
            return None
        self._damage = self._damage or exc
        self.request_stop("fatal", 0)
        return StorageError(f"the database file is damaged ({exc}); the sidecar is stopping")

    async def _serve(
        self,
        sched: Scheduler,
        proto: JsonRpcProtocol,
        writer: LineWriter,
        tg: anyio.abc.TaskGroup,
    ) -> int:
        opts = self.options
        if opts.max_concurrency is not None:
            await sched.configure(max_concurrency=opts.max_concurrency)
        _register_builtins(sched, opts)
        hosts = HostExecutors(sched, proto, tg)
        info = ServerInfo(name="taskmill-sidecar", version=__version__)
        methods = Methods(
            sched,
            hosts,
            server_info=info,
            max_message_bytes=opts.max_message_bytes,
            request_shutdown=lambda grace: self.request_stop("shutdown", grace),
            now_ms=sched.clock.now_ms,
        )
        selection = methods.selection
        methods.discover_document = openrpc_document()
        methods.register_all(proto)
        proto.on_handler_error = self._on_handler_error

        sub = sched.subscribe()
        forwarded = anyio.Event()
        tg.start_soon(self._forward_events, sub, proto, selection, forwarded)
        tg.start_soon(self._read_stdin, proto, writer)
        await tg.start(self._watch_signals, sched)
        tg.start_soon(self._watch_scheduler, sched)
        if opts.parent_pid is not None:
            self._parent = (opts.parent_pid, _created(opts.parent_pid))
            tg.start_soon(self._watch_parent)

        # Everything loaded so far (modules, plugins, the scheduler) lives as long as the
        # process: keep it out of the cyclic GC, whose full passes over it paused the loop
        # for ~8 ms; collections now only look at objects made while serving.
        gc.freeze()
        await proto.notify(
            "sidecar.ready",
            ReadyParams(
                server_info=info,
                protocol_version=PROTOCOL_VERSION,
                pid=host_pid(),
                db=str(opts.db),
                recovered=Recovered(requeued=sched.recovered),
                executors=sched.executor_types(),
            ),
        )
        if not self._stop.is_set():  # else a signal came during start-up: refuse what waits
            proto.set_ready()
        sched.lift_ended_pauses()  # timed pauses that ended meanwhile: resumed after ready
        log.info("ready", db=str(opts.db), recovered=sched.recovered)

        await self._stop.wait()
        proto.begin_shutdown()
        await sched.close(self._grace_ms)
        with anyio.move_on_after(5):
            await forwarded.wait()
        if sched.failure is not None and is_damage(sched.failure):
            self._damage = self._damage or sched.failure
        if self._damage is not None:
            # Exit 4, not 1: a restart would meet the same damage (a host does not restart
            # the sidecar after 4), and the way out is the repair command.
            self._reason = "fatal"
            self._fatal = self._damaged_sentence(
                f"taskmill-sidecar stopped: {opts.db} cannot be read: {self._damage}",
                opts.db,
                untouched=False,  # (it was in use: closing folds the log into it, as always)
            )
        elif sched.failure is not None:
            self._reason = "fatal"
            self._fatal = f"taskmill-sidecar stopped on an internal error: {sched.failure!r}."
        await proto.notify("sidecar.exiting", ExitingParams(reason=self._reason))  # type: ignore[arg-type]
        writer.close()
        with anyio.move_on_after(2):
            await writer.wait_closed()
        return 0 if self._fatal is None else 1  # (a fatal end raises ExitCode in the caller)

    async def _watch_scheduler(self, sched: Scheduler) -> None:
        """An internal error stopped the scheduler: shut down at once, saying why
        (``sidecar.exiting`` with reason ``fatal``, a sentence on stderr, exit code 1)."""
        await sched.wait_failed()
        self.request_stop("fatal", 0)

    async def _forward_events(
        self,
        sub: Subscription,
        proto: JsonRpcProtocol,
        selection: EventSelection,
        done: anyio.Event,
    ) -> None:
        """Every scheduler event the client's selection admits becomes a notification;
        waits while stdout is backed up.

        While it waits, the subscription coalesces progress and the scheduler stops starting
        work once lifecycle events pile up, so memory stays bounded. With nothing selected
        (``events.configure`` never called) the only cost is one attribute check per event.
        """
        try:
            async for event in sub:
                if selection.active and not selection.admit(event):
                    continue
                await proto.notify(event.EVENT, redact_event(event))
        finally:
            done.set()

    async def _read_stdin(self, proto: JsonRpcProtocol, writer: LineWriter) -> None:
        async with LineReader(self._stdin, max_message_bytes=self.options.max_message_bytes) as r:
            await proto.serve(r)
        # A parent killed outright closes our stdin as it dies: that is the parent's death.
        if await self._parent_gone(wait_s=0.3):
            self.request_stop("parentExited", PARENT_GONE_GRACE_MS)
        elif writer.broken or _reader_gone(self._stdout):
            # No --parent-pid, but nobody reads stdout either: the host died with both pipes.
            # As after the parent's death, nobody is left to see running tasks finish.
            self.request_stop("stdinClosed", PARENT_GONE_GRACE_MS)
        else:
            self.request_stop("stdinClosed")

    async def _watch_signals(
        self,
        sched: Scheduler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """SIGTERM/SIGINT (also those noted during start-up) stop the sidecar; SIGUSR1 dumps
        its state. Reports started once the signals are watched and the early ones handled."""
        dump = getattr(signal, "SIGUSR1", None)  # POSIX only
        watched = [signal.SIGTERM, signal.SIGINT, *([dump] if dump is not None else [])]
        try:
            with anyio.open_signal_receiver(*watched) as signals:
                self._stop_if_signalled_at_startup()  # (checked once the receiver is in place)
                task_status.started()
                async for signum in signals:
                    if signum == dump:
                        _dump_state(sched)
                    else:
                        self.request_stop("signal")
        except NotImplementedError:  # Windows: no signal receivers; rely on stdin EOF
            self._stop_if_signalled_at_startup()
            task_status.started()

    def _stop_if_signalled_at_startup(self) -> None:
        """A SIGTERM/SIGINT during start-up: the same graceful exit as a later one."""
        if self._startup is not None and self._startup.received:
            self.request_stop("signal")

    async def _watch_parent(self) -> None:
        """Poll the parent; its death (or PID reuse by another process) means shutdown."""
        assert self._parent is not None
        while _alive(*self._parent):  # noqa: ASYNC110 (another process: nothing to await)
            await anyio.sleep(self.options.parent_poll_s)
        self.request_stop("parentExited", PARENT_GONE_GRACE_MS)

    async def _parent_gone(self, wait_s: float) -> bool:
        """Whether ``--parent-pid`` has exited, waiting up to ``wait_s`` for it to finish dying."""
        if self._parent is None:
            return False
        deadline = anyio.current_time() + wait_s
        while _alive(*self._parent):
            if anyio.current_time() >= deadline:
                return False
            await anyio.sleep(0.02)
        return True


def _dump_state(sched: Scheduler) -> None:
    """``kill -USR1 <pid>``: log what the scheduler holds and where every task waits."""
    log.warning("state dump", **sched.debug_state())
    for task in asyncio.all_tasks():
        log.warning("task stack", task=task.get_name(), frames=_await_chain(task.get_coro()))


def _await_chain(coro: Any) -> list[str]:
    """Where a suspended coroutine waits: its frame, then what it awaits, and so on."""
    frames: list[str] = []
    while coro is not None and len(frames) < 30:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        frame = frame or getattr(coro, "ag_frame", None)
        if frame is not None:
            code = frame.f_code
            frames.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {code.co_name}")
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
    return frames


def _alive(pid: int, created: float | None) -> bool:
    """Whether the process ``pid`` started at ``created`` still runs (a zombie does not)."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reader_gone(stream: BinaryIO) -> bool:
    """Whether nobody can read ``stream`` any more: the other end of the pipe (or socket)
    was closed. POSIX only (``poll`` reports POLLERR or POLLHUP); elsewhere always False."""
    if not hasattr(select, "poll"):
        return False
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError):  # no descriptor (io.UnsupportedOperation), or a closed one
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events)


def _created(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _register_builtins(sched: Scheduler, opts: Options) -> None:
    """The sidecar's file, network and process executors, confined by the command line."""
    for reg in builtin_executors(PathScope(opts.allow_paths), opts.allow_programs):
        sched.register(reg.type, reg.fn, concurrency=reg.concurrency, builtin=True, paced=reg.paced)


def stderr_sentence(message: str) -> None:
    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()
