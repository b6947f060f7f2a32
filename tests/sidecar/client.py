"""A test client for the real sidecar process over real pipes.

The command comes from ``TASKMILL_SIDECAR_CMD`` (a shell-style string, e.g. the frozen binary)
or defaults to ``python -m sidecar`` with this interpreter. Every stdout line must be one
JSON-RPC message: the reader thread fails the test otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def sidecar_command() -> list[str]:
    cmd = os.environ.get("TASKMILL_SIDECAR_CMD")
    return shlex.split(cmd) if cmd else [sys.executable, "-m", "sidecar"]


class Sidecar:
    """One sidecar child process, its stdout as a queue of messages, stderr kept."""

    def __init__(
        self,
        *args: str,
        db: Path | None = None,
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        read_stderr: bool = True,
    ):
        """Start ``command`` (default: :func:`sidecar_command`) with ``args``.

        With ``read_stderr=False`` nobody reads the sidecar's stderr pipe: ``proc.stderr`` is
        the test's to close or to leave full.
        """
        base = list(command) if command is not None else sidecar_command()
        argv = base + ([f"--db={db}"] if db is not None else []) + list(args)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        self.messages: queue.Queue[Any] = queue.Queue()
        self.seen: list[Any] = []  # every message taken off the queue, in order
        self.bad_lines: list[bytes] = []
        self.stderr_lines: list[bytes] = []
        self._next_id = 1000
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True)]
        if read_stderr:
            self._threads.append(threading.Thread(target=self._read_stderr, daemon=True))
        for t in self._threads:
            t.start()

    # --- plumbing -------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.messages.put(json.loads(line))
            except ValueError:
                self.bad_lines.append(line)
        self.messages.put(EOFError())

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    @property
    def stderr_text(self) -> str:
        return b"".join(self.stderr_lines).decode(errors="replace")

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: Any) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def next_message(self, timeout: float = 10.0) -> Any:
        msg = self.messages.get(timeout=timeout)
        if isinstance(msg, EOFError):
            self.messages.put(msg)  # stay at EOF
            raise EOFError("the sidecar closed stdout")
        self.seen.append(msg)
        return msg

    def wait_for(self, match: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching message")
            msg = self.next_message(left)
            if match(msg):
                return msg

    def event(self, name: str, timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        def match(m: Any) -> bool:
            if not isinstance(m, dict) or m.get("method") != name or "id" in m:
                return False
            return all(m.get("params", {}).get(k) == v for k, v in params.items())

        msg: dict[str, Any] = self.wait_for(match, timeout)
        return msg["params"]  # type: ignore[no-any-return]

    def response(self, rid: Any, timeout: float = 10.0) -> dict[str, Any]:
        def match(m: Any) -> bool:
            return isinstance(m, dict) and "method" not in m and m.get("id") == rid

        msg: dict[str, Any] = self.wait_for(match, timeout)
        return msg

    def call(self, method: str, params: Any = None, timeout: float = 10.0) -> dict[str, Any]:
        """Send a request and return its whole response (``result`` or ``error``)."""
        self._next_id += 1
        rid = self._next_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.response(rid, timeout)

    def result(self, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        r = self.call(method, params, timeout)
        assert "result" in r, r
        return r["result"]

    def ready(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.event("sidecar.ready", timeout)

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        for t in self._threads:  # the process is gone: both pipes reach EOF
            t.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
