//! `Session`: one target's memory and symbols, and every analysis the core makes on
//! them, each returning a typed result (`Check`, `CrashTask`, `KernelCaller`,
//! `TaskStart`, `StackRange`) or a finished document.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::kernel::{KernelCaller, StackRange, TaskStart};
use super::memory::CallMemory;
use super::regs::{found_dict, parse_layout, scan_options};
use super::symbols::Symtab;
use super::verify::{frame_in, ChainFrame, Check, CpuRegs, CrashTask, FrameTuple, Report};
use super::{guarded, start_of};
use crate::report::{self, Row};

type StartRegs = (u64, u64, HashMap<String, u64>);

/// `Session(read, symtab)`: `read` is a `TargetMemory` (its cache lives as long as it
/// does) or a plain `read(addr, n) -> bytes | None` (cached for one call at a time).
#[pyclass(module = "stackproof._core", name = "Session", frozen)]
pub struct Session {
    read: Py<PyAny>,
    symtab: Py<Symtab>,
}

impl Session {
    /// Run a check on the session's memory and symbols; its result as a `Check`.
    fn checked(
        &self,
        py: Python<'_>,
        with_regs: bool,
        chain: &str,
        run: impl FnOnce(&crate::memory::BlockCache<super::memory::PyMemory>, &Symtab) -> crate::check::Checked,
    ) -> PyResult<Check> {
        let symtab = self.symtab.borrow(py);
        let symtab: &Symtab = &symtab;
        let call_mem = CallMemory::new(self.read.bind(py));
        let mem = call_mem.cache();
        let reads_before = mem.requests();
        let checked = guarded("verify-bt", || Ok(run(mem, symtab)))?;
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
                (Some(l.unbind()), c.stop.clone())
            }
            None => (None, None),
        };
        Ok(Check {
            frames: list.unbind(),
            chain,
            stop,
            reads: mem.requests() - reads_before,
            invented: checked.invented,
            lost: checked.lost,
        })
    }
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
        let frames = frames.map(|v| v.into_iter().map(frame_in).collect::<PyResult<Vec<_>>>()).transpose()?;
        let start = start.map(start_of);
        self.checked(py, with_regs, chain, |mem, symtab| {
            crate::check::check(mem, symtab, frames, start.as_ref(), max_frames)
        })
    }

    /// stackproof's own chain from `start`, checked and compared as a backtrace whose
    /// frame 0 returns through `slot0` (a sleeping task's switch frame).
    #[pyo3(signature = (start, slot0, max_frames=crate::unwind::DEFAULT_MAX_FRAMES, with_regs=false, chain="always"))]
    fn check_own(
        &self,
        py: Python<'_>,
        start: StartRegs,
        slot0: Option<u64>,
        max_frames: usize,
        with_regs: bool,
        chain: &str,
    ) -> PyResult<Check> {
        let start = start_of(start);
        self.checked(py, with_regs, chain, |mem, symtab| {
            crate::check::check_own(mem, symtab, &start, slot0, max_frames)
        })
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
        let read = self.read.bind(py);
        let symtab = self.symtab.borrow(py);
        let symtab: &Symtab = &symtab;
        let tasks = crate::crashbt::parse(text).map_err(|e| PyValueError::new_err(e.to_string()))?;
        if tasks.iter().all(|t| t.frames.is_empty()) {
            return Err(PyValueError::new_err(
                "no crash `bt` frame lines (`#N [slot] function at address`) in the text",
            ));
        }
        let call_mem = CallMemory::new(read);
        let mem = call_mem.cache();
        let mut out = Vec::new();
        for t in &tasks {
            let (_, unplaced) = crate::crashbt::task_chain(t);
            let live =
                t.cpu.and_then(|c| cpus.as_ref()?.get(&c)).map(|(pc, sp, regs, user_mode)| crate::check::LiveCpu {
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
                (Some(pid), Some(task)) => {
                    report::task_title(pid, task, t.cpu, t.command.as_deref().unwrap_or_default())
                }
                _ => String::new(),
            };
            out.push(CrashTask { title, frames: list.unbind() });
        }
        Ok(out)
    }

    /// The caller of a kernel frame without CFI (entry code, an IRQ stack's top), or None.
    fn caller_of(&self, py: Python<'_>, pc: u64, sp: u64) -> PyResult<Option<KernelCaller>> {
        let read = self.read.bind(py);
        let symtab = self.symtab.borrow(py);
        let symtab: &Symtab = &symtab;
        use crate::kernel::entry::{caller_of, Caller};
        let call_mem = CallMemory::new(read);
        let mem = call_mem.cache();
        let caller = guarded("stackproof-unwinder", || Ok(caller_of(mem, symtab, pc, sp)))?;
        Ok(match caller {
            None => None,
            Some(Caller::Interrupted(f)) => Some(KernelCaller {
                kind: "interrupted",
                registers: super::regs::user_registers(&f),
                found: Some(found_dict(py, &f)?.unbind()),
            }),
            Some(Caller::Switch { pc, sp }) => {
                Some(KernelCaller { kind: "switch", registers: [("rip", pc), ("rsp", sp)].into(), found: None })
            }
        })
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
        let read = self.read.bind(py);
        let symtab = self.symtab.borrow(py);
        let symtab: &Symtab = &symtab;
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
        let t =
            guarded("task_start", || crate::kernel::task::task_start(mem, symtab, &q).map_err(PyValueError::new_err))?;
        Ok(TaskStart {
            pc: t.pc,
            sp: t.sp,
            registers: t.regs.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
            stack_lo: t.stack.0,
            stack_hi: t.stack.1,
            slot: t.slot,
            notes: t.notes,
        })
    }

    /// The stacks `--scan` covers by default, innermost first: those a kernel CPU's chain
    /// from `start` crosses; in user space the one holding `live_sp` (to the end of its
    /// mapping, the first of `mappings` holding it) and those the signal frames of the
    /// backtrace `frames` lead to.
    #[pyo3(signature = (start, live_sp, frames=None, mappings=None))]
    fn scan_ranges(
        &self,
        py: Python<'_>,
        start: StartRegs,
        live_sp: u64,
        frames: Option<Vec<FrameTuple>>,
        mappings: Option<Vec<(u64, u64)>>,
    ) -> PyResult<Vec<StackRange>> {
        let read = self.read.bind(py);
        let symtab = self.symtab.borrow(py);
        let symtab: &Symtab = &symtab;
        let frames = frames.unwrap_or_default().into_iter().map(frame_in).collect::<PyResult<Vec<_>>>()?;
        let call_mem = CallMemory::new(read);
        let mem = call_mem.cache();
        let start = start_of(start);
        guarded("regs-from-stack", || {
            let ranges =
                crate::regs::ranges::scan_ranges(mem, symtab, &start, live_sp, &frames, &mappings.unwrap_or_default());
            Ok(ranges.into_iter().map(|r| StackRange { lo: r.lo, hi: r.hi, live_sp: r.live_sp }).collect())
        })
    }

    /// Decode one register set at `addr` as `layout` (None: the layout the address
    /// implies, `regs::scan::decode_chosen`); ValueError when it does not decode.
    #[pyo3(signature = (addr, layout=None, live_sp=None))]
    fn decode_regs<'py>(
        &self,
        py: Python<'py>,
        addr: u64,
        layout: Option<&str>,
        live_sp: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let read = self.read.bind(py);
        let symtab = self.symtab.borrow(py);
        let symtab: &Symtab = &symtab;
        let layout = layout.map(parse_layout).transpose()?;
        let call_mem = CallMemory::new(read);
        let mem = call_mem.cache();
        let (f, _) = guarded("regs-from-stack", || {
            crate::regs::scan::decode_chosen(mem, addr, layout, symtab, &scan_options(live_sp))
                .map_err(|e| PyValueError::new_err(e.to_string()))
        })?;
        found_dict(py, &f)
    }

    /// The `regs-from-stack --frame N` / `--all` document (text or JSON): each frame of
    /// the backtrace `frames` (just frame `frame` of it when given; None: stackproof's own
    /// chain from `start`) with its callee-saved registers and where each came from;
    /// `stop`: why `frames` end early. ValueError when there is no frame `frame`.
    #[pyo3(signature = (frames, start, json, frame=None, stop=None, max_frames=crate::unwind::DEFAULT_MAX_FRAMES))]
    #[allow(clippy::too_many_arguments)] // the Python signature
    fn frame_registers(
        &self,
        py: Python<'_>,
        frames: Option<Vec<FrameTuple>>,
        start: StartRegs,
        json: bool,
        frame: Option<usize>,
        stop: Option<String>,
        max_frames: usize,
    ) -> PyResult<String> {
        let read = self.read.bind(py);
        let symtab = self.symtab.borrow(py);
        let symtab: &Symtab = &symtab;
        let frames =
            frames.map(|v| v.into_iter().map(super::verify::frame_in).collect::<PyResult<Vec<_>>>()).transpose()?;
        let call_mem = CallMemory::new(read);
        let mem = call_mem.cache();
        guarded("regs-from-stack", || {
            let req =
                crate::report::FrameRegsRequest { frames, start: start_of(start), want: frame, stop, max_frames, json };
            crate::report::frame_regs_document(mem, symtab, req).map(|(doc, _)| doc).map_err(PyValueError::new_err)
        })
    }

    /// The `regs-from-stack` document (text or JSON) of ADDR, a scan or `--annotate`.
    #[pyo3(signature = (live_sp, json, ranges=None, decode=None, annotate=false,
                        words_range=None, frames=None, start=None, slot0=None, fs_base=None, gs_base=None,
                        max_words=crate::regs::annotate::MAX_WORDS))]
    #[allow(clippy::too_many_arguments)] // the Python signature
    fn regs_document(
        &self,
        py: Python<'_>,
        live_sp: u64,
        json: bool,
        ranges: Option<Vec<(u64, u64, u64)>>,
        decode: Option<(u64, Option<String>)>,
        annotate: bool,
        words_range: Option<(u64, u64)>,
        frames: Option<Vec<FrameTuple>>,
        start: Option<StartRegs>,
        slot0: Option<u64>,
        fs_base: Option<u64>,
        gs_base: Option<u64>,
        max_words: u64,
    ) -> PyResult<String> {
        let read = self.read.bind(py);
        let symtab = self.symtab.borrow(py);
        let symtab: &Symtab = &symtab;
        let decode =
            decode.map(|(a, l)| Ok::<_, PyErr>((a, l.as_deref().map(parse_layout).transpose()?))).transpose()?;
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
            let req =
                crate::report::RegsRequest { live_sp, decode, ranges: ranges.unwrap_or_default(), annotate, json };
            crate::report::regs_document(mem, symtab, req).map_err(|e| PyValueError::new_err(e.to_string()))
        })
    }
}
