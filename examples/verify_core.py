#!/usr/bin/env python3
"""Verify every thread of a user-space core without gdb, as `verify-bt` would.

    python3 examples/verify_core.py [-v] [--json] CORE [EXE]

Needs the installed package on sys.path (`./install.sh` writes a .pth for
python3; `pip install .` does too). See docs/api.md.
"""
import argparse
import sys

import stackproof.core


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("core")
    p.add_argument("exe", nargs="?", help="the executable, when it is not where the core says")
    p.add_argument("-v", "--verbose", action="store_true", help="the evidence of every verdict")
    p.add_argument("--json", action="store_true", help="the stackproof/verify-bt/1 document")
    p.add_argument("--max-frames", type=int, default=1024)
    a = p.parse_args(argv)
    try:
        core = stackproof.core.open_core(a.core, exe=a.exe)
    except (OSError, ValueError) as e:
        print("verify_core: %s" % e, file=sys.stderr)
        return 2
    print(core.json(a.max_frames) if a.json else core.text(a.verbose, a.max_frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
