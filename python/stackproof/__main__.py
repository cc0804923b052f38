"""`python3 -m stackproof` (or `stackproof`, the wheel's script): the frame-layout
engine outside gdb, the version, and the line that loads stackproof into gdb."""

import os
import sys

USAGE = """usage: python3 -m stackproof layout FILE [--function NAME] [--json] [--check eh_frame|orc]
       python3 -m stackproof gdbinit      the line for gdb's init file that loads this stackproof
       python3 -m stackproof --version"""


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        import stackproof

        print("stackproof %s" % stackproof.__version__)
        return 0
    if argv[0] == "gdbinit":
        print("source %s" % os.path.join(os.path.dirname(os.path.abspath(__file__)), "gdbinit.py"))
        return 0
    if argv[0] != "layout":
        print("stackproof: unknown command %r (try: layout, gdbinit, --version)" % argv[0], file=sys.stderr)
        return 2
    from stackproof import _core

    try:
        out, status = _core.layout_cli(argv[1:])
    except Exception as e:  # one line, never a traceback
        print("stackproof: %s" % e, file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return status


if __name__ == "__main__":
    sys.exit(main())
