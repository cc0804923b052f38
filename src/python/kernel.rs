//! Kernel targets: address space, entry-code callers, sleeping tasks, scan ranges.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::memory::CallMemory;
use super::regs::found_dict;
use super::symbols::Symtab;
use super::{guarded, start_of};

/// A stack a kernel CPU's chain crosses: `[lo, hi)` and the sp live on it.
#[pyclass(module = "stackproof._core", name = "StackRange", frozen, get_all)]
pub struct StackRange {
    lo: u64,
    hi: u64,
    live_sp: u64,
}

/// The stacks `regs-from-stack --scan` covers by default for a kernel CPU whose frame-0
/// registers are `start` (`(pc, sp, {"rbx": v, ...})`) and live sp `live_sp`: every
/// stack its chain crosses, innermost first. Empty for user space.
pub(super) fn scan_ranges(
    read: &Bound<'_, PyAny>,
    symtab: &Symtab,
    start: (u64, u64, std::collections::HashMap<String, u64>),
    live_sp: u64,
) -> PyResult<Vec<StackRange>> {
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    let start = start_of(start);
    guarded("regs-from-stack", || {
        let ranges = crate::kernel::scan_ranges(mem, symtab, &start, live_sp);
        Ok(ranges.into_iter().map(|r| StackRange { lo: r.lo, hi: r.hi, live_sp: r.live_sp }).collect())
    })
}

/// Is `addr` in the kernel half of the address space?
#[pyfunction]
pub(super) fn kernel_address(addr: u64) -> bool {
    crate::kernel::is_kernel(addr)
}

/// Is a CPU with these `cs` and `pc` in user mode?
#[pyfunction]
pub(super) fn cpu_in_user_mode(cs: u64, pc: u64) -> bool {
    crate::kernel::user_mode(cs, pc)
}

/// The caller of a kernel frame a debugger has no CFI for (entry code, an IRQ stack's
/// top): the frame it interrupted (`kind` "interrupted", from the pt_regs `found`) or
/// the task it switched from (`kind` "switch"). `registers`: the caller's, by their
/// `user_regs_struct` names (`rip`, `rsp`, `rbx`, ...).
#[pyclass(module = "stackproof._core", name = "KernelCaller", frozen, get_all)]
pub struct KernelCaller {
    kind: &'static str,
    registers: std::collections::HashMap<&'static str, u64>,
    found: Option<Py<PyDict>>,
}

pub(super) fn caller_of(
    py: Python<'_>,
    read: &Bound<'_, PyAny>,
    symtab: &Symtab,
    pc: u64,
    sp: u64,
) -> PyResult<Option<KernelCaller>> {
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

/// Where a sleeping kernel task resumes: frame 0's pc, sp, callee-saved registers and
/// return-address slot (None: not known), the task's stack `[stack_lo, stack_hi)`, and
/// notes on how it was found.
#[pyclass(module = "stackproof._core", name = "TaskStart", frozen, get_all)]
pub struct TaskStart {
    pc: u64,
    sp: u64,
    registers: std::collections::HashMap<String, u64>,
    stack_lo: u64,
    stack_hi: u64,
    slot: Option<u64>,
    notes: Vec<String>,
}

/// Where a sleeping kernel task resumes (see [`crate::kernel::task::task_start`]). `cpus`:
/// `(gdb thread, sp or None, gs_base)` of each CPU; a ValueError says why not.
#[allow(clippy::too_many_arguments)] // the Python signature
pub(super) fn task_start(
    read: &Bound<'_, PyAny>,
    symtab: &Symtab,
    task: u64,
    task_expr: String,
    stack_offset: Option<u64>,
    thread_sp_offset: Option<u64>,
    saved_sp: Option<u64>,
    cpus: Vec<(u32, Option<u64>, u64)>,
    current_task_offset: Option<u64>,
) -> PyResult<TaskStart> {
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
    let t = guarded("task_start", || crate::kernel::task::task_start(mem, symtab, &q).map_err(PyValueError::new_err))?;
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
