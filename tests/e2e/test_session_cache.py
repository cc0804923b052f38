"""The session's memory cache: reads are kept across commands only while the
target cannot have changed. On a live process, `continue` and a memory write
must both be seen by the next command; another core loaded in the session is
read anew (oracles: gdb's own frames, and the value written)."""
import json

import pytest

from conftest import OPT_LEVELS, assert_no_crash, gdb_stackproof

SCRIPT = r'''
import gdb, json

def verify():
    out = gdb.execute("verify-bt --json", to_string=True)
    doc = json.loads(out[out.index('{"schema"'):])
    return doc["threads"][0]["frames"]

def gdb_pcs():
    pcs, f = [], gdb.newest_frame()
    while f is not None:
        pcs.append(f.pc())
        f = f.older()
    return pcs

def report(tag, frames):
    print("RESULT " + json.dumps({"tag": tag, "gdb": gdb_pcs(),
          "frames": [(f["level"], int(f["pc"], 16), f["slot"], f["verdict"], f["reasons"], f["slot_value"])
                     for f in frames]}))

gdb.execute("break rec")
gdb.execute("run 6")
report("first-stop", verify())
gdb.execute("continue")
gdb.execute("continue")
report("after-continue", verify())
frames = verify()
slot = int(frames[1]["slot"], 16)
saved = int(gdb.parse_and_eval("*(unsigned long *)%#x" % slot))
gdb.execute("set var *(unsigned long *)%#x = 0" % slot)
report("slot-zeroed", verify())
gdb.execute("set var *(unsigned long *)%#x = %#x" % (slot, saved))
report("slot-restored", verify())
gdb.execute("kill")
'''


def _results(res):
    out = {}
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            doc = json.loads(line[len("RESULT "):])
            out[doc["tag"]] = doc
    return out


@pytest.mark.parametrize("opt", sorted(OPT_LEVELS))
def test_live_process_sees_continue_and_writes(builder, tmp_path, opt):
    exe = builder.exe("recursion", opt)
    script = tmp_path / "live.py"
    script.write_text(SCRIPT)
    res = gdb_stackproof(["source %s" % script], exe=exe)
    assert_no_crash(res)
    got = _results(res)
    assert set(got) == {"first-stop", "after-continue", "slot-zeroed", "slot-restored"}, res.describe()

    for tag in ("first-stop", "after-continue", "slot-restored"):
        d = got[tag]
        # The frames checked are gdb's frames of this stop, and none is bogus.
        assert [f[1] for f in d["frames"]] == d["gdb"], (tag, res.describe())
        assert all(f[3] != "bogus" for f in d["frames"]), (tag, d["frames"])
    # Two more `rec` frames after two `continue`s: the stack was read anew.
    assert len(got["after-continue"]["gdb"]) == len(got["first-stop"]["gdb"]) + 2

    # gdb now unwinds frame 1 to pc 0 (it reads the slot too); the slot is read
    # anew, so it holds what was written, not the cached return address.
    zeroed = got["slot-zeroed"]
    assert zeroed["gdb"][1] == 0, zeroed["gdb"]
    level, pc, slot, verdict, reasons, slot_value = zeroed["frames"][1]
    assert (pc, slot_value, verdict) == (0, "0x0", "bogus"), zeroed["frames"][:3]
    assert "slot-mismatch" not in reasons and "ra-not-in-text" in reasons, reasons


CORES_SCRIPT = r'''
import gdb, json

def report(tag):
    out = gdb.execute("verify-bt --json", to_string=True)
    frames = json.loads(out[out.index('{"schema"'):])["threads"][0]["frames"]
    pcs, f = [], gdb.newest_frame()
    while f is not None:
        pcs.append(f.pc())
        f = f.older()
    print("RESULT " + json.dumps({"tag": tag, "gdb": pcs,
          "frames": [(int(f["pc"], 16), f["verdict"], f["slot"]) for f in frames]}))

gdb.execute("core-file %(a)s")
report("a")
gdb.execute("core-file %(b)s")
report("b")
gdb.execute("core-file %(a)s")
report("a-again")
'''


def test_another_core_is_read_anew(builder, tmp_path):
    """Loading another core of the same program (same thread numbers, other stack
    contents) must not reuse the first core's memory."""
    exe, core_a = builder.custom("recursion", "O2", ["6"])
    _exe, core_b = builder.custom("recursion", "O2", ["9"])
    script = tmp_path / "cores.py"
    script.write_text(CORES_SCRIPT % {"a": core_a, "b": core_b})
    res = gdb_stackproof(["set confirm off", "source %s" % script], exe=exe)
    assert_no_crash(res)
    got = _results(res)
    assert set(got) == {"a", "b", "a-again"}, res.describe()
    for tag, d in got.items():
        assert [f[0] for f in d["frames"]] == d["gdb"], (tag, d)
        assert all(f[1] != "bogus" for f in d["frames"]), (tag, d["frames"])
    # rec(6)..rec(0) and rec(9)..rec(0): three more frames in b.
    assert len(got["b"]["gdb"]) == len(got["a"]["gdb"]) + 3
    assert (got["a-again"]["gdb"], got["a-again"]["frames"]) == (got["a"]["gdb"], got["a"]["frames"])
