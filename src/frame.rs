//! The frame model: a frame as given ([`FrameIn`]: its kind and how far it is
//! trusted), and a frame of the own chain: what is known of its callee-saved
//! registers and where each came from, how a lost frame was rebuilt. The unwinder
//! makes these, the resolver and the reports read them.

use crate::layout::CALLEE_SAVED_NAMES;

/// How the debugger (or a text) presented a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Normal,
    /// A function inlined into the next outer frame: same pc and sp, no slot of its own.
    Inline,
    /// A frame gdb synthesised for a function that left by `jmp`: no slot.
    TailCall,
    /// The signal trampoline: its "return address" was written by the kernel.
    SigTramp,
    /// The pc an exception or interrupt stopped (crash's `[exception RIP: ...]`): no slot, no call.
    Interrupted,
}

impl FrameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Normal => "normal",
            FrameKind::Inline => "inline",
            FrameKind::TailCall => "tailcall",
            FrameKind::SigTramp => "sigtramp",
            FrameKind::Interrupted => "interrupted",
        }
    }
}

/// Where a chain came from, which decides how far each frame is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Registers,
    Layout,
    Cfi,
    FramePointer,
    Scan,
}

impl Trust {
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Registers => "registers",
            Trust::Layout => "layout",
            Trust::Cfi => "cfi",
            Trust::FramePointer => "frame-pointer",
            Trust::Scan => "scan",
        }
    }
}

/// One frame as given: level 0 is innermost.
#[derive(Debug, Clone)]
pub struct FrameIn {
    pub level: u32,
    pub pc: u64,
    /// The frame's stack pointer (gdb's `$sp` in that frame).
    pub sp: Option<u64>,
    /// Where its return address is claimed to be; when None it is `sp - 8` for frames above 0.
    pub slot: Option<u64>,
    /// The frame's rbp when known (an exception frame's, or recovered): for rbp-based layouts.
    pub bp: Option<u64>,
    pub kind: FrameKind,
    /// The name the source gave (gdb's or crash's), shown when no symbol is known.
    pub name: Option<String>,
    pub trust: Trust,
}

/// Where a recovered register value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Given with the starting registers.
    Registers,
    /// Saved at `addr` by the prologue of the frame at `by_level` (the callee), at `insn`.
    Saved { addr: u64, by_level: u32, insn: Option<(u64, String)> },
    /// A register set saved on the stack at `addr` (`pt_regs`, `rt_sigframe`).
    RegisterSet { addr: u64, layout: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegValue {
    pub value: u64,
    pub origin: Origin,
}

/// The callee-saved registers (rbx rbp r12 r13 r14 r15) of a frame; None: unknown.
pub type CalleeSaved = [Option<RegValue>; 6];

/// A frame of the unwound chain with what is known of its registers.
#[derive(Debug, Clone)]
pub struct Frame {
    pub frame: FrameIn,
    pub regs: CalleeSaved,
    /// The CFA its layout gave, when it did.
    pub cfa: Option<u64>,
    /// Why the next frame could not be found by the layout (when it was not).
    pub layout_note: Option<String>,
    /// Made up where memory no longer holds it (its slot is then null).
    pub rebuilt: Option<Rebuilt>,
    /// The return addresses a rebuilt frame's pc is one of, when its caller has several
    /// calls that fit, all with one frame layout (a callback called from each branch of
    /// a sort loop): the function and the frame are known, not which call; `pc` is the
    /// first. Empty: the pc is known.
    pub candidates: Vec<u64>,
}

/// How a frame of the own chain was rebuilt where its return address is not in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuilt {
    /// Its return address was lost: its caller's call that can stand there.
    Lost,
    /// Taken instead of a stale return address after an indirect call (check.rs then
    /// calls the backtrace's frame there `stale-ra`).
    Stale,
    /// A signal handler's lost return address: a signal frame starts at its slot.
    Trampoline,
}

impl Rebuilt {
    pub fn note(self) -> &'static str {
        match self {
            Rebuilt::Lost => "its return address was lost; rebuilt from its caller's call",
            Rebuilt::Stale => "the return address there is a stale one; rebuilt from its caller's call",
            Rebuilt::Trampoline => "its return address was lost; a signal frame starts there",
        }
    }
}

/// Unwound frames and, when the chain ended early, why.
pub struct Unwound {
    pub frames: Vec<Frame>,
    pub stop: Option<String>,
}

/// The starting registers.
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub pc: u64,
    pub sp: u64,
    /// rbx rbp r12 r13 r14 r15 when known.
    pub callee_saved: [Option<u64>; 6],
    /// Other general-purpose registers when known (rax, rcx, ...): at pc 0 after a NULL
    /// call nothing has run since the call, so they are its operands' values.
    pub scratch: Vec<(crate::x86::Reg, u64)>,
}

/// A callee-saved register of a frame as front-ends show it.
pub struct RegisterRow {
    pub name: &'static str,
    pub value: Option<u64>,
    /// Where the value came from ([`describe_origin_as`]), or `rbx unknown`.
    pub origin: String,
    /// The slot a callee saved it in, when it did.
    pub saved_at: Option<u64>,
}

/// Each callee-saved register of `regs`, in [`CALLEE_SAVED_NAMES`] order, the saving
/// frames numbered as `levels` numbers them (None: the chain's own levels).
pub fn register_rows(regs: &CalleeSaved, levels: Option<&std::collections::HashMap<u32, u32>>) -> Vec<RegisterRow> {
    regs.iter()
        .enumerate()
        .map(|(i, r)| {
            let name = CALLEE_SAVED_NAMES.get(i).copied().unwrap_or("?");
            match r {
                Some(v) => RegisterRow {
                    name,
                    value: Some(v.value),
                    origin: describe_origin_as(i, v, levels),
                    saved_at: match v.origin {
                        Origin::Saved { addr, .. } => Some(addr),
                        _ => None,
                    },
                },
                None => RegisterRow { name, value: None, origin: format!("{name} unknown"), saved_at: None },
            }
        })
        .collect()
}

/// `rbx = 0x... saved at 0x... by 'push %rbx' at 0x... (frame #N)`.
pub fn describe_origin(i: usize, r: &RegValue) -> String {
    describe_origin_as(i, r, None)
}

/// [`describe_origin`] with the saving frame numbered as `levels` (the chain's level ->
/// a backtrace's) numbers it: `#?` for a frame the backtrace does not have.
pub fn describe_origin_as(i: usize, r: &RegValue, levels: Option<&std::collections::HashMap<u32, u32>>) -> String {
    let name = CALLEE_SAVED_NAMES.get(i).copied().unwrap_or("?");
    let level = |l: &u32| match levels {
        None => l.to_string(),
        Some(m) => m.get(l).map_or_else(|| "?".to_string(), u32::to_string),
    };
    match &r.origin {
        Origin::Registers => format!("{name} = {:#x} from the starting registers", r.value),
        Origin::Saved { addr, by_level, insn: Some((at, text)) } => {
            format!("{name} = {:#x} saved at {addr:#x} by '{text}' at {at:#x} (frame #{})", r.value, level(by_level))
        }
        Origin::Saved { addr, by_level, insn: None } => {
            format!("{name} = {:#x} saved at {addr:#x} (frame #{})", r.value, level(by_level))
        }
        Origin::RegisterSet { addr, layout } => format!("{name} = {:#x} from the {layout} at {addr:#x}", r.value),
    }
}
