"""`python3 -m stackproof layout FILE [...]`: the frame-layout engine outside gdb."""

import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python3 -m stackproof layout FILE [--function NAME] [--json] [--check eh_frame|orc]")
        return 0 if argv else 2
    if argv[0] != "layout":
        print("stackproof: unknown command %r (try: layout)" % argv[0], file=sys.stderr)
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
