"""stackproof inside crash: `extend stackproof.so` on real kdump vmcores.

A real crash (Debian's 8.0.2, /usr/bin/crash) in batch mode loads the extension as
./install.sh installs it under $STACKPROOF_PREFIX, on the panic, irq and busy dumps
(tests/fixtures/kernel/crash, real Debian 6.1 guests) in both formats. Oracles:
drgn's traces of the full dumps (expected/drgn.json: every CPU and every task, ORC
unwinder with full DWARF) and crash's own `bt` output (8.0.2 live, 8.0.6p from
expected/). Nothing here knows an address, a function name or a task of the dumps:
everything is taken from those oracles.
"""
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD, kernel_fixture, schema_validator, stackproof_prefix, validate_documents

CRASH = os.environ.get("CRASH", "crash")
CRASH_TIMEOUT = float(os.environ.get("STACKPROOF_CRASH_TIMEOUT", "300"))
SCENARIOS = ("panic", "irq", "busy")
FORMATS = ("kdump", "elf")
VMLINUX = "crash/vmlinux-6.1.0-53-cloud-amd64.dwz.min"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kernel" / "crash"
FORBIDDEN = ("panicked at", "RUST_BACKTRACE", "internal error", "Segmentation fault", "core dumped")


def extension():
    so = stackproof_prefix() / "lib" / "stackproof" / "crash" / "stackproof.so"
    if not so.is_file():
        pytest.fail("the crash extension is not installed: %s is missing (./install.sh builds it "
                    "when /usr/include/crash/defs.h exists; ./install.sh --deps-only installs crash)" % so)
    return so


def run_crash(dump, commands, so=None, timeout=CRASH_TIMEOUT):
    """crash -s VMLINUX DUMP -i CMDS < /dev/null, `extend SO` first and `quit` last."""
    if shutil.which(CRASH) is None:
        pytest.fail("crash is not installed (./install.sh --deps-only installs it)")
    work = BUILD / "crash-sessions"
    work.mkdir(parents=True, exist_ok=True)
    cmds = work / ("cmds-%d-%d" % (os.getpid(), time.monotonic_ns()))
    cmds.write_text("extend %s\n%s\nquit\n" % (so or extension(), "\n".join(commands)))
    argv = [CRASH, "-s", str(kernel_fixture(VMLINUX)), str(dump), "-i", str(cmds)]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                       timeout=timeout, env=dict(os.environ, LC_ALL="C"))
    # the same JSON Schemas as in gdb (docs/*.schema.json)
    validate_documents(p.stdout)
    return p


def describe(p):
    return "[status %s]\n--- stdout ---\n%s\n--- stderr ---\n%s" % (p.returncode, p.stdout[-8000:], p.stderr[-4000:])


def assert_healthy(p):
    for bad in FORBIDDEN:
        assert bad not in p.stdout + p.stderr, "%r in crash's output\n%s" % (bad, describe(p))
    assert p.returncode >= 0, "crash killed by signal %d\n%s" % (-p.returncode, describe(p))


def h(v):
    return None if v is None else int(v, 16)


def drgn(scenario):
    return json.loads((FIXTURES / scenario / "expected" / "drgn.json").read_text())


def physical(frames):
    """drgn's frames with a stack frame of their own, as (pc, sp)."""
    return [(h(f["pc"]), h(f["sp"])) for f in frames if not f["inline"]]


def own_chain(thread):
    """stackproof's own chain of a verify-bt thread, as (pc, sp)."""
    chain = thread["chain"] if thread["chain"] is not None else thread["frames"]
    return [(h(f["pc"]), h(f["sp"])) for f in chain if f["pc"] is not None]


class Session:
    """One crash process per dump running every command the tests look at."""

    def __init__(self, scenario, fmt):
        self.scenario, self.fmt = scenario, fmt
        self.dir = BUILD / "crash-out" / ("%s-%s" % (scenario, fmt))
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.dump = kernel_fixture("crash/%s/vmcore-mini.%s" % (scenario, fmt))
        self.drgn = drgn(scenario)
        ncpu = len(self.drgn["cpus"])
        d = self.dir
        newer = FIXTURES / scenario / "expected" / ("crash-8.0.6p-%s-bt-a.txt" % fmt)
        cmds = [
            "verify-bt -a --output %s/cpus.json" % d,
            "verify-bt --all-tasks --output %s/tasks.json" % d,
            "verify-bt -a --crash-bt %s --output %s/crash806.json" % (newer, d),
            "verify-bt 4000000",
            "verify-bt --frobnicate",
            "verify-bt -c 99",
            "verify-bt --crash-bt /nonexistent/bt.txt",
            "help verify-bt",
            "help regs-from-stack",
            "regs-from-stack fffffffffff00000",
        ]
        for cpu in range(ncpu):
            cmds += ["set -c %d" % cpu, "regs-from-stack --scan --json", "regs-from-stack --all --json"]
        cmds += ["regs-from-stack --frame 1", "regs-from-stack --frame 99999", "regs-from-stack --all --scan"]
        cmds += ["verify-bt -a --exit-status"]
        self.proc = run_crash(self.dump, cmds)
        self.out = self.proc.stdout

    def doc(self, name):
        path = self.dir / name
        assert path.is_file(), "%s was not written\n%s" % (path, describe(self.proc))
        doc = json.loads(path.read_text())
        assert doc["schema"] == "stackproof/verify-bt/1"
        schema_validator(doc["schema"]).validate(doc)
        return doc

    def regs_docs(self):
        docs = []
        dec = json.JSONDecoder()
        for m in re.finditer(r'^\{"schema":"stackproof/regs-from-stack/2"', self.out, re.M):
            docs.append(dec.raw_decode(self.out, m.start())[0])
        return docs

    def scan_docs(self):
        return [d for d in self.regs_docs() if d["found"] is not None]

    def frame_docs(self):
        return [d for d in self.regs_docs() if d["frames"] is not None]


_sessions = {}


@pytest.fixture(params=[(s, f) for s in SCENARIOS for f in FORMATS], ids=lambda p: "%s-%s" % p)
def session(request):
    key = request.param
    if key not in _sessions:
        _sessions[key] = Session(*key)
    return _sessions[key]


def by_task(doc):
    return {h(t["task"]["task"]): t for t in doc["threads"]}


def test_loads_and_stays_healthy(session):
    p = session.proc
    assert_healthy(p)
    assert "stackproof.so: shared object loaded" in p.stdout, describe(p)
    # Each bad request is one line and the session goes on.
    assert "verify-bt: no task with PID 4000000" in p.stdout, describe(p)
    assert "verify-bt: unknown argument --frobnicate (see `help verify-bt`)" in p.stdout, describe(p)
    assert "verify-bt: -c 99: not a CPU list of this dump" in p.stdout, describe(p)
    assert "verify-bt: cannot read /nonexistent/bt.txt" in p.stdout, describe(p)
    # crash's help data: the manual of each command.
    assert "verify-bt - check which frames of a backtrace are real" in p.stdout, describe(p)
    assert "regs-from-stack - find and decode register sets" in p.stdout, describe(p)


def test_cpus_drgn_frames_not_bogus_and_own_chain_equals_drgn(session):
    doc = session.doc("cpus.json")
    threads = by_task(doc)
    for cpu in session.drgn["cpus"]:
        t = threads.get(h(cpu["task"]))
        assert t is not None, "no verify-bt thread for CPU %d's task %s" % (cpu["cpu"], cpu["task"])
        assert t["task"]["cpu"] == cpu["cpu"]
        live = set(physical(cpu["frames"]))
        for f in t["frames"]:
            if f["pc"] is not None and (h(f["pc"]), h(f["sp"])) in live:
                assert f["verdict"] != "bogus", "drgn's live frame %s is bogus on CPU %d" % (f, cpu["cpu"])
        assert own_chain(t) == physical(cpu["frames"]), "CPU %d: own chain differs from drgn's" % cpu["cpu"]


def invented_by_crash(thread, drgn_frames):
    """crash's frames that are not in drgn's chain (by pc and sp): what crash invents."""
    live = set(physical(drgn_frames))
    return [f for f in thread["frames"] if f["pc"] is not None and f["sp"] is not None
            and (h(f["pc"]), h(f["sp"])) not in live]


@pytest.mark.parametrize("which", ["cpus.json", "crash806.json"])
def test_frames_crash_invents_are_flagged(session, which):
    """crash 8.0.2 (run by verify-bt) and 8.0.6p (its output from the full dump): every frame
    of crash's bt of a CPU that drgn's chain does not have is bogus, and none of drgn's is."""
    doc = session.doc(which)
    threads = by_task(doc)
    checked = 0
    for cpu in session.drgn["cpus"]:
        t = threads[h(cpu["task"])]
        if t["source"] != "crash-bt":
            continue  # crash's bt failed (8.0.2 on a non-panic CPU): said in one line
        checked += 1
        for f in invented_by_crash(t, cpu["frames"]):
            assert f["verdict"] == "bogus", "frame crash invented not flagged: %s" % f
            assert f["level"] in t["bogus"]
        live = set(physical(cpu["frames"]))
        for f in t["frames"]:
            if f["pc"] is not None and (h(f["pc"]), h(f["sp"])) in live:
                assert f["verdict"] != "bogus", f
    if which == "crash806.json":
        assert checked == len(session.drgn["cpus"]), "every CPU has a crash 8.0.6p bt"
    if which == "cpus.json" and session.scenario == "panic":
        assert checked >= 1, "crash 8.0.2's bt of the panic task runs"


def test_crash_bt_failures_are_one_line(session):
    doc = session.doc("cpus.json")
    failed = [t for t in doc["threads"] if t["source"] != "crash-bt"]
    lines = [l for l in session.out.splitlines() if l.startswith("verify-bt: crash's bt failed: ")]
    assert len(lines) >= len(failed), describe(session.proc)


def test_all_tasks_equal_drgn(session):
    doc = session.doc("tasks.json")
    threads = by_task(doc)
    tasks = session.drgn["tasks"]
    # Every task drgn traced (running, sleeping, idle) is there, each with drgn's chain.
    for task in tasks:
        t = threads.get(h(task["task"]))
        assert t is not None, "task %s (pid %s) missing from --all-tasks" % (task["task"], task["pid"])
        assert t["task"]["pid"] == task["pid"] and t["task"]["command"] == task["comm"]
        assert own_chain(t) == physical(task["frames"]), "pid %d %s: own chain differs from drgn's" % (
            task["pid"], task["comm"])
        assert not t["bogus"], "pid %d: bogus frames %s in stackproof's own chain" % (task["pid"], t["bogus"])
    # One line per task and the total.
    rows = [l for l in session.out.splitlines() if re.match(r"\s*\d+\s+[0-9a-f]{16}\s", l)]
    assert len(rows) == len(doc["threads"]) >= len(tasks)
    assert re.search(r"^%d tasks, \d+ frames: 0 bogus, 0 lost; 0 tasks with a bogus or lost frame$"
                     % len(doc["threads"]), session.out, re.M), describe(session.proc)


def test_scan_finds_every_pt_regs_drgn_crosses(session):
    docs = session.scan_docs()
    assert len(docs) == len(session.drgn["cpus"]), describe(session.proc)
    for cpu, doc in zip(session.drgn["cpus"], docs):
        found = {(h(f["registers"]["ip"]), h(f["registers"]["sp"])): f for f in doc["found"]
                 if f["layout"] == "pt_regs"}
        frames = cpu["frames"]
        # Interrupted frames past the CPU's own registers (its first physical frame) come from a pt_regs.
        first = next(i for i, f in enumerate(frames) if not f["inline"])
        for f in frames[first + 1:]:
            if f["interrupted"] and not f["inline"]:
                key = (h(f["pc"]), h(f["sp"]))
                assert key in found, "CPU %d: no pt_regs with ip/sp %#x/%#x found" % ((cpu["cpu"],) + key)
                assert found[key]["status"] == "live"


def test_exit_status(session):
    """`verify-bt -a --exit-status` last: status 3 when a frame is bogus, else crash quits with 0."""
    bogus = sum(len(t["bogus"]) for t in session.doc("cpus.json")["threads"])
    assert session.proc.returncode == (3 if bogus else 0), describe(session.proc)
    if bogus:
        assert "verify-bt: %d bogus frame" % bogus in session.out


def test_version_mismatch_refused(tmp_path):
    """A module built for another crash says so in one line and registers nothing."""
    so = extension().read_bytes()
    version = subprocess.run([CRASH, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    v = re.search(r"^crash (\S+)", version.stdout, re.M).group(1).encode()
    marker = v + b"\0"
    assert so.count(marker) >= 1
    i = so.index(marker)
    other = b"0.0.0"[: len(v)].ljust(len(v), b"0")
    patched = tmp_path / "stackproof.so"
    patched.write_bytes(so[:i] + other + so[i + len(v):])
    p = run_crash(kernel_fixture("crash/panic/vmcore-mini.kdump"), ["verify-bt", "sys"], so=patched)
    assert_healthy(p)
    assert ("stackproof.so: built for crash %s, this is crash %s: not loaded" % (other.decode(), v.decode())
            in p.stdout), describe(p)
    assert "PANIC:" in p.stdout or "DUMPFILE:" in p.stdout, "the session went on\n" + describe(p)


def test_truncated_dump(tmp_path):
    """A dump cut short: crash 8.0.2 itself says so (`may be truncated`) and stops loading
    or goes on; whichever it does, the extension adds no crash and the commands give lines."""
    full = kernel_fixture("crash/panic/vmcore-mini.elf").read_bytes()
    cut = tmp_path / "vmcore-cut.elf"
    cut.write_bytes(full[: len(full) * 9 // 10])
    p = run_crash(cut, ["verify-bt -a", "verify-bt --all-tasks", "regs-from-stack --scan", "sys"])
    assert_healthy(p)
    assert "may be truncated or incomplete" in p.stdout + p.stderr, describe(p)


def test_unreadable_address_is_one_line(session):
    lines = [l for l in session.out.splitlines() if l.startswith("regs-from-stack: 0xfffffffffff00000")]
    assert len(lines) == 1 and "cannot read" in lines[0], describe(session.proc)


def test_gdb_on_an_elf_vmcore_points_to_crash():
    """gdb reads an ELF vmcore's physical memory only: the task stacks (vmalloc) are not there.
    verify-bt says so in one line and names the installed crash extension."""
    from conftest import gdb_stackproof
    so = extension()
    res = gdb_stackproof(["verify-bt"], exe=kernel_fixture(VMLINUX), core=kernel_fixture("crash/panic/vmcore-mini.elf"),
                         timeout=300)
    lines = [l for l in res.stdout.splitlines() if l.startswith("verify-bt: the kernel stack at ")]
    assert len(lines) == 1, res.describe()
    assert "is not in this core" in lines[0] and "extend %s" % so in lines[0], lines[0]


CALLEE_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")


def test_all_frames_callee_saved_registers_equal_drgns(session):
    """`regs-from-stack --all` on each CPU: every callee-saved register stackproof gives
    a frame of drgn's chain equals drgn's value for it (drgn: ORC and DWARF CFI)."""
    docs = session.frame_docs()
    assert len(docs) == len(session.drgn["cpus"]), describe(session.proc)
    compared = wrong = known = 0
    misses = []
    for cpu, doc in zip(session.drgn["cpus"], docs):
        theirs = {(h(f["pc"]), h(f["sp"])): f["regs"] for f in cpu["frames"] if not f["inline"]}
        for f in doc["frames"]:
            regs = theirs.get((h(f["pc"]), h(f["sp"])))
            if regs is None:
                continue
            for name in CALLEE_SAVED:
                if name not in regs:
                    continue
                compared += 1
                mine = f["registers"][name]["value"]
                if mine is None:
                    continue
                known += 1
                if h(mine) != h(regs[name]):
                    wrong += 1
                    misses.append((cpu["cpu"], f["level"], name, mine, regs[name], f["registers"][name]["origin"]))
    assert compared > 0
    assert wrong == 0, misses
    assert known >= 0.9 * compared, (known, compared)


def test_frame_and_all_in_text(session):
    out = session.out
    assert re.search(r"^#1  pc [0-9a-f]{16}  sp [0-9a-f]{16}  \S+", out, re.M), describe(session.proc)
    assert re.search(r"^    (rbx|rbp|r1[2-5]) (= 0x[0-9a-f]+ |unknown)", out, re.M), describe(session.proc)
    assert re.search(r"^regs-from-stack: no frame #99999: stackproof's chain has \d+", out, re.M), describe(session.proc)
    assert "regs-from-stack: give one of ADDR, --scan, --annotate, --frame N, --all" in out
