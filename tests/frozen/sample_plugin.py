"""A user executor module for ``build_sidecar.py --plugin tests.frozen.sample_plugin``."""

from __future__ import annotations

import logging
from typing import Any

import structlog

from taskmill_core import TaskContext, executor

_log = structlog.get_logger("sample")
_stdlib_log = logging.getLogger("sample")


@executor("sample.double")
async def double(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {"value": payload["n"] * 2}


@executor("sample.log")
async def log_lines(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Log like a chatty executor: one structlog and one stdlib line at debug level."""
    _log.debug("sample.log ran", n=payload.get("n"), padding="x" * 100)
    _stdlib_log.debug("sample.log ran n=%s %s", payload.get("n"), "y" * 100)
