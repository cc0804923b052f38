"""The debugger survives what once took it down, and answers.

dotcold.c has sized functions named `.cold`, `.cold.1`, `..cold`, `.text.cold`
(as assembly has them); stackproof took `.cold` for a split-off part of
itself and recursed until gdb died of a stack overflow. The oracle is gdb's
own DWARF unwinding of the same core (oracle_gdb.py, no stackproof)."""
import json

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
    marker = '{"schema":"stackproof/regs-from-stack/1"'
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
