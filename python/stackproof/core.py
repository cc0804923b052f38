"""A user-space core file without gdb: open it, verify its threads, print what
`verify-bt` prints. No gdb here.

    >>> import stackproof.core
    >>> core = stackproof.core.open_core("core", exe="./prog")
    >>> print(core.text())                  # every thread, as `verify-bt -a` lays it out
    >>> t = core.verify(core.threads[0])    # one thread: a dict of FrameReports

Each thread is verified from its registers (NT_PRSTATUS) with stackproof's own
unwinding, as `verify-bt --sp $sp --pc $pc` does in gdb; memory is the core's,
and what the kernel did not dump (code, read-only data) is read from the files
the core says were mapped (NT_FILE), or from where `remap` points.
"""

import os
from typing import Dict, List, NamedTuple, Optional

from stackproof import _core, render

# The callee-saved registers the core takes as starting values (src/layout: CALLEE_SAVED_NAMES).
_CALLEE_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")


class Thread(NamedTuple):
    num: int
    """1-based, in the core's order (gdb numbers a core's threads the same way)."""
    pid: int
    signal: int
    registers: Dict[str, int]


class Core:
    """An ELF core and the files it had mapped, with their symbols placed."""

    def __init__(self, path: str, exe: Optional[str] = None, remap: Optional[Dict[str, str]] = None):
        self.path = path
        self.file = _core.CoreFile(path)
        for recorded, actual in (remap or {}).items():
            self.file.remap(recorded, actual)
        if exe is not None:
            self._remap_exe(exe)
        self.memory = _core.TargetMemory(self.file.read)
        self.symtab = _core.Symtab()
        self.session = _core.Session(self.memory, self.symtab)
        self.objects = []
        exe_path = self.file.executable
        for recorded, local, bias, debug in self.file.objects():
            # Named as gdb's frames are: shared objects by file name, the executable not at all.
            module = None if recorded == exe_path else os.path.basename(recorded)
            for symfile in ([debug] if debug else []) + [local]:
                try:
                    self.symtab.add_elf(symfile, bias=bias, module=module)
                except ValueError:
                    continue
                self.objects.append((recorded, symfile, bias))
                break
        self.threads: List[Thread] = [Thread(i + 1, pid, sig, regs)
                                      for i, (pid, sig, regs) in enumerate(self.file.threads)]

    def _remap_exe(self, exe):
        """Read the executable (as the auxiliary vector names it) from `exe`."""
        recorded = self.file.executable
        if recorded is None:
            raise ValueError("%s: the core does not say which mapped file is the executable" % self.path)
        self.file.remap(recorded, exe)

    def verify(self, thread: Thread, max_frames: int = 1024) -> dict:
        """One thread, from its registers: the thread document `render` prints."""
        regs = thread.registers
        start = (regs["rip"], regs["rsp"], {n: regs[n] for n in _CALLEE_SAVED})
        c = self.session.check(None, start, max_frames)
        return {"source": "registers", "title": "Thread %d (LWP %d):" % (thread.num, thread.pid),
                "thread": thread.num, "stop": c.stop, "frames": c.frames, "reads": c.reads}

    def text(self, verbose: bool = False, max_frames: int = 1024) -> str:
        return "\n".join(render.thread_text(self.verify(t, max_frames), verbose=verbose) for t in self.threads)

    def json(self, max_frames: int = 1024) -> str:
        """The `stackproof/verify-bt/1` document (docs/json.md)."""
        return render.verify_json([self.verify(t, max_frames) for t in self.threads])


def open_core(path: str, exe: Optional[str] = None, remap: Optional[Dict[str, str]] = None) -> Core:
    """Open an x86-64 ELF core; `exe` when the executable has moved since, `remap` for
    other files (`{"/usr/lib/x86_64-linux-gnu/libc.so.6": "/sysroot/.../libc.so.6"}`).
    Raises ValueError with one line when the file is not such a core."""
    return Core(path, exe=exe, remap=remap)
