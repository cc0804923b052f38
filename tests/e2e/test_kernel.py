"""verify-bt on kernel dumps: the QEMU mini cores of tests/fixtures/kernel and the seed 000 replay.

Every expected verdict comes from an oracle that is not stackproof: drgn 0.3.0's
and crash 8.0.6's output on the full dumps (committed next to the cores), gdb's
own backtrace on the mini cores, and the hand analysis of seed 000
(tests/fixtures/seed000/README.md).
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import (BUILD, REPO, kernel_fixture, assert_no_crash, check_schema, gdb_stackproof, hexint,
                      parse_verify_json)

KFIX = REPO / "tests" / "fixtures" / "kernel"
KBUILD = BUILD / "kernel"
SEED = REPO / "tests" / "fixtures" / "seed000"
SCENARIOS = ("panic", "irq", "busy", "idle")


# ---- fixtures -------------------------------------------------------------------

unpack = kernel_fixture


def kaslr(scenario):
    text = (KFIX / scenario / "kaslr.txt").read_text()
    return int(re.search(r"KERNELOFFSET=([0-9a-fA-F]+)", text).group(1), 16)


def kernel_gdb(scenario, cmds, timeout=60):
    vmlinux = unpack("vmlinux.sym")
    core = unpack("%s/minicore.elf" % scenario)
    res = gdb_stackproof(["symbol-file -o %#x %s" % (kaslr(scenario), vmlinux), "core-file %s" % core]
                         + list(cmds), timeout=timeout)
    assert_no_crash(res)
    return res


def kernel_json(scenario, cmd):
    res = kernel_gdb(scenario, [cmd])
    doc = parse_verify_json(res)
    check_schema(doc)
    return doc


# ---- oracles --------------------------------------------------------------------

def drgn_cpus(scenario):
    """{cpu: {(pc, sp)}}: the frames drgn unwound for each CPU's task (the live chains)."""
    out = {}
    cpu = None
    for line in (KFIX / scenario / "expected-drgn-0.3.0-cpus.txt").read_text().splitlines():
        m = re.match(r"^== CPU (\d+):", line)
        if m:
            cpu = int(m.group(1))
            out[cpu] = set()
            continue
        m = re.match(r"^\s+#\d+\s+pc=0x([0-9a-f]+) sp=0x([0-9a-f]+)", line)
        if m and cpu is not None:
            out[cpu].add((int(m.group(1), 16), int(m.group(2), 16)))
    return out


def drgn_task_functions(scenario):
    """{task address: [function, ...]} from drgn's all-tasks listing (innermost first)."""
    out = {}
    cur = None
    for line in (KFIX / scenario / "expected-drgn-0.3.0-tasks.txt").read_text().splitlines():
        m = re.match(r"^== PID \d+ \S+ task 0x([0-9a-f]+)", line)
        if m:
            cur = out.setdefault(int(m.group(1), 16), [])
            continue
        # A function, or the user-mode pc of a syscall's pt_regs (`#12 0x4bfde3`).
        m = re.match(r"^#\d+\s+([A-Za-z_][\w.]*|0x[0-9a-f]+$)", line)
        if m and cur is not None:
            cur.append(m.group(1))
    return out


def crash_cpus(path):
    """The CPU of each task block of a crash `bt -a` text, in order."""
    return [int(m.group(1)) for m in re.finditer(r"^PID: .*CPU: (\d+)", path.read_text(), re.M)]


def gdb_bt_on_fixture(scenario, thread):
    """pcs of gdb's own `bt` of `thread` on the mini core (gdb-bt-on-fixture.txt)."""
    pcs = []
    inside = False
    for line in (KFIX / scenario / "gdb-bt-on-fixture.txt").read_text().splitlines():
        m = re.match(r"^Thread (\d+) ", line)
        if m:
            inside = int(m.group(1)) == thread
            continue
        m = re.match(r"^#(\d+)\s+0x([0-9a-f]+) in ", line)
        if m and inside:
            pcs.append(int(m.group(2), 16))
    return pcs


def frame_key(fr):
    return hexint(fr["pc"]), hexint(fr["sp"])


# ---- verify-bt -a (gdb's unwinding) ---------------------------------------------

# thread -> number of gdb's frames that are drgn's live chain (then gdb's junk, if any).
GDB_LIVE = {
    "panic": {1: 10, 2: 3},
    "irq": {1: 5, 2: 7},
    "busy": {1: 11, 2: 1},
    "idle": {1: 9, 2: 7},
}
# gdb's junk frames (not in drgn's chain): panic reads the user pt_regs after
# entry_SYSCALL_64 as 21 frames; irq and busy end with `0x0 in ??` (pt_regs r15).
GDB_JUNK = {
    "panic": {1: 21, 2: 0},
    "irq": {1: 1, 2: 0},
    "busy": {1: 1, 2: 0},
    "idle": {1: 1, 2: 1},
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_all_threads_live_frames_not_bogus(scenario):
    doc = kernel_json(scenario, "verify-bt -a --json")
    drgn = drgn_cpus(scenario)
    assert [t["thread"] for t in doc["threads"]] == [1, 2]
    for t in doc["threads"]:
        live = drgn[t["thread"] - 1]  # thread N is CPU N-1 (QEMU's NT_PRSTATUS pids)
        frames = t["frames"]
        n_live = GDB_LIVE[scenario][t["thread"]]
        n_junk = GDB_JUNK[scenario][t["thread"]]
        assert len(frames) == n_live + n_junk, (t["thread"], [f["pc"] for f in frames])
        for fr in frames[:n_live]:
            assert frame_key(fr) in live, ("not in drgn's chain", t["thread"], fr)
            assert fr["verdict"] != "bogus", (t["thread"], fr)
        for fr in frames[n_live:]:
            assert frame_key(fr) not in live, (t["thread"], fr)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_all_threads_gdb_junk_frames_flagged(scenario):
    """gdb's frames past the end of the live chain are each bogus: no code there. (gdb names
    the small values 1, 2, 0x2b after `fixed_percpu_data`, a per-CPU data symbol at 0 in
    vmlinux's `.data..percpu`: a data section, so no function.)"""
    doc = kernel_json(scenario, "verify-bt -a --json")
    for t in doc["threads"]:
        junk = t["frames"][GDB_LIVE[scenario][t["thread"]]:]
        for fr in junk:
            assert fr["verdict"] == "bogus" and fr["reasons"] == ["ra-not-in-text"], fr
            assert fr["function"] is None, fr


def test_panic_thread1_junk_is_gdbs():
    """The 21 junk frames are exactly gdb's #10-#30 on this core (its user pt_regs words)."""
    doc = kernel_json("panic", "verify-bt -a --json")
    t1 = doc["threads"][0]
    gdb_pcs = gdb_bt_on_fixture("panic", 1)
    assert len(gdb_pcs) == 31
    assert [hexint(f["pc"]) for f in t1["frames"]] == gdb_pcs
    assert t1["frames"][9]["function"] == "entry_SYSCALL_64_after_hwframe"
    assert t1["bogus"] == list(range(10, 31))
    assert t1["stop"] is not None


# ---- the independent chain (stackproof's own unwinding) against drgn --------------

def drgn_chains(scenario):
    """{cpu: [(pc, sp, interrupted)]}: drgn's frames in order, without the repeats it
    prints for inlined functions (same pc and sp)."""
    out = {}
    cpu = None
    for line in (KFIX / scenario / "expected-drgn-0.3.0-cpus.txt").read_text().splitlines():
        m = re.match(r"^== CPU (\d+):", line)
        if m:
            cpu = int(m.group(1))
            out[cpu] = []
            continue
        m = re.match(r"^\s+#\d+\s+pc=0x([0-9a-f]+) sp=0x([0-9a-f]+) interrupted=(True|False)", line)
        if m and cpu is not None:
            fr = (int(m.group(1), 16), int(m.group(2), 16), m.group(3) == "True")
            if not out[cpu] or out[cpu][-1][:2] != fr[:2]:
                out[cpu].append(fr)
    return out


# Where the mini core ends the chain before drgn (which read the full dump):
# busy CPU 1 is in user mode and its user stack (sp 7ffdd7d33a80) is not in the
# mini core (NOTES.md), so only frame 0 (the registers) is there; drgn's #1
# (pc f000ff53f000e2c3, sp 0x10) came from that user stack.
# idle CPUs end at the bottom of their stacks (drgn's secondary_startup_64); on CPU 0
# vmlinux.sym has no bytes for the freed init code of start_kernel (README), so the
# own chain ends at arch_call_rest_init, the last frame whose code it could read.
CHAIN_CUT = {("busy", 1): (1, "no caller found"), ("idle", 0): (7, "no caller found"),
             ("idle", 1): (7, "no caller found")}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_independent_chain_is_drgns(scenario):
    """Each thread's `chain` (stackproof's unwinding from the thread's registers) is drgn's
    frame list, pc and sp, across the pt_regs crossings (interrupted frames) and the IRQ
    stack's return to the task stack, down to the user-mode frame of the syscall."""
    doc = kernel_json(scenario, "verify-bt -a --json")
    drgn = drgn_chains(scenario)
    for t in doc["threads"]:
        cpu = t["thread"] - 1
        want = drgn[cpu]
        got = [(hexint(c["pc"]), hexint(c["sp"])) for c in t["chain"]]
        cut = CHAIN_CUT.get((scenario, cpu))
        if cut is not None:
            n, stop = cut
            want = want[:n]
            assert t["chain_stop"].startswith(stop), t["chain_stop"]
        else:
            # The last frame is the user-mode one the syscall entry's pt_regs names.
            assert want[-1][0] < 1 << 47 and want[-1][2], want[-1]
            assert t["chain_stop"].startswith("user-mode pt_regs at "), t["chain_stop"]
        assert got == [w[:2] for w in want], (scenario, cpu, [(hex(a), hex(b)) for a, b in got])
        # Frames after the first: drgn's interrupted ones are stackproof's pt_regs frames.
        kinds = [c["kind"] == "interrupted" for c in t["chain"][1:]]
        assert kinds == [w[2] for w in want[1:]], (scenario, cpu, kinds)


# ---- verify-bt --crash-bt (crash's bt -f -a) -------------------------------------

# crash frames that are not in drgn's live chain: (scenario, cpu, level, pc) -> the reasons.
CRASH_STALE = {
    # stop_this_cpu left a return address at ...0fb8, below the live sp ...0fc0 of
    # stop_this_cpu+99 (drgn: native_halt inlined there): crash starts from that slot.
    ("panic", 1, 0, 0xffffffff8103cfc5): ["below-sp"],
    # CPU 1's registers are user mode (cs 0x33, NOTES.md): none of crash's kernel frames is live.
    ("busy", 1, 0, 0xffffffffa103dfdc): ["cpu-in-user-mode"],
    ("busy", 1, 1, 0xffffffffa1137222): ["cpu-in-user-mode"],
    ("busy", 1, 2, 0xffffffffa19ff11c): ["cpu-in-user-mode"],
    ("busy", 1, 3, 0xffffffffa1c00ec6): ["cpu-in-user-mode"],
}


def crash_doc(scenario):
    path = KFIX / scenario / "expected-crash-8.0.6-bt-f-a.txt"
    doc = kernel_json(scenario, "verify-bt --crash-bt %s --json" % path)
    cpus = crash_cpus(path)
    assert len(cpus) == len(doc["threads"])
    return doc, cpus


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_crash_bt_frames_in_drgn_not_bogus(scenario):
    doc, cpus = crash_doc(scenario)
    drgn = drgn_cpus(scenario)
    stale = set()
    for t, cpu in zip(doc["threads"], cpus):
        assert t["source"] == "crash-bt"
        for fr in t["frames"]:
            if frame_key(fr) in drgn[cpu]:
                assert fr["verdict"] != "bogus", (cpu, fr)
            else:
                stale.add((scenario, cpu, fr["level"], hexint(fr["pc"])))
    # Every crash frame drgn does not have is one the table below knows about.
    assert stale == {k for k in CRASH_STALE if k[0] == scenario}


@pytest.mark.parametrize("key", list(CRASH_STALE), ids=["%s-cpu%d-#%d" % k[:3] for k in CRASH_STALE])
def test_crash_bt_stale_frame_flagged(key):
    scenario, cpu, level, pc = key
    doc, cpus = crash_doc(scenario)
    [fr] = [f for t, c in zip(doc["threads"], cpus) if c == cpu for f in t["frames"]
            if f["level"] == level and hexint(f["pc"]) == pc]
    assert fr["verdict"] == "bogus" and fr["reasons"] == CRASH_STALE[key], fr


def test_crash_bt_below_sp_names_the_live_sp():
    """panic CPU 1 (gdb thread 2, LWP 2): the stale slot ...0fb8 holds stop_this_cpu's return
    address; the live sp from the registers is ffffc900000d0fc0 (NOTES.md)."""
    doc, cpus = crash_doc("panic")
    fr = doc["threads"][cpus.index(1)]["frames"][0]
    assert hexint(fr["slot"]) == 0xffffc900000d0fb8 and hexint(fr["slot_value"]) == 0xffffffff8103cfc5
    res = kernel_gdb("panic", ["verify-bt --crash-bt %s" % (KFIX / "panic" / "expected-crash-8.0.6-bt-f-a.txt")])
    assert "below-sp 0xffffc900000d0fc0" in res.stdout, res.describe()


def test_crash_bt_slot_inside_a_live_frame(tmp_path):
    """A crash-style text with a slot inside panic's live frame: drgn has panic at sp
    ffffc90000013b88 and sysrq_handle_crash at sp ...3c08 (so panic's return address slot is
    ...3c00); ...3ba8 holds _printk+0x68 (a return address of an earlier call, x/gx on the
    core). CPU 0 is gdb's thread 1: the own chain from its registers shows the slot is
    inside panic's frame; the frames around it are drgn's and stay checked as a chain."""
    text = tmp_path / "inside.txt"
    text.write_text('PID: 1        TASK: ffff888003e0c800  CPU: 0    COMMAND: "init"\n'
                    " #0 [ffffc90000013b80] panic at ffffffff819c5141\n"
                    " #1 [ffffc90000013ba8] _printk at ffffffff819cac0f\n"
                    " #2 [ffffc90000013c00] sysrq_handle_crash at ffffffff816a4c76\n")
    doc = kernel_json("panic", "verify-bt --crash-bt %s --json" % text)
    f0, f1, f2 = doc["threads"][0]["frames"]
    assert f1["verdict"] == "bogus" and f1["reasons"] == ["inside-frame-of"], f1
    drgn = drgn_cpus("panic")[0]
    for fr in (f0, f2):
        assert frame_key(fr) in drgn and fr["verdict"] == "ok", fr
    assert f2["call"]["target_function"] == "panic", f2


# ---- --task: a sleeping task's saved context --------------------------------------

def manifest_tasks(scenario):
    m = json.loads((KFIX / scenario / "manifest.json").read_text())
    cpu_tasks = {int(t["task"], 16) for t in m["tasks"][:2]}
    sleeping = [(t["pid"], t["comm"], int(t["task"], 16)) for t in m["tasks"][2:]
                if int(t["task"], 16) not in cpu_tasks]
    return cpu_tasks, sleeping


TASK_CASES = [(s, pid, comm, task) for s in ("panic", "irq") for pid, comm, task in manifest_tasks(s)[1]]


def _strip(name):
    return name.split(".")[0]


@pytest.mark.parametrize("scenario,pid,comm,task", TASK_CASES,
                         ids=["%s-%s-%d" % (c[0], c[2], c[1]) for c in TASK_CASES])
def test_task_chain_matches_drgn(scenario, pid, comm, task):
    """From thread.sp: frame 0 is the return into __schedule after `call __switch_to_asm`,
    and the next frames are drgn's (drgn lists inlined functions too: a subsequence)."""
    doc = kernel_json(scenario, "verify-bt --task %#x --max-frames 6 --json" % task)
    [t] = doc["threads"]
    frames = t["frames"]
    f0 = frames[0]
    assert f0["function"] == "__schedule", f0
    assert f0["verdict"] == "ok" and f0["call"]["target_function"] == "__switch_to_asm", f0
    want = drgn_task_functions(scenario)[task]
    assert want[:2] == ["context_switch", "__schedule"], want
    # The leading frames, as long as they follow drgn, are not bogus; at least __schedule, schedule and one more.
    i = 0
    matched = 0
    for fr in frames:
        name = _strip(fr["function"] or "")
        while i < len(want) and _strip(want[i]) != name:
            i += 1
        if i == len(want):
            break
        assert fr["verdict"] != "bogus", fr
        matched += 1
        i += 1
    assert matched >= 3, ([f["function"] for f in frames], want)


@pytest.mark.parametrize("scenario", ("panic", "irq"))
def test_task_running_on_cpu_is_refused(scenario):
    cpu_tasks, _ = manifest_tasks(scenario)
    for task in sorted(cpu_tasks):
        res = kernel_gdb(scenario, ["verify-bt --task %#x" % task])
        lines = [l for l in res.output.splitlines() if "verify-bt:" in l]
        assert len(lines) == 1 and "running on a CPU" in lines[0] and "thread" in lines[0], res.describe()


def test_task_pid_and_bad_address_one_line():
    res = kernel_gdb("panic", ["verify-bt --task 106", "verify-bt --task 0xffff888000000000",
                               "regs-from-stack --task 0xffff8880046fe000 --scan --json"])
    assert "verify-bt: --task 106: a PID needs the kernel's debug info" in res.output, res.describe()
    assert "verify-bt: --task 0xffff888000000000: task_struct not readable" in res.output, res.describe()
    doc = json.loads(res.stdout[res.stdout.index('{"schema":"stackproof/regs-from-stack/2"'):])
    assert doc["range"] == ["0xffffc90000440000", "0xffffc90000444000"]  # nc 106's stack (manifest)


def test_task_sp_override():
    """--sp gives thread.sp: the nc task's (panic, pid 106) is at task+0x14d8 = ffffc90000443b30."""
    res = kernel_gdb("panic", ["verify-bt --task 0xffff8880046fe000 --sp 0xffffc90000443b30 --max-frames 2 --json"])
    doc = parse_verify_json(res)
    f0 = doc["threads"][0]["frames"][0]
    assert hexint(f0["slot"]) == 0xffffc90000443b60 and hexint(f0["sp"]) == 0xffffc90000443b68, f0


# ---- bad input ----------------------------------------------------------------------

def test_crash_text_that_does_not_parse(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(" #0 [ffffc90000013b80] panic at ffffffff819c5141\n"
                   " #1 [ffffc9000001zzzz] sysrq_handle_crash at ffffffff816a4c76\n")
    res = kernel_gdb("panic", ["verify-bt --crash-bt %s" % bad])
    lines = [l for l in res.output.splitlines() if l.startswith("verify-bt:")]
    assert len(lines) == 1 and "line 2" in lines[0], res.describe()


def test_crash_frame_on_missing_page_is_unknown(tmp_path):
    text = tmp_path / "missing.txt"
    # ffffc90000500000: no task stack of the mini core is there.
    text.write_text(" #0 [ffffc90000500000] vfs_read at ffffffff8134a405\n")
    res = kernel_gdb("panic", ["verify-bt --crash-bt %s --json" % text])
    doc = parse_verify_json(res)
    [fr] = doc["threads"][0]["frames"]
    assert fr["verdict"] == "unknown" and fr["reasons"] == ["unreadable"], fr
    assert fr["slot_value"] is None


# ---- seed 000: kernel modules loaded with add-symbol-file ---------------------------

def seed_gdb(cmds):
    res = gdb_stackproof(["symbol-file %s" % (SEED / "vmlinux-seed000"),
                          "add-symbol-file %s -s .text 0xffffffffc0970000" % (SEED / "kvm.ko"),
                          "add-symbol-file %s -s .text 0xffffffffc0a40000" % (SEED / "kvm-intel.ko"),
                          "core-file %s" % (SEED / "core")] + list(cmds))
    assert_no_crash(res)
    return res


def test_seed000_crash_bt():
    res = seed_gdb(["verify-bt --crash-bt %s -v --json" % (SEED / "crash-bt.txt")])
    doc = parse_verify_json(res)
    check_schema(doc)
    [t] = doc["threads"]
    f0, f1 = t["frames"][0], t["frames"][1]
    # #0: the analyst's x/1xg: the slot holds 0.
    assert f0["verdict"] == "bogus" and "slot-mismatch" in f0["reasons"], f0
    assert hexint(f0["slot"]) == 0xffff88003e5ebce8 and hexint(f0["slot_value"]) == 0, f0
    # #1: `callq *0x348(%rbx)` (ff 93 48 03 00 00, 6 bytes) ends at the return address.
    assert hexint(f1["pc"]) == 0xffffffffc09a9833 and f1["verdict"] != "bogus", f1
    assert hexint(f1["slot_value"]) == 0xffffffffc09a9833, f1
    call = f1["call"]
    assert call["kind"] == "memory" and "*0x348(%rbx)" in call["text"], call
    assert hexint(call["address"]) == 0xffffffffc09a982d and hexint(call["address"]) + 6 == hexint(f1["pc"])
    # The kvm frames are named from kvm.ko (gdb's fallback would give no module).
    names = [(f["function"], f["module"]) for f in t["frames"][1:5]]
    assert names == [("kvm_mmu_load", "kvm"), ("vcpu_enter_guest", "kvm"),
                     ("kvm_arch_vcpu_ioctl_run", "kvm"), ("kvm_vcpu_ioctl", "kvm")], names
    assert [f["module"] for f in t["frames"][5:]] == [None, None, None]


def test_crash_frame_without_address_is_unknown(tmp_path):
    """crash prints `#3 kvm_arch_vcpu_ioctl_run` (no slot, no address) when it cannot
    place a frame: nothing to check; its name, odd characters included, is kept."""
    lines = (SEED / "crash-bt.txt").read_text().splitlines()
    odd = 'kvm_arch_vcpu_ioctl_run_\u00e9"x'
    out = [" #3 %s" % odd if l.startswith(" #3 [") else l for l in lines]
    assert out != lines
    text = tmp_path / "unplaced.txt"
    text.write_text("\n".join(out) + "\n", encoding="utf-8")
    doc = parse_verify_json(seed_gdb(["verify-bt --crash-bt %s --json" % text]))
    check_schema(doc)
    frames = doc["threads"][0]["frames"]
    assert [f["level"] for f in frames] == list(range(8)), frames  # in crash's order
    fr = frames[3]
    assert fr == {"level": 3, "pc": None, "sp": None, "slot": None, "slot_value": None, "function": odd,
                  "module": None, "kind": "normal", "verdict": "unknown", "reasons": ["no-address"],
                  "trust": "scan", "expected_slot": None, "call": None}, fr
    assert [f["pc"] is None for f in frames] == [False] * 3 + [True] + [False] * 4
    res = seed_gdb(["verify-bt --crash-bt %s" % text])
    [line] = [l for l in res.stdout.splitlines() if l.startswith(" #3 ")]
    assert line.split() == ["#3", ascii_escaped(odd), "scan", "unknown", "no-address"], line
    chain = [l for l in res.stdout.splitlines() if l.startswith("Corrected chain")]
    assert chain and "[kvm] <- %s <- kvm_vcpu_ioctl+" % ascii_escaped(odd) in chain[0], chain


def ascii_escaped(s):
    """gdb's output goes through an ASCII codec: stackproof escapes the rest."""
    return s.encode("ascii", "backslashreplace").decode("ascii")


def test_seed000_module_names_in_text():
    res = seed_gdb(["verify-bt --crash-bt %s" % (SEED / "crash-bt.txt")])
    assert "kvm_mmu_load+0x293 [kvm] at ffffffffc09a9833" in res.stdout, res.describe()


def test_et_rel_module_symbols_from_elf():
    """ET_REL modules at non-zero section addresses: names, starts and the crash-style module
    name from the ELF (kvm-intel.ko -> kvm_intel); vmx_set_cr3 is at .text+0x3c50 (seed README)."""
    res = seed_gdb(["python from stackproof.gdbext import target; "
                    "print('LOOKUP', target.symtab().lookup(0xffffffffc0a43c50 + 4)); "
                    "print('LOOKUP', target.symtab().lookup(0xffffffffc09a9832))"])
    lines = [l for l in res.stdout.splitlines() if l.startswith("LOOKUP")]
    assert lines[0].startswith("LOOKUP ('vmx_set_cr3', %d," % 0xffffffffc0a43c50), lines
    assert lines[0].endswith("'kvm_intel')"), lines
    assert lines[1].startswith("LOOKUP ('kvm_mmu_load', %d," % 0xffffffffc09a95a0), lines
    assert lines[1].endswith("'kvm')"), lines


def test_kaslr_vmlinux_bias_from_maint_sections():
    """busy is loaded with `symbol-file -o 0x20000000`: .text is placed at ffffffffa1000000
    (NOTES.md), so format_decode+683 is drgn's frame 0 pc ffffffffa19b1cfb."""
    res = kernel_gdb("busy", ["python from stackproof.gdbext import target; "
                              "print('SECS', hex(target._sections_by_objfile()[%r]['.text'])); "
                              "s = target.symtab().lookup(0xffffffffa19b1cfb); "
                              "print('LOOKUP', s[0], hex(0xffffffffa19b1cfb - s[1]), s[3])"
                              % str(KBUILD / "vmlinux.sym")])
    assert "SECS 0xffffffffa1000000" in res.stdout, res.describe()
    assert "LOOKUP format_decode 0x2ab None" in res.stdout, res.describe()


def _same_function(ours, drgn):
    ours, drgn = _strip(ours or ""), _strip(drgn)
    # drgn names the entry code by the symbol, crash and stackproof by the nearest label.
    return ours == drgn or (drgn == "entry_SYSCALL_64" and ours.startswith("entry_SYSCALL_64"))


def task_chain_unflagged(scenario, task):
    """Frames of `verify-bt --task` that are neither drgn's (in order) nor bogus (a frame
    without a function is drgn's when its pc is: the user-mode frame of the syscall)."""
    doc = kernel_json(scenario, "verify-bt --task %#x --json" % task)
    want = drgn_task_functions(scenario)[task]
    i = 0
    wrong = []
    for fr in doc["threads"][0]["frames"]:
        name = fr["function"] or "%#x" % hexint(fr["pc"])
        j = next((k for k in range(i, len(want)) if _same_function(name, want[k])), None)
        if j is not None:
            i = j + 1
            assert fr["verdict"] != "bogus", fr
        elif fr["verdict"] != "bogus":
            wrong.append((fr["level"], fr["function"], fr["verdict"], fr["reasons"]))
    return wrong


STALE_IN_TASK_CHAIN = (
    "stackproof's scan unwinder takes stale return addresses whose call could lead to the frame "
    "below (indirect calls, unreadable targets), e.g. do_fault -> __handle_mm_fault -> handle_mm_fault "
    "-> do_user_addr_fault left above do_syscall_64 by an old page fault; verify-bt calls them "
    "ok/probable: the slots lie inside the frame of the function below, which only the frame-layout "
    "check (inside-frame-of) or a layout unwinder can show")
# Sleeping tasks whose chain from thread.sp holds no stale frame today.
TASK_CHAINS_CLEAN = {("irq", 96)}


def _task_chain_params():
    return [pytest.param(s, task, id="%s-%s-%d" % (s, comm, pid)) for s, pid, comm, task in TASK_CASES]


@pytest.mark.parametrize("scenario,task", _task_chain_params())
def test_task_chain_every_frame_drgns_or_bogus(scenario, task):
    """The whole chain from thread.sp: each frame is drgn's (in order) or flagged bogus."""
    assert task_chain_unflagged(scenario, task) == []


def test_task_whose_stack_is_not_in_the_dump():
    """busy: sh pid 110's stack ffffcfd900438000 is not in the mini core (NOTES.md)."""
    res = kernel_gdb("busy", ["verify-bt --task 0xffff8ede42a10000"])
    lines = [l for l in res.output.splitlines() if l.startswith("verify-bt:")]
    assert lines == ["verify-bt: --task 0xffff8ede42a10000: its stack 0xffffcfd900438000..0xffffcfd90043c000 "
                     "is not in the dump"], res.describe()
