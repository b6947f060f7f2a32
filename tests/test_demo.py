"""`python3 dev.py demo` runs start to finish: sidecar child, crash, restart, summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_demo_runs_and_loses_nothing() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "demo.py"), "--files", "60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "restarted: pid" in text and "nothing lost" in text
    summary = text[text.index("Summary") :]
    assert " 0 failed, 0 pending" in summary
    assert "dedup hits: 10 of 10" in summary
    runs = int(summary.split("recurring backup: ")[1].split(" runs")[0])
    assert runs >= 2  # it fired before the crash and after the restart
    assert "multipart upload: 8 parts committed by its finalize phase" in summary
