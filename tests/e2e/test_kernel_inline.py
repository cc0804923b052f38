"""Kernel mini cores loaded with the reduced-DWARF vmlinux (tests/fixtures/kernel/crash):
gdb then shows inlined functions (native_halt in stop_this_cpu, instr_sysvec_reboot
in sysvec_reboot, do_syscall_x64 in do_syscall_64, ...) as INLINE frames sharing
the pc and sp of the function holding them. The oracle is drgn's chain of each CPU
(expected-drgn-0.3.0-cpus.txt, which lists inlined functions too)."""
import pytest

from conftest import check_schema, hexint, kernel_fixture, parse_verify_json, gdb_stackproof, assert_no_crash
from test_kernel import SCENARIOS, drgn_cpus, kaslr, unpack

# gdb reads the 147 MB of DWARF in ~3 s of CPU (10-16 s wall on the shared machine).
TIMEOUT = 240


def dwarf_json(scenario):
    vmlinux = kernel_fixture("crash/vmlinux-6.1.0-53-cloud-amd64.dwz.min")
    core = unpack("%s/minicore.elf" % scenario)
    res = gdb_stackproof(["symbol-file -o %#x %s" % (kaslr(scenario), vmlinux), "core-file %s" % core,
                          "verify-bt -a --json"], timeout=TIMEOUT)
    assert_no_crash(res)
    doc = parse_verify_json(res)
    check_schema(doc)
    return doc


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_inline_frames_of_a_dwarf_vmlinux_are_not_bogus(scenario):
    doc = dwarf_json(scenario)
    drgn = drgn_cpus(scenario)
    inline = 0
    for t in doc["threads"]:
        live = drgn[t["thread"] - 1]
        frames = t["frames"]
        for i, fr in enumerate(frames):
            key = (hexint(fr["pc"]), hexint(fr["sp"]))
            if key not in live:
                continue
            assert fr["verdict"] != "bogus", (scenario, t["thread"], fr)
            if fr["kind"] == "inline":
                inline += 1
                assert fr["slot"] is None and "inline-frame" in fr["reasons"], fr
                # the frame holding the group: same pc and sp, one slot at most, not bogus
                holder = next(h for h in frames[i:] if h["kind"] != "inline")
                assert (hexint(holder["pc"]), hexint(holder["sp"])) == key, (fr, holder)
                assert holder["verdict"] != "bogus", holder
        # stackproof's own chain has each physical frame once
        own = [(hexint(c["pc"]), hexint(c["sp"])) for c in t["chain"]]
        assert len(own) == len(set(own)), own
    # The idle CPUs sit in default_idle, where gdb shows no inlined function.
    if scenario != "idle":
        assert inline > 0, "the DWARF vmlinux gives gdb inline frames on %s" % scenario
