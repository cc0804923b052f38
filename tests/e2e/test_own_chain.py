"""stackproof's own unwinding (frame-layout engine, no CFI) against gdb's DWARF
unwinding of the intact core (the oracle); and on damaged cores, where gdb's
chain goes wrong, the chain stackproof proposes against the intact oracle."""
import pytest

from conftest import OPT_LEVELS, VARIANTS, gdb_stackproof, hexint
from test_damaged import patched, verify_json

CASES = [(v, o) for v in list(VARIANTS) + ["threads"] for o in OPT_LEVELS]


def physical(frames):
    """gdb's frames that have a stack frame of their own (not inline, not tail-call)."""
    return [(f["pc"], f["sp"]) for f in frames if f["type"] not in ("inline", "tailcall")]


def own_chain(t, n):
    """The first n frames of stackproof's chain (gdb stops at main; stackproof goes on
    into libc's start-up code, which the oracle does not list)."""
    return [(hexint(c["pc"]), hexint(c["sp"])) for c in t["chain"]][:n]


@pytest.mark.parametrize("variant,opt", CASES, ids=["%s-%s" % c for c in CASES])
def test_own_chain_equals_gdbs_on_intact_cores(artifacts, variant, opt):
    a = artifacts[(variant, opt)]
    _res, doc = verify_json(a.exe, a.core)
    t = doc["threads"][0]
    want = physical(a.frames())
    assert own_chain(t, len(want)) == want, t["chain_stop"]
    assert t["invented"] == [] and t["lost"] == []
    # Above frame 0 every frame came from the layout engine, none from scanning.
    assert {c["trust"] for c in t["chain"][1:len(want)]} <= {"layout", "registers"}, t["chain"]


def test_overwritten_saved_rbp(artifacts, tmp_core):
    """-O0 frames are rbp-based: a saved rbp overwritten with garbage sends gdb's
    unwinding astray; stackproof's chain still equals the intact oracle."""
    a = artifacts[("recursion", "O0")]
    frames = a.frames()
    k = 3
    saved_rbp_slot = frames[k]["slot"] - 8  # `push %rbp` right below the return address
    core = patched(a, tmp_core, writes=[(saved_rbp_slot, 0x4141414141414140)])
    _res, doc = verify_json(a.exe, core)
    t = doc["threads"][0]
    gdb_chain = [(hexint(f["pc"]), hexint(f["sp"])) for f in t["frames"]]
    assert gdb_chain != physical(frames), "the damage should mislead gdb"
    assert own_chain(t, len(physical(frames))) == physical(frames)


def test_zeroed_slot_frame_is_rebuilt_from_its_callers_call(artifacts, tmp_core):
    """A zeroed return-address slot destroys frame k's pc: gdb stops there. Frame k is
    rec called by rec (recursion): its pc is rebuilt from the one call of rec's code
    that can stand at that place, and the chain equals the intact oracle."""
    a = artifacts[("recursion", "O2")]
    frames = a.frames()
    k = 3
    core = patched(a, tmp_core, writes=[(frames[k]["slot"], 0)])
    _res, doc = verify_json(a.exe, core)
    t = doc["threads"][0]
    want = physical(frames)
    assert own_chain(t, len(want)) == want
    # the rebuilt frame: found by scanning, its return address not read from the slot
    assert t["chain"][k]["trust"] == "scan" and t["chain"][k]["slot"] is None, t["chain"][k]


def test_registers_mode_equals_oracle(artifacts):
    """`--sp/--pc/--bp` alone (no gdb frames) gives the oracle's chain."""
    a = artifacts[("shapes-null", "O2fp")]
    frames = a.frames()
    res = gdb_stackproof(["verify-bt --json --sp $sp --pc $pc --bp $rbp"], a.exe, a.core)
    from conftest import parse_verify_json
    doc = parse_verify_json(res)
    want = physical(frames)
    got = [(hexint(f["pc"]), hexint(f["sp"])) for f in doc["threads"][0]["frames"]]
    assert got[:len(want)] == want
