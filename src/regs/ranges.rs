//! The stacks `regs-from-stack --scan` covers by default.

use crate::kernel::{
    is_kernel, previous_stacks, stack_around, StackRange, IRQ_STACK_SIZE, PT_REGS_WINDOW, THREAD_SIZE,
};
use crate::memory::Memory;
use crate::symbols::Symbols;
use crate::unwind::Start;
use crate::verify::{FrameIn, FrameKind};

/// Below a user sp: the red zone, and what signal delivery and returned calls left.
pub const USER_SCAN_BELOW: u64 = 0x10000;
/// At most this much of a user stack above sp.
pub const USER_SCAN_MAX: u64 = 8 << 20;
/// Above a user sp no known mapping holds.
const USER_SCAN_UNMAPPED: u64 = 1 << 20;

/// The range around a user sp: from [`USER_SCAN_BELOW`] under it (page-aligned, above
/// the zero page) to the end of the mapping holding it (the first of `mappings`, each
/// `[start, end)`), at most [`USER_SCAN_MAX`] above it.
pub fn user_range(sp: u64, mappings: &[(u64, u64)]) -> (u64, u64) {
    let end =
        mappings.iter().find(|&&(lo, hi)| lo <= sp && sp < hi).map_or(sp.saturating_add(USER_SCAN_UNMAPPED), |m| m.1);
    (sp.saturating_sub(USER_SCAN_BELOW).max(0x1000) & !0xFFF, end.min(sp.saturating_add(USER_SCAN_MAX)))
}

/// Every stack a thread's chain crosses, innermost first, each with its live sp: for a
/// kernel CPU those of [`kernel_ranges`]; in user space the stack holding
/// `live_sp`, then those the signal frames of the backtrace `frames` lead to (a
/// sigaltstack's, the interrupted frame's), each cut where it would overlap one taken.
pub fn scan_ranges<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    start: &Start,
    live_sp: u64,
    frames: &[FrameIn],
    mappings: &[(u64, u64)],
) -> Vec<StackRange> {
    if is_kernel(live_sp) {
        return kernel_ranges(mem, syms, start, live_sp);
    }
    let (lo, hi) = user_range(live_sp, mappings);
    let mut out = vec![StackRange { lo, hi, live_sp }];
    // The trampoline's sp and the interrupted frame's: the first met on a stack is its live sp.
    let sps = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.kind == FrameKind::SigTramp)
        .flat_map(|(i, f)| [f.sp, frames.get(i + 1).and_then(|n| n.sp)]);
    for s in sps.flatten() {
        if is_kernel(s) || out.iter().any(|r| r.lo <= s && s < r.hi) {
            continue;
        }
        let (mut lo, mut hi) = user_range(s, mappings);
        for r in &out {
            if r.hi <= s {
                lo = lo.max(r.hi);
            }
            if r.lo > s {
                hi = hi.min(r.lo);
            }
        }
        out.push(StackRange { lo, hi, live_sp: s });
    }
    out
}

/// Every kernel stack the chain from `start` crosses (IRQ stack, task stack, exception
/// stacks), innermost first, each with its live sp: `live_sp` on the first one, the saved
/// stack pointer (or the lowest frame) on the others. A range is cut where it would
/// overlap one already taken.
fn kernel_ranges<M: Memory, S: Symbols>(mem: &M, syms: &S, start: &Start, live_sp: u64) -> Vec<StackRange> {
    if !is_kernel(live_sp) {
        return Vec::new();
    }
    let chain = crate::memory::scoped(mem, |mem| crate::unwind::unwind(mem, syms, start, 1024));
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

    #[test]
    fn user_range_ends_with_the_mapping() {
        let m = [(0x7ffd_0000_0000, 0x7ffd_0010_0000)];
        assert_eq!(user_range(0x7ffd_0008_0010, &m), (0x7ffd_0007_0000, 0x7ffd_0010_0000));
        // No mapping: 1 MiB above sp; near 0: not below the first page.
        assert_eq!(user_range(0x5000, &[]), (0x1000, 0x5000 + (1 << 20)));
        // A huge mapping: 8 MiB above sp at most.
        assert_eq!(user_range(0x1000_0000, &[(0, 1 << 40)]).1, 0x1000_0000 + (8 << 20));
    }
}
