"""Key presses for GIMP under Xvfb, from a script running inside GIMP (libX11 through ctypes).

GIMP's PDB has no undo procedure and a plug-in's dialog waits for a person, so the tests press the
keys a person would: Ctrl+Z in the image window, Return in the plug-in's dialog. Synthetic events
(XSendEvent) reach GTK when GIMP runs with ``GDK_CORE_DEVICE_EVENTS=1``. The Debian root has
libX11 but not libXtst, hence XSendEvent rather than XTEST.
"""

import ctypes
import time

XK_RETURN, XK_Z = 0xFF0D, 0x7A
CONTROL_MASK = 4

_x11 = ctypes.cdll.LoadLibrary("libX11.so.6")
_x11.XOpenDisplay.restype = ctypes.c_void_p
_x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
_x11.XDefaultRootWindow.restype = ctypes.c_ulong
_x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
_x11.XSetInputFocus.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_ulong]
_x11.XFlush.argtypes = [ctypes.c_void_p]
_x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
_x11.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_char_p)]
_x11.XQueryTree.argtypes = [
    ctypes.c_void_p,
    ctypes.c_ulong,
    ctypes.POINTER(ctypes.c_ulong),
    ctypes.POINTER(ctypes.c_ulong),
    ctypes.POINTER(ctypes.POINTER(ctypes.c_ulong)),
    ctypes.POINTER(ctypes.c_uint),
]


# Xlib's default error handler exits the process; a window that closed between finding it and
# pressing a key in it (BadWindow) must not take the GIMP batch interpreter down with it.
_ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(lambda dpy, event: 0)
_x11.XSetErrorHandler.argtypes = [ctypes.c_void_p]
_x11.XSetErrorHandler(ctypes.cast(_ERROR_HANDLER, ctypes.c_void_p))


class _XKeyEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("serial", ctypes.c_ulong),
        ("send_event", ctypes.c_int),
        ("display", ctypes.c_void_p),
        ("window", ctypes.c_ulong),
        ("root", ctypes.c_ulong),
        ("subwindow", ctypes.c_ulong),
        ("time", ctypes.c_ulong),
        ("x", ctypes.c_int),
        ("y", ctypes.c_int),
        ("x_root", ctypes.c_int),
        ("y_root", ctypes.c_int),
        ("state", ctypes.c_uint),
        ("keycode", ctypes.c_uint),
        ("same_screen", ctypes.c_int),
    ]


class _XEvent(ctypes.Union):
    _fields_ = [("xkey", _XKeyEvent), ("pad", ctypes.c_long * 24)]


_x11.XSendEvent.argtypes = [
    ctypes.c_void_p,
    ctypes.c_ulong,
    ctypes.c_int,
    ctypes.c_long,
    ctypes.POINTER(_XEvent),
]


def _open():
    dpy = _x11.XOpenDisplay(None)
    if not dpy:
        raise RuntimeError("no X display (run GIMP under xvfb-run)")
    return dpy


def press(xid, keysym, state=0):
    """Press and release one key in window ``xid``."""
    dpy = _open()
    try:
        keycode = _x11.XKeysymToKeycode(dpy, keysym)
        _x11.XSetInputFocus(dpy, xid, 1, 0)
        for event_type, event_mask in ((2, 1), (3, 2)):  # KeyPress, KeyRelease
            ev = _XEvent()
            key = ev.xkey
            key.type, key.display, key.window = event_type, dpy, xid
            key.root = _x11.XDefaultRootWindow(dpy)
            key.state, key.keycode, key.same_screen = state, keycode, 1
            _x11.XSendEvent(dpy, xid, 1, event_mask, ctypes.byref(ev))
        _x11.XFlush(dpy)
    finally:
        _x11.XCloseDisplay(dpy)


def _named_windows(dpy, window, out):
    root, parent = ctypes.c_ulong(), ctypes.c_ulong()
    children, count = ctypes.POINTER(ctypes.c_ulong)(), ctypes.c_uint()
    if _x11.XQueryTree(
        dpy, window, ctypes.byref(root), ctypes.byref(parent), ctypes.byref(children), ctypes.byref(count)
    ):
        for i in range(count.value):
            child, name = children[i], ctypes.c_char_p()
            if _x11.XFetchName(dpy, child, ctypes.byref(name)) and name.value:
                out.append((child, name.value.decode("utf-8", "replace")))
            _named_windows(dpy, child, out)
    return out


def find_window(title, timeout=30.0):
    """The X id of the first window whose title contains ``title`` (waits for it to appear)."""
    deadline = time.time() + timeout
    dpy = _open()
    try:
        while True:
            for xid, name in _named_windows(dpy, _x11.XDefaultRootWindow(dpy), []):
                if title in name:
                    return xid
            if time.time() >= deadline:
                return None
            time.sleep(0.1)
    finally:
        _x11.XCloseDisplay(dpy)
    return None


def display_xid(display):
    """The X id of a Gimp.Display's image window."""
    return int.from_bytes(bytes(display.get_window_handle().get_data())[:8], "little")
