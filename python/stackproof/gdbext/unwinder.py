"""Making gdb's own `bt`, `frame N` and `info registers` use recovered register sets.

One `gdb.unwinder.Unwinder` named "stackproof" serves two features:

- `regs-from-stack --use ADDR`: for one thread, the caller of its newest real
  frame (frame #1 when frame #0 is not inlined) is the register set at ADDR:
  pc = its ip, sp = its sp, every general-purpose register, eflags, cs, ss
  (and orig_rax) from the set. gdb unwinds on from there with its own
  unwinders. Frame #0 is left as it is.
- `stackproof-unwinder on`: a session mode that lets gdb's unwinding pass
  through kernel entry code (no CFI there) and IRQ-stack tops by itself.

The unwinder never raises into gdb: any problem means "not mine" (None).
When it does not apply it costs a register read, and in session mode one
symbol lookup per kernel frame.
"""

import gdb
import gdb.unwinder

from stackproof import _core
from stackproof.gdbext import target

NAME = "stackproof"
MASK = 0xFFFFFFFFFFFFFFFF

class _FrameId:
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


def _thread_key(thread):
    return (thread.inferior.num, tuple(thread.ptid))


class StackproofUnwinder(gdb.unwinder.Unwinder):
    def __init__(self):
        super().__init__(NAME)
        # thread key -> {"level": real frame level, "regs": {gdb name: value}, "address", "layout"}
        self.use = {}
        self.session = False
        # thread key -> {(pc, sp)} of the caller contexts handed to gdb from a register set
        # (frames whose pc was interrupted, not a return address: verify-bt must know).
        self.interrupted = {}
        self._sizes = {}
        self._types = {}
        self.enabled = False

    # -- state ------------------------------------------------------------------

    def refresh(self):
        self.enabled = self.session or bool(self.use)
        self.interrupted.clear()
        gdb.invalidate_cached_frames()

    # -- gdb's entry point ------------------------------------------------------

    def __call__(self, pending_frame):
        try:
            return self._unwind(pending_frame)
        except BaseException:  # never into gdb: a problem means "not mine"
            return None

    def _unwind(self, pf):
        if self.use:
            thread = gdb.selected_thread()
            if thread is not None:
                ctx = self.use.get(_thread_key(thread))
                if ctx is not None and pf.level() == ctx["level"]:
                    return self._caller_is(pf, ctx["regs"], interrupted=True)
        if not self.session:
            return None
        pc = int(pf.read_register("rip")) & MASK
        if not _core.kernel_address(pc):
            return None
        sp = int(pf.read_register("rsp")) & MASK
        # Entry code (the pt_regs its frame sits on) and IRQ-stack tops: the core decides.
        caller = target.session(gdb.selected_inferior()).caller_of(pc, sp)
        if caller is None:
            return None
        return self._caller_is(pf, caller.registers, interrupted=caller.kind == "interrupted")

    # -- UnwindInfo -----------------------------------------------------------------

    def _int_type(self, pf, name):
        """An unsigned integer type as wide as register `name` (eflags, cs, ss are 4 bytes)."""
        size = self._sizes.get(name)
        if size is None:
            size = pf.read_register(name).type.sizeof
            self._sizes[name] = size
        t = self._types.get(size)
        if t is None:
            t = {8: "unsigned long", 4: "unsigned int", 2: "unsigned short"}.get(size)
            t = gdb.lookup_type(t) if t else None
            self._types[size] = t
        return t

    def _caller_is(self, pf, regs, interrupted=False):
        """This frame (id: its sp and pc) has `regs` as its caller's registers."""
        if "rip" not in regs or "rsp" not in regs:
            return None
        if interrupted:
            thread = gdb.selected_thread()
            if thread is not None:
                self.interrupted.setdefault(_thread_key(thread), set()).add((regs["rip"], regs["rsp"]))
        info = pf.create_unwind_info(_FrameId(pf.read_register("rsp"), pf.read_register("rip")))
        for name, value in regs.items():
            try:
                t = self._int_type(pf, name)
                if t is None:
                    continue
                info.add_saved_register(name, gdb.Value(value & ((1 << (8 * t.sizeof)) - 1)).cast(t))
            except (ValueError, gdb.error):
                continue  # e.g. orig_rax on a target description without it
        return info


_unwinder = None


def _drop_sets(_event=None):
    """A resumed, exited or reloaded program: the `--use` sets describe stacks that are gone."""
    u = _unwinder
    if u is None or not u.use:
        return
    try:
        u.use.clear()
        u.refresh()
        print("stackproof: `regs-from-stack --use` sets dropped (the program ran or was reloaded)")
    except Exception:
        pass


def get():
    """The session's one unwinder, registered with gdb on first use."""
    global _unwinder
    if _unwinder is None:
        u = StackproofUnwinder()
        gdb.unwinder.register_unwinder(None, u, replace=True)
        _unwinder = u
        for name in ("cont", "exited", "clear_objfiles"):
            registry = getattr(gdb.events, name, None)
            if registry is not None:
                registry.connect(_drop_sets)
    return _unwinder


def thread_key(thread):
    return _thread_key(thread)


class _Interrupted:
    """Membership in the selected thread's register-set frames, looked up as gdb unwinds
    (the unwinder adds to its sets while a walk goes on)."""

    def __init__(self, sets, key):
        self._sets, self._key = sets, key

    def __contains__(self, pc_sp):
        return pc_sp in self._sets.get(self._key, ())


def interrupted_lookup():
    """A container of the selected thread's frames taken from a register set, live during a walk."""
    if _unwinder is None or not _unwinder.enabled:
        return frozenset()
    thread = gdb.selected_thread()
    if thread is None:
        return frozenset()
    return _Interrupted(_unwinder.interrupted, _thread_key(thread))


def interrupted_frames():
    """{(pc, sp)} of the selected thread's frames that the unwinder took from a register set."""
    if _unwinder is None or not _unwinder.enabled:
        return frozenset()
    thread = gdb.selected_thread()
    if thread is None:
        return frozenset()
    return _unwinder.interrupted.get(_thread_key(thread), frozenset())
