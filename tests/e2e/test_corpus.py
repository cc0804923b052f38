"""A corpus of everyday frame shapes (tests/programs/frames.c and libframes.c):
inlined frames at #0 and in the middle of the stack, calls through the PLT
(lazy, `-z now`, `.plt.sec`), threads blocked in libc waits, a signal handler,
a NULL call, at every -O level and with distro flags. Every verdict, the own
chain and the callee-saved registers are judged against gdb's DWARF unwinding
of the same intact core (oracle_gdb.py), never against stackproof's output."""
import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (BUILD, PROGRAMS, _digest, assert_no_crash, check_against_oracle,
                      check_schema, gcc_version, gdb_stackproof, hexint, parse_verify_json, run_gdb)

DISTRO = ["-O2", "-fcf-protection=full", "-fstack-clash-protection", "-fstack-protector-strong",
          "-D_FORTIFY_SOURCE=2"]
CORPUS_OPTS = {
    "O0": ["-O0"],
    "O1": ["-O1"],
    "O2": ["-O2"],
    "O3": ["-O3"],
    "Os": ["-Os"],
    "distro": DISTRO,
    # Link variants of the PLT: bound at load time, and IBT's .plt.sec stubs.
    "O2now": ["-O2", "-Wl,-z,now"],
    "distronow": DISTRO + ["-Wl,-z,now"],
}
# mode -> (gdb commands before `run`, the signal it stops with)
MODES = {
    "inline1": ([], "SIGSEGV"),
    "inline3": ([], "SIGSEGV"),
    "inlinemid": ([], "SIGSEGV"),
    "static": ([], "SIGSEGV"),
    "join": ([], "SIGSEGV"),
    "plt": ([], "SIGSEGV"),
    "qsort": ([], "SIGSEGV"),
    "nullcall": ([], "SIGSEGV"),
    "signal": (["handle SIGUSR1 nostop noprint pass"], "SIGSEGV"),
}
LINK_ONLY = {"O2now", "distronow"}   # only the PLT modes are worth building again
CASES = [(m, o) for o in CORPUS_OPTS for m in MODES if o not in LINK_ONLY or m in ("plt", "qsort")]


class Corpus:
    def __init__(self, a_exe, core, oracle, mode, opt):
        self.exe, self.core, self.mode, self.opt = a_exe, core, mode, opt
        self.oracle = json.loads(oracle.read_text())

    def frames(self, num=None):
        num = num or self.oracle["selected_thread"]
        return next(t for t in self.oracle["threads"] if t["thread"] == num)["frames"]


def _build(builder, opt, opt_flags=None):
    """libframes.so and frames, linked through the PLT, for one flag set (CORPUS_OPTS[opt],
    or `opt_flags` named `opt`)."""
    flags = ["-g"] + (opt_flags if opt_flags is not None else CORPUS_OPTS[opt])
    srcs = [(PROGRAMS / n).read_bytes() for n in ("frames.c", "libframes.c")]
    key = _digest(*srcs, flags, gcc_version())
    d = BUILD / "corpus" / ("%s-%s" % (opt, key))
    exe = d / "frames"
    with builder._lock_for(str(d)):
        if not exe.exists():
            d.mkdir(parents=True, exist_ok=True)
            lib = d / "libframes.so"
            for cmd in (["gcc"] + flags + ["-shared", "-fPIC", "-o", str(lib), str(PROGRAMS / "libframes.c")],
                        ["gcc"] + flags + ["-Wall", "-o", str(d / "frames.tmp"), str(PROGRAMS / "frames.c"),
                                           "-pthread", "-L", str(d), "-lframes", "-Wl,-rpath," + str(d)]):
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode != 0:
                    raise RuntimeError("compile failed: %s\n%s" % (" ".join(cmd), p.stderr))
            os.replace(d / "frames.tmp", exe)
    return exe


@pytest.fixture(scope="session")
def corpus(builder):
    def one(case):
        mode, opt = case
        exe = _build(builder, opt)
        pre, sig = MODES[mode]
        core = builder.core_for(exe, [mode], pre, sig, "frames-%s-%s" % (mode, opt))
        return case, Corpus(exe, core, builder.oracle_for(exe, core), mode, opt)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, CASES))


def physical(frames):
    return [(f["pc"], f["sp"]) for f in frames if f["type"] not in ("inline", "tailcall")]


def verify_all(c):
    res = gdb_stackproof(["verify-bt -a --json"], c.exe, c.core)
    assert_no_crash(res)
    assert res.status == 0, res.describe()
    doc = parse_verify_json(res)
    check_schema(doc)
    return {t["thread"]: t for t in doc["threads"]}


def assert_verdicts_and_chain_equal_gdbs(c, label):
    """Every thread of core c: its frames checked against gdb's (check_against_oracle),
    the own chain = gdb's physical frames, nothing invented or lost. Returns the
    function names gdb shows."""
    got = verify_all(c)
    assert sorted(got) == sorted(t["thread"] for t in c.oracle["threads"])
    names = set()
    for ot in c.oracle["threads"]:
        what = "%s %s thread %d" % (label, c.opt, ot["thread"])
        t = got[ot["thread"]]
        check_against_oracle(t, ot["frames"], what)
        names.update(f["function"] or "" for f in ot["frames"])
        want = physical(ot["frames"])
        own = [(hexint(f["pc"]), hexint(f["sp"])) for f in t["chain"]][:len(want)]
        assert own == want, (what, t["chain_stop"], [(hex(a), hex(b)) for a, b in own],
                             [(hex(a), hex(b)) for a, b in want])
        assert t["invented"] == [] and t["lost"] == [], (what, t["invented"], t["lost"])
    return names


@pytest.mark.parametrize("mode,opt", CASES, ids=["%s-%s" % c for c in CASES])
def test_corpus_verdicts_and_own_chain_equal_gdbs(corpus, mode, opt):
    """Every thread: gdb's frames, none bogus (they are all real: the core is intact);
    stackproof's own chain is gdb's physical frames (pc, sp = the inner frame's CFA);
    nothing invented, nothing lost."""
    c = corpus[(mode, opt)]
    got = verify_all(c)
    assert sorted(got) == sorted(t["thread"] for t in c.oracle["threads"])
    for ot in c.oracle["threads"]:
        what = "frames-%s-%s thread %d" % (mode, opt, ot["thread"])
        t = got[ot["thread"]]
        check_against_oracle(t, ot["frames"], what)
        want = physical(ot["frames"])
        own = [(hexint(f["pc"]), hexint(f["sp"])) for f in t["chain"]][:len(want)]
        assert own == want, (what, t["chain_stop"], [(hex(a), hex(b)) for a, b in own],
                             [(hex(a), hex(b)) for a, b in want])
        assert t["invented"] == [] and t["lost"] == [], (what, t["invented"], t["lost"])


def test_inline_frames_are_one_physical_frame(corpus):
    """The inline group at #0 (inl_c, inl_b, inl_a in crash_inline3) shares frame 0's
    registers: no frame of it has a slot; the real function holding them is `ok` with
    the return address below the whole group."""
    for opt in CORPUS_OPTS:
        if ("inline3", opt) not in corpus:
            continue
        c = corpus[("inline3", opt)]
        frames = c.frames()
        names = [f["function"] for f in frames]
        holder = names.index("crash_inline3")
        assert all(f["type"] == "inline" for f in frames[:holder]), (opt, frames)
        t = verify_all(c)[c.oracle["selected_thread"]]
        for fr in t["frames"][:holder + 1]:
            assert fr["slot"] is None, (opt, fr)
        main = t["frames"][holder + 1]
        assert main["verdict"] == "ok", (opt, main)


def test_strict_passes_on_inline_frames(corpus):
    c = corpus[("inlinemid", "O2")]
    res = gdb_stackproof(["verify-bt --strict"], c.exe, c.core)
    assert_no_crash(res)
    assert res.status == 0, res.describe()
    assert "BOGUS" not in res.stdout, res.describe()


def gdb_call_names(c, frames):
    """{level: the `<name>` gdb's own disassembler (no stackproof) gives the direct call
    ending at that frame's pc}."""
    cmds = []
    for f in frames:
        cmds += ["-ex", "x/i %#x" % (f["pc"] - 5)]
    res = run_gdb(cmds, c.exe, c.core)
    out = {}
    for line in res.stdout.splitlines():
        m = re.match(r"^\s*(?:=> )?0x([0-9a-f]+) <[^>]*>:\s+call\S*\s+0x[0-9a-f]+ <([^>+]+)>", line)
        if m:
            for f in frames:
                if f["pc"] - 5 == int(m.group(1), 16):
                    out[f["level"]] = m.group(2)
    return out


PLT_CASES = [o for o in CORPUS_OPTS if o != "O0"] + ["O0"]


@pytest.mark.parametrize("opt", PLT_CASES)
def test_calls_through_the_plt_are_ok(corpus, opt):
    """main -> lib_twice@plt -> lib_twice -> lib_apply@plt (inside the library: default
    visibility) -> lib_apply: every frame whose call gdb's disassembler names `X@plt`
    and whose inner frame gdb names X is `ok`, the target named X@plt as gdb names it,
    the evidence `X@plt -> X`. Lazy .plt, -z now, and IBT's .plt.sec (distro flags)."""
    c = corpus[("plt", opt)]
    frames = c.frames()
    named = gdb_call_names(c, frames[1:])
    t = verify_all(c)[c.oracle["selected_thread"]]
    checked = 0
    for lvl, name in named.items():
        if not name.endswith("@plt"):
            continue
        inner = frames[lvl - 1]
        fr = t["frames"][lvl]
        assert fr["call"]["target_function"] == name, (opt, fr)
        if inner["function"] == name[:-4] and inner["type"] == "normal":
            assert fr["verdict"] == "ok", (opt, fr)
            assert any(v.startswith("%s -> %s" % (name, name[:-4])) for v in fr["call"]["via"]), (opt, fr)
            checked += 1
    assert checked >= 2, (opt, named, [f["function"] for f in frames])


def test_null_call_is_named_and_ok(corpus):
    """`null_fn(v)` with null_fn NULL: gdb's `#0 0x0 in ?? ()`, #1 call_null. The call
    at #1 (`call *%rax`: rax is frame 0's, nothing ran since the call) resolves to 0 =
    #0's pc (gdb's): both frames `ok`, #0 `null-call`; the own chain takes the caller
    from the word at sp, with trust `layout`."""
    checked = []
    for opt in CORPUS_OPTS:
        if ("nullcall", opt) not in corpus:
            continue
        c = corpus[("nullcall", opt)]
        frames = c.frames()
        assert frames[0]["pc"] == 0 and frames[1]["function"] == "call_null", frames
        checked.append(opt)
        t = verify_all(c)[c.oracle["selected_thread"]]
        f0, f1 = t["frames"][0], t["frames"][1]
        assert (f0["verdict"], f0["reasons"]) == ("ok", ["null-call"]), (opt, f0)
        assert f1["verdict"] == "ok" and "null-call" in f1["reasons"], (opt, f1)
        assert hexint(f1["call"]["target"]) == 0, (opt, f1)
        assert t["chain"][1]["trust"] == "layout", (opt, t["chain"][1])
    assert len(checked) >= 4, checked


def sigframe_words(c):
    """(the interrupted frame's index, the stack addresses of the signal frame's saved
    rip and rsp): the words equal to gdb's pc and sp of the frame after the trampoline."""
    from corepatch import Core
    frames = c.frames()
    i = next(k for k, f in enumerate(frames) if f["type"] == "sigtramp")
    it = frames[i + 1]
    core = Core.load(c.core)
    base = frames[i]["sp"] - 8
    words = {off: core.read_u64(base + off) for off in range(0, 0x200, 8)}
    # struct sigcontext: ... rcx, rsp, rip (rcx may hold the pc too, after a syscall)
    rsp = [base + o for o, v in words.items() if v == it["sp"] and words.get(o + 8) == it["pc"]]
    return i + 1, rsp[0] + 8, rsp[0]


@pytest.mark.parametrize("value,why", [(0, "pc 0"), (0x0000900000000000, "sp non-canonical"),
                                       (1, "sp misaligned")])
def test_damaged_signal_frame_registers_are_bogus(corpus, tmp_core, value, why):
    """The signal frame's saved rip zeroed (no NULL call explains it), or its saved rsp
    made non-canonical or misaligned: the frame after the trampoline is bogus, and says
    which register no code can run at."""
    from corepatch import Core
    c = corpus[("signal", "O2")]
    k, rip_at, rsp_at = sigframe_words(c)
    core = Core.load(c.core)
    if why == "pc 0":
        core.write_u64(rip_at, 0)
    else:
        sp = c.frames()[k]["sp"]
        core.write_u64(rsp_at, value if value != 1 else sp + 1)
    out = tmp_core()
    core.save(out)
    res = gdb_stackproof(["verify-bt --json", "verify-bt"], c.exe, out)
    assert_no_crash(res)
    doc = parse_verify_json(res)
    fr = doc["threads"][0]["frames"][k]
    assert fr["verdict"] == "bogus" and "damaged-registers" in fr["reasons"], fr
    assert "damaged-registers (%s)" % why in res.stdout, res.describe()


@pytest.mark.parametrize("mode", ["inlinemid", "join"])
@pytest.mark.parametrize("damage", ["stale", "zero"])
def test_own_chain_never_follows_a_stale_return_address(corpus, tmp_core, mode, damage):
    """The return address of the first frame (k >= 2) that has one is replaced by the
    return address of the frame outer to it (a real one, of another function) or zeroed.
    gdb's frame k is bogus; stackproof's own chain does not follow the stale address
    (its call leads elsewhere) and rebuilds frame k from its caller's one call that can
    lead to the frame below (trust `scan`): the chain is the intact core's (gdb's oracle).
    -O0 (rbp-based frames) is not rebuilt yet."""
    from corepatch import Core
    for opt in ("O1", "O2", "O3", "Os", "distro"):
        c = corpus[(mode, opt)]
        frames = c.frames()
        k = next(i for i in range(2, len(frames) - 1) if frames[i]["has_slot"] and frames[i]["type"] == "normal")
        core = Core.load(c.core)
        core.write_u64(frames[k]["slot"], frames[k + 1]["pc"] if damage == "stale" else 0)
        out = tmp_core()
        core.save(out)
        res = gdb_stackproof(["verify-bt --json"], c.exe, out)
        assert_no_crash(res)
        t = parse_verify_json(res)["threads"][0]
        got = t["frames"]
        # the frames below the damaged one are not bogus; the damaged one (its sp is frame k's) is
        below = [g for g in got if hexint(g["sp"]) < frames[k]["sp"]]
        at = [g for g in got if hexint(g["sp"]) == frames[k]["sp"]]
        assert all(g["verdict"] != "bogus" for g in below), (opt, below)
        assert at and at[-1]["verdict"] == "bogus", (opt, at)
        want = physical(frames)
        own = [(hexint(f["pc"]), hexint(f["sp"])) for f in t["chain"]][:len(want)]
        assert own == want, (opt, damage, t["chain_stop"])
        rebuilt = next(f for f in t["chain"] if hexint(f["pc"]) == frames[k]["pc"])
        assert rebuilt["trust"] == "scan", (opt, rebuilt)


@pytest.mark.parametrize("mode,opt", CASES, ids=["%s-%s" % c for c in CASES])
def test_corpus_callee_saved_registers_equal_gdbs(corpus, mode, opt):
    """rbx/rbp/r12-r15 of every frame of every thread (`regs-from-stack --all`) equal
    gdb's DWARF unwinding where gdb knows them: none wrong, >= 99% recovered."""
    from test_regs import all_regs_docs, assert_registers_equal_gdbs
    c = corpus[(mode, opt)]
    assert_registers_equal_gdbs((doc, c.frames(num)) for num, doc in all_regs_docs(c))
