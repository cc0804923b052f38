//! Frame layout from machine code alone: an objtool-style simulation of stack
//! operations along every path from the entry, giving the CFA rule and the
//! callee-saved register slots before each instruction.

pub mod at_pc;
pub mod noreturn;
pub mod paths;
pub mod sim;
pub mod state;

use std::collections::HashMap;
use std::hash::Hash;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic};

use state::RSP;
pub use state::{Cfa, Saved, State, Val, CALLEE_SAVED, CALLEE_SAVED_NAMES};

/// Bounds on the work done for one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Distinct instructions decoded.
    pub max_insns: usize,
    /// Worklist steps (an instruction is revisited when its state weakens).
    pub max_steps: usize,
    /// Give code reached by no direct path (jump-table targets) the state at
    /// the function's non-tail indirect jumps.
    pub fill_indirect: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_insns: 500_000, max_steps: 5_000_000, fill_indirect: true }
    }
}

/// Everything `analyze_with` may be told besides the code.
#[derive(Default)]
pub struct Options<'a> {
    pub limits: Limits,
    /// Is a direct call to this address a call to a noreturn function?
    pub noreturn: Option<&'a dyn Fn(u64) -> bool>,
    /// Entry points and their states; empty means `start` with [`State::entry`].
    pub entries: Vec<(u64, State)>,
    /// Exception landing pads: (call-site range start, end, pad). A pad is
    /// entered in the state after the calls of its range return.
    pub landing_pads: Vec<(u64, u64, u64)>,
    /// `ud2` continues at the next instruction (Linux `WARN()` traps and returns).
    pub ud2_continues: bool,
    /// Return thunks (`__x86_return_thunk`): a jump to one is a `ret`.
    pub return_thunks: Vec<u64>,
}

/// The frame layout before one instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub cfa: Cfa,
    /// rbx rbp r12 r13 r14 r15 (see [`CALLEE_SAVED`]).
    pub saved: [Saved; 6],
    vals: [Val; 16],
    cfa_slots: [Option<i32>; 2],
    anc_from: Option<(i32, u32)>,
}

/// Registers in the order their values are trusted in a frame being unwound: rsp is
/// exact, callee-saved registers are recovered, caller-saved ones are known at frame 0 only.
const TRUST_ORDER: [u8; 16] = [7, 6, 3, 12, 13, 14, 15, 0, 1, 2, 4, 5, 8, 9, 10, 11];

impl Rule {
    fn of(s: &State) -> Rule {
        Rule { cfa: s.cfa(), saved: s.saved, vals: s.regs, cfa_slots: [s.cfa_slot, s.cfa_slot2], anc_from: s.anc_from }
    }

    /// The CFA from a frame's register values (DWARF number -> value, None when unknown)
    /// and memory: through rsp when its offset is known, else any register known relative
    /// to the CFA, else a DRAP slot of a realigned frame (`*(rbp-8)`).
    pub fn cfa_from(&self, reg: &dyn Fn(u8) -> Option<u64>, read: &dyn Fn(u64) -> Option<u64>) -> Option<u64> {
        for r in TRUST_ORDER {
            if let (Val::Cfa(k), Some(v)) = (self.value(r), reg(r)) {
                return v.checked_add_signed(-i64::from(k));
            }
        }
        let slot = self.cfa_slots.iter().flatten().next()?;
        let at = self.anchor_from(reg)?;
        read(at.checked_add_signed(i64::from(*slot))?)
    }

    /// The anchor of a realigned frame (rsp right after its `and`) from a register known relative to it.
    fn anchor_from(&self, reg: &dyn Fn(u8) -> Option<u64>) -> Option<u64> {
        TRUST_ORDER.into_iter().find_map(|r| match (self.value(r), reg(r)) {
            (Val::Anc(b), Some(v)) => v.checked_add_signed(-i64::from(b)),
            _ => None,
        })
    }

    /// Where callee-saved register `i` (index into CALLEE_SAVED) holds the caller's value,
    /// given the frame's CFA and register values; None when not saved or not locatable.
    pub fn saved_addr(&self, i: usize, cfa: u64, reg: &dyn Fn(u8) -> Option<u64>) -> Option<u64> {
        match *self.saved.get(i)? {
            Saved::At(k) => cfa.checked_add_signed(i64::from(k)),
            Saved::AtAnc(k) => self.anchor_from(reg)?.checked_add_signed(i64::from(k)),
            _ => None,
        }
    }

    /// The smallest and largest frame (CFA - rsp) the code allows here: exact when rsp's
    /// offset is known, a range of one alignment in a realigned frame, None when rsp is
    /// not tracked (alloca, stack switches).
    pub fn cfa_bounds(&self) -> Option<(u64, u64)> {
        match self.value(RSP) {
            Val::Cfa(k) => {
                let n = u64::try_from(-i64::from(k)).ok()?;
                Some((n, n))
            }
            Val::Anc(b) => {
                let (k0, align) = self.anc_from?;
                // anchor = (CFA + k0) & -align: between CFA + k0 - (align - 8) and CFA + k0.
                let lo = u64::try_from(-i64::from(k0) - i64::from(b)).ok()?;
                Some((lo, lo.checked_add(u64::from(align).checked_sub(8)?)?))
            }
            Val::Unknown => None,
        }
    }

    /// What the engine knows of a register (DWARF number) relative to the CFA;
    /// lets a checker accept an oracle that names another, equal base.
    pub fn value(&self, dw: u8) -> Val {
        self.vals.get(dw as usize).copied().unwrap_or(Val::Unknown)
    }

    /// Does `*(reg + off)` hold the CFA (a spilled DRAP register)?
    pub fn cfa_stored_at(&self, reg: u8, off: i64) -> bool {
        match self.value(reg) {
            Val::Anc(b) => {
                self.cfa_slots.iter().flatten().any(|slot| i64::from(b).checked_add(off) == Some(i64::from(*slot)))
            }
            _ => false,
        }
    }

    /// The CFA offset of a callee-saved register's save slot (index into CALLEE_SAVED).
    pub fn saved_at(&self, i: usize) -> Option<i64> {
        match self.saved.get(i)? {
            Saved::At(k) => Some(i64::from(*k)),
            _ => None,
        }
    }

    /// Does unwinding through `other` give what it gives through this rule: the same CFA
    /// and the same saves (other registers may hold other values)?
    pub fn unwinds_like(&self, other: &Rule) -> bool {
        self.cfa == other.cfa
            && self.saved == other.saved
            && self.cfa_slots == other.cfa_slots
            && self.anc_from == other.anc_from
            && self.value(RSP) == other.value(RSP)
            && self.value(state::RBP) == other.value(state::RBP)
    }

    /// `cfa=rsp+8 rbx=cfa-16 ...` (registers not saved are omitted; lost ones show `?`).
    pub fn describe(&self) -> String {
        let mut out = format!("cfa={}", self.cfa);
        for (i, s) in self.saved.iter().enumerate() {
            match s {
                Saved::Same => {}
                Saved::At(k) => out.push_str(&format!(" {}=cfa{:+}", CALLEE_SAVED_NAMES[i], k)),
                Saved::AtAnc(k) => out.push_str(&format!(" {}=anchor{:+}", CALLEE_SAVED_NAMES[i], k)),
                Saved::Lost => out.push_str(&format!(" {}=?", CALLEE_SAVED_NAMES[i])),
            }
        }
        out
    }
}

/// One reached instruction with its rule.
#[derive(Debug, Clone)]
pub struct Insn {
    pub addr: u64,
    pub ins: Instruction,
    pub rule: Rule,
}

#[derive(Debug, Clone)]
pub struct FunctionLayout {
    pub start: u64,
    pub end: u64,
    insns: Vec<Insn>,
    /// A limit stopped the analysis; instructions not reached have no rule.
    pub truncated: bool,
    /// Direct jumps out of the function in a non-entry state (into `.cold` parts).
    pub exits: Vec<(u64, State)>,
    /// Targets of direct calls and tail jumps, and code addresses taken by `lea x(%rip)`:
    /// addresses known to be function entries.
    pub callees: Vec<u64>,
    /// Targets of jumps out of the function in an entry-like state (tail calls, if the entry state holds).
    pub tails: Vec<u64>,
    /// Some path returns or leaves the function (false: a noreturn function, like objtool's dead ends).
    pub may_return: bool,
    /// The entry state led somewhere impossible (rsp above the return address,
    /// `ret` with rsp not at it): the code is not entered as a function.
    pub contradicted: bool,
}

impl FunctionLayout {
    /// Entry states for a split-off part `[start, end)` (`foo.cold`) from this
    /// layout of its parent `foo`: the parent's jumps into it. Empty when the
    /// parent never jumps there; then the part's states are not known (do not
    /// analyze it from a function entry).
    pub fn entries_into(&self, start: u64, end: u64) -> Vec<(u64, State)> {
        let inside = |t: &u64| *t >= start && *t < end;
        let mut e: Vec<_> = self.exits.iter().filter(|(t, _)| inside(t)).cloned().collect();
        // A jump made before anything was pushed looks like a tail call; into a split-off
        // part it carries the parent's frame, which is then the entry state.
        if e.is_empty() {
            e.extend(self.tails.iter().filter(|t| inside(t)).map(|t| (*t, State::entry())));
        }
        e
    }

    pub fn rule_at(&self, pc: u64) -> Option<&Rule> {
        let i = self.insns.binary_search_by_key(&pc, |i| i.addr).ok()?;
        Some(&self.insns[i].rule)
    }

    /// Reached instructions in address order.
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// The alignment the function realigns its stack to (`and $-32,%rsp`), if it does.
    pub fn realigned_to(&self) -> Option<u32> {
        self.insns.iter().filter_map(|i| i.rule.anc_from.map(|(_, align)| align)).max()
    }
}

struct Node {
    ins: Instruction,
    state: Option<State>,
}

struct Sim<'c, 'o> {
    code: &'c [u8],
    start: u64,
    opts: &'o Options<'o>,
    at: Vec<u32>,
    nodes: Vec<Node>,
    steps: usize,
    truncated: bool,
    indirect: Vec<State>,
    exits: HashMap<u64, State>,
    callees: Vec<u64>,
    tails: Vec<u64>,
    contradicted: bool,
    deferred: Vec<(u64, State)>,
    may_return: bool,
    factory: InstructionInfoFactory,
}

impl Sim<'_, '_> {
    fn inside(&self, a: u64) -> Option<usize> {
        let off = usize::try_from(a.checked_sub(self.start)?).ok()?;
        (off < self.code.len()).then_some(off)
    }

    fn node(&mut self, off: usize) -> Option<usize> {
        let i = self.at[off];
        if i != u32::MAX {
            return Some(i as usize);
        }
        if self.nodes.len() >= self.opts.limits.max_insns {
            self.truncated = true;
            return None;
        }
        let ip = self.start.checked_add(off as u64)?;
        let mut d = Decoder::with_ip(64, &self.code[off..], ip, DecoderOptions::NONE);
        let ins = d.decode();
        self.nodes.push(Node { ins, state: None });
        let i = self.nodes.len() - 1;
        self.at[off] = i as u32;
        Some(i)
    }

    fn exit(&mut self, target: u64, s: State) {
        self.may_return = true;
        if s.is_entry_like() {
            if self.tails.len() < 4096 {
                self.tails.push(target);
            }
            return;
        }
        let full = self.exits.len() >= 4096;
        match self.exits.get_mut(&target) {
            Some(old) => *old = old.meet(&s),
            None if !full => {
                self.exits.insert(target, s);
            }
            None => {}
        }
    }

    fn weak(&mut self, target: u64, s: State) {
        self.deferred.push((target, s));
    }

    fn reached(&self, a: u64) -> bool {
        self.inside(a).is_some_and(|off| self.at[off] != u32::MAX && self.nodes[self.at[off] as usize].state.is_some())
    }

    /// Run with `work`, then, round by round, the weak edges whose targets nothing
    /// else reached (each round reaches new code, so this ends).
    fn run_all(&mut self, work: Vec<(u64, State)>) {
        self.run(work);
        while !self.deferred.is_empty() && !self.truncated {
            let pending = std::mem::take(&mut self.deferred);
            let (take, _): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(t, _)| !self.reached(*t));
            if take.is_empty() {
                break;
            }
            // One edge per target: the first; a second weak edge to it is merged normally.
            self.run(take);
        }
    }

    /// A return: rsp must point at the return address.
    fn ret(&mut self, out: &State) {
        self.may_return = true;
        if matches!(out.reg(RSP), Val::Cfa(k) if k != -8) {
            self.contradicted = true;
        }
    }

    fn run(&mut self, mut work: Vec<(u64, State)>) {
        let noreturn = self.opts.noreturn;
        while let Some((addr, st)) = work.pop() {
            self.steps += 1;
            if self.steps > self.opts.limits.max_steps {
                self.truncated = true;
                return;
            }
            let Some(off) = self.inside(addr) else { continue };
            let Some(i) = self.node(off) else { continue };
            let node = &mut self.nodes[i];
            let st = match &node.state {
                None => st,
                Some(old) => {
                    let m = old.meet(&st);
                    if &m == old {
                        continue;
                    }
                    m
                }
            };
            node.state = Some(st.clone());
            let ins = node.ins;
            if ins.code() == Code::INVALID {
                continue;
            }
            if ins.mnemonic() == Mnemonic::Lea && ins.is_ip_rel_memory_operand() && self.callees.len() < 4096 {
                self.callees.push(ins.ip_rel_memory_address());
            }
            if matches!(st.reg(RSP), Val::Cfa(k) if k > -8) {
                self.contradicted = true;
            }
            let cmp = st.cmp;
            let mut out = st;
            sim::step(&mut out, &ins, &mut self.factory);
            let next = ins.next_ip();
            match ins.flow_control() {
                FlowControl::Next => work.push((next, out)),
                FlowControl::UnconditionalBranch => {
                    let t = ins.near_branch_target();
                    if t == 0 && ins.op_count() > 0 && !matches!(ins.op0_kind(), iced_x86::OpKind::NearBranch64) {
                        continue; // far jump
                    }
                    if self.opts.return_thunks.contains(&t) {
                        self.ret(&out);
                    } else if self.inside(t).is_some() {
                        work.push((t, out));
                    } else {
                        self.exit(t, out);
                    }
                }
                FlowControl::ConditionalBranch => {
                    let t = ins.near_branch_target();
                    let (mut taken, mut fall) = (out.clone(), out);
                    // `cmp %r11,%rsp; jne loop` (stack-clash probes): on the equal edge rsp == r11.
                    if let Some((a, b)) = cmp {
                        let eq = match ins.mnemonic() {
                            Mnemonic::Je => Some(&mut taken),
                            Mnemonic::Jne => Some(&mut fall),
                            _ => None,
                        };
                        if let Some(e) = eq {
                            let (va, vb) = (e.reg(a), e.reg(b));
                            if a == RSP && vb != Val::Unknown {
                                e.set(RSP, vb);
                            } else if b == RSP && va != Val::Unknown {
                                e.set(RSP, va);
                            }
                        }
                    }
                    if self.inside(t).is_some() {
                        work.push((t, taken));
                    } else {
                        self.exit(t, taken);
                    }
                    work.push((next, fall));
                }
                FlowControl::IndirectBranch => {
                    self.may_return = true;
                    if !out.is_entry_like() {
                        self.indirect.push(out);
                    }
                }
                FlowControl::Call => {
                    let t = ins.near_branch_target();
                    if self.callees.len() < 4096 {
                        self.callees.push(t);
                    }
                    if t == next {
                        // call to the next instruction pushes its address (pc-relative tricks, RSB stuffing)
                        let v = out.reg(RSP).offset(-8);
                        out.set(RSP, v);
                        work.push((next, out));
                    } else if !noreturn.is_some_and(|f| f(t)) {
                        // (A weak edge here would hide conflicts after unknown noreturn
                        // calls behind whichever path comes first: measured worse.)
                        work.push((next, out));
                    }
                }
                FlowControl::IndirectCall => work.push((next, out)),
                FlowControl::Return => self.ret(&out),
                FlowControl::Interrupt => {
                    if ins.mnemonic() != Mnemonic::Int3 {
                        work.push((next, out));
                    }
                }
                FlowControl::Exception => {
                    // WARN continues, BUG does not: follow the weak edge only into code
                    // nothing else reaches.
                    if self.opts.ud2_continues && ins.mnemonic() == Mnemonic::Ud2 {
                        self.weak(next, out);
                    }
                }
                FlowControl::XbeginXabortXend => {
                    if ins.mnemonic() == Mnemonic::Xbegin {
                        work.push((ins.near_branch_target(), out.clone()));
                    }
                    work.push((next, out));
                }
            }
        }
    }

    /// Starts of byte runs no reached instruction covers.
    fn gaps(&self) -> Vec<u64> {
        let mut covered = vec![false; self.code.len()];
        for n in &self.nodes {
            if n.state.is_none() {
                continue;
            }
            let Some(off) = self.inside(n.ins.ip()) else { continue };
            let end = off.saturating_add(n.ins.len()).min(covered.len());
            for c in &mut covered[off..end] {
                *c = true;
            }
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < covered.len() {
            if covered[i] {
                i += 1;
                continue;
            }
            // Skip alignment padding: a jump-table target is never a nop.
            let mut d = Decoder::with_ip(64, &self.code[i..], self.start.wrapping_add(i as u64), DecoderOptions::NONE);
            let mut ins = Instruction::default();
            while d.can_decode() {
                d.decode_out(&mut ins);
                if ins.mnemonic() != Mnemonic::Nop && ins.mnemonic() != Mnemonic::Int3 {
                    break;
                }
            }
            let off = (ins.ip().wrapping_sub(self.start)) as usize;
            if off < covered.len()
                && !covered[off]
                && ins.mnemonic() != Mnemonic::Nop
                && ins.mnemonic() != Mnemonic::Int3
            {
                out.push(ins.ip());
            }
            i = i.max(off).saturating_add(1);
            while i < covered.len() && !covered[i] {
                i += 1;
            }
        }
        out
    }

    /// Seeds for landing pads not reached yet: the meet of the states after the calls in their ranges.
    fn pad_seeds(&mut self) -> Vec<(u64, State)> {
        let mut out = Vec::new();
        let mut outside = Vec::new();
        for &(lo, hi, pad) in &self.opts.landing_pads {
            let off = self.inside(pad);
            if let Some(off) = off {
                if self.at[off] != u32::MAX && self.nodes[self.at[off] as usize].state.is_some() {
                    continue;
                }
            }
            let mut seed: Option<State> = None;
            // The call sites of the range, through the offset table (work linear in its length).
            let a = lo.max(self.start).saturating_sub(self.start) as usize;
            let b = (hi.saturating_sub(self.start) as usize).min(self.code.len());
            for off in a..b.max(a) {
                let i = self.at[off];
                if i == u32::MAX {
                    continue;
                }
                let n = &self.nodes[i as usize];
                if !matches!(n.ins.flow_control(), FlowControl::Call | FlowControl::IndirectCall) {
                    continue;
                }
                let Some(st) = &n.state else { continue };
                let mut after = st.clone();
                sim::step(&mut after, &n.ins, &mut self.factory);
                seed = Some(match seed {
                    None => after,
                    Some(s) => s.meet(&after),
                });
            }
            match (seed, off) {
                (Some(s), Some(_)) => out.push((pad, s)),
                // A pad in a split-off `.cold` part: an exit into it.
                (Some(s), None) => outside.push((pad, s)),
                _ => {}
            }
        }
        for (pad, s) in outside {
            self.exit(pad, s);
        }
        out
    }
}

/// Analyze with explicit options; not cached.
pub fn analyze_with(code: &[u8], start: u64, opts: &Options<'_>) -> FunctionLayout {
    let mut sim = Sim {
        code,
        start,
        opts,
        at: vec![u32::MAX; code.len()],
        nodes: Vec::new(),
        steps: 0,
        truncated: false,
        indirect: Vec::new(),
        exits: HashMap::new(),
        callees: Vec::new(),
        tails: Vec::new(),
        contradicted: false,
        deferred: Vec::new(),
        may_return: false,
        factory: InstructionInfoFactory::new(),
    };
    let entries = if opts.entries.is_empty() { vec![(start, State::entry())] } else { opts.entries.clone() };
    sim.run_all(entries);
    for _ in 0..4 {
        let pads = sim.pad_seeds();
        if pads.is_empty() || sim.truncated {
            break;
        }
        sim.run_all(pads);
    }
    if opts.limits.fill_indirect {
        // Each round seeds the first real instruction of every unreached run; the
        // dispatch state accumulates over the indirect jumps found so far.
        let mut seed: Option<State> = None;
        for _ in 0..256 {
            for s in sim.indirect.drain(..) {
                seed = Some(match seed {
                    None => s,
                    Some(old) => old.meet(&s),
                });
            }
            let Some(seed) = seed.clone() else { break };
            let gaps = sim.gaps();
            if gaps.is_empty() || sim.truncated {
                break;
            }
            sim.run_all(gaps.into_iter().rev().map(|g| (g, seed.clone())).collect());
        }
    }
    let end = start.saturating_add(code.len() as u64);
    let mut insns: Vec<Insn> = sim
        .nodes
        .into_iter()
        .filter_map(|n| n.state.map(|s| Insn { addr: n.ins.ip(), rule: Rule::of(&s), ins: n.ins }))
        .collect();
    insns.sort_by_key(|i| i.addr);
    let mut exits: Vec<(u64, State)> = sim.exits.into_iter().collect();
    exits.sort_by_key(|e| e.0);
    let mut callees = sim.callees;
    callees.sort_unstable();
    callees.dedup();
    let contradicted = sim.contradicted;
    let may_return = sim.may_return || sim.truncated || contradicted || insns.is_empty();
    FunctionLayout {
        start,
        end,
        insns,
        truncated: sim.truncated,
        exits,
        callees,
        tails: sim.tails,
        may_return,
        contradicted,
    }
}

#[cfg(test)]
mod tests;
