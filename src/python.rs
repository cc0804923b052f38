//! The pyo3 binding: adapts Python callables to the core's traits and turns
//! results into plain dicts. No analysis lives here.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use pyo3::IntoPyObjectExt;

use crate::elf::{self, Placement};
use crate::memory::{BlockCache, Memory, ReadError};
use crate::report::{self, ChainRow, Row};
use crate::symbols::{Symbol, SymbolTable, Symbols};
use crate::verify::{self, FrameIn, FrameKind, Trust};

/// Memory read through a Python callable `read(addr, length) -> bytes | None`.
struct PyMemory {
    read: Py<PyAny>,
}

impl Memory for PyMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        Python::attach(|py| {
            let got = self.read.call1(py, (addr, buf.len())).map_err(|_| ReadError { addr })?;
            let bytes = got.bind(py).cast::<PyBytes>().map_err(|_| ReadError { addr })?;
            let b = bytes.as_bytes();
            if b.len() != buf.len() {
                return Err(ReadError { addr });
            }
            buf.copy_from_slice(b);
            Ok(())
        })
    }
}

/// Stacks are read 64 KiB at a time: one call per stack in most cases.
const BLOCK: u64 = crate::memory::STACK_BLOCK;

/// Target memory for a whole session: `read(addr, n) -> bytes | None` behind a block
/// cache kept until `clear()`, which the gdb layer calls when the target runs or its
/// memory is written. Callable like `read` itself, with the cache in between.
#[pyclass(module = "stackproof._core", unsendable)]
pub struct TargetMemory {
    cache: BlockCache<PyMemory>,
}

#[pymethods]
impl TargetMemory {
    #[new]
    fn new(read: Py<PyAny>) -> Self {
        TargetMemory { cache: BlockCache::new(PyMemory { read }, BLOCK) }
    }

    fn clear(&self) {
        self.cache.clear()
    }

    /// Reads issued to `read` so far.
    #[getter]
    fn requests(&self) -> u64 {
        self.cache.requests()
    }

    fn __call__<'py>(&self, py: Python<'py>, addr: u64, n: usize) -> Option<Bound<'py, PyBytes>> {
        let bytes = guarded("read", || Ok(self.cache.bytes(addr, n).ok())).ok().flatten()?;
        Some(PyBytes::new(py, &bytes))
    }
}

/// The memory a call works on: the session's `TargetMemory`, or a plain `read`
/// callable behind a cache for this call only.
enum CallMemory<'py> {
    Session(PyRef<'py, TargetMemory>),
    Fresh(BlockCache<PyMemory>),
}

impl<'py> CallMemory<'py> {
    fn new(read: &Bound<'py, PyAny>) -> Self {
        match read.extract::<PyRef<'py, TargetMemory>>() {
            Ok(m) => CallMemory::Session(m),
            Err(_) => CallMemory::Fresh(BlockCache::new(PyMemory { read: read.clone().unbind() }, BLOCK)),
        }
    }

    fn cache(&self) -> &BlockCache<PyMemory> {
        match self {
            CallMemory::Session(m) => &m.cache,
            CallMemory::Fresh(c) => c,
        }
    }
}

/// Run core code; a panic becomes a Python RuntimeError instead of killing the session.
fn guarded<T>(what: &str, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = crate::panic_text(&*payload);
            Err(PyRuntimeError::new_err(format!("stackproof internal error in {what}: {msg}")))
        }
    }
}

/// Function symbols: ELF tables placed where gdb loaded them, then a Python fallback.
#[pyclass(module = "stackproof._core")]
pub struct Symtab {
    table: SymbolTable,
    fallback: Option<Py<PyAny>>,
    /// The fallback's answers: this table lives as long as the session's objfiles do.
    asked: std::sync::Mutex<std::collections::HashMap<u64, Option<Symbol>>>,
    /// The files' own code bytes (a kernel's freed init code is only there).
    code: Vec<elf::CodeImage>,
    /// Addresses of [`crate::kernel::MARKERS`], which are no functions.
    markers: std::collections::HashMap<String, u64>,
}

impl Symbols for Symtab {
    fn lookup(&self, addr: u64) -> Option<Symbol> {
        if let Some(s) = self.table.lookup(addr) {
            return Some(s);
        }
        let fb = self.fallback.as_ref()?;
        if let Some(known) = self.asked.lock().ok().and_then(|m| m.get(&addr).cloned()) {
            return known;
        }
        let found = Python::attach(|py| {
            let r = fb.call1(py, (addr,)).ok()?;
            let (name, start, size, module): (String, u64, u64, Option<String>) = r.extract(py).ok()?;
            Some(Symbol { name: name.into(), start, size, module: module.map(Into::into) })
        });
        if let Ok(mut m) = self.asked.lock() {
            if m.len() < 1 << 16 {
                m.insert(addr, found.clone());
            }
        }
        found
    }

    fn address_of(&self, name: &str) -> Option<u64> {
        self.markers.get(name).copied().or_else(|| self.table.address_of(name))
    }

    fn file_code(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.code.iter().any(|c| c.read(addr, buf))
    }
}

#[pymethods]
impl Symtab {
    #[new]
    fn new() -> Self {
        Symtab {
            table: SymbolTable::default(),
            fallback: None,
            asked: Default::default(),
            code: Vec::new(),
            markers: Default::default(),
        }
    }

    /// Add an ELF file's text symbols, moved by `bias` or placed per section (`{".text": addr}`).
    #[pyo3(signature = (path, bias=None, sections=None, module=None, plt_from=None))]
    fn add_elf(
        &mut self,
        path: &str,
        bias: Option<u64>,
        sections: Option<std::collections::HashMap<String, u64>>,
        module: Option<&str>,
        plt_from: Option<&str>,
    ) -> PyResult<usize> {
        let placement = match sections {
            Some(s) => Placement::Sections(s),
            None => Placement::Bias(bias.unwrap_or(0)),
        };
        let (syms, code, markers) = guarded("add_elf", || {
            let p = Path::new(path);
            let mut syms = elf::load_symbols(p, &placement, module).map_err(PyValueError::new_err)?;
            // A separate debug file has no code: the PLT stubs are named from the file itself.
            if let Some(code) = plt_from.filter(|c| *c != path) {
                syms.extend(elf::load_plt_symbols(Path::new(code), &placement, module).unwrap_or_default());
            }
            let code = elf::CodeImage::open(p, &placement).map_err(PyValueError::new_err)?;
            Ok((syms, code, elf::load_markers(p, &placement).map_err(PyValueError::new_err)?))
        })?;
        let n = syms.len();
        self.table.merge(syms);
        self.code.extend(code);
        for (name, addr) in markers {
            self.markers.entry(name).or_insert(addr);
        }
        Ok(n)
    }

    /// Add symbols given directly: a list of `(name, start, size, module)`.
    fn add_symbols(&mut self, syms: Vec<(String, u64, u64, Option<String>)>) {
        let v = syms
            .into_iter()
            .map(|(name, start, size, module)| Symbol {
                name: name.into(),
                start,
                size,
                module: module.map(Into::into),
            })
            .collect();
        self.table.merge(v);
    }

    /// `fallback(addr) -> (name, start, size, module) | None`, asked when no table knows an address.
    fn set_fallback(&mut self, fallback: Py<PyAny>) {
        self.fallback = Some(fallback);
    }

    fn lookup(&self, addr: u64) -> Option<(String, u64, u64, Option<String>)> {
        Symbols::lookup(self, addr).map(|s| (s.name.to_string(), s.start, s.size, s.module.map(|m| m.to_string())))
    }

    fn __len__(&self) -> usize {
        self.table.len()
    }
}

/// Link-time address of a section of an ELF file, or None.
#[pyfunction]
fn section_address(path: &str, name: &str) -> PyResult<Option<u64>> {
    guarded("section_address", || elf::section_address(Path::new(path), name).map_err(PyValueError::new_err))
}

fn parse_kind(s: &str) -> PyResult<FrameKind> {
    Ok(match s {
        "normal" => FrameKind::Normal,
        "inline" => FrameKind::Inline,
        "tailcall" => FrameKind::TailCall,
        "sigtramp" => FrameKind::SigTramp,
        "interrupted" => FrameKind::Interrupted,
        other => return Err(PyValueError::new_err(format!("unknown frame kind {other:?}"))),
    })
}

fn parse_trust(s: &str) -> PyResult<Trust> {
    Ok(match s {
        "registers" => Trust::Registers,
        "layout" => Trust::Layout,
        "cfi" => Trust::Cfi,
        "frame-pointer" => Trust::FramePointer,
        "scan" => Trust::Scan,
        other => return Err(PyValueError::new_err(format!("unknown trust {other:?}"))),
    })
}

/// A Python string for one of the core's fixed words (kinds, verdicts, trust levels,
/// reason codes), made once: a deep stack repeats them thousands of times.
fn word<'py>(py: Python<'py>, s: &'static str) -> Bound<'py, PyString> {
    thread_local! {
        static WORDS: std::cell::RefCell<std::collections::HashMap<&'static str, Py<PyString>>> = Default::default();
    }
    WORDS.with(|w| w.borrow_mut().entry(s).or_insert_with(|| PyString::intern(py, s).unbind()).bind(py).clone())
}

/// One verified frame, read like a dict (`r["verdict"]`, `r.get("slot")`): a field
/// becomes a Python object only when it is asked for (a deep stack has thousands
/// of frames and the text output reads a few fields of each).
#[pyclass(module = "stackproof._core", name = "FrameReport", frozen)]
pub struct Report(Row);

const REPORT_KEYS: [&str; 17] = [
    "level",
    "pc",
    "sp",
    "kind",
    "function",
    "function_start",
    "module",
    "describe",
    "name",
    "slot",
    "slot_value",
    "verdict",
    "reasons",
    "reason_text",
    "trust",
    "expected_slot",
    "call",
];

impl Report {
    fn field<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let r = match &self.0 {
            Row::Frame(r) => r,
            Row::Unplaced(u) => return Self::unplaced_field(py, u, key),
        };
        let v = match key {
            "level" => r.level.into_bound_py_any(py)?,
            "pc" => r.pc.into_bound_py_any(py)?,
            "sp" => r.sp.into_bound_py_any(py)?,
            "kind" => word(py, r.kind.as_str()).into_any(),
            "function" => r.function.as_ref().map(|s| &*s.name).into_bound_py_any(py)?,
            "function_start" => r.function.as_ref().map(|s| s.start).into_bound_py_any(py)?,
            "module" => r.function.as_ref().and_then(|s| s.module.as_deref()).into_bound_py_any(py)?,
            "describe" => r.describe().into_bound_py_any(py)?,
            "name" => crate::text::frame_name(r).into_bound_py_any(py)?,
            "slot" => r.slot.into_bound_py_any(py)?,
            "slot_value" => r.slot_value.into_bound_py_any(py)?,
            "verdict" => word(py, r.verdict.as_str()).into_any(),
            "reasons" => PyList::new(py, r.reasons.iter().map(|x| word(py, x.code())))?.into_any(),
            "reason_text" => r.reasons.iter().map(|x| x.to_string()).collect::<Vec<_>>().into_bound_py_any(py)?,
            "trust" => word(py, r.trust.as_str()).into_any(),
            "expected_slot" => r.expected_slot.into_bound_py_any(py)?,
            "call" => match &r.call {
                None => py.None().into_bound(py),
                Some(c) => {
                    let cd = PyDict::new(py);
                    cd.set_item(intern!(py, "address"), c.site.addr)?;
                    cd.set_item(intern!(py, "text"), &c.site.text)?;
                    cd.set_item(intern!(py, "kind"), word(py, verify::call_kind(&c.site.target)))?;
                    cd.set_item(intern!(py, "target"), c.target)?;
                    cd.set_item(intern!(py, "target_function"), &c.target_function)?;
                    cd.set_item(intern!(py, "via"), &c.via)?;
                    cd.set_item(intern!(py, "resolution"), &c.resolution)?;
                    cd.into_any()
                }
            },
            _ => return Ok(None),
        };
        Ok(Some(v))
    }
}

/// `r[key]`, `r.get(key, default)`, `key in r`, `r.keys()`: the read-only part of a dict;
/// `r.fields(k1, k2, ...)` several at once; `r.json()` the frame's JSON text.
macro_rules! mapping_methods {
    ($ty:ty, $keys:expr $(, $extra:item)*) => {
        #[pymethods]
        impl $ty {
            $($extra)*

            fn __getitem__<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
                self.field(py, key)?.ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(key.to_string()))
            }

            #[pyo3(signature = (key, default=None))]
            fn get<'py>(&self, py: Python<'py>, key: &str, default: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
                Ok(match self.field(py, key)? {
                    Some(v) => v,
                    None => default.unwrap_or_else(|| py.None().into_bound(py)),
                })
            }

            fn __contains__(&self, key: &str) -> bool {
                $keys.contains(&key)
            }

            fn keys(&self) -> Vec<&'static str> {
                $keys.to_vec()
            }

            /// The frame as JSON text (schema stackproof/verify-bt/1, docs/json.md).
            fn json(&self) -> String {
                self.json_text()
            }

            /// Several fields at once, as a tuple (`None` for a missing one): one call per frame.
            #[pyo3(signature = (*names))]
            fn fields<'py>(
                &self,
                py: Python<'py>,
                names: &Bound<'py, pyo3::types::PyTuple>,
            ) -> PyResult<Bound<'py, pyo3::types::PyTuple>> {
                let mut out = Vec::with_capacity(names.len());
                for n in names.iter() {
                    let n = n.cast::<PyString>()?;
                    out.push(self.field(py, &n.to_cow()?)?.unwrap_or_else(|| py.None().into_bound(py)));
                }
                pyo3::types::PyTuple::new(py, out)
            }
        }
    };
}

impl Report {
    fn unplaced_field<'py>(py: Python<'py>, u: &verify::Unplaced, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let none = || py.None().into_bound(py);
        let v = match key {
            "level" => u.level.into_bound_py_any(py)?,
            "function" | "describe" | "name" => u.function.as_str().into_bound_py_any(py)?,
            "kind" => word(py, verify::Unplaced::KIND.as_str()).into_any(),
            "verdict" => word(py, verify::Unplaced::VERDICT.as_str()).into_any(),
            "reasons" | "reason_text" => PyList::new(py, [word(py, verify::Unplaced::REASON)])?.into_any(),
            "trust" => word(py, verify::Unplaced::TRUST.as_str()).into_any(),
            k if REPORT_KEYS.contains(&k) => none(),
            _ => return Ok(None),
        };
        Ok(Some(v))
    }
}

impl Report {
    fn json_text(&self) -> String {
        self.0.json()
    }
}

mapping_methods!(
    Report,
    REPORT_KEYS,
    /// The frame's line of text (crash style), unaligned; `colour`: gdb's default styles.
    #[pyo3(signature = (colour=false))]
    fn line(&self, colour: bool) -> String {
        let styles = colour.then(crate::text::Styles::gdb_defaults);
        self.0.line(self.0.head_width(), 0, styles.as_ref())
    }
);

/// `(name, link-time address)` of a function of `path` to locate the file through gdb.
#[pyfunction]
fn probe_symbol(path: &str) -> PyResult<Option<(String, u64)>> {
    guarded("probe_symbol", || elf::probe_symbol(Path::new(path)).map_err(PyValueError::new_err))
}

type FrameTuple = (u32, u64, Option<u64>, Option<u64>, String, Option<String>, String);

fn frame_in(t: FrameTuple) -> PyResult<FrameIn> {
    let (level, pc, sp, slot, kind, name, trust) = t;
    Ok(FrameIn { level, pc, sp, slot, bp: None, kind: parse_kind(&kind)?, name, trust: parse_trust(&trust)? })
}

/// `(name, value, provenance, saved at)` of a callee-saved register.
type RegRow = (&'static str, Option<u64>, String, Option<u64>);

/// A frame of stackproof's own chain, read like a dict (see [`Report`]).
#[pyclass(module = "stackproof._core", name = "ChainFrame", frozen)]
pub struct ChainFrame {
    row: ChainRow,
    layout_note: Option<String>,
    /// `(name, value, provenance, saved at)` per callee-saved register, when asked for.
    regs: Option<Vec<RegRow>>,
}

const CHAIN_KEYS: [&str; 12] =
    ["level", "pc", "sp", "slot", "kind", "trust", "function", "module", "describe", "name", "layout_note", "regs"];

impl ChainFrame {
    fn new(symtab: &Symtab, f: &crate::unwind::Frame, with_regs: bool) -> Self {
        let regs = with_regs.then(|| {
            f.regs
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let name = crate::layout::CALLEE_SAVED_NAMES.get(i).copied().unwrap_or("?");
                    match r {
                        Some(v) => {
                            let at = match v.origin {
                                crate::unwind::Origin::Saved { addr, .. } => Some(addr),
                                _ => None,
                            };
                            (name, Some(v.value), crate::unwind::describe_origin(i, v), at)
                        }
                        None => (name, None, format!("{name} unknown"), None),
                    }
                })
                .collect()
        });
        ChainFrame { row: ChainRow::new(symtab, &f.frame), layout_note: f.layout_note.clone(), regs }
    }

    fn field<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let fr = &self.row.frame;
        let function = &self.row.function;
        let v = match key {
            "level" => fr.level.into_bound_py_any(py)?,
            "pc" => fr.pc.into_bound_py_any(py)?,
            "sp" => fr.sp.into_bound_py_any(py)?,
            "slot" => fr.slot.into_bound_py_any(py)?,
            "kind" => word(py, fr.kind.as_str()).into_any(),
            "trust" => word(py, fr.trust.as_str()).into_any(),
            "function" => function.as_ref().map(|s| &*s.name).into_bound_py_any(py)?,
            "module" => function.as_ref().and_then(|s| s.module.as_deref()).into_bound_py_any(py)?,
            "describe" => self.row.describe().into_bound_py_any(py)?,
            "name" => self.row.name().into_bound_py_any(py)?,
            "layout_note" => self.layout_note.as_deref().into_bound_py_any(py)?,
            "regs" => match &self.regs {
                Some(r) => r.clone().into_bound_py_any(py)?,
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        Ok(Some(v))
    }
}

impl ChainFrame {
    fn json_text(&self) -> String {
        self.row.json()
    }
}

mapping_methods!(ChainFrame, CHAIN_KEYS);

/// Check a chain. `frames`: list of `(level, pc, sp, slot, kind, name, trust)`, or None to
/// check stackproof's own chain; `start`: `(pc, sp, {"rbx": v, ...})` registers of frame 0.
/// Returns `(frame dicts, own chain dicts or None, stop reason, memory reads, invented levels,
/// lost chain indices)`. The chain's frames carry their callee-saved registers with provenance
/// when `with_regs`; the chain is left out (None) when `chain="on-difference"` and it agrees.
#[pyfunction]
#[pyo3(signature = (read, symtab, frames, start, max_frames, with_regs=false, chain="always"))]
#[allow(clippy::too_many_arguments)] // the Python signature
fn check_chain<'py>(
    py: Python<'py>,
    read: &Bound<'py, PyAny>,
    symtab: &Symtab,
    frames: Option<Vec<FrameTuple>>,
    start: Option<(u64, u64, std::collections::HashMap<String, u64>)>,
    max_frames: usize,
    with_regs: bool,
    chain: &str,
) -> PyResult<CheckResult<'py>> {
    let frames = frames.map(|v| v.into_iter().map(frame_in).collect::<PyResult<Vec<_>>>()).transpose()?;
    let start = start.map(start_of);
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    let reads_before = mem.requests();
    let checked = guarded("verify-bt", || Ok(crate::check::check(mem, symtab, frames, start.as_ref(), max_frames)))?;
    let list = PyList::empty(py);
    for r in checked.reports {
        list.append(Report(Row::Frame(Box::new(r))))?;
    }
    let agree = checked.invented.is_empty() && checked.lost.is_empty();
    let (chain, stop) = match &checked.chain {
        Some(c) if chain == "on-difference" && agree => (None, c.stop.clone()),
        Some(c) => {
            let l = PyList::empty(py);
            for f in &c.frames {
                l.append(ChainFrame::new(symtab, f, with_regs))?;
            }
            (Some(l), c.stop.clone())
        }
        None => (None, None),
    };
    Ok((list, chain, stop, mem.requests() - reads_before, checked.invented, checked.lost))
}

type CheckResult<'py> = (Bound<'py, PyList>, Option<Bound<'py, PyList>>, Option<String>, u64, Vec<u32>, Vec<usize>);

/// `(pc, sp, {callee-saved name: value}, user mode)` of a CPU's registers.
type CpuRegs = (u64, u64, std::collections::HashMap<String, u64>, bool);

/// Verify every task of a crash `bt` text; `cpus`: the registers of the CPUs the
/// task headers name (`CPU: N`), when the dump has them. Returns a list of
/// `(title, frames)`, with the frames crash printed without an address in their place
/// (verdict `unknown`, `no-address`); a line that does not parse is a ValueError naming it.
#[pyfunction]
#[pyo3(signature = (read, symtab, text, max_frames, cpus=None))]
fn verify_crash_bt<'py>(
    py: Python<'py>,
    read: &Bound<'py, PyAny>,
    symtab: &Symtab,
    text: &str,
    max_frames: usize,
    cpus: Option<std::collections::HashMap<u32, CpuRegs>>,
) -> PyResult<Vec<(String, Bound<'py, PyList>)>> {
    let tasks = crate::crashbt::parse(text).map_err(|e| PyValueError::new_err(e.to_string()))?;
    if tasks.iter().all(|t| t.frames.is_empty()) {
        return Err(PyValueError::new_err("no crash `bt` frame lines (`#N [slot] function at address`) in the text"));
    }
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    let mut out = Vec::new();
    for t in &tasks {
        let (_, unplaced) = crate::crashbt::task_chain(t);
        let live = t.cpu.and_then(|c| cpus.as_ref()?.get(&c)).map(|(pc, sp, regs, user_mode)| crate::check::LiveCpu {
            start: crate::unwind::Start {
                pc: *pc,
                sp: *sp,
                callee_saved: crate::layout::CALLEE_SAVED_NAMES.map(|n| regs.get(n).copied()),
                scratch: Vec::new(),
            },
            user_mode: *user_mode,
        });
        let reports =
            guarded("verify-bt", || Ok(crate::check::check_crash_task(mem, symtab, t, live.as_ref(), max_frames)))?;
        let list = PyList::empty(py);
        for row in report::crash_rows(reports, &unplaced) {
            list.append(Report(row))?;
        }
        let title = match (t.pid, t.task) {
            (Some(pid), Some(task)) => report::task_title(pid, task, t.cpu, t.command.as_deref().unwrap_or_default()),
            _ => String::new(),
        };
        out.push((title, list));
    }
    Ok(out)
}

fn found_dict<'py>(py: Python<'py>, f: &crate::regs::scan::Found) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "address"), f.address)?;
    d.set_item(intern!(py, "layout"), f.layout.name())?;
    d.set_item(intern!(py, "status"), f.status.name())?;
    d.set_item(intern!(py, "status_reason"), f.status_reason.clone())?;
    d.set_item(intern!(py, "copy_of"), f.copy_of)?;
    d.set_item(intern!(py, "score"), f.score)?;
    d.set_item(intern!(py, "summary"), f.summary.clone())?;
    d.set_item(intern!(py, "regs"), f.regs.iter().map(|(n, v)| (n.to_string(), *v)).collect::<Vec<_>>())?;
    let checks = PyList::empty(py);
    for c in &f.checks {
        checks.append((c.name, c.ok, c.required, c.detail.clone()))?;
    }
    d.set_item(intern!(py, "checks"), checks)?;
    d.set_item(intern!(py, "labels"), crate::regs::annotate::frame_labels(f))?;
    Ok(d)
}

fn scan_options(live_sp: Option<u64>) -> crate::regs::scan::ScanOptions {
    crate::regs::scan::ScanOptions { live_sp, ..Default::default() }
}

/// `(found dicts, unreadable ranges, truncated_at, reads)`.
type ScanResult<'py> = (Bound<'py, PyList>, Vec<(u64, u64)>, Option<u64>, u64);

/// Find register sets in `[lo, hi)`. Returns `(found dicts, unreadable ranges, truncated_at, reads)`.
#[pyfunction]
#[pyo3(signature = (read, symtab, lo, hi, live_sp=None))]
fn scan_regs<'py>(
    py: Python<'py>,
    read: &Bound<'py, PyAny>,
    symtab: &Symtab,
    lo: u64,
    hi: u64,
    live_sp: Option<u64>,
) -> PyResult<ScanResult<'py>> {
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    let reads_before = mem.requests();
    let scan =
        guarded("regs-from-stack", || Ok(crate::regs::scan::scan_memory(mem, lo, hi, symtab, &scan_options(live_sp))))?;
    let list = PyList::empty(py);
    for f in &scan.found {
        list.append(found_dict(py, f)?)?;
    }
    Ok((list, scan.unreadable.clone(), scan.truncated_at, mem.requests() - reads_before))
}

/// Decode one register set at `addr` as `layout` (`pt_regs`, `sigframe`, `ucontext`).
#[pyfunction]
#[pyo3(signature = (read, symtab, addr, layout, live_sp=None))]
fn decode_regs<'py>(
    py: Python<'py>,
    read: &Bound<'py, PyAny>,
    symtab: &Symtab,
    addr: u64,
    layout: &str,
    live_sp: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    use crate::regs::Layout;
    let layout = match layout {
        "pt_regs" => Layout::PtRegs,
        "sigframe" | "rt_sigframe" => Layout::SigFrame,
        "ucontext" => Layout::Ucontext,
        other => return Err(PyValueError::new_err(format!("unknown layout {other:?} (pt_regs, sigframe, ucontext)"))),
    };
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    let f = guarded("regs-from-stack", || {
        crate::regs::scan::decode_at(mem, addr, layout, symtab, &scan_options(live_sp))
            .map_err(|e| PyValueError::new_err(e.to_string()))
    })?;
    found_dict(py, &f)
}

/// The stacks `regs-from-stack --scan` covers by default for a kernel CPU whose frame-0
/// registers are `start` (`(pc, sp, {"rbx": v, ...})`) and live sp `live_sp`: every
/// stack its chain crosses, as `(lo, hi, live_sp)`, innermost first. Empty for user space.
#[pyfunction]
fn kernel_scan_ranges(
    read: &Bound<'_, PyAny>,
    symtab: &Symtab,
    start: (u64, u64, std::collections::HashMap<String, u64>),
    live_sp: u64,
) -> PyResult<Vec<(u64, u64, u64)>> {
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    let start = start_of(start);
    guarded("regs-from-stack", || {
        let ranges = crate::kernel::scan_ranges(mem, symtab, &start, live_sp);
        Ok(ranges.into_iter().map(|r| (r.lo, r.hi, r.live_sp)).collect())
    })
}

fn start_of((pc, sp, regs): (u64, u64, std::collections::HashMap<String, u64>)) -> crate::unwind::Start {
    let scratch = regs
        .iter()
        .filter(|(n, _)| !crate::layout::CALLEE_SAVED_NAMES.contains(&n.as_str()))
        .filter_map(|(n, v)| Some((crate::x86::Reg::from_name(n)?, *v)))
        .collect();
    crate::unwind::Start {
        pc,
        sp,
        callee_saved: crate::layout::CALLEE_SAVED_NAMES.map(|n| regs.get(n).copied()),
        scratch,
    }
}

/// Is `addr` in the kernel half of the address space?
#[pyfunction]
fn kernel_address(addr: u64) -> bool {
    crate::kernel::is_kernel(addr)
}

/// Is a CPU with these `cs` and `pc` in user mode?
#[pyfunction]
fn cpu_in_user_mode(cs: u64, pc: u64) -> bool {
    crate::kernel::user_mode(cs, pc)
}

/// The caller of a kernel frame a debugger has no CFI for (entry code, an IRQ stack's
/// top): `("interrupted", pt_regs found dict)`, `("switch", {"rip": pc, "rsp": sp})` or None.
#[pyfunction]
fn kernel_caller<'py>(
    py: Python<'py>,
    read: &Bound<'py, PyAny>,
    symtab: &Symtab,
    pc: u64,
    sp: u64,
) -> PyResult<Option<(&'static str, Bound<'py, PyDict>)>> {
    use crate::kernel::entry::{caller_of, Caller};
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    let caller = guarded("stackproof-unwinder", || Ok(caller_of(mem, symtab, pc, sp)))?;
    Ok(match caller {
        None => None,
        Some(Caller::Interrupted(f)) => Some(("interrupted", found_dict(py, &f)?)),
        Some(Caller::Switch { pc, sp }) => {
            let d = PyDict::new(py);
            d.set_item("rip", pc)?;
            d.set_item("rsp", sp)?;
            Some(("switch", d))
        }
    })
}

/// Where a sleeping kernel task resumes (see [`crate::kernel::task::task_start`]). `cpus`:
/// `(gdb thread, sp or None, gs_base)` of each CPU. Returns `(pc, sp, {reg: value},
/// (stack, stack end), frame 0's slot or None, notes)`; a ValueError says why not.
#[pyfunction]
#[pyo3(signature = (read, symtab, task, task_expr, stack_offset, thread_sp_offset, saved_sp, cpus, current_task_offset))]
#[allow(clippy::too_many_arguments)] // the Python signature
fn task_start(
    read: &Bound<'_, PyAny>,
    symtab: &Symtab,
    task: u64,
    task_expr: String,
    stack_offset: Option<u64>,
    thread_sp_offset: Option<u64>,
    saved_sp: Option<u64>,
    cpus: Vec<(u32, Option<u64>, u64)>,
    current_task_offset: Option<u64>,
) -> PyResult<TaskStartTuple> {
    use crate::kernel::task::{Cpu, TaskQuery};
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    let q = TaskQuery {
        task,
        task_expr,
        stack_offset,
        thread_sp_offset,
        saved_sp,
        cpus: cpus.into_iter().map(|(thread, sp, gs_base)| Cpu { thread, sp, gs_base }).collect(),
        current_task_offset,
    };
    let t = guarded("task_start", || crate::kernel::task::task_start(mem, symtab, &q).map_err(PyValueError::new_err))?;
    let regs = t.regs.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
    Ok((t.pc, t.sp, regs, t.stack, t.slot, t.notes))
}

type TaskStartTuple = (u64, u64, std::collections::HashMap<String, u64>, (u64, u64), Option<u64>, Vec<String>);

type StackWord = (u64, Option<u64>, Option<String>);

/// The words of `[lo, hi)`: `(address, value or None if unreadable, "func+off" when the
/// value is a return address: code right after a call)`.
#[pyfunction]
fn stack_words(read: &Bound<'_, PyAny>, symtab: &Symtab, lo: u64, hi: u64) -> PyResult<Vec<StackWord>> {
    use crate::regs::annotate::StackWord as W;
    let (rows, _cut) = stack_rows_of(read, symtab, lo, hi, 1 << 20)?;
    let mut out = Vec::new();
    for r in rows {
        match r {
            W::Word { address, value, ra } => out.push((address, Some(value), ra)),
            W::Unreadable { address, len } => out.extend((0..len / 8).map(|i| (address + i * 8, None, None))),
        }
    }
    Ok(out)
}

fn stack_rows_of(
    read: &Bound<'_, PyAny>,
    symtab: &Symtab,
    lo: u64,
    hi: u64,
    max_words: u64,
) -> PyResult<(Vec<crate::regs::annotate::StackWord>, Option<u64>)> {
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    guarded("regs-from-stack", || Ok(crate::regs::annotate::stack_words(mem, symtab, lo, hi, max_words)))
}

/// `--annotate`'s rows of `[lo, hi)`, at most `max_words` words: `([(address, value or None,
/// "func+off" of a return address or None, bytes)], where the range was cut or None)`;
/// a run of unreadable words is one row of that many bytes.
#[pyfunction]
#[pyo3(signature = (read, symtab, lo, hi, max_words=crate::regs::annotate::MAX_WORDS))]
fn stack_rows(
    read: &Bound<'_, PyAny>,
    symtab: &Symtab,
    lo: u64,
    hi: u64,
    max_words: u64,
) -> PyResult<(Vec<(u64, Option<u64>, Option<String>, u64)>, Option<u64>)> {
    use crate::regs::annotate::StackWord as W;
    let (rows, cut) = stack_rows_of(read, symtab, lo, hi, max_words)?;
    let rows = rows
        .into_iter()
        .map(|r| match r {
            W::Word { address, value, ra } => (address, Some(value), ra, 8),
            W::Unreadable { address, len } => (address, None, None, len),
        })
        .collect();
    Ok((rows, cut))
}

/// A `verify-bt` thread dict of the gdb layer (`title`, `source`, `thread`, `stop`,
/// `frames`, `chain`, `chain_stop`, `compare`, `reads`), held while it is rendered.
struct PyThread<'py> {
    title: Option<String>,
    source: String,
    thread: Option<i64>,
    stop: Option<String>,
    frames: Vec<Bound<'py, Report>>,
    chain: Option<Vec<Bound<'py, ChainFrame>>>,
    chain_stop: Option<String>,
    compare: Option<(Vec<u32>, Vec<Bound<'py, ChainFrame>>)>,
    reads: u64,
}

impl<'py> PyThread<'py> {
    fn extract(t: &Bound<'py, PyDict>) -> PyResult<Self> {
        fn get<'py, T: for<'a> pyo3::FromPyObject<'a, 'py>>(t: &Bound<'py, PyDict>, k: &str) -> PyResult<Option<T>> {
            match t.get_item(k)? {
                Some(v) if !v.is_none() => Ok(Some(v.extract::<T>().map_err(Into::into)?)),
                _ => Ok(None),
            }
        }
        let compare = match t.get_item("compare")? {
            Some(c) if !c.is_none() => {
                let c = c.cast::<PyDict>()?;
                Some((get(c, "invented")?.unwrap_or_default(), get(c, "lost")?.unwrap_or_default()))
            }
            _ => None,
        };
        Ok(PyThread {
            title: get(t, "title")?,
            source: get(t, "source")?.unwrap_or_default(),
            thread: get(t, "thread")?,
            stop: get(t, "stop")?,
            frames: get(t, "frames")?.unwrap_or_default(),
            chain: get(t, "chain")?,
            chain_stop: get(t, "chain_stop")?,
            compare,
            reads: get(t, "reads")?.unwrap_or(0),
        })
    }

    fn thread(&self) -> report::Thread<'_> {
        report::Thread {
            title: self.title.as_deref(),
            task: None,
            source: &self.source,
            thread: self.thread,
            stop: self.stop.as_deref(),
            frames: self.frames.iter().map(|f| &f.get().0).collect(),
            chain: self.chain.as_ref().map(|c| c.iter().map(|f| &f.get().row).collect()),
            chain_stop: self.chain_stop.as_deref(),
            compare: self.compare.as_ref().map(|(invented, lost)| report::Compare {
                invented: invented.clone(),
                lost: lost.iter().map(|f| &f.get().row).collect(),
            }),
            reads: self.reads,
        }
    }
}

/// The text of one `verify-bt` thread (src/report.rs).
#[pyfunction]
/// `styles`: {"function", "address", "bogus", "unknown": escape sequence}, or None;
/// `columns`: the width lines fit when they can (0: unlimited).
#[pyo3(signature = (thread, verbose=false, styles=None, columns=0))]
fn thread_text(
    thread: &Bound<'_, PyDict>,
    verbose: bool,
    styles: Option<std::collections::HashMap<String, String>>,
    columns: usize,
) -> PyResult<String> {
    let t = PyThread::extract(thread)?;
    let styles = styles.map(|mut m| crate::text::Styles {
        function: m.remove("function").unwrap_or_default(),
        address: m.remove("address").unwrap_or_default(),
        bogus: m.remove("bogus").unwrap_or_default(),
        unknown: m.remove("unknown").unwrap_or_default(),
    });
    guarded("verify-bt", || Ok(report::thread_text(&t.thread(), verbose, columns, styles.as_ref())))
}

/// The `stackproof/verify-bt/1` document of these threads (src/report.rs).
#[pyfunction]
fn verify_json(threads: Vec<Bound<'_, PyDict>>) -> PyResult<String> {
    let held = threads.iter().map(PyThread::extract).collect::<PyResult<Vec<_>>>()?;
    guarded("verify-bt", || Ok(report::verify_json(&held.iter().map(PyThread::thread).collect::<Vec<_>>())))
}

/// `python3 -m stackproof layout ...`: the frame-layout engine's command line.
/// Returns `(output, exit status)`.
#[pyfunction]
fn layout_cli(py: Python<'_>, args: Vec<String>) -> PyResult<(String, i32)> {
    // Whole binaries take a while: let other Python threads run.
    py.detach(|| guarded("layout", || Ok(crate::oracle::cli::layout_cli(&args))))
}

#[pymodule]
mod _core {
    #[pymodule_export]
    use super::{
        check_chain, cpu_in_user_mode, decode_regs, kernel_address, kernel_caller, kernel_scan_ranges, layout_cli,
        probe_symbol, scan_regs, section_address, stack_rows, stack_words, task_start, thread_text, verify_crash_bt,
        verify_json, ChainFrame, Report, Symtab, TargetMemory,
    };
    #[pymodule_export]
    use crate::python_core::CoreFile;

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", crate::VERSION)?;
        // Panics are caught at the boundary and reported as one line; the default
        // hook would print a Rust backtrace into the gdb session.
        std::panic::set_hook(Box::new(|_| {}));
        Ok(())
    }
}
