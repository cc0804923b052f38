"""Kernel stacks: `regs-from-stack --scan` across the stacks a CPU's chain crosses, and the
frames at the bottom of kernel stacks (idle CPUs, freed init code).

Oracles: crash 8.0.6's `bt -e -a` (exception frames) and `bt -f -a`, drgn 0.3.0's per-CPU
traces (pc, sp, interrupted), all taken on the full dumps (tests/fixtures/kernel/*/).
"""
import json
import re
import subprocess

import pytest

from conftest import REPO, assert_no_crash, gdb_stackproof, hexint, kernel_fixture
from test_kernel import drgn_chains, kaslr

KFIX = REPO / "tests" / "fixtures" / "kernel"
SCENARIOS = ("panic", "irq", "busy", "idle")
# Stack blocks of the oracle's frames: x86-64 task and IRQ stacks are 16 KiB.
BLOCK = 0x4000


def kernel_gdb(scenario, cmds, vmlinux="vmlinux.sym", timeout=90):
    res = gdb_stackproof(["symbol-file -o %#x %s" % (kaslr(scenario), kernel_fixture(vmlinux)),
                          "core-file %s" % kernel_fixture("%s/minicore.elf" % scenario)] + list(cmds),
                         timeout=timeout)
    assert_no_crash(res)
    return res


def json_docs(res, schema):
    key = '{"schema":"%s"' % schema
    return [json.loads(l) for l in res.stdout.splitlines() if l.startswith(key)]


def crash_exception_frames(scenario):
    """[(cpu, address, rip, rsp)] of crash's `bt -e -a` (KERNEL-/USER-MODE EXCEPTION FRAME AT)."""
    out, cpu, cur = [], None, None
    for line in (KFIX / scenario / "expected-crash-8.0.6-bt-e-a.txt").read_text().splitlines():
        m = re.match(r"^PID: .*CPU: (\d+)", line)
        if m:
            cpu = int(m.group(1))
            continue
        m = re.match(r"^\s+(?:KERNEL|USER)-MODE EXCEPTION FRAME AT: ([0-9a-f]+)", line)
        if m:
            cur = [cpu, int(m.group(1), 16), None, None]
            out.append(cur)
            continue
        m = re.match(r"^\s+RIP: ([0-9a-f]+)\s+RSP: ([0-9a-f]+)", line)
        if m and cur is not None and cur[2] is None:
            cur[2], cur[3] = int(m.group(1), 16), int(m.group(2), 16)
    return [tuple(x) for x in out]


def scan_docs(scenario):
    cmds = []
    for t in (1, 2):
        cmds += ["thread %d" % t, "regs-from-stack --scan --json"]
    docs = json_docs(kernel_gdb(scenario, cmds), "stackproof/regs-from-stack/2")
    assert len(docs) == 2
    return {t - 1: d for t, d in zip((1, 2), docs)}  # gdb thread N is CPU N-1


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scan_finds_every_exception_frame_on_the_chains_stacks(scenario):
    """Every pt_regs crash's `bt -e` reports on a stack drgn's chain for that CPU crosses is
    found, with crash's RIP and RSP; it is `stale` when below drgn's live sp on that stack
    (busy CPU 0's number+658 frame), `live` otherwise; and every interrupted frame of drgn's
    chain (after frame 0) is a found live pt_regs with that pc and sp."""
    docs = scan_docs(scenario)
    drgn = drgn_chains(scenario)  # without drgn's repeats of a frame for its inlined functions
    checked = 0
    for cpu, addr, rip, rsp in crash_exception_frames(scenario):
        sps = [sp for _pc, sp, _i in drgn[cpu]]
        same_stack = [sp for sp in sps if sp // BLOCK == addr // BLOCK]
        if not same_stack:
            continue  # a stack the chain does not cross (busy CPU 1 is in user mode)
        found = {hexint(f["address"]): f for f in docs[cpu]["found"] if f["layout"] == "pt_regs"}
        assert addr in found, (scenario, cpu, hex(addr), sorted(map(hex, found)))
        f = found[addr]
        assert hexint(f["registers"]["ip"]) == rip and hexint(f["registers"]["sp"]) == rsp, f
        want = "stale" if addr < min(same_stack) else "live"
        assert f["status"] == want, (scenario, cpu, hex(addr), f["status"], f["status_reason"])
        checked += 1
    for cpu, frames in drgn.items():
        live = {(hexint(f["registers"]["ip"]), hexint(f["registers"]["sp"]))
                for f in docs[cpu]["found"] if f["layout"] == "pt_regs" and f["status"] == "live"}
        for pc, sp, interrupted in frames[1:]:
            if interrupted:
                assert (pc, sp) in live, (scenario, cpu, hex(pc), hex(sp))
                checked += 1
    assert checked >= {"panic": 6, "irq": 6, "busy": 3, "idle": 0}[scenario]


@pytest.mark.parametrize("scenario", ("panic", "irq"))
def test_scan_of_a_cpu_in_an_interrupt_covers_the_irq_and_task_stacks(scenario):
    """CPU 1 is on its IRQ stack: the scan covers that stack (below the top word that
    names the interrupted sp) and the task stack, each with its own live sp; the live sp of
    the task stack is the one the IRQ stack's top saved (NOTES.md: [ffffc900000d0ff8])."""
    doc = scan_docs(scenario)[1]
    ranges = [(hexint(r["range"][0]), hexint(r["range"][1]), hexint(r["live_sp"])) for r in doc["ranges"]]
    saved = {"panic": 0xffffc900004739e0, "irq": 0xffffc9000043ba40}[scenario]
    assert ranges[0][1] == 0xffffc900000d1000 and ranges[0][2] == hexint(doc["live_sp"]), ranges
    assert ranges[1] == (saved & ~(BLOCK - 1), (saved & ~(BLOCK - 1)) + BLOCK, saved), ranges


# ---- idle CPUs: freed init code, the stack bottom -------------------------------------

DWARF_VMLINUX = "crash/vmlinux-6.1.0-53-cloud-amd64.dwz.min"  # every allocated section's bytes
TEXT_VMLINUX = "vmlinux-text-orc"                                # .text and .init.text bytes


def init_text_range():
    """[start, end) of .init.text from the vmlinux's section headers (readelf)."""
    out = subprocess.run(["readelf", "-SW", str(kernel_fixture("vmlinux.sym"))], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"\]\s+\.init\.text\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", out)
    start = int(m.group(1), 16)
    return start, start + int(m.group(2), 16)


def drgn_names(scenario):
    """{cpu: [(pc, sp, function)]}: drgn's frames (without its inline repeats) with their names."""
    text = (KFIX / scenario / "expected-drgn-0.3.0-cpus.txt").read_text()
    names = {(int(pc, 16), int(sp, 16)): n
             for pc, sp, n in re.findall(r"pc=0x([0-9a-f]+) sp=0x([0-9a-f]+) interrupted=\S+ (\S+?)\+", text)}
    return {cpu: [(pc, sp, names[(pc, sp)]) for pc, sp, _i in frames]
            for cpu, frames in drgn_chains(scenario).items()}


def idle_docs(vmlinux, cmd):
    return json_docs(kernel_gdb("idle", [cmd], vmlinux=vmlinux), "stackproof/verify-bt/1")[0]["threads"]


def check_idle_frames(threads, key, code_bytes):
    """Every frame of drgn's chain is there and not bogus; those in freed init text are `ok`
    with the call to the inner frame's function (drgn's) when the vmlinux has the code, else
    `unknown` `code-freed`; the outermost (drgn's last frame) is `ok` `stack-bottom`."""
    lo, hi = init_text_range()
    drgn = drgn_names("idle")
    n_init = 0
    for t in threads:
        cpu = key(t)
        want = drgn[cpu]
        by_key = {(hexint(f["pc"]), hexint(f["sp"])): f for f in t["frames"] if f["pc"] is not None}
        for i, (pc, sp, name) in enumerate(want):
            f = by_key.get((pc, sp))
            if f is None and i == 0:
                continue  # crash prints frame 0 as [exception RIP] without an sp
            assert f is not None, (cpu, name, hex(pc), hex(sp))
            assert f["verdict"] != "bogus", f
            if lo <= pc < hi:
                n_init += 1
                if code_bytes:
                    assert f["verdict"] == "ok" and f["reasons"] == [], f
                    assert f["call"]["target_function"] == want[i - 1][2], (f, want[i - 1])
                else:
                    assert f["verdict"] == "unknown" and f["reasons"] == ["code-freed"], f
            if i == len(want) - 1:
                assert name == "secondary_startup_64", want
                assert f["verdict"] == "ok" and f["reasons"] == ["stack-bottom"], f
    assert n_init == 2  # arch_call_rest_init, start_kernel on CPU 0


CRASH_IDLE = KFIX / "idle" / "expected-crash-8.0.6-bt-f-a.txt"


@pytest.mark.parametrize("vmlinux", ("vmlinux.sym", DWARF_VMLINUX))
def test_idle_cpus_gdb_chain(vmlinux):
    threads = idle_docs(vmlinux, "verify-bt -a --json")
    check_idle_frames(threads, lambda t: t["thread"] - 1, code_bytes=vmlinux != "vmlinux.sym")


@pytest.mark.parametrize("vmlinux", ("vmlinux.sym", TEXT_VMLINUX))
def test_idle_cpus_crash_bt(vmlinux):
    threads = idle_docs(vmlinux, "verify-bt --crash-bt %s --json" % CRASH_IDLE)
    cpus = [int(m) for m in re.findall(r"^PID: .*CPU: (\d+)", CRASH_IDLE.read_text(), re.M)]
    key = dict(zip(map(id, threads), cpus))
    check_idle_frames(threads, lambda t: key[id(t)], code_bytes=vmlinux != "vmlinux.sym")


def test_idle_own_chain_is_drgns_with_the_code():
    """With the code of .init.text (the DWARF vmlinux), stackproof's own chain from each
    idle CPU's registers is drgn's whole chain (pc and sp), down to secondary_startup_64."""
    threads = idle_docs(DWARF_VMLINUX, "verify-bt -a --json")
    drgn = drgn_names("idle")
    for t in threads:
        got = [(hexint(c["pc"]), hexint(c["sp"])) for c in t["chain"]]
        assert got == [w[:2] for w in drgn[t["thread"] - 1]], [(hex(a), hex(b)) for a, b in got]
