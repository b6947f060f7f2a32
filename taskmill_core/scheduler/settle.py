"""Settlement: turning how a run ended into the task's next state.

Inside a dispatch tick's transaction, each finished run becomes a transition: a success
completes the task (the standalone ones all in one statement), an error retries it or ends it
(the decision is :func:`~taskmill_core.retry.decide_failure`, pure), an interruption
(preempt, pause, shutdown) puts it back to wait with no retry used, and a run whose task was
cancelled or superseded meanwhile is only forgotten. The events each transition causes are
collected for the tick to publish after its commit, and so are the in-memory effects
(:meth:`Settlement.apply`: the run leaves the running set, the duration model learns from
it, pruning counts it): a tick the database rejects leaves them untouched.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from taskmill_core.errors import ExecutorError, RetryableError
from taskmill_core.progress import DurationModel
from taskmill_core.retry import decide_failure
from taskmill_core.runs import FINAL_STOPS, Run, RunEnd
from taskmill_core.scheduler.runner import Finished, Runner
from taskmill_core.store import Follow, SqliteStore, Tx
from taskmill_core.store.transitions import CHILD_FAILED
from taskmill_core.types import (
    Backoff,
    ErrorInfo,
    Event,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskPreempted,
    TaskUpdated,
)

__all__ = ["Settlement", "follow_events", "stop_cancelled"]

log = structlog.get_logger("taskmill.scheduler")

_decode_backoff = msgspec.json.Decoder(Backoff).decode


class Settlement:
    """Records run ends as state transitions, in the transaction of the tick that calls it."""

    def __init__(
        self,
        *,
        store: SqliteStore,
        running: dict[int, Run],
        durations: DurationModel,
        rng: random.Random,
        on_final: Callable[[], None],
    ) -> None:
        self._store = store
        self._running = running
        self._durations = durations
        self._rng = rng
        self._on_final = on_final

    def complete_standalone(self, tx: Tx, finished: list[Finished], now: int) -> set[int]:
        """Write the successful runs that need nothing else in one statement (see
        ``SqliteStore.complete_standalone``); returns their ids, for :meth:`settle`."""
        done = [
            (
                run.id,
                max(0, now - run.run_started),
                run.result_json,
                run.io_actual,
            )
            for run, end, _ in finished
            if end == "ok" and run.stop_reason not in FINAL_STOPS
        ]
        return self._store.complete_standalone(tx, done, now) if done else set()

    def settle(
        self,
        tx: Tx,
        run: Run,
        end: RunEnd,
        value: Any,
        now: int,
        follow: Follow,
        events: list[Event],
        completed: set[int],
        settled: list[Run],
    ) -> None:
        """Record how a run ended; ``completed`` holds the runs :meth:`complete_standalone` has
                already written as completed. The runs recorded go to ``settled``, for :meth:`apply`
        after the commit (``run.final``, ``run.learned_ms`` say what it will do)."""
        run.final, run.learned_ms = False, None  # (a rolled-back tick may have set them)
        reason = run.stop_reason
        if reason in FINAL_STOPS:
            settled.append(run)
            return  # already final in the database; its result is discarded
        io = run.io_actual
        duration = max(0, now - run.run_started)
        if end == "ok":
            state = (
                "completed"
                if run.id in completed
                else self._store.complete(
                    tx,
                    run.id,
                    now,
                    result=run.result_json,
                    duration_ms=duration,
                    io_actual=io,
                    follow=follow,
                )
            )
            if state == "failed":  # its children failed it (onChildFailure: failParent)
                run.final = True
                settled.append(run)
                events.append(
                    TaskFailed(
                        id=run.id,
                        type=run.type,
                        attempt=run.attempt,
                        error=CHILD_FAILED,
                        will_retry=False,
                        state="failed",
                    )
                )
            elif state == "completed":
                run.learned_ms, run.final = duration, True
                settled.append(run)
                events.append(
                    TaskCompleted(
                        id=run.id,
                        type=run.type,
                        attempt=run.attempt,
                        duration_ms=duration,
                        result=value,
                    )
                )
            else:
                settled.append(run)
                events.append(TaskUpdated(task=self._store.get(run.id)))
            return
        if end == "stopped" and reason == "paused":
            settled.append(run)
            return  # recorded when the pause was asked for
        if end == "stopped" and (reason == "preempted" or reason == "shutdown"):
            settled.append(run)
            self._store.interrupt(tx, run.id, "pending", now)
            if reason == "preempted":
                assert run.stop_for is not None
                events.append(TaskPreempted(id=run.id, type=run.type, by=run.stop_for))
            return
        if end == "stopped" and reason == "timeout":
            value = RetryableError(f"timed out after {run.timeout_ms} ms", kind="timeout")
        self._fail(tx, run, value, now, duration, io, follow, events, settled)

    def _fail(
        self,
        tx: Tx,
        run: Run,
        exc: BaseException | None,
        now: int,
        duration: int,
        io: Any,
        follow: Follow,
        events: list[Event],
        settled: list[Run],
    ) -> None:
        outcome = decide_failure(
            exc,
            attempt=run.attempt,
            max_retries=run.max_retries,
            backoff=_decode_backoff(run.backoff) if run.backoff else None,
            now=now,
            rng=self._rng,
        )
        if not isinstance(exc, ExecutorError):
            log.warning("executor raised", id=run.id, type=run.type, error=outcome.error.message)
        retry_at = outcome.retry_at
        state = self._store.fail(
            tx,
            run.id,
            now,
            error=outcome.error,
            retry_at=retry_at,
            final_state=outcome.final_state,
            duration_ms=duration,
            io_actual=io,
            follow=follow,
        )
        run.final = state != "pending"
        settled.append(run)
        if state == "pending" and retry_at is None:
            retry_at = now  # a requeue outlived the failure: it runs again at once
        events.append(
            TaskFailed(
                id=run.id,
                type=run.type,
                attempt=run.attempt,
                error=outcome.error,
                will_retry=state == "pending",
                state=state,  # type: ignore[arg-type]
                retry_at=retry_at if state == "pending" else None,
            )
        )

    def apply(self, settled: list[Run]) -> None:
        """After the commit: the runs leave the running set, the duration model learns, and
        final tasks count towards pruning."""
        running = self._running
        for run in settled:
            running.pop(run.id, None)
            if run.learned_ms is not None:
                self._durations.observe(run.type, run.learned_ms)
            if run.final:
                self._on_final()


def follow_events(store: SqliteStore, follow: Follow) -> list[Event]:
    """The events of what a transition caused beyond its own task: parents completed by
    their last child, dependents failed by a failed dependency, tasks a completion
    unblocked, parents due for their finalize phase, children a failParent parent
    cancelled and parents failed by their children."""
    out: list[Event] = []
    for cid, ctype in follow.cancelled:
        out.append(TaskCancelled(id=cid, type=ctype))
    for pid, ptype, attempt in follow.failed_parents:
        out.append(
            TaskFailed(
                id=pid,
                type=ptype,
                attempt=attempt,
                error=CHILD_FAILED,
                will_retry=False,
                state="failed",
            )
        )
    for pid, ptype, attempt, result in follow.completed_parents:
        out.append(TaskCompleted(id=pid, type=ptype, attempt=attempt, duration_ms=0, result=result))
    for did, dtype in follow.failed_dependents:
        out.append(
            TaskFailed(
                id=did,
                type=dtype,
                attempt=0,
                error=ErrorInfo("a task it depends on did not complete", "dependency", False),
                will_retry=False,
                state="failed",
            )
        )
    for uid in follow.unblocked:
        out.append(TaskUpdated(task=store.get(uid)))
    for fid in follow.finalizing:
        out.append(TaskUpdated(task=store.get(fid)))
    return out


def stop_cancelled(runner: Runner, forget: Callable[[int], None], follow: Follow) -> None:
    """Stop the runs of the children a failParent parent cancelled (after the commit);
    ``forget`` drops what the IO governor holds for one that was not running."""
    for cid, _ in follow.cancelled:
        if not runner.stop_task(cid, "cancelled"):
            forget(cid)
