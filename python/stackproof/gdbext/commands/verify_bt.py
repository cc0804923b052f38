"""verify-bt: which frames of a backtrace are real."""

import sys
from pathlib import Path

import gdb

from stackproof import _core, render
from stackproof.gdbext import target
from stackproof.gdbext.command import StackproofCommand, ascii_text, bounded_int
from stackproof.gdbext.target import UserError

MAX_FRAMES = 1 << 20
# crash's `bt -a` of a big machine is megabytes; beyond these it is not crash's output.
CRASH_TEXT_MAX_BYTES = 64 << 20
CRASH_TEXT_MAX_LINES = 1 << 20


class VerifyBt(StackproofCommand):
    name = "verify-bt"

    @classmethod
    def description(cls):
        return """Check every frame of a backtrace against the raw stack and the code.

For each frame: does the stack slot hold its return address, is the
instruction before it a call, does that call lead to the next inner frame's
function? Verdicts: ok, probable, unknown (could not check, e.g. unreadable),
bogus (disproved). Bogus frames are marked with `?`.

Sources: gdb's backtrace of the selected thread (default), every thread (-a),
registers given with --sp/--pc (stackproof unwinds by itself), a sleeping
kernel task's saved context (--task TASK_STRUCT_ADDRESS: from thread.sp, found
without debug info, or given with --sp), or the text of crash's `bt` / `bt -f`
(--crash-bt FILE, `-` for standard input)."""

    def add_arguments(self, p):
        p.add_argument("-a", "--all-threads", action="store_true", help="every thread of the inferior")
        p.add_argument("--sp", metavar="EXPR", help="start from this stack pointer (gdb expression)")
        p.add_argument("--pc", metavar="EXPR", help="start from this pc (with --sp)")
        p.add_argument("--bp", metavar="EXPR", help="frame pointer for --sp/--pc (optional)")
        p.add_argument("--task", metavar="ADDR",
                       help="a sleeping kernel task (task_struct address): start from its saved context "
                            "(thread.sp, or --sp EXPR to give thread.sp)")
        p.add_argument("--crash-bt", metavar="FILE", help="verify the frames of crash's `bt` output")
        p.add_argument("--max-frames", type=bounded_int(1, MAX_FRAMES), default=1024, metavar="N",
                       help="frames per thread (default 1024)")
        p.add_argument("--json", action="store_true", help="print one JSON document (schema stackproof/verify-bt/1)")
        p.add_argument("--strict", action="store_true", help="fail (gdb error) when any frame is bogus")
        p.add_argument("-v", "--verbose", action="store_true", help="show the evidence of every verdict")

    def run(self, args):
        if args.max_frames < 1:
            raise UserError("verify-bt: --max-frames must be at least 1")
        if args.task is not None and (args.pc is not None or args.bp is not None or args.crash_bt is not None
                                      or args.all_threads):
            raise UserError("verify-bt: --task takes only --sp (the task's thread.sp), not --pc/--bp/--crash-bt/-a")
        if args.task is None and (args.sp is None) != (args.pc is None):
            raise UserError("verify-bt: --sp and --pc go together")
        if args.bp is not None and args.sp is None:
            raise UserError("verify-bt: --bp needs --sp and --pc")
        inf = target.require_target()
        read = target.memory_reader(inf)
        symtab = target.symtab()
        threads = []
        current = gdb.selected_thread().num
        if args.crash_bt is not None:
            text = _read_text(args.crash_bt)
            try:
                tasks = _core.verify_crash_bt(read, symtab, text, args.max_frames, _cpu_registers(inf))
            except ValueError as e:
                raise UserError("verify-bt: %s: %s" % (args.crash_bt, e))
            for title, reports in tasks:
                threads.append({"source": "crash-bt", "title": title or None, "thread": current,
                                "stop": None, "frames": reports})
        elif args.task is not None:
            try:
                pc, sp, regs, _stack, slot, notes = target.task_start(read, args.task, args.sp, symtab)
            except UserError as e:
                raise UserError("verify-bt: %s" % e)
            _r, chain, stop, _n, _i, _l = _core.check_chain(read, symtab, None, (pc, sp, regs), args.max_frames)
            frames = [(c["level"], c["pc"], c["sp"], c["slot"], c["kind"], None, c["trust"]) for c in chain]
            if frames and slot is not None:
                # ret_addr was pushed by `call __switch_to_asm`: its slot is checked like any.
                frames[0] = frames[0][:3] + (slot,) + frames[0][4:]
            t = self._verify(read, symtab, frames, (pc, sp, regs), args.max_frames, source="registers",
                             thread=current, stop=stop, title="TASK %s (%s):" % (args.task, "; ".join(notes)))
            threads.append(t)
        elif args.sp is not None:
            sp = target.parse_address(args.sp, "--sp")
            pc = target.parse_address(args.pc, "--pc")
            regs = {"rbp": target.parse_address(args.bp, "--bp")} if args.bp is not None else {}
            threads.append(self._verify(read, symtab, None, (pc, sp, regs), args.max_frames,
                                        source="registers", thread=current))
        else:
            selected = gdb.selected_thread()
            chosen = sorted(inf.threads(), key=lambda t: t.num) if args.all_threads else [selected]
            try:
                for th in chosen:
                    th.switch()
                    frames, stop = target.gdb_frames(args.max_frames)
                    title = "Thread %d (%s):" % (th.num, th.name or "LWP %d" % th.ptid[1]) if args.all_threads else None
                    threads.append(self._verify(read, symtab, frames, target.frame0_registers(), args.max_frames,
                                                source="gdb", title=title, thread=th.num, stop=stop,
                                                want_chain=args.json))
            finally:
                if selected is not None and selected.is_valid():
                    selected.switch()

        _unreadable_kernel_stack_hint(read, threads)
        if args.json:
            sys.stdout.write(render.verify_json(threads) + "\n")
        else:
            colour = target.styled()
            for t in threads:
                print(ascii_text(render.thread_text(t, verbose=args.verbose, colour=colour)))
        bogus = sum(len([f for f in t["frames"] if f["verdict"] == "bogus"]) for t in threads)
        if args.strict and bogus:
            raise UserError("verify-bt: %d bogus frame%s" % (bogus, "" if bogus == 1 else "s"))

    @staticmethod
    def _verify(read, symtab, frames, start, max_frames, source, title=None, thread=None, stop=None,
                want_chain=True):
        # Text output shows stackproof's own chain only where it differs: build it only then.
        reports, chain, chain_stop, reads, invented, lost = _core.check_chain(
            read, symtab, frames, start, max_frames, False, "always" if want_chain else "on-difference")
        t = {"source": source, "title": title, "thread": thread, "stop": stop, "frames": reports,
             "reads": reads}
        if frames is None:
            t["stop"] = chain_stop
        elif start is not None:
            t["chain"] = chain
            t["chain_stop"] = chain_stop
            t["compare"] = {"agree": not invented and not lost, "invented": list(invented),
                            "lost": [chain[i] for i in lost] if chain else []}
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
