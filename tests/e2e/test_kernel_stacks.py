"""Kernel stacks: `regs-from-stack --scan` across the stacks a CPU's chain crosses, and the
frames at the bottom of kernel stacks (idle CPUs, freed init code).

Oracles: crash 8.0.6's `bt -e -a` (exception frames) and `bt -f -a`, drgn 0.3.0's per-CPU
traces (pc, sp, interrupted), all taken on the full dumps (tests/fixtures/kernel/*/).
"""
import json
import re

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
    docs = json_docs(kernel_gdb(scenario, cmds), "stackproof/regs-from-stack/1")
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
