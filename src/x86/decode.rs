//! The one decode routine the x86 checks share, register names, and gdb-like AT&T text.

use crate::memory::{Memory, ReadError, PAGE};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Formatter, GasFormatter, Instruction, Register};

/// A general-purpose register, numbered as DWARF numbers them (0 = rax .. 15 = r15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reg {
    Rax,
    Rdx,
    Rcx,
    Rbx,
    Rsi,
    Rdi,
    Rbp,
    Rsp,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

const REGS: [Reg; 16] = [
    Reg::Rax,
    Reg::Rdx,
    Reg::Rcx,
    Reg::Rbx,
    Reg::Rsi,
    Reg::Rdi,
    Reg::Rbp,
    Reg::Rsp,
    Reg::R8,
    Reg::R9,
    Reg::R10,
    Reg::R11,
    Reg::R12,
    Reg::R13,
    Reg::R14,
    Reg::R15,
];

impl Reg {
    /// gdb's name (`$rbx`) without the `$`.
    pub fn name(self) -> &'static str {
        match self {
            Reg::Rax => "rax",
            Reg::Rdx => "rdx",
            Reg::Rcx => "rcx",
            Reg::Rbx => "rbx",
            Reg::Rsi => "rsi",
            Reg::Rdi => "rdi",
            Reg::Rbp => "rbp",
            Reg::Rsp => "rsp",
            Reg::R8 => "r8",
            Reg::R9 => "r9",
            Reg::R10 => "r10",
            Reg::R11 => "r11",
            Reg::R12 => "r12",
            Reg::R13 => "r13",
            Reg::R14 => "r14",
            Reg::R15 => "r15",
        }
    }

    pub fn dwarf(self) -> u16 {
        self as u16
    }

    pub fn from_dwarf(n: u16) -> Option<Reg> {
        REGS.get(usize::from(n)).copied()
    }

    pub fn from_name(name: &str) -> Option<Reg> {
        let name = name.strip_prefix('%').unwrap_or(name);
        REGS.iter().copied().find(|r| r.name() == name)
    }

    /// Any width of a general-purpose register (`eax`, `r11d`) maps to its 64-bit whole.
    pub fn from_iced(r: Register) -> Option<Reg> {
        let full = r.full_register();
        if !full.is_gpr64() {
            return None;
        }
        let i = (full as u32).checked_sub(Register::RAX as u32)?;
        // iced orders rax rcx rdx rbx rsp rbp rsi rdi r8..r15; DWARF orders rax rdx rcx rbx rsi rdi rbp rsp.
        const ICED: [Reg; 16] = [
            Reg::Rax,
            Reg::Rcx,
            Reg::Rdx,
            Reg::Rbx,
            Reg::Rsp,
            Reg::Rbp,
            Reg::Rsi,
            Reg::Rdi,
            Reg::R8,
            Reg::R9,
            Reg::R10,
            Reg::R11,
            Reg::R12,
            Reg::R13,
            Reg::R14,
            Reg::R15,
        ];
        ICED.get(i as usize).copied()
    }
}

impl std::fmt::Display for Reg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
}

impl Segment {
    pub fn from_iced(r: Register) -> Option<Segment> {
        Some(match r {
            Register::ES => Segment::Es,
            Register::CS => Segment::Cs,
            Register::SS => Segment::Ss,
            Register::DS => Segment::Ds,
            Register::FS => Segment::Fs,
            Register::GS => Segment::Gs,
            _ => return None,
        })
    }

    /// fs and gs have a base of their own in 64-bit mode; the others are flat.
    pub fn has_base(self) -> bool {
        matches!(self, Segment::Fs | Segment::Gs)
    }
}

/// How control leaves an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Next,
    Call,
    IndirectCall,
    Jump,
    CondJump,
    IndirectJump,
    Return,
    /// int3, ud2, syscall, xbegin and the like.
    Other,
    /// Bytes that do not decode (or are cut off by the end of the buffer).
    Invalid,
}

/// One decoded instruction.
#[derive(Debug, Clone)]
pub struct Insn {
    pub addr: u64,
    pub len: usize,
    pub flow: Flow,
    /// The destination of a direct call or jump.
    pub near_target: Option<u64>,
    pub instr: Instruction,
}

impl Insn {
    /// The address just past the instruction; None if it would wrap.
    pub fn end(&self) -> Option<u64> {
        self.addr.checked_add(self.len as u64)
    }

    pub fn text(&self) -> String {
        format_att(&self.instr)
    }

    pub fn is_valid(&self) -> bool {
        self.flow != Flow::Invalid
    }

    pub fn is_near_call(&self) -> bool {
        self.instr.is_call_near() || self.instr.is_call_near_indirect()
    }
}

fn flow_of(i: &Instruction) -> Flow {
    if i.is_invalid() {
        return Flow::Invalid;
    }
    match i.flow_control() {
        FlowControl::Next => Flow::Next,
        FlowControl::Call => Flow::Call,
        FlowControl::IndirectCall => Flow::IndirectCall,
        FlowControl::UnconditionalBranch => Flow::Jump,
        FlowControl::ConditionalBranch => Flow::CondJump,
        FlowControl::IndirectBranch => Flow::IndirectJump,
        FlowControl::Return => Flow::Return,
        _ => Flow::Other,
    }
}

fn insn(i: Instruction) -> Insn {
    let flow = flow_of(&i);
    let near_target = match flow {
        Flow::Call | Flow::Jump | Flow::CondJump
            if i.is_call_near() || i.is_jmp_short_or_near() || i.is_jcc_short_or_near() =>
        {
            Some(i.near_branch_target())
        }
        _ => None,
    };
    Insn { addr: i.ip(), len: i.len(), flow, near_target, instr: i }
}

/// Decode `bytes` (code at `addr`) front to back, invalid stretches included as `Flow::Invalid`.
/// At most `max` instructions.
pub fn decode(bytes: &[u8], addr: u64, max: usize) -> Vec<Insn> {
    let mut d = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut i = Instruction::default();
    while d.can_decode() && out.len() < max {
        d.decode_out(&mut i);
        // Stop rather than wrap past the top of the address space.
        if i.ip().checked_add(i.len() as u64).is_none() {
            break;
        }
        out.push(insn(i));
    }
    out
}

/// The first instruction of `bytes`, if it decodes validly.
pub fn decode_one(bytes: &[u8], addr: u64) -> Option<Insn> {
    decode(bytes, addr, 1).into_iter().next().filter(Insn::is_valid)
}

/// Read `len` bytes of code at `addr` in one read; if that fails inside the range,
/// keep what is readable before the failure (code at the end of a mapping).
/// Fails only when nothing at `addr` is readable.
pub fn read_code<M: Memory + ?Sized>(mem: &M, addr: u64, len: usize) -> Result<Vec<u8>, ReadError> {
    let mut buf = vec![0u8; len];
    let Err(e) = mem.read(addr, &mut buf) else { return Ok(buf) };
    // Cut at the failing address; a source that names only the start of the read is cut at the page.
    let cut = if e.addr > addr { e.addr } else { (addr | (PAGE - 1)).checked_add(1).ok_or(e)? };
    let keep = usize::try_from(cut - addr).map_err(|_| e)?;
    if keep >= len {
        return Err(e);
    }
    buf.truncate(keep);
    mem.read(addr, &mut buf)?;
    Ok(buf)
}

/// AT&T text close to gdb's `x/i`: `call *0x348(%rbx)`, `call 0xffffffff81000000`,
/// RIP-relative operands as absolute addresses.
pub fn format_att(instr: &Instruction) -> String {
    thread_local! {
        static FMT: std::cell::RefCell<GasFormatter> = std::cell::RefCell::new(gas());
    }
    let mut out = String::new();
    FMT.with(|f| f.borrow_mut().format(instr, &mut out));
    // iced writes `callq *mem`, `retq`; gdb 13 (binutils 2.40) writes `call`, `ret`.
    let branch = matches!(
        instr.flow_control(),
        FlowControl::Call
            | FlowControl::IndirectCall
            | FlowControl::UnconditionalBranch
            | FlowControl::IndirectBranch
            | FlowControl::Return
    );
    // binutils always writes the scale of an index (`(%rbx,%rax,1)`); iced leaves out `,1`.
    if instr.memory_index() != Register::None && instr.memory_index_scale() == 1 {
        let idx = format!(",%{})", format!("{:?}", instr.memory_index()).to_lowercase());
        if let Some(at) = out.find(&idx) {
            out.insert_str(at + idx.len() - 1, ",1");
        }
    }
    // gcc's `-mindirect-branch-cs-prefix` pads thunk calls with cs; binutils shows it, iced does not.
    if branch && instr.segment_prefix() == Register::CS && !out.starts_with("cs ") {
        out.insert_str(0, "cs ");
    }
    if branch {
        for (q, plain) in [("callq", "call"), ("jmpq", "jmp"), ("retq", "ret")] {
            if let Some(at) = out.find(q).filter(|&at| matches!(out.as_bytes().get(at + q.len()), None | Some(b' '))) {
                out.replace_range(at..at + q.len(), plain);
                break;
            }
        }
    }
    out
}

fn gas() -> GasFormatter {
    let mut f = GasFormatter::new();
    let o = f.options_mut();
    o.set_hex_prefix("0x");
    o.set_hex_suffix("");
    o.set_uppercase_hex(false);
    o.set_small_hex_numbers_in_decimal(false);
    o.set_show_branch_size(false);
    o.set_gas_show_mnemonic_size_suffix(false);
    o.set_rip_relative_addresses(false);
    o.set_branch_leading_zeros(false);
    o.set_leading_zeros(false);
    o.set_first_operand_char_index(0);
    o.set_show_useless_prefixes(true);
    o.set_show_zero_displacements(true);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8], addr: u64) -> String {
        decode_one(bytes, addr).map(|i| i.text()).unwrap_or_default()
    }

    #[test]
    fn gdb_like_text() {
        assert_eq!(text(&[0xff, 0x93, 0x48, 0x03, 0, 0], 0xffffffffc09a982d), "call *0x348(%rbx)");
        assert_eq!(text(&[0x48, 0x89, 0xfb], 0), "mov %rdi,%rbx");
        // e8 with rel32 -5 jumps to itself.
        assert_eq!(text(&[0xe8, 0xfb, 0xff, 0xff, 0xff], 0xffffffff81000000), "call 0xffffffff81000000");
        // RIP-relative: next ip 0x1006 + 0x100.
        assert_eq!(text(&[0xff, 0x15, 0x00, 0x01, 0, 0], 0x1000), "call *0x1106");
        assert_eq!(text(&[0xff, 0x50, 0x08], 0), "call *0x8(%rax)");
        assert_eq!(text(&[0xc3], 0), "ret");
        assert_eq!(text(&[0xeb, 0xfe], 0x40), "jmp 0x40");
        assert_eq!(text(&[0x41, 0xff, 0xe3], 0), "jmp *%r11");
        // As binutils writes them: `,1` scales, encoded zero displacements, the cs pad of thunk calls.
        assert_eq!(text(&[0x48, 0x8d, 0x44, 0x15, 0x00], 0), "lea 0x0(%rbp,%rdx,1),%rax");
        assert_eq!(text(&[0x0f, 0x1f, 0x44, 0x00, 0x00], 0), "nopl 0x0(%rax,%rax,1)");
        assert_eq!(text(&[0x2e, 0xe8, 0x0f, 0x74, 0x6a, 0x00], 0xffffffff8175a4cb), "cs call 0xffffffff81e018e0");
    }

    #[test]
    fn registers_map_to_dwarf_numbers() {
        assert_eq!(Reg::from_iced(Register::R11D), Some(Reg::R11));
        assert_eq!(Reg::from_iced(Register::RBX).map(Reg::dwarf), Some(3));
        assert_eq!(Reg::from_iced(Register::RSP).map(Reg::dwarf), Some(7));
        assert_eq!(Reg::from_iced(Register::RIP), None);
        assert_eq!(Reg::from_name("%r15"), Some(Reg::R15));
        assert_eq!(Reg::from_dwarf(16), None);
    }

    #[test]
    fn decode_stops_at_truncation_without_panic() {
        let v = decode(&[0x90, 0xe8, 0x00], 0x10, 16);
        assert_eq!(v.len(), 2);
        assert_eq!(v.get(1).map(|i| i.flow), Some(Flow::Invalid));
        assert!(decode(&[], 0, 16).is_empty());
        assert!(decode(&[0x90, 0x90], u64::MAX - 1, 16).len() <= 1);
    }
}
