"""The wheel: `pip wheel .` (maturin, fetched by pip) builds one abi3 wheel, which
installs into a fresh venv and works there (python -m stackproof) and in gdb,
whose embedded Python (the system 3.11) sees the venv only through the line
`stackproof gdbinit` prints, written into the init file of a throw-away HOME.
verify-bt on a core must give gdb's own frames (the oracle)."""
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO, assert_no_crash, check_against_oracle, check_schema, parse_verify_json
from test_discover import cargo_field, user_env, user_gdb


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    env = user_env(root)
    v = root / "venv"
    p = subprocess.run([sys.executable, "-m", "venv", str(v)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    pip = [str(v / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    p = subprocess.run(pip + ["wheel", "--no-deps", "-w", str(root / "dist"), str(REPO)], env=env,
                       capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL)
    if p.returncode != 0 and "maturin" in p.stdout + p.stderr and "No matching distribution" in p.stdout + p.stderr:
        pytest.skip("maturin is not reachable through pip here")
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    wheels = list((root / "dist").glob("stackproof-*.whl"))
    assert len(wheels) == 1, wheels
    p = subprocess.run(pip + ["install", "--no-deps", str(wheels[0])], env=env, capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return root, v, wheels[0], env


def test_one_abi3_wheel_with_the_core(venv):
    _root, _v, wheel, _env = venv
    version = cargo_field("version")
    assert wheel.name == "stackproof-%s-cp39-abi3-linux_x86_64.whl" % version, wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    for need in ("stackproof/_core.abi3.so", "stackproof/_core.pyi", "stackproof/py.typed",
                 "stackproof/gdbext/commands/verify_bt.py", "stackproof/gdbinit.py"):
        assert need in names, names


def test_works_outside_gdb(venv):
    root, v, _wheel, env = venv
    version = cargo_field("version")
    p = subprocess.run([str(v / "bin" / "stackproof"), "--version"], env=env, capture_output=True, text=True,
                       cwd=root)
    assert p.returncode == 0 and p.stdout.strip() == "stackproof %s" % version, p.stdout + p.stderr
    p = subprocess.run([str(v / "bin" / "python"), "-c", "import stackproof, stackproof._core as c; "
                        "print(stackproof.__file__); print(c.__version__)"], env=env, capture_output=True,
                       text=True, cwd=root)
    assert p.returncode == 0, p.stderr
    assert str(v) in p.stdout and p.stdout.split()[-1] == version, p.stdout


def test_loaded_in_gdb_from_the_venv(venv, builder):
    root, v, _wheel, env = venv
    p = subprocess.run([str(v / "bin" / "stackproof"), "gdbinit"], env=env, capture_output=True, text=True,
                       cwd=root)
    assert p.returncode == 0, p.stderr
    line = p.stdout.strip()
    assert line.startswith("source %s" % v) and line.endswith("stackproof/gdbinit.py"), line
    (root / ".gdbinit").write_text(line + "\n")
    a = builder.get("shapes-null", "O2")
    g = user_gdb(env, ["python import stackproof, sys; print('FROM', stackproof.__file__, sys.version_info[:2])",
                       "verify-bt --json"], a.exe, a.core)
    assert_no_crash(g)
    assert "FROM %s" % v in g.stdout, g.describe()
    doc = parse_verify_json(g)
    check_schema(doc)
    check_against_oracle(doc["threads"][0], a.frames(), "wheel in gdb")
