"""The attacker of the confinement tests: swaps names inside an ``--allow-path`` root, fast.

    python -m tests.sidecar.racer flip <name> <target> <seconds>
        <name> alternates between a regular file and a symlink to <target>
        (each state is made under a temporary name, then renamed over <name>)
    python -m tests.sidecar.racer exchange <a> <b> <seconds>
        <a> and <b> trade places, atomically, with renameat2(RENAME_EXCHANGE) (Linux only)

It writes "ready" once SIGTERM will stop it cleanly, runs until SIGTERM or until <seconds> have
passed, then writes the number of swaps it made, so a test can show that the race was live
while the executors ran.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from types import FrameType

RENAME_EXCHANGE = 2
AT_FDCWD = -100


_stopped = False


def _stop(signum: int, frame: FrameType | None) -> None:
    global _stopped
    _stopped = True


def _going(deadline: float) -> bool:
    return not _stopped and time.monotonic() < deadline


def exchanger(a: str, b: str) -> ctypes._NamedFuncPointer:
    """libc's renameat2, or an OSError when this C library has none."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fn = libc.renameat2
    except AttributeError:
        raise OSError("renameat2 is not available") from None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fn


def flip(name: str, target: str, deadline: float) -> int:
    tmp = name + ".racer-tmp"
    swaps = 0
    while _going(deadline):
        for _ in range(64):
            os.symlink(target, tmp)
            os.rename(tmp, name)
            with open(tmp, "wb") as f:
                f.write(b"public")
            os.rename(tmp, name)
            swaps += 2
    return swaps


def exchange(a: str, b: str, deadline: float) -> int:
    fn = exchanger(a, b)
    ea, eb = a.encode(), b.encode()
    swaps = 1
    while _going(deadline):
        for _ in range(256):
            fn(AT_FDCWD, ea, AT_FDCWD, eb, RENAME_EXCHANGE)
            swaps += 1
    return swaps


def main(argv: list[str]) -> int:
    mode, a, b, seconds = argv
    deadline = time.monotonic() + float(seconds)
    signal.signal(signal.SIGTERM, _stop)
    sys.stdout.write("ready\n")  # the test starts its tasks only now
    sys.stdout.flush()
    swaps = (flip if mode == "flip" else exchange)(a, b, deadline)
    sys.stdout.write(f"{swaps}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
