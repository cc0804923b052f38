//! Function symbols for the core: [`Symtab`], and [`ElfFiles`] with the ELF probes
//! the gdb layer uses.

use std::path::Path;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::guarded;
use crate::elf::{self, Placement};
use crate::symbols::{Symbol, SymbolTable, Symbols};

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

    fn direct_calls_to(&self, target: u64) -> Vec<u64> {
        self.code.iter().flat_map(|c| c.calls_to(target).iter().copied()).collect()
    }

    fn direct_jumps_to(&self, target: u64) -> Vec<u64> {
        self.code.iter().flat_map(|c| c.jumps_to(target).iter().copied()).collect()
    }

    fn store(&self) -> Option<&crate::memo::Store> {
        self.table.store()
    }

    fn unnamed_function(&self, addr: u64) -> Option<Symbol> {
        self.table.unnamed_function(addr)
    }

    fn landing_pads(&self, start: u64) -> Vec<(u64, u64, u64)> {
        self.table.landing_pads(start)
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
    /// With `files`, `path` is parsed there once for everything taken from it.
    #[pyo3(signature = (path, bias=None, sections=None, module=None, plt_from=None, files=None))]
    fn add_elf(
        &mut self,
        path: &str,
        bias: Option<u64>,
        sections: Option<std::collections::HashMap<String, u64>>,
        module: Option<&str>,
        plt_from: Option<&str>,
        files: Option<&Bound<'_, ElfFiles>>,
    ) -> PyResult<usize> {
        let placement = match sections {
            Some(s) => Placement::Sections(s),
            None => Placement::Bias(bias.unwrap_or(0)),
        };
        let files = files.map(|f| &f.get().0);
        let (syms, code, markers, unnamed, pads) = guarded("add_elf", || {
            let open = |p: &str| match files {
                Some(f) => f.open(Path::new(p)),
                None => elf::ElfFile::read(Path::new(p)),
            };
            let file = open(path).map_err(PyValueError::new_err)?;
            let mut syms = file.symbols(&placement, module);
            let mut code = file.code_image(&placement);
            let mut fdes = file.fde_functions(&placement, module);
            let mut pads = file.landing_pads(&placement);
            // A separate debug file has no code: the PLT stubs, the code bytes and the
            // unwind tables are the file's itself.
            if let Some(Ok(own)) = plt_from.filter(|c| *c != path).map(open) {
                syms.extend(own.plt_symbols(&placement, module));
                if code.is_none() {
                    code = own.code_image(&placement);
                }
                if fdes.is_empty() {
                    fdes = own.fde_functions(&placement, module);
                    pads = own.landing_pads(&placement);
                }
            }
            // Only the functions no sized symbol names need their extent from there.
            let named: std::collections::HashSet<u64> = syms.iter().filter(|s| s.size != 0).map(|s| s.start).collect();
            fdes.retain(|f| !named.contains(&f.start));
            Ok((syms, code, file.markers(&placement), fdes, pads))
        })?;
        let n = syms.len();
        self.table.merge(syms);
        self.table.merge_unnamed(unnamed);
        self.table.merge_pads(pads);
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

/// Parsed ELF files, kept by whoever builds symbol tables (a gdb session, for its
/// objfiles): `Symtab.add_elf(files=...)` and the probes below parse a file once.
/// Bounded; a file that changed (size or mtime) is parsed anew.
#[pyclass(module = "stackproof._core", name = "ElfFiles", frozen)]
pub struct ElfFiles(elf::ElfFiles);

#[pymethods]
impl ElfFiles {
    #[new]
    fn new() -> Self {
        ElfFiles(elf::ElfFiles::default())
    }

    /// Link-time address of a section of an ELF file, or None.
    fn section_address(&self, path: &str, name: &str) -> PyResult<Option<u64>> {
        guarded("section_address", || {
            Ok(self.0.open(Path::new(path)).map_err(PyValueError::new_err)?.section_address(name))
        })
    }

    /// `(name, link-time address)` of a function of `path` to locate the file through gdb.
    fn probe_symbol(&self, path: &str) -> PyResult<Option<(String, u64)>> {
        guarded("probe_symbol", || Ok(self.0.open(Path::new(path)).map_err(PyValueError::new_err)?.probe_symbol()))
    }
}

/// Link-time address of a section of an ELF file, or None (parsed for this call).
#[pyfunction]
pub(super) fn section_address(path: &str, name: &str) -> PyResult<Option<u64>> {
    guarded("section_address", || elf::section_address(Path::new(path), name).map_err(PyValueError::new_err))
}

/// `(name, link-time address)` of a function of `path` to locate the file through gdb
/// (parsed for this call).
#[pyfunction]
pub(super) fn probe_symbol(path: &str) -> PyResult<Option<(String, u64)>> {
    guarded("probe_symbol", || elf::probe_symbol(Path::new(path)).map_err(PyValueError::new_err))
}
