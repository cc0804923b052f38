"""Signal frames against gdb's own unwinding (the oracle): a handler on a
sigaltstack, nested handlers, an SA_SIGINFO handler (tests/programs/signals.c).

Every rt_sigframe on the stacks the backtrace crosses must be found where gdb's
sigtramp frame says (sp - 8) and hold the pc/sp gdb gives the interrupted frame;
verify-bt must accept the trampoline and the interrupted pc; stackproof's own
chain and recovered registers must equal gdb's through every signal frame."""
import json

import pytest

from conftest import (OPT_LEVELS, assert_no_crash, check_against_oracle, gdb_stackproof, hexint,
                      parse_verify_json)
from test_regs import all_regs_docs

SIGNAL_VARIANTS = ["signals-altstack", "signals-nested", "signals-siginfo"]
CASES = [(v, o) for v in SIGNAL_VARIANTS for o in OPT_LEVELS]
IDS = ["%s-%s" % c for c in CASES]

# What each program does (tests/programs/signals.c): how many handlers are
# live at the crash, and the siginfo the kernel gave the handler, if any.
SIGTRAMPS = {"signals-altstack": 1, "signals-nested": 2, "signals-siginfo": 1}
SIGINFO = {"signals-siginfo": "signal 11, si_code 1"}  # SIGSEGV, SEGV_MAPERR (NULL write)


@pytest.fixture
def art(builder, variant, opt):
    return builder.get(variant, opt)


def sigtramps(frames):
    return [i for i, f in enumerate(frames) if f["type"] == "sigtramp"]


def regs_doc(res):
    assert_no_crash(res)
    assert res.status == 0, res.describe()
    start = res.stdout.index('{"schema":"stackproof/regs-from-stack/2"')
    return json.JSONDecoder().raw_decode(res.stdout[start:])[0]


def check_sigframes(a, doc):
    """The live rt_sigframes of a scan are exactly gdb's signal frames."""
    frames = a.frames()
    tramps = sigtramps(frames)
    assert len(tramps) == SIGTRAMPS[a.name], [(f["function"], f["type"]) for f in frames]
    found = {hexint(f["address"]): f for f in doc["found"] if f["layout"] == "rt_sigframe"}
    for t in tramps:
        addr = frames[t]["sp"] - 8
        interrupted = frames[t + 1]
        assert addr in found, ("no rt_sigframe at %#x (frame %d)" % (addr, t), sorted(map(hex, found)))
        f = found[addr]
        assert f["status"] == "live", f
        assert hexint(f["registers"]["rip"]) == interrupted["pc"], (f, interrupted)
        assert hexint(f["registers"]["rsp"]) == interrupted["sp"], (f, interrupted)
        (si,) = [c for c in f["checks"] if c["name"] == "siginfo"]
        assert si["ok"], si
        if a.name in SIGINFO:
            assert si["detail"] == SIGINFO[a.name], si
        else:
            # No SA_SIGINFO: the kernel wrote no siginfo, so none may be reported.
            assert si["detail"].startswith("no siginfo"), si
    live = sorted(a for a, f in found.items() if f["status"] == "live")
    assert live == sorted(frames[t]["sp"] - 8 for t in tramps), [hex(x) for x in live]


@pytest.mark.parametrize("variant,opt", CASES, ids=IDS)
def test_every_sigframe_found_by_default_scan(art):
    """`regs-from-stack --scan` with its default ranges: the stack holding $sp and,
    through the signal frames, the stacks gdb's backtrace goes on to."""
    res = gdb_stackproof(["regs-from-stack --scan --json"], art.exe, art.core)
    check_sigframes(art, regs_doc(res))


@pytest.mark.parametrize("opt", list(OPT_LEVELS))
def test_altstack_handler_frames_on_another_stack(builder, opt):
    """The handler ran on the sigaltstack: its frames and the sigframe are far from
    the interrupted frames; an explicit --from/--to around the handler frames' sp
    finds the sigframe too."""
    a = builder.get("signals-altstack", opt)
    frames = a.frames()
    (t,) = sigtramps(frames)
    handler_sp, interrupted_sp = frames[t]["sp"], frames[t + 1]["sp"]
    assert abs(interrupted_sp - handler_sp) > (1 << 20), (hex(handler_sp), hex(interrupted_sp))
    lo, hi = frames[0]["sp"] & ~0xF, handler_sp + 0x1000
    res = gdb_stackproof(["regs-from-stack --scan --json --from %#x --to %#x" % (lo, hi)], a.exe, a.core)
    check_sigframes(a, regs_doc(res))


@pytest.mark.parametrize("variant,opt", CASES, ids=IDS)
def test_verify_bt_through_signal_frames(art):
    res = gdb_stackproof(["verify-bt --json"], art.exe, art.core)
    assert_no_crash(res)
    doc = parse_verify_json(res)
    t = doc["threads"][0]
    frames = art.frames()
    check_against_oracle(t, frames, art.name + "-" + art.opt)
    assert t["bogus"] == []
    for i in sigtramps(frames):
        assert "signal-frame" in t["frames"][i]["reasons"], t["frames"][i]
        assert t["frames"][i]["verdict"] == "ok", t["frames"][i]
        assert "interrupted-pc" in t["frames"][i + 1]["reasons"], t["frames"][i + 1]
        assert t["frames"][i + 1]["verdict"] == "ok", t["frames"][i + 1]


@pytest.mark.parametrize("variant,opt", CASES, ids=IDS)
def test_own_chain_crosses_every_signal_frame(art):
    """stackproof's own chain (no CFI) equals gdb's physical frames through every
    rt_sigframe; the interrupted frames' registers come from the sigframe."""
    res = gdb_stackproof(["verify-bt --json"], art.exe, art.core)
    doc = parse_verify_json(res)
    t = doc["threads"][0]
    frames = art.frames()
    physical = [f for f in frames if f["type"] not in ("inline", "tailcall")]
    want = [(f["pc"], f["sp"]) for f in physical]
    have = [(hexint(c["pc"]), hexint(c["sp"])) for c in t["chain"]][:len(want)]
    assert have == want, (t["chain_stop"], [(hex(p), hex(s)) for p, s in have])
    assert t["invented"] == [] and t["lost"] == []
    for k, f in enumerate(physical[:-1]):
        if f["type"] == "sigtramp":
            assert t["chain"][k + 1]["trust"] == "registers", t["chain"][k + 1]


@pytest.mark.parametrize("variant,opt", CASES, ids=IDS)
def test_callee_saved_registers_through_signal_frames(art):
    """`regs-from-stack --all`: every callee-saved register recovered equals gdb's,
    in the handler frames and in the interrupted frames; none wrong, 99% known."""
    equal = unknown = 0
    wrong = []
    frames = art.frames()
    beyond = {fr["level"] for fr in frames if any(f["type"] == "sigtramp" for f in frames[:fr["level"]])}
    equal_beyond = 0
    for num, doc in all_regs_docs(art):
        for fr in doc["frames"]:
            want = frames[fr["level"]]
            assert (hexint(fr["pc"]), hexint(fr["sp"])) == (want["pc"], want["sp"]), (fr, want)
            for name, value in (want.get("regs") or {}).items():
                got = fr["registers"].get(name, {}).get("value")
                if got is None:
                    unknown += 1
                elif hexint(got) == value:
                    equal += 1
                    equal_beyond += fr["level"] in beyond
                else:
                    wrong.append((fr["level"], want["function"], name, got, hex(value),
                                  fr["registers"][name]["origin"]))
    assert not wrong, wrong
    assert equal_beyond > 0, "no register recovered past a signal frame"
    assert equal >= 0.99 * (equal + unknown), (equal, unknown)
