"""Executor registration: in code, from plugin modules, from installed entry points."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmill_core import TaskSpec
from taskmill_core.executors import Registry

from .helpers import open_scheduler

pytestmark = pytest.mark.anyio

PLUGIN = """
from taskmill_core import executor

@executor("plugin.double", concurrency=2)
async def double(ctx, payload):
    return {"value": payload["n"] * 2}

async def not_an_executor(ctx, payload):
    return None
"""


@pytest.fixture
def plugin_path(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "tm_test_plugin.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "tm_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tm-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[taskmill.executors]\nplugin = tm_test_plugin\ntriple = tm_test_triple:run\n"
    )
    (tmp_path / "tm_test_triple.py").write_text(
        "async def run(ctx, payload):\n    return payload * 3\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in ("tm_test_plugin", "tm_test_triple"):
        sys.modules.pop(name, None)


async def test_plugin_module_registers_its_marked_functions(
    tmp_path: Path, plugin_path: Path
) -> None:
    async with open_scheduler(tmp_path / "t.db", load_entry_points=False) as (s, _, _sub):
        assert s.load_plugin("tm_test_plugin") == ["plugin.double"]
        r = await s.submit(TaskSpec(type="plugin.double", payload={"n": 21}))
        await s.wait_idle()
        assert (await s.get(r.id)).result == {"value": 42}


def test_plugin_without_executors_is_refused(plugin_path: Path) -> None:
    with pytest.raises(ValueError, match="defines no @executor"):
        Registry().load_module("tm_test_triple")


async def test_entry_points_are_loaded_on_open(tmp_path: Path, plugin_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", load_entry_points=True) as (s, _, _sub):
        assert {"plugin.double", "triple"} <= set(s.executor_types())
        r = await s.submit(TaskSpec(type="triple", payload=5))
        await s.wait_idle()
        assert (await s.get(r.id)).result == 15
