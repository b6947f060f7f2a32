"""An internal error in the scheduler ends the sidecar the way PROTOCOL.md says: a
``sidecar.exiting`` notification with reason ``fatal``, one sentence on stderr, exit code 1;
the work it was doing is requeued when the sidecar starts again.

The error is planted by a plugin executor, so this runs the sidecar from source (a frozen
binary bundles only its own plugins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .client import Sidecar

PLUGIN = '''
from taskmill_core.executors import executor
from taskmill_core.store import SqliteStore


@executor("test.break")
async def break_the_next_step(ctx, payload):
    """Plant a bug in the store: the dispatch step that records this run's end fails."""

    def broken(*args, **kwargs):
        raise RuntimeError("a planted bug")

    SqliteStore.complete_standalone = broken
'''


def test_an_internal_error_ends_the_sidecar_with_exiting_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKMILL_SIDECAR_CMD", raising=False)
    (tmp_path / "tm_break_plugin.py").write_text(PLUGIN)
    db = tmp_path / "tasks.db"
    sc = Sidecar("--plugin=tm_break_plugin", db=db, env={"PYTHONPATH": str(tmp_path)})
    try:
        sc.ready()
        task = sc.result("task.submit", {"type": "test.break"})
        assert sc.event("sidecar.exiting") == {"reason": "fatal"}
        assert sc.wait_exit() == 1
        sc.close()
        assert "stopped on an internal error: RuntimeError('a planted bug')" in sc.stderr_text
        assert not sc.bad_lines
    finally:
        sc.close()
    again = Sidecar(db=db)  # without the plugin: the task waits, requeued, for its executor
    try:
        assert again.ready()["recovered"] == {"requeued": 1}
        assert again.result("task.get", {"id": task["id"]})["state"] == "pending"
    finally:
        again.close()
