"""Realigned frames (tests/programs/realign.c: DRAP through r10 and r13, rbp-only
realignment to 32 and 64 bytes, main realigned): stackproof's own chain and
registers against gdb's DWARF unwinding of the same core (the oracle), crashing
below the realigned frames and inside them."""
import json
import subprocess

import pytest

from conftest import assert_no_crash, gdb_stackproof, parse_verify_json
from test_own_chain import own_chain, physical
from test_regs import assert_registers_equal_gdbs

DISTRO = ["-fcf-protection=full", "-fstack-clash-protection", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2"]
BUILDS = {
    "O0": ("O0", []),
    "O2": ("O2", []),
    "O3": ("O3", []),
    "O2fp": ("O2fp", []),
    "distro": ("O2", DISTRO),
    "avx2": ("O2", ["-mavx2"]),
    "stackrealign": ("O3", ["-mstackrealign", "-mavx2", "-fno-omit-frame-pointer"]),
}
MODES = ["below", "inside", "nested"]
CASES = [(b, m) for b in BUILDS for m in MODES]
REALIGNED = {"below": {"main", "nested_drap", "drap_vla", "aligned64", "avx_locals"},
             "inside": {"main", "nested_drap", "drap_vla"},
             "nested": {"main", "nested_drap"}}


@pytest.fixture(scope="module")
def realign_cores(builder):
    cache = {}

    def get(build, mode):
        if (build, mode) not in cache:
            opt, extra = BUILDS[build]
            exe = builder.exe("realign", opt, extra)
            core = builder.core_for(exe, [mode], [], "SIGSEGV", "realign-%s-%s" % (build, mode))
            oracle = json.loads(builder.oracle_for(exe, core).read_text())
            cache[(build, mode)] = (exe, core, oracle)
        return cache[(build, mode)]
    return get


def _regs_doc(text):
    start = text.index('{"schema":"stackproof/regs-from-stack/2"')
    return json.JSONDecoder().raw_decode(text[start:])[0]


def test_fixture_has_drap_frames(realign_cores):
    """readelf (not stackproof) shows the fixture uses DRAP CFA expressions."""
    for build in BUILDS:
        exe, _core, _oracle = realign_cores(build, "below")
        raw = subprocess.run(["readelf", "--debug-dump=frames", str(exe)], capture_output=True,
                             text=True).stdout
        assert "DW_CFA_def_cfa_expression (DW_OP_breg6 (rbp)" in raw, build
        assert "DW_CFA_def_cfa: r10 (r10)" in raw and "DW_CFA_def_cfa: r13 (r13)" in raw, build


@pytest.mark.parametrize("build,mode", CASES, ids=["%s-%s" % c for c in CASES])
def test_own_chain_through_realigned_frames(realign_cores, build, mode):
    exe, core, oracle = realign_cores(build, mode)
    frames = oracle["threads"][0]["frames"]
    names = {f["function"] for f in frames}
    assert REALIGNED[mode] <= names, names
    res = gdb_stackproof(["verify-bt --json", "verify-bt"], exe, core)
    assert_no_crash(res)
    doc = parse_verify_json(res)
    t = doc["threads"][0]
    want = physical(frames)
    # pc and sp (= the CFA of the frame below) of every physical frame, all from the layout
    assert own_chain(t, len(want)) == want, (t["chain_stop"], t["chain"][:len(want)])
    assert {c["trust"] for c in t["chain"][1:len(want)]} <= {"layout"}, t["chain"]
    assert t["invented"] == [] and t["lost"] == []
    assert [f for f in t["frames"] if f["verdict"] == "bogus"] == []
    assert "stackproof's own unwinding agrees." in res.stdout
    # callee-saved registers of every frame equal gdb's; >= 99% recovered, none wrong
    regs = gdb_stackproof(["regs-from-stack --all --json"], exe, core)
    assert_no_crash(regs)
    assert_registers_equal_gdbs([(_regs_doc(regs.stdout), frames)])
