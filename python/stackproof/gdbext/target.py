"""What the core needs from gdb: memory, symbols, frames, expressions.

Everything gdb-specific is here, so the commands stay small and the Rust core
never sees gdb.
"""

import os
import re

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


def memory_reader(inf):
    """`read(addr, n) -> bytes | None` for the core; unreadable is None, never zeros."""
    read_memory = inf.read_memory

    def read(addr, n):
        try:
            return read_memory(addr, n).tobytes()
        except Exception:  # gdb.MemoryError, overflow on odd addresses
            return None

    return read


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
    if path == exe:
        return None
    base = os.path.basename(path)
    return base[:-3] if base.endswith(".ko") else base


def _bias_by_probe(path):
    """Where gdb put `path` when `info files` does not say (e.g. `symbol-file -o OFF`)."""
    probe = _core.probe_symbol(path)
    if probe is None:
        return None
    name, link = probe
    try:
        addr = int(gdb.parse_and_eval("(unsigned long)&'%s'" % name))
    except gdb.error:
        return None
    return (addr - link) & 0xFFFFFFFFFFFFFFFF


def _gdb_fallback(addr):
    """A symbol for `addr` from gdb itself (vDSO, JIT, files we cannot read)."""
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
        try:
            if _elf_type(path) == 1:  # ET_REL: every section placed on its own
                if secs:
                    st.add_elf(symfile, sections=secs, module=module)
                continue
            bias = None
            link = _core.section_address(path, ".text")
            if secs and ".text" in secs and link is not None:
                bias = (secs[".text"] - link) & 0xFFFFFFFFFFFFFFFF
            if bias is None:
                bias = _bias_by_probe(symfile)
            if bias is None:
                continue  # gdb's fallback still names these addresses
            st.add_elf(symfile, bias=bias, module=module)
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
    f = gdb.newest_frame()
    stop = None
    while f is not None:
        if len(frames) >= max_frames:
            stop = "stopped after %d frames (--max-frames)" % max_frames
            break
        level = len(frames)
        pc = f.pc()
        try:
            sp = int(f.read_register("rsp")) & 0xFFFFFFFFFFFFFFFF
        except (gdb.error, ValueError):
            sp = None
        kind = _KINDS.get(f.type(), "normal")
        trust = "registers" if level == 0 else "cfi"
        if level > 0 and kind == "normal" and (pc, sp) in _unwound_from_sets():
            kind, trust = "interrupted", "layout"  # regs-from-stack --use / stackproof-unwinder
        name = f.name() if kind != "normal" or level == 0 else None
        frames.append((level, pc, sp, None, kind, name, trust))
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


def _unwound_from_sets():
    from stackproof.gdbext import unwinder  # imports this module
    try:
        return unwinder.interrupted_frames()
    except gdb.error:
        return frozenset()


def styled():
    try:
        return bool(gdb.parameter("style enabled"))
    except (gdb.error, RuntimeError):
        return False
