#!/usr/bin/env python3
"""Benchmark: gdb's own `bt` vs `verify-bt` on deep stacks.

For each depth (default 200 and 5000) the recursion program (tests/programs/
recursion.c, -O2 -g) is run to its crash and a core written by gdb (cached
under tests/build, shared with the e2e tests).  Then ONE gdb process per core
times, from cold caches each run:

    bt                          (gdb resolving entry-value arguments)
    bt -frame-arguments none
    (python: gdb's frames)      reading gdb's frames (pc, sp) from Python: the
                                floor of any check of gdb's own backtrace
    verify-bt
    verify-bt --json
    regs-from-stack --all --json / --scan --json

and prints the median/min in ms and the ratio to `bt`.
Memory-read counts: printed when `verify-bt --json` carries a "stats" object
(e.g. {"memory_reads": N, "bytes_read": M}).

    python3 bench/bench.py [--depth 200 --depth 5000] [--repeat 5]
                           [--prefix PREFIX] [--opt O2] [--json OUT] [--no-kernel]

Then bench/kernel.py: the kernel mini cores (tests/fixtures/kernel), gdb's
`thread apply all bt` vs `verify-bt -a` and `verify-bt --crash-bt`.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from conftest import BUILD, OPT_LEVELS, Builder, QUIET_GDB  # noqa: E402

GDB_SCRIPT = Path(__file__).resolve().parent / "bench_gdb.py"
BT_CMDS = ["bt", "bt -frame-arguments none", "(python: gdb's frames, all threads)"]  # the last: bench_gdb.FRAME_WALK
SP_CMDS = ["verify-bt --max-frames 100000", "verify-bt --json --max-frames 100000",
           "regs-from-stack --all --json", "regs-from-stack --scan --json"]


def bench_core(exe, core, prefix, repeat):
    init = Path(prefix) / "lib" / "stackproof" / "stackproof-gdbinit.py"
    cmds = list(BT_CMDS)
    args = ["gdb", "-batch", "-nx"] + QUIET_GDB
    if init.is_file():
        args += ["-ex", "source %s" % init]
        cmds += SP_CMDS
    else:
        print("  (stackproof not installed at %s: timing gdb only)" % init)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "bench.json"
        env = dict(os.environ, BENCH_OUT=str(out), BENCH_REPEAT=str(repeat),
                   BENCH_COMMANDS=json.dumps(cmds))
        env.pop("DEBUGINFOD_URLS", None)
        p = subprocess.run(args + ["-x", str(GDB_SCRIPT), str(exe), str(core)],
                           env=env, capture_output=True, text=True, timeout=1800,
                           stdin=subprocess.DEVNULL)
        if not out.exists():
            sys.exit("bench: gdb failed (status %d)\n%s\n%s" % (p.returncode, p.stdout[-3000:],
                                                               p.stderr[-3000:]))
        return json.loads(out.read_text())


LAYOUT_TARGETS = [
    ("/lib/x86_64-linux-gnu/libc.so.6", "eh_frame"),
    ("/usr/bin/python3.11", "eh_frame"),
    ("/usr/bin/gdb", "eh_frame"),
    ("kernel:vmlinux-text-orc", "orc"),
]


def big_stack_scan(builder, prefix):
    """`regs-from-stack --scan` over a user stack of ~7.5 MiB in use (tests/programs/bigstack.c)."""
    exe, core = builder.custom("bigstack", "O2", ["120"])
    init = Path(prefix) / "lib" / "stackproof" / "stackproof-gdbinit.py"
    script = ("python\nimport time\nbest=1e9\nfor _ in range(5):\n"
              "    gdb.execute('maintenance flush register-cache', to_string=True)\n"
              "    t=time.perf_counter(); out=gdb.execute('regs-from-stack --scan --json', to_string=True)\n"
              "    best=min(best, time.perf_counter()-t)\n"
              "import json; d=json.loads(out[out.index('{'):])\n"
              "print('BIGSCAN %.1f %s %s' % (best*1e3, d.get('range'), len(d['found'])))\nend\n")
    with tempfile.TemporaryDirectory() as d:
        sp = Path(d) / "scan.gdb"
        sp.write_text(script)
        p = subprocess.run(["gdb", "-batch", "-nx"] + QUIET_GDB + ["-ex", "source %s" % init, "-x", str(sp),
                            str(exe), str(core)], capture_output=True, text=True, timeout=600)
    line = [l for l in p.stdout.splitlines() if l.startswith("BIGSCAN")]
    if not line:
        print("big stack scan: failed\n%s" % p.stderr[-2000:])
        return {"bigstack": None}
    _, ms, rest = line[0].split(" ", 2)
    print("regs-from-stack --scan of a 7.5 MiB user stack: %s ms (best of 5; range, sets found: %s)" % (ms, rest))
    return {"bigstack_scan_ms": float(ms)}


def layout_figures(prefix):
    """`python3 -m stackproof layout FILE --check ...` on real binaries: agreement with
    their own unwind tables, and the time for the whole file."""
    import time
    env = dict(os.environ, PYTHONPATH=str(Path(prefix) / "lib" / "stackproof" / "python"))
    out = []
    print("frame-layout engine vs the binaries' own unwind tables")
    for path, check in LAYOUT_TARGETS:
        if path.startswith("kernel:"):
            from conftest import kernel_fixture
            path = str(kernel_fixture(path[7:]))
        if not Path(path).exists():
            print("  %s: absent, skipped" % path)
            continue
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "stackproof", "layout", path, "--check", check],
                           env=env, capture_output=True, text=True, timeout=600)
        dt = time.perf_counter() - t
        if p.returncode not in (0, 1):
            print("  %s (--check %s): failed (status %d): %s" % (path, check, p.returncode,
                                                                p.stderr.strip().splitlines()[-1:]))
            continue
        summary = [l for l in p.stdout.splitlines() if l and not l.startswith(" ")][:7]
        print("  %s (--check %s): %.2f s" % (path, check, dt))
        for l in summary:
            print("    " + l)
        out.append({"layout": path, "check": check, "seconds": dt, "summary": summary})
        if check == "eh_frame":
            # The rule as written (register and offset) against readelf, not stackproof's CFI reader.
            import readelf_compare
            res, classes, _ex = readelf_compare.compare(path, env=env)
            print("    vs readelf --debug-dump=frames-interp: " + readelf_compare.summary(res))
            for k, v in classes.most_common(3):
                print("      %8d  %s" % (v, k))
            out.append({"layout": path, "check": "readelf", "counts": dict(res)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, action="append")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--opt", default="O2", choices=sorted(OPT_LEVELS))
    ap.add_argument("--prefix", default=os.environ.get("STACKPROOF_PREFIX",
                                                       str(BUILD / "prefix")))
    ap.add_argument("--json", metavar="OUT", help="also write all figures as JSON")
    ap.add_argument("--no-kernel", action="store_true", help="skip the kernel mini cores (bench/kernel.py)")
    ap.add_argument("--no-layout", action="store_true", help="skip the frame-layout engine vs .eh_frame/ORC")
    args = ap.parse_args()
    depths = args.depth or [200, 5000]
    builder = Builder(BUILD)
    report = []
    for depth in depths:
        exe, core = builder.custom("recursion", args.opt, [str(depth)])
        res = bench_core(exe, core, args.prefix, args.repeat)
        res.update(depth=depth, opt=args.opt)
        report.append(res)
        base = {c["command"]: c for c in res["commands"]}.get("bt")
        print("recursion depth %d (-%s): %d frames in gdb" % (depth, args.opt, res["frames"]))
        print("  %-36s %10s %10s %8s  %s" % ("command", "median ms", "min ms", "vs bt", "notes"))
        for c in res["commands"]:
            if c["error"]:
                print("  %-36s %10s %10s %8s  error: %s" % (c["command"], "-", "-", "-", c["error"]))
                continue
            ratio = (c["median_ms"] / base["median_ms"]) if base and base["median_ms"] else None
            notes = []
            if "json_frames" in c:
                notes.append("%d frames" % c["json_frames"])
            if c.get("stats"):
                notes.append("stats %s" % json.dumps(c["stats"], sort_keys=True))
            print("  %-36s %10.1f %10.1f %8s  %s" % (
                c["command"], c["median_ms"], c["min_ms"],
                "%.2fx" % ratio if ratio is not None else "-", "; ".join(notes)))
    report.append(big_stack_scan(builder, args.prefix))
    if not args.no_layout:
        report.extend(layout_figures(args.prefix))
    if not args.no_kernel:
        import kernel  # bench/kernel.py: the kernel mini cores, gdb's `thread apply all bt` as the base
        report.extend(kernel.run(args.prefix, args.repeat))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
