"""Frames whose return address is lost where the caller is no ordinary call away: the
function that called through a NULL pointer, a signal handler (called by the kernel),
and the signal trampoline itself. Each core of the corpus (test_corpus.py) is damaged
at one slot; the oracle is gdb's DWARF unwinding of the INTACT core: the own chain must
be its physical frames, and gdb's first wrong frame on the damaged copy `bogus` for the
reason the damage gives."""
import json
import re

import pytest

from conftest import assert_no_crash, check_schema, gdb_stackproof, hexint, parse_verify_json, run_gdb
from corepatch import Core
from test_corpus import CORPUS_OPTS, corpus, physical  # noqa: F401 (fixture)

OPTS = [o for o in CORPUS_OPTS if o not in ("O2now", "distronow")]


def damaged(c, tmp_core, slot, value):
    core = Core.load(c.core)
    core.write_u64(slot, value)
    out = tmp_core()
    core.save(out)
    res = gdb_stackproof(["verify-bt --json"], c.exe, out)
    assert_no_crash(res)
    doc = parse_verify_json(res)
    check_schema(doc)
    return next(t for t in doc["threads"] if t["thread"] == c.oracle["selected_thread"]) \
        if len(doc["threads"]) > 1 else doc["threads"][0]


def own(t, n):
    return [(hexint(f["pc"]), hexint(f["sp"])) for f in t["chain"]][:n]


def index_of(frames, kind=None, function=None):
    return next(i for i, f in enumerate(frames)
                if (kind is None or f["type"] == kind) and (function is None or f["function"] == function))


@pytest.mark.parametrize("opt", OPTS)
def test_null_call_whose_return_address_is_lost(corpus, tmp_core, opt):
    """pc 0 and the word at sp (call_null's return address) zeroed: call_null is
    rebuilt from main's direct call to it and its one indirect call; trust scan."""
    c = corpus[("nullcall", opt)]
    frames = c.frames()
    assert frames[0]["pc"] == 0 and frames[1]["function"] == "call_null"
    t = damaged(c, tmp_core, frames[0]["sp"], 0)
    want = physical(frames)
    assert own(t, len(want)) == want, (t["chain"], want)
    assert t["chain"][1]["trust"] == "scan" and t["chain"][1]["slot"] is None, t["chain"][1]


@pytest.mark.parametrize("opt", OPTS)
def test_direct_call_cannot_reach_pc_0(corpus, tmp_core, opt):
    """The word at sp replaced by main's own return address (a stale one): gdb takes
    main as frame 1, but main calls call_null directly, and call_null has no jump
    through a pointer that could reach pc 0."""
    c = corpus[("nullcall", opt)]
    frames = c.frames()
    t = damaged(c, tmp_core, frames[0]["sp"], frames[2]["pc"])
    f1 = t["frames"][1]
    assert hexint(f1["pc"]) == frames[2]["pc"], f1
    assert f1["verdict"] == "bogus" and "wrong-target" in f1["reasons"], f1
    want = physical(frames)
    assert own(t, len(want)) == want, (t["chain"], want)


@pytest.mark.parametrize("opt", OPTS)
def test_signal_trampoline_whose_slot_is_lost(corpus, tmp_core, opt):
    """The handler's return address (the sigframe's pretcode, `__restore_rt`) zeroed:
    a signal frame starts at that slot, so the trampoline is rebuilt there and the
    chain goes on through the interrupted frame."""
    c = corpus[("signal", opt)]
    frames = c.frames()
    k = index_of(frames, kind="sigtramp")
    t = damaged(c, tmp_core, frames[k]["slot"], 0)
    want = physical(frames)
    assert own(t, len(want)) == want, (t["chain"], want)
    tramp = next(f for f in t["chain"] if hexint(f["pc"]) == frames[k]["pc"])
    assert tramp["kind"] == "sigtramp" and tramp["trust"] == "scan", tramp


@pytest.mark.parametrize("opt", ["O0", "O1"])
def test_signal_handler_whose_return_address_is_lost(corpus, tmp_core, opt):
    """At -O0/-O1 the handler on_usr1 is a frame of its own: its return address into
    it zeroed, it is rebuilt as the one function calling crash_inline3 directly that
    can stand below the signal frame (no call leads to a handler)."""
    c = corpus[("signal", opt)]
    frames = c.frames()
    k = index_of(frames, function="on_usr1")
    t = damaged(c, tmp_core, frames[k]["slot"], 0)
    want = physical(frames)
    assert own(t, len(want)) == want, (t["chain"], want)


@pytest.mark.parametrize("opt", ["O0", "O1"])
def test_stale_restore_rt_is_bogus(corpus, tmp_core, opt):
    """on_usr1's slot replaced by `__restore_rt` (the word 32 bytes up): gdb takes it
    as the signal trampoline, but no signal frame starts at that slot."""
    c = corpus[("signal", opt)]
    frames = c.frames()
    k = index_of(frames, function="on_usr1")
    tramp = frames[index_of(frames, kind="sigtramp")]
    t = damaged(c, tmp_core, frames[k]["slot"], tramp["pc"])
    got = next(f for f in t["frames"] if f["kind"] == "sigtramp")
    assert hexint(got["sp"]) != tramp["sp"], got
    assert got["verdict"] == "bogus" and "damaged-registers" in got["reasons"], got
    want = physical(frames)
    assert own(t, len(want)) == want, (t["chain"], want)


# (mode, the function whose return address is lost): a callback's caller (glibc's
# msort_with_tmp calls the comparison from each branch of its merge loop) and a
# thread's start routine's caller (start_thread, entered by clone3's `call *%rdx`).
CALLBACK_CASES = [("qsort", o) for o in CORPUS_OPTS] + [("join", o) for o in OPTS]


def calls_in(exe, core, pc):
    """The return addresses of every call of the function holding `pc`, from gdb's own
    disassembler: the address of the instruction after each `call`."""
    res = run_gdb(["-ex", "disassemble %#x" % pc], exe, core)
    lines = [m for m in (re.match(r"\s*(?:=>\s*)?(0x[0-9a-f]+) <[^>]*>:\s*(\S+)", ln)
                         for ln in res.stdout.splitlines()) if m]
    return {int(lines[i + 1].group(1), 16) for i in range(len(lines) - 1) if lines[i].group(2) == "call"}


@pytest.mark.parametrize("mode,opt", CALLBACK_CASES, ids=["-".join(c) for c in CALLBACK_CASES])
@pytest.mark.parametrize("damage", ["zero", "stale"])
def test_lost_callback_caller_is_one_of_its_calls(corpus, tmp_core, mode, opt, damage):
    """The return address into the function that called a callback (or a thread's start
    routine) through a pointer zeroed, or replaced by the next one up (stale): that
    function has several calls that fit, all with one frame layout, but the branches
    that lead to each test values still in its frame or in memory its callee-saved
    registers point to (msort_with_tmp's `p->var` switch, start_thread's
    `pd->setup_sigmask`-like flag): the own chain has the frame at the intact pc, no
    `candidates` (a return address after a call of that function, by gdb's
    disassembler) and goes on with the intact frames beyond it (it jumped to main's
    caller, or lost start_thread); gdb's wrong frame there is `bogus`."""
    c = corpus[(mode, opt)]
    frames = c.frames()
    want = physical(frames)
    name = "start_thread" if mode == "join" else "msort_with_tmp"
    k = index_of(frames, kind="normal", function=name)
    value = 0 if damage == "zero" else frames[k + 1]["pc"]
    t = damaged(c, tmp_core, frames[k]["slot"], value)
    chain = t["chain"][:len(want)]
    i = next(j for j, w in enumerate(want) if w == (frames[k]["pc"], frames[k]["sp"]))
    got = [(hexint(f["pc"]), hexint(f["sp"])) for f in chain]
    assert got[:i] == want[:i] and got[i + 1:] == want[i + 1:], (chain, want)
    lost = chain[i]
    assert (hexint(lost["pc"]), hexint(lost["sp"])) == want[i] and "candidates" not in lost, (lost, want[i])
    assert want[i][0] in calls_in(c.exe, c.core, want[i][0]), (lost, frames[k])
    assert lost["trust"] == "scan" and lost["slot"] is None, lost
    wrong = next(f for f in t["frames"] if hexint(f["sp"]) == frames[k]["sp"] and f["kind"] == "normal")
    assert wrong["verdict"] == "bogus", wrong


@pytest.fixture(scope="module", params=["O0", "O2", "O3"])
def twocalls(request, builder):
    exe = builder.exe("twocalls", request.param)
    core = builder.core_for(exe, [], [], "SIGSEGV", "twocalls-%s" % request.param)
    return request.param, exe, core, json.loads(builder.oracle_for(exe, core).read_text())


@pytest.mark.parametrize("damage", ["zero", "stale"])
def test_lost_caller_with_two_calls_branching_on_an_argument(twocalls, tmp_core, damage):
    """tests/programs/twocalls.c: twice() calls its pointer from both arms of `if (x > 0)`.
    crash_cb's return address into twice zeroed (or replaced by main's, stale): at -O0
    x is in twice's frame (`cmpl $0,-0x1c(%rbp)`) and the branch tells the call (the
    intact pc, no candidates); optimized, x is in esi, which nothing keeps: both calls
    stay `candidates` (both return addresses after a call of twice by gdb's
    disassembler, the intact pc among them), the frame's sp the intact one, the chain
    going on to main."""
    opt, exe, core, oracle = twocalls
    frames = oracle["threads"][0]["frames"]
    assert [f["function"] for f in frames[:3]] == ["crash_cb", "twice", "main"], frames
    want = physical(frames)
    d = Core.load(core)
    d.write_u64(frames[1]["slot"], 0 if damage == "zero" else frames[2]["pc"])
    out = tmp_core()
    d.save(out)
    res = gdb_stackproof(["verify-bt --json"], exe, out)
    assert_no_crash(res)
    doc = parse_verify_json(res)
    check_schema(doc)
    t = doc["threads"][0]
    chain = t["chain"][:len(want)]
    got = [(hexint(f["pc"]), hexint(f["sp"])) for f in chain]
    assert got[0] == want[0] and got[2:] == want[2:] and got[1][1] == want[1][1], (chain, want)
    lost = chain[1]
    assert lost["trust"] == "scan" and lost["function"] == "twice", lost
    if opt == "O0":
        assert got[1] == want[1] and "candidates" not in lost, lost
    else:
        cands = [hexint(x) for x in lost["candidates"]]
        assert len(cands) == 2 and want[1][0] in cands, lost
        assert set(cands) <= calls_in(exe, core, want[1][0]), lost


REGISTER_CASES = [("nullcall", o, "null") for o in OPTS] + [("signal", o, "tramp") for o in OPTS] \
    + [("signal", o, "handler") for o in ("O0", "O1")]


def zeroed_copy(corpus, tmp_core, mode, opt, where):
    """A corpus core with one return address zeroed: frame 0's (the NULL call's caller),
    the trampoline's, or the handler's. Returns (case, intact frames, lost index, core)."""
    c = corpus[(mode, opt)]
    frames = c.frames()
    k = {"null": lambda: 1, "tramp": lambda: index_of(frames, kind="sigtramp"),
         "handler": lambda: index_of(frames, function="on_usr1")}[where]()
    slot = frames[0]["sp"] if where == "null" else frames[k]["slot"]
    core = Core.load(c.core)
    core.write_u64(slot, 0)
    out = tmp_core()
    core.save(out)
    return c, frames, k, out


@pytest.mark.parametrize("mode,opt,where", REGISTER_CASES, ids=["-".join(c) for c in REGISTER_CASES])
def test_rebuilt_frames_from_registers_are_not_bogus(corpus, tmp_core, mode, opt, where):
    """`verify-bt --sp --pc --bp` checks stackproof's own chain, not gdb's: on each
    damaged copy above, its frames are gdb's physical frames of the intact core, none
    `bogus`, and the one whose return address was zeroed is `probable` `rebuilt`
    (it was `bogus` `slot-mismatch`, and the corrected chain dropped it)."""
    c, frames, k, out = zeroed_copy(corpus, tmp_core, mode, opt, where)
    res = gdb_stackproof(["thread %d" % c.oracle["selected_thread"],
                          "verify-bt --sp $sp --pc $pc --bp $rbp --json"], c.exe, out)
    assert_no_crash(res)
    doc = parse_verify_json(res)
    check_schema(doc)
    t = doc["threads"][0]
    want = physical(frames)
    got = [(hexint(f["pc"]), hexint(f["sp"])) for f in t["frames"]][:len(want)]
    assert got == want, (got, want)
    assert [f for f in t["frames"] if f["verdict"] == "bogus"] == [], t["frames"]
    lost = next(f for f in t["frames"] if hexint(f["pc"]) == frames[k]["pc"] and hexint(f["sp"]) == frames[k]["sp"])
    assert lost["verdict"] == "probable" and lost["reasons"] == ["rebuilt"], lost


def exe_functions(exe):
    import subprocess
    out = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    return {l.split()[2] for l in out.splitlines() if len(l.split()) == 3 and l.split()[1] in "tT"}


@pytest.mark.parametrize("mode,opt,where", REGISTER_CASES, ids=["-".join(c) for c in REGISTER_CASES])
def test_corrected_chain_is_the_intact_one(corpus, tmp_core, mode, opt, where):
    """gdb stops at the damaged frame; the text's corrected chain is its frames without
    the bogus one, with the lost one in its place and stackproof's chain beyond where gdb
    stopped: gdb's physical frames of the intact core, the program's functions in gdb's
    order (it was gdb's frames minus the bogus one, ending there)."""
    c, frames, k, out = zeroed_copy(corpus, tmp_core, mode, opt, where)
    res = gdb_stackproof(["thread %d" % c.oracle["selected_thread"], "verify-bt"], c.exe, out)
    assert_no_crash(res)
    [line] = [l for l in res.stdout.splitlines() if l.startswith("Corrected chain (")]
    entries = line.split("): ", 1)[1].split(" <- ")
    phys = [e for e in entries if not e.endswith("(inlined)")]
    # gdb's oracle stops at main (gdb's `backtrace past-main` is off): compare that far.
    n = len(physical(frames))
    assert len(phys) >= n, (line, physical(frames))
    mine = exe_functions(c.exe)
    strip = lambda e: e.split(" [")[0].split("+0x")[0]
    want = [f["function"] for f in frames if f["type"] not in ("inline", "tailcall") and f["function"] in mine]
    assert [strip(e) for e in phys[:n] if strip(e) in mine] == want, (line, want)
