# gdb-side half of bench/bench.py: runs inside ONE gdb process on one core,
# times each command (after flushing gdb's frame/register caches, so every
# run unwinds from scratch) and writes the figures as JSON to $BENCH_OUT.
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


def run(cmd):
    if cmd == FRAME_WALK:
        return frame_walk()
    return gdb.execute(cmd, to_string=True)


results = {"frames": count_frames(), "commands": []}
for cmd in COMMANDS:
    times = []
    out = ""
    error = None
    for _ in range(REPEAT):
        flush()
        t0 = time.perf_counter()
        try:
            out = run(cmd)
        except gdb.error as e:
            error = str(e)
            break
        times.append(time.perf_counter() - t0)
    rec = {"command": cmd, "error": error, "runs": len(times),
           "first_ms": times[0] * 1e3 if times else None,
           "min_ms": min(times) * 1e3 if times else None,
           "median_ms": statistics.median(times) * 1e3 if times else None,
           "output_bytes": len(out), "output_lines": out.count("\n")}
    if cmd.startswith("verify-bt") and "--json" in cmd and not error:
        try:
            doc = json.loads(out[out.index("{"):])
            rec["json_frames"] = sum(len(t["frames"]) for t in doc["threads"])
            rec["stats"] = doc.get("stats")     # memory-read counts, when the lead adds them
        except (ValueError, KeyError) as e:
            rec["json_error"] = str(e)
    results["commands"].append(rec)

with open(os.environ["BENCH_OUT"], "w") as f:
    json.dump(results, f)
