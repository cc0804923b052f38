"""A saved rbp overwritten with another real stack address (that of a frame two
levels up): gdb's DWARF unwinding of rbp-framed code then skips frames, and every
frame it shows still holds a genuine return address after a call to the right
function. Only the frame's extent betrays it: the function's code (its layout at
the pc) allows exactly one frame size there. The oracle is gdb on the INTACT core."""
import pytest

from conftest import hexint
from test_damaged import patched, verify_json
from test_own_chain import own_chain, physical
from test_realign import realign_cores  # noqa: F401 (fixture)

OPTS = ["O0", "O2fp"]


@pytest.mark.parametrize("opt", OPTS)
def test_saved_rbp_pointing_up_the_stack_is_frame_size(artifacts, tmp_core, opt):
    a = artifacts[("recursion", opt)]
    frames = a.frames()
    names = [f["function"] for f in frames]
    k = 2
    assert names[k:k + 4] == ["rec"] * 4, names
    # frame k's rbp, saved by frame k-1's `push %rbp` right below its return address...
    slot = frames[k]["sp"] - 16
    assert frames[k]["regs"]["rbp"] == frames[k + 1]["sp"] - 16
    # ...replaced by frame k+2's rbp: gdb then takes frame k+3 as frame k's caller
    fake = frames[k + 2]["regs"]["rbp"]
    core = patched(a, tmp_core, writes=[(slot, fake)])
    res, doc = verify_json(a.exe, core)
    t = doc["threads"][0]
    got = t["frames"]
    assert (hexint(got[k + 1]["pc"]), hexint(got[k + 1]["sp"])) == (frames[k + 3]["pc"], frames[k + 3]["sp"]), \
        "the damage should make gdb skip two frames"
    # the slot holds the return address and the call before it calls rec: only the size is wrong
    assert got[k + 1]["verdict"] == "bogus", got[k + 1]
    assert got[k + 1]["reasons"] == ["frame-size"], got[k + 1]
    assert hexint(got[k + 1]["expected_slot"]) == frames[k + 1]["sp"] - 8
    for i in range(k + 1):
        assert got[i]["verdict"] != "bogus", (i, got[i])
    assert [f["level"] for f in got if f["verdict"] == "bogus"][0] == k + 1
    # the corrected chain continues from frame k's layout: the intact core's frames
    want = physical(frames)
    assert own_chain(t, len(want)) == want
    assert t["lost"] and t["invented"] == []
    assert "frame-size" in res.stdout


@pytest.mark.parametrize("build", ["O2", "O0"])
def test_saved_rbp_of_a_realigned_frame(realign_cores, tmp_core, build):
    """The same damage to the rbp of a frame realigned to 64 bytes (aligned64): its
    frame size is a range one alignment wide, and a frame two levels up lies beyond it."""
    exe, core, oracle = realign_cores(build, "below")
    frames = oracle["threads"][0]["frames"]
    k = [f["function"] for f in frames].index("aligned64")
    slot = frames[k]["sp"] - 16  # saved by the callee's `push %rbp`
    fake = frames[k + 2]["regs"]["rbp"]
    damaged = patched(core, tmp_core, writes=[(slot, fake)])
    res, doc = verify_json(exe, damaged)
    t = doc["threads"][0]
    got = t["frames"]
    assert hexint(got[k + 1]["sp"]) != frames[k + 1]["sp"], "the damage should mislead gdb"
    bogus = [f for f in got if f["verdict"] == "bogus"]
    assert bogus and bogus[0]["level"] == k + 1 and "frame-size" in bogus[0]["reasons"], got[k + 1]
    want = physical(frames)
    assert own_chain(t, len(want)) == want
