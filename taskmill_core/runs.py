"""Runs: one execution of one task, and the narrow face the scheduler shows its executors.

A :class:`Run` lives in memory from the claim that starts it to the tick that records how it
ended. Its stop reasons and its ends are closed sets (:data:`StopReason`, :data:`RunEnd`), so
the places that act on them are checked by the type checker, not by string comparisons.
:class:`RunHost` is all a :class:`~taskmill_core.context.TaskContext` may call: the runner
implements it, and nothing in here imports the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from taskmill_core.progress import RunProgress
from taskmill_core.types import ChildCounts, IoBytes, Phase, SubmitResult, TaskInfo, TaskSpec

if TYPE_CHECKING:
    import anyio

    from taskmill_core.clock import Clock
    from taskmill_core.iomonitor import Resource

__all__ = ["FINAL_STOPS", "INTERRUPTS", "Run", "RunEnd", "RunHost", "StopReason"]

StopReason = Literal["cancelled", "superseded", "preempted", "paused", "shutdown", "timeout"]
"""Why a run is asked to stop: by the user (cancelled), by a newer submit (superseded), for
a more urgent task (preempted), by ``task.pause`` (paused), by closing (shutdown), or by its
own ``timeoutMs`` (timeout)."""

RunEnd = Literal["ok", "error", "stopped"]
"""How an executor ended: it returned, it raised, or a stop's cancellation ended it."""

FINAL_STOPS: frozenset[StopReason | None] = frozenset(("cancelled", "superseded"))
"""Stops that already made the task final in the database: the run's end is discarded."""

INTERRUPTS: frozenset[StopReason | None] = frozenset(("preempted", "shutdown", "paused"))
"""Stops after which the task waits again (``pending``, or ``paused``) with no retry used."""


@dataclass(eq=False)
class Run:
    """One run of one task, in memory while it lasts."""

    id: int
    type: str
    priority: int
    group: str | None
    attempt: int
    max_retries: int
    backoff: bytes | None
    timeout_ms: int | None
    checkpoint: Any
    payload: Any
    run_started: int
    progress: RunProgress
    io: IoBytes = field(default_factory=IoBytes)
    io_actual: IoBytes | None = None  # ``io`` once the run ended, None if it moved nothing
    scope: anyio.CancelScope | None = None  # its worker's scope, while the executor runs
    stop_reason: StopReason | None = None
    stop_for: int | None = None  # the task a preemption makes room for
    stop_deadline: int | None = None  # past this, an executor deaf to its stop is abandoned
    abandoned: bool = False
    unsaved_checkpoint: bool = False  # kept while writes are held; the next tick writes it
    io_admitted: bool = False  # the IO governor admitted it (holds its expected bytes)
    result_json: bytes = b"null"  # what a successful run returned, encoded
    info: TaskInfo | None = None  # read when the executor first asks (TaskContext.task)
    phase: Phase = "run"  # a parent's finalize phase, or the task's own run
    children: ChildCounts | None = None  # the finalize phase's direct children, by state
    # What recording its end decided, applied after the tick's commit (settle.Settlement):
    final: bool = False  # its task became final
    learned_ms: int | None = None  # a success's duration, for the duration model

    @property
    def timeout_at(self) -> int | None:
        return None if self.timeout_ms is None else self.run_started + self.timeout_ms


class RunHost(Protocol):
    """What a running executor may ask of the scheduler, through its ``TaskContext``.

    The synchronous methods run on the event loop's thread (``TaskContext`` hops there).
    """

    @property
    def clock(self) -> Clock: ...

    def task_info(self, run: Run) -> TaskInfo: ...

    def report_progress(
        self,
        run: Run,
        fraction: float | None,
        bytes_done: int | None,
        bytes_total: int | None,
        message: str | None,
    ) -> None: ...

    def save_checkpoint(self, run: Run, state: Any) -> None: ...

    def record_io(self, run: Run, amounts: tuple[int, int, int, int]) -> None: ...

    async def consume_io(self, run: Run, resource: Resource, nbytes: int) -> None: ...

    async def submit_child(self, spec: TaskSpec) -> SubmitResult: ...
