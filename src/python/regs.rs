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
    d.set_item(intern!(py, "registers"), user_registers(f))?;
    let checks = PyList::empty(py);
    for c in &f.checks {
        checks.append((c.name, c.ok, c.required, c.detail.clone()))?;
    }
    d.set_item(intern!(py, "checks"), checks)?;
    Ok(d)
}

/// A set's registers by their `user_regs_struct` names (the one naming front-ends
/// see: `rbx`, `rip`, `eflags`, as gdb names them), what the set does not hold left out.
pub(super) fn user_registers(f: &crate::regs::scan::Found) -> std::collections::HashMap<&'static str, u64> {
    f.regs.iter().filter_map(|(n, v)| Some((crate::regs::user_name(n)?, *v))).collect()
}

fn scan_options(live_sp: Option<u64>) -> crate::regs::scan::ScanOptions {
    crate::regs::scan::ScanOptions { live_sp, ..Default::default() }
}

/// Decode one register set at `addr` as `layout` (`pt_regs`, `sigframe`, `ucontext`).
pub(super) fn decode_regs<'py>(
    py: Python<'py>,
    read: &Bound<'py, PyAny>,
    symtab: &Symtab,
    addr: u64,
    layout: &str,
    live_sp: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let layout = parse_layout(layout)?;
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    let f = guarded("regs-from-stack", || {
        crate::regs::scan::decode_at(mem, addr, layout, symtab, &scan_options(live_sp))
            .map_err(|e| PyValueError::new_err(e.to_string()))
    })?;
    found_dict(py, &f)
}

fn parse_layout(layout: &str) -> PyResult<crate::regs::Layout> {
    use crate::regs::Layout;
    match layout {
        "pt_regs" => Ok(Layout::PtRegs),
        "sigframe" | "rt_sigframe" => Ok(Layout::SigFrame),
        "ucontext" => Ok(Layout::Ucontext),
        other => Err(PyValueError::new_err(format!("unknown layout {other:?} (pt_regs, sigframe, ucontext)"))),
    }
}

/// The `regs-from-stack` document (text, or the stackproof/regs-from-stack/2 JSON) of
/// ADDR (`decode`: `(address, layout)`) or a scan of `ranges` (`(lo, hi, live sp)` each),
/// with `annotate`: every word of `words_range` (None: the first range, or 0x200 bytes
/// from sp) labelled by the backtrace `frames` (None: stackproof's own chain from
/// `start`, frame 0 returning through `slot0`), the canary read at `%fs:0x28` /
/// `%gs:0x28` from `fs_base` / `gs_base`. ValueError when ADDR does not read.
#[allow(clippy::too_many_arguments)]
pub(super) fn regs_document(
    read: &Bound<'_, PyAny>,
    symtab: &Symtab,
    live_sp: u64,
    json: bool,
    ranges: Option<Vec<(u64, u64, u64)>>,
    decode: Option<(u64, String)>,
    layout_note: Option<String>,
    annotate: bool,
    words_range: Option<(u64, u64)>,
    frames: Option<Vec<super::verify::FrameTuple>>,
    start: Option<(u64, u64, std::collections::HashMap<String, u64>)>,
    slot0: Option<u64>,
    fs_base: Option<u64>,
    gs_base: Option<u64>,
    max_words: u64,
) -> PyResult<String> {
    let decode = decode.map(|(a, l)| Ok::<_, PyErr>((a, parse_layout(&l)?))).transpose()?;
    let frames =
        frames.map(|v| v.into_iter().map(super::verify::frame_in).collect::<PyResult<Vec<_>>>()).transpose()?;
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    guarded("regs-from-stack", || {
        let annotate = annotate.then(|| crate::regs::annotate::Request {
            range: words_range,
            frames,
            start: start.map(super::start_of),
            slot0,
            canary: crate::regs::annotate::canary_of_cpu(mem, live_sp, fs_base, gs_base),
            max_words,
        });
        let req = crate::report::RegsRequest {
            live_sp,
            decode,
            layout_note,
            ranges: ranges.unwrap_or_default(),
            annotate,
            json,
        };
        crate::report::regs_document(mem, symtab, req).map_err(|e| PyValueError::new_err(e.to_string()))
    })
}
