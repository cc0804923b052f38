//! The transfer function: how one instruction changes the abstract state.

use iced_x86::{Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register};

use super::state::{callee_saved_index, Saved, State, Val, RBP, RSP};

/// DWARF number of a general-purpose register (any width).
pub fn dw(r: Register) -> Option<u8> {
    Some(match r.full_register() {
        Register::RAX => 0,
        Register::RDX => 1,
        Register::RCX => 2,
        Register::RBX => 3,
        Register::RSI => 4,
        Register::RDI => 5,
        Register::RBP => 6,
        Register::RSP => 7,
        Register::R8 => 8,
        Register::R9 => 9,
        Register::R10 => 10,
        Register::R11 => 11,
        Register::R12 => 12,
        Register::R13 => 13,
        Register::R14 => 14,
        Register::R15 => 15,
        _ => return None,
    })
}

/// A 64-bit GPR operand's DWARF number.
fn reg64(ins: &Instruction, op: u32) -> Option<u8> {
    if ins.op_kind(op) != OpKind::Register {
        return None;
    }
    let r = ins.op_register(op);
    if r.is_gpr64() {
        dw(r)
    } else {
        None
    }
}

fn imm(ins: &Instruction, op: u32) -> Option<i64> {
    match ins.op_kind(op) {
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => ins.try_immediate(op).ok().map(|v| v as i64),
        _ => None,
    }
}

/// The address of operand `op` if it is memory `base + disp` with a tracked base.
fn mem_addr(s: &State, ins: &Instruction, op: u32) -> Val {
    if ins.op_kind(op) != OpKind::Memory || ins.memory_index() != Register::None {
        return Val::Unknown;
    }
    let base = ins.memory_base();
    if !base.is_gpr64() {
        return Val::Unknown;
    }
    match dw(base) {
        Some(b) => s.reg(b).offset(ins.memory_displacement64() as i64),
        None => Val::Unknown,
    }
}

/// Registers a call may clobber (SysV caller-saved).
pub(crate) const CALL_CLOBBERED: [u8; 9] = [0, 1, 2, 4, 5, 8, 9, 10, 11];

/// `reg` is written with a value loaded from `slot`: restore a saved register or the DRAP CFA.
fn load(s: &mut State, reg: u8, slot: Val) {
    if let Some(i) = callee_saved_index(reg) {
        let restored = matches!((s.saved[i], slot), (Saved::At(k), Val::Cfa(a)) if k == a)
            || matches!((s.saved[i], slot), (Saved::AtAnc(k), Val::Anc(a)) if k == a);
        if restored {
            s.saved[i] = Saved::Same;
            s.set(reg, Val::Unknown);
            return;
        }
    }
    let v = match slot {
        Val::Anc(a) if s.cfa_slot == Some(a) || s.cfa_slot2 == Some(a) => Val::Cfa(0),
        _ => Val::Unknown,
    };
    if v == Val::Cfa(0) {
        s.drap_spilled = false;
    }
    s.clobber(reg);
    if reg == RSP {
        if v == Val::Unknown {
            s.lose_rsp("rsp-load");
        } else {
            s.set(RSP, v);
        }
    } else {
        s.set(reg, v);
    }
}

/// `reg` is stored to `slot`: remember where a callee-saved register's caller value went.
fn store(s: &mut State, reg: u8, slot: Val) {
    let v = s.reg(reg);
    if let Some(i) = callee_saved_index(reg) {
        if s.saved[i] == Saved::Same {
            s.saved[i] = match slot {
                Val::Cfa(k) => Saved::At(k),
                Val::Anc(k) => Saved::AtAnc(k),
                Val::Unknown => Saved::Same,
            };
        }
    }
    // The first spill of the DRAP register is the one compilers describe; later copies are ignored.
    if v == Val::Cfa(0) {
        if let Val::Anc(a) = slot {
            if s.cfa_slot.is_none() {
                s.cfa_slot = Some(a);
                s.drap_spilled = true;
            } else if s.cfa_slot != Some(a) && s.cfa_slot2.is_none() {
                s.cfa_slot2 = Some(a);
            }
        }
    }
}

/// Write `v` to a register as a new value (not the caller's).
fn assign(s: &mut State, reg: u8, v: Val, why: &'static str) {
    if reg == RSP {
        if v == Val::Unknown {
            s.lose_rsp(why);
        } else {
            s.set(RSP, v);
        }
        return;
    }
    s.clobber(reg);
    s.set(reg, v);
}

fn pop_into(s: &mut State, reg: u8, inc: i64) {
    let slot = s.reg(RSP);
    let after = slot.offset(inc);
    if reg == RSP {
        s.lose_rsp("pop-rsp");
        return;
    }
    load(s, reg, slot);
    s.set(RSP, after);
}

/// Apply `ins` to `s` (flow-independent part). `call` only clobbers caller-saved registers.
pub fn step(s: &mut State, ins: &Instruction, f: &mut InstructionInfoFactory) {
    s.cmp = None;
    let inc = i64::from(ins.stack_pointer_increment());
    match ins.mnemonic() {
        Mnemonic::Push => {
            let slot = s.reg(RSP).offset(inc);
            if let Some(r) = reg64(ins, 0) {
                store(s, r, slot);
            }
            s.set(RSP, slot);
            return;
        }
        Mnemonic::Pop => {
            match reg64(ins, 0) {
                Some(r) => pop_into(s, r, inc),
                None => {
                    // pop to memory or a narrow register
                    if ins.op_kind(0) == OpKind::Register {
                        if let Some(r) = dw(ins.op_register(0)) {
                            s.clobber(r);
                        }
                    }
                    let v = s.reg(RSP).offset(inc);
                    s.set(RSP, v);
                }
            }
            return;
        }
        Mnemonic::Leave => {
            let bp = s.reg(RBP);
            if bp == Val::Unknown {
                s.lose_rsp("leave-unknown-rbp");
                s.clobber(RBP);
                return;
            }
            s.set(RSP, bp);
            pop_into(s, RBP, 8);
            return;
        }
        Mnemonic::Enter => {
            if ins.immediate8_2nd() != 0 {
                s.lose_rsp("enter-nested");
                s.clobber(RBP);
                return;
            }
            let slot = s.reg(RSP).offset(-8);
            store(s, RBP, slot);
            s.set(RSP, slot);
            assign(s, RBP, slot, "");
            let v = slot.offset(-i64::from(ins.immediate16()));
            s.set(RSP, v);
            return;
        }
        Mnemonic::Call => {
            for r in CALL_CLOBBERED {
                s.set(r, Val::Unknown);
            }
            return;
        }
        Mnemonic::Ret | Mnemonic::Retf => return,
        Mnemonic::Add | Mnemonic::Sub => {
            if let Some(r) = reg64(ins, 0) {
                let v = match imm(ins, 1) {
                    Some(d) => s.reg(r).offset(if ins.mnemonic() == Mnemonic::Sub { d.wrapping_neg() } else { d }),
                    None => Val::Unknown,
                };
                assign(s, r, v, "alloca");
                return;
            }
        }
        Mnemonic::Lea => {
            if let Some(r) = reg64(ins, 0) {
                let v = mem_addr(s, ins, 1);
                assign(s, r, v, "rsp-lea");
                return;
            }
        }
        Mnemonic::Mov => {
            if let Some(d) = reg64(ins, 0) {
                if let Some(src) = reg64(ins, 1) {
                    if src != d {
                        let v = s.reg(src);
                        assign(s, d, v, "rsp-mov");
                    }
                    return;
                }
                if ins.op_kind(1) == OpKind::Memory {
                    let slot = mem_addr(s, ins, 1);
                    load(s, d, slot);
                    return;
                }
            } else if ins.op_kind(0) == OpKind::Memory {
                if let Some(src) = reg64(ins, 1) {
                    let slot = mem_addr(s, ins, 0);
                    store(s, src, slot);
                    return;
                }
            }
        }
        Mnemonic::And if reg64(ins, 0) == Some(RSP) => {
            if let (Some(m), v @ (Val::Cfa(_) | Val::Anc(_))) = (imm(ins, 1), s.reg(RSP)) {
                if m < 0 {
                    realign(s, ins.ip(), v, m);
                    return;
                }
            }
            s.lose_rsp("rsp-and");
            return;
        }
        Mnemonic::Cmp => {
            if let (Some(a), Some(b)) = (reg64(ins, 0), reg64(ins, 1)) {
                s.cmp = Some((a, b));
            }
            return;
        }
        _ => {}
    }
    generic(s, ins, f, inc);
}

/// `and $-N,%rsp`: rsp gets a fresh anchor; values relative to the old one are lost.
fn realign(s: &mut State, ip: u64, old: Val, align: i64) {
    for i in 0..16 {
        if matches!(s.regs[i], Val::Anc(_)) {
            s.regs[i] = Val::Unknown;
        }
    }
    for sv in s.saved.iter_mut() {
        if matches!(sv, Saved::AtAnc(_)) {
            *sv = Saved::Lost;
        }
    }
    s.cfa_slot = None;
    s.cfa_slot2 = None;
    s.drap_spilled = false;
    s.anc_from = match old {
        Val::Cfa(k) => u32::try_from(align.checked_neg().unwrap_or(0)).ok().map(|a| (k, a)),
        _ => None,
    };
    s.anchor = ip | 1;
    s.regs[RSP as usize] = Val::Anc(0);
    s.why = "realigned";
}

fn generic(s: &mut State, ins: &Instruction, f: &mut InstructionInfoFactory, inc: i64) {
    let info = f.info(ins);
    let mut rsp_written = false;
    let mut written = [false; 16];
    for u in info.used_registers() {
        if matches!(u.access(), OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite) {
            if let Some(r) = dw(u.register()) {
                if r == RSP {
                    rsp_written = true;
                } else {
                    written[r as usize] = true;
                }
            }
        }
    }
    for (r, w) in written.iter().enumerate() {
        if *w {
            s.clobber(r as u8);
        }
    }
    if rsp_written {
        if ins.is_stack_instruction() {
            let v = s.reg(RSP).offset(inc);
            s.set(RSP, v);
        } else {
            s.lose_rsp("rsp-write");
        }
    }
}
