"""A thread caught as it is created (tests/programs/newthread.c, stopped by gdb at the
parent's clone3 syscall): the new thread is still in clone3, before it calls anything,
and gdb shows a frame `#1 0x0 in ?? ()`, the zero word at its new stack's top. That is
the stack's bottom, `ok` `stack-bottom`, not a bogus frame (it was `bogus`
`ra-not-in-text`, and `--strict` failed on a healthy process)."""
import pytest

from conftest import OPT_LEVELS, assert_no_crash, gdb_stackproof, hexint, parse_verify_json


# A breakpoint right after clone3's syscall that only the child (rax 0) stops at.
STOP_IN_CHILD = ("python arch = gdb.selected_frame().architecture(); "
                 "ins = arch.disassemble(int(gdb.parse_and_eval('(long)clone3')), count=16); "
                 "k = [i['asm'].startswith('syscall') for i in ins].index(True); "
                 "b = gdb.Breakpoint('*%d' % ins[k + 1]['addr']); b.condition = '$rax == 0'")


@pytest.fixture(scope="module", params=sorted(OPT_LEVELS))
def created(request, builder):
    exe = builder.exe("newthread", request.param)
    core = builder.core_for(exe, [], ["break main"], None, "newthread-%s" % request.param,
                            after_run=[STOP_IN_CHILD, "continue"])
    return exe, core, builder.oracle_for(exe, core)


def test_new_threads_bottom_is_not_bogus(created):
    import json
    exe, core, oracle = created
    oracle = json.loads(oracle.read_text())
    new = [t for t in oracle["threads"]
           if len(t["frames"]) == 2 and t["frames"][0]["function"] == "clone3" and t["frames"][1]["pc"] == 0]
    assert len(new) == 1, oracle["threads"]  # gdb shows the new thread's pc-0 frame
    res = gdb_stackproof(["verify-bt -a --json", "verify-bt -a --strict"], exe, core)
    assert_no_crash(res)
    assert res.status == 0, res.describe()
    doc = parse_verify_json(res)
    by_num = {t["thread"]: t for t in doc["threads"]}
    t = by_num[new[0]["thread"]]
    f0, f1 = t["frames"]
    assert f0["verdict"] == "ok" and f0["function"] == "clone3", f0
    assert hexint(f1["pc"]) == 0 and hexint(f1["slot"]) == new[0]["frames"][1]["sp"] - 8, f1
    assert f1["verdict"] == "ok" and f1["reasons"] == ["stack-bottom"], f1
    for th in doc["threads"]:
        assert all(f["verdict"] != "bogus" for f in th["frames"]), th
        assert th["invented"] == [] and th["lost"] == [], th
