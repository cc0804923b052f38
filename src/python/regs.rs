//! `regs-from-stack`: a register set as a dict, and the layout names Session takes.

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

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

pub(super) fn scan_options(live_sp: Option<u64>) -> crate::regs::scan::ScanOptions {
    crate::regs::scan::ScanOptions { live_sp, ..Default::default() }
}

pub(super) fn parse_layout(layout: &str) -> PyResult<crate::regs::Layout> {
    crate::regs::Layout::from_name(layout).map_err(PyValueError::new_err)
}
