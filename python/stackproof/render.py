"""Text and JSON documents of the core's results: written by the core (src/report.rs),
the one home of stackproof's output for every front-end. No gdb here."""

from stackproof import _core

def hexa(v):
    return None if v is None else "0x%x" % v

def thread_text(thread, verbose=False, styles=None, columns=0):
    """`styles`: {"function", "address", "bogus", "unknown": escape sequence}, or None;
    `columns`: the width lines fit when they can (0: unlimited)."""
    return _core.thread_text(thread, verbose, styles, columns)

def verify_json(threads):
    """The `stackproof/verify-bt/1` document (docs/json.md), compact, on one line."""
    return _core.verify_json(threads)
