"""regs-from-stack against gdb's DWARF unwinding (the oracle) on real cores:
callee-saved registers of every frame, and signal frames found on the stack."""
import json

import pytest

from conftest import OPT_LEVELS, VARIANTS, assert_no_crash, gdb_stackproof, hexint

CASES = [(v, o) for v in list(VARIANTS) + ["threads"] for o in OPT_LEVELS]


def regs_json(res):
    assert_no_crash(res)
    assert res.status == 0, res.describe()
    start = res.stdout.index('{"schema":"stackproof/regs-from-stack/2"')
    return json.JSONDecoder().raw_decode(res.stdout[start:])[0]


def all_regs_docs(a):
    """`regs-from-stack --all --json` in every thread the oracle knows."""
    threads = [t["thread"] for t in a.oracle["threads"]]
    cmds = []
    for num in threads:
        cmds += ["thread %d" % num, "regs-from-stack --all --json"]
    res = gdb_stackproof(cmds, a.exe, a.core)
    assert_no_crash(res)
    docs, text, pos = [], res.stdout, 0
    marker = '{"schema":"stackproof/regs-from-stack/2"'
    for _ in threads:
        pos = text.index(marker, pos)
        doc, end = json.JSONDecoder().raw_decode(text[pos:])
        docs.append(doc)
        pos += end
    return zip(threads, docs)


@pytest.mark.parametrize("variant,opt", CASES, ids=["%s-%s" % c for c in CASES])
def test_callee_saved_registers_equal_gdbs(artifacts, variant, opt):
    """Every rbx/rbp/r12-r15 value recovered for every frame equals the value gdb's
    DWARF unwinding gives; at least 99% are recovered, none wrong."""
    a = artifacts[(variant, opt)]
    assert_registers_equal_gdbs((doc, a.frames(num)) for num, doc in all_regs_docs(a))


def assert_registers_equal_gdbs(pairs):
    """(regs-from-stack --all document, oracle frames) of threads: every value recovered
    equals gdb's, at least 99% of gdb's are recovered."""
    equal = unknown = 0
    wrong = []
    for doc, oracle in pairs:
        assert [f["level"] for f in doc["frames"]] == list(range(len(doc["frames"])))
        # The document says whose stack it is: frame 0's sp, as gdb gives it (and crash's does).
        assert hexint(doc["live_sp"]) == oracle[0]["sp"], doc["live_sp"]
        for fr in doc["frames"]:
            want = oracle[fr["level"]]
            assert hexint(fr["pc"]) == want["pc"] and hexint(fr["sp"]) == want["sp"], (fr, want)
            for name, value in (want.get("regs") or {}).items():
                if value is None:
                    continue
                got = fr["registers"].get(name, {}).get("value")
                if got is None:
                    unknown += 1
                elif hexint(got) == value:
                    equal += 1
                else:
                    wrong.append((fr["level"], want["function"], name, got, hex(value),
                                  fr["registers"][name]["origin"]))
    assert not wrong, wrong
    assert equal > 0
    assert equal >= 0.99 * (equal + unknown), (equal, unknown)


@pytest.mark.parametrize("opt", list(OPT_LEVELS))
def test_signal_frame_found_and_decoded(artifacts, opt):
    """The rt_sigframe of the SIGSEGV handler lies just above gdb's trampoline frame's
    return-address slot, and its rip/rsp are the pc/sp gdb gives the interrupted frame."""
    a = artifacts[("shapes-signal", opt)]
    frames = a.frames()
    tramp = [i for i, f in enumerate(frames) if f["type"] == "sigtramp"]
    assert tramp, frames
    t = tramp[0]
    interrupted = frames[t + 1]
    res = gdb_stackproof(["regs-from-stack --scan --json"], a.exe, a.core)
    doc = regs_json(res)
    sig = [f for f in doc["found"] if f["layout"] == "rt_sigframe"]
    assert len(sig) == 1, doc["found"]
    assert hexint(sig[0]["address"]) == frames[t]["sp"] - 8
    assert sig[0]["status"] == "live"
    assert hexint(sig[0]["registers"]["rip"]) == interrupted["pc"]
    assert hexint(sig[0]["registers"]["rsp"]) == interrupted["sp"]


def test_frame_option_names_the_saving_instruction(artifacts):
    """`--frame N+1` where frame N's prologue pushed rbx (gdb's `info frame` of N lists
    where): the origin names that slot and a `push %rbx`, and the value is gdb's."""
    a = artifacts[("shapes-null", "O2")]
    frames = a.frames()
    savers = [f for f in frames[:-1] if "rbx" in (f.get("saved_at") or {})]
    assert savers, "the shapes program saves rbx somewhere"
    saver = savers[0]
    caller = frames[saver["level"] + 1]
    res = gdb_stackproof(["regs-from-stack --frame %d --json" % caller["level"]], a.exe, a.core)
    doc = regs_json(res)
    (fr,) = doc["frames"]
    rbx = fr["registers"]["rbx"]
    assert hexint(rbx["value"]) == caller["regs"]["rbx"]
    assert ("saved at %#x by 'push %%rbx'" % saver["saved_at"]["rbx"]) in rbx["origin"], rbx
    assert rbx["origin"].endswith("(frame #%d)" % saver["level"]), rbx


def test_frame_option_bad_input(artifacts):
    a = artifacts[("recursion", "O0")]
    res = gdb_stackproof(["regs-from-stack --frame 100000", "regs-from-stack --frame -1",
                          "regs-from-stack --frame zz"], a.exe, a.core)
    assert_no_crash(res)
    assert "no frame 100000" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 3, res.describe()


def test_annotate_labels_return_addresses_and_saved_registers(artifacts):
    """`--annotate`: gdb's return-address slots are `ra #N`, and the slot where gdb's
    `info frame` says frame N saved rbx is `saved rbx of #N+1`."""
    a = artifacts[("shapes-null", "O2")]
    frames = a.frames()
    res = gdb_stackproof(["regs-from-stack --annotate --json --from $sp --to $sp+0x400"], a.exe, a.core)
    doc = regs_json(res)
    words = {hexint(w["address"]): w["labels"] for w in doc["words"]}
    for f in frames[1:]:
        if f["has_slot"] and f["type"] == "normal" and f["slot"] in words:
            assert any(l.startswith("ra #%d " % f["level"]) for l in words[f["slot"]]), (f, words[f["slot"]])
    savers = [f for f in frames[:-1] if "rbx" in (f.get("saved_at") or {}) and f["saved_at"]["rbx"] in words]
    assert savers
    for f in savers:
        assert "saved rbx of #%d" % (f["level"] + 1) in words[f["saved_at"]["rbx"]], (f, words)
