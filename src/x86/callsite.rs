//! The call instruction that ends exactly at a return address.

use super::decode::{decode, decode_one, read_code, Insn, Reg, Segment};
use crate::memory::{Memory, ReadError};
use iced_x86::{OpKind, Register};

/// The longest x86 instruction.
const MAX_INSN: u64 = 15;
/// How far below the return address a linear sweep from the function start may begin.
pub const MAX_SWEEP: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemOperand {
    pub base: Option<Reg>,
    pub index: Option<Reg>,
    /// 1, 2, 4 or 8.
    pub scale: u8,
    /// The displacement as encoded (for RIP-relative: relative to the next instruction).
    pub disp: i64,
    pub segment: Option<Segment>,
    pub rip_relative: bool,
    /// The address of the pointer when it needs no register: RIP-relative, or an absolute
    /// address without an fs/gs segment (with fs/gs it is an offset in the segment: see `disp`).
    pub absolute: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallTarget {
    Direct(u64),
    Register(Reg),
    /// The callee's address is loaded from this memory operand.
    Memory(MemOperand),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSite {
    pub addr: u64,
    pub len: usize,
    /// AT&T text as gdb's `x/i` shows it (see [`super::format_att`]).
    pub text: String,
    pub target: CallTarget,
}

/// How the instruction boundary at the return address was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// A linear decode from the function start ends an instruction exactly at `ra`.
    Sweep,
    /// No usable start (unknown, too far, unreadable, or undecodable bytes on the way):
    /// the instruction was found by decoding forward from each of the 15 bytes before `ra`.
    Backward,
    /// The sweep from the function start has an instruction at `insn` that runs across
    /// `ra`; the answer comes from the backward search and contradicts the sweep.
    SweepDisagrees { insn: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallCheck {
    Call {
        site: CallSite,
        boundary: Boundary,
    },
    /// No call ends at `ra`; `before` is the instruction that does, if one was found
    /// (its address and text).
    NoCall {
        before: Option<(u64, String)>,
        boundary: Boundary,
    },
}

impl CallCheck {
    pub fn site(&self) -> Option<&CallSite> {
        match self {
            CallCheck::Call { site, .. } => Some(site),
            CallCheck::NoCall { .. } => None,
        }
    }
}

/// Find the call that ends exactly at `ra`.
///
/// `func_start` is the start of the function holding `ra - 1` (not `ra`: after a call to a
/// noreturn function `ra` may already be in the next function). Errors only when the bytes
/// before `ra` cannot be read; the error names the failing address.
pub fn call_before<M: Memory + ?Sized>(mem: &M, ra: u64, func_start: Option<u64>) -> Result<CallCheck, ReadError> {
    enum CallBefore {}
    crate::memory::remembered::<CallBefore, _, _>(mem, (ra, func_start), || decode_call_before(mem, ra, func_start))
}

fn decode_call_before<M: Memory + ?Sized>(mem: &M, ra: u64, func_start: Option<u64>) -> Result<CallCheck, ReadError> {
    let mut sweep_insn = None;
    let mut tail: Option<(u64, Vec<u8>)> = None;
    if let Some(start) = func_start.filter(|&s| s < ra && ra - s <= MAX_SWEEP) {
        // One read for the whole sweep; its end also serves the backward search.
        let mut bytes = vec![0u8; (ra - start) as usize];
        if mem.read(start, &mut bytes).is_ok() {
            match sweep(&bytes, start, ra) {
                Sweep::Lands(i) => return Ok(verdict(i, Boundary::Sweep)),
                Sweep::Across(a) => sweep_insn = Some(a),
                Sweep::Invalid => {}
            }
            if bytes.len() as u64 >= MAX_INSN {
                tail = Some((start, bytes));
            }
        }
    }
    let (lo, bytes) = match tail {
        Some((start, bytes)) => {
            let cut = bytes.len() - MAX_INSN as usize;
            (start + cut as u64, bytes.get(cut..).map(<[u8]>::to_vec).unwrap_or_default())
        }
        None => read_before(mem, ra)?,
    };
    let boundary = match sweep_insn {
        Some(insn) => Boundary::SweepDisagrees { insn },
        None => Boundary::Backward,
    };
    Ok(match backward(&bytes, lo, ra) {
        Some(i) => verdict(i, boundary),
        None => CallCheck::NoCall { before: None, boundary },
    })
}

enum Sweep {
    Lands(Insn),
    /// The instruction starting here runs past `ra`.
    Across(u64),
    Invalid,
}

fn sweep(bytes: &[u8], start: u64, ra: u64) -> Sweep {
    for i in decode(bytes, start, usize::MAX) {
        if !i.is_valid() {
            // Cut off by `ra` (it needed bytes past it), or really undecodable.
            return if truncated(bytes, start, &i) { Sweep::Across(i.addr) } else { Sweep::Invalid };
        }
        if i.end() == Some(ra) {
            return Sweep::Lands(i);
        }
    }
    Sweep::Invalid
}

/// Whether an invalid decode at the end of `bytes` is only cut short: padded, it decodes longer.
fn truncated(bytes: &[u8], start: u64, i: &Insn) -> bool {
    let rest = usize::try_from(i.addr - start).ok().and_then(|off| bytes.get(off..)).unwrap_or_default();
    let mut padded = rest.to_vec();
    padded.extend_from_slice(&[0u8; MAX_INSN as usize]);
    decode_one(&padded, i.addr).is_some_and(|d| d.len > rest.len())
}

/// The up to 15 bytes before `ra`, in one read; a shorter run if the start is unreadable.
fn read_before<M: Memory + ?Sized>(mem: &M, ra: u64) -> Result<(u64, Vec<u8>), ReadError> {
    let lo = ra.saturating_sub(MAX_INSN);
    let len = (ra - lo) as usize;
    if len == 0 {
        return Ok((ra, Vec::new()));
    }
    let mut buf = vec![0u8; len];
    match mem.read(lo, &mut buf) {
        Ok(()) => Ok((lo, buf)),
        // The run may start in an unmapped page below the code: keep the part after it.
        Err(e) if e.addr >= lo && e.addr < ra => {
            let from = (e.addr | (crate::memory::PAGE - 1)).checked_add(1).filter(|&f| f < ra).ok_or(e)?;
            let bytes = read_code(mem, from, (ra - from) as usize)?;
            if bytes.len() as u64 != ra - from {
                return Err(e);
            }
            Ok((from, bytes))
        }
        Err(e) => Err(e),
    }
}

/// Among instructions decoding validly from some byte in `lo..ra` and ending exactly at `ra`,
/// the longest call, else the longest other instruction. A call that only adds prefixes to a
/// shorter one with the same target loses to it: such a byte is far more often the end of the
/// previous instruction (608 against 75 real `cs call`s over 2 MiB of kernel text).
fn backward(bytes: &[u8], lo: u64, ra: u64) -> Option<Insn> {
    let mut calls: Vec<(Insn, CallTarget)> = Vec::new();
    let mut other: Option<Insn> = None;
    for off in 0..bytes.len() {
        let Some(i) = bytes.get(off..).and_then(|b| decode_one(b, lo + off as u64)) else { continue };
        if i.end() != Some(ra) {
            continue;
        }
        // A 67 (address-size) prefix is never compiled into a 64-bit call: it is a stray byte.
        let addr32 = i.instr.memory_base().is_gpr32()
            || i.instr.memory_base() == Register::EIP
            || i.instr.memory_index().is_gpr32();
        match call_target(&i).filter(|_| i.is_near_call() && !addr32) {
            Some(t) => calls.push((i, t)),
            // Offsets go up, so the first fit is the longest.
            None => {
                other.get_or_insert(i);
            }
        }
    }
    // `calls` runs longest first: keep the first whose target no shorter call repeats.
    let pick = calls.iter().enumerate().find(|(k, (_, t))| !calls.iter().skip(k + 1).any(|(_, u)| u == t));
    pick.map(|(_, (i, _))| i.clone()).or(other)
}

fn verdict(i: Insn, boundary: Boundary) -> CallCheck {
    match call_target(&i).filter(|_| i.is_near_call()) {
        Some(target) => {
            CallCheck::Call { site: CallSite { addr: i.addr, len: i.len, text: i.text(), target }, boundary }
        }
        None => CallCheck::NoCall { before: Some((i.addr, i.text())), boundary },
    }
}

/// The target of a near call; None for anything else.
pub fn call_target(i: &Insn) -> Option<CallTarget> {
    let ins = &i.instr;
    match ins.op0_kind() {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => i.near_target.map(CallTarget::Direct),
        OpKind::Register => Reg::from_iced(ins.op0_register()).map(CallTarget::Register),
        OpKind::Memory => mem_operand(ins).map(CallTarget::Memory),
        _ => None,
    }
}

/// The memory operand of a one-operand instruction (`call *...`, `jmp *...`).
pub fn mem_operand(ins: &iced_x86::Instruction) -> Option<MemOperand> {
    let rip = ins.is_ip_rel_memory_operand();
    let base = match ins.memory_base() {
        Register::None | Register::RIP | Register::EIP => None,
        // A 32-bit base (67 prefix) is named by its 64-bit register.
        r => Some(Reg::from_iced(r)?),
    };
    let index = match ins.memory_index() {
        Register::None => None,
        r => Some(Reg::from_iced(r)?),
    };
    let segment = Segment::from_iced(ins.segment_prefix()).filter(|s| s.has_base());
    let raw = ins.memory_displacement64();
    let (disp, absolute) = if rip {
        let abs = ins.ip_rel_memory_address();
        (abs.wrapping_sub(ins.next_ip()) as i64, Some(abs))
    } else if base.is_none() && index.is_none() {
        (raw as i64, if segment.is_some() { None } else { Some(raw) })
    } else {
        (raw as i64, None)
    };
    Some(MemOperand {
        base,
        index,
        scale: u8::try_from(ins.memory_index_scale()).unwrap_or(1),
        disp,
        segment,
        rip_relative: rip,
        absolute,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Regions;
    use std::cell::Cell;

    /// Counts reads, to show the code is fetched in one.
    struct Counting<'a>(&'a Regions, Cell<usize>);
    impl Memory for Counting<'_> {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
            self.1.set(self.1.get() + 1);
            self.0.read(addr, buf)
        }
    }

    const PROLOGUE: [u8; 4] = [0x55, 0x48, 0x89, 0xe5]; // push %rbp; mov %rsp,%rbp

    /// Code at `start` = prologue + `tail`; checks at the end of it, with and without the start.
    fn both(start: u64, tail: &[u8]) -> [CallCheck; 2] {
        let mut code = PROLOGUE.to_vec();
        code.extend_from_slice(tail);
        let mut m = Regions::new();
        m.add(start, code.clone());
        let ra = start + code.len() as u64;
        let run = |fs| call_before(&m, ra, fs).unwrap_or_else(|e| panic!("{e}"));
        [run(Some(start)), run(None)]
    }

    /// The call site both ways, after checking they agree and how the boundary was found.
    fn call(start: u64, tail: &[u8]) -> CallSite {
        match both(start, tail) {
            [CallCheck::Call { site: a, boundary: Boundary::Sweep }, CallCheck::Call { site: b, boundary: Boundary::Backward }] =>
            {
                assert_eq!(a, b);
                a
            }
            other => panic!("{other:?}"),
        }
    }

    fn mem(base: Option<Reg>, index: Option<Reg>, scale: u8, disp: i64) -> MemOperand {
        MemOperand { base, index, scale, disp, segment: None, rip_relative: false, absolute: None }
    }

    #[test]
    fn direct_call() {
        // e8 at 0x401004, rel32 0x100: target 0x401009 + 0x100.
        let s = call(0x401000, &[0xe8, 0x00, 0x01, 0x00, 0x00]);
        assert_eq!((s.addr, s.len), (0x401004, 5));
        assert_eq!(s.target, CallTarget::Direct(0x401109));
        assert_eq!(s.text, "call 0x401109");
        // Backwards across the top of the kernel's address space.
        let s = call(0xffffffff81000000, &[0xe8, 0xf7, 0xff, 0xff, 0xff]);
        assert_eq!(s.target, CallTarget::Direct(0xffffffff81000000));
    }

    #[test]
    fn register_calls() {
        let s = call(0x1000, &[0xff, 0xd0]);
        assert_eq!((s.target, s.text.as_str(), s.len), (CallTarget::Register(Reg::Rax), "call *%rax", 2));
        let s = call(0x1000, &[0x41, 0xff, 0xd3]);
        assert_eq!((s.target, s.text.as_str(), s.len), (CallTarget::Register(Reg::R11), "call *%r11", 3));
    }

    #[test]
    fn seed_call_through_rbx() {
        // kvm_mmu_load+653: `call *0x348(%rbx)`, return address kvm_mmu_load+659.
        let start = 0xffffffffc09a95a0u64;
        let mut code = vec![0x90; 653 - PROLOGUE.len()];
        code.extend_from_slice(&[0xff, 0x93, 0x48, 0x03, 0x00, 0x00]);
        let s = call(start, &code);
        assert_eq!((s.addr, s.len), (0xffffffffc09a982d, 6));
        assert_eq!(s.addr + s.len as u64, 0xffffffffc09a9833);
        assert_eq!(s.text, "call *0x348(%rbx)");
        assert_eq!(s.target, CallTarget::Memory(mem(Some(Reg::Rbx), None, 1, 0x348)));
    }

    #[test]
    fn memory_calls() {
        // call *(%rax); call *0x8(%rax)
        assert_eq!(call(0x1000, &[0xff, 0x10]).target, CallTarget::Memory(mem(Some(Reg::Rax), None, 1, 0)));
        let s = call(0x1000, &[0xff, 0x50, 0x08]);
        assert_eq!(
            (s.text.as_str(), s.target),
            ("call *0x8(%rax)", CallTarget::Memory(mem(Some(Reg::Rax), None, 1, 8)))
        );
        // A kernel table: call *-0x7e1fed60(,%rax,8), i.e. 0xffffffff81e012a0 + rax*8.
        let s = call(0x1000, &[0xff, 0x14, 0xc5, 0xa0, 0x12, 0xe0, 0x81]);
        assert_eq!(s.target, CallTarget::Memory(mem(None, Some(Reg::Rax), 8, 0xffffffff81e012a0u64 as i64)));
        assert_eq!(s.text, "call *-0x7e1fed60(,%rax,8)");
        // SIB with base and index: call *0x10(%rbx,%r12,4)
        let s = call(0x1000, &[0x42, 0xff, 0x54, 0xa3, 0x10]);
        assert_eq!(s.target, CallTarget::Memory(mem(Some(Reg::Rbx), Some(Reg::R12), 4, 0x10)));
    }

    #[test]
    fn rip_relative_and_segment_calls() {
        // ff 15 at 0x1004: next ip 0x100a + 0x2ff6 = the GOT slot 0x4000.
        let s = call(0x1000, &[0xff, 0x15, 0xf6, 0x2f, 0x00, 0x00]);
        let want = MemOperand { rip_relative: true, absolute: Some(0x4000), disp: 0x2ff6, ..mem(None, None, 1, 0) };
        assert_eq!((s.text.as_str(), s.target), ("call *0x4000", CallTarget::Memory(want)));
        // Per-cpu pointer: call *%gs:0x1f00 has no absolute address of its own.
        let s = call(0x1000, &[0x65, 0xff, 0x14, 0x25, 0x00, 0x1f, 0x00, 0x00]);
        let want = MemOperand { segment: Some(Segment::Gs), ..mem(None, None, 1, 0x1f00) };
        assert_eq!((s.text.as_str(), s.target), ("call *%gs:0x1f00", CallTarget::Memory(want)));
        // An absolute address without a segment is the pointer's address.
        let s = call(0x1000, &[0xff, 0x14, 0x25, 0x00, 0x10, 0x00, 0x00]);
        assert_eq!(s.target, CallTarget::Memory(MemOperand { absolute: Some(0x1000), ..mem(None, None, 1, 0x1000) }));
    }

    #[test]
    fn no_call_after_jmp_or_mov() {
        for (tail, text) in [(&[0xeb, 0x02][..], "jmp 0x1008"), (&[0x48, 0x89, 0xc7][..], "mov %rax,%rdi")] {
            for c in both(0x1000, tail) {
                match c {
                    CallCheck::NoCall { before: Some((_, t)), .. } => assert_eq!(t, text),
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn sweep_sees_through_an_immediate_that_looks_like_a_call() {
        // movabs $0xd0ff000000000000,%rax: its last two bytes are `ff d0`.
        let tail = [0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0xd0];
        match both(0x1000, &tail) {
            [CallCheck::NoCall { before: Some((0x1004, t)), boundary: Boundary::Sweep }, CallCheck::Call { site, boundary: Boundary::Backward }] =>
            {
                assert_eq!(t, "movabs $0xd0ff000000000000,%rax");
                assert_eq!(site.text, "call *%rax", "without a start only the suffix is seen");
            }
            other => panic!("{other:?}"),
        }
        // The return address falls inside the movabs: the sweep's verdict is reported against the suffix.
        let mut m = Regions::new();
        m.add(0x1000, [0x48, 0xb8, 0x11, 0x22, 0x33, 0x44, 0xff, 0xd0, 0x55, 0x66]);
        match call_before(&m, 0x1008, Some(0x1000)) {
            Ok(CallCheck::Call { site, boundary: Boundary::SweepDisagrees { insn: 0x1000 } }) => {
                // `44 ff d0` also ends there, but its REX byte adds nothing to `ff d0`.
                assert_eq!((site.addr, site.text.as_str()), (0x1006, "call *%rax"))
            }
            other => panic!("{other:?}"),
        }
    }

    /// for_each_thermal_governor from the kernel fixture (Debian 6.1, vmlinux-text-orc.xz).
    pub(crate) const THERMAL: u64 = 0xffffffff8175a480;
    pub(crate) const THERMAL_CODE: [u8; 128] = [
        0xe8, 0xfb, 0x11, 0x91, 0xff, 0x41, 0x55, 0x49, 0x89, 0xfd, 0x48, 0xc7, 0xc7, 0x00, 0x71, 0xbd, 0x82, 0x41,
        0x54, 0x49, 0x89, 0xf4, 0x55, 0x48, 0x83, 0xec, 0x08, 0xe8, 0xb0, 0x1c, 0x2b, 0x00, 0x48, 0x8b, 0x05, 0x99,
        0xcc, 0x47, 0x01, 0x48, 0x3d, 0x40, 0x71, 0xbd, 0x82, 0x74, 0x48, 0x48, 0x8d, 0x68, 0xd0, 0xeb, 0x10, 0x48,
        0x8b, 0x45, 0x30, 0x48, 0x8d, 0x68, 0xd0, 0x48, 0x3d, 0x40, 0x71, 0xbd, 0x82, 0x74, 0x32, 0x4c, 0x89, 0xe6,
        0x48, 0x89, 0xef, 0x2e, 0xe8, 0x0f, 0x74, 0x6a, 0x00, 0x85, 0xc0, 0x74, 0xe0, 0x48, 0xc7, 0xc7, 0x00, 0x71,
        0xbd, 0x82, 0x89, 0x44, 0x24, 0x04, 0xe8, 0xcb, 0x08, 0x2b, 0x00, 0x8b, 0x44, 0x24, 0x04, 0x48, 0x83, 0xc4,
        0x08, 0x5d, 0x41, 0x5c, 0x41, 0x5d, 0xe9, 0xf9, 0x79, 0x6a, 0x00, 0x31, 0xc0, 0xeb, 0xda, 0x0f, 0x1f, 0x44,
        0x00, 0x00,
    ];

    #[test]
    fn real_kernel_function_matches_objdump() {
        // objdump -d: (offset, length) of every instruction; calls at 0, 27, 75 (cs call), 96.
        let insns = [
            (0, 5),
            (5, 2),
            (7, 3),
            (10, 7),
            (17, 2),
            (19, 3),
            (22, 1),
            (23, 4),
            (27, 5),
            (32, 7),
            (39, 6),
            (45, 2),
            (47, 4),
            (51, 2),
            (53, 4),
            (57, 4),
            (61, 6),
            (67, 2),
            (69, 3),
            (72, 3),
            (75, 6),
            (81, 2),
            (83, 2),
            (85, 7),
            (92, 4),
            (96, 5),
            (101, 4),
            (105, 4),
            (109, 1),
            (110, 2),
            (112, 2),
            (114, 5),
            (119, 2),
            (121, 2),
            (123, 5),
        ];
        let texts = [
            (0, "call 0xffffffff8106b680"),
            (27, "call 0xffffffff81a0c150"),
            (75, "cs call 0xffffffff81e018e0"),
            (96, "call 0xffffffff81a0adb0"),
        ];
        let mut m = Regions::new();
        m.add(THERMAL, THERMAL_CODE);
        for (off, len) in insns {
            let ra = THERMAL + off + len;
            let want = texts.iter().find(|t| t.0 == off).map(|t| t.1);
            match call_before(&m, ra, Some(THERMAL)) {
                Ok(CallCheck::Call { site, boundary: Boundary::Sweep }) => {
                    assert_eq!((site.addr, Some(site.text.as_str())), (THERMAL + off, want))
                }
                Ok(CallCheck::NoCall { before: Some((a, _)), boundary: Boundary::Sweep }) => {
                    assert_eq!((a, want), (THERMAL + off, None))
                }
                other => panic!("+{off}: {other:?}"),
            }
        }
        // Backwards, the cs pad is left out (a lone prefix byte is usually the previous
        // instruction's): the same target, one byte later.
        match call_before(&m, THERMAL + 81, None) {
            Ok(CallCheck::Call { site, boundary: Boundary::Backward }) => {
                assert_eq!((site.addr, site.target), (THERMAL + 76, CallTarget::Direct(0xffffffff81e018e0)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backward_prefers_distinct_longer_calls_and_drops_stray_prefixes() {
        let run = |bytes: &[u8]| {
            let mut m = Regions::new();
            m.add(0x1000, bytes.to_vec());
            match call_before(&m, 0x1000 + bytes.len() as u64, None) {
                Ok(CallCheck::Call { site, .. }) => (site.addr - 0x1000, site.text),
                other => panic!("{other:?}"),
            }
        };
        let pad = [0x90u8; 8];
        // call *-0x2f010000(,%rax,8) ends in `ff d0`: the longer call, another target, wins.
        let b = [&pad[..], &[0xff, 0x14, 0xc5, 0x00, 0x00, 0xff, 0xd0]].concat();
        assert_eq!(run(&b), (8, "call *-0x2f010000(,%rax,8)".to_string()));
        // A REX.W or a 67 byte before a call is taken as the end of something else.
        let b = [&pad[..], &[0x48, 0xe8, 0, 0, 0, 0]].concat();
        assert_eq!(run(&b), (9, "call 0x100e".to_string()));
        let b = [&pad[..], &[0x67, 0xff, 0x15, 0, 0, 0, 0]].concat();
        assert_eq!(run(&b), (9, "call *0x100f".to_string()));
    }

    #[test]
    fn one_read_of_code() {
        let mut m = Regions::new();
        m.add(0x1000, vec![0x90; 0x400]).add(0x1400, [0xff, 0xd0]);
        let c = Counting(&m, Cell::new(0));
        assert!(matches!(call_before(&c, 0x1402, Some(0x1000)), Ok(CallCheck::Call { boundary: Boundary::Sweep, .. })));
        assert_eq!(c.1.get(), 1);
        c.1.set(0);
        assert!(matches!(call_before(&c, 0x1402, None), Ok(CallCheck::Call { boundary: Boundary::Backward, .. })));
        assert_eq!(c.1.get(), 1);
    }

    #[test]
    fn unreadable_or_truncated_code_is_an_error_naming_the_address() {
        let empty = Regions::new();
        assert_eq!(call_before(&empty, 0x5000, Some(0x4f00)), Err(ReadError { addr: 0x4ff1 }));
        // Only three bytes before ra, in the same page: the 15-byte window cannot be read.
        let mut m = Regions::new();
        m.add(0x5ffd, [0x41, 0xff, 0xd3]);
        assert_eq!(call_before(&m, 0x6000, None), Err(ReadError { addr: 0x5ff1 }));
        // Code starting a mapping: the window is cut at the page boundary, and the call still found.
        let mut m = Regions::new();
        m.add(0x6000, [0xe8, 0, 0, 0, 0]);
        let r = call_before(&m, 0x6005, Some(0x6000)).map(|c| c.site().map(|s| s.target.clone()));
        assert_eq!(r, Ok(Some(CallTarget::Direct(0x6005))));
        let r = call_before(&m, 0x6005, None).map(|c| c.site().map(|s| s.target.clone()));
        assert_eq!(r, Ok(Some(CallTarget::Direct(0x6005))));
    }

    #[test]
    fn odd_return_addresses_do_not_panic() {
        let mut m = Regions::new();
        m.add(0, [0xff, 0xd0, 0x90]);
        m.add(u64::MAX - 15, vec![0x90; 16]);
        for ra in [0u64, 1, 2, 3, 15, 0x8000_0000_0000_0000, u64::MAX, u64::MAX - 1] {
            for fs in [None, Some(0), Some(ra.wrapping_sub(4)), Some(u64::MAX)] {
                let _ = call_before(&m, ra, fs);
            }
        }
        assert!(matches!(call_before(&m, 2, Some(0)), Ok(CallCheck::Call { .. })));
        assert!(matches!(call_before(&m, 0, None), Ok(CallCheck::NoCall { before: None, .. })));
        assert!(call_before(&m, 0x8000_0000_0000_0000, None).is_err());
    }
}
