//! Python memory readers behind the core's [`Memory`] trait and block cache.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::guarded;
use crate::memory::{BlockCache, Memory, ReadError};

/// Memory read through a Python callable `read(addr, length) -> bytes | None`.
pub(super) struct PyMemory {
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
pub(super) const BLOCK: u64 = crate::memory::STACK_BLOCK;

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
pub(super) enum CallMemory<'py> {
    Session(PyRef<'py, TargetMemory>),
    Fresh(BlockCache<PyMemory>),
}

impl<'py> CallMemory<'py> {
    pub(super) fn new(read: &Bound<'py, PyAny>) -> Self {
        match read.extract::<PyRef<'py, TargetMemory>>() {
            Ok(m) => CallMemory::Session(m),
            Err(_) => CallMemory::Fresh(BlockCache::new(PyMemory { read: read.clone().unbind() }, BLOCK)),
        }
    }

    pub(super) fn cache(&self) -> &BlockCache<PyMemory> {
        match self {
            CallMemory::Session(m) => &m.cache,
            CallMemory::Fresh(c) => c,
        }
    }
}
