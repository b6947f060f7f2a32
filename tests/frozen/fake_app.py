"""Stands in for the Tauri app: spawns the sidecar as Tauri would, then waits to be killed.

    python fake_app.py [--parent-pid] [--stderr-log LOG] DB -- SIDECAR_COMMAND...

Tauri's shell plugin spawns the sidecar with three pipes and reads stdout and stderr; this does
the same (or sends stderr to LOG), passes ``--parent-pid`` (its own pid) when asked, submits a
long ``sleep`` task, waits until it runs, prints ``{"sidecar": <pid it spawned>, "task": <id>}``
on stdout and keeps reading until it is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from typing import IO


def drain(stream: IO[bytes]) -> None:
    for _ in stream:
        pass


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--parent-pid", action="store_true")
    p.add_argument("--stderr-log")
    p.add_argument("db")
    p.add_argument("command", nargs="+")
    a = p.parse_args()
    argv = [*a.command, f"--db={a.db}"]
    if a.parent_pid:
        argv.append(f"--parent-pid={os.getpid()}")
    err = open(a.stderr_log, "wb") if a.stderr_log else subprocess.PIPE  # noqa: SIM115
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdin is not None and proc.stdout is not None
    if proc.stderr is not None:
        threading.Thread(target=drain, args=(proc.stderr,), daemon=True).start()
    request = {"jsonrpc": "2.0", "id": 1, "method": "task.submit"}
    request["params"] = {"type": "sleep", "payload": {"ms": 60_000}}
    proc.stdin.write(json.dumps(request).encode() + b"\n")
    proc.stdin.flush()
    for line in proc.stdout:
        msg = json.loads(line)
        if msg.get("method") == "task.started":
            print(json.dumps({"sidecar": proc.pid, "task": msg["params"]["id"]}), flush=True)
            break
    while True:  # keep reading like an app would, until the test kills us
        if not proc.stdout.readline():
            time.sleep(60)


if __name__ == "__main__":
    main()
