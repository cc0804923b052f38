"""verify-bt on intact cores agrees with gdb's own DWARF unwinding (the
oracle), at every -O level, for every program shape."""
import pytest

from conftest import (OPT_LEVELS, VARIANTS, assert_no_crash, check_against_oracle,
                      check_schema, gdb_stackproof, hexint, parse_verify_json)

CASES = [(v, o) for v in VARIANTS for o in OPT_LEVELS]


@pytest.mark.parametrize("variant,opt", CASES, ids=["%s-%s" % c for c in CASES])
def test_intact_json_matches_gdb(artifacts, variant, opt):
    a = artifacts[(variant, opt)]
    res = gdb_stackproof(["verify-bt --json"], a.exe, a.core)
    assert_no_crash(res)
    assert res.status == 0, res.describe()
    doc = parse_verify_json(res)
    check_schema(doc)
    assert len(doc["threads"]) == 1, doc
    t = doc["threads"][0]
    assert t["thread"] == a.oracle["selected_thread"]
    assert t["source"] == "gdb"
    check_against_oracle(t, a.frames(), "%s-%s" % (variant, opt))


@pytest.mark.parametrize("opt", list(OPT_LEVELS))
def test_all_threads(artifacts, opt):
    a = artifacts[("threads", opt)]
    for flag in ("-a", "--all-threads"):
        res = gdb_stackproof(["verify-bt %s --json" % flag], a.exe, a.core)
        assert_no_crash(res)
        assert res.status == 0, res.describe()
        doc = parse_verify_json(res)
        check_schema(doc)
        got = {t["thread"]: t for t in doc["threads"]}
        assert sorted(got) == sorted(t["thread"] for t in a.oracle["threads"]), res.describe()
        for ot in a.oracle["threads"]:
            assert got[ot["thread"]]["source"] == "gdb"
            check_against_oracle(got[ot["thread"]], ot["frames"],
                                 "threads-%s thread %d" % (opt, ot["thread"]))


def test_text_output_names_every_frame(artifacts):
    a = artifacts[("shapes-null", "O0")]
    res = gdb_stackproof(["verify-bt"], a.exe, a.core)
    assert_no_crash(res)
    assert res.status == 0, res.describe()
    for fr in a.frames():
        assert fr["function"] in res.stdout, (fr["function"], res.describe())
    # plain mode does not print the JSON document
    assert '"schema"' not in res.stdout


def test_verbose_and_max_frames(artifacts):
    a = artifacts[("recursion", "O2")]
    res = gdb_stackproof(["verify-bt -v"], a.exe, a.core)
    assert_no_crash(res)
    assert res.status == 0, res.describe()
    res = gdb_stackproof(["verify-bt --json --max-frames 3"], a.exe, a.core)
    assert_no_crash(res)
    doc = parse_verify_json(res)
    frames = doc["threads"][0]["frames"]
    assert 1 <= len(frames) <= 3, frames
    want = [(f["pc"], f["sp"]) for f in a.frames()[:len(frames)]]
    assert [(hexint(f["pc"]), hexint(f["sp"])) for f in frames] == want


@pytest.mark.parametrize("opt", ["O0", "O2fp"])
def test_registers_mode_frame_pointer_walk(artifacts, opt):
    """--sp/--pc/--bp taken from frame 0: stackproof walks the stack itself;
    with frame pointers every frame gdb knows must come out, in order."""
    a = artifacts[("recursion", opt)]
    frames = a.frames()
    res = gdb_stackproof(["verify-bt --json --sp $sp --pc $pc --bp $rbp"], a.exe, a.core)
    assert_no_crash(res)
    assert res.status == 0, res.describe()
    doc = parse_verify_json(res)
    check_schema(doc)
    t = doc["threads"][0]
    assert t["source"] == "registers"
    have = [(hexint(f["pc"]), hexint(f["sp"])) for f in t["frames"]]
    want = [(f["pc"], f["sp"]) for f in frames]
    assert have[:len(want)] == want, (have, want)
    for fr in t["frames"][:len(want)]:
        assert fr["verdict"] in ("ok", "probable"), fr


def test_registers_mode_explicit_numbers(artifacts):
    """--sp/--pc given as plain numbers (not gdb expressions of registers)."""
    a = artifacts[("recursion", "O0")]
    f0 = a.frames()[0]
    res = gdb_stackproof(["verify-bt --json --sp %#x --pc %#x" % (f0["sp"], f0["pc"])],
                         a.exe, a.core)
    assert_no_crash(res)
    doc = parse_verify_json(res)
    t = doc["threads"][0]
    assert t["source"] == "registers"
    assert hexint(t["frames"][0]["pc"]) == f0["pc"]
    assert hexint(t["frames"][0]["sp"]) == f0["sp"]
    assert t["frames"][0]["verdict"] != "bogus", t["frames"][0]
