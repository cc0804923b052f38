"""What the core needs from gdb: memory, symbols, frames, expressions.

Everything gdb-specific is here, so the commands stay small and the Rust core
never sees gdb.
"""

import os
import re
import time

import gdb

from stackproof import _core


class UserError(Exception):
    """A problem to report to the user as one line (bad arguments, no target)."""


# ---- the target -------------------------------------------------------------

def require_target():
    """The selected inferior, if it has something to read (process, core, gdbstub)."""
    inf = gdb.selected_inferior()
    if inf is None or not inf.threads():
        raise UserError("no process or core file (run a program or load one with `core-file`)")
    try:
        arch = gdb.selected_frame().architecture().name()
    except gdb.error as e:
        raise UserError("no frame selected: %s" % e)
    if "x86-64" not in arch:
        raise UserError("only x86-64 targets are supported (this one is %s)" % arch)
    return inf


def _raw_reader(inf):
    read_memory = inf.read_memory

    def read(addr, n):
        try:
            return read_memory(addr, n).tobytes()
        except Exception:  # gdb.MemoryError, overflow on odd addresses
            return None

    return read


# The session's memory cache: kept across commands while the target cannot have
# changed (a core, a stopped process), dropped when it runs or memory is written.
_memory = {"key": None, "mem": None}


def forget_memory(*_args):
    """Drop the session's memory cache (an event handler, and for benchmarks)."""
    _memory.update(key=None, mem=None)


for _ev in ("cont", "stop", "exited", "memory_changed", "inferior_call", "new_objfile",
            "clear_objfiles", "new_inferior", "inferior_deleted", "new_thread"):
    if hasattr(gdb.events, _ev):
        getattr(gdb.events, _ev).connect(forget_memory)


def memory_reader(inf):
    """`read(addr, n) -> bytes | None` for the target; unreadable is None, never zeros.

    Reads go through a block cache shared by the session's commands; it is
    dropped on every event that can change memory, and not kept at all while
    threads may run (non-stop, background execution)."""
    if _may_run(inf):
        return _core.TargetMemory(_raw_reader(inf))
    # A new core or process is a new target connection (thread numbers are reused).
    key = (inf.num, inf.pid, getattr(inf, "connection_num", None))
    if _memory["key"] != key:
        _memory.update(key=key, mem=_core.TargetMemory(_raw_reader(inf)))
    return _memory["mem"]


def session(inf):
    """The core's analyses on `inf`'s memory and the symbols gdb has loaded."""
    return _core.Session(memory_reader(inf), symtab())


_MAPPING_LINES = (("info proc mappings", re.compile(r"\s*0x([0-9a-f]+)\s+0x([0-9a-f]+)")),
                  ("info files", re.compile(r"\s*0x([0-9a-f]+) - 0x([0-9a-f]+) is load")))


def mappings():
    """`[(start, end)]` of the target's memory mappings: `info proc mappings` for a
    process, then the core's `loadN` sections (`info files`)."""
    out = []
    for cmd, pat in _MAPPING_LINES:
        try:
            text = gdb.execute(cmd, to_string=True)
        except gdb.error:
            continue
        for line in text.splitlines():
            m = pat.match(line)
            if m:
                out.append((int(m.group(1), 16), int(m.group(2), 16)))
    return out


def _may_run(inf):
    try:
        if gdb.parameter("non-stop"):
            return True
    except (gdb.error, RuntimeError):
        pass
    th = gdb.selected_thread()
    return th is not None and th.is_running()


U64_MAX = 0xFFFFFFFFFFFFFFFF


def end_of(addr, size):
    """`addr + size`, saturated at the top of the address space (no range passes 2^64)."""
    return min(addr + size, U64_MAX)


def parse_address(expr, what="address"):
    """A gdb expression (`$sp+8`, `0xffff...`, `&var`) as an unsigned 64-bit integer."""
    try:
        v = gdb.parse_and_eval(expr)
        return int(v.cast(gdb.lookup_type("unsigned long"))) & 0xFFFFFFFFFFFFFFFF
    except (gdb.error, RuntimeError, ValueError, OverflowError) as e:
        raise UserError("cannot evaluate %s %r: %s" % (what, expr, e))


# ---- symbols ------------------------------------------------------------------

_INFO_FILES_LINE = re.compile(r"^\s*0x([0-9a-f]+) - 0x([0-9a-f]+) is (\S+)(?: in (.+))?$")
_symtab_cache = {"key": None, "symtab": None}
# The session's parsed ELF files: a table rebuilt for another core reuses libc's parse.
_elf_files = _core.ElfFiles()


def _sections_by_file():
    """{path or None (the exec file): {section: address}} from `info files`."""
    out = {}
    try:
        text = gdb.execute("info files", to_string=True)
    except gdb.error:
        return out
    for line in text.splitlines():
        m = _INFO_FILES_LINE.match(line)
        if not m:
            continue
        start, _end, sect, path = m.groups()
        out.setdefault(path.strip() if path else None, {}).setdefault(sect, int(start, 16))
    return out


_MAINT_OBJFILE = re.compile(r"^Object file: `?(.*?)'?(?:, file type \S+\.)?$")
_MAINT_SECTION = re.compile(r"^\s*\[\d+\]\s+0x([0-9a-f]+)->0x([0-9a-f]+) at 0x[0-9a-f]+: (\S+)(.*)$")


def _sections_by_objfile(data_ranges=None):
    """{path: {section: address}} for every objfile, from `maint info sections -all-objects`.

    `data_ranges`, a list, receives `(start, end)` of the objfiles' allocated
    sections that hold no code (the core file's own sections are not included).

    With a core and no exec file, `info files` lists no section of the files
    loaded with `symbol-file` / `add-symbol-file` (a vmlinux, kernel modules);
    this lists them, placed where gdb put them.
    """
    out = {}
    try:
        text = gdb.execute("maint info sections -all-objects", to_string=True)
    except gdb.error:
        return out
    current = None
    for line in text.splitlines():
        if not line.startswith(" "):
            m = _MAINT_OBJFILE.match(line)
            current = out.setdefault(m.group(1), {}) if m else None
            continue
        if current is None:
            continue
        m = _MAINT_SECTION.match(line)
        if m:
            start, end, name, flags = int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4).split()
            current.setdefault(name, start)
            if data_ranges is not None and "ALLOC" in flags and "CODE" not in flags and end > start:
                data_ranges.append((start, end))
    return out


def _elf_type(path):
    try:
        with open(path, "rb") as f:
            head = f.read(18)
    except OSError:
        return None
    if len(head) < 18 or head[:4] != b"\x7fELF" or head[4] != 2:
        return None
    return int.from_bytes(head[16:18], "little")


def _module_name(path, exe):
    """None for the main image; a kernel module as crash names it (`kvm_intel`); else the file name."""
    if path == exe:
        return None
    base = os.path.basename(path)
    for suffix in (".ko.debug", ".ko"):
        if base.endswith(suffix):
            return base[: -len(suffix)].replace("-", "_")
    return base


def _bias_by_probe(path):
    """Where gdb put `path` when `info files` does not say (e.g. `symbol-file -o OFF`)."""
    probe = _elf_files.probe_symbol(path)
    if probe is None:
        return None
    name, link = probe
    try:
        addr = int(gdb.parse_and_eval("(unsigned long)&'%s'" % name))
    except gdb.error:
        return None
    return (addr - link) & 0xFFFFFFFFFFFFFFFF


_data_ranges = {"key": None, "ranges": []}


def _in_data_section(addr):
    """Is `addr` in an objfile's data section (`.data..percpu` at 0 in a vmlinux, `.bss`)?
    gdb names such addresses after data symbols; they are no code."""
    key = _symtab_cache["key"]
    if _data_ranges["key"] != key:
        ranges = []
        _sections_by_objfile(ranges)
        _data_ranges.update(key=key, ranges=ranges)
    return any(lo <= addr < hi for lo, hi in _data_ranges["ranges"])


def _gdb_fallback(addr):
    """A symbol for `addr` from gdb itself (vDSO, JIT, files we cannot read), not in data sections."""
    if _in_data_section(addr):
        return None
    try:
        text = gdb.format_address(addr)
    except Exception:
        return None
    m = re.search(r"<([^>+]+)(?:\+(\d+))?>", text)
    if not m:
        return None
    name, off = m.group(1), int(m.group(2) or 0)
    return (name, addr - off, 0, None)


def symtab():
    """The session's symbols, rebuilt only when the set of objfiles changes."""
    objfiles = gdb.objfiles()
    key = tuple((o.filename, id(o)) for o in objfiles)
    if _symtab_cache["key"] == key:
        return _symtab_cache["symtab"]
    st = _core.Symtab()
    st.set_fallback(_gdb_fallback)
    exe = gdb.current_progspace().filename
    sections = _sections_by_file()
    per_objfile = None  # `maint info sections`, asked only when `info files` is not enough
    debug_of = {}
    for o in objfiles:
        if o.owner is not None and o.filename:
            debug_of.setdefault(o.owner.filename, o.filename)
    for o in objfiles:
        path = o.filename
        if o.owner is not None or not path or not os.path.isfile(path):
            continue
        symfile = debug_of.get(path, path)
        module = _module_name(path, exe)
        secs = sections.get(path) or (sections.get(None) if path == exe else None)
        if not secs:
            if per_objfile is None:
                per_objfile = _sections_by_objfile()
            secs = per_objfile.get(path)
        try:
            if _elf_type(path) == 1:  # ET_REL: every section placed on its own
                if secs:
                    st.add_elf(symfile, sections=secs, module=module, files=_elf_files)
                continue
            bias = None
            link = _elf_files.section_address(path, ".text")
            if secs and ".text" in secs and link is not None:
                bias = (secs[".text"] - link) & 0xFFFFFFFFFFFFFFFF
            if bias is None:
                bias = _bias_by_probe(symfile)
            if bias is None:
                continue  # gdb's fallback still names these addresses
            st.add_elf(symfile, bias=bias, module=module, plt_from=path, files=_elf_files)
        except ValueError:
            continue  # not an ELF we can read; gdb's fallback covers it
    _symtab_cache.update(key=key, symtab=st)
    return st


# ---- frames -------------------------------------------------------------------

_KINDS = {
    gdb.INLINE_FRAME: "inline",
    gdb.TAILCALL_FRAME: "tailcall",
    gdb.SIGTRAMP_FRAME: "sigtramp",
}


def gdb_frames(max_frames):
    """The selected thread's frames as gdb unwound them: `(level, pc, sp, None, kind, name, trust)`.

    Returns (frames, stop_reason) where stop_reason says why gdb stopped, if not at the end.
    """
    frames = []
    append = frames.append
    f = gdb.newest_frame()
    stop = None
    from_sets = _unwound_from_sets()
    rsp = _register(f, "rsp")
    kinds = _KINDS
    level = 0
    while f is not None:
        if level >= max_frames:
            stop = "stopped after %d frames (--max-frames N|unlimited for more)" % max_frames
            break
        pc = f.pc()
        try:
            sp = int(f.read_register(rsp)) & 0xFFFFFFFFFFFFFFFF
        except (gdb.error, ValueError):
            sp = None
        kind = kinds.get(f.type(), "normal")
        if level == 0:
            append((0, pc, sp, None, kind, f.name(), "registers"))
        elif kind != "normal":
            append((level, pc, sp, None, kind, f.name(), "cfi"))
        elif from_sets and (pc, sp) in from_sets:
            # from a register set: regs-from-stack --use, stackproof-unwinder
            append((level, pc, sp, None, "interrupted", f.name(), "registers"))
        else:
            append((level, pc, sp, None, "normal", None, "cfi"))
        level += 1
        if not level & 0xFF:
            progress.update("%d frames read" % level)
        try:
            older = f.older()
        except gdb.error as e:
            stop = str(e)
            break
        if older is None:
            reason = f.unwind_stop_reason()
            if reason not in (gdb.FRAME_UNWIND_NO_REASON, gdb.FRAME_UNWIND_OUTERMOST):
                stop = gdb.frame_stop_reason_string(reason)
        f = older
    return frames, stop


CALLEE_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")
# Read too for frame 0: the operands of a call that jumped to pc 0 (a NULL call).
SCRATCH = ("rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11")


def _register(frame, name):
    """The register's descriptor (a name is looked up anew on every read), or the name."""
    try:
        return frame.architecture().registers().find(name) or name
    except (AttributeError, gdb.error):
        return name


def frame0_registers():
    """`(pc, sp, {callee-saved name: value})` of the selected thread's newest frame."""
    f = gdb.newest_frame()
    regs = {}
    for name in CALLEE_SAVED + (SCRATCH if f.pc() == 0 else ()):
        try:
            regs[name] = int(f.read_register(name)) & 0xFFFFFFFFFFFFFFFF
        except (gdb.error, ValueError):
            pass
    sp = int(f.read_register("rsp")) & 0xFFFFFFFFFFFFFFFF
    return (f.pc(), sp, regs)


def _unwound_from_sets():
    from stackproof.gdbext import unwinder  # imports this module
    try:
        return unwinder.interrupted_lookup()
    except gdb.error:
        return frozenset()


def on_terminal(from_tty):
    """What gdb itself requires to style its output or show progress: a command the
    user typed (not a script's gdb.execute, whose output may be captured), gdb's
    standard output a terminal, and $TERM set and not `dumb`."""
    term = os.environ.get("TERM")
    try:
        tty = os.isatty(1)
    except OSError:
        tty = False
    return bool(from_tty) and tty and bool(term) and term != "dumb"


_COLOURS = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")


def _style(name):
    """The SGR escape of gdb's `set style NAME ...` (foreground, background, intensity)."""
    codes = []
    fg = gdb.parameter("style %s foreground" % name)
    bg = gdb.parameter("style %s background" % name)
    intensity = gdb.parameter("style %s intensity" % name)
    if fg in _COLOURS:
        codes.append(str(30 + _COLOURS.index(fg)))
    if bg in _COLOURS:
        codes.append(str(40 + _COLOURS.index(bg)))
    if intensity == "bold":
        codes.append("1")
    elif intensity == "dim":
        codes.append("2")
    return "\x1b[%sm" % ";".join(codes) if codes else ""


def styles(from_tty):
    """gdb's styles for stackproof's text (function and address names as gdb's own
    `bt` shows them; a bogus verdict in `highlight`, unknown in `metadata`), or None
    when gdb would print no escapes: styling off, or not on a terminal."""
    try:
        if not gdb.parameter("style enabled") or not on_terminal(from_tty):
            return None
        return {"function": _style("function"), "address": _style("address"),
                "bogus": _style("highlight"), "unknown": _style("metadata")}
    except (gdb.error, RuntimeError, ValueError):
        return None


def columns():
    """gdb's `set width` (the terminal's by default, 80 without one); 0: unlimited
    (gdb -batch, `set width 0`)."""
    try:
        w = gdb.parameter("width")
    except (gdb.error, RuntimeError):
        return 0
    return w if isinstance(w, int) and 0 < w < (1 << 20) else 0


class Progress:
    """A one-line count that updates in place while long work goes on (frames read,
    threads checked, stacks scanned); shown only on a terminal, after a moment, and
    erased when done."""

    AFTER = float(os.environ.get("STACKPROOF_PROGRESS_AFTER", "0.5"))   # seconds

    def __init__(self, name, from_tty):
        self.name = name
        self.on = on_terminal(from_tty)
        self.t0 = time.monotonic()
        self.shown = False

    def update(self, text):
        if not self.on or time.monotonic() - self.t0 < self.AFTER:
            return
        gdb.write("\r%s: %s\x1b[K" % (self.name, text))
        gdb.flush()
        self.shown = True

    def done(self):
        if self.shown:
            gdb.write("\r\x1b[K")
            gdb.flush()
            self.shown = False


progress = Progress("stackproof", False)   # the running command's (command.py sets it)


# ---- sleeping kernel tasks ------------------------------------------------------

def _struct_offset(expr):
    """offsetof() from the kernel's debug info, or None without DWARF."""
    try:
        return int(gdb.parse_and_eval("(unsigned long)&((struct task_struct *)0)->%s" % expr))
    except (gdb.error, RuntimeError):
        return None


def _cpus():
    """`(current_task offset from the GS base or None, [(gdb thread, sp, gs_base)])`: each
    thread of a kernel dump is a CPU; its per-CPU `current_task` is at `$gs_base` + the
    variable's offset in `.data..percpu` (which `symbol-file -o` moves too)."""
    percpu_off = None
    try:
        cur = int(gdb.parse_and_eval("(unsigned long)&current_task"))
        base = None
        for secs in _sections_by_objfile().values():
            if ".data..percpu" in secs:
                base = secs[".data..percpu"]
                break
        if base is not None:
            percpu_off = (cur - base) & U64_MAX
    except (gdb.error, RuntimeError):
        pass
    out = []
    selected = gdb.selected_thread()
    try:
        for th in gdb.selected_inferior().threads():
            th.switch()
            frame = gdb.newest_frame()
            try:
                sp = int(frame.read_register("rsp")) & U64_MAX
                gs = int(frame.read_register("gs_base")) & U64_MAX
            except (gdb.error, ValueError):
                sp, gs = None, 0
            out.append((th.num, sp, gs))
    finally:
        if selected is not None and selected.is_valid():
            selected.switch()
    return percpu_off, out


def task_start(session, task_expr, saved_sp_expr):
    """Where a sleeping task's stack resumes (the core decides, from its task_struct):
    a `_core.TaskStart`."""
    task = parse_address(task_expr, "--task")
    saved_sp = parse_address(saved_sp_expr, "--sp") if saved_sp_expr is not None else None
    percpu_off, cpus = _cpus()
    try:
        return session.task_start(task, task_expr, _struct_offset("stack"),
                                _struct_offset("thread.sp"), saved_sp, cpus, percpu_off)
    except ValueError as e:
        raise UserError(str(e))
