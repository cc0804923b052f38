"""Harness smoke tests: need only gcc and gdb, not stackproof.

They prove that the programs compile at every -O level, that gdb writes a core
at the crash, that the oracle can be extracted, that corepatch damages cores
the way the damaged-core tests assume, and how gdb -batch turns a failing
command into an exit status (the `--strict` recipe)."""
import pytest

from conftest import (OPT_LEVELS, VARIANTS, run_gdb)
from corepatch import Core

EXPECTED_FUNCTIONS = {
    "recursion": ["boom", "rec", "start", "main"],
    "shapes-null": ["crash_here", "tail_target", "via_member", "via_pointer",
                    "callee_saved_heavy", "with_vla", "many_locals", "main"],
    "shapes-abort": ["crash_here", "tail_target", "via_member", "via_pointer",
                     "callee_saved_heavy", "with_vla", "many_locals", "main"],
    "shapes-signal": ["handler_helper", "crash_here", "tail_target", "main"],
    "threads": ["boom", "main_level2", "main_level1", "main"],
    "signals-altstack": ["alt_inner", "alt_handler", "fault_here", "middle", "outer", "main"],
    "signals-nested": ["usr2_crash", "usr2_handler", "usr1_work", "usr1_handler", "send_usr1",
                       "middle", "outer", "main"],
    "signals-siginfo": ["info_inner", "info_handler", "fault_here", "middle", "outer", "main"],
}

SIGTRAMPS = {"shapes-signal": 1, "signals-altstack": 1, "signals-nested": 2, "signals-siginfo": 1}


def test_smoke_every_core_and_oracle(artifacts):
    assert len(artifacts) == len(VARIANTS) * len(OPT_LEVELS)
    for (variant, opt), a in sorted(artifacts.items()):
        assert a.core.stat().st_size > 4096
        frames = a.frames()
        assert len(frames) >= 3, (variant, opt, frames)
        names = [f["function"] for f in frames]
        for fn in EXPECTED_FUNCTIONS[variant]:
            assert fn in names, (variant, opt, fn, names)
        assert names[-1] == "main", (variant, opt, names)
        for t in a.oracle["threads"]:
            for f in t["frames"]:
                assert f["sp"] is not None
                if f["has_slot"]:
                    # the slot definition of the interface holds for gdb's unwind
                    assert f["slot"] == f["sp"] - 8
                    assert f["slot_value"] == f["pc"], (variant, opt, t["thread"], f)
        types = {f["type"] for f in frames}
        sigtramps = sum(f["type"] == "sigtramp" for f in frames)
        assert sigtramps == SIGTRAMPS.get(variant, 0), (variant, opt, names)
        if variant.startswith("shapes"):
            assert "inline" in types, (variant, opt, types)  # inline_step


def test_smoke_recursion_depth(artifacts):
    for opt in OPT_LEVELS:
        names = [f["function"] for f in artifacts[("recursion", opt)].frames()]
        assert names.count("rec") == 7, (opt, names)   # depth 6 -> rec(6)..rec(0)


def test_smoke_threads_blocked_in_nested_calls(artifacts):
    for opt in OPT_LEVELS:
        a = artifacts[("threads", opt)]
        threads = a.oracle["threads"]
        assert len(threads) == 4, (opt, [t["thread"] for t in threads])
        workers = [t for t in threads if t["thread"] != a.oracle["selected_thread"]]
        for t in workers:
            names = [f["function"] for f in t["frames"]]
            for fn in ("wait_forever", "level3", "level2", "level1", "worker"):
                assert fn in names, (opt, t["thread"], names)


def test_smoke_corepatch_zero_slot(artifacts, tmp_core):
    a = artifacts[("recursion", "O0")]
    frames = a.frames()
    k = 3
    assert frames[k]["has_slot"]
    core = Core.load(a.core)
    assert core.read_u64(frames[k]["slot"]) == frames[k]["pc"]
    core.write_u64(frames[k]["slot"], 0)
    out = tmp_core()
    core.save(out)
    res = run_gdb(["-ex", "x/gx %#x" % frames[k]["slot"], "-ex", "bt"], exe=a.exe, core=out)
    assert "0x0000000000000000" in res.stdout, res.describe()
    assert ("#%d  0x0000000000000000 in ?? ()" % k) in res.stdout, res.describe()


def test_smoke_corepatch_remove_page(artifacts, tmp_core):
    a = artifacts[("recursion", "O0")]
    slot = a.frames()[2]["slot"]
    core = Core.load(a.core)
    page = core.remove_page(slot)
    out = tmp_core()
    core.save(out)
    res = run_gdb(["-ex", "x/gx %#x" % slot, "-ex", "x/gx %#x" % (page - 8),
                   "-ex", "x/gx %#x" % (page + 0x1000)], exe=a.exe, core=out)
    assert ("Cannot access memory at address %#x" % slot) in res.output, res.describe()
    # the neighbouring pages are still there (when they were in the core)
    orig = Core.load(a.core)
    for addr in (page - 8, page + 0x1000):
        if orig.segment_for(addr) is not None:
            assert ("Cannot access memory at address %#x" % addr) not in res.output, res.describe()


def test_smoke_not_after_call_candidate(artifacts):
    """The 'text address not after a call' the damage test uses really is
    not preceded by a call, per gdb's disassembler."""
    a = artifacts[("recursion", "O0")]
    cand = a.oracle["not_after_call"]["main"]
    start = cand["function_start"]
    res = run_gdb(["-ex", "x/40i %#x" % start], exe=a.exe, core=a.core)
    lines = [l for l in res.stdout.splitlines() if l.lstrip().startswith(("0x", "=>"))]
    addrs = [int(l.replace("=>", "").split()[0].rstrip(":"), 16) for l in lines]
    i = addrs.index(cand["address"])
    assert i > 0 and "call" not in lines[i - 1], lines[max(0, i - 1):i + 1]


@pytest.mark.parametrize("how", ["last-ex", "python-quit"])
def test_smoke_batch_exit_status_recipe(artifacts, how):
    """gdb -batch exits with the status of the LAST command only: a failing
    last -ex gives status 1, and a gdb-Python try/except can `quit N`."""
    a = artifacts[("recursion", "O0")]
    failing = "frame 999"          # stands in for `verify-bt --strict`
    if how == "last-ex":
        bad = run_gdb(["-ex", "bt 1", "-ex", failing], exe=a.exe, core=a.core)
        good = run_gdb(["-ex", failing, "-ex", "bt 1"], exe=a.exe, core=a.core)
    else:
        script = ("python\ntry:\n    gdb.execute(%r)\nexcept gdb.error as e:\n"
                  "    print('strict: %%s' %% e)\n    gdb.execute('quit 3')\nend\n")
        bad_cmd = script % failing
        good_cmd = script % "bt 1"
        import tempfile, os
        with tempfile.TemporaryDirectory() as d:
            b = os.path.join(d, "bad.gdb")
            g = os.path.join(d, "good.gdb")
            open(b, "w").write(bad_cmd)
            open(g, "w").write(good_cmd)
            bad = run_gdb(["-x", b], exe=a.exe, core=a.core)
            good = run_gdb(["-x", g], exe=a.exe, core=a.core)
        assert bad.status == 3, bad.describe()
    assert bad.status != 0, bad.describe()
    assert good.status == 0, good.describe()
