"""The Python API outside gdb (docs/api.md): a user core opened with
stackproof.core, no gdb in the process. Checked against gdb's DWARF unwinding of
the same core (the oracle), and against the text `verify-bt` prints in gdb."""
import json
import os
import subprocess
import sys

import pytest

from conftest import OPT_LEVELS, REPO, VARIANTS, gdb_stackproof, hexint, stackproof_prefix

EXAMPLE = REPO / "examples" / "verify_core.py"
CASES = [(v, o) for v in VARIANTS for o in OPT_LEVELS]


def run_example(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(stackproof_prefix() / "lib" / "stackproof" / "python")
    p = subprocess.run([sys.executable, str(EXAMPLE)] + [str(a) for a in args],
                       capture_output=True, text=True, env=env, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def physical(frames):
    return [(f["pc"], f["sp"]) for f in frames if f["type"] not in ("inline", "tailcall")]


@pytest.mark.parametrize("variant,opt", CASES, ids=["%s-%s" % c for c in CASES])
def test_every_thread_equals_gdbs_frames(artifacts, variant, opt):
    a = artifacts[(variant, opt)]
    p = run_example("--json", a.core, a.exe)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["schema"] == "stackproof/verify-bt/1"
    by_num = {t["thread"]: t for t in doc["threads"]}
    assert sorted(by_num) == sorted(t["thread"] for t in a.oracle["threads"])
    for ot in a.oracle["threads"]:
        want = physical(ot["frames"])
        got = [(hexint(f["pc"]), hexint(f["sp"])) for f in by_num[ot["thread"]]["frames"]]
        assert got[:len(want)] == want, (ot["thread"], got, want)
        bogus = [f for f in by_num[ot["thread"]]["frames"][:len(want)] if f["verdict"] == "bogus"]
        assert bogus == [], bogus


def test_text_equals_verify_bt_from_the_same_registers(artifacts):
    """Frame by frame the same lines as gdb's `verify-bt --sp --pc --bp`, thread by thread."""
    a = artifacts[("threads", "O2")]
    p = run_example(a.core, a.exe)
    assert p.returncode == 0, p.stderr
    blocks = {}
    for line in p.stdout.splitlines():
        if line.startswith("Thread "):
            cur = blocks.setdefault(int(line.split()[1]), [])
        else:
            cur.append(line)
    cmds = []
    for num in sorted(blocks):
        cmds += ["thread %d" % num, "echo @@%d\\n" % num, "verify-bt --sp $rsp --pc $pc --bp $rbp"]
    res = gdb_stackproof(cmds, exe=a.exe, core=a.core)
    got, cur = {}, None
    for line in res.stdout.splitlines():
        if line.startswith("@@"):
            cur = got.setdefault(int(line[2:]), [])
        elif cur is not None and (line.startswith(" #") or line.startswith("?#") or line.startswith("  (")):
            cur.append(line)
    assert len(blocks) == len(a.oracle["threads"]) >= 3
    for num, lines in blocks.items():
        assert lines == got[num], num


def test_not_a_core_is_one_line(artifacts, tmp_path):
    a = artifacts[("recursion", "O2")]
    for path in (a.exe, tmp_path / "missing"):
        p = run_example(path)
        assert p.returncode == 2
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("verify_core: "), p.stderr


def kernel_core(builder, tmp_path, program, opt, argv):
    """A core written by the kernel (not gdb): code and read-only data are not in it,
    they are read from the mapped files NT_FILE names."""
    pattern = open("/proc/sys/kernel/core_pattern").read().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip("core_pattern %r does not write a core in the current directory" % pattern)
    import resource
    exe = builder.exe(program, opt)
    run = subprocess.run([str(exe)] + argv, cwd=tmp_path, capture_output=True, timeout=60,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (-1, -1)))
    assert run.returncode < 0, run
    cores = sorted(tmp_path.glob("core*"))
    if not cores:
        pytest.skip("the kernel wrote no core here")
    return exe, cores[0]


@pytest.mark.parametrize("program,argv", [("threads", ["3"]), ("shapes", ["null"])])
def test_kernel_written_core(builder, tmp_path, program, argv):
    exe, core = kernel_core(builder, tmp_path, program, "O2", argv)
    oracle = json.loads(builder.oracle_for(exe, core).read_text())
    p = run_example("--json", core, exe)
    assert p.returncode == 0, p.stderr
    by_num = {t["thread"]: t for t in json.loads(p.stdout)["threads"]}
    for ot in oracle["threads"]:
        want = physical(ot["frames"])
        got = [(hexint(f["pc"]), hexint(f["sp"])) for f in by_num[ot["thread"]]["frames"]]
        assert got[:len(want)] == want, (ot["thread"], got, want)
        assert all(f["verdict"] != "bogus" for f in by_num[ot["thread"]]["frames"][:len(want)])


def test_truncated_core_reads_unreadable_not_zero(builder, tmp_path):
    """A kernel core cut short (its notes come first): the threads still load, the stack
    that is gone is unreadable (`unknown`), never zeros."""
    exe, core = kernel_core(builder, tmp_path, "recursion", "O2", ["6"])
    data = core.read_bytes()
    short = tmp_path / "short.core"
    short.write_bytes(data[: len(data) // 4])
    p = run_example("--json", short, exe)
    assert p.returncode == 0, p.stderr
    t = json.loads(p.stdout)["threads"][0]
    assert t["frames"][0]["verdict"] == "unknown" or t["stop"], t
    assert all(f["slot_value"] is None for f in t["frames"][1:]), t["frames"]


SESSION_SCRIPT = r'''
import json, sys
from stackproof import _core
core_path, exe = sys.argv[1], sys.argv[2]
f = _core.CoreFile(core_path)
f.remap(f.executable, exe)
syms = _core.Symtab()
for recorded, local, bias, debug in f.objects():
    for path in ([debug] if debug else []) + [local]:
        try:
            syms.add_elf(path, bias=bias, module=None)
            break
        except ValueError:
            pass
session = _core.Session(_core.TargetMemory(f.read), syms)
out = []
for pid, _sig, regs in f.threads:
    c = session.check(None, (regs["rip"], regs["rsp"], {n: regs[n] for n in ("rbx", "rbp", "r12", "r13", "r14", "r15")}))
    assert isinstance(c, _core.Check) and c.reads > 0 and c.invented == [] and c.lost == []
    out.append({"chain": [[fr["pc"], fr["sp"]] for fr in c.chain], "verdicts": [fr["verdict"] for fr in c.frames],
                "stop": c.stop})
json.dump(out, sys.stdout)
'''


def test_session_check_is_typed_and_equals_gdbs_frames(artifacts):
    """docs/api.md's lower level: a Session on a CoreFile's memory, `check` from each
    thread's registers; its `Check` has attributes, and `chain` is gdb's physical frames."""
    a = artifacts[("threads", "O2")]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(stackproof_prefix() / "lib" / "stackproof" / "python")
    p = subprocess.run([sys.executable, "-c", SESSION_SCRIPT, str(a.core), str(a.exe)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert len(got) == len(a.oracle["threads"]) >= 3
    for t, ot in zip(got, a.oracle["threads"]):
        want = physical(ot["frames"])
        assert [tuple(x) for x in t["chain"]][:len(want)] == want, (ot["thread"], t, want)
        assert "bogus" not in t["verdicts"][:len(want)], t


ELF_FILES_SCRIPT = r'''
import json, shutil, sys
from stackproof import _core
core_path, exe, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
f = _core.CoreFile(core_path)
f.remap(f.executable, exe)
files = _core.ElfFiles()
out = {"objects": [], "errors": []}
for recorded, local, bias, debug in f.objects():
    alone, shared = _core.Symtab(), _core.Symtab()
    n = alone.add_elf(local, bias=bias)
    # twice through `files`: the second is the kept parse
    out["objects"].append([n, shared.add_elf(local, bias=bias, files=files),
                           _core.Symtab().add_elf(local, bias=bias, files=files),
                           _core.section_address(local, ".text"), files.section_address(local, ".text"),
                           _core.probe_symbol(local), files.probe_symbol(local)])
open(tmp + "/garbage", "w").write("not an ELF file\n")
for call in (lambda: files.section_address(tmp + "/none", ".text"), lambda: files.probe_symbol(tmp + "/garbage"),
             lambda: _core.Symtab().add_elf(core_path + ".missing", files=files)):
    try:
        call()
        out["errors"].append(None)
    except ValueError as e:
        out["errors"].append(str(e))
# a file rebuilt in place is parsed anew
copy = tmp + "/copy"
shutil.copy(exe, copy)
before = files.probe_symbol(copy)
libs = [local for _r, local, _b, _d in f.objects() if local != exe]
shutil.copy(libs[0], copy)
out["rebuilt"] = [before, files.probe_symbol(copy), _core.probe_symbol(libs[0])]
json.dump(out, sys.stdout)
'''


def test_elf_files_answer_as_one_parse_per_call(artifacts, tmp_path):
    """`ElfFiles` (docs/api.md): the same symbols, sections and probes as parsing for each
    call; errors stay one-line ValueErrors; a file rewritten under the same path is read anew."""
    a = artifacts[("threads", "O2")]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(stackproof_prefix() / "lib" / "stackproof" / "python")
    p = subprocess.run([sys.executable, "-c", ELF_FILES_SCRIPT, str(a.core), str(a.exe), str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert len(got["objects"]) >= 2, got
    for n, shared, again, text, text_kept, probe, probe_kept in got["objects"]:
        assert n == shared == again > 0 and text == text_kept and probe == probe_kept, got["objects"]
    assert all(e and "\n" not in e for e in got["errors"]), got["errors"]
    before, after, lib = got["rebuilt"]
    assert before != after and after == lib, got["rebuilt"]
