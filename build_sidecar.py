#!/usr/bin/env python3
"""Build the frozen sidecar binary with PyInstaller (``python3 dev.py build`` runs this).

    python build_sidecar.py                        # default mode (onefile), host triple
    python build_sidecar.py --mode onedir          # a folder next to where the onefile goes
    python build_sidecar.py --plugin my_executors  # bundle user executor modules (repeatable)
    python build_sidecar.py --measure              # build both modes and measure them

Output: ``tauri-example/src-tauri/binaries/taskmill-sidecar-<target-triple>[.exe]``, the name
Tauri's ``externalBin`` expects. ``--mode onedir`` writes the folder
``taskmill-sidecar-<target-triple>-onedir/`` next to it, holding the executable of the same name.
PyInstaller's work, spec and dist directories live under ``build/pyinstaller/`` (gitignored).

Why onefile is the default: Tauri's ``externalBin`` ships exactly one file per target, which
onefile is and onedir is not (onedir needs its whole ``_internal/`` folder bundled as resources
and the path wired by hand). Onefile pays at startup: its bootloader unpacks the archive into a
``_MEI*`` temp directory on every start, and the tree is two processes. Measured on Linux x86_64
(2 cores, Python 3.11, PyInstaller 6.22; ``--measure`` reproduces it):

    mode     size     ready p50  RSS (tree)  idle CPU (30 s)  build
    onefile  20.9 MB  558 ms     39.3 MB     0.17 %           25 s
    onedir   47.4 MB  279 ms     37.5 MB     0.13 %           16 s

Both are inside the targets (onefile ready <= 1.5 s, onedir <= 500 ms, RSS <= 60 MB, idle CPU
<= 0.5 %). Onedir starts ~0.3 s faster, once per app launch; onefile is less than half the size
and is the single file Tauri wants, so onefile wins. Its two processes cannot orphan each other:
the bootloader forwards SIGTERM/SIGINT and removes ``_MEI*`` after a clean exit, and the Python
child exits by itself when the bootloader is SIGKILLed (``sidecar/frozen.py``).

The build is console mode (a windowed build has no stdout) with unbuffered stdio (``-u``), and
bundles what the sidecar imports dynamically: ``sidecar.builtin``, the anyio asyncio backend,
platformdirs' platform module, every module of ``sidecar`` and ``taskmill_core``, truststore
(its macOS, Windows and OpenSSL modules) and certifi with its ``cacert.pem``. The binary must
not rely on the build machine's OpenSSL CA paths: ``http.*`` verify against the user's OS
trust store through truststore, falling back to certifi's bundle where there is none.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BIN_DIR = ROOT / "tauri-example" / "src-tauri" / "binaries"
WORK = ROOT / "build" / "pyinstaller"
NAME = "taskmill-sidecar"
DEFAULT_MODE = "onefile"

# Imported by name at run time (importlib, anyio's backend lookup, platformdirs' dispatch).
HIDDEN_IMPORTS = (
    "sidecar.builtin",
    "anyio._backends._asyncio",
    {"win32": "platformdirs.windows", "darwin": "platformdirs.macos"}.get(
        sys.platform, "platformdirs.unix"
    ),
    "psutil",
    "aiosqlite",
    "msgspec",
    "msgspec.json",
    "structlog",
    # TLS (sidecar/builtin/_http.py): truststore imports its platform module by sys.platform,
    # and certifi is imported only where no system store exists.
    "truststore",
    "certifi",
)
COLLECT_SUBMODULES = ("sidecar", "taskmill_core", "structlog", "msgspec", "truststore")
# Package data the binary needs: certifi's cacert.pem (the fallback CA bundle), and tzdata's
# zone files, which zoneinfo reads as package resources where the OS has none (Windows) for
# the time zones of cron schedules.
COLLECT_DATA = ("certifi", "tzdata")
# Large stdlib parts the sidecar never touches: smaller archive, faster onefile unpack.
EXCLUDES = ("tkinter", "unittest", "pydoc", "doctest", "lib2to3", "idlelib", "test")


def target_triple() -> str:
    """The Rust host triple (``rustc -vV``) or one derived from the platform."""
    rustc = shutil.which("rustc")
    if rustc:
        try:
            out = subprocess.run([rustc, "-vV"], capture_output=True, text=True, check=True)
            for line in out.stdout.splitlines():
                if line.startswith("host:"):
                    return line.split(":", 1)[1].strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i386": "i686"}.get(
        machine, machine
    )
    if sys.platform == "win32":
        return f"{arch}-pc-windows-msvc"
    if sys.platform == "darwin":
        return f"{arch}-apple-darwin"
    return f"{arch}-unknown-linux-gnu"


def exe_suffix() -> str:
    return ".exe" if sys.platform == "win32" else ""


def output_path(mode: str, triple: str) -> Path:
    """The executable a build of ``mode`` produces (for onedir: inside its folder)."""
    name = f"{NAME}-{triple}"
    if mode == "onefile":
        return BIN_DIR / (name + exe_suffix())
    return BIN_DIR / f"{name}-onedir" / (name + exe_suffix())


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(mode: str, plugins: list[str], triple: str) -> Path:
    """Run PyInstaller for ``mode``; returns the built executable's path."""
    for module in plugins:
        if not _available(module):
            raise SystemExit(f"build_sidecar: the plugin module {module!r} is not importable.")
    name = f"{NAME}-{triple}"
    work = WORK / mode
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    entry = work / "taskmill_sidecar_entry.py"
    entry.write_text(
        "from sidecar.__main__ import main\n\nif __name__ == '__main__':\n    main()\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--clean",
        "--log-level=WARN",
        "--console",
        f"--{mode}",
        "--noupx",
        "--python-option=u",
        f"--name={name}",
        f"--workpath={work / 'work'}",
        f"--specpath={work}",
        f"--distpath={work / 'dist'}",
        f"--paths={ROOT}",
    ]
    for module in HIDDEN_IMPORTS:
        if _available(module):
            cmd.append(f"--hidden-import={module}")
    for package in COLLECT_SUBMODULES:
        cmd.append(f"--collect-submodules={package}")
    for package in COLLECT_DATA:
        cmd.append(f"--collect-data={package}")
    for module in EXCLUDES:
        cmd.append(f"--exclude-module={module}")
    for module in plugins:
        cmd += [f"--hidden-import={module}", f"--collect-submodules={module}"]
    cmd.append(str(entry))
    subprocess.run(cmd, cwd=ROOT, check=True)

    built = work / "dist" / (name + exe_suffix() if mode == "onefile" else name)
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    out = output_path(mode, triple)
    if mode == "onefile":
        out.unlink(missing_ok=True)
        shutil.move(str(built), out)
    else:
        folder = out.parent
        if folder.exists():
            shutil.rmtree(folder)
        shutil.move(str(built), folder)
    return out


# --- measurements ---------------------------------------------------------------------------


def _ready_ms(binary: Path, db: Path) -> tuple[float, subprocess.Popen[bytes]]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(binary), f"--db={db}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = (time.perf_counter() - start) * 1000
    if json.loads(line).get("method") != "sidecar.ready":
        raise RuntimeError(f"expected sidecar.ready first, got {line!r}")
    return elapsed, proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(15)
    if proc.stdout is not None:
        proc.stdout.close()


def measure(binary: Path, mode: str, runs: int = 10, idle_s: float = 30.0) -> dict[str, float]:
    """Size, p50 spawn→ready, RSS of the process tree after ready, idle CPU over ``idle_s``."""
    import psutil

    size = _tree_size(binary if mode == "onefile" else binary.parent)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "tasks.db"
        times = []
        for _ in range(runs):
            elapsed, proc = _ready_ms(binary, db)
            times.append(elapsed)
            _stop(proc)
        _, proc = _ready_ms(binary, db)
        try:
            time.sleep(1.0)  # let the first idle tick settle
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in tree)
            cpu0 = sum(sum(p.cpu_times()[:2]) for p in tree)
            time.sleep(idle_s)
            cpu1 = sum(sum(p.cpu_times()[:2]) for p in tree)
        finally:
            _stop(proc)
    return {
        "size_mb": size / 1e6,
        "ready_p50_ms": statistics.median(times),
        "ready_max_ms": max(times),
        "rss_mb": rss / 1e6,
        "idle_cpu_pct": (cpu1 - cpu0) / idle_s * 100,
        "processes": len(tree),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=("onefile", "onedir"), default=DEFAULT_MODE)
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="bundle this executor module (load it with --plugin at run time)",
    )
    p.add_argument("--target", default=None, help="override the target triple in the name")
    p.add_argument(
        "--measure",
        action="store_true",
        help="build both modes, then measure size, ready time, RSS and idle CPU",
    )
    p.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU window (--measure)")
    a = p.parse_args(argv)
    triple = a.target or target_triple()
    modes = ["onefile", "onedir"] if a.measure else [a.mode]
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        start = time.monotonic()
        out = build(mode, a.plugin, triple)
        took = time.monotonic() - start
        size = _tree_size(out if mode == "onefile" else out.parent)
        print(f"built {mode}: {out.relative_to(ROOT)} ({size / 1e6:.1f} MB) in {took:.0f} s")
        if a.measure:
            results[mode] = {"build_s": took, **measure(out, mode, idle_s=a.idle_seconds)}
    if results:
        print(json.dumps(results, indent=2))
        print("| mode | size | ready p50 | RSS (tree) | idle CPU | build |")
        print("|---|---|---|---|---|---|")
        for mode, r in results.items():
            print(
                f"| {mode} | {r['size_mb']:.1f} MB | {r['ready_p50_ms']:.0f} ms | "
                f"{r['rss_mb']:.1f} MB | {r['idle_cpu_pct']:.2f} % | {r['build_s']:.0f} s |"
            )


if __name__ == "__main__":
    main()
