#!/usr/bin/env python3
"""Benchmark on the kernel mini cores (tests/fixtures/kernel): gdb's
`thread apply all bt` vs `verify-bt -a` and `verify-bt --crash-bt` on crash's
`bt -f -a` of the same dump.

One gdb process per scenario (`symbol-file -o KASLR vmlinux.sym`, `core-file
minicore.elf`) times every command (bench_gdb.py: register caches flushed
before each run; stackproof's symbol table is built on the first run and kept,
as in a session, so the first run is shown apart) and prints the median, min
and first run in ms, and the ratio of the medians to `thread apply all bt`.

    python3 bench/kernel.py [--repeat 5] [--prefix PREFIX] [--json OUT]

Also run by bench/bench.py (unless --no-kernel).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from conftest import BUILD, QUIET_GDB, kernel_fixture  # noqa: E402

GDB_SCRIPT = Path(__file__).resolve().parent / "bench_gdb.py"
KFIX = REPO / "tests" / "fixtures" / "kernel"
SCENARIOS = ("panic", "irq", "busy")
BASE = "thread apply all bt"
FRAME_WALK = "(python: gdb's frames, all threads)"   # bench_gdb.py: the floor of any check of gdb's frames


unpack = kernel_fixture


def bench_scenario(scenario, prefix, repeat):
    init = Path(prefix) / "lib" / "stackproof" / "stackproof-gdbinit.py"
    offset = int(re.search(r"KERNELOFFSET=([0-9a-fA-F]+)", (KFIX / scenario / "kaslr.txt").read_text()).group(1), 16)
    crash = KFIX / scenario / "expected-crash-8.0.6-bt-f-a.txt"
    cmds = [BASE, FRAME_WALK]
    args = ["gdb", "-batch", "-nx"] + QUIET_GDB
    if init.is_file():
        args += ["-ex", "source %s" % init]
        cmds += ["verify-bt -a", "verify-bt -a --json", "verify-bt --crash-bt %s" % crash]
    else:
        print("  (stackproof not installed at %s: timing gdb only)" % init)
    args += ["-ex", "symbol-file -o %#x %s" % (offset, unpack("vmlinux.sym")),
             "-ex", "core-file %s" % unpack("%s/minicore.elf" % scenario)]
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "bench.json"
        env = dict(os.environ, BENCH_OUT=str(out), BENCH_REPEAT=str(repeat), BENCH_COMMANDS=json.dumps(cmds))
        env.pop("DEBUGINFOD_URLS", None)
        p = subprocess.run(args + ["-x", str(GDB_SCRIPT)], env=env, capture_output=True, text=True,
                           timeout=600, stdin=subprocess.DEVNULL)
        if not out.exists():
            sys.exit("bench: gdb failed on %s (status %d)\n%s\n%s" % (scenario, p.returncode, p.stdout[-3000:],
                                                                     p.stderr[-3000:]))
        return json.loads(out.read_text())


def run(prefix, repeat):
    report = []
    for scenario in SCENARIOS:
        res = bench_scenario(scenario, prefix, repeat)
        res.update(scenario=scenario)
        report.append(res)
        base = {c["command"]: c for c in res["commands"]}.get(BASE)
        print("kernel mini core %s: %d frames in gdb's selected thread" % (scenario, res["frames"]))
        print("  %-36s %10s %10s %10s %8s" % ("command", "median ms", "min ms", "first ms", "ratio"))
        for c in res["commands"]:
            name = re.sub(r"--crash-bt \S+", "--crash-bt bt-f-a.txt", c["command"])
            if c["error"]:
                print("  %-36s %10s %10s %10s %8s  error: %s" % (name, "-", "-", "-", "-", c["error"]))
                continue
            ratio = (c["median_ms"] / base["median_ms"]) if base and base["median_ms"] else None
            print("  %-36s %10.2f %10.2f %10.2f %8s" % (name, c["median_ms"], c["min_ms"], c["first_ms"],
                                                       "%.2fx" % ratio if ratio is not None else "-"))
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--prefix", default=os.environ.get("STACKPROOF_PREFIX", str(BUILD / "prefix")))
    ap.add_argument("--json", metavar="OUT", help="also write all figures as JSON")
    args = ap.parse_args()
    report = run(args.prefix, args.repeat)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
