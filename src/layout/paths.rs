//! Which of a function's calls it can be standing at, when its return address is lost
//! and several calls fit its frame: a backward search from each call to the entry,
//! where every conditional branch on the way must agree with the values it tested.
//! A tested value is known when it is computed, on the path, from rsp (exact, from the
//! layout), from a callee-saved register the path leaves unchanged up to the call (its
//! value there was recovered), or from memory the path does not overwrite (a stack slot
//! no store of the path and no escaped address reaches; other memory as in the dump).
//! A branch whose value is not known rules nothing out.

use std::collections::HashSet;

use iced_x86::{ConditionCode, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register};

use super::sim::{dw, CALL_CLOBBERED};
use super::state::RSP;
use super::{FunctionLayout, Val};
use crate::memory::Memory;

/// States visited by one search before it gives up (and allows the call).
const MAX_STATES: usize = 20_000;
/// Paths a value is followed back through where they join (preds of one instruction),
/// and what following them costs of MAX_SLICE.
const MAX_JOIN: usize = 4;
const JOIN_COST: usize = 12;
/// Registers that pass arguments (DWARF numbers): rsp copied into one is a pointer a callee gets.
const ARGUMENTS: [u8; 6] = [5, 4, 1, 2, 8, 9];
/// Instructions a value is traced back through.
const MAX_SLICE: usize = 48;

/// What standing at one call would mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtCall {
    /// Some path from the entry reaches the call with its branches agreeing.
    pub feasible: bool,
    /// Where the call goes, when the code before it computes that from known values
    /// (`mov 0x18(%rax),%rdx; call *0x318(%rdx)`).
    pub target: Option<u64>,
}

/// For each call (index into `layout.instructions()`): can the function stand there,
/// and where would it have called? `cfa` is the function's CFA; `known(dw)` a
/// callee-saved register's value at the call.
pub fn at_calls<M: Memory>(
    mem: &M,
    layout: &FunctionLayout,
    calls: &[usize],
    cfa: u64,
    known: &dyn Fn(u8) -> Option<u64>,
) -> Vec<AtCall> {
    let g = Graph::new(mem, layout, cfa, known);
    calls.iter().map(|&c| AtCall { feasible: g.reaches_entry(c), target: g.target(c) }).collect()
}

/// Registers (bit per DWARF number) and stack words (CFA offsets) written after a
/// point, up to the call.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
struct Later {
    regs: u32,
    stack: Vec<i64>,
    stack_any: bool,
}

impl Later {
    fn with(&self, w: &Writes) -> Later {
        let mut l = self.clone();
        l.regs |= w.regs;
        l.stack_any |= w.stack_any;
        for a in &w.stack {
            if let Err(k) = l.stack.binary_search(a) {
                l.stack.insert(k, *a);
            }
        }
        l
    }
}

/// What one instruction writes.
#[derive(Default)]
struct Writes {
    regs: u32,
    stack: Vec<i64>,
    stack_any: bool,
}

/// A function's control flow and writes, from its layout alone (kept for one check).
struct Flow {
    preds: Vec<Vec<usize>>,
    writes: Vec<Writes>,
    /// The lowest stack word (CFA offset) whose address the function takes (`lea`,
    /// `mov %rsp,%rdi`): a callee may write anything from there up.
    escaped: i64,
}

/// The CFA offset of register `r` before instruction `i`, when the layout has it
/// relative to the CFA (rsp; rbp in an rbp-framed function).
fn offset(layout: &FunctionLayout, i: usize, r: u8) -> Option<i64> {
    match layout.instructions()[i].rule.value(r) {
        Val::Cfa(k) => Some(i64::from(k)),
        _ => None,
    }
}

impl Flow {
    fn of<M: Memory>(mem: &M, layout: &FunctionLayout) -> std::rc::Rc<Flow> {
        enum Tag {}
        crate::memory::remembered::<Tag, _, _>(mem, (layout.start, layout.instructions().len()), || {
            std::rc::Rc::new(Flow::new(layout))
        })
    }

    fn new(layout: &FunctionLayout) -> Flow {
        let insns = layout.instructions();
        let index = |a: u64| insns.binary_search_by_key(&a, |i| i.addr).ok();
        let mut preds = vec![Vec::new(); insns.len()];
        let mut f = InstructionInfoFactory::new();
        let mut writes = Vec::with_capacity(insns.len());
        let mut escaped = i64::MAX;
        for (i, n) in insns.iter().enumerate() {
            let ins = &n.ins;
            let next = || index(ins.next_ip()).filter(|&j| j == i + 1);
            let succ: Vec<usize> = match ins.flow_control() {
                FlowControl::UnconditionalBranch => index(ins.near_branch_target()).into_iter().collect(),
                FlowControl::ConditionalBranch => index(ins.near_branch_target()).into_iter().chain(next()).collect(),
                FlowControl::IndirectBranch | FlowControl::Return | FlowControl::Exception => Vec::new(),
                _ => next().into_iter().collect(),
            };
            for s in succ {
                if !preds[s].contains(&i) {
                    preds[s].push(i);
                }
            }
            let (w, esc) = writes_of(layout, i, &mut f);
            writes.push(w);
            if let Some(e) = esc {
                escaped = escaped.min(e);
            }
        }
        Flow { preds, writes, escaped }
    }
}

/// Instruction `i`'s writes, and a stack word (CFA offset) whose address it lets escape.
fn writes_of(layout: &FunctionLayout, i: usize, f: &mut InstructionInfoFactory) -> (Writes, Option<i64>) {
    let ins = &layout.instructions()[i].ins;
    let mut w = Writes::default();
    let info = f.info(ins);
    for u in info.used_registers() {
        if matches!(u.access(), OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite) {
            if let Some(d) = dw(u.register()) {
                w.regs |= 1 << d;
            }
        }
    }
    if matches!(ins.flow_control(), FlowControl::Call | FlowControl::IndirectCall) {
        for d in CALL_CLOBBERED {
            w.regs |= 1 << d;
        }
    }
    for m in info.used_memory() {
        if !matches!(m.access(), OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite)
        {
            continue;
        }
        match dw(m.base()).and_then(|b| offset(layout, i, b)) {
            Some(base) if m.index() == Register::None => {
                let a = base.saturating_add(m.displacement() as i64);
                // every word the store touches
                let end = a.saturating_add((m.memory_size().size() as i64).max(1));
                let mut w0 = a & !7;
                while w0 < end && w.stack.len() < 64 {
                    w.stack.push(w0);
                    w0 = w0.saturating_add(8);
                }
            }
            // A store through a register the layout has relative to the CFA, with an index.
            _ if dw(m.base()).is_some_and(|b| offset(layout, i, b).is_some()) => w.stack_any = true,
            _ => {}
        }
    }
    let mut escape = None;
    if ins.mnemonic() == Mnemonic::Lea && ins.op_kind(1) == OpKind::Memory {
        if let Some(base) = dw(ins.memory_base()).and_then(|b| offset(layout, i, b)) {
            escape = Some(base.saturating_add(ins.memory_displacement64() as i64));
        }
    } else if ins.mnemonic() == Mnemonic::Mov
        && ins.op_kind(1) == OpKind::Register
        && matches!(dw(ins.op_register(1)), Some(RSP))
        && ins.op_kind(0) == OpKind::Register
        && dw(ins.op_register(0)).is_some_and(|d| ARGUMENTS.contains(&d))
    {
        escape = offset(layout, i, RSP);
    }
    (w, escape)
}

struct Graph<'a, M> {
    mem: &'a M,
    layout: &'a FunctionLayout,
    cfa: u64,
    known: &'a dyn Fn(u8) -> Option<u64>,
    flow: std::rc::Rc<Flow>,
}

impl<'a, M: Memory> Graph<'a, M> {
    fn new(mem: &'a M, layout: &'a FunctionLayout, cfa: u64, known: &'a dyn Fn(u8) -> Option<u64>) -> Self {
        Graph { mem, layout, cfa, known, flow: Flow::of(mem, layout) }
    }

    fn ins(&self, i: usize) -> &Instruction {
        &self.layout.instructions()[i].ins
    }

    /// The exact value of a register before instruction `i` when the layout has it
    /// relative to the CFA.
    fn cfa_relative(&self, i: usize, r: u8) -> Option<u64> {
        self.cfa.checked_add_signed(offset(self.layout, i, r)?)
    }

    /// A backward path from call `c` to the function's entry (or to code entered from
    /// where the graph does not know: a jump table, a landing pad) whose branches agree.
    fn reaches_entry(&self, c: usize) -> bool {
        let insns = self.layout.instructions();
        let mut seen: HashSet<(usize, Later)> = HashSet::new();
        let mut todo = vec![(c, Later::default())];
        while let Some((i, later)) = todo.pop() {
            if !seen.insert((i, later.clone())) {
                continue;
            }
            if seen.len() > MAX_STATES || insns[i].addr == self.layout.start || self.flow.preds[i].is_empty() {
                return true;
            }
            for &p in &self.flow.preds[i] {
                let ins = self.ins(p);
                if ins.flow_control() == FlowControl::ConditionalBranch && ins.near_branch_target() != ins.next_ip() {
                    let taken = insns[i].addr == ins.near_branch_target();
                    if self.branch(p, &later).is_some_and(|t| t != taken) {
                        continue;
                    }
                }
                todo.push((p, later.with(&self.flow.writes[p])));
            }
        }
        false
    }

    /// Where call `c` goes: its register or memory operand, read before it runs.
    fn target(&self, c: usize) -> Option<u64> {
        let ins = self.ins(c);
        match ins.op0_kind() {
            OpKind::Register => self.reg_at(dw(ins.op0_register())?, c, &Later::default(), 0),
            OpKind::Memory => self.load(c, 8, &Later::default(), 0),
            _ => None,
        }
    }

    /// The one instruction that flows into `i`, if only one does.
    fn only_pred(&self, i: usize) -> Option<usize> {
        match self.flow.preds[i].as_slice() {
            [p] => Some(*p),
            _ => None,
        }
    }

    /// Whether conditional branch `j` was taken, when the values its flags came from are known.
    fn branch(&self, j: usize, later: &Later) -> Option<bool> {
        let cc = self.ins(j).condition_code();
        let mut later = later.clone();
        let mut s = j;
        for _ in 0..8 {
            s = self.only_pred(s)?;
            if self.ins(s).rflags_modified() != 0 {
                break;
            }
            later = later.with(&self.flow.writes[s]);
        }
        let ins = self.ins(s);
        if !matches!(ins.mnemonic(), Mnemonic::Cmp | Mnemonic::Test) || ins.op_count() != 2 {
            return None;
        }
        let later = later.with(&self.flow.writes[s]);
        let size = operand_size(ins)?;
        let a = self.operand(s, 0, size, &later)?;
        let b = self.operand(s, 1, size, &later)?;
        let bits = size * 8;
        let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
        let sign = |v: u64| (v >> (bits - 1)) & 1 == 1;
        let (r, cf, of) = if ins.mnemonic() == Mnemonic::Cmp {
            let r = a.wrapping_sub(b) & mask;
            (r, a < b, sign(a) != sign(b) && sign(r) != sign(a))
        } else {
            (a & b, false, false)
        };
        let (zf, sf) = (r == 0, sign(r));
        Some(match cc {
            ConditionCode::o => of,
            ConditionCode::no => !of,
            ConditionCode::b => cf,
            ConditionCode::ae => !cf,
            ConditionCode::e => zf,
            ConditionCode::ne => !zf,
            ConditionCode::be => cf || zf,
            ConditionCode::a => !cf && !zf,
            ConditionCode::s => sf,
            ConditionCode::ns => !sf,
            ConditionCode::l => sf != of,
            ConditionCode::ge => sf == of,
            ConditionCode::le => zf || sf != of,
            ConditionCode::g => !zf && sf == of,
            _ => return None,
        })
    }

    /// Operand `op` of instruction `i` (read before it runs), `size` bytes, zero-extended.
    fn operand(&self, i: usize, op: u32, size: u32, later: &Later) -> Option<u64> {
        let ins = self.ins(i);
        let mask = if size >= 8 { u64::MAX } else { (1u64 << (size * 8)) - 1 };
        match ins.op_kind(op) {
            OpKind::Register => Some(self.reg_at(dw(ins.op_register(op))?, i, later, 0)? & mask),
            OpKind::Memory => self.load(i, size, later, 0).map(|v| v & mask),
            _ => Some(ins.try_immediate(op).ok()? & mask),
        }
    }

    /// The address of instruction `i`'s memory operand.
    fn address(&self, i: usize, later: &Later, depth: usize) -> Option<(u64, bool)> {
        let ins = self.ins(i);
        if ins.is_ip_rel_memory_operand() {
            return Some((ins.ip_rel_memory_address(), false));
        }
        if ins.segment_prefix() != Register::None {
            return None;
        }
        let mut a = ins.memory_displacement64();
        let mut stack = false;
        if ins.memory_base() != Register::None {
            let b = dw(ins.memory_base())?;
            stack = self.cfa_relative(i, b).is_some();
            a = a.wrapping_add(self.reg_at(b, i, later, depth + 1)?);
        }
        if ins.memory_index() != Register::None {
            let x = self.reg_at(dw(ins.memory_index())?, i, later, depth + 1)?;
            a = a.wrapping_add(x.wrapping_mul(u64::from(ins.memory_index_scale())));
        }
        Some((a, stack))
    }

    /// What instruction `i`'s memory operand held before it ran (`size` bytes): the dump's
    /// value, unless it is a stack word the path writes later or a callee could.
    fn load(&self, i: usize, size: u32, later: &Later, depth: usize) -> Option<u64> {
        if !(1..=8).contains(&size) {
            return None;
        }
        let (a, stack) = self.address(i, later, depth)?;
        if stack {
            let o = a.wrapping_sub(self.cfa) as i64;
            let end = o.checked_add(i64::from(size))?;
            let hit = later.stack.iter().any(|&w| w < end && w.saturating_add(8) > o);
            if later.stack_any || hit || end > self.flow.escaped {
                return None;
            }
        }
        let mut b = [0u8; 8];
        self.mem.read(a, &mut b[..size as usize]).ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// Register `r`'s value before instruction `at`; `later` is what is written from `at`
    /// to the call.
    fn reg_at(&self, r: u8, at: usize, later: &Later, depth: usize) -> Option<u64> {
        if let Some(v) = self.cfa_relative(at, r) {
            return Some(v);
        }
        if later.regs & (1 << r) == 0 && super::state::callee_saved_index(r).is_some() {
            if let Some(v) = (self.known)(r) {
                return Some(v); // unchanged from here to the call
            }
        }
        if depth > MAX_SLICE {
            return None;
        }
        let mut later = later.clone();
        let mut j = at;
        for _ in 0..MAX_SLICE {
            let Some(p) = self.only_pred(j) else { break };
            if self.flow.writes[p].regs & (1 << r) != 0 {
                return self.defined(p, r, &later.with(&self.flow.writes[p]), depth + 1);
            }
            later = later.with(&self.flow.writes[p]);
            j = p;
        }
        if later.regs & (1 << r) == 0 && super::state::callee_saved_index(r).is_some() {
            return (self.known)(r);
        }
        // Where paths join: the value they all bring.
        let preds = &self.flow.preds[j];
        if preds.len() < 2 || preds.len() > MAX_JOIN || depth + JOIN_COST > MAX_SLICE {
            return None;
        }
        let mut v = None;
        for &p in preds {
            let l = later.with(&self.flow.writes[p]);
            let here = if self.flow.writes[p].regs & (1 << r) != 0 {
                self.defined(p, r, &l, depth + JOIN_COST)
            } else {
                self.reg_at(r, p, &l, depth + JOIN_COST)
            }?;
            if v.replace(here).is_some_and(|old| old != here) {
                return None;
            }
        }
        v
    }

    /// The value instruction `p` gives register `r` (a move, load, `lea` or zeroing).
    fn defined(&self, p: usize, r: u8, later: &Later, depth: usize) -> Option<u64> {
        let ins = self.ins(p);
        if ins.op_count() < 1 || ins.op_kind(0) != OpKind::Register || dw(ins.op_register(0)) != Some(r) {
            return None;
        }
        let dest = ins.op_register(0);
        let wide = dest.is_gpr64() || dest.is_gpr32();
        let keep = |v: u64| if dest.is_gpr32() { v & 0xffff_ffff } else { v };
        match ins.mnemonic() {
            Mnemonic::Xor | Mnemonic::Sub
                if wide && ins.op_kind(1) == OpKind::Register && ins.op_register(1) == dest =>
            {
                Some(0)
            }
            Mnemonic::Lea if wide => Some(keep(self.address(p, later, depth)?.0)),
            Mnemonic::Add | Mnemonic::Sub if wide => {
                let before = self.reg_at(r, p, later, depth + 1)?;
                let size = dest.size() as u32;
                let v = match ins.op_kind(1) {
                    OpKind::Register => self.reg_at(dw(ins.op_register(1))?, p, later, depth + 1)?,
                    OpKind::Memory => self.load(p, size, later, depth + 1)?,
                    _ => ins.try_immediate(1).ok()?,
                };
                let out = if ins.mnemonic() == Mnemonic::Add { before.wrapping_add(v) } else { before.wrapping_sub(v) };
                Some(keep(out))
            }
            Mnemonic::Mov if wide => match ins.op_kind(1) {
                OpKind::Register => Some(keep(self.reg_at(dw(ins.op_register(1))?, p, later, depth)?)),
                OpKind::Memory => Some(keep(self.load(p, dest.size() as u32, later, depth)?)),
                _ => Some(keep(ins.try_immediate(1).ok()?)),
            },
            Mnemonic::Movzx if wide && ins.op_kind(1) == OpKind::Memory => {
                self.load(p, ins.memory_size().size() as u32, later, depth)
            }
            Mnemonic::Movsxd | Mnemonic::Movsx if wide && ins.op_kind(1) == OpKind::Memory => {
                let n = ins.memory_size().size() as u32;
                let v = self.load(p, n, later, depth)?;
                let s = 64 - 8 * n;
                Some(keep(((v << s) as i64 >> s) as u64))
            }
            _ => None,
        }
    }
}

/// The width in bytes a `cmp`/`test` compares.
fn operand_size(ins: &Instruction) -> Option<u32> {
    let n = match ins.op_kind(0) {
        OpKind::Register => ins.op_register(0).size(),
        OpKind::Memory => ins.memory_size().size(),
        _ => return None,
    };
    matches!(n, 1 | 2 | 4 | 8).then_some(n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{analyze_with, Options};
    use crate::memory::Regions;

    const BASE: u64 = 0x1000;
    const CFA: u64 = 0x7000_0100;

    /// Which of the two calls of `code` (addresses `calls`) can be stood at.
    fn feasible(code: &[u8], calls: [u64; 2], mem: &Regions, rbx: Option<u64>) -> Vec<bool> {
        let l = analyze_with(code, BASE, &Options::default());
        let idx: Vec<usize> =
            calls.iter().map(|a| l.instructions().iter().position(|i| i.addr == BASE + a).unwrap()).collect();
        let known = move |dw: u8| if dw == 3 { rbx } else { None };
        at_calls(mem, &l, &idx, CFA, &known).iter().map(|a| a.feasible).collect()
    }

    /// push rbx; mov rbx,rdi; cmp qword [rbx],0; je L2; call [rbx+8]; jmp L3;
    /// L2: call [rbx+8]; L3: pop rbx; ret
    const BY_RBX: &[u8] = &[
        0x53, 0x48, 0x89, 0xfb, 0x48, 0x83, 0x3b, 0x00, 0x74, 0x05, 0xff, 0x53, 0x08, 0xeb, 0x03, 0xff, 0x53, 0x08,
        0x5b, 0xc3,
    ];

    #[test]
    fn a_branch_on_memory_a_callee_saved_register_points_to_decides() {
        for (flag, want) in [(0u64, [false, true]), (1, [true, false])] {
            let mut m = Regions::new();
            m.add_u64s(0x5000, &[flag, 0x2000]);
            assert_eq!(feasible(BY_RBX, [10, 15], &m, Some(0x5000)), want, "flag {flag}");
        }
    }

    #[test]
    fn an_unknown_register_or_unreadable_memory_rules_nothing_out() {
        let mut m = Regions::new();
        m.add_u64s(0x5000, &[0, 0x2000]);
        assert_eq!(feasible(BY_RBX, [10, 15], &m, None), [true, true]);
        assert_eq!(feasible(BY_RBX, [10, 15], &Regions::new(), Some(0x5000)), [true, true]);
    }

    /// push rbx; sub rsp,0x10; mov [rsp],rdi; cmp qword [rsp],0; je L2; <extra>; call rsi;
    /// jmp L3; L2: call rsi; L3: add rsp,0x10; pop rbx; ret
    fn by_stack(extra: &[u8]) -> (Vec<u8>, [u64; 2]) {
        let mut c = vec![0x53, 0x48, 0x83, 0xec, 0x10, 0x48, 0x89, 0x3c, 0x24, 0x48, 0x83, 0x3c, 0x24, 0x00];
        c.extend([0x74, (extra.len() + 4) as u8]);
        c.extend(extra);
        let call1 = c.len() as u64;
        c.extend([0xff, 0xd6, 0xeb, 0x02]);
        let call2 = c.len() as u64;
        c.extend([0xff, 0xd6, 0x48, 0x83, 0xc4, 0x10, 0x5b, 0xc3]);
        (c, [call1, call2])
    }

    #[test]
    fn a_stack_slot_counts_unless_the_path_overwrites_it_or_its_address_escapes() {
        let mut m = Regions::new();
        m.add_u64s(CFA - 0x20, &[0]);
        let (code, calls) = by_stack(&[]);
        assert_eq!(feasible(&code, calls, &m, None), [false, true]);
        // mov [rsp],rax before call 1: the slot tested may have held anything
        let (code, calls) = by_stack(&[0x48, 0x89, 0x04, 0x24]);
        assert_eq!(feasible(&code, calls, &m, None), [true, true]);
        // lea rdi,[rsp] before call 1: a callee may have written the slot
        let (code, calls) = by_stack(&[0x48, 0x8d, 0x3c, 0x24]);
        assert_eq!(feasible(&code, calls, &m, None), [true, true]);
    }
}
