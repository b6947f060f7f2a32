"""Closes the top-level X11 windows of a process the way a window manager does when the user
clicks the close button: a WM_DELETE_WINDOW client message (GTK turns it into "delete-event",
Tauri into CloseRequested). Used by app.e2e.ts under Xvfb, where no window manager runs.

    python3 close-window.py <pid>      exit 0 when at least one window was asked to close
"""

import ctypes
import ctypes.util
import sys
from ctypes import (
    POINTER,
    Structure,
    Union,
    byref,
    c_int,
    c_long,
    c_ubyte,
    c_uint,
    c_ulong,
    c_void_p,
)


class XClientMessageEvent(Structure):
    _fields_ = [
        ("type", c_int),
        ("serial", c_ulong),
        ("send_event", c_int),
        ("display", c_void_p),
        ("window", c_ulong),
        ("message_type", c_ulong),
        ("format", c_int),
        ("data", c_long * 5),
    ]


class XEvent(Union):
    _fields_ = [("xclient", XClientMessageEvent), ("pad", c_long * 24)]


CLIENT_MESSAGE = 33


def main(pid: int) -> int:
    x = ctypes.cdll.LoadLibrary(ctypes.util.find_library("X11") or "libX11.so.6")
    x.XOpenDisplay.restype = c_void_p
    x.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x.XDefaultRootWindow.restype = c_ulong
    x.XDefaultRootWindow.argtypes = [c_void_p]
    x.XInternAtom.restype = c_ulong
    x.XInternAtom.argtypes = [c_void_p, ctypes.c_char_p, c_int]
    x.XQueryTree.argtypes = [
        c_void_p,
        c_ulong,
        POINTER(c_ulong),
        POINTER(c_ulong),
        POINTER(POINTER(c_ulong)),
        POINTER(c_uint),
    ]
    x.XGetWindowProperty.argtypes = [
        c_void_p,
        c_ulong,
        c_ulong,
        c_long,
        c_long,
        c_int,
        c_ulong,
        POINTER(c_ulong),
        POINTER(c_int),
        POINTER(c_ulong),
        POINTER(c_ulong),
        POINTER(POINTER(c_ubyte)),
    ]
    x.XGetWMProtocols.argtypes = [c_void_p, c_ulong, POINTER(POINTER(c_ulong)), POINTER(c_int)]
    x.XSendEvent.argtypes = [c_void_p, c_ulong, c_int, c_long, POINTER(XEvent)]
    x.XFlush.argtypes = [c_void_p]
    x.XFree.argtypes = [c_void_p]

    display = x.XOpenDisplay(None)
    if not display:
        print("close-window: cannot open the X display", file=sys.stderr)
        return 2
    root = x.XDefaultRootWindow(display)
    net_wm_pid = x.XInternAtom(display, b"_NET_WM_PID", 0)
    wm_protocols = x.XInternAtom(display, b"WM_PROTOCOLS", 0)
    wm_delete = x.XInternAtom(display, b"WM_DELETE_WINDOW", 0)

    def window_pid(w: int) -> int | None:
        kind, fmt, n, after = c_ulong(), c_int(), c_ulong(), c_ulong()
        data = POINTER(c_ubyte)()
        ok = x.XGetWindowProperty(
            display,
            w,
            net_wm_pid,
            0,
            1,
            0,
            0,
            byref(kind),
            byref(fmt),
            byref(n),
            byref(after),
            byref(data),
        )
        if ok != 0 or not data or n.value < 1:
            return None
        value = ctypes.cast(data, POINTER(c_ulong))[0]
        x.XFree(data)
        return int(value)

    def accepts_delete(w: int) -> bool:
        protocols = POINTER(c_ulong)()
        count = c_int()
        if not x.XGetWMProtocols(display, w, byref(protocols), byref(count)):
            return False
        found = any(protocols[i] == wm_delete for i in range(count.value))
        x.XFree(protocols)
        return found

    r, p = c_ulong(), c_ulong()
    children = POINTER(c_ulong)()
    n = c_uint()
    x.XQueryTree(display, root, byref(r), byref(p), byref(children), byref(n))
    windows = [children[i] for i in range(n.value)]
    if children:
        x.XFree(children)
    closed = 0
    for w in windows:
        if window_pid(w) != pid or not accepts_delete(w):
            continue
        ev = XEvent()
        ev.xclient.type = CLIENT_MESSAGE
        ev.xclient.window = w
        ev.xclient.message_type = wm_protocols
        ev.xclient.format = 32
        ev.xclient.data[0] = wm_delete
        ev.xclient.data[1] = 0  # CurrentTime
        x.XSendEvent(display, w, 0, 0, byref(ev))
        closed += 1
    x.XFlush(display)
    print(f"close-window: asked {closed} window(s) of pid {pid} to close", file=sys.stderr)
    return 0 if closed else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
