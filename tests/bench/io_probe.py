"""The foreground probe of the ``io`` suite: an app saving its state.

``python -m tests.bench.io_probe DIR SECONDS INTERVAL_MS`` writes 4 KiB to ``DIR/state.bin`` and
fsyncs it every ``INTERVAL_MS`` (deadline-based, no drift) for ``SECONDS``, then prints one JSON
line: ``{"samples": [[epoch_s, latency_ms], ...]}``. A process of its own, so that the bench's
event loop and GIL never delay it: only the disk does.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    directory, seconds, interval_ms = argv[0], float(argv[1]), float(argv[2])
    path = os.path.join(directory, "state.bin")
    payload = os.urandom(4096)
    samples: list[list[float]] = []
    start = time.monotonic()
    next_t = start
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        if next_t > now:
            time.sleep(next_t - now)
        t0 = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        latency_ms = (time.perf_counter() - t0) * 1000
        samples.append([time.time(), latency_ms])
        next_t += interval_ms / 1000
        if next_t < time.monotonic():  # a write longer than the interval: no catch-up burst
            next_t = time.monotonic()
    sys.stdout.write(json.dumps({"samples": samples}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
