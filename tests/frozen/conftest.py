"""The frozen binaries under test: ``TASKMILL_FROZEN_BINARY``, one or more paths (os.pathsep).

Each path is a built sidecar executable (``python build_sidecar.py --mode onefile|onedir
--plugin tests.frozen.sample_plugin``, the plugin for test_a_bundled_plugin_loads); a onedir build
is recognised by the ``_internal`` folder next to it. A test that takes ``frozen`` runs once per
binary and is skipped when the variable is unset. A test that takes ``build`` runs against the
sidecar from source (``python -m sidecar``, always) and then against each binary. ``.ci/run``
builds both modes and sets the variable.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ENV = "TASKMILL_FROZEN_BINARY"


@dataclass(frozen=True)
class Frozen:
    path: Path
    mode: str  # "onefile" or "onedir"

    def __str__(self) -> str:
        return self.mode


def frozen_binaries() -> list[Frozen]:
    found = []
    for entry in filter(None, os.environ.get(ENV, "").split(os.pathsep)):
        path = Path(entry).resolve()
        mode = "onedir" if (path.parent / "_internal").is_dir() else "onefile"
        found.append(Frozen(path, mode))
    return found


@dataclass(frozen=True)
class Build:
    """A sidecar to start: from source or a frozen binary, and the processes it is made of."""

    mode: str  # "source", "onefile" or "onedir"
    command: tuple[str, ...]

    @property
    def processes(self) -> int:
        """A onefile binary is two processes: the bootloader and its Python child."""
        return 2 if self.mode == "onefile" else 1

    def __str__(self) -> str:
        return self.mode


SOURCE = Build("source", (sys.executable, "-m", "sidecar"))


def builds() -> list[Build]:
    return [SOURCE, *(Build(b.mode, (str(b.path),)) for b in frozen_binaries())]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "build" in metafunc.fixturenames:
        found = builds()
        metafunc.parametrize("build", found, ids=[b.mode for b in found])
    if "frozen" not in metafunc.fixturenames:
        return
    binaries = frozen_binaries()
    if binaries:
        metafunc.parametrize("frozen", binaries, ids=[b.mode for b in binaries])
    else:
        skip = pytest.mark.skip(reason=f"{ENV} is not set (build with build_sidecar.py)")
        metafunc.parametrize("frozen", [pytest.param(None, marks=skip)], ids=["unset"])
