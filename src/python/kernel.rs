//! Kernel targets: the address-space tests, and what Session's kernel analyses return.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A stack a kernel CPU's chain crosses: `[lo, hi)` and the sp live on it.
#[pyclass(module = "stackproof._core", name = "StackRange", frozen, get_all)]
pub struct StackRange {
    pub(super) lo: u64,
    pub(super) hi: u64,
    pub(super) live_sp: u64,
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
    pub(super) kind: &'static str,
    pub(super) registers: std::collections::HashMap<&'static str, u64>,
    pub(super) found: Option<Py<PyDict>>,
}

/// Where a sleeping kernel task resumes: frame 0's pc, sp, callee-saved registers and
/// return-address slot (None: not known), the task's stack `[stack_lo, stack_hi)`, and
/// notes on how it was found.
#[pyclass(module = "stackproof._core", name = "TaskStart", frozen, get_all)]
pub struct TaskStart {
    pub(super) pc: u64,
    pub(super) sp: u64,
    pub(super) registers: std::collections::HashMap<String, u64>,
    pub(super) stack_lo: u64,
    pub(super) stack_hi: u64,
    pub(super) slot: Option<u64>,
    pub(super) notes: Vec<String>,
}
