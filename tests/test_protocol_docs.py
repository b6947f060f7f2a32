"""docs/protocol.md documents the whole protocol: every method and every event the sidecar's
OpenRPC document (``schemas/openrpc.json``, generated from the types) declares."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def declared() -> list[dict[str, str]]:
    doc = json.loads((ROOT / "schemas" / "openrpc.json").read_text(encoding="utf-8"))
    methods: list[dict[str, str]] = doc["methods"]
    return methods


def test_the_openrpc_document_declares_methods_and_events() -> None:
    names = [m["name"] for m in declared()]
    assert "task.submit" in names and "task.completed" in names  # methods and events both
    assert len(names) == len(set(names))


def documented() -> str:
    """docs/protocol.md before its closing summary of the contract's additions (a table that
    names every addition's methods): the sections that describe what the sidecar does."""
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    summary = text.find("## The contract's additions")
    return text if summary < 0 else text[:summary]


def test_every_method_and_event_appears_in_docs_protocol_md() -> None:
    text = documented()
    missing = [
        f"{m['name']} ({m.get('x-direction', 'method')})"
        for m in declared()
        if f"`{m['name']}`" not in text
    ]
    assert missing == [], f"docs/protocol.md does not mention: {', '.join(missing)}"
