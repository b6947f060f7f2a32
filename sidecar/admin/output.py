"""Where the admin commands write: lines for people, or one JSON document for scripts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from sidecar.dbpath import MISSING_SENTENCE, resolve_db

__all__ = ["Output", "database"]


def database(args: argparse.Namespace, out: Output) -> Path | None:
    """The database ``--db``/``--app-id`` name; None (after one sentence) if neither."""
    db = resolve_db(args)
    if db is None:
        out.fail(f"{args.prog}: bad command line: {MISSING_SENTENCE}.")
    return db


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
