"""Random and mutated messages against one long-lived real sidecar (issue 3, "Tests").

Every example is one line on the sidecar's stdin: a random JSON value, a request or
notification for a real method (or a garbage name) with random or plausible params, a batch of
those, or the bytes of such a message mutated (truncated, invalid UTF-8, huge numbers, deep
nesting, lone surrogates). After each line a ``ping`` with a unique id is a barrier: everything
the sidecar answers to the line is collected up to it (answers may overtake each other, so the
collector also waits for as many answers as the line calls for). Then:

* the process is alive;
* a request (an object with ``"jsonrpc": "2.0"``, a string ``method`` and an ``id`` key) gets
  exactly one response with the same id; an invalid request gets one ``-32600`` that echoes
  a valid id (else ``null``); a notification or a response-shaped object gets nothing; a batch
  gets one array of the element answers (nothing when there are none, one ``-32600`` when
  empty); a line of only spaces and tabs gets nothing; invalid UTF-8 or JSON gets one
  ``-32700`` with ``id: null``;
* every response is valid JSON-RPC 2.0: ``result`` or ``error`` with an integer ``code``, a
  string ``message`` and a string ``data.kind``.

Lines that are syntactically JSON but outside the interoperable subset (RFC 8259 section 9,
RFC 7493: numbers beyond a double's range, lone surrogates, very deep nesting, duplicate keys)
may either be parsed or answered with ``-32700``: both are allowed.

The global scheduler pause is set first and ``scheduler.resume`` and ``shutdown`` are not in
the random method list, so nothing a random submit creates ever runs. The last test shuts the
sidecar down and expects exit code 0.

Deterministic for CI: ``derandomize=True`` and no example database.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .client import Sidecar

pytestmark = pytest.mark.timeout(120)

# PROTOCOL.md, "Methods", plus the host-executor notifications a client sends. Not "shutdown"
# (lifecycle) and not "scheduler.resume" (it could lift the global pause and start work).
METHODS = [
    "initialize",
    "ping",
    "rpc.discover",
    "task.submit",
    "task.submitBatch",
    "task.get",
    "task.list",
    "task.cancel",
    "task.cancelMany",
    "task.setPriority",
    "task.pause",
    "task.resume",
    "task.retry",
    "scheduler.status",
    "scheduler.pause",
    "scheduler.configure",
    "history.stats",
    "history.prune",
    "executor.register",
    "executor.unregister",
    "executor.progress",
    "executor.checkpoint",
]
EXCLUDED = {"shutdown", "scheduler.resume"}

SETTINGS = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTEROPERABLE_DEPTH = 500  # deeper nesting may be refused as a parse error (implementation limit)

# --- the sidecar ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    db: Path = tmp_path_factory.mktemp("fuzz") / "tasks.db"
    sc = Sidecar(db=db)
    try:
        sc.ready()
        assert sc.result("scheduler.pause", {}) == {}
        discovered = {m["name"] for m in sc.result("rpc.discover")["methods"]}
        assert set(METHODS) | EXCLUDED <= discovered
        yield sc
        if sc.proc.poll() is None:  # the last test did not run (deselected): shut down here
            assert shutdown_exit_code(sc) == 0
    finally:
        sc.close()
    assert sc.bad_lines == [], "stdout carried something that is not a JSON message"


def shutdown_exit_code(sc: Sidecar) -> int:
    sc.send({"jsonrpc": "2.0", "id": "fuzz-shutdown", "method": "shutdown", "params": {}})
    response = sc.response("fuzz-shutdown")
    assert response.get("result") == {}, response
    return sc.wait_exit(15)


# --- strategies -----------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**53 - 2, max_value=2**70)
    | st.integers(min_value=-(2**70), max_value=-(2**63) + 2)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
garbage_methods = st.text(max_size=24) | st.sampled_from(
    ["", "task.", "task.submit ", "TASK.SUBMIT", "rpc.", "rpc.foo", "shutdown\x00", "ping/"]
)
methods = st.sampled_from(METHODS) | garbage_methods
valid_ids = (
    st.integers()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.none()
)
invalid_ids = (
    st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
ids = st.one_of(valid_ids, valid_ids, valid_ids, invalid_ids)  # one_of picks a branch evenly
task_ids = st.integers(min_value=-2, max_value=60) | st.integers()
task_types = st.sampled_from(["noop", "sleep", "fuzz.a", "fuzz.b", "fs.copy"]) | st.text(
    alphabet="abcXYZ09_.:-/ ", max_size=12
)
priorities = st.integers(min_value=-1, max_value=256) | st.sampled_from(
    ["realtime", "high", "normal", "background", "idle", "urgent"]
)
big_ints = st.sampled_from([2**53, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1])
valid_submit = st.fixed_dictionaries(
    {"type": st.sampled_from(["noop", "sleep", "fuzz.a", "fuzz.b", "fs.copy", "x:y-z_1"])},
    optional={
        "payload": json_values,
        "priority": st.integers(min_value=0, max_value=255)
        | st.sampled_from(["realtime", "high", "normal", "background", "idle"]),
        "dedupKey": st.sampled_from(["k1", "k2", "k3"]) | st.just(True),
        "onDuplicate": st.sampled_from(["skip", "supersede", "reject"]),
        "group": st.sampled_from(["g1", "g2"]),
        "tags": st.dictionaries(st.sampled_from(["a", "b"]), st.text(max_size=4), max_size=2),
        "label": st.text(max_size=10),
        "maxRetries": st.integers(min_value=0, max_value=100),
        "delayMs": st.integers(min_value=0, max_value=10**9),
        "ttlMs": st.integers(min_value=1, max_value=10**9),
        "parentId": st.integers(min_value=1, max_value=40),
        "dependsOn": st.lists(st.integers(min_value=1, max_value=40), max_size=3),
    },
)
wild_submit = st.fixed_dictionaries(
    {"type": task_types},
    optional={
        "payload": json_values,
        "priority": priorities,
        "dedupKey": st.text(max_size=8) | st.booleans() | st.integers(),
        "onDuplicate": st.sampled_from(["skip", "supersede", "reject", "other"]),
        "group": st.text(max_size=4) | st.integers(),
        "tags": st.dictionaries(
            st.text(max_size=4), st.text(max_size=4) | st.integers(), max_size=3
        ),
        "ioCost": st.fixed_dictionaries(
            {}, optional={"diskRead": st.integers() | big_ints, "netTx": st.integers()}
        ),
        "maxRetries": st.integers(min_value=-1, max_value=101),
        "backoff": st.fixed_dictionaries(
            {"kind": st.sampled_from(["constant", "linear", "exponential", "x"])},
            optional={"initialMs": st.integers() | big_ints, "multiplier": st.floats()},
        ),
        "runAt": st.integers() | big_ints,
        "delayMs": st.integers() | big_ints,
        "ttlMs": st.integers() | big_ints,
        "timeoutMs": st.integers() | big_ints,
        "parentId": task_ids,
        "dependsOn": st.lists(task_ids, max_size=3),
        "bogus": json_values,
    },
)
submit_params = valid_submit | wild_submit
plausible_params: dict[str, st.SearchStrategy[Any]] = {
    "task.submit": submit_params,
    "task.submitBatch": st.fixed_dictionaries({"tasks": st.lists(submit_params, max_size=4)}),
    "task.get": st.fixed_dictionaries({"id": task_ids}),
    "task.cancel": st.fixed_dictionaries({"id": task_ids}),
    "task.pause": st.fixed_dictionaries({"id": task_ids}),
    "task.resume": st.fixed_dictionaries({"id": task_ids}),
    "task.retry": st.fixed_dictionaries({"id": task_ids}),
    "task.setPriority": st.fixed_dictionaries({"id": task_ids, "priority": priorities}),
    "task.list": st.fixed_dictionaries(
        {},
        optional={
            "state": st.sampled_from(["pending", "paused", "cancelled", "nope"])
            | st.lists(st.sampled_from(["pending", "completed", "x"]), max_size=3),
            "type": task_types,
            "limit": st.integers(min_value=-1, max_value=1001) | big_ints,
            "cursor": st.text(max_size=10),
            "tags": st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
        },
    ),
    "task.cancelMany": st.fixed_dictionaries(
        {}, optional={"type": task_types, "group": st.text(max_size=3)}
    ),
    "scheduler.pause": st.fixed_dictionaries(
        {}, optional={"group": st.text(max_size=4), "type": task_types}
    ),
    "scheduler.configure": st.fixed_dictionaries(
        {},
        optional={
            "maxConcurrency": st.integers(min_value=0, max_value=2000),
            "progressHz": st.floats(min_value=-1, max_value=200, allow_nan=False),
            "retention": st.fixed_dictionaries(
                {}, optional={"maxCount": st.integers(), "maxAgeMs": st.integers() | big_ints}
            ),
            "preemptPriority": priorities,
            "minRunMs": st.integers() | big_ints,
        },
    ),
    "history.prune": st.fixed_dictionaries(
        {}, optional={"olderThanMs": st.integers() | big_ints, "keep": st.integers() | big_ints}
    ),
    "executor.register": st.fixed_dictionaries(
        {"type": task_types}, optional={"concurrency": st.integers()}
    ),
    "executor.progress": st.fixed_dictionaries(
        {"id": task_ids},
        optional={"fraction": st.floats(allow_nan=False), "bytesDone": st.integers() | big_ints},
    ),
    "executor.checkpoint": st.fixed_dictionaries({"id": task_ids, "state": json_values}),
}


@st.composite
def requests(draw: st.DrawFn, *, notification: bool | None = None) -> dict[str, Any]:
    """A request or notification: mostly valid in shape, sometimes with a mutated envelope."""
    method = draw(methods)
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if notification is None:
        notification = draw(st.integers(0, 4)) == 4  # (hypothesis favours small draws)
    if not notification:
        message["id"] = draw(ids)
    shape = draw(st.integers(0, 5))
    if method in plausible_params and shape < 4:
        message["params"] = draw(plausible_params[method])
    elif shape < 3:
        message["params"] = {}
    elif shape < 5:
        message["params"] = draw(json_values | st.dictionaries(st.text(max_size=6), json_values))
    mutation = draw(st.integers(0, 19)) - 15  # mostly unmutated (negative)
    if mutation == 0:
        message["jsonrpc"] = draw(st.sampled_from(["1.0", "2", 2.0, None]))
    elif mutation == 1:
        del message["jsonrpc"]
    elif mutation == 2:
        message["method"] = draw(json_values)
    elif mutation == 3:
        del message["method"]
    elif mutation == 4:
        message[draw(st.sampled_from(["result", "error", "extra"]))] = draw(json_values)
    return message


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request for a real method: plausible, random or no params."""
    method = draw(st.sampled_from(METHODS))
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": draw(valid_ids), "method": method}
    shape = draw(st.integers(0, 5))
    if shape < 4:
        message["params"] = draw(plausible_params.get(method, st.just({})))
    elif shape == 4:
        message["params"] = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3))
    return message


messages = st.one_of(
    json_values,
    requests(),
    requests(),
    requests(),
    requests(notification=True),
    st.lists(requests() | json_values, max_size=5),
    st.lists(requests(notification=True), min_size=1, max_size=3),
)


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    """One line (without its newline): a message, or a message's bytes mutated."""
    data = encode(draw(messages))
    kind = draw(st.integers(0, 13)) - 9  # mostly the message as it is (negative)
    if kind == 0:  # truncated
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif kind == 1:  # invalid UTF-8 somewhere
        at = draw(st.integers(0, len(data)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80\x80"]))
        data = data[:at] + bad + data[at:]
    elif kind == 2:  # deep nesting around a request's params, or on its own
        depth = draw(st.sampled_from([1, 10, 100, 400, 600, 999, 1000, 5000, 100_000]))
        inner = b"[" * depth + b"]" * depth
        if draw(st.booleans()):
            data = inner
        else:
            rid = encode(draw(ids))
            data = b'{"jsonrpc":"2.0","id":' + rid + b',"method":"ping","params":' + inner + b"}"
    elif kind == 3:  # a huge or odd number where a value goes
        number = draw(
            st.sampled_from(
                [b"1e400", b"-1e400", b"1" * 400, b"-0", b"1E2", b"0.1e-400", b"123456789e309"]
            )
        )
        slot = draw(st.sampled_from(["id", "priority", "payload"]))
        if slot == "id":
            data = b'{"jsonrpc":"2.0","id":' + number + b',"method":"ping"}'
        else:
            data = (
                b'{"jsonrpc":"2.0","id":"num","method":"task.submit","params":{"type":"fuzz.n","'
                + slot.encode()
                + b'":'
                + number
                + b"}}"
            )
    elif kind == 4:  # raw JSON oddities
        data = draw(
            st.sampled_from(
                [
                    b"",
                    b" ",
                    b"\r",
                    b"NaN",
                    b"[NaN]",
                    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":Infinity}}',
                    b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}',
                    b'{"jsonrpc":"2.0","id":3,"id":4,"method":"ping"}',
                    b'{"jsonrpc":"2.0","id":5,"method":"ping"} trailing',
                    b'{"jsonrpc":"2.0","id":6,"method":"ping"}{"jsonrpc":"2.0","id":7}',
                    b"\xef\xbb\xbf{}",
                    b'{"jsonrpc":"2.0","id":8,"method":"ping"}\r',
                    b"\x00",
                    b"[[]]",
                    b"[{}]",
                    b"[1,2,3]",
                ]
            )
        )
    return data.replace(b"\n", b" ")


# --- the oracle -----------------------------------------------------------------------------


class NotInteroperable(Exception):
    """Valid JSON text outside the interoperable subset: a parse error is an allowed answer."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise NotInteroperable("duplicate keys")
    return result


def _check_interoperable(value: Any, depth: int = 0) -> None:
    if depth > INTEROPERABLE_DEPTH:
        raise NotInteroperable("deep nesting")
    if isinstance(value, float) and not math.isfinite(value):
        raise NotInteroperable("number beyond a double's range")
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise NotInteroperable("lone surrogate") from None
    if isinstance(value, list):
        for item in value:
            _check_interoperable(item, depth + 1)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_interoperable(key, depth + 1)
            _check_interoperable(item, depth + 1)


_PARSE_FAILED = object()


def parse(line: bytes) -> tuple[Any, bool]:
    """``(value, interoperable)``; value is _PARSE_FAILED for invalid UTF-8 or JSON."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return _PARSE_FAILED, True
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return _PARSE_FAILED, True  # (also a 5,000-digit integer: ValueError)
    try:
        json.loads(text, object_pairs_hook=_no_duplicates)
        _check_interoperable(value)
    except NotInteroperable:
        return value, False
    except RecursionError:
        return value, False
    return value, True


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, int | float | str) and not isinstance(value, bool))


class Expected:
    """One expected response: the id it must carry and, if not None, its error code."""

    def __init__(self, rid: Any, *, code: int | None = None) -> None:
        self.rid = rid
        self.code = code

    def __repr__(self) -> str:
        return f"Expected(id={self.rid!r}, code={self.code})"


def expect_one(element: Any) -> Expected | None:
    """What JSON-RPC 2.0 (and PROTOCOL.md's echo rule) requires for one message."""
    if not isinstance(element, dict):
        return Expected(None, code=INVALID_REQUEST)
    rid = element.get("id")
    echo = rid if _valid_id(rid) else None
    if "method" not in element:
        if "id" in element and ("result" in element or "error" in element):
            return None  # a response (to a server request that does not exist): ignored
        return Expected(echo, code=INVALID_REQUEST)
    if element.get("jsonrpc") != "2.0" or not isinstance(element["method"], str):
        return Expected(echo, code=INVALID_REQUEST)
    if "id" in element and not _valid_id(rid):
        return Expected(None, code=INVALID_REQUEST)
    params = element.get("params", {})
    if not isinstance(params, dict | list):
        return Expected(echo, code=INVALID_REQUEST)
    if "id" not in element:
        return None  # a notification
    return Expected(rid)  # a request: any result or error, with its id


def expect(value: Any) -> list[Expected] | Expected | None:
    """A list for a batch (one array answer), one Expected, or None (no answer at all)."""
    if value is _PARSE_FAILED:
        return Expected(None, code=PARSE_ERROR)
    if isinstance(value, list):
        if not value:
            return Expected(None, code=INVALID_REQUEST)
        batch = [e for e in (expect_one(element) for element in value) if e is not None]
        return batch or None
    return expect_one(value)


def same_id(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def check_response(response: Any, expected: Expected) -> None:
    assert isinstance(response, dict), response
    assert response.get("jsonrpc") == "2.0", response
    assert "id" in response and same_id(response["id"], expected.rid), (response, expected)
    assert ("result" in response) != ("error" in response), response
    assert set(response) <= {"jsonrpc", "id", "result", "error"}, response
    if "error" in response:
        error = response["error"]
        assert isinstance(error, dict), response
        code = error.get("code")
        assert isinstance(code, int) and not isinstance(code, bool), response
        assert isinstance(error.get("message"), str), response
        assert isinstance(error.get("data"), dict), response
        assert isinstance(error["data"].get("kind"), str), response
        if expected.code is not None:
            assert code == expected.code, (response, expected)
    else:
        assert expected.code is None, (response, expected)


def check_answers(answers: list[Any], expected: list[Expected] | Expected | None) -> None:
    if expected is None:
        assert answers == [], answers
        return
    assert len(answers) == 1, (answers, expected)
    answer = answers[0]
    if isinstance(expected, Expected):
        check_response(answer, expected)
        return
    assert isinstance(answer, list) and len(answer) == len(expected), (answer, expected)
    # Order within a batch answer is free: match by id, the stricter expectations first.
    left = list(answer)
    for exp in sorted(expected, key=lambda e: e.code is None):
        match = next(
            (
                r
                for r in left
                if isinstance(r, dict)
                and same_id(r.get("id"), exp.rid)
                and (exp.code is None or r.get("error", {}).get("code") == exp.code)
            ),
            None,
        )
        assert match is not None, (answer, expected)
        check_response(match, exp)
        left.remove(match)


# --- the conversation -----------------------------------------------------------------------

_barriers = itertools.count(1)


def exchange(sc: Sidecar, line: bytes, want: int, timeout: float = 20.0) -> list[Any]:
    """Send ``line`` then a barrier ping; the answers that are not the barrier's.

    Waits for the barrier and for ``want`` answers (a slow request's answer may come after
    the barrier's). A surplus answer that comes later still fails: it shows up among the next
    line's answers (and the last test checks that nothing is left over).
    """
    barrier = f"barrier-{next(_barriers)}"
    sc.send_raw(line + b"\n")
    sc.send({"jsonrpc": "2.0", "id": barrier, "method": "ping"})
    answers: list[Any] = []
    seen_barrier = False
    deadline = time.monotonic() + timeout
    while not seen_barrier or len(answers) < want:
        left = deadline - time.monotonic()
        assert left > 0, f"no answer: barrier seen {seen_barrier}, answers {answers}"
        msg = sc.next_message(left)
        if isinstance(msg, dict) and "method" in msg:
            # an event, or a server -> client request: no task may run while paused
            assert msg["method"] != "task.execute", msg
            continue
        if isinstance(msg, dict) and msg.get("id") == barrier:
            assert "result" in msg and not seen_barrier, msg
            seen_barrier = True
            continue
        answers.append(msg)
    assert sc.proc.poll() is None, f"the sidecar died: {sc.stderr_text[-2000:]}"
    return answers


def run_line(sc: Sidecar, line: bytes) -> None:
    value, interoperable = parse(line.removesuffix(b"\r"))
    blank = not line.strip(b" \t\r")  # empty, or only spaces and tabs: ignored, no answer
    expected = None if blank else expect(value)
    answers = exchange(sc, line, 0 if expected is None else 1)
    if not interoperable and len(answers) == 1:
        a = answers[0]
        if isinstance(a, dict) and a.get("error", {}).get("code") == PARSE_ERROR:
            check_response(a, Expected(None, code=PARSE_ERROR))  # refused: allowed
            return
    check_answers(answers, expected)


# --- the tests ------------------------------------------------------------------------------


@SETTINGS
@given(line=lines())
def test_fuzzed_lines_are_answered_and_never_kill_the_sidecar(
    sidecar: Sidecar, line: bytes
) -> None:
    run_line(sidecar, line)


@settings(SETTINGS, max_examples=400)
@given(message=st.lists(requests(), min_size=1, max_size=8))
def test_fuzzed_batches_get_one_answer_per_request(
    sidecar: Sidecar, message: list[dict[str, Any]]
) -> None:
    run_line(sidecar, encode(message))


@settings(SETTINGS, max_examples=600)
@given(message=valid_requests())
def test_valid_requests_for_real_methods_are_answered(
    sidecar: Sidecar, message: dict[str, Any]
) -> None:
    run_line(sidecar, encode(message))


def test_nothing_ran_and_it_still_exits_0_on_shutdown(sidecar: Sidecar) -> None:
    status = sidecar.result("scheduler.status")
    assert status["paused"] is True and status["running"] == []
    assert status["counts"].get("completed", 0) == 0
    assert exchange(sidecar, encode({"jsonrpc": "2.0", "method": "ping"}), 0) == []
    assert shutdown_exit_code(sidecar) == 0
    assert sidecar.event("sidecar.exiting") == {"reason": "shutdown"}
