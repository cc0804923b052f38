"""regs-from-stack: register sets saved on the stack, and what each stack word is."""

import json
import re
import sys

import gdb

from stackproof import __version__, _core, render
from stackproof.gdbext import target, unwinder
from stackproof.gdbext.command import (FILE, StackproofCommand, ascii_text, bounded_int, frame_limit,
                                        frame_numbers, refuse_together)
from stackproof.gdbext.target import UserError

SCHEMA = "stackproof/regs-from-stack/2"
LAYOUTS = ("pt_regs", "sigframe", "ucontext")
USER_SCAN_BELOW = 0x10000
USER_SCAN_MAX = 8 << 20
MAX_WORDS = 1 << 17  # --annotate's default: 1 MiB of stack


class RegsFromStack(StackproofCommand):
    name = "regs-from-stack"

    has_output = True
    summary = "Find and decode register sets (pt_regs, signal frames) on the stack."
    values = {"frame": frame_numbers, "max_frames": ["unlimited", str(_core.DEFAULT_MAX_FRAMES)]}

    @classmethod
    def manual(cls):
        return """Modes (give one; --annotate also shows what --scan finds):
  regs-from-stack ADDR [--layout L]     decode the set at ADDR
  regs-from-stack --scan [--from A --to B]   find the sets on the stack
  regs-from-stack --annotate [--from A --to B]  label every stack word
  regs-from-stack --frame N | --all     callee-saved registers of frames
  regs-from-stack --use ADDR [--layout L]  make gdb unwind through the set
  regs-from-stack --use off             stop doing so (all threads)

Layouts: kernel x86-64 `struct pt_regs` (interrupts, exceptions, syscalls),
user-space `rt_sigframe` (sigframe) and `ucontext`. Without --layout, ADDR
on a kernel stack is a pt_regs, and a user-space ADDR the rt_sigframe or
ucontext whose checks pass (the output says which, and why).
Each candidate is validated (cs/ss, rflags, ip in text, sp, orig_ax decoded)
and one alignment wins. A set is `live`, `stale` (below the live sp) or a
`copy` (a repeated iret frame). The default ranges of a kernel CPU are
every stack its chain crosses (IRQ, task, exception stacks), each with its
own live sp; for user space 64 KiB below $sp up to the end of its mapping
(8 MiB at most), plus the stacks gdb's backtrace reaches through signal
frames (a sigaltstack). --annotate shows at most --max-words words.

Output of ADDR/--scan: `LAYOUT at ADDRESS  STATUS  summary`, the registers,
the checks passed and failed. --annotate: `ADDRESS: VALUE  [label] ...`
(pt_regs.ip, ra #N FUNCTION, saved rbx of #N, canary, stale ra, ...).
--frame/--all: `#N pc PC sp SP FUNCTION` then each callee-saved register
(rbx rbp r12-r15) with where it came from: the starting registers, a slot a
callee's prologue saved it to (gdb's frame number of that callee), a
register set on the stack; or `unknown`.

--use: frame #1 of the selected thread becomes the set at ADDR (pc, sp and
every general-purpose register from it); gdb's `bt`, `frame N`, `info
registers` and `verify-bt` unwind on from there. See `stackproof-unwinder`.

Examples:
  regs-from-stack --scan                  sets on the current stack
  regs-from-stack 0xffffc9000043ba58      decode a pt_regs
  regs-from-stack --frame 4               callee-saved registers of frame 4
  regs-from-stack --all --max-frames unlimited --json

JSON: schema stackproof/regs-from-stack/2 (docs/json.md and
docs/regs-from-stack.schema.json in stackproof's sources)."""

    def add_arguments(self, p):
        p.add_argument("address", nargs="?", metavar="ADDR", help="decode the register set at this address")
        p.add_argument("--layout", choices=LAYOUTS, default=None,
                       help="layout of the set at ADDR (default: from the address)")
        p.add_argument("--scan", action="store_true", help="search the stack for register sets")
        p.add_argument("--annotate", action="store_true", help="print the stack words with what each one is")
        p.add_argument("--from", dest="lo", metavar="EXPR", help="start of the range (gdb expression)")
        p.add_argument("--to", dest="hi", metavar="EXPR", help="end of the range (exclusive)")
        p.add_argument("--frame", type=int, metavar="N", help="callee-saved registers of gdb's frame N")
        p.add_argument("--all", action="store_true", help="callee-saved registers of every frame")
        p.add_argument("--max-frames", type=frame_limit, default=None, metavar="N|unlimited",
                       help="frames for --all (default %d)" % _core.DEFAULT_MAX_FRAMES)
        p.add_argument("--task", metavar="ADDR",
                       help="a sleeping kernel task (task_struct address): its stack, and its saved sp as live sp")
        p.add_argument("--max-words", type=bounded_int(1, 1 << 30), default=MAX_WORDS, metavar="N",
                       help="--annotate shows at most N words (default %d); a longer range is cut" % MAX_WORDS)
        p.add_argument("--json", action="store_true", help="one JSON document (schema %s)" % SCHEMA)
        p.add_argument("--use", metavar="ADDR|off",
                       help="frame #1 of the selected thread becomes the set at ADDR; `off` undoes it")
        p.add_argument("--no-use", action="store_true", help="same as --use off")

    def run(self, args):
        use = args.use is not None or args.no_use
        refuse_together(self.name, {
            "ADDR": args.address is not None, "--scan": args.scan, "--annotate": args.annotate,
            "--frame": args.frame is not None, "--all": args.all, "--use": use},
            allowed=(("--scan", "--annotate"), ("ADDR", "--annotate")))
        if args.layout is not None and args.address is None and not use:
            raise UserError("regs-from-stack: --layout goes with ADDR or --use ADDR")
        if (args.lo is not None or args.hi is not None) and not (args.scan or args.annotate):
            raise UserError("regs-from-stack: --from/--to go with --scan or --annotate")
        if args.task is not None and (args.frame is not None or args.all or use):
            raise UserError("regs-from-stack: --task goes with ADDR, --scan or --annotate")
        if args.max_frames is not None and not args.all:
            raise UserError("regs-from-stack: --max-frames goes with --all")
        if args.frame is not None or args.all:
            return self._frames(args)
        if args.use is not None or args.no_use:
            return self._use(args)
        if args.address is None and not (args.scan or args.annotate):
            raise UserError("regs-from-stack: give ADDR, --scan, --annotate, --frame N or --all (see `help regs-from-stack`)")
        if (args.lo is None) != (args.hi is None):
            raise UserError("regs-from-stack: --from and --to go together")
        inf = target.require_target()
        read = target.memory_reader(inf)
        symtab = target.symtab()
        task_stack = None
        if args.task is not None:
            try:
                _pc, sp, _bp, task_stack, _slot, _notes = target.task_start(read, args.task, None, symtab)
            except UserError as e:
                raise UserError("regs-from-stack: %s" % e)
        else:
            sp = target.parse_address("$sp", "$sp")
        doc = _document(live_sp=render.hexa(sp))
        layout_note = None

        if args.address is not None:
            addr = target.parse_address(args.address)
            try:
                one, layout_note = _decode(read, symtab, addr, args.layout, sp)
                found = [one]
            except ValueError as e:
                raise UserError("regs-from-stack: %s" % e)
            lo = hi = None
        else:
            ranges = []
            if task_stack is not None and args.lo is None:
                lo, hi = task_stack
            elif args.lo is None:
                # Every kernel stack the CPU's chain crosses (IRQ, task, exception stacks).
                ranges = [tuple(r) for r in _core.kernel_scan_ranges(read, symtab, target.frame0_registers(), sp)]
                lo, hi = ranges[0][:2] if ranges else self._range(args, sp)
            else:
                lo, hi = self._range(args, sp)
            if hi <= lo:
                raise UserError("regs-from-stack: empty range %#x..%#x" % (lo, hi))
            ranges = ranges or [(lo, hi, sp)]
            if task_stack is None and args.lo is None and not _core.kernel_address(sp):
                ranges += self._signal_stacks(args, (lo, hi))
            found, unreadable, truncated = [], [], None
            for rlo, rhi, rsp in ranges:
                f, u, t, _reads = _core.scan_regs(read, symtab, rlo, rhi, rsp)
                found += f
                unreadable += u
                truncated = truncated if truncated is not None else t
            found.sort(key=lambda f: f["address"])
            doc["range"] = [render.hexa(lo), render.hexa(hi)]
            doc["ranges"] = [{"range": [render.hexa(a), render.hexa(b)], "live_sp": render.hexa(c)}
                             for a, b, c in ranges]
            doc["unreadable"] = [[render.hexa(a), render.hexa(b)] for a, b in unreadable]
            doc["truncated_at"] = render.hexa(truncated)
        doc["found"] = [_found_json(f) for f in found]
        doc["layout_note"] = layout_note

        words = None
        if args.annotate:
            words, cut = self._annotated_words(read, symtab, found, lo, hi, sp, args.max_words)
            doc["words"] = [{"address": render.hexa(a), "value": render.hexa(v), "labels": labels,
                             "unreadable_bytes": n if v is None else None}
                            for a, v, labels, n in words]
            doc["words_cut_at"] = render.hexa(cut)

        target.progress.done()   # before the output
        if args.json:
            sys.stdout.write(json.dumps(doc, separators=(",", ":"), check_circular=False) + "\n")
            return
        out = []
        if lo is not None:
            out.append("Scanned %s (live sp %016x): %d register set%s" % (
                ", ".join("%016x..%016x" % r[:2] for r in ranges), sp, len(found), "" if len(found) == 1 else "s"))
            for a, b in doc["unreadable"]:
                out.append("  unreadable: %s..%s" % (a, b))
        if layout_note:
            out.append("(%s)" % layout_note)
        for f in found:
            out.extend(_found_text(f))
        if words is not None:
            out.append("")
            for a, v, labels, n in words:
                if v is None and n > 8:
                    out.append("%016x: ... %#x bytes unreadable ..." % (a, n))
                    continue
                val = "%016x" % v if v is not None else "<unreadable>   "
                out.append("%016x: %s  %s" % (a, val, " ".join("[%s]" % l for l in labels)))
            if cut is not None:
                out.append("... stopped at %016x after %d words (--max-words N shows more)" % (cut, args.max_words))
        print(ascii_text("\n".join(out)))

    def _use(self, args):
        off = args.no_use or args.use.strip().lower() in ("off", "none")
        if args.no_use and args.use is not None and args.use.strip().lower() not in ("off", "none"):
            raise UserError("regs-from-stack: --use ADDR and --no-use contradict each other")
        if args.address is not None or args.scan or args.annotate or args.lo is not None or args.hi is not None:
            raise UserError("regs-from-stack: --use takes no ADDR, --scan, --annotate, --from or --to")
        if args.json:
            raise UserError("regs-from-stack: --use prints no JSON")
        u = unwinder.get()
        if off:
            n = len(u.use)
            u.use.clear()
            u.refresh()
            print("gdb unwinds with its own unwinders again" if n else "no register set was in use")
            return
        inf = target.require_target()
        thread = gdb.selected_thread()
        if thread is None:
            raise UserError("regs-from-stack: no thread selected")
        read = target.memory_reader(inf)
        symtab = target.symtab()
        addr = target.parse_address(args.use, "--use address")
        newest = gdb.newest_frame()
        level, f = 0, newest
        while f is not None and f.type() == gdb.INLINE_FRAME:
            f, level = f.older(), level + 1
        if f is None:
            raise UserError("regs-from-stack: the thread has no real frame")
        sp = int(newest.read_register("rsp")) & 0xFFFFFFFFFFFFFFFF
        try:
            found, _note = _decode(read, symtab, addr, args.layout, sp)
        except ValueError as e:
            raise UserError("regs-from-stack: --use %#x: %s" % (addr, e))
        bad = [n for n, ok, required, _d in found["checks"] if required and not ok]
        if bad:
            raise UserError("regs-from-stack: --use %#x: not a valid %s (failed: %s)" % (
                addr, found["layout"], ", ".join(bad)))
        regs = unwinder.gdb_registers(found["regs"])
        if "rip" not in regs or "rsp" not in regs:
            raise UserError("regs-from-stack: --use %#x: the set has no ip/sp" % addr)
        u.use[unwinder.thread_key(thread)] = {"level": level, "regs": regs, "address": addr,
                                              "layout": found["layout"]}
        u.refresh()
        sym = symtab.lookup(regs["rip"])
        where = " <%s+%d>" % (sym[0], regs["rip"] - sym[1]) if sym else ""
        print(ascii_text("Thread %d: frame #%d is now the %s at %016x: pc %016x%s sp %016x "
                         "(`regs-from-stack --use off` to undo)" % (
                             thread.num, level + 1, found["layout"], addr, regs["rip"], where, regs["rsp"])))

    @staticmethod
    def _frames(args):
        """Each frame's callee-saved registers from stackproof's own unwinding, matched to gdb's frames."""
        if args.frame is not None and args.frame < 0:
            raise UserError("regs-from-stack: --frame must be 0 or more")
        inf = target.require_target()
        read = target.memory_reader(inf)
        symtab = target.symtab()
        limit = args.frame + 1 if args.frame is not None else (args.max_frames or _core.DEFAULT_MAX_FRAMES)
        frames, gdb_stop = target.gdb_frames(limit)
        if args.frame is not None and args.frame >= len(frames):
            raise UserError("regs-from-stack: no frame %d (gdb has %d)" % (args.frame, len(frames)))
        _reports, chain, chain_stop, _reads, _inv, _lost = _core.check_chain(read, symtab, frames, target.frame0_registers(),
                                                                len(frames) + 16, True)
        mine = {(c["pc"], c["sp"]): c for c in chain or []}
        by_sp = {c["sp"]: c for c in chain or []}
        # Provenance names frames by stackproof's numbering; show gdb's.
        gdb_level = {}
        for level, pc, sp, _slot, kind, _name, _trust in frames:
            c = mine.get((pc, sp))
            if c is not None and kind != "inline":
                gdb_level.setdefault(c["level"], level)
        renumber = lambda text: re.sub(r"\(frame #(\d+)\)",
                                       lambda m: "(frame #%s)" % gdb_level.get(int(m.group(1)), "?"), text)
        wanted = [frames[args.frame]] if args.frame is not None else frames
        doc = _document(frames=[], stop=gdb_stop if args.frame is None else None)
        describe = {}   # the text shows function+off [module]
        for level, pc, sp, _slot, kind, _name, _trust in wanted:
            c = mine.get((pc, sp))
            if c is None and kind in ("tailcall", "inline"):
                # A tail call restored the callee-saved registers before its jump, and an
                # inlined function shares its frame: both have the registers of the
                # physical frame at the same sp.
                c = by_sp.get(sp)
            entry = {"level": level, "pc": render.hexa(pc), "sp": render.hexa(sp), "kind": kind,
                     "matched": c is not None, "function": None, "module": None, "registers": {},
                     "unknown_reason": None}
            if c is None:
                why = "stackproof's own unwinding did not reach this frame" + (
                    " (%s)" % chain_stop if chain_stop else "")
                entry["unknown_reason"] = why
            else:
                entry["function"], entry["module"] = c["function"], c["module"]
                describe[level] = c["name"]
                for name, value, origin, _at in c["regs"]:
                    entry["registers"][name] = {"value": render.hexa(value), "origin": renumber(origin)}
            doc["frames"].append(entry)
        target.progress.done()   # before the output
        if args.json:
            sys.stdout.write(json.dumps(doc, separators=(",", ":"), check_circular=False) + "\n")
            return
        out = []
        for e in doc["frames"]:
            out.append("#%d  pc %s  sp %s  %s" % (e["level"], e["pc"][2:].rjust(16, "0"), e["sp"][2:].rjust(16, "0"),
                                                  describe.get(e["level"], "")))
            if not e["matched"]:
                out.append("    all unknown: %s" % e["unknown_reason"])
            for name, r in e["registers"].items():
                out.append("    %s" % r["origin"] if r["value"] else "    %-3s unknown" % name)
        if doc["stop"]:
            out.append("(gdb's frames: %s)" % doc["stop"])
        print(ascii_text("\n".join(out)))

    @staticmethod
    def _range(args, sp):
        if args.lo is not None:
            return target.parse_address(args.lo, "--from"), target.parse_address(args.hi, "--to")
        end = _mapping_end(sp) or sp + (1 << 20)
        return max(sp - USER_SCAN_BELOW, 0x1000) & ~0xFFF, min(end, sp + USER_SCAN_MAX)

    @classmethod
    def _signal_stacks(cls, args, first):
        """Default ranges, each with its live sp, of the other stacks gdb's backtrace
        reaches through signal frames: the trampoline's (a sigaltstack) and the
        interrupted frame's. A range is cut where it would overlap one already taken."""
        try:
            frames, _stop = target.gdb_frames(_core.DEFAULT_MAX_FRAMES)
        except gdb.error:
            return []
        sps = []
        for i, (_level, _pc, fsp, _slot, kind, _name, _trust) in enumerate(frames):
            if kind != "sigtramp":
                continue
            sps.append(fsp)
            if i + 1 < len(frames):
                sps.append(frames[i + 1][2])
        taken = [first]
        out = []
        for s in sps:  # innermost first: the first sp met on a stack is its live sp
            if s is None or _core.kernel_address(s) or any(lo <= s < hi for lo, hi in taken):
                continue
            lo, hi = cls._range(args, s)
            lo = max([lo] + [h for _l, h in taken if h <= s])
            hi = min([hi] + [l for l, _h in taken if l > s])
            taken.append((lo, hi))
            out.append((lo, hi, s))
        return out

    @staticmethod
    def _annotated_words(read, symtab, found, lo, hi, sp, max_words):
        """Every word from sp (or --from) up, labelled: saved-register slots, return addresses
        of gdb's frames (`ra #N`), other return addresses (stale)."""
        if lo is None:
            lo, hi = sp, target.end_of(sp, 0x200)
        labels = {}
        for f in found:
            for addr, label in f["labels"]:
                labels.setdefault(addr, []).append(label)
        chain = {}
        try:
            frames, _stop = target.gdb_frames(_core.DEFAULT_MAX_FRAMES)
            for level, pc, fsp, _slot, kind, _name, _trust in frames:
                if level > 0 and fsp is not None and kind == "normal":
                    chain[fsp - 8] = (level, pc)
            # Where each frame's callee-saved registers were saved, by gdb's frame numbers.
            _r, own, _s, _n, _i, _l = _core.check_chain(read, symtab, frames, target.frame0_registers(),
                                                 len(frames) + 16, True)
            gdb_level = {(pc, fsp): level for level, pc, fsp, _slot, kind, _name, _trust in frames
                         if kind != "inline"}
            for c in own or []:
                lvl = gdb_level.get((c["pc"], c["sp"]))
                for name, _value, _origin, at in c["regs"]:
                    # The innermost frame whose value it is; outer frames that kept it share the slot.
                    mine = "saved %s of #" % name
                    if at is not None and lvl is not None and not any(
                            l.startswith(mine) for l in labels.get(at, [])):
                        labels.setdefault(at, []).append("%s%d" % (mine, lvl))
        except gdb.error:
            pass
        canary = _canary(read, sp)
        out = []
        rows, cut = _core.stack_rows(read, symtab, max(lo, sp) if lo <= sp < hi else lo, hi, max_words)
        for addr, value, ra, size in rows:
            if value is None:
                out.append((addr, None, [], size))
                continue
            ls = list(labels.get(addr, []))
            if canary is not None and value == canary:
                ls.append("canary")
            if addr in chain and chain[addr][1] == value:
                ls.append("ra #%d %s" % (chain[addr][0], ra or "??"))
            elif ra is not None:
                ls.append("ra %s, not in the backtrace" % ra if addr >= sp else "stale ra %s (below sp)" % ra)
            out.append((addr, value, ls, size))
        return out, cut


def _document(**members):
    """A stackproof/regs-from-stack/2 document: every member in every mode, null
    where the mode has none (docs/json.md, docs/regs-from-stack.schema.json)."""
    doc = {"schema": SCHEMA, "stackproof": __version__, "live_sp": None, "range": None, "ranges": None,
           "unreadable": None, "truncated_at": None, "layout_note": None, "found": None, "words": None,
           "words_cut_at": None,
           "frames": None, "stop": None}
    doc.update(members)
    return doc


def _decode(read, symtab, addr, layout, sp):
    """The set at `addr` in `layout`, or when none is given, in the layout the address
    implies: a kernel stack holds pt_regs; a user stack an rt_sigframe or a ucontext,
    the first whose required checks pass. Returns (found, a note saying what was chosen)."""
    if layout is not None:
        return _core.decode_regs(read, symtab, addr, layout, sp), None
    if _core.kernel_address(addr):
        return _core.decode_regs(read, symtab, addr, "pt_regs", sp), None
    tried = []
    for name in ("sigframe", "ucontext"):
        f = _core.decode_regs(read, symtab, addr, name, sp)
        if all(ok for _n, ok, required, _d in f["checks"] if required):
            return f, "layout %s: a user-space address, and its checks pass (--layout to choose)" % f["layout"]
        tried.append(f)
    return tried[0], ("layout %s: a user-space address; neither rt_sigframe nor ucontext passes its checks "
                      "here (--layout pt_regs|sigframe|ucontext to choose)" % tried[0]["layout"])


def _canary(read, sp):
    """The stack-protector canary: %fs:0x28 in user space, %gs:0x28 (per-CPU) in the kernel."""
    base = "$gs_base" if _core.kernel_address(sp) else "$fs_base"
    try:
        b = int(gdb.parse_and_eval(base)) & 0xFFFFFFFFFFFFFFFF
    except (gdb.error, ValueError):
        return None
    raw = read(b + 0x28, 8) if b and b + 0x28 <= target.U64_MAX - 7 else None
    v = int.from_bytes(raw, "little") if raw else None
    return v if v not in (None, 0) else None


def _mapping_end(addr):
    """End of the memory mapping holding `addr`: `info proc mappings` for a process,
    the core's `loadN` sections (`info files`) for a core; None when neither says."""
    for cmd, pat in (("info proc mappings", r"\s*0x([0-9a-f]+)\s+0x([0-9a-f]+)"),
                     ("info files", r"\s*0x([0-9a-f]+) - 0x([0-9a-f]+) is load")):
        try:
            text = gdb.execute(cmd, to_string=True)
        except gdb.error:
            continue
        for line in text.splitlines():
            m = re.match(pat, line)
            if m and int(m.group(1), 16) <= addr < int(m.group(2), 16):
                return int(m.group(2), 16)
    return None


def _found_json(f):
    return {
        "address": render.hexa(f["address"]),
        "layout": f["layout"],
        "status": f["status"],
        "status_reason": f["status_reason"],
        "copy_of": render.hexa(f["copy_of"]),
        "summary": f["summary"],
        "registers": {name: render.hexa(v) for name, v in f["regs"]},
        "checks": [{"name": n, "ok": ok, "required": req, "detail": d} for n, ok, req, d in f["checks"]],
    }


def _found_text(f):
    out = ["%s at %016x  %s  %s" % (f["layout"], f["address"], f["status"].upper() if f["status"] != "live"
                                     else "live", f["summary"])]
    if f["status"] != "live":
        out.append("  (%s)" % f["status_reason"])
    regs = ["%8s %016x" % (n, v) for n, v in f["regs"]]
    for i in range(0, len(regs), 3):
        out.append("  " + "  ".join(regs[i:i + 3]))
    bad = [c for c in f["checks"] if not c[1]]
    good = [c for c in f["checks"] if c[1]]
    out.append("  checks passed: %s" % ", ".join("%s (%s)" % (n, d) if d else n for n, _ok, _r, d in good))
    if bad:
        out.append("  checks FAILED: %s" % ", ".join("%s (%s)" % (n, d) if d else n for n, _ok, _r, d in bad))
    return out


RegsFromStack()
