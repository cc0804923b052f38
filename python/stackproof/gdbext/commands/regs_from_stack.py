"""regs-from-stack: register sets saved on the stack, and what each stack word is."""

import sys

import gdb

from stackproof import _core
from stackproof.gdbext import target, unwinder
from stackproof.gdbext.command import (FILE, StackproofCommand, ascii_text, bounded_int, frame_limit,
                                        frame_numbers, refuse_together)
from stackproof.gdbext.target import UserError

SCHEMA = "stackproof/regs-from-stack/2"
LAYOUTS = ("pt_regs", "sigframe", "ucontext")
MAX_WORDS = _core.DEFAULT_MAX_WORDS  # --annotate's default: 1 MiB of stack


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
(pt_regs.ip, ra #N FUNCTION, saved rbx of #N, canary, stale ra, ...); with
--task, #N are frames of stackproof's own chain from the task's switch frame.
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
        session = target.session(target.require_target())
        task_stack = task = None
        if args.task is not None:
            try:
                task = target.task_start(session, args.task, None)
            except UserError as e:
                raise UserError("regs-from-stack: %s" % e)
            sp, task_stack = task.sp, (task.stack_lo, task.stack_hi)
        else:
            sp = target.parse_address("$sp", "$sp")
        # What the core needs; it decides and writes the document (src/report.rs).
        given = ((target.parse_address(args.lo, "--from"), target.parse_address(args.hi, "--to"))
                 if args.lo is not None else None)
        inputs = {"ranges": None, "decode": None, "words_range": given}
        if args.address is not None:
            inputs["decode"] = (target.parse_address(args.address), args.layout)
        else:
            if given is not None:
                ranges = [given + (sp,)]
            elif task_stack is not None:
                ranges = [task_stack + (sp,)]
            else:
                # Every stack the chain crosses (IRQ, task, exception stacks; signal stacks).
                user = not _core.kernel_address(sp)
                ranges = [(r.lo, r.hi, r.live_sp) for r in session.scan_ranges(
                    target.frame0_registers(), sp, frames=_gdb_frames() if user else None,
                    mappings=target.mappings() if user else None)]
            lo, hi = ranges[0][:2]
            if hi <= lo:
                raise UserError("regs-from-stack: empty range %#x..%#x" % (lo, hi))
            inputs["ranges"] = ranges
            inputs["words_range"] = (lo, hi)
        if args.annotate:
            inputs.update(self._annotate_inputs(task), annotate=True, max_words=args.max_words)
        try:
            doc = session.regs_document(sp, args.json, **inputs)
        except ValueError as e:
            raise UserError("regs-from-stack: %s" % e)
        target.progress.done()   # before the output
        if args.json:
            sys.stdout.write(doc + "\n")
        else:
            print(ascii_text(doc))

    @staticmethod
    def _annotate_inputs(task):
        """The backtrace that numbers the frames (gdb's; for --task stackproof's own chain
        from the task's switch frame), its starting registers, the segment bases."""
        if task is not None:
            return {"frames": None, "start": (task.pc, task.sp, task.registers), "slot0": task.slot}
        out = {"frames": None, "start": None}
        try:
            out["frames"] = target.gdb_frames(_core.DEFAULT_MAX_FRAMES)[0]
            out["start"] = target.frame0_registers()
        except gdb.error:
            pass
        for name in ("fs_base", "gs_base"):
            try:
                out[name] = int(gdb.parse_and_eval("$" + name)) & 0xFFFFFFFFFFFFFFFF
            except (gdb.error, ValueError):
                pass
        return out

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
        session = target.session(inf)
        addr = target.parse_address(args.use, "--use address")
        newest = gdb.newest_frame()
        level, f = 0, newest
        while f is not None and f.type() == gdb.INLINE_FRAME:
            f, level = f.older(), level + 1
        if f is None:
            raise UserError("regs-from-stack: the thread has no real frame")
        sp = int(newest.read_register("rsp")) & 0xFFFFFFFFFFFFFFFF
        try:
            found = session.decode_regs(addr, args.layout, sp)
        except ValueError as e:
            raise UserError("regs-from-stack: --use %#x: %s" % (addr, e))
        bad = [n for n, ok, required, _d in found["checks"] if required and not ok]
        if bad:
            raise UserError("regs-from-stack: --use %#x: not a valid %s (failed: %s)" % (
                addr, found["layout"], ", ".join(bad)))
        regs = found["registers"]
        if "rip" not in regs or "rsp" not in regs:
            raise UserError("regs-from-stack: --use %#x: the set has no ip/sp" % addr)
        u.use[unwinder.thread_key(thread)] = {"level": level, "regs": regs, "address": addr,
                                              "layout": found["layout"]}
        u.refresh()
        sym = session.symtab.lookup(regs["rip"])
        where = " <%s+%d>" % (sym[0], regs["rip"] - sym[1]) if sym else ""
        print(ascii_text("Thread %d: frame #%d is now the %s at %016x: pc %016x%s sp %016x "
                         "(`regs-from-stack --use off` to undo)" % (
                             thread.num, level + 1, found["layout"], addr, regs["rip"], where, regs["rsp"])))

    @staticmethod
    def _frames(args):
        """Each of gdb's frames with its callee-saved registers from stackproof's own
        unwinding (the core matches the frames and writes the document)."""
        if args.frame is not None and args.frame < 0:
            raise UserError("regs-from-stack: --frame must be 0 or more")
        session = target.session(target.require_target())
        limit = args.frame + 1 if args.frame is not None else (args.max_frames or _core.DEFAULT_MAX_FRAMES)
        frames, gdb_stop = target.gdb_frames(limit)
        try:
            doc = session.frame_registers(frames, target.frame0_registers(), args.json, frame=args.frame,
                                          stop=gdb_stop, max_frames=len(frames) + 16)
        except ValueError as e:
            raise UserError("regs-from-stack: %s" % e)
        target.progress.done()   # before the output
        if args.json:
            sys.stdout.write(doc + "\n")
        else:
            print(ascii_text(doc))


def _gdb_frames():
    """gdb's frames of the selected thread (none when gdb cannot unwind it)."""
    try:
        return target.gdb_frames(_core.DEFAULT_MAX_FRAMES)[0]
    except gdb.error:
        return []


RegsFromStack()
