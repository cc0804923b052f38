//! `verify-bt`: the frame objects it returns ([`Report`], [`ChainFrame`]), what
//! Session's checks return ([`Check`], [`CrashTask`]), and their text and JSON.

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use pyo3::IntoPyObjectExt;

use super::symbols::Symtab;
use super::{guarded, word};
use crate::report::{self, ChainRow, Row};
use crate::verify::{self, FrameIn, FrameKind, Trust};

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

/// One verified frame, read like a dict (`r["verdict"]`, `r.get("slot")`): a field
/// becomes a Python object only when it is asked for (a deep stack has thousands
/// of frames and the text output reads a few fields of each).
#[pyclass(module = "stackproof._core", name = "FrameReport", frozen)]
pub struct Report(pub(super) Row);

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

pub(super) type FrameTuple = (u32, u64, Option<u64>, Option<u64>, String, Option<String>, String);

pub(super) fn frame_in(t: FrameTuple) -> PyResult<FrameIn> {
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

const CHAIN_KEYS: [&str; 13] = [
    "level",
    "pc",
    "sp",
    "slot",
    "kind",
    "trust",
    "function",
    "module",
    "describe",
    "name",
    "layout_note",
    "regs",
    "candidates",
];

impl ChainFrame {
    pub(super) fn new(symtab: &Symtab, f: &crate::unwind::Frame, with_regs: bool) -> Self {
        let regs = with_regs.then(|| {
            crate::unwind::register_rows(&f.regs, None)
                .into_iter()
                .map(|r| (r.name, r.value, r.origin, r.saved_at))
                .collect()
        });
        ChainFrame { row: ChainRow::of(symtab, f), layout_note: f.layout_note.clone(), regs }
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
            // None unless asked for (with_regs): a key that is listed is always there.
            "regs" => self.regs.clone().into_bound_py_any(py)?,
            // None unless the pc is one of several return addresses (pc is the first).
            "candidates" => {
                (self.row.candidates.len() > 1).then(|| self.row.candidates.clone()).into_bound_py_any(py)?
            }
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

/// What [`super::session::Session::check`] returns: the checked frames, stackproof's own
/// chain, why it stopped, the memory reads the check made, the levels of `frames`
/// the chain does not have (invented) and the chain's indices `frames` lacks (lost).
#[pyclass(module = "stackproof._core", name = "Check", frozen, get_all)]
pub struct Check {
    /// A `FrameReport` per checked frame.
    pub(super) frames: Py<PyList>,
    /// The own chain's `ChainFrame`s; None when not asked for, or when it agrees and
    /// `chain="on-difference"`.
    pub(super) chain: Option<Py<PyList>>,
    pub(super) stop: Option<String>,
    pub(super) reads: u64,
    pub(super) invented: Vec<u32>,
    pub(super) lost: Vec<usize>,
}

/// `(pc, sp, {callee-saved name: value}, user mode)` of a CPU's registers.
pub(super) type CpuRegs = (u64, u64, std::collections::HashMap<String, u64>, bool);

/// One task of a crash `bt` text, verified: its header line and its `FrameReport`s.
#[pyclass(module = "stackproof._core", name = "CrashTask", frozen, get_all)]
pub struct CrashTask {
    /// `PID: ... TASK: ... CPU: ... COMMAND: ...` as crash prints it ("" without a header).
    pub(super) title: String,
    pub(super) frames: Py<PyList>,
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
pub(super) fn thread_text(
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
pub(super) fn verify_json(threads: Vec<Bound<'_, PyDict>>) -> PyResult<String> {
    let held = threads.iter().map(PyThread::extract).collect::<PyResult<Vec<_>>>()?;
    guarded("verify-bt", || Ok(report::verify_json(&held.iter().map(PyThread::thread).collect::<Vec<_>>())))
}
