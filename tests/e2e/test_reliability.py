"""The debugger survives what once took it down, and answers.

dotcold.c has sized functions named `.cold`, `.cold.1`, `..cold`, `.text.cold`
(as assembly has them); stackproof took `.cold` for a split-off part of
itself and recursed until gdb died of a stack overflow. The oracle is gdb's
own DWARF unwinding of the same core (oracle_gdb.py, no stackproof)."""
import json
import re

import pytest

from conftest import (assert_no_crash, check_against_oracle, check_schema, gdb_stackproof,
                      hexint, parse_verify_json)

ALIVE = "stackproof-test-alive"


@pytest.fixture(scope="module", params=["O0", "O2"])
def dotcold(builder, request):
    exe, core = builder.custom("dotcold", request.param, [])
    oracle = json.loads(builder.oracle_for(exe, core).read_text())
    return exe, core, oracle["threads"][0]["frames"]


def regs_doc(res):
    marker = '{"schema":"stackproof/regs-from-stack/2"'
    return json.JSONDecoder().raw_decode(res.stdout[res.stdout.index(marker):])[0]


def test_dot_cold_names_keep_gdb_alive(dotcold):
    exe, core, oracle = dotcold
    # the crash is inside `.cold`, called by the three others, called by run
    assert len(oracle) >= 6 and oracle[4]["function"] == "run", oracle
    res = gdb_stackproof(["verify-bt --json", "verify-bt", "regs-from-stack --all",
                          "echo %s\\n" % ALIVE], exe, core)
    assert_no_crash(res)
    assert ALIVE in res.stdout and res.status == 0, res.describe()
    doc = parse_verify_json(res)
    check_schema(doc)
    th = doc["threads"][0]
    check_against_oracle(th, oracle, "dotcold")
    names = [f["function"] for f in th["frames"][:4]]
    assert names == [".cold", ".cold.1", ".text.cold", "..cold"], names
    # every frame of gdb's gets its registers, and those recovered equal gdb's
    res = gdb_stackproof(["regs-from-stack --all --json", "echo %s\\n" % ALIVE], exe, core)
    assert_no_crash(res)
    assert ALIVE in res.stdout and res.status == 0, res.describe()
    regs = regs_doc(res)
    assert [(hexint(f["pc"]), hexint(f["sp"])) for f in regs["frames"]] == \
        [(f["pc"], f["sp"]) for f in oracle], regs["frames"]
    for fr in regs["frames"]:
        want = oracle[fr["level"]].get("regs") or {}
        for name, value in want.items():
            got = fr["registers"].get(name, {}).get("value")
            assert got is None or value is None or hexint(got) == value, (fr["level"], name, got, value)


def test_own_unwinding_through_dot_cold_names(dotcold):
    """stackproof's own unwinder (from the registers, no gdb frames) gets
    through the four functions as gdb's DWARF unwinding does."""
    exe, core, oracle = dotcold
    res = gdb_stackproof(["verify-bt --json --sp $sp --pc $pc", "echo %s\\n" % ALIVE], exe, core)
    assert_no_crash(res)
    assert ALIVE in res.stdout and res.status == 0, res.describe()
    doc = parse_verify_json(res)
    frames = doc["threads"][0]["frames"]
    want = [(f["pc"], f["sp"]) for f in oracle][:6]
    got = [(hexint(f["pc"]), hexint(f["sp"])) for f in frames][:6]
    assert got == want, (got, want)
    # the callers of the four are found from their own code (their layouts)
    assert [f["trust"] for f in frames[1:5]] == ["layout"] * 4, frames[:6]
    assert all(f["verdict"] == "ok" for f in frames[:6]), frames[:6]


# ---------------------------------------------------------------------------
# numbers that do not fit, files that never end, ranges as wide as the address space
# ---------------------------------------------------------------------------

def error_lines(res):
    return [l for l in res.stderr.splitlines()
            if l.strip() and not l.startswith("warning:") and "libthread_db" not in l]


def one_line_error(res, *words):
    """gdb lived on, printed one error line naming `words`, and no internal error."""
    assert_no_crash(res)
    assert ALIVE in res.stdout and res.status == 0, res.describe()
    lines = error_lines(res)
    assert len(lines) == 1, ("expected a one-line error", res.describe())
    assert "internal error" not in lines[0] and "Overflow" not in lines[0], lines
    for w in words:
        assert w in lines[0], (w, lines)
    return lines[0]


@pytest.mark.parametrize("cmd,words", [
    ("verify-bt --max-frames 99999999999999999999999", ["--max-frames", "out of range"]),
    ("verify-bt --max-frames 0", ["--max-frames", "out of range"]),
    ("verify-bt --max-frames 1e3", ["--max-frames", "invalid integer"]),
    ("verify-bt --task -1", ["--task"]),
    ("verify-bt --task 0xffffffffffffffe0", ["--task"]),
    ("verify-bt --task 0xfffffffffffffff9", ["--task"]),
    ("regs-from-stack --task -1 --scan", ["--task"]),
    ("regs-from-stack --annotate --max-words 99999999999999999999", ["--max-words"]),
    ("verify-bt --crash-bt /dev/zero", ["/dev/zero", "MiB"]),
])
def test_numbers_past_64_bits_and_endless_files_are_usage_errors(artifacts, cmd, words):
    a = artifacts[("recursion", "O0")]
    res = gdb_stackproof([cmd, "echo %s\\n" % ALIVE], a.exe, a.core)
    one_line_error(res, *words)


def test_max_frames_in_range_still_counts(artifacts):
    a = artifacts[("recursion", "O0")]
    res = gdb_stackproof(["verify-bt --json --max-frames 0x3"], a.exe, a.core)
    assert_no_crash(res)
    assert len(parse_verify_json(res)["threads"][0]["frames"]) == 3, res.describe()


def gdb_unreadable(res_text):
    """Addresses gdb itself could not read, from `x/gx` lines printed by the test."""
    return set(int(m, 16) for m in re.findall(r"Cannot access memory at address (0x[0-9a-f]+)", res_text))


def annotate_rows(text):
    """(address, value or None, unreadable bytes) of --annotate's text rows."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"^([0-9a-f]{16}): \.\.\. (0x[0-9a-f]+) bytes unreadable \.\.\.$", line)
        if m:
            rows.append((int(m.group(1), 16), None, int(m.group(2), 16)))
            continue
        m = re.match(r"^([0-9a-f]{16}): (?:([0-9a-f]{16})|<unreadable>)\s", line)
        if m:
            rows.append((int(m.group(1), 16), int(m.group(2), 16) if m.group(2) else None, 8))
    return rows


@pytest.mark.parametrize("sp", [0x10, 0xffffffffffffc010, 0xffffffffffffffe0])
def test_implausible_sp_in_a_live_process(builder, sp):
    """A live process whose $sp is set to nonsense (near 0, or where sp + 16 KiB passes
    2^64): --scan and --annotate answer in a few lines; every run said unreadable is
    unreadable to gdb itself (`x/gx` of its first and last word)."""
    exe = builder.exe("recursion", "O0")
    res = gdb_stackproof(["run", "set $sp = %#x" % sp, "regs-from-stack --scan", "regs-from-stack --annotate",
                          "echo %s\\n" % ALIVE], exe, timeout=120)
    assert_no_crash(res)
    assert ALIVE in res.stdout, res.describe()
    assert "internal error" not in res.output and "Overflow" not in res.output, res.describe()
    assert "register set" in res.stdout, res.describe()
    rows = annotate_rows(res.stdout)
    assert rows and len(rows) < 64, res.describe()
    assert all(v is None for _a, v, _n in rows), rows
    probes = []
    for a, _v, n in rows:
        probes += [a, a + n - 8]
    check = gdb_stackproof(["run"] + ["x/gx %#x" % p for p in probes] + ["echo %s\\n" % ALIVE], exe, timeout=120)
    assert gdb_unreadable(check.output) == set(probes), (probes, check.describe())


def test_annotate_the_whole_address_space_is_cut(artifacts):
    """--from 0 --to 2^64-1: words from the live sp up, cut after --max-words (default
    131072), the end of the stack one collapsed row; gdb's own `x/gx` agrees on where
    memory stops being readable."""
    a = artifacts[("recursion", "O0")]
    sp = a.frames()[0]["sp"]
    res = gdb_stackproof(["regs-from-stack --annotate --from 0 --to 0xffffffffffffffff",
                          "regs-from-stack --annotate --json --from 0 --to 0xffffffffffffffff --max-words 1000",
                          "echo %s\\n" % ALIVE], a.exe, a.core, timeout=120)
    assert_no_crash(res)
    assert ALIVE in res.stdout and res.status == 0, res.describe()
    rows = annotate_rows(res.stdout)
    assert rows[0][0] == sp and all(v is not None for _a, v, _n in rows[:-1]), rows[:3]
    run_at, _v, run_len = rows[-1]
    assert rows[-1][1] is None and run_at + run_len == sp + 8 * 131072, rows[-3:]
    assert len(rows) < 2000, len(rows)
    assert "stopped at %016x after 131072 words (--max-words N shows more)" % (sp + 8 * 131072) in res.stdout
    doc = json.JSONDecoder().raw_decode(res.stdout[res.stdout.index('{"schema"'):])[0]
    assert doc["words_cut_at"] == hex(sp + 8000)
    last = doc["words"][-1]
    assert last["value"] is None and int(last["address"], 16) == run_at, last
    assert last["unreadable_bytes"] == sp + 8000 - run_at, last
    check = gdb_stackproof(["x/gx %#x" % (run_at - 8), "x/gx %#x" % run_at], a.exe, a.core)
    assert gdb_unreadable(check.output) == {run_at}, check.describe()
