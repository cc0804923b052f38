"""The layout engine's CFA rule at every instruction against `readelf
--debug-dump=frames-interp`, an oracle independent of stackproof's own CFI
reader: the rule must name the same register and offset (`rsp+8` is not
`rbp+16` even where both give the same value at frame 0, since only rsp is
exact in outer frames). DWARF expression rows (`exp`) are compared when their
FDE's only CFA expression is `DW_OP_bregN off; DW_OP_deref` (gcc's DRAP).

    python3 bench/readelf_compare.py FILE [--examples N]     (PYTHONPATH: the installed stackproof)
"""

import collections
import re
import subprocess
import sys

_FDE = re.compile(r"^[0-9a-f]+ [0-9a-f]+ [0-9a-f]+ FDE cie=([0-9a-f]+) pc=([0-9a-f]+)\.\.([0-9a-f]+)")
_CIE = re.compile(r"^([0-9a-f]+) [0-9a-f]+ [0-9a-f]+ CIE")
_RULE = re.compile(r"^(r\w+)([+-]\d+)$")
_DEREF_EXPR = re.compile(r"DW_CFA_def_cfa_expression \(DW_OP_breg\d+ \((\w+)\): (-?\d+); DW_OP_deref\)$")
_ENGINE_DEREF = re.compile(r"^\[(\w+)([+-]\d+)\]$")


def _readelf(path, what):
    p = subprocess.run(["readelf", "--wide", "--debug-dump=" + what, path], capture_output=True, text=True,
                       check=False)
    return p.stdout


def _sections(text):
    """(section name, lines) of each `Contents of the X section:` block."""
    name, lines, out = None, [], []
    for line in text.splitlines():
        m = re.match(r"^Contents of the (\S+) section", line)
        if m:
            if name:
                out.append((name, lines))
            name, lines = m.group(1), []
        elif name:
            lines.append(line)
    if name:
        out.append((name, lines))
    return out


def _pick(sections):
    """The lines of .eh_frame, else .debug_frame (a file rarely has both for one pc)."""
    for want in (".eh_frame", ".debug_frame"):
        for name, lines in sections:
            if name == want:
                return lines
    return []


def _fde_expressions(path):
    """FDE start -> its CFA expression as (reg, off) when it has exactly one, a breg+deref."""
    out = {}
    cur, exprs = None, set()
    for line in _pick(_sections(_readelf(path, "frames"))) + [""]:
        m = _FDE.match(line)
        if m or not line.strip():
            if cur is not None and len(exprs) == 1:
                e = next(iter(exprs))
                if e is not None:
                    out[cur] = e
            cur, exprs = (int(m.group(2), 16) if m else None), set()
            continue
        if "DW_CFA_def_cfa_expression" in line:
            d = _DEREF_EXPR.search(line.strip())
            exprs.add((d.group(1), int(d.group(2))) if d else None)
    return out


def oracle_rows(path):
    """Sorted (start, end, rule) with rule ('reg', name, off), ('deref', name, off), ('other', what)."""
    exprs = _fde_expressions(path)
    rows = []
    lines = _pick(_sections(_readelf(path, "frames-interp")))
    cie_rule = {}
    i = 0
    while i < len(lines):
        c = _CIE.match(lines[i])
        m = _FDE.match(lines[i])
        i += 1
        if not (m or c):
            continue
        table = []
        ra = None
        if i < len(lines) and "LOC" in lines[i]:
            cols = lines[i].split()
            i += 1
            ra = cols.index("ra") if "ra" in cols else None
            while i < len(lines) and re.match(r"^[0-9a-f]{8,16} ", lines[i]):
                table.append(lines[i].split())
                i += 1
        fde = []
        for f in table:
            loc, cfa = int(f[0], 16), f[1]
            r = _RULE.match(cfa)
            if ra is not None and len(f) > ra and f[ra] == "u":
                rule = ("other", "ra-undefined")
            elif r:
                rule = ("reg", r.group(1), int(r.group(2)))
            elif cfa == "exp" and m and int(m.group(2), 16) in exprs:
                rule = ("deref",) + exprs[int(m.group(2), 16)]
            else:
                rule = ("other", cfa)
            fde.append((loc, rule))
        if c:
            if fde:
                cie_rule[int(c.group(1), 16)] = fde[0][1]
            continue
        lo, hi = int(m.group(2), 16), int(m.group(3), 16)
        if not fde:
            # No instructions: the CIE's initial rule holds over the whole range.
            fde = [(lo, cie_rule.get(int(m.group(1), 16), ("other", "no-cie-rule")))]
        for k, (loc, rule) in enumerate(fde):
            end = fde[k + 1][0] if k + 1 < len(fde) else hi
            if end > loc:
                rows.append((loc, end, rule))
    rows.sort()
    return rows


def engine_rules(path, python=sys.executable, env=None):
    """(address, cfa text, function) of every instruction the engine analyses.
    STACKPROOF_LAYOUT (a `layout` executable, e.g. target/release/examples/layout) replaces
    `python -m stackproof`."""
    import os
    cmd = [os.environ["STACKPROOF_LAYOUT"]] if os.environ.get("STACKPROOF_LAYOUT") else [python, "-m", "stackproof"]
    p = subprocess.run(cmd + ["layout", path], capture_output=True, text=True, env=env, check=False)
    if p.returncode != 0:
        raise RuntimeError("stackproof layout %s: %s" % (path, (p.stderr or p.stdout).strip()[-300:]))
    out = []
    func = None
    for line in p.stdout.splitlines():
        if not line.startswith("0x"):
            func = line.rstrip(":")
            continue
        m = re.search(r" cfa=(\S+)", line)
        if m:
            out.append((int(line.split()[0], 16), m.group(1), func))
    return out


def _engine_rule(text):
    if text.startswith("unknown"):
        return None
    r = _RULE.match(text)
    if r:
        return ("reg", r.group(1), int(r.group(2)))
    d = _ENGINE_DEREF.match(text)
    if d:
        return ("deref", d.group(1), int(d.group(2)))
    return ("engine", text)


def compare(path, python=sys.executable, env=None, examples=0):
    import bisect
    rows = oracle_rows(path)
    starts = [r[0] for r in rows]
    res = collections.Counter()
    classes = collections.Counter()
    ex = []
    for addr, text, func in engine_rules(path, python, env):
        i = bisect.bisect_right(starts, addr) - 1
        if i < 0 or addr >= rows[i][1]:
            res["no oracle row"] += 1
            continue
        want = rows[i][2]
        if want[0] == "other":
            res["not compared (%s)" % want[1]] += 1
            continue
        res["covered"] += 1
        got = _engine_rule(text)
        if got is None:
            res["unknown"] += 1
            continue
        res["answered"] += 1
        if got == want:
            res["agree"] += 1
        else:
            res["disagree"] += 1
            classes["engine %s vs readelf %s" % (got[0] + ":" + got[1], want[0] + ":" + want[1])] += 1
            if len(ex) < examples:
                ex.append("%#x %s: engine %s, readelf %s" % (addr, func, text, want))
    return res, classes, ex


def summary(res):
    a, c = res["answered"], res["covered"]
    return ("covered %d, answered %d (%.3f%%), agree %d (%.4f%% of answered), disagree %d"
            % (c, a, 100.0 * a / max(c, 1), res["agree"], 100.0 * res["agree"] / max(a, 1), res["disagree"]))


def main(argv):
    n = 0
    if "--examples" in argv:
        k = argv.index("--examples")
        n = int(argv[k + 1])
        del argv[k:k + 2]
    status = 0
    for path in argv:
        res, classes, ex = compare(path, examples=n)
        print("%s: %s" % (path, summary(res)))
        for k, v in sorted(res.items()):
            if k.startswith("not compared") or k == "no oracle row":
                print("    %-40s %d" % (k, v))
        for k, v in classes.most_common(15):
            print("    %8d  %s" % (v, k))
        for e in ex:
            print("    example: " + e)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
