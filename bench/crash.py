#!/usr/bin/env python3
"""Benchmark inside crash (tests/fixtures/kernel/crash): one crash process per dump,
every command timed in that process by the extension's `stackproof-time N CMD`
(wall time, output discarded, median and min of N runs):

  * `verify-bt` of one task against crash's own `bt` of it (crash's current
    context; verify-bt runs that bt itself, then checks and unwinds);
  * `verify-bt --all-tasks` against `foreach bt` (crash 8.0.2 on 6.1.y knows only
    the active tasks, so `foreach bt` covers 2-4 tasks where --all-tasks covers
    every task: the per-task figure is shown too).

    python3 bench/crash.py [--repeat 9] [--prefix PREFIX] [--format kdump|elf] [--json OUT]
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

from conftest import BUILD, kernel_fixture  # noqa: E402

SCENARIOS = ("panic", "irq", "busy")
VMLINUX = "crash/vmlinux-6.1.0-53-cloud-amd64.dwz.min"
LINE = re.compile(r"^stackproof-time: (.*?) : median ([\d.]+) ms, min ([\d.]+) ms, \d+ runs(.*)$", re.M)


def run(scenario, fmt, so, repeat):
    cmds = ["extend %s" % so, "verify-bt --all-tasks --json --output /dev/null"]  # warm: symbols, caches
    timed = ["bt", "verify-bt", "foreach bt", "verify-bt --all-tasks"]
    cmds += ["stackproof-time %d %s" % (repeat, c) for c in timed] + ["ps", "quit"]
    with tempfile.NamedTemporaryFile("w", suffix=".cmds", delete=False) as f:
        f.write("\n".join(cmds) + "\n")
    dump = kernel_fixture("crash/%s/vmcore-mini.%s" % (scenario, fmt))
    p = subprocess.run(["crash", "-s", str(kernel_fixture(VMLINUX)), str(dump), "-i", f.name],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    os.unlink(f.name)
    got = {m.group(1): (float(m.group(2)), float(m.group(3)), m.group(4).strip()) for m in LINE.finditer(p.stdout)}
    missing = [c for c in timed if c not in got]
    if missing:
        sys.exit("crash did not time %s\n%s\n%s" % (missing, p.stdout[-3000:], p.stderr[-2000:]))
    ps_tasks = len(re.findall(r"^\s*>?\s*\d+\s+\d+\s+\d+\s+[0-9a-f]{16}\s", p.stdout, re.M))
    return got, ps_tasks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--prefix", default=os.environ.get("STACKPROOF_PREFIX", str(BUILD / "prefix")))
    ap.add_argument("--format", default="kdump", choices=("kdump", "elf"))
    ap.add_argument("--json")
    a = ap.parse_args()
    so = Path(a.prefix) / "lib" / "stackproof" / "crash" / "stackproof.so"
    if not so.is_file():
        sys.exit("no %s: run ./install.sh --prefix %s first" % (so, a.prefix))
    drgn_tasks = {s: len(json.loads((REPO / "tests/fixtures/kernel/crash" / s / "expected/drgn.json")
                                    .read_text())["tasks"]) for s in SCENARIOS}
    out = {}
    print("crash %s vmcores, medians of %d in one crash process (min in brackets), ms" % (a.format, a.repeat))
    print("| dump | crash `bt` | `verify-bt` | ratio | `foreach bt` (crash's tasks) | "
          "`verify-bt --all-tasks` (tasks) | ratio | per task |")
    print("|---|---|---|---|---|---|---|---|")
    for s in SCENARIOS:
        got, ps_tasks = run(s, a.format, so, a.repeat)
        bt, vb, fe, at = (got[c] for c in ("bt", "verify-bt", "foreach bt", "verify-bt --all-tasks"))
        n = drgn_tasks[s]
        per_fe = fe[0] / max(ps_tasks, 1)
        per_at = at[0] / n
        # crash 8.0.2's bt of an active task other than the panic task fails at once (6.1.y).
        note = " (crash's bt fails)" if bt[0] < 1.0 else ""
        print("| %s | %.1f (%.1f)%s | %.1f (%.1f) | %.2fx | %.1f (%.1f), %d tasks | %.1f (%.1f), %d tasks | %.2fx | %.2f vs %.2f ms: %.2fx |"
              % (s, bt[0], bt[1], note, vb[0], vb[1], vb[0] / bt[0], fe[0], fe[1], ps_tasks, at[0], at[1], n,
                 at[0] / fe[0], per_at, per_fe, per_at / per_fe))
        out[s] = {"bt": bt[:2], "verify-bt": vb[:2], "foreach bt": fe[:2], "verify-bt --all-tasks": at[:2],
                  "crash_tasks": ps_tasks, "tasks": n, "bt_failed": bool(bt[2])}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
