"""stackproof-unwinder: let gdb's own unwinding pass kernel entry code and IRQ-stack tops."""

from stackproof.gdbext import unwinder
from stackproof.gdbext.command import StackproofCommand
from stackproof.gdbext.target import UserError


class StackproofUnwinderCommand(StackproofCommand):
    name = "stackproof-unwinder"

    summary = "Let gdb's own bt unwind through kernel exception frames and IRQ stacks."

    @classmethod
    def manual(cls):
        return """  stackproof-unwinder on|off     switch the session mode (off by default)
  stackproof-unwinder            show whether it is on

While on, a gdb unwinder named "stackproof" (see `info unwinder`) handles
two kinds of kernel frames that have no usable CFI:

- a frame in entry code (asm_sysvec_*, asm_exc_*, asm_common_interrupt,
  entry_SYSCALL_64, irq_entries_start, ...): its caller is the pt_regs the
  entry code saved (at the frame's sp, or the first live one above it):
  every general-purpose register, rip, rsp, eflags, cs, ss. A user-mode
  pt_regs gives one user-space frame, and gdb stops there ("previous frame
  inner to this frame": the user stack lies below the kernel's).
- a frame whose sp is the top word of an IRQ stack: that word is the
  interrupted stack pointer; the caller is the first return address above
  it (in 6.x: the entry stub's frame, right below its pt_regs).

Every other frame is left to gdb's unwinders. Frames it made are
`interrupted` frames for verify-bt. `regs-from-stack --use` works whether
this is on or off.

Examples:
  stackproof-unwinder on         then `bt`, `frame N`, `info registers`
  stackproof-unwinder off        gdb's own unwinding only"""

    def add_arguments(self, p):
        p.add_argument("state", nargs="?", choices=("on", "off"), help="on or off")

    def run(self, args):
        u = unwinder.get()
        if args.state is None:
            print("stackproof-unwinder is %s" % ("on" if u.session else "off"))
            return
        if args.state not in ("on", "off"):
            raise UserError("stackproof-unwinder: say on or off")
        u.session = args.state == "on"
        u.refresh()
        print("stackproof-unwinder is %s" % ("on" if u.session else "off"))


StackproofUnwinderCommand()
