"""Rust frames (tests/programs/rustframes.rs) at opt-level 0 and 2: a crash through a
trait object called from a `dyn FnMut` closure, and threads waiting on a condition
variable (std's futex, `__rust_try`, start_thread). The oracle is gdb's DWARF
unwinding of the same core: no frame `bogus`, the own chain equals gdb's physical
frames on every thread, nothing invented or lost, callee-saved registers equal gdb's.
rustc is the one install.sh builds with (cargo's toolchain)."""
import os
import shutil
import subprocess

import pytest

from conftest import BUILD, PROGRAMS, _digest
from test_corpus import Corpus, assert_verdicts_and_chain_equal_gdbs

OPTS = {"O0": ["-C", "opt-level=0"], "O2": ["-C", "opt-level=2"]}


def rustc():
    home = os.environ.get("CARGO_HOME") or os.path.join(os.path.expanduser("~"), ".cargo")
    found = shutil.which("rustc") or shutil.which("rustc", path=os.path.join(home, "bin"))
    assert found, "rustc is needed to build tests/programs/rustframes.rs (install.sh needs cargo)"
    return found


@pytest.fixture(scope="module", params=sorted(OPTS))
def rust(request, builder):
    rc = rustc()
    src = PROGRAMS / "rustframes.rs"
    flags = ["-g"] + OPTS[request.param]
    version = subprocess.run([rc, "--version"], capture_output=True, text=True).stdout
    exe = BUILD / "bin" / ("rustframes-%s-%s" % (request.param, _digest(src.read_bytes(), flags, version)))
    with builder._lock_for(str(exe)):
        if not exe.exists():
            exe.parent.mkdir(parents=True, exist_ok=True)
            tmp = exe.with_suffix(".tmp")
            p = subprocess.run([rc] + flags + ["-o", str(tmp), str(src)], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            tmp.rename(exe)
    core = builder.core_for(exe, [], [], "SIGSEGV", "rustframes-%s" % request.param)
    return Corpus(exe, core, builder.oracle_for(exe, core), "rust", request.param)


def test_rust_verdicts_and_own_chain_equal_gdbs(rust):
    names = assert_verdicts_and_chain_equal_gdbs(rust, "rust")
    assert any("crash" in n for n in names) and any("futex" in n for n in names), names


def test_rust_callee_saved_registers_equal_gdbs(rust):
    from test_regs import all_regs_docs, assert_registers_equal_gdbs
    assert_registers_equal_gdbs((doc, rust.frames(num)) for num, doc in all_regs_docs(rust))
