"""The sidecar's built-in executors beyond ``noop`` and ``sleep`` (PROTOCOL.md).

``fs.copy``, ``fs.hash``, ``fs.scan``, ``http.download`` and ``http.upload`` are confined to a
:class:`PathScope` (the ``--allow-path`` roots), checked when each task runs and then reached
through descriptors of the root (:mod:`sidecar.builtin.confined`), so a name swapped for a
symlink in the meantime is refused rather than followed; ``process.run``
exists only when programs were allowed with ``--allow-program``. The sidecar adds what
:func:`builtin_executors` returns to its scheduler's registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from sidecar.builtin.download import download
from sidecar.builtin.fs import copy, hash_file, scan
from sidecar.builtin.process import run_process
from sidecar.builtin.scope import PathScope
from sidecar.builtin.upload import upload
from taskmill_core.executors import Registration

__all__ = ["PathScope", "builtin_executors"]


def builtin_executors(scope: PathScope, allowed_programs: Sequence[str]) -> list[Registration]:
    """The registrations of the scoped built-in executors.

    ``process.run`` is included only when ``allowed_programs`` is not empty. ``fs.copy``,
    ``fs.hash``, ``http.download`` and ``http.upload`` are ``paced``: they draw their bytes
    through the IO governor chunk by chunk (``ctx.consume_io``), so register them with
    ``paced=True``.
    """
    regs = [
        Registration("fs.copy", partial(copy, scope=scope), builtin=True, paced=True),
        Registration("fs.hash", partial(hash_file, scope=scope), builtin=True, paced=True),
        Registration("fs.scan", partial(scan, scope=scope), builtin=True),
        Registration("http.download", partial(download, scope=scope), builtin=True, paced=True),
        Registration("http.upload", partial(upload, scope=scope), builtin=True, paced=True),
    ]
    if allowed_programs:
        allowed = tuple(allowed_programs)
        regs.append(
            Registration("process.run", partial(run_process, allowed=allowed), builtin=True)
        )
    return regs
