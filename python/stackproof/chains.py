"""Compare a backtrace with stackproof's own chain (no gdb: testable anywhere)."""


def _physical(frames):
    return [f for f in frames if f.get("kind") not in ("inline", "tailcall") and f.get("pc") is not None]


def compare(frames, chain):
    """Which frames of `frames` the independent `chain` does not have (invented), and
    which of its frames `frames` lacks (lost), within the stretch both cover."""
    if not chain:
        return {"agree": None, "invented": [], "lost": []}
    mine = {(c["pc"], c["sp"]) for c in chain}
    theirs = {(f["pc"], f["sp"]) for f in _physical(frames)}
    reach = max((c["sp"] or 0) for c in chain)
    their_reach = max([(f["sp"] or 0) for f in _physical(frames)] or [0])
    invented = [f["level"] for f in _physical(frames)
                if (f["pc"], f["sp"]) not in mine and (f["sp"] or 0) <= reach]
    lost = [c for c in chain if (c["pc"], c["sp"]) not in theirs and (c["sp"] or 0) <= their_reach]
    return {"agree": not invented and not lost, "invented": invented, "lost": lost}
