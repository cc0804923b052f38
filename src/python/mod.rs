//! The pyo3 binding: adapts Python callables to the core's traits and turns
//! results into typed objects. No analysis lives here. `session` (Session: one
//! target's memory and symbols, every analysis as a method), then by concept:
//! `memory` (the reader adapters), `symbols` (Symtab, ElfFiles), `verify` (verify-bt),
//! `regs` (regs-from-stack), `kernel` (kernel targets), `corefile` (CoreFile).

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

mod corefile;
mod kernel;
mod memory;
mod regs;
mod session;
mod symbols;
mod verify;

/// Run core code; a panic becomes a Python RuntimeError instead of killing the session.
pub(super) fn guarded<T>(what: &str, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = crate::panic_text(&*payload);
            Err(PyRuntimeError::new_err(format!("stackproof internal error in {what}: {msg}")))
        }
    }
}

/// A Python string for one of the core's fixed words (kinds, verdicts, trust levels,
/// reason codes), made once: a deep stack repeats them thousands of times.
pub(super) fn word<'py>(py: Python<'py>, s: &'static str) -> Bound<'py, PyString> {
    thread_local! {
        static WORDS: std::cell::RefCell<std::collections::HashMap<&'static str, Py<PyString>>> = Default::default();
    }
    WORDS.with(|w| w.borrow_mut().entry(s).or_insert_with(|| PyString::intern(py, s).unbind()).bind(py).clone())
}

pub(super) fn start_of((pc, sp, regs): (u64, u64, std::collections::HashMap<String, u64>)) -> crate::unwind::Start {
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
    use super::corefile::CoreFile;
    #[pymodule_export]
    use super::kernel::{cpu_in_user_mode, kernel_address, KernelCaller, StackRange, TaskStart};
    #[pymodule_export]
    use super::layout_cli;
    #[pymodule_export]
    use super::memory::TargetMemory;
    #[pymodule_export]
    use super::session::Session;
    #[pymodule_export]
    use super::symbols::{probe_symbol, section_address, ElfFiles, Symtab};
    #[pymodule_export]
    use super::verify::{thread_text, verify_json, ChainFrame, Check, CrashTask, Report};

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", crate::VERSION)?;
        // One default for every front-end's --max-frames.
        m.add("DEFAULT_MAX_FRAMES", crate::unwind::DEFAULT_MAX_FRAMES)?;
        // And for --annotate's --max-words.
        m.add("DEFAULT_MAX_WORDS", crate::regs::annotate::MAX_WORDS)?;
        // Panics are caught at the boundary and reported as one line; the default
        // hook would print a Rust backtrace into the gdb session.
        std::panic::set_hook(Box::new(|_| {}));
        Ok(())
    }
}
