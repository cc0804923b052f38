"""Stripped programs, as distributions ship them: the corpus (test_corpus.py) built
with the distro flags and linked with `-s` (no symbol table, no debug info; the
library keeps its dynamic symbols). gdb unwinds them by `.eh_frame`; stackproof's own
chain takes the extents of nameless functions from the same tables and its layouts
from their code. The oracle is gdb's unwinding of the same core: no frame `bogus`,
the own chain equals gdb's frames (pc, sp) on every thread, nothing invented or lost
(before, the chain scanned past every nameless frame: `sleep`'s three frames between
`nanosleep` and `__libc_start_call_main` were called invented)."""
import subprocess

import pytest

from conftest import check_against_oracle, hexint
from test_corpus import DISTRO, MODES, Corpus, _build, verify_all

STRIP = DISTRO + ["-s"]


@pytest.fixture(scope="session")
def stripped(builder):
    exe = _build(builder, "stripped", STRIP)
    out = {}
    for mode, (pre, sig) in MODES.items():
        core = builder.core_for(exe, [mode], pre, sig, "frames-%s-stripped" % mode)
        out[mode] = Corpus(exe, core, builder.oracle_for(exe, core), mode, "stripped")
    return out


@pytest.mark.parametrize("mode", list(MODES))
def test_stripped_own_chain_equals_gdbs(stripped, mode):
    c = stripped[mode]
    syms = subprocess.run(["nm", str(c.exe)], capture_output=True, text=True)
    assert "no symbols" in syms.stderr, syms  # really stripped
    got = verify_all(c)
    assert sorted(got) == sorted(t["thread"] for t in c.oracle["threads"])
    nameless = 0
    for ot in c.oracle["threads"]:
        what = "stripped %s thread %d" % (mode, ot["thread"])
        t = got[ot["thread"]]
        check_against_oracle(t, ot["frames"], what)
        nameless += sum(f["function"] is None for f in ot["frames"])
        want = [(f["pc"], f["sp"]) for f in ot["frames"] if f["type"] not in ("inline", "tailcall")]
        own = [(hexint(f["pc"]), hexint(f["sp"])) for f in t["chain"]][:len(want)]
        assert own == want, (what, t["chain_stop"], [(hex(a), hex(b)) for a, b in own],
                             [(hex(a), hex(b)) for a, b in want])
        assert t["invented"] == [] and t["lost"] == [], (what, t["invented"], t["lost"])
    assert nameless > 0, "gdb names every frame: not a stripped program"


@pytest.mark.parametrize("mode", list(MODES))
def test_stripped_callee_saved_registers_equal_gdbs(stripped, mode):
    """rbx/rbp/r12-r15 of every frame of every thread equal gdb's `.eh_frame`
    unwinding where gdb knows them: none wrong, >= 99% recovered."""
    from test_regs import all_regs_docs, assert_registers_equal_gdbs
    c = stripped[mode]
    assert_registers_equal_gdbs((doc, c.frames(num)) for num, doc in all_regs_docs(c))
