"""A user's first steps, in a gdb started as a user starts it: no -nx, HOME a
throw-away directory holding the init file install.sh wrote there (the real
~/.gdbinit and ~/.config are never touched).

Oracles: gdb itself (which init file it reads, which commands it knows after
start-up, its own `bt` frame count, its own signal frames), docs/json.md's
reason-code table, Cargo.toml's rust-version and version."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import (GDB, QUIET_GDB, REPO, assert_no_crash, hexint, parse_verify_json, require_stackproof,
                      schema_validator, validate_documents)
from test_signals import regs_doc

MARKER = "# stackproof: added by install.sh (./install.sh --uninstall removes it)"


def cargo_field(name):
    text = (REPO / "Cargo.toml").read_text()
    return re.search(r'^%s\s*=\s*"([^"]+)"' % name, text, re.M).group(1)


def user_env(home, **extra):
    env = dict(os.environ)
    real = Path(os.path.expanduser("~"))
    env.update(HOME=str(home), LC_ALL="C",
               CARGO_HOME=os.environ.get("CARGO_HOME", str(real / ".cargo")),
               RUSTUP_HOME=os.environ.get("RUSTUP_HOME", str(real / ".rustup")))
    for k in ("XDG_CONFIG_HOME", "STACKPROOF_GDBINIT_FILE", "DEBUGINFOD_URLS", "PYTHONNOUSERSITE"):
        env.pop(k, None)
    env.update(extra)
    return env


def sh(argv, env, timeout=900):
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


class Res:
    def __init__(self, p, argv):
        self.stdout, self.stderr, self.status, self.argv = p.stdout, p.stderr, p.returncode, argv
        self.output = p.stdout + p.stderr

    def describe(self):
        return "$ %s\n[status %s]\n%s\n%s" % (" ".join(self.argv), self.status, self.stdout[-5000:],
                                              self.stderr[-5000:])


def user_gdb(env, cmds, exe=None, core=None, timeout=120):
    """gdb -batch as a user runs it: the init files of env's HOME are read."""
    argv = [GDB, "-batch"] + QUIET_GDB
    for c in cmds:
        argv += ["-ex", c]
    argv += [str(x) for x in (exe, core) if x is not None]
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, errors="replace")
    validate_documents(p.stdout)
    return Res(p, argv)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A HOME with a ~/.gdbinit stackproof's install.sh wrote (no demo: tested below)."""
    require_stackproof()      # run-tests has built already: install.sh's cargo is a no-op
    home = tmp_path_factory.mktemp("user")
    env = user_env(home)
    p = sh(["./install.sh", "--no-deps", "--no-demo", "--no-pth", "--prefix", str(home / "prefix")], env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert MARKER in (home / ".gdbinit").read_text()
    return env


# ---- (a) the init file gdb reads ---------------------------------------------------

@pytest.mark.parametrize("case", ["home", "config", "xdg"])
def test_install_writes_the_init_file_gdb_reads(tmp_path, case):
    """With ~/.config/gdb/gdbinit (or $XDG_CONFIG_HOME/gdb/gdbinit) present, gdb does not
    read ~/.gdbinit: install.sh must write where gdb reads, and its self-test (a gdb
    started as the user starts it) must prove both commands are there."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gdbinit").write_text("set history save off\n")
    extra = {}
    if case == "config":
        (home / ".config" / "gdb").mkdir(parents=True)
        (home / ".config" / "gdb" / "gdbinit").write_text("set print pretty on\n")
        want = home / ".config" / "gdb" / "gdbinit"
    elif case == "xdg":
        (home / ".config" / "gdb").mkdir(parents=True)
        (home / ".config" / "gdb" / "gdbinit").write_text("set print pretty on\n")
        (home / "xdg" / "gdb").mkdir(parents=True)
        (home / "xdg" / "gdb" / "gdbinit").write_text("set print elements 50\n")
        extra = {"XDG_CONFIG_HOME": str(home / "xdg")}
        want = home / "xdg" / "gdb" / "gdbinit"
    else:
        want = home / ".gdbinit"
    before = {p: p.read_text() for p in home.rglob("*") if p.is_file()}
    env = user_env(home, **extra)
    prefix = home / "prefix"
    p = sh(["./install.sh", "--no-deps", "--no-pth", "--prefix", str(prefix)], env)   # with the self-test
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "self-test passed" in p.stdout
    line = "source %s" % (prefix / "lib" / "stackproof" / "stackproof-gdbinit.py")
    for f, text in before.items():
        now = f.read_text()
        if f == want:
            assert now == text + MARKER + "\n" + line + "\n", now
        else:
            assert now == text, (f, now)
    # gdb, started as the user starts it, knows both commands
    g = user_gdb(env, ["help verify-bt", "help regs-from-stack", "help stackproof-unwinder"])
    assert "Undefined command" not in g.output, g.describe()
    assert "--max-frames" in g.stdout and "--layout" in g.stdout, g.describe()
    # uninstall restores every file
    p = sh(["./install.sh", "--uninstall", "--prefix", str(prefix)], env)
    assert p.returncode == 0, p.stdout + p.stderr
    for f, text in before.items():
        assert f.read_text() == text, f
    g = user_gdb(env, ["help verify-bt"])
    assert "Undefined command" in g.output


def test_self_test_fails_when_gdb_does_not_read_the_line(tmp_path):
    """The self-test starts gdb as the user does: a line written where gdb never looks
    must make install.sh fail, not print 'self-test passed'."""
    home = tmp_path / "home"
    (home / ".config" / "gdb").mkdir(parents=True)
    (home / ".config" / "gdb" / "gdbinit").write_text("set print pretty on\n")
    env = user_env(home, STACKPROOF_GDBINIT_FILE=str(home / ".gdbinit"))   # not read by gdb
    p = sh(["./install.sh", "--no-deps", "--no-pth", "--prefix", str(home / "prefix")], env)
    assert p.returncode != 0, p.stdout[-3000:]
    assert "self-test passed" not in p.stdout
    assert "did not read %s" % (home / ".gdbinit") in p.stderr, p.stderr


# ---- (b) Rust version, test tools -------------------------------------------------

def test_old_cargo_is_refused_with_what_to_do(tmp_path):
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    fake = home / "bin" / "cargo"
    fake.write_text("#!/bin/sh\necho 'cargo 1.63.0 (fd9c4297c 2022-07-01)'\n")
    fake.chmod(0o755)
    env = user_env(home, PATH="%s:%s" % (home / "bin", os.environ["PATH"]))
    env["CARGO_HOME"] = str(home / "no-cargo")
    p = sh(["./install.sh", "--no-deps", "--no-demo", "--prefix", str(home / "prefix")], env)
    msrv = cargo_field("rust-version")
    assert p.returncode != 0
    assert "too old" in p.stderr and msrv in p.stderr and "rustup" in p.stderr, p.stderr
    assert "1.63.0" in p.stderr, p.stderr
    assert not (home / "prefix").exists()


def test_readme_states_the_minimum_rust():
    msrv = cargo_field("rust-version")
    # the locked crate that needs the most (gimli 0.34: 1.88) is no newer than Cargo.toml says
    lock = (REPO / "Cargo.lock").read_text()
    assert re.search(r'name = "gimli"\nversion = "0\.34', lock)
    assert tuple(map(int, msrv.split("."))) >= (1, 88)
    readme = (REPO / "README.md").read_text()
    assert "Rust %s" % msrv in readme and "rustup" in readme


def test_plain_install_installs_no_test_tools(tmp_path):
    """Only --deps-only (CI, ./run-tests) may pip-install pytest/jsonschema."""
    home = tmp_path / "home"
    home.mkdir()
    log = home / "python.log"
    wrapper = home / "python3"
    wrapper.write_text("#!/bin/sh\necho \"$*\" >> %s\ncase \"$*\" in\n"
                       "  *'import pytest'*|*'import jsonschema'*) exit 1 ;;\n"
                       "  *sys.prefix*) echo /opt/not-usr; exit 0 ;;\n"
                       "  *'-m pip'*) exit 0 ;;\nesac\nexec python3 \"$@\"\n" % log)
    wrapper.chmod(0o755)
    env = user_env(home, PYTHON=str(wrapper))
    p = sh(["./install.sh", "--no-demo", "--no-gdbinit", "--no-pth", "--prefix", str(home / "prefix")], env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    calls = log.read_text() if log.exists() else ""
    assert "pip" not in calls and "pytest" not in calls, calls
    p = sh(["./install.sh", "--deps-only"], env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    calls = log.read_text()
    assert "-m pip install --user -q pytest" in calls and "jsonschema" in calls, calls


# ---- (d) version ---------------------------------------------------------------------

def test_version_everywhere(user):
    version = cargo_field("version")
    g = user_gdb(user, ["stackproof version", "verify-bt --version", "regs-from-stack --version",
                        "help verify-bt"])
    assert_no_crash(g)
    assert g.stdout.count("stackproof %s" % version) >= 4, g.describe()


# ---- (e) help ------------------------------------------------------------------------

COMMANDS = ["verify-bt", "regs-from-stack", "stackproof-unwinder"]


def documented_reasons():
    text = (REPO / "docs" / "json.md").read_text().split("Reason codes:", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z-]+)` \|", text, re.M)


def test_help_is_a_manual(user):
    g = user_gdb(user, ["help %s" % c for c in COMMANDS] + ["help stackproof", "help stack",
                                                            "apropos register sets"])
    assert_no_crash(g)
    out = g.stdout
    summaries = {}
    for c in COMMANDS:
        # gdb's `help stack` shows each command's first line: one sentence
        m = re.search(r"^%s -- (.*)$" % re.escape(c), out, re.M)
        assert m, (c, out)
        summaries[c] = m.group(1)
        assert summaries[c].endswith(".") and summaries[c].count(". ") == 0, summaries[c]
        assert len("%s -- %s" % (c, summaries[c])) <= 100
    assert "regs-from-stack -- " in out.split("apropos")[-1] or re.search(r"^regs-from-stack -- ", out, re.M)
    # each manual: usage, options, examples, fits 80 columns
    manuals = out.split("List stackproof's commands")[0]
    for c in COMMANDS:
        assert "usage: %s" % c in manuals, c
    assert manuals.count("Examples:") == 3
    for line in manuals.splitlines():
        assert len(line) <= 80, line
    # every reason code of the documentation, in `help verify-bt`
    vbt = manuals.split("usage: verify-bt")[1].split("usage: regs-from-stack")[0]
    for code in documented_reasons():
        assert re.search(r"^  %s\s" % re.escape(code), vbt, re.M), code
    for word in ("TRUST", "VERDICT", "ok", "probable", "unknown", "BOGUS", "[SLOT]"):
        assert word in vbt
    # help stackproof lists every command with its summary
    listing = out.split("List stackproof's commands")[1]
    for c in COMMANDS:
        assert re.search(r"^  %s\s+%s$" % (re.escape(c), re.escape(summaries[c])), listing, re.M), c
    assert "stackproof version" in listing


# ---- (f) completion ------------------------------------------------------------------

def complete(env, texts, exe=None, core=None):
    """{text: what gdb's `complete TEXT` adds to it}, one gdb for all."""
    cmds = ["echo @@@\\n"]   # after gdb's messages on loading the core
    for t in texts:
        cmds += ["complete %s" % t, "echo @@@\\n"]
    g = user_gdb(env, cmds, exe, core)
    assert_no_crash(g)
    blocks = g.stdout.split("@@@\n")[1:]
    out = {}
    for t, block in zip(texts, blocks):
        lines = block.splitlines()
        assert all(l.startswith(t) for l in lines), (t, lines)
        out[t] = [l[len(t):] for l in lines]
    return out


def test_completion_of_options_and_values(user, builder, tmp_path):
    a = builder.get("recursion", "O2")
    (tmp_path / "crash-bt.txt").write_text("")
    texts = ["verify-bt -", "verify-bt --ma", "verify-bt --max-frames ", "regs-from-stack --layout ",
             "regs-from-stack --layout si", "regs-from-stack --frame ", "regs-from-stack --scan --fr",
             "stackproof-unwinder ", "verify-bt --crash-bt %s/cra" % tmp_path, "regs-from-stack -"]
    got = complete(user, texts, a.exe, a.core)
    for cmd in ("verify-bt", "regs-from-stack"):
        # every option the command's `help` shows, and only those
        g = user_gdb(user, ["help %s" % cmd])
        options = g.stdout.split("options:")[1].split("\n\n")[0]
        shown = set(re.findall(r"(?:^ +|, )(--?[a-z][a-z-]*)", options, re.M))
        assert len(shown) > 8 and set(got["%s -" % cmd]) == {o[1:] for o in shown}, (got["%s -" % cmd], shown)
    assert got["verify-bt --ma"] == ["x-frames"]
    assert "unlimited" in got["verify-bt --max-frames "]
    assert got["regs-from-stack --layout "] == ["pt_regs", "sigframe", "ucontext"]
    assert got["regs-from-stack --layout si"] == ["gframe"]
    # --frame N: gdb's own frame numbers of the selected thread
    n = len(a.frames())
    assert sorted(got["regs-from-stack --frame "], key=int) == [str(i) for i in range(n)]
    assert got["regs-from-stack --scan --fr"] == ["ame", "om"]
    assert got["stackproof-unwinder "] == ["off", "on"]
    assert got["verify-bt --crash-bt %s/cra" % tmp_path] == ["sh-bt.txt"]


# ---- (g) conflicting modes, user-space layouts ---------------------------------------

@pytest.mark.parametrize("cmd,names", [
    ("verify-bt -a --sp $sp --pc $pc", ["-a", "--sp/--pc"]),
    ("verify-bt --crash-bt /dev/null -a", ["-a", "--crash-bt"]),
    ("verify-bt --task 0x1 --crash-bt /dev/null", ["--task", "--crash-bt"]),
    ("regs-from-stack --scan --annotate --all", ["--scan", "--annotate", "--all"]),
    ("regs-from-stack --frame 1 --all", ["--frame", "--all"]),
    ("regs-from-stack $sp --scan", ["ADDR", "--scan"]),
    ("regs-from-stack --use $sp --scan", ["--scan", "--use"]),
])
def test_conflicting_modes_refused(user, builder, cmd, names):
    a = builder.get("recursion", "O2")
    g = user_gdb(user, ["echo BEFORE\\n", cmd], a.exe, a.core)
    assert_no_crash(g)
    err = [l for l in g.stderr.splitlines() if l.startswith(cmd.split()[0] + ":")]
    assert len(err) == 1 and "do not go together" in err[0], g.describe()
    for n in names:
        assert n in err[0], (n, err)
    # nothing was run: no frame lines, no document
    assert g.stdout.split("BEFORE\n")[1] == "", g.describe()


@pytest.mark.parametrize("opt", ["O0", "O2"])
def test_user_space_address_decoded_as_a_signal_frame(user, builder, opt):
    """`regs-from-stack ADDR` with no --layout at gdb's signal frame (its sp - 8 is the
    rt_sigframe, its sp the ucontext): the set gdb's unwinding went through."""
    a = builder.get("signals-siginfo", opt)
    frames = a.frames()
    (t,) = [i for i, f in enumerate(frames) if f["type"] == "sigtramp"]
    interrupted = frames[t + 1]
    for addr, layout in ((frames[t]["sp"] - 8, "rt_sigframe"), (frames[t]["sp"], "ucontext")):
        g = user_gdb(user, ["regs-from-stack %#x --json" % addr, "regs-from-stack %#x" % addr], a.exe, a.core)
        doc = regs_doc(g)
        (f,) = doc["found"]
        assert f["layout"] == layout, f
        assert hexint(f["registers"]["rip"]) == interrupted["pc"]
        assert hexint(f["registers"]["rsp"]) == interrupted["sp"]
        assert "user-space address" in doc["layout_note"]
        assert "(layout %s: a user-space address" % layout in g.stdout


# ---- (h) limits ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deep(builder):
    exe, core = builder.custom("recursion", "O2", ["1500"])
    return exe, core


def gdb_frame_count(env, exe, core):
    g = user_gdb(env, ["echo BEFORE\\n", "bt -frame-arguments none -1"], exe, core)
    m = re.search(r"^#(\d+) ", g.stdout.split("BEFORE\n")[1], re.M)
    return int(m.group(1)) + 1


def test_max_frames_unlimited(user, deep):
    exe, core = deep
    n = gdb_frame_count(user, exe, core)
    assert n > 1500
    g = user_gdb(user, ["verify-bt --json", "verify-bt --max-frames unlimited --json"], exe, core, timeout=300)
    assert_no_crash(g)
    text = g.stdout
    cut = text.index('{"schema"', text.index('{"schema"') + 1)
    first = parse_verify_json(Res(subprocess.CompletedProcess([], 0, text[:cut], ""), []))
    second = parse_verify_json(Res(subprocess.CompletedProcess([], 0, text[cut:], ""), []))
    assert len(first["threads"][0]["frames"]) == 1024
    assert "stopped after 1024 frames" in first["threads"][0]["stop"]
    assert len(second["threads"][0]["frames"]) == n
    assert second["threads"][0]["stop"] is None


def test_regs_from_stack_all_limit_and_note(user, deep):
    exe, core = deep
    n = gdb_frame_count(user, exe, core)
    g = user_gdb(user, ["regs-from-stack --all --json", "regs-from-stack --all --max-frames unlimited --json",
                        "regs-from-stack --all --max-frames 5"], exe, core, timeout=300)
    assert_no_crash(g)
    docs = [regs_doc(Res(subprocess.CompletedProcess([], 0, part, ""), []))
            for part in ('{"schema"' + p for p in g.stdout.split('{"schema"')[1:])]
    assert len(docs[0]["frames"]) == 1024 and "stopped after 1024 frames" in docs[0]["stop"]
    assert len(docs[1]["frames"]) == n and docs[1]["stop"] is None
    assert "(gdb's frames: stopped after 5 frames (--max-frames N|unlimited for more))" in g.stdout
    assert re.findall(r"^#(\d+)  pc", g.stdout, re.M) == [str(i) for i in range(5)]


# ---- (k) --output ---------------------------------------------------------------------

def test_output_file(user, builder, tmp_path):
    a = builder.get("threads", "O2")
    out = tmp_path / "bt.json"
    g = user_gdb(user, ["verify-bt -a --json --output %s" % out, "verify-bt -a --json"], a.exe, a.core)
    assert_no_crash(g)
    assert "verify-bt: wrote %s" % out in g.stdout
    printed = parse_verify_json(g)
    written = json.loads(out.read_text())
    assert out.read_text().count("\n") == 1
    written.pop("stats"), printed.pop("stats")   # the second run reads from the session cache
    assert written == printed
    assert [t["thread"] for t in printed["threads"]] == sorted(t["thread"] for t in a.oracle["threads"])
    g = user_gdb(user, ["verify-bt --output /nonexistent/dir/x.json"], a.exe, a.core)
    assert_no_crash(g)
    assert "verify-bt: cannot write /nonexistent/dir/x.json" in g.stderr


# ---- (l) the documents and their schemas -------------------------------------------------

def documents(text):
    dec = json.JSONDecoder()
    return [dec.raw_decode(text, m.start())[0] for m in re.finditer(r'\{"schema":"stackproof/', text)]


def test_every_mode_validates_and_the_schemas_agree(user, builder, tmp_path):
    """One document per mode, each valid against docs/*.schema.json (every member
    present); `function` is the symbol's name in both documents, gdb's for normal frames."""
    a = builder.get("signals-siginfo", "O2")
    frames = a.frames()
    (t,) = [i for i, f in enumerate(frames) if f["type"] == "sigtramp"]
    crash = tmp_path / "bt.txt"
    crash.write_text("".join(" #%d [%016x] %s at %016x\n" % (f["level"], f["sp"] - 8, f["function"] or "??", f["pc"])
                             for f in frames[1:] if f["type"] == "normal"))
    cmds = ["verify-bt --json", "verify-bt -a --json", "verify-bt --sp $sp --pc $pc --json",
            "verify-bt --crash-bt %s --json" % crash, "regs-from-stack %#x --json" % (frames[t]["sp"] - 8),
            "regs-from-stack --scan --json", "regs-from-stack --annotate --json", "regs-from-stack --frame 1 --json",
            "regs-from-stack --all --json"]
    g = user_gdb(user, cmds, a.exe, a.core)     # user_gdb validates each document
    assert_no_crash(g)
    docs = documents(g.stdout)
    assert len(docs) == len(cmds), g.describe()
    version = cargo_field("version")
    assert all(d["stackproof"] == version for d in docs)
    keys = {frozenset(d) for d in docs[4:]}
    assert len(keys) == 1, keys      # every regs-from-stack mode: the same members
    vbt, regs = docs[0]["threads"][0]["frames"], docs[-1]["frames"]
    compared = 0
    for v, r, o in zip(vbt, regs, frames):
        if o["type"] == "normal" and r["matched"] and o["function"]:
            assert r["function"] == v["function"] and r["module"] == v["module"], (r, v)
            if v["module"] is None:   # libc's aliases (raise, __GI_raise) name one address
                assert v["function"] == o["function"], (v, o)
                compared += 1
    assert compared >= 2
    # a document missing a member is refused by its schema
    bad = dict(docs[-1])
    bad.pop("stop")
    assert list(schema_validator(bad["schema"]).iter_errors(bad))
    bad = json.loads(json.dumps(docs[0]))
    bad["threads"][0]["frames"][0].pop("module")
    assert list(schema_validator(bad["schema"]).iter_errors(bad))


# ---- (i) styles and (j) progress: only where gdb itself would style -----------------------

def tty_gdb(env, cmds, exe, core, timeout=120):
    """gdb on a pseudo-terminal, the commands typed at its prompt (from_tty), as a user
    at a terminal runs it. Returns everything gdb wrote to the terminal."""
    import pty
    import select
    import time
    pid, fd = pty.fork()
    if pid == 0:   # the child: gdb on the terminal
        os.execvpe(GDB, [GDB, "-q", "-ex", "set pagination off", "-ex", "set confirm off",
                         "-ex", "set debuginfod enabled off", "-ex", "set width 0", str(exe), str(core)],
                   dict(env, TERM="xterm", COLUMNS="200", LINES="50"))
    out = b""
    script = list(cmds) + ["quit"]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _w, _x = select.select([fd], [], [], 0.3)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            elif script and out.rstrip().endswith(b"(gdb)"):
                os.write(fd, (script.pop(0) + "\n").encode())
                out += b"<<SENT>>"
    finally:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
        os.waitpid(pid, 0)
    # [what gdb wrote after command k, for each k]
    return out.decode(errors="replace").split("<<SENT>>")[1:1 + len(cmds)]


def test_styles_follow_gdb(user, builder):
    """Escapes exactly where gdb's own `bt` has them: on a terminal with styling on,
    in gdb's function and address styles (`set style ...` followed); none through a
    pipe, even with `set style enabled on`."""
    a = builder.get("shapes-null", "O2")
    out = tty_gdb(user, ["set style enabled on", "set style function foreground green",
                         "set style address foreground magenta", "bt 2", "verify-bt"], a.exe, a.core)
    bt, vbt = out[3], out[4]
    assert "\x1b[32m" in bt and "\x1b[35m" in bt, bt          # gdb's own styles
    fn = a.frames()[1]["function"]
    assert "\x1b[32m%s" % fn in vbt, vbt                        # names in gdb's function style
    assert re.search(r"\x1b\[35m[0-9a-f]{16}\x1b\[0m", vbt), vbt  # addresses in its address style
    out = tty_gdb(user, ["set style enabled off", "verify-bt"], a.exe, a.core)
    assert "\x1b[" not in out[1].replace("\x1b[?2004l", "").replace("\x1b[?2004h", "")
    # a pipe: gdb's bt has no escapes, and nor has verify-bt
    g = user_gdb(user, ["set style enabled on", "bt 2", "verify-bt"], a.exe, a.core)
    assert "\x1b" not in g.stdout, g.describe()


def test_text_fits_80_columns_and_aligns(user, builder):
    """Every line but a frame part that is itself too wide fits 80 columns; the trust
    and verdict columns are aligned on every frame, long libc names included."""
    a = builder.get("shapes-abort", "O2")    # __pthread_kill_implementation [libc.so.6], ...
    g = user_gdb(user, ["set width 80", "echo BEFORE\\n", "verify-bt"], a.exe, a.core)   # a terminal's default
    lines = g.stdout.split("BEFORE\n")[1].splitlines()
    columns = re.compile(r" (registers|cfi|layout|frame-pointer|scan) +(ok|probable|unknown|BOGUS)( |$)")
    with_cols = [l for l in lines if columns.search(l)]
    assert len(with_cols) == len(a.frames()), lines
    assert len({columns.search(l).start() for l in with_cols}) == 1, with_cols
    for i, l in enumerate(lines):
        if len(l) > 80:
            # a frame part wider than the columns allow: they follow on the next line
            assert re.match(r"^[ ?]#\d+ ", l) and not columns.search(l) and columns.search(lines[i + 1]), l
    assert any(len(l) > 60 and re.match(r"^[ ?]#\d+ ", l) for l in lines)   # the case was there
    # gdb -batch has no width: one line per frame, aligned
    g = user_gdb(user, ["echo BEFORE\\n", "verify-bt"], a.exe, a.core)
    lines = [l for l in g.stdout.split("BEFORE\n")[1].splitlines() if re.match(r"^[ ?]#\d+ ", l)]
    assert len(lines) == len(a.frames()) and len({columns.search(l).start() for l in lines}) == 1, lines


def test_progress_on_a_terminal_only(user, deep):
    exe, core = deep
    env = dict(user, STACKPROOF_PROGRESS_AFTER="0")
    out = tty_gdb(env, ["verify-bt --max-frames unlimited"], exe, core)
    run = out[0]
    assert re.search(r"\rverify-bt: \d+ frames read\x1b\[K", run), run[:2000]
    assert "\r\x1b[K" in run
    g = user_gdb(env, ["verify-bt --max-frames unlimited"], exe, core, timeout=300)
    assert "frames read" not in g.output and "\r" not in g.stdout
