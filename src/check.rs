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
use crate::verify::{function_of_ra, verify_chain, FrameIn, FrameKind, FrameReport, Reason, Trust, Verdict};

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
pub fn check_crash_task<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    task: &CrashTask,
    live: Option<&LiveCpu>,
    max: usize,
) -> Vec<FrameReport> {
    let (mut frames, _) = task_chain(task);
    frames.truncate(max);
    let mut slots: Vec<u64> = frames.iter().filter_map(|f| f.slot).collect();
    slots.sort_unstable();
    // One scan per stack the slots are on (an IRQ stack and the task stack can be
    // megabytes apart: scanning between them would probe every page of the gap).
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for &s in &slots {
        match spans.last_mut() {
            Some((_, hi)) if s - *hi < KERNEL_STACK => *hi = s,
            _ => spans.push((s, s)),
        }
    }
    for (lo, hi) in spans {
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
    let resolver = ConsistencyResolver { mem, syms };
    let Some(live) = live else { return verify_chain(mem, syms, &frames, &resolver) };
    // Frames the live CPU disproves are checked on their own, so they are not
    // taken as the callee of the frame above them.
    let stale = against_live_cpu(mem, syms, &frames, live, max);
    let kept: Vec<FrameIn> = frames.iter().zip(&stale).filter(|(_, r)| r.is_none()).map(|(f, _)| f.clone()).collect();
    let mut kept = verify_chain(mem, syms, &kept, &resolver).into_iter();
    let mut out = Vec::with_capacity(frames.len());
    for (f, reason) in frames.iter().zip(stale) {
        let Some(reason) = reason else {
            out.extend(kept.next());
            continue;
        };
        let Some(mut r) = verify_chain(mem, syms, std::slice::from_ref(f), &resolver).pop() else { continue };
        if reason == Reason::CpuInUserMode {
            // Disproved whatever else could or could not be checked (the stack is often not even in the dump).
            r.verdict = Verdict::Bogus;
            r.reasons = vec![reason];
        } else {
            r.flag(Verdict::Bogus, reason);
        }
        out.push(r);
    }
    out
}

/// The registers of the CPU a crash task header names (`CPU: N`), when the dump has them.
pub struct LiveCpu {
    pub start: Start,
    /// The registers are user mode (`cs & 3 == 3`, or a user-space pc).
    pub user_mode: bool,
}

const KERNEL_STACK: u64 = 0x4000;

/// crash starts a running task's backtrace from its own guess, not from the CPU's
/// registers: check its frames against the live CPU. In user mode no kernel frame
/// is live; in kernel mode a slot below the live sp (on the same stack) is stale,
/// and a slot inside a frame of stackproof's own chain from the registers (not one
/// of its return address slots) lies inside that frame. Frames that are in the own
/// chain (same pc and sp) are never flagged.
fn against_live_cpu<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    frames: &[FrameIn],
    live: &LiveCpu,
    max: usize,
) -> Vec<Option<Reason>> {
    if live.user_mode {
        return frames.iter().map(|f| f.slot.map(|_| Reason::CpuInUserMode)).collect();
    }
    let sp = live.start.sp;
    let own = unwind(mem, syms, &live.start, max);
    let in_own = |r: &FrameIn| own.frames.iter().any(|f| f.frame.pc == r.pc && f.frame.sp == r.sp);
    // (lo, hi, function): [frame sp, caller's return address slot) of consecutive own
    // frames on one stack, both found from registers or by the layout.
    let mut stretches = Vec::new();
    for w in own.frames.windows(2) {
        let (f, caller) = (&w[0], &w[1]);
        let (Some(lo), Some(hi)) = (f.frame.sp, caller.frame.slot) else { continue };
        let found = |t: Trust| matches!(t, Trust::Registers | Trust::Layout);
        if caller.frame.kind != FrameKind::Normal || !found(caller.frame.trust) || !found(f.frame.trust) {
            continue;
        }
        if hi <= lo || hi - lo >= KERNEL_STACK {
            continue;
        }
        let is_ra = f.frame.level > 0 && f.frame.kind == FrameKind::Normal;
        let sym = if is_ra { function_of_ra(syms, f.frame.pc) } else { syms.lookup(f.frame.pc) };
        stretches.push((lo, hi, sym.map_or_else(|| format!("{:#x}", f.frame.pc), |s| s.name)));
    }
    frames
        .iter()
        .map(|r| {
            let slot = r.slot?;
            if in_own(r) {
                None
            } else if slot < sp && sp - slot < KERNEL_STACK {
                Some(Reason::BelowSp(sp))
            } else {
                stretches.iter().find(|(lo, hi, _)| (*lo..*hi).contains(&slot)).map(|(_, _, n)| Reason::InsideFrameOf(n.clone()))
            }
        })
        .collect()
}
