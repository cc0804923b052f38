"""C++ frames (tests/programs/cxxframes.cpp) at -O0, -O2 and with the distro flags: a
crash in a virtual method called through std::function from a catch block inside
std::sort's comparator, and threads waiting on a condition variable. The oracle is
gdb's DWARF unwinding of the same core: no frame `bogus`, every frame gdb proves
entered by a direct call `ok`, the own chain equals gdb's physical frames on every
thread, callee-saved registers equal gdb's."""
import shutil
import subprocess

import pytest

from conftest import BUILD, PROGRAMS, _digest, gcc_version
from test_corpus import DISTRO, Corpus, assert_verdicts_and_chain_equal_gdbs

OPTS = {"O0": ["-O0"], "O2": ["-O2"], "distro": DISTRO}


@pytest.fixture(scope="module", params=sorted(OPTS))
def cxx(request, builder):
    return cxx_core(builder, request.param)


def cxx_core(builder, opt):
    """cxxframes built with OPTS[opt], its core and gdb's oracle."""
    gxx = shutil.which("g++")
    assert gxx, "g++ is needed to build tests/programs/cxxframes.cpp (install.sh --deps-only installs it)"
    src = PROGRAMS / "cxxframes.cpp"
    flags = ["-g"] + OPTS[opt]
    exe = BUILD / "bin" / ("cxxframes-%s-%s" % (opt, _digest(src.read_bytes(), flags, gcc_version())))
    with builder._lock_for(str(exe)):
        if not exe.exists():
            exe.parent.mkdir(parents=True, exist_ok=True)
            tmp = exe.with_suffix(".tmp")
            p = subprocess.run([gxx] + flags + ["-pthread", "-o", str(tmp), str(src)], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            tmp.rename(exe)
    core = builder.core_for(exe, [], [], "SIGSEGV", "cxxframes-%s" % opt)
    return Corpus(exe, core, builder.oracle_for(exe, core), "cxx", opt)


def test_cxx_verdicts_and_own_chain_equal_gdbs(cxx):
    names = assert_verdicts_and_chain_equal_gdbs(cxx, "cxx")
    assert any("Derived::run" in n for n in names) and any("wait" in n for n in names), names


def test_cxx_callee_saved_registers_equal_gdbs(cxx):
    """Frame 5 of the crashing thread stands in a catch block, which only the unwinder
    enters: its layout starts from the landing pads of its LSDA (without them, 24 of 204
    registers were unknown at -O2)."""
    from test_regs import all_regs_docs, assert_registers_equal_gdbs
    assert_registers_equal_gdbs((doc, cxx.frames(num)) for num, doc in all_regs_docs(cxx))
