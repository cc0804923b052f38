"""Text and JSON documents of the core's results. No gdb here: testable anywhere.

Each verified frame writes its own line and JSON object (`fr.line()`,
`fr.json()`: src/text.rs, src/json.rs), a deep stack has thousands; the rest
of each document is here. JSON schemas are documented in docs/json.md; bump
the version on any incompatible change.
"""

import json

VERIFY_SCHEMA = "stackproof/verify-bt/1"


def hexa(v):
    return None if v is None else "0x%x" % v


def chain_lines(t):
    """stackproof's own chain beside the one verified, and where they differ."""
    chain, cmp_ = t.get("chain"), t.get("compare")
    if not cmp_:
        return []
    if cmp_["agree"]:
        return ["stackproof's own unwinding agrees."]
    out = ["stackproof's own unwinding (from the registers; trust per frame):"]
    for c in chain:
        slot = "[%016x] " % c["slot"] if c.get("slot") is not None else ""
        out.append("  #%-3d %s%s at %016x  %s" % (c["level"], slot, c["name"], c["pc"], c["trust"]))
    if t.get("chain_stop"):
        out.append("  (stopped: %s)" % t["chain_stop"])
    if cmp_["invented"]:
        out.append("Not in stackproof's chain (invented): %s" % ", ".join("#%d" % l for l in cmp_["invented"]))
    if cmp_["lost"]:
        out.append("Missing from the backtrace (lost): %s" % ", ".join(
            "%s (sp %016x)" % (c["describe"], c["sp"]) for c in cmp_["lost"]))
    return out


def evidence_lines(fr):
    """The grounds of a verdict, for `-v`."""
    out = []
    if fr.get("slot") is not None:
        v = fr.get("slot_value")
        if v is None:
            out.append("slot %016x: unreadable" % fr["slot"])
        else:
            same = "= return address" if v == fr["pc"] else "!= return address %016x" % fr["pc"]
            out.append("slot %016x holds %016x %s" % (fr["slot"], v, same))
    c = fr.get("call")
    if c:
        line = "call at %016x: %s" % (c["address"], c["text"])
        if c.get("target") is not None:
            line += "  -> %016x" % c["target"]
            if c.get("target_function"):
                line += " <%s>" % c["target_function"]
        out.append(line)
        for how in c.get("resolution") or []:
            out.append("  resolved: %s" % how)
        for hop in c.get("via") or []:
            out.append("  via %s" % hop)
    if fr.get("expected_slot") is not None:
        out.append("inner frame's layout puts this slot at %016x" % fr["expected_slot"])
    return out


def thread_text(thread, verbose=False, colour=False):
    lines = []
    title = thread.get("title")
    if title:
        lines.append(title)
    for fr in thread["frames"]:
        lines.append(fr.line(colour))  # src/text.rs
        if verbose:
            lines.extend("        " + e for e in evidence_lines(fr))
    if thread.get("stop"):
        lines.append("  (unwinding stopped: %s)" % thread["stop"])
    lines.extend(chain_lines(thread))
    bogus = [fr["level"] for fr in thread["frames"] if fr["verdict"] == "bogus"]
    if bogus:
        kept = [fr for fr in thread["frames"] if fr["verdict"] != "bogus"]
        lines.append("Corrected chain (without %s): %s" % (
            ", ".join("#%d" % b for b in bogus),
            " <- ".join(fr["name"] for fr in kept) or "(empty)"))
    return "\n".join(lines)


def _dumps(v):
    return json.dumps(v, separators=(",", ":"))


def _frames_json(frames):
    """The core writes each frame's JSON (src/json.rs): thousands of frames, one call each."""
    return "[" + ",".join([f.json() for f in frames]) + "]"


def verify_json(threads):
    """The `stackproof/verify-bt/1` document (docs/json.md), compact, on one line."""
    out = []
    for t in threads:
        cmp_ = t.get("compare") or {}
        chain = t.get("chain")
        out.append("{" + ",".join([
            '"thread":' + _dumps(t.get("thread")),
            '"source":' + _dumps(t["source"]),
            '"stop":' + _dumps(t.get("stop")),
            '"frames":' + _frames_json(t["frames"]),
            '"bogus":' + _dumps([fr["level"] for fr in t["frames"] if fr["verdict"] == "bogus"]),
            '"chain":' + (_frames_json(chain) if chain else "null"),
            '"chain_stop":' + _dumps(t.get("chain_stop")),
            '"invented":' + _dumps(cmp_.get("invented", [])),
            '"lost":' + _frames_json(cmp_.get("lost", [])),
        ]) + "}")
    stats = {"memory_reads": sum(t.get("reads") or 0 for t in threads)}
    return '{"schema":%s,"threads":[%s],"stats":%s}' % (_dumps(VERIFY_SCHEMA), ",".join(out), _dumps(stats))
