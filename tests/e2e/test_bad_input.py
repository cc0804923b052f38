"""Bad input never gives a Python traceback or a Rust panic: a one-line
error (or unknown verdicts), and gdb goes on and exits normally."""
import json

import pytest

from conftest import (assert_no_crash, check_schema, gdb_stackproof, hexint,
                      parse_verify_json, require_stackproof, run_gdb)
from corepatch import Core

ALIVE = "stackproof-test-alive"


def error_lines(res):
    """stderr lines that are not gdb's own warnings about the core/files."""
    return [l for l in res.stderr.splitlines()
            if l.strip() and not l.startswith("warning:")
            and "libthread_db" not in l]


def run_then_alive(cmd, exe=None, core=None):
    res = gdb_stackproof([cmd, "echo %s\\n" % ALIVE], exe, core, timeout=60)
    assert_no_crash(res)
    assert ALIVE in res.stdout, ("gdb did not go on after %r" % cmd, res.describe())
    assert res.status == 0, res.describe()
    return res


def test_help_is_registered():
    res = gdb_stackproof(["help verify-bt", "help regs-from-stack"])
    assert_no_crash(res)
    assert res.status == 0, res.describe()
    assert "--json" in res.stdout and "--strict" in res.stdout, res.describe()
    assert "Undefined command" not in res.output, res.describe()


@pytest.mark.parametrize("cmd", ["verify-bt", "verify-bt --json", "verify-bt -a",
                                 "regs-from-stack"])
def test_nothing_loaded(cmd):
    res = run_then_alive(cmd)
    assert len(error_lines(res)) <= 1, res.describe()
    assert error_lines(res) or "No" in res.stdout or "no" in res.stdout, res.describe()


BAD_ARGS = [
    "verify-bt --sp foo",
    "verify-bt --sp",
    "verify-bt --sp $sp",                 # --pc missing
    "verify-bt --pc $pc",                 # --sp missing
    "verify-bt --max-frames -3",
    "verify-bt --max-frames abc",
    "verify-bt --max-frames",
    "verify-bt --no-such-option",
    "verify-bt --crash-bt /nonexistent/stackproof-bt.txt",
    "verify-bt --json --json --sp 1 --pc 2 --bp 3 extra words",
    "regs-from-stack --no-such-option",
]


@pytest.mark.parametrize("cmd", BAD_ARGS)
def test_garbage_arguments(artifacts, cmd):
    a = artifacts[("recursion", "O0")]
    res = run_then_alive(cmd, a.exe, a.core)
    lines = error_lines(res)
    assert 1 <= len(lines) <= 1, ("expected a one-line error", res.describe())


def test_garbage_crash_bt_text(artifacts, tmp_path):
    a = artifacts[("recursion", "O0")]
    junk = tmp_path / "junk.txt"
    junk.write_bytes(b"\x00\xff garbage\n #1 [zzzz] f at qq\n #2 [] at\n" + b"A" * 5000 + b"\n")
    res = run_then_alive("verify-bt --crash-bt %s" % junk, a.exe, a.core)
    assert len(error_lines(res)) <= 1, res.describe()


def test_unmapped_sp(artifacts):
    """Registers pointing nowhere: unknown verdicts or one error line."""
    a = artifacts[("recursion", "O0")]
    res = gdb_stackproof(["verify-bt --json --sp 0x10 --pc 0x20"], a.exe, a.core)
    assert_no_crash(res)
    if res.status == 0:
        doc = parse_verify_json(res)
        check_schema(doc)
        for fr in doc["threads"][0]["frames"]:
            assert fr["verdict"] in ("unknown", "bogus"), fr
    else:
        assert len(error_lines(res)) <= 1, res.describe()


@pytest.mark.parametrize("ra_self", [False, True])
def test_looping_chain_terminates(artifacts, tmp_core, ra_self):
    """A stack page where the saved rbp points at itself and the ra slot holds
    a real return address (or its own address): the walk must stop."""
    a = artifacts[("recursion", "O0")]
    frames = a.frames()
    f3 = frames[3]
    s = (f3["sp"] - 0x100) & ~0xF          # below the live frames of frame 3
    core = Core.load(a.core)
    core.write_u64(s, s)
    core.write_u64(s + 8, (s + 8) if ra_self else frames[2]["pc"])
    out = tmp_core()
    core.save(out)
    for cmd in ("verify-bt --json --sp %#x --pc %#x --bp %#x" % (s, frames[1]["pc"], s),
                "verify-bt --json --sp %#x --pc %#x --bp %#x --max-frames 100000"
                % (s, frames[1]["pc"], s)):
        res = gdb_stackproof([cmd], a.exe, out, timeout=60)
        assert_no_crash(res)
        if res.status == 0:
            doc = parse_verify_json(res)
            check_schema(doc)
            frames_out = doc["threads"][0]["frames"]
            sps = [(hexint(f["pc"]), hexint(f["sp"])) for f in frames_out]
            # no (pc, sp) twice: the loop was noticed, not walked
            assert len(sps) == len(set(sps)), sps[:20]
        else:
            assert len(error_lines(res)) <= 1, res.describe()


@pytest.mark.parametrize("opt", ["O0", "O2"])
def test_stripped_binary(builder, artifacts, opt):
    """The core of the unstripped run, read with a stripped copy of the
    program: no symbols, so function names are null or verdicts unknown, but
    nothing breaks."""
    a = artifacts[("recursion", opt)]
    stripped = builder.stripped("recursion", opt)
    res = gdb_stackproof(["verify-bt --json"], stripped, a.core)
    assert_no_crash(res)
    assert res.status == 0, res.describe()
    doc = parse_verify_json(res)
    check_schema(doc)
    for name in ("verify-bt", "verify-bt -v", "verify-bt --sp $sp --pc $pc"):
        run_then_alive(name, stripped, a.core)
