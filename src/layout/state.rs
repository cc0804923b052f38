//! The abstract machine state at one instruction: what each register holds
//! relative to the CFA, and where the callee-saved registers were saved.

use std::fmt;

/// DWARF register numbers (x86-64 psABI); the engine indexes registers by them.
pub const RAX: u8 = 0;
pub const RBX: u8 = 3;
pub const RBP: u8 = 6;
pub const RSP: u8 = 7;
pub const R10: u8 = 10;

/// The callee-saved registers in `Rule::saved` order: rbx rbp r12 r13 r14 r15.
pub const CALLEE_SAVED: [u8; 6] = [3, 6, 12, 13, 14, 15];
pub const CALLEE_SAVED_NAMES: [&str; 6] = ["rbx", "rbp", "r12", "r13", "r14", "r15"];

pub fn reg_name(dw: u8) -> &'static str {
    const N: [&str; 16] =
        ["rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
    N.get(dw as usize).copied().unwrap_or("?")
}

pub fn callee_saved_index(dw: u8) -> Option<usize> {
    CALLEE_SAVED.iter().position(|&r| r == dw)
}

/// A register's value as the engine knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val {
    Unknown,
    /// CFA + k.
    Cfa(i32),
    /// Anchor + k: the anchor is rsp right after an `and $-N,%rsp` realignment,
    /// whose distance to the CFA is not known statically.
    Anc(i32),
}

impl Val {
    pub fn offset(self, d: i64) -> Val {
        let f = |k: i32| i32::try_from(i64::from(k).checked_add(d)?).ok();
        match self {
            Val::Cfa(k) => f(k).map_or(Val::Unknown, Val::Cfa),
            Val::Anc(k) => f(k).map_or(Val::Unknown, Val::Anc),
            Val::Unknown => Val::Unknown,
        }
    }
    fn meet(self, o: Val) -> Val {
        if self == o {
            self
        } else {
            Val::Unknown
        }
    }
}

/// Where a callee-saved register's caller value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The register still holds (or again holds) the caller's value.
    Same,
    /// Saved at CFA + k.
    At(i32),
    /// Saved at anchor + k (inside a realigned frame; not CFA-relative).
    AtAnc(i32),
    /// Overwritten, or paths disagree.
    Lost,
}

impl Saved {
    fn meet(self, o: Saved) -> Saved {
        if self == o {
            self
        } else {
            Saved::Lost
        }
    }
}

/// How to compute the CFA (caller's rsp before its call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cfa {
    Rsp(i64),
    Rbp(i64),
    /// Another register (DWARF number) plus offset: DRAP (`r10`), stack-clash probe loops (`r11`).
    Reg {
        reg: u8,
        off: i64,
    },
    /// CFA = *(reg + off): a DRAP register spilled into the realigned frame.
    Deref {
        reg: u8,
        off: i64,
    },
    Unknown(&'static str),
}

impl fmt::Display for Cfa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = |off: i64| if off < 0 { format!("-{}", off.unsigned_abs()) } else { format!("+{off}") };
        match *self {
            Cfa::Rsp(n) => write!(f, "rsp{}", o(n)),
            Cfa::Rbp(n) => write!(f, "rbp{}", o(n)),
            Cfa::Reg { reg, off } => write!(f, "{}{}", reg_name(reg), o(off)),
            Cfa::Deref { reg, off } => write!(f, "[{}{}]", reg_name(reg), o(off)),
            Cfa::Unknown(why) => write!(f, "unknown({why})"),
        }
    }
}

/// The abstract state before an instruction executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub(crate) regs: [Val; 16],
    pub(crate) saved: [Saved; 6],
    /// Address of the `and` that made the current anchor (0: none).
    pub(crate) anchor: u64,
    /// Anchor-relative stack slots that hold the CFA (DRAP spills; the first is the one used).
    pub(crate) cfa_slot: Option<i32>,
    pub(crate) cfa_slot2: Option<i32>,
    /// The DRAP register was spilled since it last got the CFA: compilers then describe
    /// the CFA through the slot (`DW_OP_breg6 -8; DW_OP_deref`), as outer frames must.
    pub(crate) drap_spilled: bool,
    /// rsp (as CFA + k) before the current anchor's `and $-align,%rsp`, and align:
    /// bounds the realigned frame's size.
    pub(crate) anc_from: Option<(i32, u32)>,
    /// Why rsp is unknown, when it is.
    pub(crate) why: &'static str,
    /// The last instruction was `cmp a,b` of two registers (for stack-probe loops).
    pub(crate) cmp: Option<(u8, u8)>,
}

impl State {
    /// At function entry: the return address is on top, CFA = rsp + 8.
    pub fn entry() -> State {
        let mut regs = [Val::Unknown; 16];
        regs[RSP as usize] = Val::Cfa(-8);
        State {
            regs,
            saved: [Saved::Same; 6],
            anchor: 0,
            cfa_slot: None,
            cfa_slot2: None,
            drap_spilled: false,
            anc_from: None,
            why: "",
            cmp: None,
        }
    }

    /// A state knowing nothing (for code reached in unknown ways).
    pub fn unknown(why: &'static str) -> State {
        State {
            regs: [Val::Unknown; 16],
            saved: [Saved::Lost; 6],
            anchor: 0,
            cfa_slot: None,
            cfa_slot2: None,
            drap_spilled: false,
            anc_from: None,
            why,
            cmp: None,
        }
    }

    pub fn reg(&self, dw: u8) -> Val {
        self.regs.get(dw as usize).copied().unwrap_or(Val::Unknown)
    }

    pub(crate) fn set(&mut self, dw: u8, v: Val) {
        if let Some(r) = self.regs.get_mut(dw as usize) {
            *r = v;
        }
        if dw == RSP && v == Val::Unknown && self.why.is_empty() {
            self.why = "rsp-write";
        }
    }

    /// rsp became unknown for `why`.
    pub(crate) fn lose_rsp(&mut self, why: &'static str) {
        // The first reason sticks: an unknown rsp adjusted again is still unknown for that reason.
        if self.regs[RSP as usize] != Val::Unknown || self.why.is_empty() {
            self.why = why;
        }
        self.regs[RSP as usize] = Val::Unknown;
    }

    /// A register was overwritten with something the engine does not track.
    pub(crate) fn clobber(&mut self, dw: u8) {
        if let Some(i) = callee_saved_index(dw) {
            if self.saved[i] == Saved::Same {
                self.saved[i] = Saved::Lost;
            }
        }
        if dw == RSP {
            self.lose_rsp("rsp-write");
        } else {
            self.set(dw, Val::Unknown);
        }
    }

    /// The state as it enters a tail call: just like a function entry.
    pub fn is_entry_like(&self) -> bool {
        self.reg(RSP) == Val::Cfa(-8)
    }

    /// Component-wise meet of two states reaching one instruction.
    pub(crate) fn meet(&self, o: &State) -> State {
        let mut s = self.clone();
        let same_anchor = self.anchor == o.anchor;
        for i in 0..16 {
            let (a, b) = (self.regs[i], o.regs[i]);
            s.regs[i] = match (a, b) {
                (Val::Anc(_), _) | (_, Val::Anc(_)) if !same_anchor => Val::Unknown,
                _ => a.meet(b),
            };
        }
        for i in 0..6 {
            s.saved[i] = match (self.saved[i], o.saved[i]) {
                (Saved::AtAnc(_), _) | (_, Saved::AtAnc(_)) if !same_anchor => Saved::Lost,
                (a, b) => a.meet(b),
            };
        }
        if !same_anchor || self.cfa_slot != o.cfa_slot {
            s.cfa_slot = None;
        }
        if !same_anchor || self.cfa_slot2 != o.cfa_slot2 {
            s.cfa_slot2 = None;
        }
        s.drap_spilled = self.drap_spilled && o.drap_spilled;
        if !same_anchor || self.anc_from != o.anc_from {
            s.anc_from = None;
        }
        if self.cmp != o.cmp {
            s.cmp = None;
        }
        if s.regs[RSP as usize] == Val::Unknown {
            s.why = match (self.reg(RSP), o.reg(RSP)) {
                (Val::Unknown, _) => self.why,
                (_, Val::Unknown) => o.why,
                _ => "merge-conflict",
            };
        } else {
            s.why = "";
        }
        s
    }

    /// The CFA rule this state implies, written as compilers and objtool write it: rsp
    /// whenever its offset is known (exact in outer frames, where rbp is only a recovered
    /// value), rbp for a frame-pointer frame (rbp pointing at the caller's saved rbp) or
    /// when rsp is not known, the DRAP slot once the DRAP register was spilled.
    pub fn cfa(&self) -> Cfa {
        let rsp = self.reg(RSP);
        if let Val::Cfa(k) = self.reg(RBP) {
            if self.saved[1] == Saved::At(k) || !matches!(rsp, Val::Cfa(_)) {
                return Cfa::Rbp(-i64::from(k));
            }
        }
        if let Val::Cfa(k) = rsp {
            return Cfa::Rsp(-i64::from(k));
        }
        let deref = || {
            let slot = self.cfa_slot?;
            [RBP, RSP].into_iter().find_map(|r| match self.reg(r) {
                Val::Anc(b) => Some(Cfa::Deref { reg: r, off: i64::from(slot) - i64::from(b) }),
                _ => None,
            })
        };
        if self.drap_spilled {
            if let Some(d) = deref() {
                return d;
            }
        }
        for r in 0..16u8 {
            if let Val::Cfa(k) = self.reg(r) {
                return Cfa::Reg { reg: r, off: -i64::from(k) };
            }
        }
        if let Some(d) = deref() {
            return d;
        }
        Cfa::Unknown(if self.why.is_empty() { "untracked" } else { self.why })
    }
}
