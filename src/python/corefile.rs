//! The binding of [`crate::corefile`]: a user core opened without gdb.

use std::path::{Path, PathBuf};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::corefile::{self, USER_REGS};
use crate::memory::Memory;

/// An x86-64 ELF core: `CoreFile(path)`; `read(addr, n) -> bytes | None` is a
/// memory reader for `TargetMemory`.
#[pyclass(module = "stackproof._core", name = "CoreFile")]
pub struct CoreFile(corefile::CoreFile);

#[pymethods]
impl CoreFile {
    #[new]
    fn new(path: &str) -> PyResult<Self> {
        corefile::CoreFile::open(Path::new(path)).map(CoreFile).map_err(PyValueError::new_err)
    }

    /// `[(pid, signal, {register name: value})]`, gdb's register names, in the core's order.
    #[getter]
    fn threads(&self) -> Vec<(u32, u16, std::collections::HashMap<&'static str, u64>)> {
        self.0.threads.iter().map(|t| (t.pid, t.signal, USER_REGS.iter().copied().zip(t.regs).collect())).collect()
    }

    /// `[(start, end, file offset, path)]` of the files the process had mapped (NT_FILE).
    #[getter]
    fn mappings(&self) -> Vec<(u64, u64, u64, String)> {
        self.0.mappings.iter().map(|m| (m.start, m.end, m.offset, m.path.clone())).collect()
    }

    /// The command name the kernel recorded (NT_PRPSINFO).
    #[getter]
    fn command(&self) -> Option<String> {
        self.0.command.clone()
    }

    /// Each mapped ELF file once: `(recorded path, local path, load bias, debug file or None)`;
    /// files that cannot be read as ELF (data files, a missing library) are left out.
    fn objects(&self) -> Vec<(String, String, u64, Option<String>)> {
        self.0
            .objects()
            .into_iter()
            .filter_map(|(path, start)| {
                let local = self.0.local_path(&path);
                let vaddr = crate::elf::first_load_vaddr(&local).ok()?;
                let debug = crate::elf::debug_file(&local).map(|p| p.display().to_string());
                Some((path, local.display().to_string(), start.wrapping_sub(vaddr), debug))
            })
            .collect()
    }

    /// The recorded path of the executable (from the auxiliary vector), when known.
    #[getter]
    fn executable(&self) -> Option<String> {
        self.0.executable().map(str::to_string)
    }

    /// Read the file mapped as `recorded` from `actual` instead.
    fn remap(&mut self, recorded: &str, actual: &str) {
        self.0.remap(recorded, PathBuf::from(actual))
    }

    fn read<'py>(&self, py: Python<'py>, addr: u64, n: usize) -> Option<Bound<'py, PyBytes>> {
        let mut buf = vec![0u8; n];
        self.0.read(addr, &mut buf).ok()?;
        Some(PyBytes::new(py, &buf))
    }
}
