//! `regs-from-stack`: register sets found on a stack, and the stack's words.

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::guarded;
use super::memory::CallMemory;
use super::symbols::Symtab;

pub(super) fn found_dict<'py>(py: Python<'py>, f: &crate::regs::scan::Found) -> PyResult<Bound<'py, PyDict>> {
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
pub(super) fn scan_regs<'py>(
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
pub(super) fn decode_regs<'py>(
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
pub(super) fn stack_rows(
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
