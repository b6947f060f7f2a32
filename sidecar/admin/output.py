"""Where the admin commands write: lines for people, or one JSON document for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

__all__ = ["Output"]


class Output:
    def __init__(
        self, *, json_mode: bool, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.json_mode = json_mode
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr

    def line(self, text: str = "") -> None:
        """A line of the human report (nothing in ``--json`` mode)."""
        if not self.json_mode:
            self._out.write(text + "\n")

    def document(self, doc: Any) -> None:
        """The result for scripts (nothing in human mode)."""
        if self.json_mode:
            self._out.write(json.dumps(doc, indent=2) + "\n")

    def fail(self, sentence: str) -> None:
        """Why the command did not do its work: one sentence on stderr (also with --json)."""
        self._err.write(sentence.rstrip() + "\n")
        self._err.flush()
