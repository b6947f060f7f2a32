"""Submitting: a spec's stored form, the dedup decision, and the inserts that apply it.

A submit whose ``(type, dedupKey)`` is held by an active task is a *duplicate*. What happens
to it is decided by :func:`decide_duplicate`, a pure function of the new entry and the
holder (PROTOCOL.md, "dedup"):

=============================  ==============================================  ============
holder / ``onDuplicate``       what happens                                    outcome
=============================  ==============================================  ============
any, ``reject``                error -32003 naming the holder                  (error)
any, ``supersede``             the holder ends ``superseded``; a new task      superseded
running, ``skip``              the holder runs once more after this run, at    requeued
                               the more urgent of the priorities
pending/paused/blocked, more   the holder takes the new priority               upgraded
urgent, ``skip``
otherwise, ``skip``            nothing                                         duplicate
=============================  ==============================================  ============

The unique index ``tasks_dedup`` (one active task per key) makes a race between two submits
of the same key impossible: the second sees the first's row, in the same transaction or after
its commit.

A *standalone* entry (no dedup key, parent or dependency) needs no lookup before its INSERT, so
runs of them are inserted with one ``executemany`` (:func:`insert_standalone`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Literal

import msgspec

from taskmill_core.errors import (
    DuplicateRejected,
    InvalidParams,
    InvalidState,
    PayloadTooLarge,
    StorageError,
    TaskNotFound,
)
from taskmill_core.store import queries, transitions
from taskmill_core.store.connection import Tx
from taskmill_core.store.ids import IdFloor, InsertRow, insert_sql, max_id
from taskmill_core.store.schema import ACTIVE_SQL
from taskmill_core.store.transitions import Follow
from taskmill_core.types import ACTIVE_STATES, FINAL_STATES, IoBytes, Outcome, TaskInfo, TaskSpec

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Dedup",
    "Holder",
    "Prepared",
    "Submitted",
    "decide_duplicate",
    "insert_params",
    "insert_standalone",
    "is_standalone",
    "new_info",
    "prepare",
    "submit_entries",
    "submit_one",
]

MAX_PAYLOAD_BYTES = 1024 * 1024

_encode = msgspec.json.Encoder().encode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


# Prepared and Submitted are made per task, thousands at a time, and hold no cycles: as
# msgspec Structs with gc=False the cyclic GC does not track them (a batch of 10,000 used to
# set off dozens of collections, now and then a full one of ~10 ms, mid-batch).
class Prepared(msgspec.Struct, gc=False):
    """A validated spec with everything derived that the store needs."""

    spec: TaskSpec
    payload_json: bytes
    priority: int
    dedup_key: str | None
    run_at: int | None
    expires_at: int | None


class Submitted(msgspec.Struct, gc=False):
    """What one submit did. ``replaced`` is the task a supersede ended (id, its old state)."""

    id: int
    outcome: Outcome
    info: TaskInfo | None = None  # the new or changed task (None: a standalone duplicate)
    replaced: tuple[int, str] | None = None
    changed_priority: bool = False


def prepare(spec: TaskSpec, now: int) -> Prepared:
    """Derive the stored form of a spec (already validated by msgspec)."""
    try:
        payload_json = _encode(spec.payload)
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidParams(f"payload is not JSON-serializable: {exc}", "$.payload") from None
    if len(payload_json) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"payload is {len(payload_json)} bytes encoded; the limit is {MAX_PAYLOAD_BYTES}",
            path="$.payload",
        )
    key: str | None
    if spec.dedup_key is True:
        key = hashlib.sha256(_encode_sorted(spec.payload)).hexdigest()
    elif spec.dedup_key is False or spec.dedup_key is None:
        key = None
    else:
        key = spec.dedup_key
    run_at = spec.run_at
    if spec.delay_ms is not None:
        run_at = max(run_at or 0, now + spec.delay_ms)
    expires_at = now + spec.ttl_ms if spec.ttl_ms is not None else None
    return Prepared(spec, payload_json, spec.priority_value, key, run_at, expires_at)


def is_standalone(p: Prepared) -> bool:
    """No dedup key, parent, sibling or dependency: nothing to look up before inserting it."""
    spec = p.spec
    return (
        p.dedup_key is None
        and spec.parent_id is None
        and not spec.depends_on
        and spec.sibling_of is None
    )


# --- the dedup decision (pure) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holder:
    """The active task that holds a dedup key."""

    id: int
    state: str
    priority: int
    requeue_priority: int | None  # a requeue already asked for, at this priority


@dataclass(frozen=True, slots=True)
class Dedup:
    """What to do with a submit whose key is held. ``priority`` is the holder's new priority
    (``upgrade``) or the requeued run's (``requeue``)."""

    action: Literal["reject", "supersede", "requeue", "upgrade", "skip"]
    priority: int | None = None


_REJECT = Dedup("reject")
_SUPERSEDE = Dedup("supersede")
_SKIP = Dedup("skip")
_UPGRADABLE = ("pending", "paused", "blocked")


def decide_duplicate(
    on_duplicate: Literal["skip", "supersede", "reject"], priority: int, holder: Holder
) -> Dedup:
    """The module docstring's table, for a new entry of ``priority`` (lower is more urgent)."""
    if on_duplicate == "reject":
        return _REJECT
    if on_duplicate == "supersede":
        return _SUPERSEDE
    if holder.state == "running":
        asked = 255 if holder.requeue_priority is None else holder.requeue_priority
        return Dedup("requeue", min(holder.priority, priority, asked))
    if priority < holder.priority and holder.state in _UPGRADABLE:
        return Dedup("upgrade", priority)
    return _SKIP


# --- rows ------------------------------------------------------------------------------------


def insert_params(p: Prepared, state: str, now: int) -> InsertRow:
    """The columns a new task row sets, and their values.

    Only the columns with a value are bound: each bound parameter costs the sqlite3 module
    ~0.3 us, and a standalone task leaves ten of the sixteen NULL (half an insert)."""
    spec = p.spec
    cols = ["type", "state", "priority", "payload", "max_retries", "created_at"]
    vals = [spec.type, state, p.priority, p.payload_json, spec.max_retries, now]
    optional = (
        ("dedup_key", p.dedup_key),
        ("grp", spec.group),
        ("tags", _encode(spec.tags) if spec.tags else None),
        ("label", spec.label),
        ("io_cost", _encode(spec.io_cost) if spec.io_cost is not None else None),
        ("backoff", _encode(spec.backoff) if spec.backoff is not None else None),
        ("run_at", p.run_at),
        ("expires_at", p.expires_at),
        ("timeout_ms", spec.timeout_ms),
        ("parent_id", spec.parent_id),
        ("finalize", 1 if spec.finalize else None),
        ("on_child_failure", None if spec.on_child_failure == "ignore" else "failParent"),
        ("on_dependency_failure", None if spec.on_dependency_failure == "fail" else "ignore"),
    )
    for col, val in optional:
        if val is not None:
            cols.append(col)
            vals.append(val)
    return tuple(cols), tuple(vals)


def new_info(p: Prepared, task_id: int, state: str, now: int) -> TaskInfo:
    """The :class:`TaskInfo` of a row just inserted, without reading it back."""
    spec = p.spec
    info = TaskInfo(
        id=task_id,
        type=spec.type,
        state=state,  # type: ignore[arg-type]
        priority=p.priority,
        payload=spec.payload,
        tags=spec.tags,
        io_cost=spec.io_cost or IoBytes(),
        attempt=0,
        max_retries=spec.max_retries,
        created_at=now,
        dedup_key=p.dedup_key,
        group=spec.group,
        label=spec.label,
        run_at=p.run_at,
        parent_id=spec.parent_id,
    )
    if spec.finalize or spec.on_child_failure != "ignore" or spec.on_dependency_failure != "fail":
        # (a workflow's options; left to their defaults above, which most tasks keep)
        info.finalize = spec.finalize
        info.on_child_failure = spec.on_child_failure
        info.on_dependency_failure = spec.on_dependency_failure
    return info


# --- applying it ---------------------------------------------------------------------------


def insert_standalone(tx: Tx, ids: IdFloor, plain: list[Prepared], now: int) -> list[Submitted]:
    """Insert a run of standalone entries with one ``executemany`` per column set; clears
    ``plain``.

    Inside our write transaction SQLite gives each new row max(id) + 1, so the ids are
    consecutive after the highest one and follow without a read per row.
    """
    if not plain:
        return []
    rows = [insert_params(p, "pending", now) for p in plain]
    # With an id floor the first row may have to take its id explicitly.
    before = ids.insert_row(tx, rows.pop(0)) - 1 if ids.floor else max_id(tx)
    for columns, group in itertools.groupby(rows, key=itemgetter(0)):
        tx.executemany(insert_sql(columns), [values for _, values in group])
    tx.counts.move(None, "pending", len(plain))
    if max_id(tx) != before + len(plain):  # pragma: no cover - SQLite invariant
        raise StorageError("task ids were not assigned consecutively")
    out = [
        Submitted(before + 1 + k, "inserted", new_info(p, before + 1 + k, "pending", now))
        for k, p in enumerate(plain)
    ]
    plain.clear()
    return out


def _holder(tx: Tx, task_type: str, key: str) -> Holder | None:
    row = tx.execute(
        "SELECT id, state, priority, requeue_priority FROM tasks "
        f"WHERE type=? AND dedup_key=? AND state IN {ACTIVE_SQL}",
        (task_type, key),
    ).fetchone()
    return None if row is None else Holder(row[0], row[1], row[2], row[3])


def submit_one(tx: Tx, ids: IdFloor, p: Prepared, now: int, follow: Follow) -> Submitted:
    """One entry: the dedup decision against its key's holder, then the new row with its
    dependencies and parent link."""
    if p.spec.sibling_of is not None:
        p = _as_sibling(tx, p)
    spec = p.spec
    replaced: tuple[int, str] | None = None
    if p.dedup_key is not None:
        holder = _holder(tx, spec.type, p.dedup_key)
        if holder is not None:
            dedup = decide_duplicate(spec.on_duplicate, p.priority, holder)
            if dedup.action == "reject":
                raise DuplicateRejected(
                    f"task {holder.id} of type {spec.type!r} already has this dedup key",
                    existing_id=holder.id,
                )
            if dedup.action == "requeue":
                tx.execute(
                    "UPDATE tasks SET requeue=1, requeue_priority=? WHERE id=?",
                    (dedup.priority, holder.id),
                )
                return Submitted(holder.id, "requeued", queries.get(tx, holder.id))
            if dedup.action == "upgrade":
                tx.execute("UPDATE tasks SET priority=? WHERE id=?", (dedup.priority, holder.id))
                return Submitted(
                    holder.id, "upgraded", queries.get(tx, holder.id), changed_priority=True
                )
            if dedup.action == "skip":
                return Submitted(holder.id, "duplicate")
            transitions.supersede(tx, holder.id, now, follow, holder.state)
            replaced = (holder.id, holder.state)
    state = "pending"
    if spec.parent_id is not None:
        parent = tx.execute(
            "SELECT state, child_failed FROM tasks WHERE id=?", (spec.parent_id,)
        ).fetchone()
        if parent is None:
            raise InvalidParams(f"parent task {spec.parent_id} does not exist", "$.parentId")
        if parent[0] not in ACTIVE_STATES:
            raise InvalidParams(
                f"parent task {spec.parent_id} is already {parent[0]}", "$.parentId"
            )
        if parent[1]:
            raise InvalidState(
                f"parent task {spec.parent_id} takes no more children: one of them failed "
                "(onChildFailure: failParent)",
                id=spec.parent_id,
                state=parent[0],
                path="$.parentId",
            )
    deps = sorted(set(spec.depends_on or ()))
    ignore_failed = spec.on_dependency_failure == "ignore"
    for i, dep in enumerate(deps):
        dep_row = tx.execute("SELECT state FROM tasks WHERE id=?", (dep,)).fetchone()
        if dep_row is None:
            raise InvalidParams(f"task {dep} does not exist", f"$.dependsOn[{i}]")
        dep_final = dep_row[0] in FINAL_STATES
        if dep_final and dep_row[0] != "completed" and not ignore_failed:
            raise InvalidParams(
                f"task {dep} ended {dep_row[0]}; nothing can depend on it", f"$.dependsOn[{i}]"
            )
        if not dep_final:
            state = "blocked"
    new_id = ids.insert_row(tx, insert_params(p, state, now))
    tx.counts.move(None, state)
    if deps:
        tx.executemany(
            "INSERT INTO task_deps(task_id, dep_id) VALUES(?, ?)", [(new_id, d) for d in deps]
        )
        tx.execute(
            f"UPDATE tasks SET has_dependents=1 WHERE id IN ({','.join('?' * len(deps))})", deps
        )
    if spec.parent_id is not None:
        tx.execute("UPDATE tasks SET has_children=1 WHERE id=?", (spec.parent_id,))
    info = new_info(p, new_id, state, now)
    return Submitted(new_id, "superseded" if replaced else "inserted", info, replaced)


def _as_sibling(tx: Tx, p: Prepared) -> Prepared:
    """``siblingOf``: the entry takes that task's parent (PROTOCOL.md, "Workflows")."""
    spec = p.spec
    sibling = spec.sibling_of
    row = tx.execute("SELECT parent_id FROM tasks WHERE id=?", (sibling,)).fetchone()
    if row is None:
        raise TaskNotFound(f"no task with id {sibling} (siblingOf)", id=sibling, path="$.siblingOf")
    parent_id = row[0]
    if parent_id is None:
        raise InvalidState(
            f"task {sibling} has no parent: a root task has no siblings",
            id=sibling,
            path="$.siblingOf",
        )
    if spec.parent_id is not None and spec.parent_id != parent_id:
        raise InvalidParams(
            f"siblingOf {sibling} means parentId {parent_id}, not {spec.parent_id}",
            "$.siblingOf",
        )
    state = queries.state_of(tx, parent_id)
    if state not in ACTIVE_STATES:
        raise InvalidState(
            f"the parent {parent_id} of task {sibling} is already {state}",
            id=parent_id,
            state=state,
            path="$.siblingOf",
        )
    return msgspec.structs.replace(
        p, spec=msgspec.structs.replace(spec, parent_id=parent_id, sibling_of=None)
    )


def submit_entries(
    tx: Tx,
    ids: IdFloor,
    batch: Sequence[Prepared],
    now: int,
    follow: Follow,
    numbered: bool,
    base: int = 0,
) -> list[Submitted]:
    """Every entry of one submit, in order, in ``tx``. ``numbered``: errors name the entry
    (``data.index`` = ``base`` + its index, ``$.tasks[i]``), and runs of standalone entries are
    inserted together."""
    out: list[Submitted] = []
    plain: list[Prepared] = []
    for index, p in enumerate(batch):
        if numbered and is_standalone(p):
            plain.append(p)
            continue
        out.extend(insert_standalone(tx, ids, plain, now))
        try:
            out.append(submit_one(tx, ids, p, now, follow))
        except (DuplicateRejected, InvalidParams, InvalidState, TaskNotFound) as exc:
            if numbered:
                _number(exc, base + index)
            raise
    out.extend(insert_standalone(tx, ids, plain, now))
    return out


def _number(
    exc: DuplicateRejected | InvalidParams | InvalidState | TaskNotFound, index: int
) -> None:
    exc.data["index"] = index
    if isinstance(exc, InvalidParams):
        path = f"$.tasks[{index}]" + exc.path[1:]
        exc.path = exc.data["path"] = path
    elif "path" in exc.data:
        exc.data["path"] = f"$.tasks[{index}]" + exc.data["path"][1:]
