"""verify-bt on cores damaged by corepatch: the verdicts are derived from
gdb's oracle of the INTACT core and from what was patched, never from
stackproof's own output."""
import pytest

from conftest import (assert_no_crash, check_schema, crash_bt_text, frames_by_slot,
                      gdb_stackproof, hexint, oracle_expects_ok, parse_verify_json,
                      require_stackproof, run_gdb)
from corepatch import Core

OPTS = ["O0", "O2"]
PAGE = 0x1000


def pick_k(frames, start=2):
    """A frame k >= start with a return-address slot, entered by a direct
    call from the frame below, and every frame 1..k-1 provably `ok`."""
    for k in range(start, len(frames)):
        if (frames[k]["has_slot"] and oracle_expects_ok(frames, k)
                and all(oracle_expects_ok(frames, i) for i in range(1, k))):
            return k
    pytest.fail("no suitable frame in %s" % [f["function"] for f in frames])


def patched(a, tmp_core, writes=(), remove=()):
    core = Core.load(a.core if hasattr(a, "core") else a)
    for addr, val in writes:
        core.write_u64(addr, val)
    for addr in remove:
        core.remove_page(addr)
    out = tmp_core()
    core.save(out)
    return out


def verify_json(exe, core, cmd="verify-bt --json"):
    res = gdb_stackproof([cmd], exe, core)
    assert_no_crash(res)
    doc = parse_verify_json(res)
    check_schema(doc)
    return res, doc


def assert_prefix_ok(got, oracle, k):
    for i in range(k):
        assert hexint(got[i]["pc"]) == oracle[i]["pc"], (i, got[i])
        assert hexint(got[i]["sp"]) == oracle[i]["sp"], (i, got[i])
        if i >= 1:
            assert got[i]["verdict"] == "ok", (i, got[i])
        else:
            assert got[i]["verdict"] != "bogus", got[i]


@pytest.mark.parametrize("opt", OPTS)
def test_zeroed_slot_is_ra_not_in_text(artifacts, tmp_core, opt):
    a = artifacts[("recursion", opt)]
    frames = a.frames()
    k = pick_k(frames)
    core = patched(a, tmp_core, writes=[(frames[k]["slot"], 0)])
    res, doc = verify_json(a.exe, core)
    got = doc["threads"][0]["frames"]
    assert len(got) > k, res.describe()
    assert hexint(got[k]["pc"]) == 0          # gdb's unwind now says pc 0 at k
    assert got[k]["verdict"] == "bogus", got[k]
    assert "ra-not-in-text" in got[k]["reasons"], got[k]
    assert_prefix_ok(got, frames, k)


@pytest.mark.parametrize("opt", OPTS)
def test_text_not_after_call_is_no_call_before_ra(artifacts, tmp_core, opt):
    a = artifacts[("recursion", opt)]
    frames = a.frames()
    k = pick_k(frames)
    cand = a.oracle["not_after_call"]["main"]   # checked with gdb's disassembler
    core = patched(a, tmp_core, writes=[(frames[k]["slot"], cand["address"])])
    res, doc = verify_json(a.exe, core)
    got = doc["threads"][0]["frames"]
    assert len(got) > k, res.describe()
    assert hexint(got[k]["pc"]) == cand["address"]
    assert got[k]["verdict"] == "bogus", got[k]
    assert "no-call-before-ra" in got[k]["reasons"], got[k]
    assert_prefix_ok(got, frames, k)


@pytest.mark.parametrize("opt", OPTS)
def test_ra_of_another_function_is_wrong_target(artifacts, tmp_core, opt):
    """Slot k gets the return address of frame j (another function, reached by
    a direct call to a function that is not frame k-1's): the call before the
    new ra targets the wrong function, so frame k is bogus `wrong-target`."""
    a = artifacts[("recursion", opt)]
    frames = a.frames()
    k = pick_k(frames)
    js = [j for j, f in enumerate(frames)
          if j > 0 and f["direct_call_target_function"] is not None
          and f["direct_call_target_function"] != frames[k - 1]["function"]
          and f["function"] != frames[k]["function"]]
    assert js, [(f["function"], f["direct_call_target_function"]) for f in frames]
    j = js[0]
    core = patched(a, tmp_core, writes=[(frames[k]["slot"], frames[j]["pc"])])
    res, doc = verify_json(a.exe, core)
    got = doc["threads"][0]["frames"]
    assert len(got) > k, res.describe()
    assert hexint(got[k]["pc"]) == frames[j]["pc"]
    assert got[k]["verdict"] == "bogus", got[k]
    assert "wrong-target" in got[k]["reasons"], got[k]
    call = got[k]["call"]
    assert call is not None and call["kind"] == "direct", got[k]
    assert hexint(call["target"]) == frames[j]["direct_call_target"], got[k]
    assert_prefix_ok(got, frames, k)


@pytest.fixture(scope="module", params=OPTS)
def deep(request, builder):
    """recursion at depth 200: its frames span several stack pages."""
    exe, core = builder.custom("recursion", request.param, ["200"])
    import json
    oracle = json.loads(builder.oracle_for(exe, core).read_text())
    return exe, core, oracle["threads"][0]["frames"]


def page_split(frames):
    """k >= 2: the first slotted frame whose slot is on another page than
    frame k-1's; returns (k, page, frames whose slot is on that page)."""
    for k in range(2, len(frames)):
        if (frames[k]["has_slot"] and frames[k - 1]["has_slot"]
                and frames[k]["slot"] // PAGE != frames[k - 1]["slot"] // PAGE):
            page = frames[k]["slot"] & ~(PAGE - 1)
            lost = [f["level"] for f in frames
                    if f["has_slot"] and f["slot"] & ~(PAGE - 1) == page]
            return k, page, lost
    pytest.fail("recursion(200) frames do not cross a page")


def test_removed_page_gdb_unwind(deep, tmp_core):
    """gdb's own unwind stops at the hole; verify-bt reports what gdb has,
    nothing bogus, no traceback."""
    exe, core0, frames = deep
    k, page, lost = page_split(frames)
    core = patched(core0, tmp_core, remove=[page])
    res, doc = verify_json(exe, core)
    assert res.status == 0, res.describe()
    got = doc["threads"][0]["frames"]
    assert 1 <= len(got) <= k + 1, len(got)
    for i, fr in enumerate(got):
        if i < k:
            assert hexint(fr["pc"]) == frames[i]["pc"]
        assert fr["verdict"] != "bogus", fr


def test_removed_page_crash_bt_is_unreadable(deep, tmp_core, tmp_path):
    """The intact backtrace, as crash-style text, against the core with the
    page missing: the frames whose slot was there are `unknown`/`unreadable`,
    all the others ok."""
    exe, core0, frames = deep
    k, page, lost = page_split(frames)
    core = patched(core0, tmp_core, remove=[page])
    text = tmp_path / "bt.txt"
    text.write_text(crash_bt_text(frames))
    res, doc = verify_json(exe, core, "verify-bt --json --crash-bt %s" % text)
    t = doc["threads"][0]
    assert t["source"] == "crash-bt"
    by_slot = frames_by_slot(t)
    for f in frames:
        if not f["has_slot"]:
            continue
        fr = by_slot.get(f["slot"])
        assert fr is not None, ("frame %d missing" % f["level"], res.describe())
        if f["level"] in lost:
            assert fr["verdict"] == "unknown", fr
            assert "unreadable" in fr["reasons"], fr
        else:
            assert fr["verdict"] in ("ok", "probable"), fr
    assert k in lost


@pytest.mark.parametrize("opt", OPTS)
def test_crash_bt_from_intact_oracle_flags_exactly_the_damaged_slot(
        artifacts, tmp_core, tmp_path, opt):
    a = artifacts[("recursion", opt)]
    frames = a.frames()
    k = pick_k(frames)
    text = tmp_path / "bt.txt"
    text.write_text(crash_bt_text(frames))
    # control: the same text against the intact core is all ok/probable
    res, doc = verify_json(a.exe, a.core, "verify-bt --json --crash-bt %s" % text)
    t = doc["threads"][0]
    assert t["source"] == "crash-bt"
    slotted = [f for f in frames if f["has_slot"]]
    by_slot = frames_by_slot(t)
    for f in slotted:
        fr = by_slot.get(f["slot"])
        assert fr is not None, (f["level"], res.describe())
        assert hexint(fr["pc"]) == f["pc"], fr
        assert fr["verdict"] in ("ok", "probable"), fr
    # damaged: slot k zeroed
    core = patched(a, tmp_core, writes=[(frames[k]["slot"], 0)])
    res, doc = verify_json(a.exe, core, "verify-bt --json --crash-bt %s" % text)
    t = doc["threads"][0]
    by_slot = frames_by_slot(t)
    bogus = [fr for fr in t["frames"] if fr["verdict"] == "bogus"]
    assert len(bogus) == 1, bogus
    assert hexint(bogus[0]["slot"]) == frames[k]["slot"], bogus
    assert "slot-mismatch" in bogus[0]["reasons"], bogus
    assert hexint(bogus[0]["slot_value"]) == 0, bogus
    for f in slotted:
        fr = by_slot[f["slot"]]
        if f["level"] != k:
            assert fr["verdict"] in ("ok", "probable"), fr


def test_crash_bt_seed_style_lines(artifacts, tmp_core, tmp_path):
    """Lines exactly like the seed's (module suffix, no 0x) are accepted."""
    a = artifacts[("recursion", "O0")]
    frames = a.frames()
    lines = []
    for f in frames:
        if f["has_slot"]:
            lines.append(" #%d [%x] %s at %x [recursion]" % (f["level"], f["slot"],
                                                             f["function"], f["pc"]))
    text = tmp_path / "bt.txt"
    text.write_text("PID: 1  TASK: 0  CPU: 0  COMMAND: \"recursion\"\n" + "\n".join(lines) + "\n")
    res, doc = verify_json(a.exe, a.core, "verify-bt --json --crash-bt %s" % text)
    t = doc["threads"][0]
    assert len(frames_by_slot(t)) == len(lines), res.describe()


@pytest.mark.parametrize("damaged", [False, True])
def test_strict_exit_status(artifacts, tmp_core, tmp_path, damaged):
    """The documented recipe: `verify-bt --strict` as the LAST -ex (gdb -batch
    exits with the status of the last command), and the gdb-Python recipe
    that turns the gdb.error into `quit 3`."""
    a = artifacts[("recursion", "O0")]
    frames = a.frames()
    core = a.core
    if damaged:
        core = patched(a, tmp_core, writes=[(frames[pick_k(frames)]["slot"], 0)])
    res = gdb_stackproof(["verify-bt --strict"], a.exe, core)
    assert_no_crash(res)
    assert (res.status != 0) == damaged, res.describe()
    script = tmp_path / "strict.py"
    script.write_text(
        "import gdb\n"
        "try:\n"
        "    gdb.execute('verify-bt --strict')\n"
        "except gdb.error as e:\n"
        "    print('verify-bt --strict: %s' % e)\n"
        "    gdb.execute('quit 3')\n")
    res = run_gdb(["-ex", "source %s" % require_stackproof(), "-x", str(script)],
                  exe=a.exe, core=core)
    assert_no_crash(res)
    assert res.status == (3 if damaged else 0), res.describe()
