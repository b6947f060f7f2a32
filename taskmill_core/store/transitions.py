"""State changes: every write to a task after its submit, each in the caller's transaction.

Every function here takes the open transaction as its first parameter (``tx: Tx``) and
none opens one of its own: the caller decides what commits together (the dispatcher writes a
whole tick — submits, run ends, expiry and claims — in one). Time is passed in.

What a final state sets off (:func:`after_final`), as rules:

1. A ``waiting`` parent (its own run succeeded) moves on when its last active child ends,
   whatever that child's final state (:func:`_children_done`): a parent submitted with
   ``finalize`` goes back to ``pending`` for its finalize phase (attempt 0, ``phase`` set,
   so that recovery after a crash resumes that phase); else one marked ``child_failed`` ends
   ``failed`` with kind ``childFailed``; else it completes. Its final state sets off these
   rules in turn. A parent whose run succeeds with no active child moves on the same way.
2. A ``blocked`` dependent of a task that *completed* becomes ``pending`` once every task it
   depends on has completed (with ``onDependencyFailure: ignore``: once every one is final).
3. A ``blocked`` dependent of a task that ended any other way (failed, dead-lettered,
   cancelled, superseded, expired) fails with an error of kind ``dependency``; its own
   dependents and parent follow by these rules. (With ``ignore``, rule 2 applies instead.)
4. A child that ends ``failed`` or ``deadLetter`` under a parent with ``onChildFailure:
   failParent`` marks the parent ``child_failed`` (once) and cancels the parent's other
   active children and their descendants; further submits under it are refused, and rule 1
   ends the parent ``failed`` once its children are final.

What moved is collected in a :class:`Follow` for the scheduler to announce after the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from taskmill_core.errors import InvalidState, TaskNotFound
from taskmill_core.store import queries
from taskmill_core.store.connection import Tx
from taskmill_core.store.ids import IdFloor
from taskmill_core.store.schema import ACTIVE_SQL, FINAL_SQL
from taskmill_core.types import (
    ACTIVE_STATES,
    ChildCounts,
    ErrorInfo,
    IoBytes,
    Outcome,
    Phase,
    TaskInfo,
)

__all__ = [
    "CHILD_FAILED",
    "Follow",
    "Started",
    "after_final",
    "cancel",
    "complete",
    "complete_standalone",
    "delete_final",
    "expire_due",
    "fail",
    "interrupt",
    "pause_pending",
    "recover",
    "resume",
    "retry",
    "save_checkpoint",
    "set_priority",
    "start",
    "supersede",
]

_encode = msgspec.json.Encoder().encode
_IN_HISTORY = frozenset(("completed", "failed", "deadLetter"))  # what history.stats sums
_decode = msgspec.json.decode

CHILD_FAILED = ErrorInfo("a child task failed (onChildFailure: failParent)", "childFailed", False)


@dataclass(slots=True)
class Started:
    """A claimed task: what its run needs."""

    id: int
    type: str
    priority: int
    group: str | None
    payload: Any
    attempt: int
    max_retries: int
    backoff: bytes | None
    timeout_ms: int | None
    checkpoint: Any
    parent_id: int | None
    phase: Phase = "run"
    children: ChildCounts | None = None  # the finalize phase's direct children, by state


@dataclass(slots=True)
class Follow:
    """Consequences of a task reaching a final state: parents and dependents that moved."""

    completed_parents: list[tuple[int, str, int, Any]] = field(default_factory=list)
    unblocked: list[int] = field(default_factory=list)
    failed_dependents: list[tuple[int, str]] = field(default_factory=list)
    finalizing: list[int] = field(default_factory=list)  # parents due for their finalize phase
    failed_parents: list[tuple[int, str, int]] = field(default_factory=list)  # childFailed
    cancelled: list[tuple[int, str]] = field(default_factory=list)  # by a failParent parent

    def merge(self, other: Follow) -> None:
        self.completed_parents += other.completed_parents
        self.unblocked += other.unblocked
        self.failed_dependents += other.failed_dependents
        self.finalizing += other.finalizing
        self.failed_parents += other.failed_parents
        self.cancelled += other.cancelled


# --- a run: claim, checkpoint, end ----------------------------------------------------------


def start(tx: Tx, ids: Sequence[int], now: int) -> list[Started]:
    """Claim pending tasks: one UPDATE for the whole set, then one read of what their runs
    need. (``UPDATE ... RETURNING`` every column cost about twice as much; the full
    :class:`TaskInfo` is read only if an executor asks for it: ``TaskContext.task``.)"""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    claimed = tx.execute(
        f"UPDATE tasks SET state='running', started_at=?, expires_at=NULL "
        f"WHERE id IN ({marks}) AND state='pending'",
        (now, *ids),
    ).rowcount
    tx.counts.move("pending", "running", claimed)
    # The ones this UPDATE claimed (an id that was no longer pending is left out).
    rows = tx.execute(
        "SELECT id, type, priority, grp, payload, attempt, max_retries, backoff, "
        f"timeout_ms, checkpoint, parent_id, phase FROM tasks WHERE id IN ({marks}) "
        "AND state='running' AND started_at=? ORDER BY priority, id",
        (*ids, now),
    ).fetchall()
    started = [
        Started(
            id=r[0],
            type=r[1],
            priority=r[2],
            group=r[3],
            payload=_decode(r[4]),
            attempt=r[5],
            max_retries=r[6],
            backoff=r[7],
            timeout_ms=r[8],
            checkpoint=_decode(r[9]) if r[9] is not None else None,
            parent_id=r[10],
        )
        for r in rows
    ]
    for s, r in zip(started, rows, strict=True):
        if r[11] == "finalize":
            s.phase, s.children = "finalize", child_counts(tx, s.id)
    return started


_COUNT_FIELDS = ("completed", "failed", "deadLetter", "cancelled", "superseded", "expired")


def child_counts(tx: Tx, parent_id: int) -> ChildCounts:
    """A parent's direct children by final state (what its finalize phase is handed)."""
    counts = dict.fromkeys(_COUNT_FIELDS, 0)
    for state, n in tx.execute(
        f"SELECT state, count(*) FROM tasks WHERE parent_id=? AND state IN {FINAL_SQL} "
        "GROUP BY state",
        (parent_id,),
    ).fetchall():
        counts[state] = int(n)
    return msgspec.convert(counts, ChildCounts)


def save_checkpoint(tx: Tx, task_id: int, state: Any) -> None:
    tx.execute("UPDATE tasks SET checkpoint=? WHERE id=?", (_encode(state), task_id))


def _take_requeue(tx: Tx, task_id: int) -> int | None:
    """The priority of a requeue a duplicate asked for during the run, if any."""
    row = tx.execute(
        "SELECT requeue, requeue_priority FROM tasks WHERE id=?", (task_id,)
    ).fetchone()
    if row is None or not row[0]:
        return None
    return int(row[1])


def _back_to_pending(
    tx: Tx, task_id: int, priority: int, error: ErrorInfo | None, now: int
) -> None:
    """A requeued task starts over: attempt 0, no checkpoint, due from now."""
    tx.counts.move("running", "pending")
    tx.execute(
        "UPDATE tasks SET state='pending', priority=?, attempt=0, run_at=NULL, "
        "started_at=NULL, checkpoint=NULL, requeue=0, requeue_priority=NULL, error=?, "
        "due_since=? WHERE id=?",
        (priority, _encode(error) if error else None, now, task_id),
    )


def complete_standalone(
    tx: Tx, done: Sequence[tuple[int, int, bytes, IoBytes | None]], now: int
) -> set[int]:
    """Complete successful runs ``(id, duration_ms, result JSON, io_actual)`` that need
    nothing else (no requeue asked for, no parent, no children, no dependents) with one
    ``executemany``; returns the ids it completed. :func:`complete` does the rest."""
    before = tx.total_changes
    tx.executemany(
        "UPDATE tasks SET state='completed', finished_at=?, duration_ms=?, result=?, "
        "io_actual=?, error=NULL, checkpoint=NULL WHERE id=? AND requeue=0 "
        "AND has_children=0 AND has_dependents=0 AND parent_id IS NULL AND finalize=0",
        [
            (now, duration, result, _encode(io) if io is not None else None, tid)
            for tid, duration, result, io in done
        ],
    )
    ids = [d[0] for d in done]
    changed = tx.total_changes - before
    tx.counts.move("running", "completed", changed)
    if changed == len(ids):
        tx.counts.finished(ids)
        return set(ids)
    rows = tx.execute(
        f"SELECT id FROM tasks WHERE id IN ({','.join('?' * len(ids))}) AND state='completed'",
        ids,
    ).fetchall()
    tx.counts.finished([r[0] for r in rows])
    return {r[0] for r in rows}


def complete(
    tx: Tx,
    task_id: int,
    now: int,
    *,
    result: bytes,
    duration_ms: int,
    io_actual: IoBytes | None,
    follow: Follow,
) -> str:
    """A run succeeded (``result`` is its JSON). Returns the new state: ``completed``,
    ``waiting`` (for active children), ``pending`` (a duplicate requeued it, or its finalize
    phase is due) or ``failed`` (a child failed under ``onChildFailure: failParent``)."""
    io = _encode(io_actual) if io_actual is not None else None
    # The common case in one statement: no requeue asked for, never had children.
    row = tx.execute(
        "UPDATE tasks SET state='completed', finished_at=?, duration_ms=?, result=?, "
        "io_actual=?, error=NULL, checkpoint=NULL "
        "WHERE id=? AND requeue=0 AND has_children=0 AND finalize=0 "
        "RETURNING parent_id, has_dependents",
        (now, duration_ms, result, io, task_id),
    ).fetchone()
    if row is not None:
        tx.counts.move("running", "completed")
        tx.counts.finished((task_id,))
        if row[0] is not None or row[1]:
            after_final(tx, task_id, "completed", now, follow, (row[0], row[1]))
        return "completed"
    requeue = _take_requeue(tx, task_id)
    if requeue is not None:
        _back_to_pending(tx, task_id, requeue, None, now)
        return "pending"
    children = tx.execute(
        f"SELECT count(*) FROM tasks WHERE parent_id=? AND state IN {ACTIVE_SQL}",
        (task_id,),
    ).fetchone()[0]
    tx.counts.move("running", "waiting")
    tx.execute(
        "UPDATE tasks SET state='waiting', duration_ms=?, result=?, io_actual=?, "
        "error=NULL, checkpoint=NULL WHERE id=?",
        (duration_ms, result, io, task_id),
    )
    if children:
        return "waiting"
    return _children_done(tx, task_id, now, follow, announce=False)


def _children_done(tx: Tx, task_id: int, now: int, follow: Follow, *, announce: bool) -> str:
    """Rule 1: a ``waiting`` task whose children are all final moves on; returns its new
    state. ``announce``: record the move in ``follow`` (the run's own end is announced by
    whoever settles it)."""
    ttype, attempt, finalize, phase, child_failed, result = tx.execute(
        "SELECT type, attempt, finalize, phase, child_failed, result FROM tasks WHERE id=?",
        (task_id,),
    ).fetchone()
    if finalize and phase is None:
        # The finalize phase, in this very transaction: a crash cannot lose it or run it twice.
        tx.execute(
            "UPDATE tasks SET state='pending', phase='finalize', attempt=0, run_at=NULL, "
            "started_at=NULL, checkpoint=NULL, due_since=? WHERE id=?",
            (now, task_id),
        )
        tx.counts.move("waiting", "pending")
        if announce:
            follow.finalizing.append(task_id)
        return "pending"
    if child_failed:
        tx.execute(
            "UPDATE tasks SET state='failed', finished_at=?, error=?, result=NULL WHERE id=?",
            (now, _encode(CHILD_FAILED), task_id),
        )
        tx.counts.move("waiting", "failed")
        tx.counts.finished((task_id,))
        if announce:
            follow.failed_parents.append((task_id, str(ttype), int(attempt)))
        after_final(tx, task_id, "failed", now, follow)
        return "failed"
    tx.execute("UPDATE tasks SET state='completed', finished_at=? WHERE id=?", (now, task_id))
    tx.counts.move("waiting", "completed")
    tx.counts.finished((task_id,))
    if announce:
        value = _decode(result) if result is not None else None
        follow.completed_parents.append((task_id, str(ttype), int(attempt), value))
    after_final(tx, task_id, "completed", now, follow)
    return "completed"


def fail(
    tx: Tx,
    task_id: int,
    now: int,
    *,
    error: ErrorInfo,
    retry_at: int | None,
    final_state: str,
    duration_ms: int,
    io_actual: IoBytes | None,
    follow: Follow,
) -> str:
    """A run failed. ``retry_at`` set: back to pending with one more attempt consumed;
    else ``final_state`` (failed or deadLetter). Returns the new state.

    A requeue requested while the run was going survives even a permanent failure: the task
    goes back to ``pending`` with attempt 0 and runs once more.
    """
    requeue = _take_requeue(tx, task_id)
    if requeue is not None:
        _back_to_pending(tx, task_id, requeue, error, now)
        return "pending"
    io = _encode(io_actual) if io_actual is not None else None
    if retry_at is not None:
        tx.counts.move("running", "pending")
        tx.execute(
            "UPDATE tasks SET state='pending', attempt=attempt+1, run_at=?, "
            "started_at=NULL, error=?, due_since=NULL WHERE id=?",
            (retry_at, _encode(error), task_id),
        )
        return "pending"
    tx.counts.move("running", final_state)
    tx.counts.finished((task_id,))
    tx.execute(
        "UPDATE tasks SET state=?, finished_at=?, duration_ms=?, error=?, io_actual=? WHERE id=?",
        (final_state, now, duration_ms, _encode(error), io, task_id),
    )
    after_final(tx, task_id, final_state, now, follow)
    return final_state


def interrupt(tx: Tx, task_id: int, to_state: str, now: int | None = None) -> None:
    """A run was interrupted (preempted, paused, shut down): back to ``to_state`` (pending
    or paused) with its checkpoint; no retry consumed. Back to pending, it is due from
    ``now`` (aging)."""
    moved = tx.execute(
        "UPDATE tasks SET state=?, started_at=NULL, due_since=? WHERE id=? AND state='running'",
        (to_state, now, task_id),
    ).rowcount
    tx.counts.move("running", to_state, moved)


def recover(tx: Tx) -> int:
    """Crash recovery: interrupted runs go back to pending, keeping checkpoint and attempt.
    Returns how many."""
    moved = tx.execute(
        "UPDATE tasks SET state='pending', started_at=NULL WHERE state='running'"
    ).rowcount
    tx.counts.move("running", "pending", moved)
    return int(moved)


# --- asked for by a client --------------------------------------------------------------


def pause_pending(tx: Tx, task_id: int) -> None:
    moved = tx.execute(
        "UPDATE tasks SET state='paused' WHERE id=? AND state='pending'", (task_id,)
    ).rowcount
    tx.counts.move("pending", "paused", moved)


def resume(tx: Tx, task_id: int, now: int | None = None) -> TaskInfo:
    state = queries.state_of(tx, task_id)
    if state != "paused":
        raise InvalidState(f"task {task_id} is {state}, not paused", id=task_id, state=state)
    tx.execute("UPDATE tasks SET state='pending', due_since=? WHERE id=?", (now, task_id))
    tx.counts.move("paused", "pending")
    return queries.get(tx, task_id)


def set_priority(tx: Tx, task_id: int, priority: int) -> TaskInfo:
    state = queries.state_of(tx, task_id)
    if state not in ACTIVE_STATES:
        raise InvalidState(f"task {task_id} is already {state}", id=task_id, state=state)
    tx.execute("UPDATE tasks SET priority=? WHERE id=?", (priority, task_id))
    return queries.get(tx, task_id)


def cancel(tx: Tx, task_id: int, now: int, follow: Follow) -> tuple[str, list[tuple[int, str]]]:
    """Cancel an active task and its active descendants.

    Returns the task's previous state and every (id, type) cancelled, the task first.
    """
    row = tx.execute("SELECT state, type FROM tasks WHERE id=?", (task_id,)).fetchone()
    if row is None:
        raise TaskNotFound(f"no task with id {task_id}", id=task_id)
    prev, task_type = row
    if prev not in ACTIVE_STATES:
        raise InvalidState(f"task {task_id} is already {prev}", id=task_id, state=prev)
    cancelled = [(task_id, str(task_type))]
    _finalize(tx, task_id, prev, "cancelled", now)
    cancelled += _cancel_descendants(tx, task_id, now)
    for cid, _ in cancelled:
        after_final(tx, cid, "cancelled", now, follow)
    return str(prev), cancelled


def _cancel_descendants(tx: Tx, root: int, now: int) -> list[tuple[int, str]]:
    """End the active descendants of ``root`` ``cancelled``; returns them (id, type). The
    caller applies :func:`after_final` to each once all are written."""
    cancelled: list[tuple[int, str]] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for cid, ctype, cstate in tx.execute(
            f"SELECT id, type, state FROM tasks WHERE parent_id=? AND state IN {ACTIVE_SQL}",
            (parent,),
        ).fetchall():
            _finalize(tx, cid, cstate, "cancelled", now)
            cancelled.append((int(cid), str(ctype)))
            frontier.append(cid)
    return cancelled


def _finalize(tx: Tx, task_id: int, prev: str, state: str, now: int) -> None:
    tx.counts.move(prev, state)
    tx.execute(
        "UPDATE tasks SET state=?, finished_at=?, expires_at=NULL, requeue=0 WHERE id=?",
        (state, now, task_id),
    )


def retry(tx: Tx, task_id: int, now: int | None = None) -> tuple[int, Outcome, TaskInfo | None]:
    """Manual retry of a failed or dead-lettered task (same id, attempt 0). When another
    active task holds its dedup key, that one is the answer (``duplicate``)."""
    row = tx.execute(
        "SELECT state, type, dedup_key, duration_ms, io_actual FROM tasks WHERE id=?", (task_id,)
    ).fetchone()
    if row is None:
        raise TaskNotFound(f"no task with id {task_id}", id=task_id)
    state, task_type, key, duration, io = row
    if state not in ("failed", "deadLetter"):
        raise InvalidState(
            f"task {task_id} is {state}; only failed or deadLetter tasks can be retried",
            id=task_id,
            state=state,
        )
    if key is not None:
        holder = tx.execute(
            f"SELECT id FROM tasks WHERE type=? AND dedup_key=? AND state IN {ACTIVE_SQL}",
            (task_type, key),
        ).fetchone()
        if holder is not None:
            return int(holder[0]), "duplicate", None
    tx.execute(
        "UPDATE tasks SET state='pending', attempt=0, run_at=NULL, started_at=NULL, "
        "finished_at=NULL, duration_ms=NULL, error=NULL, result=NULL, due_since=? WHERE id=?",
        (now, task_id),
    )
    tx.counts.move(str(state), "pending")
    tx.counts.left_history([(task_id, str(task_type), str(state), duration, io)])
    return task_id, "inserted", queries.get(tx, task_id)


# --- time and housekeeping ---------------------------------------------------------------


def expire_due(tx: Tx, now: int, follow: Follow) -> list[tuple[int, str]]:
    """Tasks whose TTL ran out before they started end ``expired``; returns (id, type).

    Like every final state, an expiry sets off the rules below: a waiting parent whose last
    active child expired completes, and the dependents of an expired task fail."""
    # (The states they leave, for the counts: RETURNING gives only the new ones.)
    for prev, n in tx.execute(
        "SELECT state, count(*) FROM tasks WHERE expires_at <= ? "
        "AND state IN ('pending','paused','blocked') GROUP BY state",
        (now,),
    ).fetchall():
        tx.counts.move(str(prev), "expired", int(n))
    rows = tx.execute(
        "UPDATE tasks SET state='expired', finished_at=?, expires_at=NULL "
        "WHERE expires_at <= ? AND state IN ('pending','paused','blocked') "
        "RETURNING id, type, parent_id, has_dependents",
        (now, now),
    ).fetchall()
    for task_id, _, parent_id, has_dependents in rows:
        if parent_id is not None or has_dependents:
            after_final(tx, task_id, "expired", now, follow, known=(parent_id, has_dependents))
    # Expiry only matters before a task starts; drop stale marks of other states.
    tx.execute(
        "UPDATE tasks SET expires_at=NULL WHERE expires_at <= ? "
        "AND state NOT IN ('pending','paused','blocked')",
        (now,),
    )
    return [(int(r[0]), str(r[1])) for r in rows]


def delete_final(tx: Tx, ids: Sequence[int], id_floor: IdFloor) -> int:
    """Delete these tasks if they are (still) final; returns how many."""
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    rows = tx.execute(
        f"SELECT id, state, type, duration_ms, io_actual FROM tasks "
        f"WHERE id IN ({marks}) AND state IN {FINAL_SQL}",
        list(ids),
    ).fetchall()
    final = [int(r[0]) for r in rows]
    if not final:
        return 0
    for r in rows:
        tx.counts.move(str(r[1]), None)
    tx.counts.left_history(
        [(int(r[0]), str(r[2]), str(r[1]), r[3], r[4]) for r in rows if r[1] in _IN_HISTORY]
    )
    id_floor.before_delete(tx, final)
    marks = ",".join("?" * len(final))
    tx.execute(f"DELETE FROM task_deps WHERE task_id IN ({marks})", final)
    return int(tx.execute(f"DELETE FROM tasks WHERE id IN ({marks})", final).rowcount)


# --- what a final state sets off -----------------------------------------------------------


def supersede(tx: Tx, task_id: int, now: int, follow: Follow, prev: str) -> None:
    """A newer submit with the same dedup key replaces this active task (in state ``prev``)."""
    tx.counts.move(prev, "superseded")
    tx.execute(
        "UPDATE tasks SET state='superseded', finished_at=?, expires_at=NULL WHERE id=?",
        (now, task_id),
    )
    after_final(tx, task_id, "superseded", now, follow)


def after_final(
    tx: Tx,
    task_id: int,
    state: str,
    now: int,
    follow: Follow,
    known: tuple[int | None, int] | None = None,
) -> None:
    """Apply the module's rules to the parent and the dependents of a task that just became
    final in ``state``. ``known`` is (parent_id, has_dependents) when the caller read them."""
    if known is None:
        row = tx.execute(
            "SELECT parent_id, has_dependents FROM tasks WHERE id=?", (task_id,)
        ).fetchone()
        known = (row[0], row[1]) if row else (None, 0)
    parent_id, has_dependents = known
    if parent_id is not None:
        if state in ("failed", "deadLetter"):
            _fail_parent(tx, parent_id, now, follow)
        _settle_waiting_parent(tx, parent_id, now, follow)
    if has_dependents:
        _settle_dependents(tx, task_id, state, now, follow)


def _settle_waiting_parent(tx: Tx, parent_id: int, now: int, follow: Follow) -> None:
    """Rule 1: a waiting parent moves on with its last active child."""
    prow = tx.execute("SELECT state FROM tasks WHERE id=?", (parent_id,)).fetchone()
    if prow is None or prow[0] != "waiting":
        return
    left = tx.execute(
        f"SELECT count(*) FROM tasks WHERE parent_id=? AND state IN {ACTIVE_SQL}",
        (parent_id,),
    ).fetchone()[0]
    if left:
        return
    _children_done(tx, parent_id, now, follow, announce=True)


def _fail_parent(tx: Tx, parent_id: int, now: int, follow: Follow) -> None:
    """Rule 4: a child failed under a ``failParent`` parent (the first failure acts)."""
    row = tx.execute(
        "UPDATE tasks SET child_failed=1 WHERE id=? AND on_child_failure='failParent' "
        f"AND child_failed=0 AND state IN {ACTIVE_SQL} RETURNING id",
        (parent_id,),
    ).fetchone()
    if row is None:
        return
    cancelled = _cancel_descendants(tx, parent_id, now)
    follow.cancelled += cancelled
    for cid, _ in cancelled:
        after_final(tx, cid, "cancelled", now, follow)


def _settle_dependents(tx: Tx, task_id: int, state: str, now: int, follow: Follow) -> None:
    """Rules 2 and 3: the blocked dependents of a task that ended ``state``."""
    dependents = tx.execute(
        "SELECT d.task_id, t.type, t.on_dependency_failure FROM task_deps d "
        "JOIN tasks t ON t.id = d.task_id WHERE d.dep_id=? AND t.state='blocked'",
        (task_id,),
    ).fetchall()
    for dep_id, dep_type, on_failure in dependents:
        if on_failure == "ignore" or state == "completed":
            # Still waiting on: any active dependency ("ignore": however the others ended),
            # else any that has not completed.
            waiting = f"IN {ACTIVE_SQL}" if on_failure == "ignore" else "!= 'completed'"
            left = tx.execute(
                "SELECT count(*) FROM task_deps d JOIN tasks t ON t.id = d.dep_id "
                f"WHERE d.task_id=? AND t.state {waiting}",
                (dep_id,),
            ).fetchone()[0]
            if not left:
                tx.execute(
                    "UPDATE tasks SET state='pending', due_since=? WHERE id=?", (now, dep_id)
                )
                tx.counts.move("blocked", "pending")
                follow.unblocked.append(int(dep_id))
        else:
            err = ErrorInfo(f"task {task_id} it depends on ended {state}", "dependency", False)
            tx.execute(
                "UPDATE tasks SET state='failed', finished_at=?, error=? WHERE id=?",
                (now, _encode(err), dep_id),
            )
            tx.counts.move("blocked", "failed")
            tx.counts.finished((int(dep_id),))
            follow.failed_dependents.append((int(dep_id), str(dep_type)))
            after_final(tx, dep_id, "failed", now, follow)
