"""gdb's own unwinding through recovered register sets: `regs-from-stack --use`
and the `stackproof-unwinder` session mode.

Kernel cases use the mini cores of tests/fixtures/kernel (unpacked with xz into
tests/build/kernel, as src/testdata.rs does); the oracles are drgn's frame list
(pc and sp of every frame) and crash's `bt -e`. The user-space case uses the
harness's shapes-signal core, whose oracle is gdb's own frame after
`<signal handler called>`."""
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import BUILD, REPO, assert_no_crash, gdb_stackproof, kernel_fixture

KERNEL_FIXTURES = REPO / "tests" / "fixtures" / "kernel"
ALIVE = "stackproof-test-alive"
FRAME_SCRIPT = (
    "f = gdb.newest_frame()\n"
    "while f is not None:\n"
    "    sp = int(f.read_register('rsp')) & 0xffffffffffffffff\n"
    "    print('FRAME %d %x %x %s' % (f.level(), f.pc(), sp, f.name()))\n"
    "    try:\n"
    "        f = f.older()\n"
    "    except gdb.error as e:\n"
    "        print('FRAME-ERROR %s' % e)\n"
    "        break\n"
)


def _frame_dump_command():
    """`source FILE` of a script printing every frame's pc and sp as gdb unwinds them."""
    path = BUILD / "unwinder-frames.py"
    if not path.exists() or path.read_text() != FRAME_SCRIPT:
        BUILD.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp%d" % os.getpid())
        tmp.write_text(FRAME_SCRIPT)
        os.replace(tmp, path)
    return "source %s" % path


FRAME_DUMP = _frame_dump_command()


kernel_file = kernel_fixture


def kernel_gdb(scenario, cmds):
    """gdb on a kernel mini core (symbol-file first, then core-file, as NOTES.md says)."""
    sym = kernel_file("vmlinux.sym")
    core = kernel_file("%s/minicore.elf" % scenario)
    kaslr = (KERNEL_FIXTURES / scenario / "kaslr.txt").read_text()
    m = re.search(r"KERNELOFFSET=(?:0x)?([0-9a-fA-F]+)", kaslr)
    off = int(m.group(1), 16) if m else 0
    pre = ["symbol-file -o %#x %s" % (off, sym), "core-file %s" % core]
    res = gdb_stackproof(pre + list(cmds) + ["echo %s\\n" % ALIVE])
    assert_no_crash(res)
    assert ALIVE in res.stdout, res.describe()
    return res


def frames_of(res):
    """Every `FRAME level pc sp name` line printed by FRAME_DUMP, in order, per dump."""
    dumps, cur = [], None
    for line in res.stdout.splitlines():
        m = re.match(r"FRAME (\d+) ([0-9a-f]+) ([0-9a-f]+) (\S+)$", line)
        if m:
            if int(m.group(1)) == 0:
                cur = []
                dumps.append(cur)
            cur.append((int(m.group(2), 16), int(m.group(3), 16), m.group(4)))
    return dumps


BT = "echo ==BT==\\n"


def after(text, marker="==BT=="):
    """The output after the last `echo ==BT==` (thread switches print frame lines too)."""
    return text.rsplit(marker, 1)[1]


def bt_lines(text):
    return [l for l in text.splitlines() if re.match(r"#\d+ ", l) or l.startswith("Backtrace stopped")]


def drgn_frames(scenario, cpu):
    """(pc, sp) of every frame drgn lists for `cpu`, inline duplicates folded."""
    text = (KERNEL_FIXTURES / scenario / "expected-drgn-0.3.0-cpus.txt").read_text()
    block = text.split("== CPU %d:" % cpu, 1)[1].split("\n== ", 1)[0]
    out = []
    for m in re.finditer(r"^\s+#\d+\s+pc=0x([0-9a-f]+) sp=0x([0-9a-f]+)", block, re.M):
        f = (int(m.group(1), 16), int(m.group(2), 16))
        if not out or out[-1] != f:
            out.append(f)
    return out


def crash_exception_frame(scenario, address):
    """{register: value} of crash's `bt -e` exception frame at `address`."""
    text = (KERNEL_FIXTURES / scenario / "expected-crash-8.0.6-bt-e-a.txt").read_text()
    block = text.split("EXCEPTION FRAME AT: %016x" % address, 1)[1].split("\n\n", 1)[0]
    return {k.lower(): int(v, 16) for k, v in re.findall(r"\b([A-Z0-9_]+): ([0-9a-f]{4,16})\b", block)}


def gdb_bt_on_fixture(scenario, thread):
    text = (KERNEL_FIXTURES / scenario / "gdb-bt-on-fixture.txt").read_text()
    block = text.split("Thread %d (" % thread, 1)[1].split("\nThread ", 1)[0]
    return bt_lines(block)


# ---------------------------------------------------------------------------
# kernel: irq (CPU 1 interrupted in memcpy, handler on the IRQ stack)
# ---------------------------------------------------------------------------

IRQ_PT_REGS = 0xffffc9000043ba58
MEMCPY = (0xffffffff819ff685, 0xffffc9000043bb08)


def test_session_mode_follows_drgn_through_the_irq_stack():
    res = kernel_gdb("irq", ["thread 2", "stackproof-unwinder on", FRAME_DUMP, BT, "bt"])
    got = [(pc, sp) for pc, sp, _name in frames_of(res)[0]]
    want = drgn_frames("irq", 1)
    assert got == want, "frames differ from drgn's\nwant %s\nhave %s\n%s" % (
        [(hex(a), hex(b)) for a, b in want], [(hex(a), hex(b)) for a, b in got], res.describe())
    names = [n for _pc, _sp, n in frames_of(res)[0]]
    i = names.index("sysvec_apic_timer_interrupt")
    assert names[i + 1:i + 5] == ["asm_sysvec_apic_timer_interrupt", "memcpy", "vsnprintf", "seq_printf"], names
    assert got[i + 2] == MEMCPY
    # gdb's own bt agrees with the Python frame walk and ends at the user-mode pt_regs.
    lines = bt_lines(after(res.stdout))
    assert "in memcpy ()" in lines[i + 2], lines
    assert re.match(r"#%d +0x000000000047b6fd in \?\? \(\)" % (len(got) - 1), lines[-2]), lines
    assert lines[-1].startswith("Backtrace stopped"), lines


def test_use_pt_regs_makes_frame_1_the_interrupted_memcpy():
    res = kernel_gdb("irq", [
        "thread 2",
        "regs-from-stack --use %#x" % IRQ_PT_REGS,
        FRAME_DUMP,
        "frame 1",
        "info registers rip rsp rbx rbp rax r15 eflags",
    ])
    assert "frame #1 is now the pt_regs at %016x" % IRQ_PT_REGS in res.stdout, res.describe()
    frames = frames_of(res)[0]
    assert frames[0][:2] == (0xffffffff81145110, 0xffffc900000d0ef0), frames  # frame 0 as it was
    assert frames[1][:2] == MEMCPY and frames[1][2] == "memcpy", frames
    # From there gdb's DWARF unwinding goes on as drgn does.
    want = drgn_frames("irq", 1)
    k = want.index(MEMCPY)
    got = [(pc, sp) for pc, sp, _n in frames[1:]]
    assert got[:len(want) - k - 1] == want[k:-1], (got, want[k:])
    crash = crash_exception_frame("irq", IRQ_PT_REGS)
    regs = dict(re.findall(r"^(\w+)\s+(0x[0-9a-f]+)", res.stdout, re.M))
    for gdb_name, crash_name in (("rip", "rip"), ("rsp", "rsp"), ("rbx", "rbx"), ("rbp", "rbp"),
                                 ("rax", "rax"), ("r15", "r15"), ("eflags", "rflags")):
        assert int(regs[gdb_name], 16) == crash[crash_name], (gdb_name, regs, crash, res.describe())


def test_use_off_restores_gdbs_own_bt():
    res = kernel_gdb("irq", [
        "thread 2",
        "regs-from-stack --use %#x" % IRQ_PT_REGS,
        BT,
        "bt",
        "echo ==SPLIT==\\n",
        "regs-from-stack --use off",
        "bt",
        "echo ==SPLIT2==\\n",
        "regs-from-stack --use %#x" % IRQ_PT_REGS,
        "regs-from-stack --no-use",
        "bt",
    ])
    with_set, rest = after(res.stdout).split("==SPLIT==", 1)
    after_off, after_no_use = rest.split("==SPLIT2==", 1)
    assert "in memcpy ()" in bt_lines(with_set)[1], with_set
    plain = gdb_bt_on_fixture("irq", 2)
    assert bt_lines(after_off) == plain, (bt_lines(after_off), plain)
    assert bt_lines(after_no_use) == plain, (bt_lines(after_no_use), plain)


def test_use_is_per_thread():
    res = kernel_gdb("irq", ["thread 2", "regs-from-stack --use %#x" % IRQ_PT_REGS,
                             "thread 1", BT, "bt"])
    plain = gdb_bt_on_fixture("irq", 1)
    assert bt_lines(after(res.stdout)) == plain, res.describe()


def test_session_mode_off_is_gdbs_own_bt():
    res = kernel_gdb("irq", ["stackproof-unwinder on", "stackproof-unwinder off",
                             "stackproof-unwinder", "thread 2", BT, "bt"])
    assert res.stdout.count("stackproof-unwinder is off") == 2, res.describe()
    assert bt_lines(after(res.stdout)) == gdb_bt_on_fixture("irq", 2), res.describe()


# ---------------------------------------------------------------------------
# kernel: panic (CPU 0 in a syscall; CPU 1 in a reboot IPI on the IRQ stack)
# ---------------------------------------------------------------------------

def test_session_mode_stops_at_the_user_mode_pt_regs():
    res = kernel_gdb("panic", ["stackproof-unwinder on", "thread 1", FRAME_DUMP, BT, "bt"])
    frames = frames_of(res)[0]
    names = [n for _pc, _sp, n in frames]
    assert names[-2] == "entry_SYSCALL_64", names
    # One user-space frame (the pt_regs' ip and sp), then gdb stops: no junk frames.
    user_pc, user_sp = frames[-1][:2]
    drgn = drgn_frames("panic", 0)
    assert (user_pc, user_sp) == drgn[-1], (frames[-1], drgn[-1])
    assert [(pc, sp) for pc, sp, _n in frames] == drgn, (frames, drgn)
    lines = bt_lines(after(res.stdout))
    assert len(lines) == len(frames) + 1 and lines[-1].startswith("Backtrace stopped"), lines
    assert "fixed_percpu_data" not in res.stdout, res.describe()
    plain = gdb_bt_on_fixture("panic", 1)
    assert len(plain) > len(lines) + 15, "the fixture's plain bt had the junk frames"


def test_session_mode_panic_cpu1_follows_drgn_through_the_reboot_ipi():
    res = kernel_gdb("panic", ["stackproof-unwinder on", "thread 2", FRAME_DUMP])
    frames = frames_of(res)[0]
    names = [n for _pc, _sp, n in frames]
    i = names.index("asm_sysvec_reboot")
    assert names[i + 1] == "s_next" and frames[i + 1][0] == 0xffffffff81162a1c, names
    got = [(pc, sp) for pc, sp, _n in frames]
    assert got == drgn_frames("panic", 1), (got, drgn_frames("panic", 1))


def test_use_bad_addresses_are_one_line_errors():
    res = kernel_gdb("irq", [
        "thread 2",
        "regs-from-stack --use 0x1234",                  # unreadable
        "regs-from-stack --use $sp",                     # readable, not a pt_regs
        "regs-from-stack --use $sp+8 --layout sigframe",  # not a sigframe either
        "regs-from-stack --use no_such_symbol_at_all",
        "regs-from-stack --use %#x --scan" % IRQ_PT_REGS,
        BT,
        "bt",
    ])
    errors = [l for l in res.stderr.splitlines() if l.strip() and not l.startswith("warning:")]
    assert len(errors) == 5, res.describe()  # one line each
    assert all(l.startswith(("regs-from-stack:", "cannot evaluate")) for l in errors), errors
    # Nothing was installed: gdb's plain bt.
    assert bt_lines(after(res.stdout)) == gdb_bt_on_fixture("irq", 2), res.describe()


# ---------------------------------------------------------------------------
# user space: the shapes program's SIGSEGV handler
# ---------------------------------------------------------------------------

def _json_doc(stdout, schema):
    dec = json.JSONDecoder()
    for m in re.finditer(r"^\{", stdout, re.M):
        try:
            doc, _ = dec.raw_decode(stdout, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("schema") == schema:
            return doc
    raise AssertionError("no %s document in\n%s" % (schema, stdout[-3000:]))


@pytest.mark.parametrize("opt", ["O0", "O2"])
def test_use_sigframe_gives_the_interrupted_frame(artifacts, opt):
    a = artifacts[("shapes-signal", opt)]
    frames = a.frames()
    sig = [i for i, f in enumerate(frames) if f["type"] == "sigtramp"]
    assert sig, frames
    interrupted = frames[sig[0] + 1]
    res = gdb_stackproof(["regs-from-stack --scan --json"], a.exe, a.core)
    assert_no_crash(res)
    doc = _json_doc(res.stdout, "stackproof/regs-from-stack/2")
    sigframes = [f for f in doc["found"] if f["layout"] == "rt_sigframe" and f["status"] == "live"]
    assert len(sigframes) == 1, doc["found"]
    addr = sigframes[0]["address"]
    res = gdb_stackproof(["regs-from-stack --use %s --layout sigframe" % addr, FRAME_DUMP,
                          "frame 1", "info registers rip rsp"], a.exe, a.core)
    assert_no_crash(res)
    got = frames_of(res)[0]
    assert got[0][0] == frames[0]["pc"], (got[0], frames[0])
    assert got[1][:2] == (interrupted["pc"], interrupted["sp"]), (got[1], interrupted)
    assert got[1][2] == interrupted["function"], (got[1], interrupted)
    # gdb unwinds on from the interrupted frame as it does after <signal handler called>.
    rest = [(f["pc"], f["sp"]) for f in frames[sig[0] + 1:]]
    have = [(pc, sp) for pc, sp, _n in got[1:]]
    assert have == rest, (have, rest)
    regs = dict(re.findall(r"^(\w+)\s+(0x[0-9a-f]+)", res.stdout, re.M))
    assert int(regs["rip"], 16) == interrupted["pc"], res.describe()
    assert int(regs["rsp"], 16) == interrupted["sp"], res.describe()


def test_session_mode_leaves_user_space_alone(artifacts):
    a = artifacts[("shapes-signal", "O2")]
    plain = gdb_stackproof([BT, "bt"], a.exe, a.core)
    on = gdb_stackproof(["stackproof-unwinder on", BT, "bt"], a.exe, a.core)
    assert_no_crash(on)
    assert bt_lines(after(on.stdout)) == bt_lines(after(plain.stdout)), (on.describe(), plain.describe())


def test_verify_bt_sees_the_recovered_frames_as_interrupted():
    res = kernel_gdb("irq", ["thread 2", "stackproof-unwinder on", "verify-bt --json"])
    doc = _json_doc(res.stdout, "stackproof/verify-bt/1")
    frames = doc["threads"][0]["frames"]
    assert not doc["threads"][0]["bogus"], frames
    by_pc = {int(f["pc"], 16): f for f in frames if f["pc"]}
    memcpy = by_pc[MEMCPY[0]]
    assert memcpy["kind"] == "interrupted" and memcpy["trust"] == "registers", memcpy
    assert "interrupted-pc" in memcpy["reasons"], memcpy
    asm = by_pc[0xffffffff81c00ec6]  # a real return address, checked as one
    assert asm["kind"] == "normal" and int(asm["slot"], 16) == IRQ_PT_REGS - 8, asm


def test_without_a_target_one_line_errors_and_help():
    res = gdb_stackproof(["help stackproof-unwinder", "stackproof-unwinder", "stackproof-unwinder on",
                          "regs-from-stack --use 0x1000", "regs-from-stack --use off",
                          "stackproof-unwinder off", "stackproof-unwinder sideways",
                          "echo %s\\n" % ALIVE])
    assert_no_crash(res)
    assert ALIVE in res.stdout and res.status == 0, res.describe()
    assert "Undefined command" not in res.output and "on|off" in res.stdout, res.describe()
    errors = [l for l in res.stderr.splitlines() if l.strip() and not l.startswith("warning:")]
    assert len(errors) == 2, res.describe()  # --use 0x1000 without a core, "sideways"
    assert "no register set was in use" in res.stdout, res.describe()


def test_session_mode_busy_with_kaslr_follows_drgn():
    """busy: KASLR offset 0x20000000; CPU 0 in a syscall, CPU 1 in user mode (no stack)."""
    res = kernel_gdb("busy", ["stackproof-unwinder on", "thread 1", FRAME_DUMP,
                              "thread 2", BT, "bt"])
    got = [(pc, sp) for pc, sp, _n in frames_of(res)[0]]
    assert got == drgn_frames("busy", 0), (got, drgn_frames("busy", 0))
    assert bt_lines(after(res.stdout)) == gdb_bt_on_fixture("busy", 2), res.describe()
