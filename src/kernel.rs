//! What stackproof knows of the x86-64 Linux kernel's stacks, written once:
//! the address-space split, stack sizes, where an IRQ stack keeps the stack it
//! interrupted, which ranges a CPU's chain crosses.

use crate::memory::Memory;
use crate::symbols::Symbols;
use crate::unwind::{unwind, Start};

/// The lowest kernel address (the upper half of the canonical space).
pub const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;
/// One past the highest user address (47-bit user space).
pub const USER_END: u64 = 0x0000_8000_0000_0000;
/// Task stacks: 16 KiB (since 3.15), THREAD_SIZE-aligned.
pub const THREAD_SIZE: u64 = 0x4000;
/// IRQ stacks: 16 KiB, page-aligned only (vmapped since 5.x).
pub const IRQ_STACK_SIZE: u64 = 0x4000;
/// Exception (IST) stacks: NMI, #DB, #DF, #MC: one page each in the CPU entry area.
pub const IST_STACK_SIZE: u64 = 0x1000;
/// The CPU entry area (IST stacks, entry stack): `CPU_ENTRY_AREA_BASE` of 4.15+.
pub const CPU_ENTRY_AREA: std::ops::Range<u64> = 0xffff_fe00_0000_0000..0xffff_fe80_0000_0000;
/// How far above a frame's sp a pt_regs is looked for when the layout gives up.
pub const PT_REGS_WINDOW: u64 = 0x400;

pub fn is_kernel(addr: u64) -> bool {
    addr >= KERNEL_HALF
}

/// Stack pointers an IRQ stack's top may have saved for the frame at `sp`, each with the
/// address of the word that held it. 6.1's call_on_irqstack: `mov %rsp, (tos); mov tos,
/// %rsp; call func; pop %rsp`, so at the handler's frame (sp = tos) the word at sp is the
/// interrupted stack pointer; older kernels keep it in the top word of the (16 KiB or
/// page) block.
pub fn previous_stacks<M: Memory>(mem: &M, sp: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    if !is_kernel(sp) {
        return out;
    }
    let tops = [Some(sp), (sp | (THREAD_SIZE - 1)).checked_sub(7), (sp | 0xfff).checked_sub(7)];
    for top in tops.into_iter().flatten() {
        if let Ok(prev) = mem.read_u64(top) {
            if is_kernel(prev)
                && prev & 7 == 0
                && (prev ^ sp) >= THREAD_SIZE
                && prev != sp
                && !out.iter().any(|(_, p)| *p == prev)
            {
                out.push((top, prev));
            }
        }
    }
    out
}

/// A stack to scan for register sets, with the stack pointer live on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackRange {
    pub lo: u64,
    pub hi: u64,
    pub live_sp: u64,
}

/// The stack holding kernel address `a` when nothing else is known: a page of the CPU
/// entry area (IST stacks), else the THREAD_SIZE-aligned block (task stacks).
pub fn stack_around(a: u64) -> (u64, u64) {
    let size = if CPU_ENTRY_AREA.contains(&a) { IST_STACK_SIZE } else { THREAD_SIZE };
    let lo = a & !(size - 1);
    (lo, lo.saturating_add(size))
}

/// Every kernel stack the chain from `start` crosses (IRQ stack, task stack, exception
/// stacks), innermost first, each with its live sp: `live_sp` on the first one, the saved
/// stack pointer (or the lowest frame) on the others. A range is cut where it would
/// overlap one already taken.
pub fn scan_ranges<M: Memory, S: Symbols>(mem: &M, syms: &S, start: &Start, live_sp: u64) -> Vec<StackRange> {
    if !is_kernel(live_sp) {
        return Vec::new();
    }
    let chain = crate::x86::memo::scoped(|| unwind(mem, syms, start, 1024));
    // Runs of consecutive frames on one stack: (lowest used address, last frame's sp).
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut last: Option<u64> = None;
    for f in &chain.frames {
        let Some(sp) = f.frame.sp else { continue };
        let used = f.frame.slot.unwrap_or(sp);
        if !is_kernel(used) {
            break; // the user-mode frame a syscall's pt_regs names
        }
        match (runs.last_mut(), last) {
            (Some(run), Some(prev)) if used >= prev && used - prev < THREAD_SIZE => run.1 = sp,
            _ => runs.push((used, sp)),
        }
        last = Some(sp.max(used));
    }
    if runs.is_empty() {
        runs.push((live_sp, live_sp));
    }
    let mut out: Vec<StackRange> = Vec::new();
    let mut next_live: Option<u64> = None;
    for (i, &(lowest, top_sp)) in runs.iter().enumerate() {
        let first = out.is_empty();
        let here = if first { live_sp } else { next_live.take().unwrap_or(lowest) };
        // Left through an IRQ stack's top word: that word names where the next run is.
        let switch = runs.get(i + 1).and_then(|&(next_lo, _)| {
            previous_stacks(mem, top_sp)
                .into_iter()
                .find(|&(_, prev)| prev <= next_lo && next_lo - prev < PT_REGS_WINDOW)
        });
        let (lo, hi) = match switch {
            Some((top, prev)) => {
                next_live = Some(prev);
                let hi = top.saturating_add(8);
                (hi.saturating_sub(IRQ_STACK_SIZE), hi)
            }
            None => stack_around(here.min(lowest)),
        };
        if out.iter().any(|r| (r.lo..r.hi).contains(&here)) {
            continue;
        }
        let lo = out.iter().map(|r| r.hi).filter(|&h| h <= here).fold(lo, u64::max);
        let hi = out.iter().map(|r| r.lo).filter(|&l| l > here).fold(hi, u64::min);
        out.push(StackRange { lo, hi, live_sp: here });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Regions;

    #[test]
    fn irq_stack_top_names_the_interrupted_stack() {
        // irq CPU 1 (tests/fixtures/kernel/NOTES.md): [ffffc900000d0ff8] = ffffc9000043ba40.
        let mut m = Regions::new();
        m.add_u64s(0xffffc900000d0fe0, &[0xffffc9000043ba58, 0, 0xffffffff819fe439, 0xffffc9000043ba40]);
        assert_eq!(previous_stacks(&m, 0xffffc900000d0ff8), vec![(0xffffc900000d0ff8, 0xffffc9000043ba40)]);
        // Below the top: the word at sp (any pointer to another stack) comes first, then the top word.
        let below = previous_stacks(&m, 0xffffc900000d0fe8);
        assert_eq!(below, vec![(0xffffc900000d0ff8, 0xffffc9000043ba40)]);
        // A pointer into the same stack block is a saved frame pointer or a local, not a switch.
        m.add_u64s(0xffffc900000d0fe8, &[0xffffc900000d0f00]);
        assert_eq!(previous_stacks(&m, 0xffffc900000d0fe8), below);
        assert!(previous_stacks(&m, 0x7ffc_0000_0ff8).is_empty());
    }

    #[test]
    fn default_stack_blocks() {
        assert_eq!(stack_around(0xffffc9000043ba58), (0xffffc90000438000, 0xffffc9000043c000));
        assert_eq!(stack_around(0xfffffe0000010f58), (0xfffffe0000010000, 0xfffffe0000011000));
    }
}
