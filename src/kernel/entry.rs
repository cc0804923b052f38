//! What a debugger's unwinder asks at a kernel frame it has no CFI for: the caller of
//! entry code (the pt_regs its frame sits on) and of a handler at an IRQ stack's top.

use super::{is_kernel, PT_REGS_WINDOW, THREAD_SIZE};
use crate::memory::Memory;
use crate::regs::scan::{decode_at, scan_memory, Found, ScanOptions};
use crate::regs::{Layout, Status};
use crate::symbols::Symbols;
use crate::verify::function_of_ra;

/// How far above an IRQ stack's saved previous sp the return address is looked for.
const SWITCH_SCAN: u64 = 0x100;

/// Kernel entry code: assembly without DWARF CFI whose frame sits on (or points at) a pt_regs.
pub fn is_entry_code(name: &str) -> bool {
    const PREFIXES: [&str; 5] = ["asm_", "entry_SYSCALL", "entry_SYSENTER", "entry_INT80", "entry_IRET"];
    const NAMES: [&str; 9] = [
        "irq_entries_start",
        "spurious_entries_start",
        "error_entry",
        "paranoid_entry",
        "ret_from_intr",
        "ret_from_fork",
        "system_call",
        "ia32_syscall",
        "xen_error_entry",
    ];
    let base = if name.starts_with('.') { name } else { name.split('.').next().unwrap_or(name) };
    PREFIXES.iter().any(|p| base.starts_with(p)) || NAMES.contains(&base)
}

/// The caller of a kernel frame, as an unwinder without CFI for it needs it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Entry code: the context the pt_regs its frame sits on saved (an interrupted frame).
    Interrupted(Found),
    /// A handler's frame at an IRQ stack's top: the caller is on the stack it interrupted.
    Switch { pc: u64, sp: u64 },
}

/// The caller of the frame at `pc`/`sp` when it is entry code or at an IRQ stack's top.
pub fn caller_of<M: Memory, S: Symbols>(mem: &M, syms: &S, pc: u64, sp: u64) -> Option<Caller> {
    if !is_kernel(pc) {
        return None;
    }
    if syms.lookup(pc).is_some_and(|s| is_entry_code(&s.name)) {
        return pt_regs_for_entry(mem, syms, sp).map(Caller::Interrupted);
    }
    if sp & 0xfff == 0xff8 {
        return irq_stack_switch(mem, syms, sp);
    }
    None
}

/// The live pt_regs an entry-code frame at `sp` belongs to. After its `call` into C an
/// entry stub has sp = pt_regs (idtentry, syscall); older kernels pushed the pt_regs
/// pointer on the IRQ stack (`[sp]`). Otherwise the first live pt_regs above sp.
fn pt_regs_for_entry<M: Memory, S: Symbols>(mem: &M, syms: &S, sp: u64) -> Option<Found> {
    let mut candidates = vec![sp];
    if let Ok(w) = mem.read_u64(sp) {
        if is_kernel(w) && w % 8 == 0 && w != sp {
            candidates.push(w);
        }
    }
    for addr in candidates {
        let opts = ScanOptions { live_sp: Some(addr), ..ScanOptions::default() };
        if let Ok(f) = decode_at(mem, addr, Layout::PtRegs, syms, &opts) {
            if f.checks.iter().all(|c| c.ok || !c.required) && f.status == Status::Live {
                return Some(f);
            }
        }
    }
    let opts = ScanOptions { live_sp: Some(sp), ..ScanOptions::default() };
    scan_memory(mem, sp, sp.saturating_add(PT_REGS_WINDOW), syms, &opts)
        .found
        .into_iter()
        .find(|f| f.layout == Layout::PtRegs && f.status == Status::Live && f.address >= sp)
}

/// A frame whose sp is the top word of an IRQ stack: that word is the interrupted stack
/// pointer; the caller is the first return address above it.
fn irq_stack_switch<M: Memory, S: Symbols>(mem: &M, syms: &S, sp: u64) -> Option<Caller> {
    let prev = mem.read_u64(sp).ok()?;
    if !is_kernel(prev) || prev % 8 != 0 || prev == sp {
        return None;
    }
    let above_readable = sp.checked_add(8).is_some_and(|a| mem.read_u64(a).is_ok());
    let same_stack = sp.saturating_sub(THREAD_SIZE) < prev && prev < sp.saturating_add(THREAD_SIZE);
    if above_readable && same_stack {
        return None; // a saved frame pointer or a local, not a stack switch
    }
    let mut addr = prev;
    while addr < prev.saturating_add(SWITCH_SCAN) {
        if let Ok(v) = mem.read_u64(addr) {
            if crate::unwind::return_address_in(mem, syms, v).is_some() {
                // Where the stack above the top is readable, only a return into entry code
                // is taken as proof of a switch.
                if above_readable && !function_of_ra(syms, v).is_some_and(|f| is_entry_code(&f.name)) {
                    return None;
                }
                return Some(Caller::Switch { pc: v, sp: addr.checked_add(8)? });
            }
        }
        addr = addr.checked_add(8)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_code_names() {
        assert!(is_entry_code("asm_sysvec_apic_timer_interrupt"));
        assert!(is_entry_code("entry_SYSCALL_64_after_hwframe"));
        assert!(is_entry_code("ret_from_fork.cold"));
        assert!(!is_entry_code("sysvec_apic_timer_interrupt"), "the C handler has CFI");
        assert!(!is_entry_code(".asm_x"));
    }
}
