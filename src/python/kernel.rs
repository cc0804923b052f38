//! Kernel targets: address space, entry-code callers, sleeping tasks, scan ranges.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::memory::CallMemory;
use super::regs::found_dict;
use super::symbols::Symtab;
use super::{guarded, start_of};

/// The stacks `regs-from-stack --scan` covers by default for a kernel CPU whose frame-0
/// registers are `start` (`(pc, sp, {"rbx": v, ...})`) and live sp `live_sp`: every
/// stack its chain crosses, as `(lo, hi, live_sp)`, innermost first. Empty for user space.
#[pyfunction]
pub(super) fn kernel_scan_ranges(
    read: &Bound<'_, PyAny>,
    symtab: &Symtab,
    start: (u64, u64, std::collections::HashMap<String, u64>),
    live_sp: u64,
) -> PyResult<Vec<(u64, u64, u64)>> {
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    let start = start_of(start);
    guarded("regs-from-stack", || {
        let ranges = crate::kernel::scan_ranges(mem, symtab, &start, live_sp);
        Ok(ranges.into_iter().map(|r| (r.lo, r.hi, r.live_sp)).collect())
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
/// top): `("interrupted", pt_regs found dict)`, `("switch", {"rip": pc, "rsp": sp})` or None.
#[pyfunction]
pub(super) fn kernel_caller<'py>(
    py: Python<'py>,
    read: &Bound<'py, PyAny>,
    symtab: &Symtab,
    pc: u64,
    sp: u64,
) -> PyResult<Option<(&'static str, Bound<'py, PyDict>)>> {
    use crate::kernel::entry::{caller_of, Caller};
    let call_mem = CallMemory::new(read);
    let mem = call_mem.cache();
    let caller = guarded("stackproof-unwinder", || Ok(caller_of(mem, symtab, pc, sp)))?;
    Ok(match caller {
        None => None,
        Some(Caller::Interrupted(f)) => Some(("interrupted", found_dict(py, &f)?)),
        Some(Caller::Switch { pc, sp }) => {
            let d = PyDict::new(py);
            d.set_item("rip", pc)?;
            d.set_item("rsp", sp)?;
            Some(("switch", d))
        }
    })
}

/// Where a sleeping kernel task resumes (see [`crate::kernel::task::task_start`]). `cpus`:
/// `(gdb thread, sp or None, gs_base)` of each CPU. Returns `(pc, sp, {reg: value},
/// (stack, stack end), frame 0's slot or None, notes)`; a ValueError says why not.
#[pyfunction]
#[pyo3(signature = (read, symtab, task, task_expr, stack_offset, thread_sp_offset, saved_sp, cpus, current_task_offset))]
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
) -> PyResult<TaskStartTuple> {
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
    let regs = t.regs.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
    Ok((t.pc, t.sp, regs, t.stack, t.slot, t.notes))
}

type TaskStartTuple = (u64, u64, std::collections::HashMap<String, u64>, (u64, u64), Option<u64>, Vec<String>);
