//! The whole check of a chain: stackproof's own unwinding from the starting
//! registers, then verdicts on the chain given (or on its own chain), with
//! rbp and indirect-call targets taken from the registers it recovered.

use crate::crashbt::{task_chain, CrashTask};
use crate::kernel::THREAD_SIZE;
use crate::memory::Memory;
use crate::regs::scan::{scan_memory, ScanOptions};
use crate::regs::{Layout, Status};
use crate::resolve::{ChainResolver, ConsistencyResolver, Either};
use crate::symbols::Symbols;
use crate::unwind::{unwind, Start, Unwound};
use crate::verify::{function_of_ra, verify_chain, FrameIn, FrameKind, FrameReport, Reason, Trust, Verdict};

pub struct Checked {
    pub reports: Vec<FrameReport>,
    /// The independent chain, when starting registers were given.
    pub chain: Option<Unwound>,
    /// Levels of the given frames the independent chain does not have (within the stack it covers).
    pub invented: Vec<u32>,
    /// Indices into the independent chain of frames the given chain lacks (within the stack it covers).
    pub lost: Vec<usize>,
}

/// Frames with a stack frame of their own: not inline, not gdb's tail-call frames.
fn physical(f: &FrameIn) -> bool {
    !matches!(f.kind, FrameKind::Inline | FrameKind::TailCall)
}

/// Which given frames the own chain lacks, and which of its frames the given chain lacks.
pub fn compare(given: &[FrameIn], own: &Unwound) -> (Vec<u32>, Vec<usize>) {
    use std::collections::HashSet;
    let key = |f: &FrameIn| (f.pc, f.sp);
    let mine: HashSet<_> = own.frames.iter().map(|f| key(&f.frame)).collect();
    let theirs: HashSet<_> = given.iter().filter(|f| physical(f)).map(key).collect();
    let reach = own.frames.iter().filter_map(|f| f.frame.sp).max().unwrap_or(0);
    let their_reach = given.iter().filter(|f| physical(f)).filter_map(|f| f.sp).max().unwrap_or(0);
    let invented = given
        .iter()
        .filter(|f| physical(f) && !mine.contains(&key(f)) && f.sp.unwrap_or(0) <= reach)
        .map(|f| f.level)
        .collect();
    let lost = own
        .frames
        .iter()
        .enumerate()
        .filter(|(_, f)| !theirs.contains(&key(&f.frame)) && f.frame.sp.unwrap_or(0) <= their_reach)
        .map(|(i, _)| i)
        .collect();
    (invented, lost)
}

/// For each given frame, the own chain's frame that is the same physical frame (its
/// index): the same pc and sp, or for an inline or tail-call frame the chain's frame at
/// its sp (an inlined function shares its holder's frame; a tail call restored the
/// callee-saved registers before its jump). Also the chain's levels as the given
/// frames number them (the first physical frame matched exactly), for provenance.
pub fn same_frames(given: &[FrameIn], own: &Unwound) -> (Vec<Option<usize>>, std::collections::HashMap<u32, u32>) {
    use std::collections::HashMap;
    let mut by_key = HashMap::new();
    let mut by_sp = HashMap::new();
    for (i, f) in own.frames.iter().enumerate() {
        by_key.insert((f.frame.pc, f.frame.sp), i);
        by_sp.insert(f.frame.sp, i);
    }
    let mut levels = HashMap::new();
    let matched = given
        .iter()
        .map(|g| {
            let exact = by_key.get(&(g.pc, g.sp)).copied();
            if let Some(i) = exact.filter(|_| g.kind != FrameKind::Inline) {
                levels.entry(own.frames[i].frame.level).or_insert(g.level);
            }
            exact.or_else(|| if physical(g) { None } else { by_sp.get(&g.sp).copied() })
        })
        .collect();
    (matched, levels)
}

/// A given frame that passed only as far as an indirect call goes, where the own chain
/// rebuilt another frame in its place (its return address stale: the frame it gives has
/// no caller, a direct call at exactly this place leads to the inner frame), is bogus.
fn flag_stale(frames: &[FrameIn], reports: &mut [crate::verify::FrameReport], own: &Unwound) {
    for (f, r) in frames.iter().zip(reports.iter_mut()) {
        if !physical(f) || r.verdict != Verdict::Probable || !r.reasons.contains(&Reason::IndirectCall) {
            continue;
        }
        let rebuilt = own
            .frames
            .iter()
            .find(|o| o.frame.sp == f.sp && o.frame.pc != f.pc && o.rebuilt == Some(crate::unwind::Rebuilt::Stale));
        if let Some(o) = rebuilt {
            let ras = if o.candidates.is_empty() { vec![o.frame.pc] } else { o.candidates.clone() };
            r.flag(Verdict::Bogus, Reason::StaleRa(ras));
        }
    }
}

/// The reports of stackproof's own chain checked as a backtrace: a frame it rebuilt
/// (its return address is lost) is `probable` `rebuilt`, not disproved by the
/// damage that made it lost; its slot still shows what is there.
fn mark_rebuilt(reports: &mut [FrameReport], own: &Unwound) {
    for (r, f) in reports.iter_mut().zip(&own.frames) {
        if f.rebuilt.is_some() && r.level == f.frame.level {
            r.verdict = Verdict::Probable;
            r.reasons = vec![Reason::Rebuilt];
        }
    }
}

/// stackproof's own chain from `start`, on the memory a check reads (freed init code
/// from the vmlinux file), as [`check`] unwinds it.
pub fn own_chain<M: Memory, S: Symbols>(mem: &M, syms: &S, start: &Start, max: usize) -> Unwound {
    let mem = &crate::kernel::InitCode::new(mem, syms);
    crate::memory::scoped(mem, |mem| unwind(mem, syms, start, max))
}

/// A thread's own chain from `start` checked as a backtrace whose frame 0 returns
/// through `slot0`: a sleeping task's `ret_addr`, pushed by `call __switch_to_asm`, is
/// checked like any return address.
pub fn check_own<M: Memory, S: Symbols>(mem: &M, syms: &S, start: &Start, slot0: Option<u64>, max: usize) -> Checked {
    let mem = &crate::kernel::InitCode::new(mem, syms);
    crate::memory::scoped(mem, |mem| {
        // One unwinding: the chain is both what is checked and what it is compared with.
        let chain = unwind(mem, syms, start, max);
        let mut frames: Vec<FrameIn> = chain.frames.iter().map(|f| f.frame.clone()).collect();
        if let Some(f) = frames.first_mut() {
            f.slot = slot0;
        }
        let mut c = verify_against(mem, syms, Some(frames), Some(start), Some(chain));
        if let Some(own) = &c.chain {
            mark_rebuilt(&mut c.reports, own);
        }
        c
    })
}

/// Verify `frames` (or, when None, stackproof's own chain from `start`).
pub fn check<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    frames: Option<Vec<FrameIn>>,
    start: Option<&Start>,
    max: usize,
) -> Checked {
    let mem = &crate::kernel::InitCode::new(mem, syms);
    crate::memory::scoped(mem, |mem| {
        let chain = start.map(|s| unwind(mem, syms, s, max));
        verify_against(mem, syms, frames, start, chain)
    })
}

/// Verdicts on `frames` (None: on `chain` itself), with the registers `chain`, the
/// own unwinding from `start`, recovered.
fn verify_against<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    frames: Option<Vec<FrameIn>>,
    start: Option<&Start>,
    chain: Option<Unwound>,
) -> Checked {
    let given = frames.is_some();
    let mut frames = match (frames, &chain) {
        (Some(f), _) => f,
        (None, Some(c)) => c.frames.iter().map(|f| f.frame.clone()).collect(),
        (None, None) => Vec::new(),
    };
    let consistent = ConsistencyResolver { mem, syms };
    let mut reports = match &chain {
        Some(c) => {
            let recovered = match start {
                Some(s) => ChainResolver::new(mem, &c.frames).with_start(s),
                None => ChainResolver::new(mem, &c.frames),
            };
            for f in frames.iter_mut().filter(|f| f.bp.is_none()) {
                let same = recovered.frame(f.pc, f.sp);
                f.bp = same.and_then(|u| u.regs[1].as_ref()).map(|r| r.value);
            }
            verify_chain(mem, syms, &frames, &Either(&recovered, &consistent))
        }
        None => verify_chain(mem, syms, &frames, &consistent),
    };
    let (mut invented, lost) = match &chain {
        Some(c) if given => compare(&frames, c),
        _ => (Vec::new(), Vec::new()),
    };
    // A frame whose own checks all pass is real, whatever the own chain found.
    invented.retain(|l| reports.iter().find(|r| r.level == *l).is_none_or(|r| r.verdict != Verdict::Ok));
    match &chain {
        Some(c) if given => flag_stale(&frames, &mut reports, c),
        Some(c) => mark_rebuilt(&mut reports, c),
        None => {}
    }
    Checked { reports, chain, invented, lost }
}

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
    let mem = &crate::kernel::InitCode::new(mem, syms);
    crate::memory::scoped(mem, |mem| check_crash_task_unscoped(mem, syms, task, live, max))
}

fn check_crash_task_unscoped<M: Memory, S: Symbols>(
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
            Some((_, hi)) if s - *hi < THREAD_SIZE => *hi = s,
            _ => spans.push((s, s)),
        }
    }
    for (lo, hi) in spans {
        let lo = lo.saturating_sub(crate::kernel::PT_REGS_WINDOW) & !7;
        let scan =
            scan_memory(mem, lo, hi.saturating_add(crate::kernel::PT_REGS_WINDOW), syms, &ScanOptions::default());
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
        if hi <= lo || hi - lo >= THREAD_SIZE {
            continue;
        }
        let is_ra = f.frame.level > 0 && f.frame.kind == FrameKind::Normal;
        let sym = if is_ra { function_of_ra(syms, f.frame.pc) } else { syms.lookup(f.frame.pc) };
        stretches.push((lo, hi, sym.map_or_else(|| format!("{:#x}", f.frame.pc), |s| s.name.to_string())));
    }
    frames
        .iter()
        .map(|r| {
            let slot = r.slot?;
            if in_own(r) {
                None
            } else if slot < sp && sp - slot < THREAD_SIZE {
                Some(Reason::BelowSp(sp))
            } else {
                stretches
                    .iter()
                    .find(|(lo, hi, _)| (*lo..*hi).contains(&slot))
                    .map(|(_, _, n)| Reason::InsideFrameOf(n.clone()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Regions;
    use crate::symbols::{Symbol, SymbolTable};
    use crate::verify::{Reason, Verdict};

    /// Seed 002 (../shared/seeds/README.md): the stack words as the analyst printed them
    /// (the same words as the regs scanner's replay), and smp_call_function_single's
    /// prologue assembled from the note's disassembly.
    const BASE: u64 = 0xffffadd8a8a27a50;
    const WORDS: [u64; 28] = [
        0xffffffffab268342,
        0,
        0,
        0,
        0xffffffffabc01c2a,
        0xc,
        0xd,
        0xffff94753a820900,
        0xd,
        0xffffadd8a8a27b70,
        0xffff9474b11c0000,
        0x001dd4e7b30b38c0,
        0,
        0xd01f7b,
        0xd01f7b,
        0,
        0x830,
        1,
        0x8fb,
        0x830,
        0xffffffffffffff13,
        0xffffffffab34ba2e,
        0x10,
        0x202,
        0xffffadd8a8a27b20,
        0x18,
        0xffffadd8a8a27b38,
        0x18,
    ];
    const MORE: [u64; 12] = [
        0xffff9474b11c3bb0,
        3,
        0xffffadd8a8a27b50,
        0xb2c55e33b93e3e00,
        0xffffffffaba42ce2,
        0x2c592a2d4f618700,
        0x46,
        0,
        0xffffadd8a8a27c80,
        0xffffffffc35dfe83,
        0x46,
        0xffffffffab267960,
    ];
    const SCFS: u64 = 0xffffffffab34b960;

    fn seed_002() -> (Regions, SymbolTable) {
        let mut m = Regions::new();
        // Dumps hold whole pages; the note printed only these words. The rest of the
        // stack page gets a pattern that is neither code, stack nor a register set.
        let page = BASE & !0xfff;
        m.add_u64s(page, &[0x5a5a_5a5a_5a5a_5a5a; 1024]);
        m.add_u64s(BASE, &WORDS);
        m.add_u64s(BASE + 8 * WORDS.len() as u64, &MORE);
        // nopl 0x0(%rax,%rax,1); push %rbp; mov %rsp,%rbp; and $-32,%rsp; sub $0x40,%rsp;
        // then nops through +0xce (the interrupted ip) and `leave; ret`.
        let mut code =
            vec![0x0f, 0x1f, 0x44, 0x00, 0x00, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xe4, 0xe0, 0x48, 0x83, 0xec, 0x40];
        code.resize(0xd0, 0x90);
        code.extend([0xc9, 0xc3]);
        m.add(SCFS, code);
        let syms = SymbolTable::new(vec![
            Symbol::new("do_page_fault", 0xffffffffab268100, 0x400),
            Symbol::new("smp_call_function_single", SCFS, 0xd2),
            Symbol::new("search_extable", 0xffffffffaba42c80, 0x80),
            Symbol::new("apic_timer_interrupt", 0xffffffffabc01c20, 0x30),
            Symbol::new("vmx_vcpu_load", 0xffffffffc35dfc00, 0x400).in_module("kvm_intel"),
        ]);
        (m, syms)
    }

    const SEED_BT: &str = " #5 [ffffadd8a8a27a50] do_page_fault at ffffffffab268342
 #6 [ffffadd8a8a27af8] smp_call_function_single at ffffffffab34ba2e
 #7 [ffffadd8a8a27b50] search_extable at ffffffffaba42ce2
 #8 [ffffadd8a8a27b78] vmx_vcpu_load at ffffffffc35dfe83 [kvm_intel]
";

    #[test]
    fn seed_002_stale_search_extable_is_inside_the_interrupted_frame() {
        let (mem, syms) = seed_002();
        let tasks = crate::crashbt::parse(SEED_BT).expect("seed text parses");
        let r = check_crash_task(&mem, &syms, &tasks[0], None, 64);
        let by_level = |l: u32| r.iter().find(|f| f.level == l).expect("frame present");
        // #6 is the pc the timer interrupt stopped (pt_regs.ip at ...af8), not a call's return.
        assert_eq!(by_level(6).kind, FrameKind::Interrupted);
        assert!(by_level(6).reasons.contains(&Reason::InterruptedPc));
        assert_ne!(by_level(6).verdict, Verdict::Bogus);
        // push %rbp; mov %rsp,%rbp with rbp = ...b70 (pt_regs.bp): the return slot is ...b78.
        let seven = by_level(7);
        assert_eq!(seven.verdict, Verdict::Bogus);
        assert_eq!(seven.reasons, vec![Reason::InsideFrameOf("smp_call_function_single".into())]);
        assert_eq!(seven.expected_slot, Some(0xffffadd8a8a27b78));
        let eight = by_level(8);
        assert_ne!(eight.verdict, Verdict::Bogus);
        assert_eq!(eight.slot, Some(0xffffadd8a8a27b78));
        assert_eq!(eight.expected_slot, Some(0xffffadd8a8a27b78));
    }
}
