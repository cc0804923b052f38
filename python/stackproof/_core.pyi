"""Type stub of the Rust extension `stackproof._core` (the pyo3 binding in src/python/).

Every public top-level name here is a name the module exports, and the other way round
(tests/e2e/test_stub.py checks both, and the parameter names, against the built module).
Names starting with `_` are this stub's own type aliases and do not exist at runtime.
pyo3 classes are made by `__new__` (no `__init__`), which is what the stub declares.
"""
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple, TypedDict, Union, final, overload

__version__: str
#: frames per chain unless --max-frames says otherwise (the core's DEFAULT_MAX_FRAMES)
DEFAULT_MAX_FRAMES: int
#: words --annotate shows unless --max-words says otherwise (the core's annotate::MAX_WORDS)
DEFAULT_MAX_WORDS: int

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MAX_WORDS",
    "ChainFrame",
    "Check",
    "CoreFile",
    "CrashTask",
    "ElfFiles",
    "FrameReport",
    "KernelCaller",
    "Session",
    "StackRange",
    "Symtab",
    "TargetMemory",
    "TaskStart",
    "__version__",
    "cpu_in_user_mode",
    "kernel_address",
    "layout_cli",
    "probe_symbol",
    "section_address",
    "thread_text",
    "verify_json",
]

# ---- words the core uses (kinds, trust levels, verdicts, layouts) ----

_FrameKind = Literal["normal", "inline", "tailcall", "sigtramp", "interrupted"]
_Trust = Literal["registers", "layout", "cfi", "frame-pointer", "scan"]
_Verdict = Literal["ok", "probable", "unknown", "bogus"]
_CallKind = Literal["direct", "register", "memory"]
_LayoutName = Literal["pt_regs", "rt_sigframe", "ucontext"]
_RegStatus = Literal["live", "stale", "copy"]

# ---- inputs ----

_ReadFn = Callable[[int, int], Optional[bytes]]
"""`read(addr, n)`: exactly `n` bytes (a `bytes` object; anything else counts as
unreadable), or None when any byte of `[addr, addr + n)` cannot be read (docs/api.md)."""

_Reader = Union["TargetMemory", _ReadFn]
"""The memory a call reads: the session's `TargetMemory` (its cache is shared), or any
`read` callable (cached for that call only)."""

_Regs = Dict[str, int]
"""Registers by their `user_regs_struct` name, as gdb names them (`rbx`, `rbp`, `r12`...,
`rip`, `rsp`, `eflags`, `orig_rax`): the one register naming of every result."""

_StartRegs = Tuple[int, int, _Regs]
"""`(pc, sp, {register: value})` of frame 0; the callee-saved ones seed the own chain."""

_FrameTuple = Tuple[int, int, Optional[int], Optional[int], _FrameKind, Optional[str], _Trust]
"""A frame to check: `(level, pc, sp, slot, kind, name, trust)`."""

_SymbolTuple = Tuple[str, int, int, Optional[str]]
"""A function symbol: `(name, start, size, module)`."""

_CpuRegs = Tuple[int, int, _Regs, bool]
"""A crash CPU: `(pc, sp, {callee-saved name: value}, user mode)`."""

_TaskCpu = Tuple[int, Optional[int], int]
"""A CPU for `task_start`: `(gdb thread, sp or None, gs_base)`."""


class _Styles(TypedDict, total=False):
    """Escape sequences `thread_text` wraps text in (missing: none)."""

    function: str
    address: str
    bogus: str
    unknown: str


class _Compare(TypedDict):
    """How the given chain and the own one differ."""

    invented: List[int]
    lost: List["ChainFrame"]


class _Thread(TypedDict, total=False):
    """A `verify-bt` thread as the gdb layer holds it; missing keys read as None/empty/0."""

    title: Optional[str]
    source: str
    thread: Optional[int]
    stop: Optional[str]
    frames: List["FrameReport"]
    chain: Optional[List["ChainFrame"]]
    chain_stop: Optional[str]
    compare: Optional[_Compare]
    reads: int


# ---- results ----


class _Call(TypedDict):
    """The call instruction before a frame's return address (`FrameReport["call"]`)."""

    address: int
    text: str
    kind: _CallKind
    target: Optional[int]
    target_function: Optional[str]
    via: List[str]
    resolution: List[str]


_Check = Tuple[str, bool, bool, str]
"""A check of a register set: `(name, ok, required, detail)`."""


class _Found(TypedDict):
    """A register set found on (or decoded from) a stack."""

    address: int
    layout: _LayoutName
    status: _RegStatus
    status_reason: str
    copy_of: Optional[int]
    score: int
    summary: str
    regs: List[Tuple[str, int]]
    """In the layout's own field names, memory order (pt_regs' `bx`, `ip`, `flags`)."""
    registers: _Regs
    checks: List[_Check]


_RegRow = Tuple[str, Optional[int], str, Optional[int]]
"""A callee-saved register of a chain frame: `(name, value, provenance, saved at)`."""

# ---- classes ----


@final
class TargetMemory:
    """A `read` callable behind a block cache kept until `clear()`; callable like `read`."""

    def __new__(cls, read: _ReadFn) -> TargetMemory:
        """Wrap `read(addr, n) -> bytes | None` (asked for 64 KiB blocks first, then smaller)."""
    def clear(self) -> None:
        """Forget the cached blocks (the target ran, or its memory was written)."""
    @property
    def requests(self) -> int:
        """Reads issued to `read` so far."""
    def __call__(self, addr: int, n: int) -> Optional[bytes]:
        """`n` bytes at `addr` through the cache, or None when any of them is unreadable."""


@final
class ElfFiles:
    """Parsed ELF files, kept by whoever builds symbol tables (a gdb session, for its objfiles).

    `Symtab.add_elf(..., files=...)` and these probes parse each file once while it is
    unchanged (path, size and mtime; a rebuilt file is parsed anew). Bounded: the most
    recently used files are kept. Errors raise `ValueError` with one line."""

    def __new__(cls) -> ElfFiles:
        """No file parsed yet."""
    def section_address(self, path: str, name: str) -> Optional[int]:
        """Link-time address of section `name` of the ELF file `path`, or None."""
    def probe_symbol(self, path: str) -> Optional[Tuple[str, int]]:
        """`(name, link-time address)` of a function of `path`, to locate the file through gdb."""


@final
class Symtab:
    """Function symbols: ELF tables placed where they were loaded, then a Python fallback."""

    def __new__(cls) -> Symtab:
        """An empty table."""
    def add_elf(
        self,
        path: str,
        bias: Optional[int] = None,
        sections: Optional[Dict[str, int]] = None,
        module: Optional[str] = None,
        plt_from: Optional[str] = None,
        files: Optional[ElfFiles] = None,
    ) -> int:
        """Add an ELF's function symbols moved by `bias` or placed per section; the count added.

        `plt_from`: the file whose code and PLT stubs go with `path` (a separate debug file
        has neither). `files`: parse there, shared with the other calls given it; without
        it `path` is parsed for this call."""
    def add_symbols(self, syms: Sequence[_SymbolTuple]) -> None:
        """Add symbols given directly: `(name, start, size, module)` each."""
    def set_fallback(self, fallback: Callable[[int], Optional[_SymbolTuple]]) -> None:
        """`fallback(addr) -> (name, start, size, module) | None`, asked when no table knows an address."""
    def lookup(self, addr: int) -> Optional[_SymbolTuple]:
        """The function containing `addr` as `(name, start, size, module)`, or None."""
    def __len__(self) -> int:
        """Symbols in the tables (the fallback's answers not counted)."""


@final
class FrameReport:
    """One verified frame, read like a read-only dict (made by `Session.check`, `Session.verify_crash_bt`)."""

    @overload
    def __getitem__(self, key: Literal["level"], /) -> int: ...
    @overload
    def __getitem__(
        self, key: Literal["pc", "sp", "function_start", "slot", "slot_value", "expected_slot"], /
    ) -> Optional[int]: ...
    @overload
    def __getitem__(self, key: Literal["kind"], /) -> _FrameKind: ...
    @overload
    def __getitem__(self, key: Literal["verdict"], /) -> _Verdict: ...
    @overload
    def __getitem__(self, key: Literal["trust"], /) -> _Trust: ...
    @overload
    def __getitem__(self, key: Literal["describe", "name"], /) -> str: ...
    @overload
    def __getitem__(self, key: Literal["function", "module"], /) -> Optional[str]: ...
    @overload
    def __getitem__(self, key: Literal["reasons", "reason_text"], /) -> List[str]: ...
    @overload
    def __getitem__(self, key: Literal["call"], /) -> Optional[_Call]: ...
    @overload
    def __getitem__(self, key: str, /) -> Any:
        """The field `key`; KeyError for a key not in `keys()`."""
    def get(self, key: str, default: Any = None) -> Any:
        """The field `key`, or `default` when there is no such field."""
    def __contains__(self, key: str, /) -> bool:
        """Whether `key` is one of `keys()`."""
    def keys(self) -> List[str]:
        """The field names, in the JSON document's order."""
    def json(self) -> str:
        """The frame as JSON text (schema stackproof/verify-bt/1, docs/json.md)."""
    def fields(self, *names: str) -> Tuple[Any, ...]:
        """Several fields at once, as a tuple (None for a missing one)."""
    def line(self, colour: bool = False) -> str:
        """The frame's line of text (crash style), unaligned; `colour`: gdb's default styles."""


@final
class ChainFrame:
    """A frame of stackproof's own chain, read like a read-only dict (made by `Session.check`)."""

    @overload
    def __getitem__(self, key: Literal["level", "pc"], /) -> int: ...
    @overload
    def __getitem__(self, key: Literal["sp", "slot"], /) -> Optional[int]: ...
    @overload
    def __getitem__(self, key: Literal["kind"], /) -> _FrameKind: ...
    @overload
    def __getitem__(self, key: Literal["trust"], /) -> _Trust: ...
    @overload
    def __getitem__(self, key: Literal["describe", "name"], /) -> str: ...
    @overload
    def __getitem__(self, key: Literal["function", "module", "layout_note"], /) -> Optional[str]: ...
    @overload
    def __getitem__(self, key: Literal["regs"], /) -> Optional[List[_RegRow]]: ...
    @overload
    def __getitem__(self, key: Literal["candidates"], /) -> Optional[List[int]]: ...
    @overload
    def __getitem__(self, key: str, /) -> Any:
        """The field `key` (`regs` is None unless `with_regs`; `candidates` is None unless the
        pc is one of several return addresses, then `pc` is the first); KeyError for an unknown key."""
    def get(self, key: str, default: Any = None) -> Any:
        """The field `key`, or `default` when there is no such field."""
    def __contains__(self, key: str, /) -> bool:
        """Whether `key` is one of `keys()`."""
    def keys(self) -> List[str]:
        """The field names."""
    def json(self) -> str:
        """The frame as JSON text (docs/json.md)."""
    def fields(self, *names: str) -> Tuple[Any, ...]:
        """Several fields at once, as a tuple (None for a missing one)."""


@final
class CoreFile:
    """An x86-64 ELF core opened without gdb; `read` is a memory reader for `TargetMemory`."""

    def __new__(cls, path: str) -> CoreFile:
        """Open the core at `path`; ValueError (one line) when it is not such a core."""
    @property
    def threads(self) -> List[Tuple[int, int, Dict[str, int]]]:
        """`[(pid, signal, {register name: value})]`, gdb's register names, in the core's order."""
    @property
    def mappings(self) -> List[Tuple[int, int, int, str]]:
        """`[(start, end, file offset, path)]` of the files the process had mapped (NT_FILE)."""
    @property
    def command(self) -> Optional[str]:
        """The command name the kernel recorded (NT_PRPSINFO)."""
    @property
    def executable(self) -> Optional[str]:
        """The recorded path of the executable (from the auxiliary vector), when known."""
    def objects(self) -> List[Tuple[str, str, int, Optional[str]]]:
        """Each mapped ELF once: `(recorded path, local path, load bias, debug file or None)`."""
    def remap(self, recorded: str, actual: str) -> None:
        """Read the file mapped as `recorded` from `actual` instead."""
    def read(self, addr: int, n: int) -> Optional[bytes]:
        """`n` bytes at `addr` (dumped memory, else the mapped file), or None."""


# ---- the analyses: Session and its results ----


@final
class Check:
    """What `Session.check` returns."""

    @property
    def frames(self) -> List[FrameReport]:
        """One report per checked frame (the own chain's, when no frames were given)."""
    @property
    def chain(self) -> Optional[List[ChainFrame]]:
        """stackproof's own chain; None with `chain="on-difference"` when it agrees."""
    @property
    def stop(self) -> Optional[str]:
        """Why the own chain ended where it did."""
    @property
    def reads(self) -> int:
        """Reads the check asked of the memory reader."""
    @property
    def invented(self) -> List[int]:
        """Levels of the given frames the own chain does not have."""
    @property
    def lost(self) -> List[int]:
        """Indices into `chain` of frames the given ones lack."""


@final
class CrashTask:
    """One task of a crash `bt` text, verified (`Session.verify_crash_bt`)."""

    @property
    def title(self) -> str:
        """crash's `PID: ... TASK: ... CPU: ... COMMAND: ...` line ("" without one)."""
    @property
    def frames(self) -> List[FrameReport]:
        """The task's frames in crash's order, those without an address `unknown`."""


@final
class KernelCaller:
    """The caller of a kernel frame without CFI (`Session.caller_of`)."""

    @property
    def kind(self) -> Literal["interrupted", "switch"]:
        """The frame an entry's pt_regs interrupted, or the task a switch left."""
    @property
    def registers(self) -> _Regs:
        """The caller's registers (at least `rip` and `rsp`)."""
    @property
    def found(self) -> Optional[_Found]:
        """The pt_regs (for "interrupted")."""


@final
class TaskStart:
    """Where a sleeping kernel task resumes (`Session.task_start`)."""

    @property
    def pc(self) -> int:
        """Frame 0's pc: where `__switch_to_asm` returns."""
    @property
    def sp(self) -> int:
        """Frame 0's sp, just above the switch frame."""
    @property
    def registers(self) -> _Regs:
        """Frame 0's callee-saved registers, from the switch frame."""
    @property
    def stack_lo(self) -> int:
        """The task's stack's lowest address."""
    @property
    def stack_hi(self) -> int:
        """The task's stack is `[stack_lo, stack_hi)`."""
    @property
    def slot(self) -> Optional[int]:
        """Frame 0's return-address slot, when it has one."""
    @property
    def notes(self) -> List[str]:
        """How the start was found."""


@final
class StackRange:
    """A stack a kernel CPU's chain crosses (`Session.scan_ranges`)."""

    @property
    def lo(self) -> int:
        """The stack's lowest address."""
    @property
    def hi(self) -> int:
        """The first address past the stack."""
    @property
    def live_sp(self) -> int:
        """The sp live on this stack: below it, words are stale."""


@final
class Session:
    """One target's memory and symbols, and every analysis the core makes on them."""

    def __new__(cls, read: _Reader, symtab: Symtab) -> Session:
        """`read`: a `TargetMemory` (its cache is shared by every call) or a plain `read`."""
    @property
    def memory(self) -> _Reader:
        """The reader the session was made with."""
    @property
    def symtab(self) -> Symtab:
        """The symbols the session was made with."""
    def check(
        self,
        frames: Optional[Sequence[_FrameTuple]],
        start: Optional[_StartRegs],
        max_frames: int = ...,
        with_regs: bool = False,
        chain: Literal["always", "on-difference"] = "always",
    ) -> Check:
        """Check `frames` (None: stackproof's own chain from `start`); the own chain's
        frames carry their callee-saved registers with provenance when `with_regs`."""
    def check_own(
        self,
        start: _StartRegs,
        slot0: Optional[int],
        max_frames: int = ...,
        with_regs: bool = False,
        chain: Literal["always", "on-difference"] = "always",
    ) -> Check:
        """stackproof's own chain from `start`, checked and compared as a backtrace whose
        frame 0 returns through `slot0` (a sleeping task's switch frame)."""
    def verify_crash_bt(
        self, text: str, max_frames: int = ..., cpus: Optional[Dict[int, _CpuRegs]] = None
    ) -> List[CrashTask]:
        """Verify every task of a crash `bt` text; ValueError naming a line that does not parse."""
    def caller_of(self, pc: int, sp: int) -> Optional[KernelCaller]:
        """The caller of a kernel frame without CFI (entry code, an IRQ stack's top), or None."""
    def task_start(
        self,
        task: int,
        task_expr: str,
        stack_offset: Optional[int],
        thread_sp_offset: Optional[int],
        saved_sp: Optional[int],
        cpus: Sequence[_TaskCpu],
        current_task_offset: Optional[int],
    ) -> TaskStart:
        """Where a sleeping kernel task resumes; ValueError why not."""
    def scan_ranges(
        self,
        start: _StartRegs,
        live_sp: int,
        frames: Optional[Sequence[_FrameTuple]] = None,
        mappings: Optional[Sequence[Tuple[int, int]]] = None,
    ) -> List[StackRange]:
        """The stacks `--scan` covers by default, innermost first: those a kernel CPU's
        chain crosses; in user space the one holding `live_sp` (to the end of the first of
        `mappings`, `(start, end)` each, holding it) and those the signal frames of the
        backtrace `frames` lead to (a sigaltstack's, the interrupted frame's)."""
    def decode_regs(
        self,
        addr: int,
        layout: Optional[Literal["pt_regs", "sigframe", "rt_sigframe", "ucontext"]] = None,
        live_sp: Optional[int] = None,
    ) -> _Found:
        """Decode one register set at `addr` as `layout` (None: the one the address implies:
        pt_regs on a kernel stack, else the rt_sigframe or ucontext whose checks pass);
        ValueError when it does not decode."""
    def frame_registers(
        self,
        frames: Optional[Sequence[_FrameTuple]],
        start: _StartRegs,
        json: bool,
        frame: Optional[int] = None,
        stop: Optional[str] = None,
        max_frames: int = ...,
    ) -> str:
        """The `regs-from-stack --frame N` / `--all` document, text or JSON: each frame of
        `frames` (just `frame` of them; None: stackproof's own chain from `start`) with its
        callee-saved registers and where each came from, matched to the own chain and
        numbered as `frames` number them; `stop`: why `frames` end early. ValueError
        when there is no frame `frame`."""
    def regs_document(
        self,
        live_sp: int,
        json: bool,
        ranges: Optional[Sequence[Tuple[int, int, int]]] = None,
        decode: Optional[Tuple[int, Optional[Literal["pt_regs", "sigframe", "rt_sigframe", "ucontext"]]]] = None,
        annotate: bool = False,
        words_range: Optional[Tuple[int, int]] = None,
        frames: Optional[Sequence[_FrameTuple]] = None,
        start: Optional[_StartRegs] = None,
        slot0: Optional[int] = None,
        fs_base: Optional[int] = None,
        gs_base: Optional[int] = None,
        max_words: int = ...,
    ) -> str:
        """The `regs-from-stack` document, text or the stackproof/regs-from-stack/2 JSON: the
        set at ADDR (`decode`: `(address, layout or None: the one it implies, with a note)`)
        or the sets of `ranges` (`(lo, hi, live sp)`);
        with `annotate`, every word of `words_range` (None: the first range, or 0x200 bytes
        from `live_sp`) labelled by the backtrace `frames` (None: stackproof's own chain from
        `start`, frame 0 returning through `slot0`), the canary at %fs:0x28 / %gs:0x28 of
        `fs_base` / `gs_base`. ValueError when ADDR cannot be read."""


# ---- verify-bt's text and JSON ----


def thread_text(
    thread: _Thread,
    verbose: bool = False,
    styles: Optional[_Styles] = None,
    columns: int = 0,
) -> str:
    """The text of one `verify-bt` thread; `columns`: the width lines fit (0: unlimited)."""


def verify_json(threads: Sequence[_Thread]) -> str:
    """The `stackproof/verify-bt/1` document of these threads."""


# ---- kernel ----


def kernel_address(addr: int) -> bool:
    """Is `addr` in the kernel half of the address space?"""


def cpu_in_user_mode(cs: int, pc: int) -> bool:
    """Is a CPU with these `cs` and `pc` in user mode?"""


# ---- ELF files, the layout CLI ----


def section_address(path: str, name: str) -> Optional[int]:
    """Link-time address of section `name` of the ELF file `path`, or None (parsed for this
    call; `ElfFiles.section_address` keeps the parse)."""


def probe_symbol(path: str) -> Optional[Tuple[str, int]]:
    """`(name, link-time address)` of a function of `path`, to locate the file through gdb
    (parsed for this call; `ElfFiles.probe_symbol` keeps the parse)."""


def layout_cli(args: Sequence[str]) -> Tuple[str, int]:
    """`python3 -m stackproof layout ARGS`: the frame-layout engine's command line, `(output, exit status)`."""
