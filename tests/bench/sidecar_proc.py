"""The real sidecar process as a benchmark sees it: spawn, read stdout in a thread, shut down.

Unlike ``tests/sidecar/client.py`` (a test client), this one is built for timing: every stdout
line is stamped with ``time.perf_counter()`` in the reader thread the moment ``readline``
returns it, before any hand-off to another thread, and a measurement may install its own
``handler`` to count messages without queueing them. stderr (the sidecar's JSON logs) is
drained by a second thread so a chatty sidecar can never block on a full pipe; its tail is kept
for error reports.
"""

from __future__ import annotations

import collections
import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.harness import ROOT

Handler = Callable[[dict[str, Any], float], None]

SHUTDOWN_ID = "bench-shutdown"


class SidecarError(RuntimeError):
    """The sidecar did not behave (exited early, bad output, no ready, timeout)."""


def sidecar_argv(db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sidecar", "--db", str(db), *extra]


class SidecarProcess:
    """One ``python -m sidecar`` child. ``spawned_at`` is taken just before ``Popen``."""

    def __init__(self, db: Path, *extra: str) -> None:
        self.argv = sidecar_argv(db, *extra)
        self.messages: queue.Queue[tuple[float, dict[str, Any]] | None] = queue.Queue()
        self.handler: Handler | None = None
        self.bad_lines = 0
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        self.pid = self.proc.pid
        self._threads = [
            threading.Thread(target=self._read_stdout, name="sidecar-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="sidecar-stderr", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # --- reading ------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        readline = self.proc.stdout.readline
        while True:
            line = readline()
            now = time.perf_counter()
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                self.bad_lines += 1
                continue
            handler = self.handler
            if handler is not None:
                handler(msg, now)
            else:
                self.messages.put((now, msg))
        self.messages.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.decode(errors="replace").rstrip())

    def next_message(self, timeout: float) -> tuple[float, dict[str, Any]]:
        """The next queued ``(arrival, message)``; raises at EOF or timeout."""
        try:
            item = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise SidecarError(f"no message within {timeout:.0f} s") from None
        if item is None:
            self.messages.put(None)
            raise SidecarError(f"the sidecar closed stdout (exit {self.proc.poll()})")
        return item

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float
    ) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SidecarError("timed out waiting for a message")
            at, msg = self.next_message(left)
            if match(msg):
                return at, msg

    def wait_ready(self, timeout: float = 60.0) -> tuple[float, dict[str, Any]]:
        """Arrival time and params of ``sidecar.ready``."""
        at, msg = self.wait_for(lambda m: m.get("method") == "sidecar.ready", timeout)
        return at, msg.get("params", {})

    # --- writing ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    # --- ending -------------------------------------------------------------------------

    def shutdown(self, timeout: float = 60.0) -> dict[str, Any]:
        """Graceful end: a ``shutdown`` request, then stdin EOF, then wait for the exit.
        Returns ``{exit_code, shutdown_s, graceful}``; kills only if it does not exit."""
        t0 = time.perf_counter()
        self.handler = None
        graceful = True
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.write(
                    json.dumps({"jsonrpc": "2.0", "id": SHUTDOWN_ID, "method": "shutdown"}).encode()
                    + b"\n"
                )
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                graceful = False
                self.proc.kill()
                self.proc.wait(10)
        elapsed = time.perf_counter() - t0
        self._close_pipes()
        return {"exit_code": self.proc.returncode, "shutdown_s": elapsed, "graceful": graceful}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for t in self._threads:
            t.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()

    def error_context(self) -> list[str]:
        return list(self.stderr_tail)[-8:]
