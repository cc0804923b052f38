//! Resolving indirect call targets (`call *0x348(%rbx)`, `call *%r12`).
//!
//! Two ways: from the callee-saved registers an unwinding recovered for the
//! frame, or, with no registers at all (a crash text), by consistency: a word
//! in the callee's save area taken as the register must give a pointer to a
//! function whose own prologue saves that register at exactly that word.

use crate::frame::{describe_origin, Frame};
use crate::layout::at_pc::layout_of;
use crate::layout::{FunctionLayout, Saved, CALLEE_SAVED};
use crate::memory::Memory;
use crate::symbols::Symbols;
use crate::verify::{FrameIn, IndirectResolver};
use crate::x86::{format_att, CallSite, CallTarget, Reg};

/// How far below the return-address slot a callee's saves are looked for.
const SAVE_AREA: u64 = 0x80;

fn callee_saved_index(reg: Reg) -> Option<usize> {
    CALLEE_SAVED.iter().position(|d| u16::from(*d) == reg.dwarf())
}

/// Evaluate an indirect call's operand with `value(reg) -> (value, how it is known)`:
/// the target and the evidence lines.
pub(crate) fn evaluate<M: Memory>(
    mem: &M,
    site: &CallSite,
    value: &dyn Fn(Reg) -> Option<(u64, String)>,
) -> Option<(u64, Vec<String>)> {
    match &site.target {
        CallTarget::Register(r) => value(*r).map(|(v, how)| (v, vec![how])),
        CallTarget::Memory(m) if m.segment.is_none() && !m.rip_relative => {
            let mut how = Vec::new();
            let mut addr = m.disp as u64;
            if let Some(b) = m.base {
                let (v, h) = value(b)?;
                how.push(h);
                addr = addr.wrapping_add(v);
            }
            if let Some(x) = m.index {
                let (v, h) = value(x)?;
                how.push(h);
                addr = addr.wrapping_add(v.wrapping_mul(u64::from(m.scale)));
            }
            let ptr = mem.read_u64(addr).ok()?;
            how.push(format!("pointer at {addr:#x} = {ptr:#x}"));
            Some((ptr, how))
        }
        _ => None,
    }
}

/// Uses the callee-saved registers recovered for each frame of an unwound chain
/// (frames matched by pc and sp).
pub struct ChainResolver<'a, M> {
    mem: &'a M,
    frames: &'a [Frame],
    /// `(pc, sp)` -> first frame with them: deep chains are looked up once per frame.
    index: std::collections::HashMap<(u64, Option<u64>), usize>,
    /// The caller of a pc-0 frame 0 (a NULL call) and the registers at its call.
    at_call: Option<((u64, Option<u64>), Vec<(Reg, u64)>)>,
}

impl<'a, M> ChainResolver<'a, M> {
    pub fn new(mem: &'a M, frames: &'a [Frame]) -> Self {
        let mut index = std::collections::HashMap::with_capacity(frames.len());
        for (i, u) in frames.iter().enumerate() {
            index.entry((u.frame.pc, u.frame.sp)).or_insert(i);
        }
        ChainResolver { mem, frames, index, at_call: None }
    }

    /// When frame 0 is at pc 0 with its caller's return address at sp (a call through a
    /// NULL pointer), nothing ran since that call: the starting registers are its operands'.
    pub fn with_start(mut self, start: &crate::frame::Start) -> Self {
        if let (Some(f0), Some(f1)) = (self.frames.first(), self.frames.get(1)) {
            if f0.frame.pc == 0 && f0.frame.level == 0 && f1.frame.slot == f0.frame.sp {
                self.at_call = Some(((f1.frame.pc, f1.frame.sp), start.scratch.clone()));
            }
        }
        self
    }

    /// The chain's frame with this pc and sp.
    pub fn frame(&self, pc: u64, sp: Option<u64>) -> Option<&'a Frame> {
        self.index.get(&(pc, sp)).and_then(|&i| self.frames.get(i))
    }
}

impl<M: Memory> IndirectResolver for ChainResolver<'_, M> {
    fn resolve(&self, frame: &FrameIn, site: &CallSite) -> Option<(u64, Vec<String>)> {
        let fr = self.frame(frame.pc, frame.sp)?;
        let at_call = self.at_call.as_ref().filter(|(k, _)| *k == (frame.pc, frame.sp)).map(|(_, r)| r);
        let value = |reg: Reg| {
            if let Some(&(_, v)) = at_call.and_then(|r| r.iter().find(|(x, _)| *x == reg)) {
                return Some((
                    v,
                    format!("{} = {v:#x} from the registers at pc 0 (nothing ran since the call)", reg.name()),
                ));
            }
            let i = callee_saved_index(reg)?;
            let v = fr.regs.get(i)?.as_ref()?;
            Some((v.value, describe_origin(i, v)))
        };
        evaluate(self.mem, site, &value)
    }
}

/// The CFA offset where a function's prologue saves callee-saved register `i`, and the
/// instruction that does it (the one before the first rule showing the save).
pub fn save_of(layout: &FunctionLayout, i: usize) -> Option<(i32, u64, String)> {
    let insns = layout.instructions();
    let first = insns.iter().position(|ins| matches!(ins.rule.saved.get(i), Some(Saved::At(_))))?;
    let Some(Saved::At(k)) = insns.get(first)?.rule.saved.get(i).copied() else { return None };
    let ins = insns.get(first.checked_sub(1)?)?;
    Some((k, ins.addr, format_att(&ins.ins)))
}

/// Finds the register by consistency between the stack and the code it names.
pub struct ConsistencyResolver<'a, M, S> {
    pub mem: &'a M,
    pub syms: &'a S,
}

impl<M: Memory, S: Symbols> IndirectResolver for ConsistencyResolver<'_, M, S> {
    fn resolve(&self, frame: &FrameIn, site: &CallSite) -> Option<(u64, Vec<String>)> {
        let reg = match &site.target {
            CallTarget::Register(r) => *r,
            CallTarget::Memory(m) if m.index.is_none() => m.base?,
            _ => return None,
        };
        let i = callee_saved_index(reg)?;
        let slot = frame.slot.or_else(|| frame.sp.and_then(|s| s.checked_sub(8)))?;
        let cfa = slot.checked_add(8)?;
        let mut a = slot.checked_sub(8)?;
        let lowest = slot.saturating_sub(SAVE_AREA);
        while a >= lowest {
            if let Ok(v) = self.mem.read_u64(a) {
                let value = |_: Reg| Some((v, String::new()));
                if let Some((target, mut how)) = evaluate(self.mem, site, &value) {
                    if let Some(callee) = self.syms.lookup(target).filter(|s| s.start == target) {
                        if let Ok(layout) = layout_of(self.mem, self.syms, &callee) {
                            let k = a.wrapping_sub(cfa) as i64;
                            if let Some((saved_k, at, text)) = save_of(&layout, i) {
                                if i64::from(saved_k) == k {
                                    let name = crate::layout::CALLEE_SAVED_NAMES.get(i).copied().unwrap_or("?");
                                    how[0] = format!(
                                        "{name} = {v:#x} saved at {a:#x} by '{text}' at {} (prologue of the callee it names)",
                                        callee.describe(at)
                                    );
                                    if matches!(site.target, CallTarget::Register(_)) {
                                        how.truncate(1);
                                    }
                                    return Some((target, how));
                                }
                            }
                        }
                    }
                }
            }
            a = a.checked_sub(8)?;
        }
        None
    }
}

/// The first resolver that answers.
pub struct Either<'a>(pub &'a dyn IndirectResolver, pub &'a dyn IndirectResolver);

impl IndirectResolver for Either<'_> {
    fn resolve(&self, frame: &FrameIn, site: &CallSite) -> Option<(u64, Vec<String>)> {
        self.0.resolve(frame, site).or_else(|| self.1.resolve(frame, site))
    }
}
