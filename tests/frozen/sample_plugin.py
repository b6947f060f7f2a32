"""A user executor module for ``build_sidecar.py --plugin tests.frozen.sample_plugin``."""

from __future__ import annotations

from typing import Any

from taskmill_core import TaskContext, executor


@executor("sample.double")
async def double(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {"value": payload["n"] * 2}
