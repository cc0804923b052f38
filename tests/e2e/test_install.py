"""install.sh itself, in a throw-away HOME: the ~/.gdbinit line is added
once (idempotent), gdb then knows the commands without -nx, the .pth makes
`python3 -m stackproof` work outside gdb, and --uninstall removes exactly
what was added.  The build is cargo's no-op (run-tests built it already)."""
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, require_stackproof

MARKER = "# stackproof: added by install.sh (./install.sh --uninstall removes it)"


@pytest.fixture(scope="module")
def fake_home(tmp_path_factory):
    require_stackproof()      # run-tests has installed (and so built) already
    home = tmp_path_factory.mktemp("home")
    (home / ".gdbinit").write_text("set history save off\n")
    real = Path(os.path.expanduser("~"))
    env = dict(os.environ)
    env.update(HOME=str(home),
               CARGO_HOME=os.environ.get("CARGO_HOME", str(real / ".cargo")),
               RUSTUP_HOME=os.environ.get("RUSTUP_HOME", str(real / ".rustup")),
               PYTHONNOUSERSITE="")
    env.pop("PYTHONNOUSERSITE")
    env.pop("STACKPROOF_GDBINIT_FILE", None)
    return home, env


def sh(argv, env, timeout=900):
    p = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return p


def test_install_gdbinit_pth_uninstall(fake_home):
    home, env = fake_home
    prefix = home / "prefix"
    p = sh(["./install.sh", "--no-deps", "--prefix", str(prefix)], env)     # with the demo
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "self-test passed" in p.stdout, p.stdout[-4000:]
    dest = prefix / "lib" / "stackproof"
    assert (dest / "stackproof-gdbinit.py").is_file()
    assert (dest / "python" / "stackproof" / "_core.abi3.so").is_file()
    line = "source %s" % (dest / "stackproof-gdbinit.py")
    p = sh(["./install.sh", "--no-deps", "--prefix", str(prefix), "--no-demo"], env)   # again
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    text = (home / ".gdbinit").read_text()
    assert text.count(line) == 1, text
    assert text.count(MARKER) == 1, text
    assert text.startswith("set history save off\n"), text

    # gdb without -nx reads the fake ~/.gdbinit and knows the command
    g = subprocess.run(["gdb", "-batch", "-ex", "help verify-bt"], env=env,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert g.returncode == 0 and "--json" in g.stdout, g.stdout + g.stderr

    # python3 outside gdb finds the package through the .pth
    site = subprocess.run(["python3", "-c", "import site; print(site.getusersitepackages())"],
                          env=env, capture_output=True, text=True).stdout.strip()
    pth = Path(site) / "stackproof.pth"
    assert pth.read_text().strip() == str(dest / "python")
    q = subprocess.run(["python3", "-c", "import stackproof; print(stackproof.__file__)"],
                       env=env, capture_output=True, text=True, cwd=home)
    assert q.returncode == 0 and str(dest) in q.stdout, q.stdout + q.stderr
    q = subprocess.run(["python3", "-m", "stackproof", "--help"],
                       env=env, capture_output=True, text=True, cwd=home)
    assert q.returncode == 0, q.stdout + q.stderr
    assert "Traceback" not in q.stdout + q.stderr

    p = sh(["./install.sh", "--prefix", str(prefix), "--uninstall"], env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not dest.exists()
    assert not pth.exists()
    assert (home / ".gdbinit").read_text() == "set history save off\n"


def test_install_help_and_bad_option():
    p = subprocess.run(["./install.sh", "-h"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0 and "--prefix" in p.stdout and "--uninstall" in p.stdout
    p = subprocess.run(["./install.sh", "--no-such-option"], cwd=REPO, capture_output=True,
                       text=True)
    assert p.returncode != 0 and "unknown option" in p.stderr
