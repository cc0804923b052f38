"""`python3 -m stackproof layout` (as installed) against `readelf
--debug-dump=frames-interp`, an oracle independent of stackproof's CFI reader:
the CFA rule at every instruction names the register and offset the compiler
wrote (bench/readelf_compare.py; bench.py reports libc, python3.11 and gdb)."""
import os
import sys
from pathlib import Path

import pytest

from conftest import REPO, require_stackproof, stackproof_prefix
from test_realign import BUILDS

sys.path.insert(0, str(REPO / "bench"))
import readelf_compare  # noqa: E402

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def _env():
    require_stackproof()
    return dict(os.environ, PYTHONPATH=str(stackproof_prefix() / "lib" / "stackproof" / "python"))


@pytest.mark.skipif(not Path(LIBC).exists(), reason="no libc.so.6 at %s" % LIBC)
def test_libc_rules_as_readelf_writes_them():
    res, classes, _ex = readelf_compare.compare(LIBC, env=_env())
    assert res["covered"] > 200_000, res
    assert res["answered"] >= 0.998 * res["covered"], res
    # >= 99.9%: the rest are hand-written __mpn_* and __longjmp, whose CFI does not follow the stack
    assert res["agree"] >= 0.999 * res["answered"], (readelf_compare.summary(res), classes.most_common(5))
    assert not any(k.startswith("engine reg:rbp vs readelf reg:rsp") for k in classes), classes


@pytest.mark.parametrize("build", list(BUILDS))
def test_realigned_frames_as_readelf_writes_them(builder, build):
    """DRAP (`*(rbp-16)` once spilled, r10/r13 before), rbp-realigned and plain frames;
    gcc names the DRAP register at the `and` where rsp is still exact (one per DRAP frame)."""
    opt, extra = BUILDS[build]
    exe = builder.exe("realign", opt, extra)
    res, classes, ex = readelf_compare.compare(str(exe), env=_env(), examples=20)
    assert res["covered"] > 150 and res["answered"] >= res["covered"] - 2, res
    drap_and = sum(v for k, v in classes.items() if k in ("engine reg:rsp vs readelf reg:r10",
                                                          "engine reg:rsp vs readelf reg:r13"))
    assert res["disagree"] == drap_and <= 3, ex
    assert res["agree"] >= 0.985 * res["answered"], ex
