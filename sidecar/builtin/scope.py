"""Path scopes: the ``--allow-path`` roots that confine the file executors.

A path is checked when the task runs, not when it is submitted, because what a path points to
can change in between. The check is lexical first (absolute, no ``..`` component, no NUL) and
then real: symlinks are resolved and the result must lie inside a root, itself resolved once
when the scope is built. A destination that does not exist yet resolves through its nearest
existing ancestor, so a symlinked parent directory cannot smuggle a write out of the scope.

The check alone only says where a path led when it was made: opening it again by name could go
elsewhere. :meth:`PathScope.locate` hands the root and the components below it to
:mod:`sidecar.builtin.confined`, which opens them from a descriptor of the root without
following symlinks; that is what confines the executors against a concurrent writer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePath

from taskmill_core.errors import PermanentError

__all__ = ["PathScope"]


def _norm(path: Path) -> str:
    return os.path.normcase(str(path))


def _under(key: str, root: str) -> bool:
    return key == root or key.startswith(root if root.endswith(os.sep) else root + os.sep)


class PathScope:
    """A set of directory roots; :meth:`check` admits only paths that resolve inside one."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.roots: tuple[Path, ...] = tuple(Path(os.path.realpath(r)) for r in roots)
        self._keys = tuple(_norm(r) for r in self.roots)

    def check(self, path: str, *, field: str = "path") -> Path:
        """The resolved path, if ``path`` is absolute and resolves inside a root.

        Raises :class:`PermanentError` with kind ``forbidden`` otherwise (also when the scope
        has no roots at all). ``field`` names the payload field in the message.
        """
        if not self.roots:
            raise PermanentError(
                f"{field} {path!r} is outside the allowed paths: no --allow-path root is set",
                kind="forbidden",
            )
        if not path or "\x00" in path:
            raise PermanentError(f"{field} {path!r} is not a valid path", kind="forbidden")
        pure = PurePath(path)
        if not pure.is_absolute():
            raise PermanentError(f"{field} {path!r} must be an absolute path", kind="forbidden")
        if ".." in pure.parts:
            raise PermanentError(f"{field} {path!r} must not contain '..'", kind="forbidden")
        try:
            resolved = Path(os.path.realpath(path))
        except (OSError, ValueError) as exc:
            raise PermanentError(
                f"{field} {path!r} cannot be resolved: {exc}", kind="forbidden"
            ) from None
        if not self.contains(resolved):
            shown = "" if str(resolved) == path else f" (resolves to {str(resolved)!r})"
            raise PermanentError(
                f"{field} {path!r}{shown} is outside the allowed paths", kind="forbidden"
            )
        return resolved

    def locate(self, path: str, *, field: str = "path") -> tuple[Path, tuple[str, ...]]:
        """The root that ``path`` resolves inside and the components of the resolved path below
        it (empty for the root itself). Raises as :meth:`check` does."""
        resolved = self.check(path, field=field)
        key = _norm(resolved)
        best = max(
            (r for r, k in zip(self.roots, self._keys, strict=True) if _under(key, k)),
            key=lambda r: len(r.parts),
        )
        return best, resolved.parts[len(best.parts) :]

    def contains(self, resolved: Path) -> bool:
        """Whether an already resolved path lies inside (or is) one of the roots."""
        key = _norm(resolved)
        return any(_under(key, root) for root in self._keys)

    def is_inside(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` resolves (symlinks followed) inside the scope."""
        try:
            return self.contains(Path(os.path.realpath(path)))
        except (OSError, ValueError):
            return False

    def __repr__(self) -> str:
        return f"PathScope({[str(r) for r in self.roots]})"
