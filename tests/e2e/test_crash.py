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


def interrupted(frames):
    """`(pc, sp, window)` of each frame drgn unwound to through a pt_regs past the CPU's
    own registers: the set sits just above the frame before it (the entry code's), so
    `window` (lo, hi) is around that frame's sp."""
    phys = [f for f in frames if not f["inline"]]
    return [(h(f["pc"]), h(f["sp"]), ((h(inner["sp"]) - 0x100) & ~7, h(inner["sp"]) + 0x200))
            for inner, f in zip(phys, phys[1:]) if f["interrupted"]]


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
        for cpu in self.drgn["cpus"]:
            n = cpu["cpu"]
            cmds += ["set -c %d" % n, "regs-from-stack --scan --json", "regs-from-stack --all --json",
                     "regs-from-stack --annotate --json > %s/annotate-cpu%d.json" % (d, n)]
            # A window around each pt_regs drgn unwound through (it may be on another
            # stack than the CPU's sp): --from/--to, hexadecimal.
            for k, (_pc, _sp, (lo, hi)) in enumerate(interrupted(cpu["frames"])):
                cmds.append("regs-from-stack --annotate --json --from %x --to %x > %s/annotate-cpu%d-irq%d.json"
                            % (lo, hi, d, n, k))
            if n == 0:
                cmds += ["regs-from-stack --annotate > %s/annotate-cpu0.txt" % d,
                         "regs-from-stack --annotate --max-words 5",
                         "vtop %x" % physical(cpu["frames"])[0][1]]
        for task in self.sleeping_tasks():
            cmds.append("regs-from-stack --annotate --json --task %x > %s/annotate-task-%x.json"
                        % (h(task["task"]), d, h(task["task"])))
        cmds += ["regs-from-stack --frame 1", "regs-from-stack --frame 99999", "regs-from-stack --all --scan"]
        cmds += ["regs-from-stack --annotate --from 10 --to 5", "regs-from-stack --annotate --from zz --to 5",
                 "regs-from-stack --annotate --from ffffffffffff0000 --to ffffffffffffffff",
                 "regs-from-stack --annotate --max-words 0", "regs-from-stack --annotate --from 1000"]
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
        return [d for d in self.regs_docs() if d["found"] is not None and d["words"] is None]

    def sleeping_tasks(self, most=8):
        """Up to `most` of drgn's tasks not running on a CPU, spread over its list."""
        running = {h(c["task"]) for c in self.drgn["cpus"]}
        tasks = [t for t in self.drgn["tasks"] if h(t["task"]) not in running]
        return tasks[::max(1, len(tasks) // most)][:most]

    def annotate_doc(self, name):
        """A --annotate --json document crash wrote to a file, validated against the schema."""
        path = self.dir / name
        assert path.is_file(), "%s was not written\n%s" % (path, describe(self.proc))
        text = path.read_text()
        assert validate_documents(text) == 1, text[:2000]
        doc = json.loads(text)
        assert doc["schema"] == "stackproof/regs-from-stack/2" and doc["words"], text[:2000]
        return doc

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


# ---- regs-from-stack --annotate --------------------------------------------------------
RA_LABEL = re.compile(r"^ra #(\d+) ")
PT_REGS_IP, PT_REGS_SP = 16 * 8, 19 * 8


_symbols = {}


def vmlinux_symbols():
    """{name: address} of the vmlinux's ELF symbol table (`nm`)."""
    if not _symbols:
        out = subprocess.run(["nm", str(kernel_fixture(VMLINUX))], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3:
                _symbols.setdefault(parts[2], int(parts[0], 16))
    return _symbols


def kaslr(scenario):
    return h(json.loads((FIXTURES / scenario / "tasks.json").read_text())["kernel_offset"])


def assert_return_addresses_are_drgns(doc, frames, what, bias):
    """The words labelled `ra #N` are exactly the return-address slots (sp - 8) of
    drgn's physical frames N >= 1 the range shows, each holding that frame's pc and
    named by drgn's symbol+offset (`bias`: the kernel's KASLR offset). Returns how
    many there were."""
    phys = [f for f in frames if not f["inline"]]
    want = {h(f["sp"]) - 8: (k, f) for k, f in enumerate(phys) if k > 0 and not f["interrupted"]}
    words = doc["words"]
    lo, hi = h(words[0]["address"]), h(words[-1]["address"]) + (words[-1]["unreadable_bytes"] or 8)
    by_addr = {h(w["address"]): w for w in words}
    shown = 0
    for slot, (k, f) in sorted(want.items()):
        if not lo <= slot < hi:
            continue
        shown += 1
        w = by_addr.get(slot)
        assert w is not None and w["value"] is not None, "%s: drgn's frame #%d slot %#x not shown" % (what, k, slot)
        assert h(w["value"]) == h(f["pc"]), (what, k, w, f)
        ra = [l for l in w["labels"] if RA_LABEL.match(l)]
        assert len(ra) == 1 and int(RA_LABEL.match(ra[0]).group(1)) == k, (what, k, w)
        # Named as drgn names it, or by an alias (an assembly label inside drgn's
        # symbol): the vmlinux's symbol table puts the name + offset at the pc.
        name = f["symbol"] + ("+%#x" % f["offset"] if f["offset"] else "")
        m = re.match(r"^ra #\d+ ([\w.]+)(?:\+(0x[0-9a-f]+))?$", ra[0])
        assert m, ra
        if ra[0] != "ra #%d %s" % (k, name):
            at = vmlinux_symbols().get(m.group(1), -1) + bias + int(m.group(2) or "0", 16)
            assert at == h(f["pc"]), (what, k, name, w)
    for w in words:
        for label in w["labels"]:
            m = RA_LABEL.match(label)
            if m:
                assert want.get(h(w["address"]), (None,))[0] == int(m.group(1)), (
                    "%s: %s at %s is no frame of drgn's" % (what, label, w["address"]))
    return shown


def test_annotate_return_addresses_are_drgns_frames(session):
    """`regs-from-stack --annotate` on every CPU (the stack holding its sp) and on sleeping
    tasks (`--task`, their whole stack from the switch frame): the `ra #N` words are drgn's
    frames N, numbered as drgn numbers its physical frames, with drgn's names."""
    shown, bias = 0, kaslr(session.scenario)
    for cpu in session.drgn["cpus"]:
        doc = session.annotate_doc("annotate-cpu%d.json" % cpu["cpu"])
        assert h(doc["live_sp"]) == physical(cpu["frames"])[0][1]
        shown += assert_return_addresses_are_drgns(doc, cpu["frames"], "CPU %d" % cpu["cpu"], bias)
    tasks = session.sleeping_tasks()
    assert tasks
    for task in tasks:
        doc = session.annotate_doc("annotate-task-%x.json" % h(task["task"]))
        what = "pid %d %s" % (task["pid"], task["comm"])
        n = assert_return_addresses_are_drgns(doc, task["frames"], what, bias)
        # The whole chain is on the task's stack: every caller's slot is shown.
        callers = [f for f in task["frames"] if not f["inline"]][1:]
        assert n == len([f for f in callers if not f["interrupted"]]) > 0, (what, n)
        shown += n
    assert shown >= 10, shown


def test_annotate_labels_the_pt_regs_scan_finds(session):
    """Around each pt_regs drgn unwound through (`--from/--to` about the sp of the frame
    below the interrupted one), --annotate finds it at
    the address `--scan` found it, with drgn's interrupted pc and sp in its
    `pt_regs.ip` / `pt_regs.sp` words; every set found has its 21 slots labelled."""
    scans = session.scan_docs()
    checked = 0
    for cpu, scan in zip(session.drgn["cpus"], scans):
        scanned = {(h(f["registers"]["ip"]), h(f["registers"]["sp"])): h(f["address"]) for f in scan["found"]
                   if f["layout"] == "pt_regs"}
        for k, (pc, sp, _window) in enumerate(interrupted(cpu["frames"])):
            doc = session.annotate_doc("annotate-cpu%d-irq%d.json" % (cpu["cpu"], k))
            at = scanned[(pc, sp)]
            words = {h(w["address"]): w for w in doc["words"]}
            assert at in {h(f["address"]) for f in doc["found"]}, (cpu["cpu"], hex(at), doc["found"])
            assert "pt_regs.ip" in words[at + PT_REGS_IP]["labels"] and h(words[at + PT_REGS_IP]["value"]) == pc
            assert "pt_regs.sp" in words[at + PT_REGS_SP]["labels"] and h(words[at + PT_REGS_SP]["value"]) == sp
            checked += 1
        # The CPU's own stack: each set found there has its slots labelled.
        doc = session.annotate_doc("annotate-cpu%d.json" % cpu["cpu"])
        words = {h(w["address"]): w["labels"] for w in doc["words"]}
        for f in doc["found"]:
            a = h(f["address"])
            slots = [words.get(a + 8 * i, []) for i in range(21)]
            if a in words and a + 20 * 8 in words:
                assert all(any(l.startswith("pt_regs.") for l in s) for s in slots), (cpu["cpu"], f["address"])
    if session.scenario in ("panic", "irq"):
        assert checked >= 1, "the %s dump has an interrupted kernel frame" % session.scenario


def test_annotate_text_is_the_json_words(session):
    """The text of --annotate (CPU 0) is its JSON's words, one line each; --max-words cuts
    in one line; bad ranges are one line each."""
    doc = session.annotate_doc("annotate-cpu0.json")
    text = (session.dir / "annotate-cpu0.txt").read_text().splitlines()
    assert text[0].startswith("Scanned ") and "(live sp %016x)" % h(doc["live_sp"]) in text[0], text[:3]
    rows = text[text.index("") + 1:]
    assert len(rows) == len(doc["words"])
    for line, w in zip(rows, doc["words"]):
        if w["value"] is None and w["unreadable_bytes"] > 8:
            assert line == "%016x: ... %#x bytes unreadable ..." % (h(w["address"]), w["unreadable_bytes"])
        else:
            value = "%016x" % h(w["value"]) if w["value"] is not None else "<unreadable>   "
            assert line == "%016x: %s  %s" % (h(w["address"]), value, " ".join("[%s]" % l for l in w["labels"]))
    out = session.out
    assert re.search(r"^\.\.\. stopped at [0-9a-f]{16} after 5 words \(--max-words N shows more\)$", out, re.M), (
        describe(session.proc))
    assert "regs-from-stack: empty range 0x10..0x5\n" in out
    assert "regs-from-stack: --from zz: not a hexadecimal address\n" in out
    assert re.search(r"^ffffffffffff0000: \.\.\. 0xfff8 bytes unreadable \.\.\.$", out, re.M), describe(session.proc)
    assert "regs-from-stack: --max-words 0: not a number from 1 to 1073741824\n" in out
    assert "regs-from-stack: --from and --to go together\n" in out
    assert_healthy(session.proc)


def test_gdb_and_crash_annotate_the_same_range():
    """gdb on the ELF vmcore (physical memory only: the direct map, no vmalloc'd stacks)
    and crash on the same file, CPU 0, the page of its stack holding its sp read through
    the direct map (crash's `vtop` gives the physical address): the same text, byte for
    byte, from the `Scanned` line on (the same live sp, register set, canary, return
    addresses)."""
    from conftest import gdb_stackproof
    s = _sessions.get(("panic", "elf")) or Session("panic", "elf")
    _sessions[("panic", "elf")] = s
    sp = physical(s.drgn["cpus"][0]["frames"])[0][1]
    m = re.search(r"^%x\s+([0-9a-f]+)\s*$" % sp, s.out, re.M)
    assert m, "no vtop of %#x\n%s" % (sp, describe(s.proc))
    tasks = json.loads((FIXTURES / "panic" / "tasks.json").read_text())
    lo = h(tasks["page_offset_base"]) + (int(m.group(1), 16) & ~0xFFF)
    cmd = "regs-from-stack --annotate --from %x --to %x" % (lo, lo + 0x1000)
    p = run_crash(s.dump, ["set -c 0", cmd])
    assert_healthy(p)
    res = gdb_stackproof(["regs-from-stack --annotate --from %#x --to %#x" % (lo, lo + 0x1000)],
                         exe=kernel_fixture(VMLINUX), core=s.dump, timeout=300)
    def block(out, who):
        """From the `Scanned` line to the range's last word."""
        lines = out.splitlines()
        first = [i for i, l in enumerate(lines) if l.startswith("Scanned %016x..%016x " % (lo, lo + 0x1000))]
        last = [i for i, l in enumerate(lines) if l.startswith("%016x: " % (lo + 0xFF8))]
        assert len(first) == 1 and len(last) == 1, "%s\n%s" % (who, out[-6000:])
        return lines[first[0]:last[0] + 1]
    crash_text, gdb_text = block(p.stdout, "crash"), block(res.stdout, "gdb")
    assert len(gdb_text) >= 512 + 2, res.describe()
    assert crash_text == gdb_text
    assert any("[canary]" in l for l in gdb_text) and any("[stale ra " in l for l in gdb_text), gdb_text
