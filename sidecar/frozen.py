"""The frozen (PyInstaller onefile) build's two-process tree, made to behave like one process.

A onefile binary runs as two processes: the bootloader the host spawned, which unpacks the
archive into a ``_MEI*`` temp directory, and the Python child that is the sidecar. The
bootloader forwards SIGTERM/SIGINT/SIGHUP to the child and deletes the temp directory after
the child exits, but nothing forwards a SIGKILL of the bootloader: on POSIX the child would be
orphaned, still holding the database lock, and the temp directory would stay behind. (On
Windows the bootloader keeps the child in a job object that dies with it.)

So the child watches the bootloader from a thread and, when it dies, does what a SIGKILL of the
whole sidecar would have done: it exits at once, leaving running work to crash recovery, after
deleting the temp directory. It also reports the bootloader's pid as its own in
``sidecar.ready``: that is the process the host spawned and may signal.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil

from sidecar.logsink import LogSink

__all__ = ["host_pid", "onefile_bootloader_pid", "watch_bootloader"]

_EXIT_BOOTLOADER_GONE = 137  # as if SIGKILLed along with it; nobody is left to read it


def onefile_bootloader_pid() -> int | None:
    """The pid of the onefile bootloader that started this process, or None when not onefile."""
    meipass = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or meipass is None:
        return None
    if not Path(meipass).name.startswith("_MEI"):  # onedir: no bootloader in between
        return None
    ppid = os.getppid()
    try:
        if os.path.samefile(psutil.Process(ppid).exe(), sys.executable):
            return ppid
    except (psutil.Error, OSError):
        pass
    return None


def host_pid() -> int:
    """The pid the host spawned: the onefile bootloader, else this process."""
    return onefile_bootloader_pid() or os.getpid()


def watch_bootloader(poll_s: float = 0.1) -> None:
    """In a onefile child on POSIX, exit as soon as the bootloader is gone (a daemon thread)."""
    pid = onefile_bootloader_pid()
    if pid is None or sys.platform == "win32":
        return
    threading.Thread(
        target=_watch, args=(pid, poll_s), name="taskmill-bootloader-watch", daemon=True
    ).start()


def _watch(pid: int, poll_s: float) -> None:
    # Reparenting happens when the bootloader dies, before anyone reaps it: getppid() is exact.
    while os.getppid() == pid:
        time.sleep(poll_s)
    meipass = getattr(sys, "_MEIPASS", None)
    if meipass:
        shutil.rmtree(meipass, ignore_errors=True)
    try:
        sys.stderr.write("taskmill-sidecar: the onefile bootloader was killed; exiting too.\n")
        sys.stderr.flush()
        if isinstance(sys.stderr, LogSink):
            sys.stderr.drain(0.5)
    except (OSError, ValueError):
        pass
    os._exit(_EXIT_BOOTLOADER_GONE)
