"""The house rules of the layout (DESIGN.md), checked on the source itself.

- Dependencies point one way: ``sidecar → taskmill_core``, never back.
- No import cycle inside ``taskmill_core`` (imports under ``TYPE_CHECKING`` count too: a cycle
  of types is still a cycle of ideas).
- Inside ``taskmill_core``, only the store speaks SQL and only the IO monitor calls psutil.
- Executors reach the scheduler only through ``TaskContext``, which knows the ``RunHost``
  protocol, not the scheduler.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "taskmill_core"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _core_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {
            m for m in _imports(path) if m in modules and m != name and not name.startswith(m + ".")
        }
    return graph


def test_taskmill_core_never_imports_the_sidecar() -> None:
    offenders = {
        _module_name(p)
        for p in CORE.rglob("*.py")
        if any(m == "sidecar" or m.startswith("sidecar.") for m in _imports(p))
    }
    assert not offenders


def test_no_import_cycle_inside_taskmill_core() -> None:
    graph = _core_graph()
    # A package's __init__ re-exporting its own modules is not a cycle of ideas.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " -> ".join(
            [*visiting[visiting.index(node) :], node]
        )
        visiting.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        visiting.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)


def test_only_the_store_speaks_sql_and_only_the_monitor_calls_psutil() -> None:
    for path in CORE.rglob("*.py"):
        name = _module_name(path)
        imported = _imports(path)
        if not name.startswith("taskmill_core.store"):
            assert not {"sqlite3", "aiosqlite"} & imported, f"{name} speaks SQL"
        if name != "taskmill_core.iomonitor":
            assert "psutil" not in imported, f"{name} calls psutil"


def test_task_context_knows_the_run_host_not_the_scheduler() -> None:
    imported = _imports(CORE / "context.py")
    assert not any(m.startswith("taskmill_core.scheduler") for m in imported)
