//! `Session`: one target's memory and symbols, and every analysis the core makes on
//! them, each returning a typed result (`Check`, `CrashTask`, `KernelCaller`,
//! `TaskStart`, `StackRange`) or a finished document.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::kernel::{KernelCaller, StackRange, TaskStart};
use super::symbols::Symtab;
use super::verify::{Check, CpuRegs, CrashTask, FrameTuple};

type StartRegs = (u64, u64, HashMap<String, u64>);

/// `Session(read, symtab)`: `read` is a `TargetMemory` (its cache lives as long as it
/// does) or a plain `read(addr, n) -> bytes | None` (cached for one call at a time).
#[pyclass(module = "stackproof._core", name = "Session", frozen)]
pub struct Session {
    read: Py<PyAny>,
    symtab: Py<Symtab>,
}

#[pymethods]
impl Session {
    #[new]
    fn new(read: Py<PyAny>, symtab: Py<Symtab>) -> Self {
        Session { read, symtab }
    }

    #[getter]
    fn memory(&self, py: Python<'_>) -> Py<PyAny> {
        self.read.clone_ref(py)
    }

    #[getter]
    fn symtab(&self, py: Python<'_>) -> Py<Symtab> {
        self.symtab.clone_ref(py)
    }

    /// Check `frames` (`(level, pc, sp, slot, kind, name, trust)` each), or with
    /// `frames=None` stackproof's own chain from `start = (pc, sp, {register: value})`.
    #[pyo3(signature = (frames, start, max_frames=crate::unwind::DEFAULT_MAX_FRAMES, with_regs=false, chain="always"))]
    fn check(
        &self,
        py: Python<'_>,
        frames: Option<Vec<FrameTuple>>,
        start: Option<StartRegs>,
        max_frames: usize,
        with_regs: bool,
        chain: &str,
    ) -> PyResult<Check> {
        let symtab = self.symtab.borrow(py);
        super::verify::check(py, self.read.bind(py), &symtab, frames, start, max_frames, with_regs, chain)
    }

    /// Verify every task of a crash `bt` text; `cpus`: `{cpu: (pc, sp, {register: value},
    /// user mode)}` for the CPUs the headers name.
    #[pyo3(signature = (text, max_frames=crate::unwind::DEFAULT_MAX_FRAMES, cpus=None))]
    fn verify_crash_bt(
        &self,
        py: Python<'_>,
        text: &str,
        max_frames: usize,
        cpus: Option<HashMap<u32, CpuRegs>>,
    ) -> PyResult<Vec<CrashTask>> {
        let symtab = self.symtab.borrow(py);
        super::verify::verify_crash_bt(py, self.read.bind(py), &symtab, text, max_frames, cpus)
    }

    /// The caller of a kernel frame without CFI (entry code, an IRQ stack's top), or None.
    fn caller_of(&self, py: Python<'_>, pc: u64, sp: u64) -> PyResult<Option<KernelCaller>> {
        let symtab = self.symtab.borrow(py);
        super::kernel::caller_of(py, self.read.bind(py), &symtab, pc, sp)
    }

    /// Where a sleeping kernel task resumes; ValueError why not.
    #[pyo3(signature = (task, task_expr, stack_offset, thread_sp_offset, saved_sp, cpus, current_task_offset))]
    #[allow(clippy::too_many_arguments)] // the Python signature
    fn task_start(
        &self,
        py: Python<'_>,
        task: u64,
        task_expr: String,
        stack_offset: Option<u64>,
        thread_sp_offset: Option<u64>,
        saved_sp: Option<u64>,
        cpus: Vec<(u32, Option<u64>, u64)>,
        current_task_offset: Option<u64>,
    ) -> PyResult<TaskStart> {
        let symtab = self.symtab.borrow(py);
        super::kernel::task_start(
            self.read.bind(py),
            &symtab,
            task,
            task_expr,
            stack_offset,
            thread_sp_offset,
            saved_sp,
            cpus,
            current_task_offset,
        )
    }

    /// The stacks a kernel CPU's chain from `start` crosses, innermost first.
    fn scan_ranges(&self, py: Python<'_>, start: StartRegs, live_sp: u64) -> PyResult<Vec<StackRange>> {
        let symtab = self.symtab.borrow(py);
        super::kernel::scan_ranges(self.read.bind(py), &symtab, start, live_sp)
    }

    /// Decode one register set at `addr` as `layout`; ValueError when it does not decode.
    #[pyo3(signature = (addr, layout, live_sp=None))]
    fn decode_regs<'py>(
        &self,
        py: Python<'py>,
        addr: u64,
        layout: &str,
        live_sp: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let symtab = self.symtab.borrow(py);
        super::regs::decode_regs(py, self.read.bind(py), &symtab, addr, layout, live_sp)
    }

    /// The `regs-from-stack` document (text or JSON) of ADDR, a scan or `--annotate`.
    #[pyo3(signature = (live_sp, json, ranges=None, decode=None, layout_note=None, annotate=false,
                        words_range=None, frames=None, start=None, slot0=None, fs_base=None, gs_base=None,
                        max_words=crate::regs::annotate::MAX_WORDS))]
    #[allow(clippy::too_many_arguments)] // the Python signature
    fn regs_document(
        &self,
        py: Python<'_>,
        live_sp: u64,
        json: bool,
        ranges: Option<Vec<(u64, u64, u64)>>,
        decode: Option<(u64, String)>,
        layout_note: Option<String>,
        annotate: bool,
        words_range: Option<(u64, u64)>,
        frames: Option<Vec<FrameTuple>>,
        start: Option<StartRegs>,
        slot0: Option<u64>,
        fs_base: Option<u64>,
        gs_base: Option<u64>,
        max_words: u64,
    ) -> PyResult<String> {
        let symtab = self.symtab.borrow(py);
        super::regs::regs_document(
            self.read.bind(py),
            &symtab,
            live_sp,
            json,
            ranges,
            decode,
            layout_note,
            annotate,
            words_range,
            frames,
            start,
            slot0,
            fs_base,
            gs_base,
            max_words,
        )
    }
}
