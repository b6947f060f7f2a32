"""Stands in for the Tauri app: spawns the sidecar exactly as Tauri would, then waits to be killed.

    python fake_app.py BINARY DB LOG

It passes ``--parent-pid`` (its own pid), submits a long ``sleep`` task, waits until it runs,
prints ``{"sidecar": <pid it spawned>, "task": <id>}`` on stdout and sleeps until killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> None:
    binary, db, log = sys.argv[1:4]
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [binary, f"--db={db}", f"--parent-pid={os.getpid()}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdin is not None and proc.stdout is not None
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
