//! Verdicts on the frames of a backtrace: does each frame's evidence hold up in memory?

use std::fmt;

pub use crate::frame::{FrameIn, FrameKind, Trust};
use crate::memory::Memory;
use crate::symbols::{Symbol, Symbols};
use crate::x86::{call_before, follow_target, CallCheck, CallSite, CallTarget, Hop, Limits, TargetMatch, Unknown};

/// A frame crash printed without an address (`#3 kvm_arch_vcpu_ioctl_run`): nothing to check.
#[derive(Debug, Clone)]
pub struct Unplaced {
    pub level: u32,
    pub function: String,
}

impl Unplaced {
    pub const KIND: FrameKind = FrameKind::Normal;
    pub const VERDICT: Verdict = Verdict::Unknown;
    pub const TRUST: Trust = Trust::Scan;
    pub const REASON: &'static str = "no-address";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Probable,
    Unknown,
    Bogus,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Probable => "probable",
            Verdict::Unknown => "unknown",
            Verdict::Bogus => "bogus",
        }
    }
}

/// Machine-readable grounds for a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    SlotMismatch,
    NoCallBeforeRa,
    WrongTarget,
    RaNotInText,
    Unreadable(u64),
    IndirectCall,
    TailCall,
    InsideFrameOf(String),
    /// The frame's slot is farther from the inner frame's sp than the inner function's
    /// code allows at its pc (a saved rbp overwritten with another stack address).
    FrameSize(String),
    SignalFrame,
    InterruptedPc,
    InlineFrame,
    TailCallFrame,
    NoSymbol,
    CalleeBogus,
    TargetUnreadable(u64),
    /// The slot is below the live stack pointer of the CPU the task runs on.
    BelowSp(u64),
    /// The CPU the task runs on is in user mode: no kernel frame of it is live.
    CpuInUserMode,
    /// Kernel init code, freed after boot: memory no longer holds the call, the file has no bytes.
    CodeFreed,
    /// The outermost frame of a kernel task stack, whose return address the kernel placed.
    StackBottom,
    /// The pc is 0 because the caller called through a NULL pointer (its `call *...`
    /// resolves to 0): the caller's return address is the word at sp.
    NullCall,
    /// A register set (a signal frame) holds a pc or sp no code can run at, or there is
    /// none where a `__restore_rt` frame's slot says.
    DamagedRegisters(&'static str),
    /// A return address after an indirect call whose frame has no caller of its own,
    /// where a direct call at exactly this place leads to the inner frame (the address
    /// of that call's return address, or the addresses it is one of).
    StaleRa(Vec<u64>),
    /// A frame of stackproof's own chain that memory no longer shows: its return address
    /// is lost (zeroed, overwritten), and the frame was rebuilt from its caller's call.
    Rebuilt,
}

impl Reason {
    /// Does this reason alone make a frame bogus (docs/json.md's "bogus" rows)?
    pub fn disproves(&self) -> bool {
        matches!(
            self,
            Reason::SlotMismatch
                | Reason::NoCallBeforeRa
                | Reason::WrongTarget
                | Reason::RaNotInText
                | Reason::InsideFrameOf(_)
                | Reason::FrameSize(_)
                | Reason::BelowSp(_)
                | Reason::CpuInUserMode
                | Reason::DamagedRegisters(_)
                | Reason::StaleRa(_)
        )
    }

    pub fn code(&self) -> &'static str {
        match self {
            Reason::SlotMismatch => "slot-mismatch",
            Reason::NoCallBeforeRa => "no-call-before-ra",
            Reason::WrongTarget => "wrong-target",
            Reason::RaNotInText => "ra-not-in-text",
            Reason::Unreadable(_) => "unreadable",
            Reason::IndirectCall => "indirect-call",
            Reason::TailCall => "tail-call",
            Reason::InsideFrameOf(_) => "inside-frame-of",
            Reason::FrameSize(_) => "frame-size",
            Reason::SignalFrame => "signal-frame",
            Reason::InterruptedPc => "interrupted-pc",
            Reason::InlineFrame => "inline-frame",
            Reason::TailCallFrame => "tailcall-frame",
            Reason::NoSymbol => "no-symbol",
            Reason::CalleeBogus => "callee-bogus",
            Reason::TargetUnreadable(_) => "target-unreadable",
            Reason::BelowSp(_) => "below-sp",
            Reason::CpuInUserMode => "cpu-in-user-mode",
            Reason::CodeFreed => "code-freed",
            Reason::StackBottom => "stack-bottom",
            Reason::NullCall => "null-call",
            Reason::DamagedRegisters(_) => "damaged-registers",
            Reason::StaleRa(_) => "stale-ra",
            Reason::Rebuilt => "rebuilt",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unreadable(a) => write!(f, "unreadable at {a:#x}"),
            Reason::TargetUnreadable(a) => write!(f, "target-unreadable at {a:#x}"),
            Reason::InsideFrameOf(func) => write!(f, "inside-frame-of {func}"),
            Reason::FrameSize(func) => write!(f, "frame-size {func}"),
            Reason::BelowSp(sp) => write!(f, "below-sp {sp:#x}"),
            Reason::DamagedRegisters(what) => write!(f, "damaged-registers ({what})"),
            Reason::StaleRa(ras) => {
                let ras: Vec<String> = ras.iter().map(|ra| format!("{ra:#x}")).collect();
                let one_of = if ras.len() > 1 { "one of " } else { "" };
                write!(f, "stale-ra (the caller's call returns to {one_of}{})", ras.join(", "))
            }
            other => f.write_str(other.code()),
        }
    }
}

/// What the call before a return address leads to.
#[derive(Debug, Clone)]
pub struct CallEvidence {
    pub site: CallSite,
    /// The call's target when it is known (direct, or an indirect operand that could be read).
    pub target: Option<u64>,
    pub target_function: Option<String>,
    /// Hops from the target to the callee (PLT, thunk, tail jumps), as text.
    pub via: Vec<String>,
    /// How an indirect target was resolved, as text (`rbx = ... saved at ...`).
    pub resolution: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct FrameReport {
    pub level: u32,
    pub pc: u64,
    pub sp: Option<u64>,
    pub kind: FrameKind,
    pub function: Option<Symbol>,
    pub name: Option<String>,
    pub slot: Option<u64>,
    pub slot_value: Option<u64>,
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
    pub call: Option<CallEvidence>,
    pub trust: Trust,
    /// Where the inner frame's layout puts this frame's return address slot.
    pub expected_slot: Option<u64>,
}

impl FrameReport {
    fn new(f: &FrameIn, function: Option<Symbol>) -> Self {
        FrameReport {
            level: f.level,
            pc: f.pc,
            sp: f.sp,
            kind: f.kind,
            function,
            name: f.name.clone(),
            slot: None,
            slot_value: None,
            verdict: Verdict::Ok,
            reasons: Vec::new(),
            call: None,
            trust: f.trust,
            expected_slot: None,
        }
    }

    /// Record a finding; the verdict only ever gets worse.
    pub(crate) fn flag(&mut self, v: Verdict, r: Reason) {
        self.verdict = self.verdict.max(v);
        if !self.reasons.contains(&r) {
            self.reasons.push(r);
        }
    }

    /// `function+off`, or the source's name, or `??`.
    pub fn describe(&self) -> String {
        if let (FrameKind::Inline, Some(n)) = (self.kind, &self.name) {
            return format!("{n} (inlined)");
        }
        match (&self.function, &self.name) {
            (Some(s), _) => s.describe(self.pc),
            (None, Some(n)) => n.clone(),
            (None, None) => "??".to_string(),
        }
    }
}

/// Resolves an indirect call's target from the registers recovered for a frame.
pub trait IndirectResolver {
    /// The address an indirect call at `site` in `frame` jumped to, with how it was found.
    fn resolve(&self, frame: &FrameIn, site: &CallSite) -> Option<(u64, Vec<String>)>;
}

/// Resolves nothing: indirect calls stay `probable`.
pub struct NoResolver;

impl IndirectResolver for NoResolver {
    fn resolve(&self, _: &FrameIn, _: &CallSite) -> Option<(u64, Vec<String>)> {
        None
    }
}

/// The symbol of code at a return address: look up `ra - 1`, so a call to a
/// noreturn function at a function's very end stays with its caller.
pub fn function_of_ra<S: Symbols>(syms: &S, ra: u64) -> Option<Symbol> {
    syms.lookup(ra.checked_sub(1)?)
}

/// What the kernel's stacks say of a return-address frame after the generic checks:
/// the outermost frame of a task stack is real by its place (`stack-bottom`, `ok`); a
/// call that cannot be found in freed init code with no file bytes is `unknown`
/// (`code-freed`). A slot that does not hold the pc, or a call to another function, stays.
fn review_kernel_frame<S: Symbols>(syms: &S, f: &FrameIn, r: &mut FrameReport) {
    let kept = |x: &Reason| !matches!(x, Reason::NoCallBeforeRa | Reason::WrongTarget);
    if r.reasons.iter().any(|x| matches!(x, Reason::SlotMismatch | Reason::Unreadable(_) | Reason::RaNotInText)) {
        return;
    }
    let no_call = r.reasons.contains(&Reason::NoCallBeforeRa);
    if r.slot.is_some_and(crate::kernel::is_stack_bottom_slot) && r.function.is_some() && crate::kernel::is_kernel(f.pc)
    {
        if !r.reasons.contains(&Reason::WrongTarget) && (no_call || r.verdict != Verdict::Ok) {
            r.verdict = Verdict::Ok;
            r.reasons = vec![Reason::StackBottom];
        }
        return;
    }
    if (no_call || r.reasons.contains(&Reason::WrongTarget)) && crate::kernel::code_freed_unknown(syms, f.pc) {
        // What is left (no-symbol at most) is milder than unknown.
        r.reasons.retain(kept);
        r.verdict = Verdict::Unknown;
        r.reasons.push(Reason::CodeFreed);
    }
}

/// A thread caught in its entry code before that calls anything (frame 0 in `clone3`
/// right after the syscall): nothing is outer of it, and the zero word at its new
/// stack's top, which a debugger shows as a frame at pc 0, is the stack's bottom.
fn new_thread_bottom(inner: Option<&FrameReport>, f: &FrameIn, r: &mut FrameReport) {
    let Some(inner) = inner else { return };
    let entry = inner.function.as_ref().is_some_and(crate::libc::is_thread_entry);
    if entry && inner.level == 0 && inner.slot.is_none() && f.pc == 0 && r.slot_value == Some(0) {
        r.verdict = Verdict::Ok;
        r.reasons = vec![Reason::StackBottom];
    }
}

/// Check every frame of a chain (innermost first).
pub fn verify_chain<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    frames: &[FrameIn],
    resolver: &dyn IndirectResolver,
) -> Vec<FrameReport> {
    let mut out: Vec<FrameReport> = Vec::with_capacity(frames.len());
    // Index of the nearest inner frame that is a callee (not inline, not a stale slot).
    let mut callee: Option<usize> = None;
    for (i, f) in frames.iter().enumerate() {
        // An inline frame and the frame holding it are one physical frame: the group's
        // pc is a return address or not as its innermost frame's is, and only its
        // outermost frame has a slot.
        let head = inline_group_head(frames, i);
        let is_ra = pc_is_return_address(frames, head);
        let func = if is_ra { function_of_ra(syms, f.pc) } else { syms.lookup(f.pc) };
        let mut r = FrameReport::new(f, func);

        if f.kind == FrameKind::TailCall {
            // Reached by a jump: no slot of its own; the slot above belongs to the frame outer to it.
            r.flag(Verdict::Probable, Reason::TailCallFrame);
            out.push(r);
            callee = Some(out.len() - 1);
            continue;
        }

        if is_ra && f.kind != FrameKind::Inline {
            check_slot(mem, f, &mut r);
            if let Some(c) = callee {
                check_frame_size(mem, syms, f, &mut r, frames.get(c), out.get(c));
            }
        }
        match f.kind {
            // Checked as part of the physical frame it is inlined into (the next outer one).
            FrameKind::Inline => r.flag(Verdict::Ok, Reason::InlineFrame),
            // The kernel wrote this return address; there is no call to find, but a
            // signal frame must start at its slot (else: a stale `__restore_rt`).
            FrameKind::SigTramp
                if f.slot
                    .or_else(|| f.sp?.checked_sub(8))
                    .and_then(|s| crate::regs::scan::signal_frame_at(mem, s, syms))
                    == Some(false) =>
            {
                r.flag(Verdict::Bogus, Reason::DamagedRegisters("no signal frame at the slot"))
            }
            FrameKind::SigTramp => r.flag(Verdict::Ok, Reason::SignalFrame),
            _ if !is_ra => {
                // A signal frame's registers (not a kernel pt_regs: a dump often lacks the user stack).
                let from_sigframe =
                    head.checked_sub(1).and_then(|j| frames.get(j)).is_some_and(|p| p.kind == FrameKind::SigTramp);
                if head > 0 {
                    let tramp_sp = head.checked_sub(1).and_then(|j| frames.get(j)).and_then(|p| p.sp);
                    match damaged_registers(mem, f).filter(|_| from_sigframe) {
                        // An unreadable sp on the stack the signal frame itself is on: a
                        // page missing from the dump, not a value no code can run at.
                        Some("sp unmapped") if f.sp.zip(tramp_sp).is_some_and(|(a, b)| a.abs_diff(b) < SAME_STACK) => {
                            r.flag(Verdict::Unknown, Reason::Unreadable(f.sp.unwrap_or(0)))
                        }
                        Some(what) => r.flag(Verdict::Bogus, Reason::DamagedRegisters(what)),
                        None => r.flag(Verdict::Ok, Reason::InterruptedPc),
                    }
                }
                // A pc from registers is real, but only code that can be read is checked code.
                if let Err(e) = mem.read(f.pc, &mut [0u8; 1]) {
                    r.flag(Verdict::Unknown, Reason::Unreadable(e.addr));
                }
                if r.function.is_none() {
                    r.reasons.push(Reason::NoSymbol);
                }
            }
            _ if r.reasons.iter().any(|x| matches!(x, Reason::InsideFrameOf(_))) => {}
            _ => check_call(mem, syms, f, &mut r, callee.and_then(|c| out.get(c)), resolver),
        }
        if is_ra && f.kind == FrameKind::Normal {
            review_kernel_frame(syms, f, &mut r);
            new_thread_bottom(callee.and_then(|c| out.get(c)), f, &mut r);
        }
        let stale = r.reasons.iter().any(|x| matches!(x, Reason::InsideFrameOf(_)));
        if r.reasons.contains(&Reason::NullCall) {
            // The inner frame's pc 0 is explained: it is where this call went.
            if let Some(inner) = callee.and_then(|c| out.get_mut(c)) {
                inner.verdict = Verdict::Ok;
                inner.reasons = vec![Reason::NullCall];
            }
        }
        let is_callee = f.kind != FrameKind::Inline && !stale;
        out.push(r);
        if is_callee {
            callee = Some(out.len() - 1);
        }
    }
    out
}

/// Would `verify-bt` call `caller` bogus as the frame outer to `inner`? The own
/// unwinder asks this of every step, so it never follows what the verdicts disprove
/// (a stale return address: no call before it, a call elsewhere, a slot inside the
/// inner frame).
/// `skipped`: frames may lie between them (a scan past a lost frame), so the caller's
/// distance from the inner frame (`frame-size`) proves nothing.
pub fn step_disproved<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    inner: &FrameIn,
    caller: &FrameIn,
    skipped: bool,
) -> Option<Reason> {
    let pair = [inner.clone(), caller.clone()];
    let r = verify_chain(mem, syms, &pair, &NoResolver);
    let c = r.get(1)?;
    if c.verdict != Verdict::Bogus {
        return None;
    }
    c.reasons.iter().find(|r| r.disproves() && !(skipped && matches!(r, Reason::FrameSize(_)))).cloned()
}

/// How near an interrupted sp must be to its signal frame to be on the same stack.
const SAME_STACK: u64 = 1 << 20;

/// A pc or sp restored from a register set that no code can run at: pc 0, sp
/// non-canonical, misaligned or unmapped.
fn damaged_registers<M: Memory>(mem: &M, f: &FrameIn) -> Option<&'static str> {
    if f.pc == 0 {
        return Some("pc 0");
    }
    let sp = f.sp?;
    if (0x0000_8000_0000_0000..0xffff_8000_0000_0000).contains(&sp) {
        Some("sp non-canonical")
    } else if sp % 8 != 0 {
        Some("sp misaligned")
    } else if mem.read(sp, &mut [0u8; 1]).is_err() {
        Some("sp unmapped")
    } else {
        None
    }
}

/// The first frame of the inline group frame `i` ends: `i` itself, or the innermost of
/// the inline frames right inner to it.
pub fn inline_group_head(frames: &[FrameIn], i: usize) -> usize {
    let mut h = i;
    while h > 0 && frames.get(h - 1).is_some_and(|p| p.kind == FrameKind::Inline) {
        h -= 1;
    }
    h
}

/// Is the pc of the inline group starting at `head` a return address? Not for frame 0
/// from registers, an interrupted frame, or the frame a signal interrupted.
fn pc_is_return_address(frames: &[FrameIn], head: usize) -> bool {
    let Some(f) = frames.get(head) else { return false };
    let after_signal = head.checked_sub(1).and_then(|j| frames.get(j)).is_some_and(|p| p.kind == FrameKind::SigTramp);
    // The group: its inline frames and the real frame holding them.
    let group = frames.get(head..).unwrap_or_default();
    let len = group.iter().position(|g| g.kind != FrameKind::Inline).map_or(group.len(), |n| n + 1);
    let interrupted = group.iter().take(len).any(|g| g.kind == FrameKind::Interrupted);
    (head > 0 || f.slot.is_some()) && !interrupted && !after_signal
}

/// The inner frame's layout says where its caller's return address is (CFA - 8);
/// a claimed slot below that, but above the inner frame's sp, is a stale return
/// address inside the inner frame, not a frame.
fn check_frame_size<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    f: &FrameIn,
    r: &mut FrameReport,
    inner: Option<&FrameIn>,
    inner_report: Option<&FrameReport>,
) {
    let (Some(inner), Some(ir)) = (inner, inner_report) else { return };
    if ir.verdict == Verdict::Bogus {
        return; // a disproved frame's layout says nothing
    }
    let Some(slot) = r.slot else { return };
    let Some((sym, rule)) = inner_rule(mem, syms, inner, ir) else { return };
    let Some(expected) = slot_of(mem, inner, &rule) else { return };
    let name = sym.name.to_string();
    r.expected_slot = Some(expected);
    let inner_sp = inner.sp.unwrap_or(0);
    if slot < expected && slot >= inner_sp {
        r.flag(Verdict::Bogus, Reason::InsideFrameOf(name));
        return;
    }
    // The inner frame's extent must be one its code allows at its pc (realigned frames: a range).
    let bounds = rule.cfa_bounds().and_then(|(lo, hi)| Some((inner.sp?.checked_add(lo)?, inner.sp?.checked_add(hi)?)));
    if let (Some((lo, hi)), Some(cfa)) = (bounds, slot.checked_add(8)) {
        if cfa < lo || cfa > hi {
            r.flag(Verdict::Bogus, Reason::FrameSize(name));
        }
    }
    let _ = f;
}

/// The layout rule of a frame at its pc (at the call, for a return address).
fn inner_rule<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    fr: &FrameIn,
    rep: &FrameReport,
) -> Option<(crate::symbols::Symbol, crate::layout::Rule)> {
    // gdb's tail-call frames have no frame of their own: their pc says nothing of a layout.
    if fr.kind == FrameKind::TailCall {
        return None;
    }
    let code_pc = match &rep.call {
        Some(c) => c.site.addr,
        None if rep.reasons.contains(&Reason::SignalFrame) => return None,
        // A return address whose call was not found says nothing of the layout.
        None if rep.slot.is_some() && fr.kind == FrameKind::Normal => return None,
        None => fr.pc,
    };
    let (sym, _, rule) = crate::layout::at_pc::rule_at(mem, syms, code_pc).ok()?;
    Some((sym, rule))
}

/// CFA - 8 of a frame from its rule and what the frame knows (sp, rbp).
fn slot_of<M: Memory>(mem: &M, fr: &FrameIn, rule: &crate::layout::Rule) -> Option<u64> {
    let known = |dw: u8| match dw {
        7 => fr.sp,
        6 => fr.bp,
        _ => None,
    };
    rule.cfa_from(&known, &|a| mem.read_u64(a).ok())?.checked_sub(8)
}

/// CFA - 8 of a frame from its function's layout at its pc (at the call, for a return address).
pub fn expected_slot<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    fr: &FrameIn,
    rep: &FrameReport,
) -> Option<(u64, String)> {
    let (sym, rule) = inner_rule(mem, syms, fr, rep)?;
    Some((slot_of(mem, fr, &rule)?, sym.name.to_string()))
}

/// The slot must hold the return address; unreadable is `unknown`, never a match.
fn check_slot<M: Memory>(mem: &M, f: &FrameIn, r: &mut FrameReport) {
    let Some(slot) = f.slot.or_else(|| f.sp.and_then(|sp| sp.checked_sub(8))) else { return };
    r.slot = Some(slot);
    match mem.read_u64(slot) {
        Ok(v) => {
            r.slot_value = Some(v);
            if v != f.pc {
                r.flag(Verdict::Bogus, Reason::SlotMismatch);
            }
        }
        Err(e) => r.flag(Verdict::Unknown, Reason::Unreadable(e.addr)),
    }
}

fn check_call<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    f: &FrameIn,
    r: &mut FrameReport,
    callee: Option<&FrameReport>,
    resolver: &dyn IndirectResolver,
) {
    let start = r.function.as_ref().map(|s| s.start);
    let site = match call_before(mem, f.pc, start) {
        Err(e) => {
            if r.function.is_none() {
                r.flag(Verdict::Bogus, Reason::RaNotInText);
            } else {
                r.flag(Verdict::Unknown, Reason::Unreadable(e.addr));
            }
            return;
        }
        Ok(CallCheck::NoCall { .. }) => {
            let reason = if r.function.is_none() { Reason::RaNotInText } else { Reason::NoCallBeforeRa };
            r.flag(Verdict::Bogus, reason);
            return;
        }
        Ok(CallCheck::Call { site, .. }) => site,
    };
    if r.function.is_none() {
        r.flag(Verdict::Probable, Reason::NoSymbol);
    }

    let mut ev =
        CallEvidence { site: site.clone(), target: None, target_function: None, via: vec![], resolution: vec![] };
    let target = match &site.target {
        CallTarget::Direct(t) => Some(*t),
        CallTarget::Memory(m) if m.base.is_none() && m.index.is_none() => {
            // `call *ADDR(%rip)` / `call *ABS`: the pointer is in memory now.
            match m.absolute.map(|a| mem.read_u64(a)) {
                Some(Ok(p)) => {
                    ev.resolution.push(format!("pointer at {:#x} = {p:#x}", m.absolute.unwrap_or(0)));
                    Some(p)
                }
                _ => None,
            }
        }
        _ => resolver.resolve(f, &site).map(|(t, how)| {
            ev.resolution = how;
            t
        }),
    };
    ev.target = target;
    ev.target_function = target.and_then(|t| syms.lookup(t)).map(|s| s.describe(target.unwrap_or(s.start)));

    let Some(callee) = callee else {
        r.call = Some(ev);
        return;
    };
    let Some(t) = target else {
        r.flag(Verdict::Probable, Reason::IndirectCall);
        r.call = Some(ev);
        return;
    };
    // The call went to where the inner frame stands (its pc is not a return address):
    // `#0 0x0 in ?? ()` after a call through a NULL pointer.
    if t == callee.pc && callee.slot.is_none() && callee.kind != FrameKind::Inline {
        if t == 0 {
            r.reasons.push(Reason::NullCall);
        }
        r.call = Some(ev);
        return;
    }
    // pc 0 from registers: only a jump through a pointer (a tail call through NULL) can
    // have gone there from a function that this call entered.
    let null_pc = callee.pc == 0 && callee.slot.is_none() && callee.kind != FrameKind::Inline;
    // A stripped file's nameless function: its extent in the unwind tables.
    let nameless = || {
        let at = if callee.slot.is_some() { callee.pc.checked_sub(1)? } else { callee.pc };
        syms.unnamed_function(at)
    };
    let callee_fn = callee.function.clone().or_else(|| null_pc.then(|| Symbol::new("(pc 0)", 0, 1))).or_else(nameless);
    match callee_fn {
        None => r.flag(Verdict::Probable, Reason::NoSymbol),
        Some(cf) => match follow_target(mem, syms, t, &cf, &Limits::default()) {
            TargetMatch::Exact => {}
            TargetMatch::Via(hops) => {
                ev.via = hops.iter().map(|h| hop_text(syms, h)).collect();
                // `call foo@plt` whose GOT slot holds the callee: an ordinary call.
                let plt_only = matches!(hops.as_slice(), [Hop::Slot { at, .. }] if plt_stub(syms, *at).is_some());
                if !plt_only {
                    r.flag(Verdict::Probable, Reason::TailCall);
                }
            }
            // The GOT slot could not be followed (not bound, unreadable), but the stub's
            // relocation names the callee.
            TargetMatch::Unknown(_) if plt_stub(syms, t).is_some_and(|p| plt_names(&p, &cf)) => {
                let stub = plt_stub(syms, t).map(|p| p.name.to_string()).unwrap_or_default();
                ev.via.push(format!("{stub} -> {} (by the stub's relocation)", cf.name));
            }
            TargetMatch::IndirectRegister { reg, thunk } => {
                ev.via.push(format!("{thunk}: call *%{}", reg.name()));
                r.flag(Verdict::Probable, Reason::IndirectCall);
            }
            TargetMatch::Mismatch { .. } => {
                if callee.verdict == Verdict::Bogus {
                    // The inner frame is already disproved; this call went elsewhere, as it should.
                    r.reasons.push(Reason::CalleeBogus);
                } else {
                    r.flag(Verdict::Bogus, Reason::WrongTarget);
                }
            }
            // Slot and call are proven; only the path from the target could not be read.
            TargetMatch::Unknown(Unknown::Unreadable(e)) => r.flag(Verdict::Probable, Reason::TargetUnreadable(e.addr)),
            TargetMatch::Unknown(Unknown::IndirectTail { at, text }) => {
                ev.via.push(format!("{at:#x}: {text} (could lead anywhere)"));
                r.flag(Verdict::Probable, Reason::TailCall);
            }
            TargetMatch::Unknown(_) => r.flag(Verdict::Probable, Reason::TailCall),
        },
    }
    r.call = Some(ev);
}

/// The PLT stub (`foo@plt`) holding `addr`, if any.
pub(crate) fn plt_stub<S: Symbols>(syms: &S, addr: u64) -> Option<Symbol> {
    syms.lookup(addr).filter(|s| s.name.ends_with(crate::elf::PLT_SUFFIX))
}

/// Does the PLT stub name the function `f` (`foo@plt` for `foo`, `foo.cold`, `foo@@GLIBC_2.2.5`)?
pub(crate) fn plt_names(stub: &Symbol, f: &Symbol) -> bool {
    let want = stub.name.trim_end_matches(crate::elf::PLT_SUFFIX);
    let have = f.base_name();
    have == want || have.split('@').next() == Some(want)
}

/// A hop from a call's target towards the callee, as the evidence line shows it.
pub fn hop_text<S: Symbols>(syms: &S, h: &Hop) -> String {
    let name = |a: u64| syms.lookup(a).map(|s| format!(" <{}>", s.describe(a))).unwrap_or_default();
    if let Hop::Slot { at, slot, dest } = h {
        if let Some(stub) = plt_stub(syms, *at) {
            let to = syms.lookup(*dest).map_or_else(|| format!("{dest:#x}"), |s| s.describe(*dest));
            return format!("{} -> {to} (GOT {slot:#x} = {dest:#x})", stub.name);
        }
    }
    match h {
        Hop::Slot { at, slot, dest } => format!("jmp *{slot:#x} at {at:#x} -> {dest:#x}{}", name(*dest)),
        Hop::TailJump { from, at, to } => format!("tail jmp in {from} at {at:#x} -> {to:#x}{}", name(*to)),
    }
}

/// `direct`, `register` or `memory`, as the JSON schema names call kinds.
pub fn call_kind(t: &CallTarget) -> &'static str {
    match t {
        CallTarget::Direct(_) => "direct",
        CallTarget::Register(_) => "register",
        CallTarget::Memory(_) => "memory",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Regions;
    use crate::symbols::{Symbol, SymbolTable};

    const CALLER: u64 = 0x1000;
    const HOLDER: u64 = 0x2000;
    const LEAF: u64 = 0x3000;
    const SP: u64 = 0x7000_0000;

    /// caller: `call holder; nop...`; holder: `sub $8,%rsp; call leaf; nop...` (a
    /// NULL write at +0x10 when it crashes itself); leaf: nops. The stack words from SP.
    fn world(words: &[u64]) -> (Regions, SymbolTable) {
        let mut m = Regions::new();
        let mut caller = vec![0xe8];
        caller.extend(((HOLDER as i64 - (CALLER as i64 + 5)) as i32).to_le_bytes());
        caller.resize(0x20, 0x90);
        caller.push(0xc3);
        m.add(CALLER, caller);
        let mut holder = vec![0x48, 0x83, 0xec, 0x08, 0xe8];
        holder.extend(((LEAF as i64 - (HOLDER as i64 + 9)) as i32).to_le_bytes());
        holder.resize(0x20, 0x90);
        holder.extend([0x48, 0x83, 0xc4, 0x08, 0xc3]);
        m.add(HOLDER, holder);
        let mut leaf = vec![0x90; 0x20];
        leaf.push(0xc3);
        m.add(LEAF, leaf);
        m.add_u64s(SP - 0x40, &[0; 8]);
        m.add_u64s(SP, words);
        let syms = SymbolTable::new(vec![
            Symbol::new("caller", CALLER, 0x21),
            Symbol::new("holder", HOLDER, 0x25),
            Symbol::new("leaf", LEAF, 0x21),
        ]);
        (m, syms)
    }

    fn fr(level: u32, pc: u64, sp: u64, kind: FrameKind) -> FrameIn {
        let trust = if level == 0 { Trust::Registers } else { Trust::Cfi };
        FrameIn { level, pc, sp: Some(sp), slot: None, bp: None, kind, name: Some(format!("f{level}")), trust }
    }

    #[test]
    fn inline_group_at_frame_0_has_no_slot_and_its_caller_is_ok() {
        // Crash at holder+0x10 inside two inlined helpers: the holder's pc comes from the registers.
        let (mem, syms) = world(&[CALLER + 5]);
        let pc = HOLDER + 0x10;
        let frames = vec![
            fr(0, pc, SP - 8, FrameKind::Inline),
            fr(1, pc, SP - 8, FrameKind::Inline),
            fr(2, pc, SP - 8, FrameKind::Normal),
            fr(3, CALLER + 5, SP + 8, FrameKind::Normal),
        ];
        let r = verify_chain(&mem, &syms, &frames, &NoResolver);
        for f in &r[..3] {
            assert_eq!(f.slot, None, "{f:?}");
            assert_ne!(f.verdict, Verdict::Bogus, "{f:?}");
        }
        assert!(r[0].reasons.contains(&Reason::InlineFrame));
        assert_eq!(r[2].function.as_ref().map(|s| &*s.name), Some("holder"));
        assert_eq!(r[3].verdict, Verdict::Ok, "{:?}", r[3]);
        assert_eq!(r[3].slot, Some(SP));
        // the holder's layout at its pc (sub $8: CFA = sp + 16) puts the caller's slot at SP
        assert_eq!(r[3].expected_slot, Some(SP));
    }

    #[test]
    fn inline_group_in_the_middle_has_one_slot_below_it() {
        // leaf (frame 0) was called from an inlined helper in holder: the helper and
        // holder share the return address holder+9; only holder has the slot.
        let (mem, syms) = world(&[HOLDER + 9, 0, CALLER + 5]);
        let frames = vec![
            fr(0, LEAF + 4, SP, FrameKind::Normal),
            fr(1, HOLDER + 9, SP + 8, FrameKind::Inline),
            fr(2, HOLDER + 9, SP + 8, FrameKind::Normal),
            fr(3, CALLER + 5, SP + 24, FrameKind::Normal),
        ];
        let r = verify_chain(&mem, &syms, &frames, &NoResolver);
        assert_eq!(r[1].slot, None);
        assert_eq!(r[1].verdict, Verdict::Ok);
        assert_eq!((r[2].verdict, r[2].slot), (Verdict::Ok, Some(SP)), "{:?}", r[2]);
        assert_eq!(r[2].call.as_ref().and_then(|c| c.target), Some(LEAF));
        assert_eq!((r[3].verdict, r[3].slot), (Verdict::Ok, Some(SP + 16)), "{:?}", r[3]);
    }
}

#[cfg(test)]
mod reason_docs {
    use super::Reason::{self, *};

    /// Every reason, by construction: a new variant fails to compile here until listed.
    fn all() -> Vec<Reason> {
        let v = vec![
            SlotMismatch,
            NoCallBeforeRa,
            WrongTarget,
            RaNotInText,
            Unreadable(0),
            IndirectCall,
            TailCall,
            InsideFrameOf(String::new()),
            FrameSize(String::new()),
            SignalFrame,
            InterruptedPc,
            InlineFrame,
            TailCallFrame,
            NoSymbol,
            CalleeBogus,
            TargetUnreadable(0),
            BelowSp(0),
            CpuInUserMode,
            CodeFreed,
            StackBottom,
            NullCall,
            DamagedRegisters(""),
            StaleRa(vec![0]),
            Rebuilt,
        ];
        for r in &v {
            match r {
                SlotMismatch | NoCallBeforeRa | WrongTarget | RaNotInText | Unreadable(_) | IndirectCall | TailCall
                | InsideFrameOf(_) | FrameSize(_) | SignalFrame | InterruptedPc | InlineFrame | TailCallFrame
                | NoSymbol | CalleeBogus | TargetUnreadable(_) | BelowSp(_) | CpuInUserMode | CodeFreed
                | StackBottom | NullCall | DamagedRegisters(_) | StaleRa(_) | Rebuilt => {}
            }
        }
        v
    }

    /// The JSON Schema's reason enum, docs/json.md's table and `help verify-bt` name
    /// exactly the codes the core writes.
    #[test]
    fn every_reason_code_is_documented() {
        let schema = include_str!("../docs/verify-bt.schema.json");
        let table = include_str!("../docs/json.md");
        let help = include_str!("../python/stackproof/gdbext/commands/verify_bt.py");
        let mut codes: Vec<&str> = all().iter().map(|r| r.code()).collect();
        codes.push(super::Unplaced::REASON);
        for c in &codes {
            assert!(schema.contains(&format!("\"{c}\"")), "{c} missing from docs/verify-bt.schema.json");
            assert!(table.contains(&format!("| `{c}` |")), "{c} missing from docs/json.md");
            assert!(help.contains(&format!("\n  {c} ")), "{c} missing from help verify-bt");
        }
        let enum_start = schema.find("\"slot-mismatch\"").expect("reason enum");
        let enum_end = enum_start + schema[enum_start..].find(']').unwrap();
        assert_eq!(schema[enum_start..enum_end].matches('"').count() / 2, codes.len(), "schema lists other codes");
    }
}
