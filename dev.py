#!/usr/bin/env python3
"""Taskmill's task runner: stdlib only, runs on Windows, macOS and Linux.

    python3 dev.py test      lint + type checks + the whole test suite
    python3 dev.py demo      a short, non-interactive tour of what Taskmill does
    python3 dev.py bench     benchmarks against peers (huey, persist-queue, raw sqlite3)
    python3 dev.py lint      ruff + mypy only
    python3 dev.py build     the frozen sidecar binary (PyInstaller)
    python3 dev.py schemas   regenerate schemas/ from the msgspec types

The first run creates `.venv` and installs the project with its `dev` extra; it reinstalls
whenever pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".taskmill-installed"


def venv_python() -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def _pyproject_digest() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> Path:
    """Create the venv and (re)install the project when pyproject.toml changed."""
    py = venv_python()
    if not py.exists():
        print(f"dev.py: creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    digest = _pyproject_digest()
    if not STAMP.exists() or STAMP.read_text().strip() != digest:
        print("dev.py: installing taskmill with its dev extra", file=sys.stderr)
        run([str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=False)
        run([str(py), "-m", "pip", "install", "--quiet", "-e", ".[dev]"])
        STAMP.write_text(digest)
    return py


def run(cmd: list[str], check: bool = True, env: dict[str, str] | None = None) -> int:
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    if check and proc.returncode != 0:
        sys.exit(proc.returncode)
    return proc.returncode


def lint(py: Path) -> None:
    run([str(py), "-m", "ruff", "check", "."])
    run([str(py), "-m", "ruff", "format", "--check", "."])
    run([str(py), "-m", "mypy"])


def cmd_lint(args: list[str]) -> None:
    lint(ensure_venv())


def cmd_test(args: list[str]) -> None:
    py = ensure_venv()
    lint(py)
    run([str(py), "-m", "pytest", *args])
    npm = "npm.cmd" if os.name == "nt" else "npm"
    env = dict(os.environ, TASKMILL_PYTHON=str(py))
    # The client package first (its tests, its dist/ that the example imports, then the packed
    # tarball in a scratch Vite + TS project), then the example that depends on it.
    client = ROOT / "clients" / "typescript"
    example = ROOT / "tauri-example"
    for folder in (client, example):
        if not (folder / "package.json").exists():
            continue
        if not (folder / "node_modules").exists():
            subprocess.run(
                [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund"], cwd=folder, check=True
            )
        subprocess.run([npm, "test"], cwd=folder, env=env, check=True)
        if folder == client:
            subprocess.run([npm, "run", "pack:check"], cwd=folder, check=True)


def cmd_bench(args: list[str]) -> None:
    py = ensure_venv()
    run([str(py), "-m", "tests.bench", *args])


def cmd_demo(args: list[str]) -> None:
    py = ensure_venv()
    demo = ROOT / "demo.py"
    if not demo.exists():
        print("dev.py demo: not yet (issue 6 delivers the demo)")
        return
    run([str(py), str(demo), *args])


def cmd_build(args: list[str]) -> None:
    py = ensure_venv()
    script = ROOT / "build_sidecar.py"
    if not script.exists():
        print("dev.py build: not yet (issue 6 delivers build_sidecar.py)")
        return
    run([str(py), str(script), *args])


def cmd_schemas(args: list[str]) -> None:
    py = ensure_venv()
    if not (ROOT / "sidecar" / "schemas.py").exists():
        print("dev.py schemas: not yet (issue 5 delivers the schema generator)")
        return
    run([str(py), "-m", "sidecar.schemas", *args])


COMMANDS = {
    "test": cmd_test,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "lint": cmd_lint,
    "build": cmd_build,
    "schemas": cmd_schemas,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
