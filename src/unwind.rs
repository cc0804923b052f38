//! stackproof's own unwinder, from registers alone: no debugger, no CFI.
//!
//! Each step asks the frame-layout engine where the CFA is at the frame's pc
//! and which callee-saved registers the function has saved where (trust
//! `layout`). Where the layout is unknown it crosses a `struct pt_regs` just
//! above the stack pointer (or above the previous stack an IRQ stack's top
//! names), and failing that scans the stack for the first return address whose
//! call leads to the current function (trust `scan`).

use crate::kernel::{KERNEL_HALF, PT_REGS_WINDOW, USER_END};
use crate::layout::at_pc::rule_at;
use crate::layout::Saved;
use crate::memory::Memory;
use crate::regs::scan::{decode_at, scan_memory, ScanOptions};
use crate::regs::{Layout, Status};
use crate::symbols::Symbols;
use crate::verify::{function_of_ra, FrameIn, FrameKind, Reason, Trust};
use crate::x86::{call_before, CallCheck, CallSite};

/// How far above a frame's sp a scan looks for its return address.
pub const SCAN_WINDOW: u64 = 16 * 1024;
/// Frames per chain unless the user says otherwise (`--max-frames`).
pub const DEFAULT_MAX_FRAMES: usize = 1024;

pub use crate::frame::{
    describe_origin, describe_origin_as, register_rows, CalleeSaved, Frame, Origin, Rebuilt, RegValue, RegisterRow,
    Start, Unwound,
};

/// Unwind from `start` for at most `max` frames.
pub fn unwind<M: Memory, S: Symbols>(mem: &M, syms: &S, start: &Start, max: usize) -> Unwound {
    let regs = start.callee_saved.map(|v| v.map(|value| RegValue { value, origin: Origin::Registers }));
    let first = FrameIn {
        level: 0,
        pc: start.pc,
        sp: Some(start.sp),
        slot: None,
        bp: start.callee_saved[1],
        kind: FrameKind::Normal,
        name: None,
        trust: Trust::Registers,
    };
    // A crossing may go down or stay (a register set naming its own place): a frame
    // met again is a loop, whatever step led to it.
    let mut seen = std::collections::HashSet::from([(first.pc, first.sp, first.kind.as_str())]);
    let mut frames =
        vec![Frame { frame: first, regs, cfa: None, layout_note: None, rebuilt: None, candidates: Vec::new() }];
    let mut stop = None;
    while frames.len() < max {
        let Some(cur) = frames.last_mut() else { break };
        let is_ra = cur.frame.kind != FrameKind::Interrupted && cur.frame.level > 0;
        let level = cur.frame.level + 1;
        let stepped = if cur.frame.kind == FrameKind::SigTramp {
            step_sigframe(mem, syms, cur, level).ok_or("signal frame unreadable")
        } else if cur.frame.pc == 0 && !is_ra {
            step_null_call(mem, syms, cur, level).ok_or("pc 0 and no indirect call's return address at sp")
        } else {
            step_layout(mem, syms, cur, is_ra, level)
        };
        // A stack switch (pt_regs crossing, IRQ stack back to the task stack) may go down.
        let (next, switched) = match stepped {
            Ok(f) if cur.frame.kind != FrameKind::SigTramp => (Some(prefer_rebuilt(mem, syms, cur, is_ra, f)), None),
            Ok(f) => (Some(f), None),
            Err(why) => {
                cur.layout_note = Some(why.to_string());
                let cur = cur.clone();
                match step_pt_regs(mem, syms, &cur, level) {
                    Some((Some(entry), f)) => (Some(entry), Some(f)),
                    Some((None, f)) => (Some(f), None),
                    // Nothing is outer of a task stack's bottom frame but its pt_regs.
                    None if cur.frame.slot.is_some_and(crate::kernel::is_stack_bottom_slot) => (None, None),
                    None => {
                        (step_lost(mem, syms, &cur, is_ra, level).or_else(|| step_scan(mem, syms, &cur, level)), None)
                    }
                }
            }
        };
        let Some(next) = next else {
            stop = frames.last().and_then(|f| f.layout_note.clone()).map(|n| format!("no caller found ({n})"));
            break;
        };
        let (Some(cur_sp), Some(next_sp)) = (frames.last().and_then(|f| f.frame.sp), next.frame.sp) else { break };
        let crossing = next.frame.kind == FrameKind::Interrupted || switched.is_some();
        if next_sp <= cur_sp && !crossing {
            stop = Some(format!("stack went backwards at frame #{level} (sp {next_sp:#x})"));
            break;
        }
        let mut pending = vec![next];
        if let Some(mut f) = switched {
            f.frame.level = level + 1;
            pending.push(f);
        }
        for next in pending {
            if frames.len() >= max {
                break;
            }
            if !seen.insert((next.frame.pc, next.frame.sp, next.frame.kind.as_str())) {
                stop = Some(format!(
                    "frame #{} repeats an earlier one (pc {:#x}): a loop",
                    next.frame.level, next.frame.pc
                ));
                break;
            }
            let user = match next.regs[0].as_ref().map(|r| &r.origin) {
                Some(Origin::RegisterSet { addr, layout: "pt_regs" })
                    if next.frame.pc < USER_END && cur_sp >= KERNEL_HALF =>
                {
                    Some(format!(
                        "user-mode pt_regs at {addr:#x}: ip {:#x} sp {:#x}",
                        next.frame.pc,
                        next.frame.sp.unwrap_or(0)
                    ))
                }
                _ => None,
            };
            frames.push(next);
            if user.is_some() {
                // The user-mode frame ends the kernel chain (drgn lists it too).
                stop = user;
            }
        }
        if stop.is_some() {
            break;
        }
    }
    if frames.len() >= max && stop.is_none() {
        stop = Some(format!("stopped after {max} frames"));
    }
    Unwound { frames, stop }
}

/// The call that ends at a return address (the code position a caller's layout is read at).
fn call_site<M: Memory, S: Symbols>(mem: &M, syms: &S, ra: u64) -> Option<CallSite> {
    // A stripped file's function has no symbol, only its unwind tables' extent.
    let f = crate::symbols::function_extent(syms, ra.checked_sub(1)?)?;
    match call_before(mem, ra, Some(f.start)) {
        Ok(CallCheck::Call { site, .. }) => Some(site),
        _ => None,
    }
}

/// Is `v` a return address: in a function, right after a call? Returns `func+off`.
pub fn return_address_in<M: Memory, S: Symbols>(mem: &M, syms: &S, v: u64) -> Option<String> {
    if !plausible_code_address(v) {
        return None;
    }
    call_site(mem, syms, v)?;
    function_of_ra(syms, v).map(|f| f.describe(v))
}

fn step_layout<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    cur: &Frame,
    is_ra: bool,
    level: u32,
) -> Result<Frame, &'static str> {
    // A return address is read at its call: after a call to a noreturn function
    // at the end of a function, the ra itself is already in the next one.
    let (layout, rule, cfa, regs_trusted) = frame_cfa(mem, syms, cur, is_ra)?;
    let known = known_regs(cur);
    let slot = cfa.checked_sub(8).ok_or("CFA out of range")?;
    let ra = mem.read_u64(slot).map_err(|_| "return address slot unreadable")?;
    let sigreturn = is_restore_rt(syms, ra);
    if sigreturn && crate::regs::scan::signal_frame_at(mem, slot, syms) == Some(false) {
        return Err("__restore_rt there, but no signal frame above it (a stale one)");
    }
    if !sigreturn && call_site(mem, syms, ra).is_none() && !crate::kernel::unverifiable_ra(syms, slot, ra) {
        return Err("the layout's return address slot holds no return address");
    }
    let regs = caller_regs(mem, &layout, &rule, cfa, cur, &known);
    let mut next = Frame {
        frame: FrameIn {
            level,
            pc: ra,
            sp: Some(cfa),
            slot: Some(slot),
            bp: regs[1].as_ref().map(|r| r.value),
            kind: if sigreturn { FrameKind::SigTramp } else { FrameKind::Normal },
            name: None,
            trust: Trust::Layout,
        },
        regs,
        cfa: None,
        layout_note: None,
        rebuilt: None,
        candidates: Vec::new(),
    };
    next.frame.trust = Trust::Layout;
    // Checked against what gave the CFA: not an rbp the frame sizes refuted.
    let inner = if regs_trusted { cur.frame.clone() } else { FrameIn { bp: None, ..cur.frame.clone() } };
    if let Some(why) = crate::verify::step_disproved(mem, syms, &inner, &next.frame, false) {
        return Err(match why {
            Reason::WrongTarget => "the return address's call leads elsewhere (a stale return address)",
            Reason::InsideFrameOf(_) => "the return address lies inside the frame (a stale one)",
            _ => "the layout's return address fails the checks",
        });
    }
    Ok(next)
}

/// A return address after an indirect call passes the checks whatever it is. When the
/// frame it gives has no caller of its own (its layout's slot holds no return address)
/// and the current frame's caller can be rebuilt as for a lost return address, with a
/// caller of its own, that address is a stale one: the rebuilt frame is taken.
fn prefer_rebuilt<M: Memory, S: Symbols>(mem: &M, syms: &S, cur: &Frame, is_ra: bool, next: Frame) -> Frame {
    let indirect =
        call_site(mem, syms, next.frame.pc).is_some_and(|s| !matches!(s.target, crate::x86::CallTarget::Direct(_)));
    if !indirect || next.frame.slot.is_some_and(crate::kernel::is_stack_bottom_slot) {
        return next;
    }
    let level = next.frame.level;
    if step_layout(mem, syms, &next, true, level + 1).is_ok() {
        return next;
    }
    match step_lost(mem, syms, cur, is_ra, level) {
        Some(alt)
            if alt.frame.pc != next.frame.pc
                && !alt.candidates.contains(&next.frame.pc)
                && step_layout(mem, syms, &alt, true, level + 1).is_ok() =>
        {
            Frame { layout_note: Some(Rebuilt::Stale.note().into()), rebuilt: Some(Rebuilt::Stale), ..alt }
        }
        _ => next,
    }
}

/// The callee-saved registers of the caller of `cur`, whose CFA is `cfa`: restored from
/// where `cur`'s code saved them, or unchanged.
fn caller_regs<M: Memory>(
    mem: &M,
    layout: &crate::layout::FunctionLayout,
    rule: &crate::layout::Rule,
    cfa: u64,
    cur: &Frame,
    known: &dyn Fn(u8) -> Option<u64>,
) -> CalleeSaved {
    let mut regs: CalleeSaved = Default::default();
    for (i, r) in regs.iter_mut().enumerate() {
        *r = match rule.saved.get(i) {
            Some(Saved::Same) => cur.regs[i].clone(),
            Some(Saved::At(_) | Saved::AtAnc(_)) => rule.saved_addr(i, cfa, known).and_then(|addr| {
                let insn = match rule.saved.get(i) {
                    Some(Saved::At(k)) => saver(mem, layout, i, *k),
                    _ => None,
                };
                mem.read_u64(addr)
                    .ok()
                    .map(|value| RegValue { value, origin: Origin::Saved { addr, by_level: cur.frame.level, insn } })
            }),
            _ => None,
        };
    }
    regs
}

/// The CFA in `[lo, hi]` whose slot holds a return address leading to the current function.
fn cfa_in_bounds<M: Memory, S: Symbols>(mem: &M, syms: &S, cur: &Frame, lo: u64, hi: u64) -> Option<u64> {
    scan_slots(mem, syms, cur, lo.checked_sub(8)?, hi, 0, false)?.frame.sp.filter(|c| *c <= hi)
}

/// pc 0 after a call through a NULL pointer: the call pushed its return address at sp
/// and nothing else ran. The word at sp must follow an indirect call (whose pointer,
/// when it can be read without registers, is 0).
fn step_null_call<M: Memory, S: Symbols>(mem: &M, syms: &S, cur: &Frame, level: u32) -> Option<Frame> {
    let sp = cur.frame.sp?;
    let ra = mem.read_u64(sp).ok()?;
    let site = call_site(mem, syms, ra)?;
    match &site.target {
        crate::x86::CallTarget::Direct(_) => return None,
        crate::x86::CallTarget::Memory(m) if m.base.is_none() && m.index.is_none() => {
            if mem.read_u64(m.absolute?).ok()? != 0 {
                return None;
            }
        }
        _ => {}
    }
    let frame = FrameIn {
        level,
        pc: ra,
        sp: sp.checked_add(8),
        slot: Some(sp),
        bp: cur.frame.bp,
        kind: FrameKind::Normal,
        name: None,
        trust: Trust::Layout,
    };
    Some(Frame { frame, regs: cur.regs.clone(), cfa: None, layout_note: None, rebuilt: None, candidates: Vec::new() })
}

/// The CFA of a frame from its function's layout (at the call, for a return address).
fn frame_cfa<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    cur: &Frame,
    is_ra: bool,
) -> Result<(std::sync::Arc<crate::layout::FunctionLayout>, crate::layout::Rule, u64, bool), &'static str> {
    let code_pc = if is_ra {
        call_site(mem, syms, cur.frame.pc).ok_or("no call before the return address")?.addr
    } else {
        cur.frame.pc
    };
    let (_sym, layout, rule) = rule_at(mem, syms, code_pc)?;
    let sp = cur.frame.sp.ok_or("sp unknown")?;
    let from_regs = rule.cfa_from(&known_regs(cur), &|a| mem.read_u64(a).ok());
    // A CFA outside the frame sizes the code allows (a realigned frame's damaged saved rbp)
    // or none at all: the return address within that range whose call leads here.
    let bounds = rule.cfa_bounds().and_then(|(lo, hi)| Some((sp.checked_add(lo)?, sp.checked_add(hi)?)));
    let (cfa, regs_trusted) = match (from_regs, bounds) {
        (Some(c), Some((lo, hi))) if c < lo || c > hi => {
            (cfa_in_bounds(mem, syms, cur, lo, hi).ok_or("CFA outside the frame sizes the code allows")?, false)
        }
        (None, Some((lo, hi))) => (cfa_in_bounds(mem, syms, cur, lo, hi).ok_or("CFA not computable here")?, false),
        (c, _) => (c.ok_or("CFA not computable here")?, true),
    };
    Ok((layout, rule, cfa, regs_trusted))
}

/// A frame's registers by DWARF number, as far as they are known (sp and the callee-saved).
fn known_regs(cur: &Frame) -> impl Fn(u8) -> Option<u64> + '_ {
    move |dw: u8| match dw {
        7 => cur.frame.sp,
        _ => crate::layout::CALLEE_SAVED
            .iter()
            .position(|r| *r == dw)
            .and_then(|i| cur.regs[i].as_ref())
            .map(|r| r.value),
    }
}

/// The frame's return address is lost (zeroed, overwritten): its caller G is the
/// function whose call precedes the first return address above, at the slot G's
/// layout puts it, and G's one call site that can lead to this frame's function is
/// where G stands (its return address rebuilt: trust `scan`). A signal handler's
/// lost return address is the trampoline when a signal frame starts at its slot.
fn step_lost<M: Memory, S: Symbols>(mem: &M, syms: &S, cur: &Frame, is_ra: bool, level: u32) -> Option<Frame> {
    let (cfa, regs, here) = if cur.frame.pc == 0 && !is_ra {
        // A call through a NULL pointer pushed its return address at sp and nothing ran.
        (cur.frame.sp?.checked_add(8)?, cur.regs.clone(), None)
    } else {
        let (cur_layout, rule, cfa, _) = frame_cfa(mem, syms, cur, is_ra).ok()?;
        // A stripped file's nameless function counts by its extent in the unwind tables.
        let at = if is_ra { cur.frame.pc.checked_sub(1)? } else { cur.frame.pc };
        let here = crate::symbols::function_extent(syms, at)?;
        // What the lost frame's registers were: restored from the current frame's saves.
        (cfa, caller_regs(mem, &cur_layout, &rule, cfa, cur, &known_regs(cur)), Some(here))
    };
    let lost_rbp = regs[1].as_ref().map(|r| r.value);
    let rebuilt = |pc: u64, kind: FrameKind, how: Rebuilt| Frame {
        frame: FrameIn {
            level,
            pc,
            sp: Some(cfa),
            // Not read from memory: the slot holds what replaced it.
            slot: None,
            bp: lost_rbp,
            kind,
            name: None,
            trust: Trust::Scan,
        },
        regs: regs.clone(),
        cfa: None,
        layout_note: Some(how.note().to_string()),
        rebuilt: Some(how),
        candidates: Vec::new(),
    };
    if here.is_some() {
        if let Some(pc) = lost_trampoline(mem, syms, cfa) {
            return Some(rebuilt(pc, FrameKind::SigTramp, Rebuilt::Trampoline));
        }
    }
    let at_call = |dw: u8| match dw {
        7 => Some(cfa),
        6 => lost_rbp,
        _ => None,
    };
    let at = Standing { here: here.as_ref(), at_call: &at_call, regs: &regs, sp: cfa };
    // Called through a pointer (or by the kernel, a signal handler): the lost frame is
    // one of the functions whose code calls this frame's function directly.
    let callers = |slot: u64| {
        let here = here.as_ref()?;
        let mut found = None;
        let mut seen = std::collections::HashSet::new();
        // Calls to it, to the PLT stub named for it (a library function), and to the
        // functions that tail-jump to it (qsort's `jmp qsort_r`) and their stubs.
        let stub = |f: &crate::symbols::Symbol| {
            (!f.name.is_empty()).then(|| syms.address_of(&format!("{}{}", f.base_name(), crate::elf::PLT_SUFFIX)))?
        };
        let mut entries = vec![here.start];
        entries.extend(stub(here));
        for j in syms.direct_jumps_to(here.start) {
            if let Some(f) = crate::symbols::function_extent(syms, j).filter(|f| !entries.contains(&f.start)) {
                entries.push(f.start);
                entries.extend(stub(&f));
            }
        }
        for c in entries.iter().flat_map(|&e| syms.direct_calls_to(e)) {
            let Some(g) = crate::symbols::function_extent(syms, c).filter(|g| seen.insert(g.start)) else { continue };
            if let Some(ras) = standing_call(mem, syms, &g, &at, slot) {
                if found.replace(ras).is_some() {
                    return None; // two functions could stand there: not rebuilt
                }
            }
        }
        found
    };
    let end = cfa.saturating_add(SCAN_WINDOW);
    let mut slot = cfa;
    while slot < end {
        let v = mem.read_u64(slot).ok()?;
        let at_v = slot;
        slot = slot.checked_add(8)?;
        if !plausible_code_address(v) {
            continue;
        }
        let found = if is_restore_rt(syms, v) {
            if crate::regs::scan::signal_frame_at(mem, at_v, syms) != Some(true) {
                continue;
            }
            callers(slot)
        } else {
            let Some(site) = call_site(mem, syms, v) else { continue };
            match site.target {
                crate::x86::CallTarget::Direct(t) => {
                    // A call through the PLT: the function its slot is bound to.
                    let t = crate::x86::target::through_stub(mem, syms, t).unwrap_or(t);
                    // (In recursion the lost frame's function is the current one.)
                    crate::symbols::function_extent(syms, t)
                        .filter(|g| g.start == t)
                        .and_then(|g| standing_call(mem, syms, &g, &at, slot))
                }
                _ => match conventional_callee(syms, v) {
                    Some(g) => standing_call(mem, syms, &g, &at, slot),
                    None => callers(slot),
                },
            }
        };
        // Not G's return address after all (a stale one, or an ambiguous G): look further.
        let Some((ras, fit)) = found else { continue };
        let mut f = rebuilt(ras[0], FrameKind::Normal, Rebuilt::Lost);
        if fit > ras.len() {
            let left = if ras.len() == 1 { "one".to_string() } else { ras.len().to_string() };
            f.layout_note = Some(format!(
                "{}: its branches leave {left} of the {fit} calls that fit its frame",
                Rebuilt::Lost.note()
            ));
        }
        if ras.len() > 1 {
            f.candidates = ras;
        }
        return Some(f);
    }
    None
}

/// `__restore_rt` when a live signal frame starts at `cfa - 8` (its pretcode is what
/// was lost): the ucontext above passes the scanner's required checks.
fn lost_trampoline<M: Memory, S: Symbols>(mem: &M, syms: &S, cfa: u64) -> Option<u64> {
    let slot = cfa.checked_sub(8)?;
    if cfa >= KERNEL_HALF || slot % 16 != 8 {
        return None;
    }
    let restore = syms.address_of(crate::libc::RESTORE_RT)?;
    let found = decode_at(mem, slot, Layout::SigFrame, syms, &ScanOptions::default()).ok()?;
    let accepted = found.checks.iter().filter(|c| c.name != "pretcode").all(|c| c.ok || !c.required);
    accepted.then_some(restore)
}

/// What a lost frame's caller G is known by at its call: the lost function (None: pc 0,
/// a NULL call), G's registers and sp there.
struct Standing<'a> {
    here: Option<&'a crate::symbols::Symbol>,
    at_call: &'a dyn Fn(u8) -> Option<u64>,
    regs: &'a CalleeSaved,
    sp: u64,
}

impl Standing<'_> {
    /// Can a call to `t` lead to the lost function (to pc 0 for a NULL call)? Not when
    /// `t` is no code, or the code it enters goes elsewhere.
    fn leads_to<M: Memory, S: Symbols>(&self, mem: &M, syms: &S, t: u64) -> bool {
        let Some(here) = self.here else { return t == 0 };
        // Code: inside a sized function, or at an unsized label itself (not past `_etext`).
        let code = crate::symbols::function_extent(syms, t).is_some_and(|f| {
            if f.size == 0 {
                f.start == t
            } else {
                t.checked_sub(f.start).is_some_and(|d| d < f.size)
            }
        });
        if !code {
            return false;
        }
        match crate::x86::follow_target(mem, syms, t, here, &crate::x86::Limits::default()) {
            crate::x86::TargetMatch::Mismatch { .. } => false,
            // A PLT slot not bound yet: the stub's relocation names where it goes.
            crate::x86::TargetMatch::Unknown(_) => {
                crate::verify::plt_stub(syms, t).is_none_or(|p| crate::verify::plt_names(&p, here))
            }
            _ => true,
        }
    }

    /// Can G stand at call `s` (instruction `ins` of its layout) with its CFA at `cfa`:
    /// the CFA fits, and the call can lead to the lost function (a direct one by its
    /// target, an indirect one by its pointer when the known registers give it).
    fn fits<M: Memory, S: Symbols>(
        &self,
        mem: &M,
        syms: &S,
        ins: &crate::layout::Insn,
        s: &CallSite,
        cfa: u64,
    ) -> bool {
        if s.addr != ins.addr || ins.rule.cfa_from(self.at_call, &|a| mem.read_u64(a).ok()) != Some(cfa) {
            return false;
        }
        let leads_to = |t: u64| self.leads_to(mem, syms, t);
        let value = |r: crate::x86::Reg| {
            if r == crate::x86::Reg::Rsp {
                return Some((self.sp, String::new()));
            }
            let i = crate::layout::CALLEE_SAVED.iter().position(|d| u16::from(*d) == r.dwarf())?;
            self.regs.get(i)?.as_ref().map(|v| (v.value, String::new()))
        };
        match &s.target {
            crate::x86::CallTarget::Direct(t) => self.here.is_some() && leads_to(*t),
            _ => crate::resolve::evaluate(mem, s, &value).map_or(true, |(t, _)| leads_to(t)),
        }
    }
}

/// The return addresses of `g`'s calls that can lead to the lost function and, with
/// g's sp at the call, put g's CFA at `cfa`: one, or several whose frame layouts are
/// one (g's frame and what comes next are known, not which call), and how many fit
/// before the branches to them were evaluated. None: no such call, or calls whose
/// layouts differ.
fn standing_call<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    g: &crate::symbols::Symbol,
    at: &Standing<'_>,
    cfa: u64,
) -> Option<(Vec<u64>, usize)> {
    let layout = crate::layout::at_pc::layout_of(mem, syms, g).ok()?;
    let insns = layout.instructions();
    let mut found: Vec<(usize, u64)> = Vec::new();
    let mut rule: Option<&crate::layout::Rule> = None;
    for (k, ins) in insns.iter().enumerate() {
        let Some(ra) = insns.get(k + 1).map(|n| n.addr) else { break };
        let Ok(CallCheck::Call { site: s, .. }) = call_before(mem, ra, Some(g.start)) else { continue };
        if at.fits(mem, syms, ins, &s, cfa) {
            if rule.is_some_and(|r| !r.unwinds_like(&ins.rule)) {
                return None; // two places g could stand, unwinding on differently
            }
            rule = Some(&ins.rule);
            found.push((k, ra));
        }
    }
    let fit = found.len();
    if found.len() > 1 {
        // The branches on the way to each call, evaluated with what is known at it.
        let known = |dw: u8| {
            let i = crate::layout::state::callee_saved_index(dw)?;
            at.regs.get(i)?.as_ref().map(|v| v.value)
        };
        let calls: Vec<usize> = found.iter().map(|f| f.0).collect();
        let ok: Vec<bool> = crate::layout::paths::at_calls(mem, &layout, &calls, cfa, &known)
            .iter()
            .map(|a| a.feasible && a.target.is_none_or(|t| at.leads_to(mem, syms, t)))
            .collect();
        if ok.iter().any(|&b| b) {
            found = found.into_iter().zip(ok).filter(|(_, b)| *b).map(|(f, _)| f).collect();
        }
    }
    (!found.is_empty()).then(|| (found.into_iter().map(|f| f.1).collect(), fit))
}

/// The instruction that saved callee-saved register `i` at CFA+k.
fn saver<M: Memory>(mem: &M, layout: &crate::layout::FunctionLayout, i: usize, k: i32) -> Option<(u64, String)> {
    enum Saver {}
    crate::memory::remembered::<Saver, _, _>(mem, (layout.start, i, k), || {
        crate::resolve::save_of(layout, i).filter(|(at_k, _, _)| *at_k == k).map(|(_, at, text)| (at, text))
    })
}

/// The function the indirect call before return address `ra` enters by convention
/// (no direct call names it): a thread entry's `start_thread`.
fn conventional_callee<S: Symbols>(syms: &S, ra: u64) -> Option<crate::symbols::Symbol> {
    let caller = function_of_ra(syms, ra)?;
    crate::libc::is_thread_entry(&caller).then_some(())?;
    syms.lookup(syms.address_of(crate::libc::THREAD_START)?)
}

/// A signal handler "returns" to `__restore_rt`, whose address the kernel wrote.
pub fn is_restore_rt<S: Symbols>(syms: &S, addr: u64) -> bool {
    syms.lookup(addr).is_some_and(|s| s.start == addr && &*s.name == crate::libc::RESTORE_RT)
}

/// The frame a signal interrupted: the rt_sigframe starts at the trampoline frame's sp - 8.
fn step_sigframe<M: Memory, S: Symbols>(mem: &M, syms: &S, cur: &Frame, level: u32) -> Option<Frame> {
    let addr = cur.frame.sp?.checked_sub(8)?;
    let found = decode_at(mem, addr, Layout::SigFrame, syms, &ScanOptions::default()).ok()?;
    let pick = |n: &str| {
        found.reg(n).map(|value| RegValue { value, origin: Origin::RegisterSet { addr, layout: "rt_sigframe" } })
    };
    let regs = [pick("rbx"), pick("rbp"), pick("r12"), pick("r13"), pick("r14"), pick("r15")];
    Some(Frame {
        frame: FrameIn {
            level,
            pc: found.reg("rip")?,
            sp: found.reg("rsp"),
            slot: None,
            bp: found.reg("rbp"),
            kind: FrameKind::Interrupted,
            name: None,
            trust: Trust::Registers,
        },
        regs,
        cfa: None,
        layout_note: None,
        rebuilt: None,
        candidates: Vec::new(),
    })
}

/// A live `struct pt_regs` just above sp, or above the stack pointer an IRQ stack's
/// top word saved. Returns the interrupted frame and, when the slot just below the
/// pt_regs holds a return address into the entry code (`asm_sysvec_*`), that frame
/// first (drgn lists it: `asm_sysvec_apic_timer_interrupt+22` at sp = the pt_regs).
fn step_pt_regs<M: Memory, S: Symbols>(mem: &M, syms: &S, cur: &Frame, level: u32) -> Option<(Option<Frame>, Frame)> {
    let sp = cur.frame.sp?;
    let mut places = vec![sp];
    places.extend(crate::kernel::previous_stacks(mem, sp).into_iter().map(|(_, prev)| prev));
    for lo in places {
        let opts = ScanOptions { live_sp: Some(lo), sigframes: false, ..ScanOptions::default() };
        let scan = scan_memory(mem, lo, lo.saturating_add(PT_REGS_WINDOW), syms, &opts);
        let Some(found) = scan.found.into_iter().find(|f| f.layout == Layout::PtRegs && f.status == Status::Live)
        else {
            continue;
        };
        let (Some(ip), Some(rsp)) = (found.reg("ip"), found.reg("sp")) else { continue };
        let addr = found.address;
        let pick = |n: &str| {
            found.reg(n).map(|value| RegValue { value, origin: Origin::RegisterSet { addr, layout: "pt_regs" } })
        };
        let regs = [pick("bx"), pick("bp"), pick("r12"), pick("r13"), pick("r14"), pick("r15")];
        let interrupted = Frame {
            frame: FrameIn {
                level,
                pc: ip,
                sp: Some(rsp),
                slot: None,
                bp: found.reg("bp"),
                kind: FrameKind::Interrupted,
                name: None,
                trust: Trust::Registers,
            },
            regs,
            cfa: None,
            layout_note: None,
            rebuilt: None,
            candidates: Vec::new(),
        };
        let entry = addr.checked_sub(8).filter(|slot| *slot >= lo).and_then(|slot| {
            let ra = mem.read_u64(slot).ok()?;
            return_address_in(mem, syms, ra)?;
            Some(Frame {
                frame: FrameIn {
                    level,
                    pc: ra,
                    sp: Some(addr),
                    slot: Some(slot),
                    bp: None,
                    kind: FrameKind::Normal,
                    name: None,
                    trust: Trust::Scan,
                },
                regs: Default::default(),
                cfa: None,
                layout_note: Some("its caller is the interrupted frame of the pt_regs just above".to_string()),
                rebuilt: None,
                candidates: Vec::new(),
            })
        });
        return Some((entry, interrupted));
    }
    None
}

/// The first slot at or above sp holding a return address whose call leads to
/// the current function.
fn step_scan<M: Memory, S: Symbols>(mem: &M, syms: &S, cur: &Frame, level: u32) -> Option<Frame> {
    let sp = cur.frame.sp?;
    scan_slots(mem, syms, cur, sp, sp.saturating_add(SCAN_WINDOW), level, true)
}

/// The first slot in `[start, end)` holding a return address that passes verify's checks
/// (`skipped`: the frame found may be farther up than the current one's size: lost frames).
fn scan_slots<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    cur: &Frame,
    start: u64,
    end: u64,
    level: u32,
    skipped: bool,
) -> Option<Frame> {
    // The layout failed here: an rbp it would read is what misled it (a saved rbp overwritten).
    let known = FrameIn { bp: None, ..cur.frame.clone() };
    let at = |slot: u64, v: u64| {
        let frame = FrameIn {
            level,
            pc: v,
            sp: slot.checked_add(8),
            slot: Some(slot),
            bp: None,
            kind: FrameKind::Normal,
            name: None,
            trust: Trust::Scan,
        };
        // The same checks as the verdicts, against the frame that is known (an
        // indirect call could have gone anywhere: it passes).
        crate::verify::step_disproved(mem, syms, &known, &frame, skipped).is_none().then_some(frame)
    };
    // A realigned function copies its return address below its aligned frame (`push
    // -0x8(%r10)`): the real slot is the nearest one above holding the same address,
    // within one alignment.
    let realigned = realigned_to(mem, syms, cur);
    let mut slot = start;
    while slot < end {
        let v = mem.read_u64(slot).ok()?;
        if plausible_code_address(v) && call_site(mem, syms, v).is_some() {
            if let Some(mut frame) = at(slot, v) {
                if let Some(align) = realigned {
                    let real = (1..=u64::from(align) / 8)
                        .filter_map(|k| slot.checked_add(8 * k))
                        .find(|&s| mem.read_u64(s).ok() == Some(v));
                    if let Some(f) = real.and_then(|s| at(s, v)) {
                        frame = f;
                    }
                }
                // What the skipped code saved is not known.
                return Some(Frame {
                    frame,
                    regs: Default::default(),
                    cfa: None,
                    layout_note: None,
                    rebuilt: None,
                    candidates: Vec::new(),
                });
            }
        }
        slot = slot.checked_add(8)?;
    }
    None
}

/// The alignment the current frame's function realigns its stack to, if it does.
fn realigned_to<M: Memory, S: Symbols>(mem: &M, syms: &S, cur: &Frame) -> Option<u32> {
    let at = if cur.frame.slot.is_some() { cur.frame.pc.checked_sub(1)? } else { cur.frame.pc };
    let f = crate::symbols::function_extent(syms, at)?;
    crate::layout::at_pc::layout_of(mem, syms, &f).ok()?.realigned_to()
}

/// Canonical, not tiny: worth a symbol lookup.
fn plausible_code_address(v: u64) -> bool {
    v >= 0x1000 && !(USER_END..KERNEL_HALF).contains(&v)
}
