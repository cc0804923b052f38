# gdb-side half of bench/bench.py: runs inside ONE gdb process on one core,
# times each command (after flushing gdb's frame/register caches, so every
# run unwinds from scratch), in rounds, and writes the figures as JSON to $BENCH_OUT.
import json
import os
import statistics
import time

import gdb

REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
COMMANDS = json.loads(os.environ["BENCH_COMMANDS"])


def flush():
    try:
        gdb.execute("maintenance flush register-cache", to_string=True)
    except gdb.error:
        gdb.execute("flushregs", to_string=True)


def count_frames():
    n = 0
    f = gdb.newest_frame()
    while f is not None:
        n += 1
        f = f.older()
    return n


# Not a command: reading gdb's own frames (pc, sp) from Python for every thread,
# the least any check of gdb's backtrace through the Python API must pay.
FRAME_WALK = "(python: gdb's frames, all threads)"


def frame_walk():
    selected = gdb.selected_thread()
    for th in gdb.selected_inferior().threads():
        th.switch()
        f = gdb.newest_frame()
        while f is not None:
            f.pc()
            f.read_register("rsp")
            f = f.older()
    selected.switch()
    return ""


def forget_memory():
    """Drop stackproof's session memory cache: each command's first run reads cold."""
    try:
        from stackproof.gdbext import target
    except ImportError:
        return
    target.forget_memory()


def run(cmd):
    if cmd == FRAME_WALK:
        return frame_walk()
    return gdb.execute(cmd, to_string=True)


results = {"frames": count_frames(), "commands": []}
# Rounds: every command once per round, so all of them run under the same
# process state (gdb gets slower as a session goes on); the first round is the
# cold one (stackproof builds its symbol table and reads memory then).
times = {cmd: [] for cmd in COMMANDS}
outputs = {cmd: ("", None) for cmd in COMMANDS}
errors = {}
for rnd in range(REPEAT):
    for cmd in COMMANDS:
        if cmd in errors:
            continue
        if rnd == 0:
            forget_memory()
        flush()
        t0 = time.perf_counter()
        try:
            out = run(cmd)
        except gdb.error as e:
            errors[cmd] = str(e)
            continue
        times[cmd].append(time.perf_counter() - t0)
        if rnd == 0:
            outputs[cmd] = (out, None)
for cmd in COMMANDS:
    ts = times[cmd]
    out = outputs[cmd][0]
    rec = {"command": cmd, "error": errors.get(cmd), "runs": len(ts),
           "first_ms": ts[0] * 1e3 if ts else None,
           "min_ms": min(ts) * 1e3 if ts else None,
           "median_ms": statistics.median(ts) * 1e3 if ts else None,
           "output_bytes": len(out), "output_lines": out.count("\n")}
    if cmd.startswith("verify-bt") and "--json" in cmd and ts:
        try:
            doc = json.loads(out[out.index("{"):])
            rec["json_frames"] = sum(len(t["frames"]) for t in doc["threads"])
            rec["stats"] = doc.get("stats")     # memory reads of the first (cold) run
        except (ValueError, KeyError) as e:
            rec["json_error"] = str(e)
    results["commands"].append(rec)

with open(os.environ["BENCH_OUT"], "w") as f:
    json.dump(results, f)
