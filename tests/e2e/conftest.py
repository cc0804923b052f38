"""End-to-end harness for stackproof.

Session fixtures compile tests/programs/*.c at several -O levels, run each
program under gdb to its crash and write a core with gdb's own
`generate-core-file` (no core_pattern involved), and extract an independent
oracle with gdb's DWARF unwinding (oracle_gdb.py, no stackproof).  Everything
is cached under tests/build (or $STACKPROOF_BUILD), keyed by a hash of the
source, the flags and the compiler, so a second run compiles nothing.

`gdb_stackproof(cmds, exe, core)` runs
    gdb -batch -nx -ex 'source $STACKPROOF_PREFIX/lib/stackproof/stackproof-gdbinit.py' ...
with a timeout and returns a GdbResult(stdout, stderr, status, elapsed).
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROGRAMS = REPO / "tests" / "programs"
BUILD = Path(os.environ.get("STACKPROOF_BUILD", REPO / "tests" / "build")).resolve()
ORACLE_SCRIPT = HERE / "oracle_gdb.py"
GDB = os.environ.get("GDB", "gdb")
GDB_TIMEOUT = float(os.environ.get("STACKPROOF_GDB_TIMEOUT", "60"))

# -O levels every program is built at (all with -g).
OPT_LEVELS = {
    "O0": ["-O0"],
    "O2": ["-O2"],
    "O2fp": ["-O2", "-fno-omit-frame-pointer"],
    "O3": ["-O3"],
}

# name -> (program, argv, gdb commands run before `run`)
VARIANTS = {
    "recursion": ("recursion", ["6"], []),
    "shapes-null": ("shapes", ["null"], []),
    "shapes-abort": ("shapes", ["abort"], []),
    "shapes-signal": ("shapes", ["signal"], ["handle SIGSEGV nostop noprint pass"]),
    "threads": ("threads", ["3"], []),
    "signals-altstack": ("signals", ["altstack"], ["handle SIGSEGV nostop noprint pass"]),
    "signals-nested": ("signals", ["nested"], ["handle SIGUSR1 nostop noprint pass",
                                              "handle SIGUSR2 nostop noprint pass"]),
    "signals-siginfo": ("signals", ["siginfo"], ["handle SIGSEGV nostop noprint pass"]),
}

# The signal each variant must stop with (checked when the core is written).
EXPECTED_SIGNAL = {
    "recursion": "SIGSEGV",
    "shapes-null": "SIGSEGV",
    "shapes-abort": "SIGABRT",
    "shapes-signal": "SIGABRT",
    "threads": "SIGSEGV",
    "signals-altstack": "SIGABRT",
    "signals-nested": "SIGSEGV",
    "signals-siginfo": "SIGABRT",
}

QUIET_GDB = ["-ex", "set debuginfod enabled off", "-ex", "set pagination off",
             "-ex", "set confirm off"]


KERNEL_FIXTURES = REPO / "tests" / "fixtures" / "kernel"


def kernel_fixture(rel):
    """tests/fixtures/kernel/<rel>, unpacked from <rel>.xz into tests/build/kernel once
    (as src/testdata.rs does for the Rust tests). Skips when xz is missing."""
    plain = KERNEL_FIXTURES / rel
    if plain.exists():
        return plain
    src, dst = KERNEL_FIXTURES / (rel + ".xz"), BUILD / "kernel" / rel
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    if shutil.which("xz") is None:
        pytest.skip("xz is not installed: cannot unpack the kernel fixtures")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp%d" % os.getpid())
    with open(tmp, "wb") as out:
        subprocess.run(["xz", "-dc", str(src)], stdout=out, check=True)
    os.replace(tmp, dst)
    return dst


def _env(extra=None):
    env = dict(os.environ)
    env.update(extra or {})
    env.pop("DEBUGINFOD_URLS", None)
    env["LC_ALL"] = "C"
    return env


@dataclass
class GdbResult:
    argv: list
    stdout: str
    stderr: str
    status: int
    elapsed: float

    @property
    def output(self):
        return self.stdout + self.stderr

    def describe(self):
        return ("$ %s\n[status %s, %.2fs]\n--- stdout ---\n%s\n--- stderr ---\n%s"
                % (" ".join(self.argv), self.status, self.elapsed,
                   self.stdout[-6000:], self.stderr[-6000:]))


def run_gdb(args, exe=None, core=None, timeout=GDB_TIMEOUT, stdin=None, env=None):
    """Run gdb -batch -nx with extra argv `args`, then EXE and CORE."""
    argv = [GDB, "-batch", "-nx"] + QUIET_GDB + list(args)
    if exe is not None:
        argv.append(str(exe))
    if core is not None:
        argv.append(str(core))
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env=_env(env), stdin=subprocess.DEVNULL if stdin is None else stdin,
                           errors="replace")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail("gdb timed out after %ss: %s\n%s\n%s" % (timeout, " ".join(argv), out[-3000:], err[-3000:]))
    validate_documents(p.stdout)
    return GdbResult(argv, p.stdout, p.stderr, p.returncode, time.monotonic() - t0)


# ---------------------------------------------------------------------------
# every stackproof JSON document a test produces, against its JSON Schema (docs/)
# ---------------------------------------------------------------------------

SCHEMA_FILES = {
    "stackproof/verify-bt/1": REPO / "docs" / "verify-bt.schema.json",
    "stackproof/regs-from-stack/2": REPO / "docs" / "regs-from-stack.schema.json",
}
_VALIDATORS = {}
DOCUMENT_START = re.compile(r'\{"schema":"stackproof/')


def schema_validator(schema):
    if schema not in _VALIDATORS:
        try:
            import jsonschema
        except ImportError:
            pytest.fail("the tests need the jsonschema package: ./install.sh --deps-only installs it")
        path = SCHEMA_FILES.get(schema)
        assert path is not None, "no JSON Schema for %r (docs/*.schema.json)" % schema
        spec = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(spec)
        _VALIDATORS[schema] = jsonschema.Draft202012Validator(spec)
    return _VALIDATORS[schema]


def validate_documents(text):
    """Validate each stackproof document in `text`; returns how many there were."""
    dec = json.JSONDecoder()
    n = 0
    for m in DOCUMENT_START.finditer(text):
        doc, _end = dec.raw_decode(text, m.start())
        errors = sorted(schema_validator(doc["schema"]).iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "%s document against its JSON Schema: %s at %s" % (
            doc["schema"], errors[0].message[:500], "/".join(map(str, errors[0].path)))
        n += 1
    return n


# ---------------------------------------------------------------------------
# stackproof installation
# ---------------------------------------------------------------------------

def stackproof_prefix():
    return Path(os.environ.get("STACKPROOF_PREFIX", BUILD / "prefix")).resolve()


def stackproof_gdbinit():
    return stackproof_prefix() / "lib" / "stackproof" / "stackproof-gdbinit.py"


def require_stackproof():
    init = stackproof_gdbinit()
    if not init.is_file():
        pytest.fail("stackproof is not installed: %s is missing (set STACKPROOF_PREFIX, "
                    "or run ./install.sh --prefix tests/build/prefix --no-gdbinit --no-demo)"
                    % init)
    return init


def gdb_stackproof(cmds, exe=None, core=None, timeout=GDB_TIMEOUT, extra_args=()):
    """gdb -batch -nx, source stackproof's gdbinit, then each of cmds as -ex."""
    init = require_stackproof()
    args = ["-ex", "source %s" % init]
    for c in cmds:
        args += ["-ex", c]
    return run_gdb(list(extra_args) + args, exe=exe, core=core, timeout=timeout)


FORBIDDEN = ("Traceback (most recent call last)", "PanicException", "panicked at",
             "RUST_BACKTRACE", "Python Exception <")


def assert_no_crash(res):
    """No Python traceback, no Rust panic, gdb exited normally."""
    for bad in FORBIDDEN:
        assert bad not in res.output, "%r in output\n%s" % (bad, res.describe())
    assert res.status >= 0, "gdb killed by signal %d\n%s" % (-res.status, res.describe())
    assert "internal-error" not in res.output and "Fatal signal" not in res.output, res.describe()


def parse_verify_json(res):
    """The one stackproof/verify-bt/1 JSON document in gdb's stdout (gdb's own
    messages, e.g. 'Core was generated by', may surround it)."""
    dec = json.JSONDecoder()
    docs = []
    for m in re.finditer(r"^\{", res.stdout, re.M):
        try:
            doc, _end = dec.raw_decode(res.stdout, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and "schema" in doc:
            docs.append(doc)
    assert len(docs) == 1, "expected exactly one verify-bt JSON document, got %d\n%s" % (
        len(docs), res.describe())
    doc = docs[0]
    assert doc["schema"] == "stackproof/verify-bt/1", doc.get("schema")
    return doc


def hexint(v):
    if v is None:
        return None
    if isinstance(v, int):
        return v
    return int(v, 16)


# ---------------------------------------------------------------------------
# programs, cores and oracles
# ---------------------------------------------------------------------------

def _digest(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


_GCC_VERSION = None


def gcc_version():
    global _GCC_VERSION
    if _GCC_VERSION is None:
        _GCC_VERSION = subprocess.run(["gcc", "--version"], capture_output=True,
                                      text=True, check=True).stdout.splitlines()[0]
    return _GCC_VERSION


@dataclass
class Artifact:
    name: str
    opt: str
    exe: Path
    core: Path
    oracle_path: Path
    argv: list

    _oracle = None

    @property
    def oracle(self):
        if self._oracle is None:
            self._oracle = json.loads(self.oracle_path.read_text())
        return self._oracle

    def thread(self, num=None):
        o = self.oracle
        if num is None:
            num = o.get("selected_thread", o["threads"][0]["thread"])
        for t in o["threads"]:
            if t["thread"] == num:
                return t
        raise KeyError(num)

    def frames(self, num=None):
        return self.thread(num)["frames"]


class Builder:
    """Lazily builds (and caches on disk) programs, cores and oracles."""

    def __init__(self, build_dir):
        self.dir = build_dir
        self.locks = {}
        self.lock = threading.Lock()
        self.cache = {}

    def _lock_for(self, key):
        with self.lock:
            return self.locks.setdefault(key, threading.Lock())

    def exe(self, program, opt, extra_flags=()):
        src = PROGRAMS / (program + ".c")
        flags = ["-g"] + OPT_LEVELS[opt] + list(extra_flags)
        key = _digest(src.read_bytes(), flags, gcc_version())
        out = self.dir / "bin" / ("%s-%s-%s" % (program, opt, key))
        with self._lock_for(str(out)):
            if not out.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_suffix(".tmp%d" % os.getpid())
                cmd = ["gcc"] + flags + ["-Wall", "-o", str(tmp), str(src), "-pthread"]
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode != 0:
                    raise RuntimeError("compile failed: %s\n%s" % (" ".join(cmd), p.stderr))
                os.replace(tmp, out)
        return out

    def stripped(self, program, opt):
        exe = self.exe(program, opt)
        out = exe.with_name(exe.name + "-stripped")
        with self._lock_for(str(out)):
            if not out.exists():
                tmp = out.with_suffix(".tmp%d" % os.getpid())
                subprocess.run(["strip", "--strip-all", "-o", str(tmp), str(exe)], check=True)
                os.replace(tmp, out)
        return out

    def core_for(self, exe, argv, pre_cmds, expect_signal, tag, after_run=()):
        """A core of exe run by gdb with `pre_cmds`, written where it stops (after the
        commands `after_run`)."""
        key = _digest(exe.read_bytes(), argv, pre_cmds, *after_run)
        core = self.dir / "cores" / ("%s-%s.core" % (tag, key))
        with self._lock_for(str(core)):
            if not core.exists():
                core.parent.mkdir(parents=True, exist_ok=True)
                tmp = core.with_suffix(".tmp%d" % os.getpid())
                args = []
                for c in pre_cmds:
                    args += ["-ex", c]
                args += ["-ex", "run"]
                for c in after_run:
                    args += ["-ex", c]
                args += ["-ex", "generate-core-file %s" % tmp,
                         "--args", str(exe)] + list(argv)
                res = run_gdb(args, timeout=120)
                if not tmp.exists():
                    raise RuntimeError("no core written\n" + res.describe())
                if expect_signal and ("received signal %s" % expect_signal) not in res.stdout:
                    tmp.unlink()
                    raise RuntimeError("program did not stop with %s\n%s"
                                       % (expect_signal, res.describe()))
                os.replace(tmp, core)
        return core

    def oracle_for(self, exe, core):
        out = core.with_name(core.name + ".oracle-%s.json"
                             % _digest(ORACLE_SCRIPT.read_bytes())[:8])
        with self._lock_for(str(out)):
            if not out.exists():
                tmp = out.with_suffix(".tmp%d" % os.getpid())
                res = run_gdb(["-x", str(ORACLE_SCRIPT)], exe=exe, core=core, timeout=120,
                              env={"STACKPROOF_ORACLE_OUT": str(tmp)})
                if not tmp.exists() or "Traceback" in res.output:
                    raise RuntimeError("oracle extraction failed\n" + res.describe())
                os.replace(tmp, out)
        return out

    def get(self, variant, opt):
        key = (variant, opt)
        with self._lock_for(repr(key)):
            if key not in self.cache:
                program, argv, pre = VARIANTS[variant]
                exe = self.exe(program, opt)
                core = self.core_for(exe, argv, pre, EXPECTED_SIGNAL[variant],
                                     "%s-%s" % (variant, opt))
                oracle = self.oracle_for(exe, core)
                self.cache[key] = Artifact(variant, opt, exe, core, oracle, list(argv))
        return self.cache[key]

    def custom(self, program, opt, argv, pre_cmds=(), expect_signal="SIGSEGV"):
        """A core of `program` run with another argv (e.g. recursion depth)."""
        exe = self.exe(program, opt)
        tag = "%s-%s-%s" % (program, opt, "_".join(argv) or "noargs")
        core = self.core_for(exe, list(argv), list(pre_cmds), expect_signal, tag)
        return exe, core


@pytest.fixture(scope="session")
def builder():
    BUILD.mkdir(parents=True, exist_ok=True)
    return Builder(BUILD)


@pytest.fixture(scope="session")
def artifacts(builder):
    """Every (variant, opt) built up front, two at a time (2-core machine)."""
    from concurrent.futures import ThreadPoolExecutor
    jobs = [(v, o) for v in VARIANTS for o in OPT_LEVELS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda vo: builder.get(*vo), jobs))
    return {(a.name, a.opt): a for a in results}


@pytest.fixture
def tmp_core(tmp_path):
    """Path factory for damaged copies of cores."""
    n = [0]

    def make(tag="damaged"):
        n[0] += 1
        return tmp_path / ("%s-%d.core" % (tag, n[0]))
    return make


# ---------------------------------------------------------------------------
# oracle helpers used by the tests
# ---------------------------------------------------------------------------

def crash_bt_text(frames, modules=None):
    """crash-style `bt` text from oracle frames: ` #N [slot] func at pc`,
    hex without 0x, one line per frame that has a return-address slot
    (frame 0 of a user-space crash has none and is left out)."""
    lines = []
    for fr in frames:
        if not fr["has_slot"]:
            continue
        lines.append(" #%d [%016x] %s at %016x" % (
            fr["level"], fr["slot"], fr["function"] or "??", fr["pc"]))
    return "\n".join(lines) + "\n"


def frames_by_slot(doc_thread):
    out = {}
    for fr in doc_thread["frames"]:
        if fr.get("slot") is not None:
            out[hexint(fr["slot"])] = fr
    return out


# ---------------------------------------------------------------------------
# schema checks shared by the tests
# ---------------------------------------------------------------------------

VERDICTS = {"ok", "probable", "bogus", "unknown"}
def _documented_reasons():
    """The reason codes of docs/json.md's table: the schema is the documentation."""
    doc = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "json.md")
    with open(doc) as f:
        text = f.read().split("Reason codes:", 1)[1]
    return set(re.findall(r"^\| `([a-z-]+)` \|", text, re.M))


REASONS = _documented_reasons()
TRUSTS = {"registers", "cfi", "layout", "frame-pointer", "scan"}
SOURCES = {"gdb", "registers", "crash-bt"}
CALL_KINDS = {"direct", "register", "memory"}
HEX = re.compile(r"^0x[0-9a-f]+$")


def _is_hex(v):
    return isinstance(v, str) and HEX.match(v) is not None


def check_schema(doc):
    """Every field of stackproof/verify-bt/1 has the type the interface says."""
    assert isinstance(doc.get("threads"), list), doc
    for t in doc["threads"]:
        assert isinstance(t["thread"], int), t
        assert t["source"] in SOURCES, t["source"]
        assert isinstance(t["frames"], list)
        for fr in t["frames"]:
            assert isinstance(fr["level"], int), fr
            assert _is_hex(fr["pc"]) or (fr["pc"] is None and "no-address" in fr["reasons"]), fr
            assert fr["sp"] is None or _is_hex(fr["sp"]), fr
            assert fr["slot"] is None or _is_hex(fr["slot"]), fr
            assert fr["slot_value"] is None or _is_hex(fr["slot_value"]), fr
            assert fr["function"] is None or isinstance(fr["function"], str), fr
            assert fr["verdict"] in VERDICTS, fr
            assert isinstance(fr["reasons"], list), fr
            for r in fr["reasons"]:
                assert r in REASONS, (r, fr)
            assert fr["trust"] in TRUSTS, fr
            call = fr["call"]
            if call is not None:
                assert _is_hex(call["address"]), fr
                assert isinstance(call["text"], str), fr
                assert call["kind"] in CALL_KINDS, fr
                assert call["target"] is None or _is_hex(call["target"]), fr
                assert call["target_function"] is None or isinstance(call["target_function"], str), fr
            if fr["verdict"] == "bogus":
                assert fr["reasons"], ("a bogus frame says why", fr)
            if "unreadable" in fr["reasons"]:
                # unknown, or bogus when another check disproved the frame anyway
                assert fr["verdict"] in ("unknown", "bogus"), fr


def oracle_expects_ok(frames, i):
    """True when gdb's own data prove frame i was entered by a direct call to
    the function of frame i-1 and its ra sits at sp-8: a correct verify-bt
    must call such a frame `ok`."""
    if i == 0:
        return False
    fr, inner = frames[i], frames[i - 1]
    return (fr["type"] == "normal" and inner["type"] == "normal" and fr["has_slot"]
            and fr["slot_value"] == fr["pc"]
            and fr["direct_call_target_function"] is not None
            and fr["direct_call_target_function"] == inner["function"])


def check_against_oracle(doc_thread, oracle_frames, what=""):
    """gdb-sourced verify-bt output vs the intact-core oracle."""
    got = doc_thread["frames"]
    want = [(f["pc"], f["sp"]) for f in oracle_frames]
    have = [(hexint(f["pc"]), hexint(f["sp"])) for f in got]
    assert have == want, "%s: frames differ from gdb's\nwant %s\nhave %s" % (
        what, [(hex(a), hex(b)) for a, b in want],
        [(hex(a), b is not None and hex(b)) for a, b in have])
    for i, (fr, orc) in enumerate(zip(got, oracle_frames)):
        ctx = "%s frame %d (%s, %s)" % (what, i, orc["function"], orc["type"])
        assert fr["level"] == i, ctx
        assert fr["verdict"] != "bogus", (ctx, fr)
        if i == 0:
            assert fr["slot"] is None, (ctx, fr)
        if orc["has_slot"]:
            assert hexint(fr["slot"]) == orc["sp"] - 8, (ctx, fr)
            assert hexint(fr["slot_value"]) == orc["pc"], (ctx, fr)
        else:
            # an inline frame (or the frame holding an inline group at #0) has none
            assert fr["slot"] is None, (ctx, fr)
        if oracle_expects_ok(oracle_frames, i):
            assert fr["verdict"] == "ok", (ctx, fr)
            assert fr["call"] is not None and fr["call"]["kind"] == "direct", (ctx, fr)
            assert hexint(fr["call"]["target"]) == orc["direct_call_target"], (ctx, fr)
            assert hexint(fr["call"]["address"]) == orc["pc"] - 5, (ctx, fr)
        if orc["type"] == "inline":
            assert "inline-frame" in fr["reasons"], (ctx, fr)
        if orc["type"] == "tailcall":
            assert "tailcall-frame" in fr["reasons"], (ctx, fr)
        if orc["type"] == "sigtramp":
            nxt = got[i + 1]["reasons"] if i + 1 < len(got) else []
            assert "signal-frame" in fr["reasons"] or "signal-frame" in nxt, (ctx, fr)
