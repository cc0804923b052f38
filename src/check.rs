//! The whole check of a chain: stackproof's own unwinding from the starting
//! registers, then verdicts on the chain given (or on its own chain), with
//! rbp and indirect-call targets taken from the registers it recovered.

use crate::memory::Memory;
use crate::symbols::Symbols;
use crate::crashbt::{task_chain, CrashTask};
use crate::regs::scan::{scan_memory, ScanOptions};
use crate::regs::{Layout, Status};
use crate::resolve::{ChainResolver, ConsistencyResolver, Either};
use crate::unwind::{unwind, Start, Unwound};
use crate::verify::{verify_chain, FrameIn, FrameKind, FrameReport};

pub struct Checked {
    pub reports: Vec<FrameReport>,
    /// The independent chain, when starting registers were given.
    pub chain: Option<Unwound>,
}

/// Verify `frames` (or, when None, stackproof's own chain from `start`).
pub fn check<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    frames: Option<Vec<FrameIn>>,
    start: Option<&Start>,
    max: usize,
) -> Checked {
    let chain = start.map(|s| unwind(mem, syms, s, max));
    let mut frames = match (frames, &chain) {
        (Some(f), _) => f,
        (None, Some(c)) => c.frames.iter().map(|f| f.frame.clone()).collect(),
        (None, None) => Vec::new(),
    };
    let consistent = ConsistencyResolver { mem, syms };
    let reports = match &chain {
        Some(c) => {
            for f in frames.iter_mut().filter(|f| f.bp.is_none()) {
                let same = c.frames.iter().find(|u| u.frame.pc == f.pc && u.frame.sp == f.sp);
                f.bp = same.and_then(|u| u.regs[1].as_ref()).map(|r| r.value);
            }
            let recovered = ChainResolver { mem, frames: &c.frames };
            verify_chain(mem, syms, &frames, &Either(&recovered, &consistent))
        }
        None => verify_chain(mem, syms, &frames, &consistent),
    };
    Checked { reports, chain }
}

/// How many words above the highest slot a pt_regs may start.
const PT_REGS_REACH: u64 = 0x400;

/// Verify one task of a crash `bt` text. crash sometimes prints an interrupt's
/// `pt_regs.ip` word as a frame (seed 002's `#6`): a live pt_regs found on the
/// stack whose `ip` sits at a frame's slot turns that frame into the interrupted
/// one, with the pt_regs' sp and bp, so its layout can be checked.
pub fn check_crash_task<M: Memory, S: Symbols>(mem: &M, syms: &S, task: &CrashTask, max: usize) -> Vec<FrameReport> {
    let (mut frames, _) = task_chain(task);
    frames.truncate(max);
    let slots: Vec<u64> = frames.iter().filter_map(|f| f.slot).collect();
    if let (Some(lo), Some(hi)) = (slots.iter().min(), slots.iter().max()) {
        let lo = lo.saturating_sub(PT_REGS_REACH) & !7;
        let scan = scan_memory(mem, lo, hi.saturating_add(PT_REGS_REACH), syms, &ScanOptions::default());
        for found in scan.found.iter().filter(|f| f.layout == Layout::PtRegs && f.status == Status::Live) {
            let ip_slot = found.address.saturating_add(16 * 8);
            for f in frames.iter_mut().filter(|f| f.slot == Some(ip_slot) && Some(f.pc) == found.reg("ip")) {
                f.kind = FrameKind::Interrupted;
                f.slot = None;
                f.sp = found.reg("sp");
                f.bp = found.reg("bp");
            }
        }
    }
    verify_chain(mem, syms, &frames, &ConsistencyResolver { mem, syms })
}
