"""verify-bt: which frames of a backtrace are real."""

import sys
from pathlib import Path

import gdb

from stackproof import _core, render
from stackproof.gdbext import target
from stackproof.gdbext.command import FILE, StackproofCommand, ascii_text, frame_limit, refuse_together
from stackproof.gdbext.target import UserError

# crash's `bt -a` of a big machine is megabytes; beyond these it is not crash's output.
CRASH_TEXT_MAX_BYTES = 64 << 20
CRASH_TEXT_MAX_LINES = 1 << 20


class VerifyBt(StackproofCommand):
    name = "verify-bt"

    has_output = True
    summary = "Check each frame of a backtrace against the raw stack and the code."
    values = {"crash_bt": FILE, "max_frames": ["unlimited", str(_core.DEFAULT_MAX_FRAMES)]}

    @classmethod
    def manual(cls):
        return """Sources (give one): gdb's backtrace of the selected thread (default), every
thread (-a), registers (--sp/--pc: stackproof unwinds by itself), a sleeping
kernel task (--task TASK_STRUCT_ADDRESS: its saved thread.sp, or --sp), or
the text of crash's `bt`, `bt -f`, `bt -a` (--crash-bt FILE, `-`: stdin).

Each frame is one line, crash's shape:
  ?#N [SLOT] FUNCTION+OFF [MODULE] at PC    TRUST  VERDICT  REASONS
  ?          a bogus frame (as the kernel marks unreliable ones)
  #N         the frame's number as the source numbers it
  [SLOT]     where its return address is stored (the frame's sp - 8)
  at PC      its pc: for frames above #0, the return address
  TRUST      how it was found: registers, cfi (gdb's unwinding), layout
             (stackproof's frame-layout engine), frame-pointer, scan
  VERDICT    ok: every check passed; probable: they passed as far as they
             could go; unknown: a check could not be made; BOGUS: one failed
  REASONS    the codes below; -v adds the evidence under each frame
Checks: the slot holds the return address; the instruction ending there is
a call; the call leads to the next inner frame's function (directly, or via
a PLT stub, a thunk, tail jumps); the inner frame's layout puts the slot
there. Then stackproof unwinds by itself and compares: "agrees", or its own
chain with the frames the backtrace invented and lost, and a corrected chain
without the bogus frames.

Reason codes:
  slot-mismatch      bogus     the slot does not hold the return address
  no-call-before-ra  bogus     the instruction ending at the ra is no call
  wrong-target       bogus     the call leads to another function
  ra-not-in-text     bogus     the return address is in no code
  inside-frame-of    bogus     the slot lies inside the inner frame (stale)
  frame-size         bogus     the slot is farther up than the inner
                               function's frame size allows
  damaged-registers  bogus     a signal frame's pc or sp no code runs at,
                               or none where __restore_rt says
  stale-ra           bogus     after an indirect call, no caller of its
                               own; a direct call there leads inward
  below-sp           bogus     (crash bt) below the CPU's live sp
  cpu-in-user-mode   bogus     (crash bt) the CPU is in user mode
  unreadable         unknown   the slot or the code could not be read
  no-address         unknown   (crash bt) a frame printed without address
  code-freed         unknown   the ra is in the kernel's freed init text
  rebuilt            probable  (own chain) its return address is lost:
                               rebuilt from its caller's call
  indirect-call      probable  an indirect call not resolved
  target-unreadable  probable  code after the call's target unreadable
  tail-call          probable  the inner function is reached by jumps
  no-symbol          probable  no symbol for the ra or the callee
  tailcall-frame     probable  gdb's frame for a function left by a jump
  signal-frame       ok        the signal trampoline (ra by the kernel)
  interrupted-pc     ok        the pc a signal interrupted: no call
  inline-frame       ok        inlined: the outer frame carries the checks
  stack-bottom       ok        the outermost frame of a kernel task stack
  null-call          ok        pc 0: the outer frame called a NULL pointer
  callee-bogus       -         this call goes elsewhere than the inner
                               frame, which is already bogus

Examples:
  verify-bt                         the selected thread's backtrace
  verify-bt -a -v                   every thread, with the evidence
  verify-bt --crash-bt bt.txt       the frames of crash's `bt -f` output
  verify-bt --json --output bt.json one JSON document into a file

JSON: schema stackproof/verify-bt/1 (README, docs/json.md and
docs/verify-bt.schema.json in stackproof's sources)."""

    def add_arguments(self, p):
        p.add_argument("-a", "--all-threads", action="store_true", help="every thread of the inferior")
        p.add_argument("--sp", metavar="EXPR", help="start from this stack pointer (gdb expression)")
        p.add_argument("--pc", metavar="EXPR", help="start from this pc (with --sp)")
        p.add_argument("--bp", metavar="EXPR", help="frame pointer for --sp/--pc (optional)")
        p.add_argument("--task", metavar="ADDR",
                       help="a sleeping kernel task (task_struct address): start from its saved context "
                            "(thread.sp, or --sp EXPR to give thread.sp)")
        p.add_argument("--crash-bt", metavar="FILE", help="verify the frames of crash's `bt` output")
        p.add_argument("--max-frames", type=frame_limit, default=_core.DEFAULT_MAX_FRAMES, metavar="N|unlimited",
                       help="frames per thread (default %d)" % _core.DEFAULT_MAX_FRAMES)
        p.add_argument("--json", action="store_true", help="print one JSON document (schema stackproof/verify-bt/1)")
        p.add_argument("--strict", action="store_true", help="fail (gdb error) when any frame is bogus")
        p.add_argument("-v", "--verbose", action="store_true", help="show the evidence of every verdict")

    def run(self, args):
        refuse_together(self.name, {
            "-a": args.all_threads,
            "--sp/--pc": args.task is None and (args.sp is not None or args.pc is not None or args.bp is not None),
            "--task": args.task is not None,
            "--crash-bt": args.crash_bt is not None,
        })
        if args.task is not None and (args.pc is not None or args.bp is not None):
            raise UserError("verify-bt: --task takes only --sp (the task's thread.sp), not --pc/--bp")
        if args.task is None and (args.sp is None) != (args.pc is None):
            raise UserError("verify-bt: --sp and --pc go together")
        if args.bp is not None and args.sp is None:
            raise UserError("verify-bt: --bp needs --sp and --pc")
        inf = target.require_target()
        session = target.session(inf)
        threads = []
        current = gdb.selected_thread().num
        if args.crash_bt is not None:
            text = _read_text(args.crash_bt)
            try:
                tasks = session.verify_crash_bt(text, args.max_frames, _cpu_registers(inf))
            except ValueError as e:
                raise UserError("verify-bt: %s: %s" % (args.crash_bt, e))
            for task in tasks:
                threads.append({"source": "crash-bt", "title": task.title or None, "thread": current,
                                "stop": None, "frames": task.frames})
        elif args.task is not None:
            try:
                task = target.task_start(session, args.task, args.sp)
            except UserError as e:
                raise UserError("verify-bt: %s" % e)
            t = self._verify(session, None, (task.pc, task.sp, task.registers), args.max_frames,
                             source="registers", thread=current, task=task,
                             title="TASK %s (%s):" % (args.task, "; ".join(task.notes)))
            threads.append(t)
        elif args.sp is not None:
            sp = target.parse_address(args.sp, "--sp")
            pc = target.parse_address(args.pc, "--pc")
            regs = {"rbp": target.parse_address(args.bp, "--bp")} if args.bp is not None else {}
            threads.append(self._verify(session, None, (pc, sp, regs), args.max_frames,
                                        source="registers", thread=current))
        else:
            selected = gdb.selected_thread()
            chosen = sorted(inf.threads(), key=lambda t: t.num) if args.all_threads else [selected]
            try:
                for i, th in enumerate(chosen):
                    target.progress.update("thread %d of %d" % (i + 1, len(chosen)))
                    th.switch()
                    frames, stop = target.gdb_frames(args.max_frames)
                    title = "Thread %d (%s):" % (th.num, th.name or "LWP %d" % th.ptid[1]) if args.all_threads else None
                    threads.append(self._verify(session, frames, target.frame0_registers(), args.max_frames,
                                                source="gdb", title=title, thread=th.num, stop=stop,
                                                want_chain=args.json))
            finally:
                if selected is not None and selected.is_valid():
                    selected.switch()

        target.progress.done()   # before the output
        _unreadable_kernel_stack_hint(session.memory, threads)
        if args.json:
            sys.stdout.write(render.verify_json(threads) + "\n")
        else:
            styles = target.styles(self.from_tty)
            for t in threads:
                print(ascii_text(render.thread_text(t, verbose=args.verbose, styles=styles,
                                                    columns=target.columns())))
        bogus = sum(len([f for f in t["frames"] if f["verdict"] == "bogus"]) for t in threads)
        if args.strict and bogus:
            raise UserError("verify-bt: %d bogus frame%s" % (bogus, "" if bogus == 1 else "s"))

    @staticmethod
    def _verify(session, frames, start, max_frames, source, title=None, thread=None, stop=None,
                want_chain=True, task=None):
        """`task`: a sleeping task's TaskStart: its own chain is checked as a backtrace."""
        # Text output shows stackproof's own chain only where it differs: build it only then.
        chain = "always" if want_chain else "on-difference"
        c = (session.check(frames, start, max_frames, chain=chain) if task is None else
             session.check_own(start, task.slot, max_frames, chain=chain))
        t = {"source": source, "title": title, "thread": thread, "stop": stop, "frames": c.frames,
             "reads": c.reads}
        if frames is None:
            t["stop"] = c.stop
        if (frames is not None or task is not None) and start is not None:
            t["chain"] = c.chain
            t["chain_stop"] = c.stop
            t["compare"] = {"agree": not c.invented and not c.lost, "invented": list(c.invented),
                            "lost": [c.chain[i] for i in c.lost] if c.chain else []}
        return t


def _cpu_registers(inf):
    """{cpu: (pc, sp, callee-saved regs, user mode)} for crash's `CPU: N` headers. In QEMU's
    dumps (`dump-guest-memory`) each CPU is an NT_PRSTATUS whose pid is CPU+1, so gdb's
    `LWP N+1` is CPU N; other cores (a process's LWPs) get no mapping."""
    selected = gdb.selected_thread()
    out = {}
    try:
        threads = sorted(inf.threads(), key=lambda t: t.num)
        if not threads or [t.ptid[1] for t in threads] != list(range(1, len(threads) + 1)):
            return out
        for th in threads:
            th.switch()
            try:
                pc, sp, regs = target.frame0_registers()
                cs = int(gdb.newest_frame().read_register("cs"))
            except (gdb.error, ValueError):
                continue
            out[th.ptid[1] - 1] = (pc, sp, regs, _core.cpu_in_user_mode(cs & 0xFFFFFFFFFFFFFFFF, pc))
    finally:
        if selected is not None and selected.is_valid():
            selected.switch()
    return out


def _unreadable_kernel_stack_hint(read, threads):
    """An ELF vmcore gives gdb physical memory (and the direct map) only: a kernel stack in
    vmalloc space is not there. Say so once, and where the dump can be read."""
    for t in threads:
        frames = t["frames"]
        sp = frames[0]["sp"] if frames and t["source"] == "gdb" else None
        if sp is None or not _core.kernel_address(sp) or read(sp & ~7, 8) is not None:
            continue
        here = Path(__file__).resolve().parents[4] / "crash" / "stackproof.so"
        how = ("then `extend %s`" % here) if here.is_file() else \
            "with stackproof's crash extension (./install.sh builds it when crash's defs.h is installed)"
        print("verify-bt: the kernel stack at %#x is not in this core (gdb sees an ELF vmcore's physical "
              "memory only, not vmalloc'ed stacks): open the dump in crash, %s" % (sp, how))
        return


def _read_text(path):
    """crash's output from a file, or `-` for standard input, line by line up to
    CRASH_TEXT_MAX_BYTES / CRASH_TEXT_MAX_LINES (`/dev/zero` must not hang gdb)."""
    try:
        f = sys.stdin if path == "-" else open(path, encoding="utf-8", errors="replace")
        try:
            lines, size = [], 0
            while True:
                line = f.readline(CRASH_TEXT_MAX_BYTES + 1 - size)
                if not line:
                    return "".join(lines)
                size += len(line)
                lines.append(line)
                if size > CRASH_TEXT_MAX_BYTES or len(lines) > CRASH_TEXT_MAX_LINES:
                    raise UserError("verify-bt: %s: more than %d MiB or %d lines: not the output of crash's bt "
                                    "(cut it to the tasks wanted)" % (path, CRASH_TEXT_MAX_BYTES >> 20,
                                                                      CRASH_TEXT_MAX_LINES))
        finally:
            if f is not sys.stdin:
                f.close()
    except OSError as e:
        raise UserError("verify-bt: cannot read %s: %s" % (path, e.strerror or e))


VerifyBt()
