"""SIGTERM and SIGINT while the sidecar starts: noted, then handled like any later one.

Importing the sidecar and opening the database take a few hundred milliseconds before the
event loop watches for signals. Left to their default actions, a SIGTERM in that window
killed the process outright and a SIGINT raised ``KeyboardInterrupt`` wherever it landed: no
``sidecar.exiting``, no clean close. :meth:`StartupSignals.install` (the first thing the
process does) replaces both with a handler that only notes the signal; once the sidecar's
own watcher has taken over, it turns a noted signal into the usual graceful shutdown
(:meth:`StartupSignals.received`). Standard library only, so it is cheap to import first.
"""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["StartupSignals"]


class StartupSignals:
    """Notes the shutdown signals that arrive before the event loop watches for them."""

    WATCHED = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._received: list[int] = []

    def __repr__(self) -> str:
        return f"<StartupSignals received={self._received}>"

    def install(self) -> None:
        """From now until someone else handles them, SIGTERM and SIGINT are only noted."""
        for signum in self.WATCHED:
            signal.signal(signum, self._note)

    @property
    def received(self) -> list[int]:
        """The signals noted so far, in order."""
        return list(self._received)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._received.append(signum)
