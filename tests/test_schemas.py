"""schemas/ is generated from the msgspec types and must be current."""

from __future__ import annotations

from sidecar import schemas


def test_committed_schemas_match_a_fresh_generation() -> None:
    stale = [p.name for p, text in schemas.files().items() if p.read_text() != text]
    assert stale == [], f"run `python3 dev.py schemas` to regenerate {stale}"


def test_every_protocol_method_and_event_is_documented() -> None:
    names = {m["name"] for m in schemas.openrpc_document()["methods"]}
    for method in ["task.submit", "task.submitBatch", "scheduler.configure", "rpc.discover"]:
        assert method in names
    for event in ["sidecar.ready", "task.progress", "io.pressure", "executor.cancel"]:
        assert event in names
