//! x86-64 kernel `struct pt_regs`: decode and validate one at an address.

use std::fmt;

use super::syscalls::syscall_name;
use super::{is_kernel_canonical, is_user_canonical, words_at, Check};
use crate::memory::{Memory, ReadError};
use crate::symbols::Symbols;

/// Field order, lowest address first (arch/x86/include/asm/ptrace.h).
pub const NAMES: [&str; 21] = [
    "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di", "orig_ax", "ip",
    "cs", "flags", "sp", "ss",
];
pub const WORDS: usize = 21;
pub const SIZE: u64 = 21 * 8;

const ORIG_AX: usize = 15;
const IP: usize = 16;
const CS: usize = 17;
const FLAGS: usize = 18;
const SP: usize = 19;
const SS: usize = 20;

pub const KERNEL_CS: u64 = 0x10;
pub const KERNEL_SS: u64 = 0x18;
pub const USER_CS: u64 = 0x33;
pub const USER32_CS: u64 = 0x23;
pub const USER_SS: u64 = 0x2b;

/// Kernel stacks are THREAD_SIZE aligned (16 KiB since 3.15, 8 KiB before); a user-mode
/// frame sits at the very top.
const MIN_THREAD_SIZE: u64 = 0x2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtRegs {
    pub words: [u64; WORDS],
}

impl PtRegs {
    pub fn from_words(w: &[u64]) -> Option<Self> {
        Some(PtRegs { words: w.get(..WORDS)?.try_into().ok()? })
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Self::from_words(&words_at(b, 0, WORDS)?)
    }

    /// One read of the whole structure.
    pub fn read(mem: &dyn Memory, addr: u64) -> Result<Self, ReadError> {
        let mut b = [0u8; SIZE as usize];
        mem.read(addr, &mut b)?;
        Self::from_bytes(&b).ok_or(ReadError { addr })
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        NAMES.iter().position(|n| *n == name).and_then(|i| self.words.get(i).copied())
    }

    pub fn ip(&self) -> u64 {
        self.words[IP]
    }
    pub fn cs(&self) -> u64 {
        self.words[CS]
    }
    pub fn flags(&self) -> u64 {
        self.words[FLAGS]
    }
    pub fn sp(&self) -> u64 {
        self.words[SP]
    }
    pub fn ss(&self) -> u64 {
        self.words[SS]
    }
    pub fn orig_ax(&self) -> u64 {
        self.words[ORIG_AX]
    }

    /// The hardware iret frame: ip, cs, flags, sp, ss.
    pub fn iret_frame(&self) -> [u64; 5] {
        [self.ip(), self.cs(), self.flags(), self.sp(), self.ss()]
    }

    pub fn regs(&self) -> Vec<(&'static str, u64)> {
        NAMES.iter().copied().zip(self.words.iter().copied()).collect()
    }

    pub fn mode(&self) -> Mode {
        mode_of(self.cs(), self.ss())
    }
}

/// Privilege mode the frame returns to, from its segment pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Kernel,
    User,
    /// 32-bit user code (cs 0x23).
    Compat,
    Invalid,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel",
            Mode::User => "user",
            Mode::Compat => "compat (32-bit user)",
            Mode::Invalid => "invalid",
        }
    }
}

/// Upper bits must be clear: the CPU pushes selectors zero-extended (FRED frames would differ).
pub fn mode_of(cs: u64, ss: u64) -> Mode {
    match (cs, ss) {
        // ss 0: a 64-bit interrupt from user mode loads a null SS; kernel code then runs with it.
        (KERNEL_CS, KERNEL_SS) | (KERNEL_CS, 0) => Mode::Kernel,
        (USER_CS, USER_SS) => Mode::User,
        (USER32_CS, USER_SS) => Mode::Compat,
        _ => Mode::Invalid,
    }
}

/// Which kernel generation's system vector numbers to name `~vector` with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Vectors {
    /// Kernels with MANAGED_IRQ_SHUTDOWN_VECTOR 0xef and LOCAL_TIMER_VECTOR 0xec (late 4.x
    /// on; seed 002's kernel). Since 5.8 IRQ frames hold -1, so this only matters before.
    #[default]
    Modern,
    /// 3.10 (RHEL 7) and early 4.x: LOCAL_TIMER_VECTOR 0xef, no system vectors below 0xf1.
    Legacy,
}

/// `(macro, meaning)` for a system vector, per arch/x86/include/asm/irq_vectors.h.
pub fn vector_name(v: u8, table: Vectors) -> Option<(&'static str, &'static str)> {
    let common = match v {
        0xff => Some(("SPURIOUS_APIC_VECTOR", "spurious APIC interrupt")),
        0xfe => Some(("ERROR_APIC_VECTOR", "APIC error")),
        0xfd => Some(("RESCHEDULE_VECTOR", "reschedule IPI")),
        0xfc => Some(("CALL_FUNCTION_VECTOR", "function call IPI")),
        0xfb => Some(("CALL_FUNCTION_SINGLE_VECTOR", "single function call IPI")),
        0xfa => Some(("THERMAL_APIC_VECTOR", "thermal interrupt")),
        0xf9 => Some(("THRESHOLD_APIC_VECTOR", "MCE threshold interrupt")),
        0xf8 => Some(("REBOOT_VECTOR", "reboot/stop IPI")),
        0xf7 => Some(("X86_PLATFORM_IPI_VECTOR", "platform IPI")),
        0xf6 => Some(("IRQ_WORK_VECTOR", "irq_work IPI")),
        0xf5 => Some(("UV_BAU_MESSAGE", "SGI UV BAU message")),
        0xf4 => Some(("DEFERRED_ERROR_VECTOR", "deferred MCE error")),
        0xf3 => Some(("HYPERVISOR_CALLBACK_VECTOR", "hypervisor callback")),
        0xf2 => Some(("POSTED_INTR_VECTOR", "KVM posted interrupt")),
        0xf1 => Some(("POSTED_INTR_WAKEUP_VECTOR", "KVM posted interrupt wakeup")),
        0x80 => Some(("IA32_SYSCALL_VECTOR", "int $0x80")),
        0x20 => Some(("IRQ_MOVE_CLEANUP_VECTOR", "IRQ move cleanup")),
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    match (table, v) {
        (Vectors::Modern, 0xf0) => Some(("POSTED_INTR_NESTED_VECTOR", "KVM nested posted interrupt")),
        (Vectors::Modern, 0xef) => Some(("MANAGED_IRQ_SHUTDOWN_VECTOR", "managed IRQ shutdown")),
        (Vectors::Modern, 0xee) => Some(("HYPERV_REENLIGHTENMENT_VECTOR", "Hyper-V reenlightenment")),
        (Vectors::Modern, 0xed) => Some(("HYPERV_STIMER0_VECTOR", "Hyper-V stimer0")),
        (Vectors::Modern, 0xec) => Some(("LOCAL_TIMER_VECTOR", "local APIC timer")),
        (Vectors::Legacy, 0xef) => Some(("LOCAL_TIMER_VECTOR", "local APIC timer")),
        (_, 0x30..=0x3f) => Some(("ISA_IRQ_VECTOR", "legacy ISA interrupt")),
        _ => None,
    }
}

/// What `orig_ax` says about how the kernel was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrigAx {
    /// -1: no syscall to restart (exception without error code; IRQs since 5.8's idtentry).
    NotSyscall,
    /// `~vector`: an interrupt on kernels before 5.8.
    Irq {
        vector: u8,
        table: Vectors,
    },
    Syscall {
        nr: u64,
        compat: bool,
    },
    /// An exception's error code (kernel mode, or pre-5.8 kernels).
    ErrorCode(u64),
    Unknown(u64),
}

pub fn decode_orig_ax(v: u64, mode: Mode, table: Vectors) -> OrigAx {
    if v == u64::MAX {
        return OrigAx::NotSyscall;
    }
    let inv = !v;
    if (0x20..=0xff).contains(&inv) {
        return OrigAx::Irq { vector: inv as u8, table };
    }
    match mode {
        Mode::User if syscall_name(v).is_some() => OrigAx::Syscall { nr: v, compat: false },
        // i386 numbers; not named here.
        Mode::Compat if v < 512 => OrigAx::Syscall { nr: v, compat: true },
        // Page-fault and selector error codes fit in 16 bits.
        Mode::Kernel | Mode::User | Mode::Compat if v <= 0xffff => OrigAx::ErrorCode(v),
        _ => OrigAx::Unknown(v),
    }
}

impl OrigAx {
    pub fn is_known(&self) -> bool {
        !matches!(self, OrigAx::Unknown(_))
    }
}

impl fmt::Display for OrigAx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OrigAx::NotSyscall => f.write_str("-1 (no syscall: exception, or IRQ on 5.8+ kernels)"),
            OrigAx::Irq { vector, table } => match vector_name(vector, table) {
                Some((mac, meaning)) => write!(f, "IRQ vector {vector:#x} ({meaning}, {mac})"),
                None => write!(f, "IRQ vector {vector:#x} (device interrupt)"),
            },
            OrigAx::Syscall { nr, compat: true } => write!(f, "compat syscall {nr}"),
            OrigAx::Syscall { nr, compat: false } => match syscall_name(nr) {
                // Small values are also valid exception error codes from user mode.
                Some(n) => write!(f, "syscall {nr} ({n}) or an exception error code"),
                None => write!(f, "syscall {nr}"),
            },
            OrigAx::ErrorCode(e) => write!(f, "exception error code {e:#x}"),
            OrigAx::Unknown(v) => write!(f, "{v:#x} (neither -1, ~vector, syscall nor error code)"),
        }
    }
}

/// What the validator may know besides the frame itself.
pub struct Context<'a> {
    pub symbols: &'a dyn Symbols,
    /// The stack range being scanned, `[lo, hi)`.
    pub stack: Option<(u64, u64)>,
    pub vectors: Vectors,
}

const RFLAGS_MUST_SET: u64 = 1 << 1;
/// Bits 3, 5, 15 and 22..63 are reserved zero; VM (17) cannot be set in long mode.
const RFLAGS_MUST_CLEAR: u64 = (1 << 3) | (1 << 5) | (1 << 15) | (1 << 17) | !((1u64 << 22) - 1);
const RFLAGS_IF: u64 = 1 << 9;

pub fn check_rflags(flags: u64) -> Check {
    let ok = flags & RFLAGS_MUST_SET != 0 && flags & RFLAGS_MUST_CLEAR == 0;
    let detail = if ok {
        format!("{flags:#x}: reserved bits as required")
    } else {
        format!("{flags:#x}: reserved bits wrong (bit 1 must be set; 3, 5, 15, 17, 22-63 clear)")
    };
    Check::new("rflags", ok, true, if ok { 20 } else { 0 }, detail)
}

/// Validate a pt_regs found at `addr`; each check is reported.
pub fn check(r: &PtRegs, addr: u64, ctx: &Context) -> Vec<Check> {
    let mut out = Vec::with_capacity(8);
    let mode = r.mode();
    let (cs, ss) = (r.cs(), r.ss());
    out.push(match mode {
        Mode::Invalid => Check::new(
            "segments",
            false,
            true,
            0,
            format!("cs {cs:#x} / ss {ss:#x}: not a kernel, user or compat pair"),
        ),
        Mode::Kernel if ss == 0 => Check::new(
            "segments",
            true,
            true,
            25,
            format!("cs {cs:#x} / ss 0: kernel mode (null ss after an entry from user)"),
        ),
        m => Check::new("segments", true, true, 30, format!("cs {cs:#x} / ss {ss:#x}: {} mode", m.name())),
    });
    out.push(check_rflags(r.flags()));

    let orig = decode_orig_ax(r.orig_ax(), mode, ctx.vectors);
    let if_set = r.flags() & RFLAGS_IF != 0;
    out.push(match (if_set, mode, orig) {
        (true, _, _) => Check::new("interrupt_flag", true, false, 5, "IF set: interrupts were enabled"),
        // Hardware interrupts are only taken with IF set; user mode cannot clear IF.
        (false, _, OrigAx::Irq { .. }) => {
            Check::new("interrupt_flag", false, false, -20, "IF clear, yet orig_ax says IRQ")
        }
        (false, Mode::User | Mode::Compat, _) => {
            Check::new("interrupt_flag", false, false, -20, "IF clear in user mode")
        }
        (false, _, _) => {
            Check::new("interrupt_flag", true, false, 0, "IF clear: exception, NMI or interrupts-off code")
        }
    });

    let ip = r.ip();
    out.push(match mode {
        Mode::Kernel => match ctx.symbols.lookup(ip) {
            Some(s) if is_kernel_canonical(ip) => {
                Check::new("ip", true, true, 20, format!("{ip:#x} is {}", s.describe(ip)))
            }
            _ => Check::new("ip", false, true, 0, format!("{ip:#x} is not in kernel text")),
        },
        Mode::User | Mode::Compat if ip != 0 && is_user_canonical(ip) => {
            Check::new("ip", true, true, 10, format!("{ip:#x}: canonical user address"))
        }
        _ => Check::new("ip", false, true, 0, format!("{ip:#x}: not a canonical {} address", mode.name())),
    });

    out.push(check_sp(r, addr, mode, ctx));

    out.push(match orig {
        OrigAx::Unknown(_) if mode == Mode::Kernel => {
            Check::new("orig_ax", false, false, -15, format!("{orig}: overwritten, the frame is old"))
        }
        OrigAx::Unknown(_) => Check::new("orig_ax", false, false, -15, orig.to_string()),
        OrigAx::ErrorCode(_) => Check::new("orig_ax", true, false, 3, orig.to_string()),
        _ => Check::new("orig_ax", true, false, 10, orig.to_string()),
    });

    // The CPU aligns rsp to 16 before pushing ss, so the frame starts at 8 mod 16.
    let aligned = addr % 16 == 8;
    out.push(Check::new(
        "alignment",
        aligned,
        false,
        if aligned { 10 } else { -10 },
        if aligned {
            "starts 8 mod 16, as a hardware-aligned frame does"
        } else {
            "starts 0 mod 16: not where the CPU puts a frame"
        },
    ));

    if matches!(mode, Mode::User | Mode::Compat) {
        let top = addr.checked_add(SIZE).is_some_and(|e| e % MIN_THREAD_SIZE == 0);
        out.push(Check::new(
            "stack_top",
            top,
            false,
            if top { 10 } else { 0 },
            if top {
                "ends at an 8/16 KiB boundary: the top of a task stack"
            } else {
                "not at the top of a task stack"
            },
        ));
    }
    out
}

/// Entry code that builds a pt_regs and then calls the C handler (6.x `asm_*`, `entry_*`;
/// 3.x/4.x `*_interrupt`, `page_fault`, `system_call_fastpath`...).
pub fn is_entry_symbol(name: &str) -> bool {
    const NAMED: [&str; 16] = [
        "page_fault",
        "async_page_fault",
        "general_protection",
        "invalid_op",
        "nmi",
        "debug",
        "int3",
        "double_fault",
        "machine_check",
        "ret_from_intr",
        "error_entry",
        "paranoid_entry",
        "irq_entries_start",
        "spurious_entries_start",
        "system_call",
        "ia32_syscall",
    ];
    name.starts_with("asm_")
        || name.starts_with("entry_")
        || name.ends_with("_interrupt")
        || name.ends_with("_fastpath")
        || NAMED.contains(&name)
}

/// The word just below the frame: the return address of the entry stub's call into C,
/// which names the entry path even where orig_ax is -1 (IRQs since 5.8).
pub fn check_entry(below: u64, symbols: &dyn Symbols) -> Check {
    match symbols.lookup(below) {
        Some(s) if is_entry_symbol(s.base_name()) => {
            Check::new("entry", true, false, 10, format!("entered via {}", s.describe(below)))
        }
        Some(s) => Check::new("entry", false, false, 0, format!("word below is {}, not entry code", s.describe(below))),
        None => {
            Check::new("entry", false, false, 0, format!("word below ({below:#x}) is not a return into entry code"))
        }
    }
}

fn check_sp(r: &PtRegs, addr: u64, mode: Mode, ctx: &Context) -> Check {
    let sp = r.sp();
    match mode {
        Mode::Kernel => {
            if !is_kernel_canonical(sp) {
                return Check::new("sp", false, false, -20, format!("{sp:#x}: not a kernel address"));
            }
            let Some(end) = addr.checked_add(SIZE) else {
                return Check::new("sp", false, false, -20, "frame wraps the address space");
            };
            // An interrupt on the current stack: the hardware frame sits just below the old sp.
            if sp >= end && sp - end < 16 {
                return Check::new(
                    "sp",
                    true,
                    false,
                    15,
                    format!("{sp:#x}: just above the frame (old sp, 16-aligned down)"),
                );
            }
            match ctx.stack {
                Some((_, hi)) if sp >= end && sp < hi => {
                    Check::new("sp", true, false, 8, format!("{sp:#x}: above the frame on this stack"))
                }
                Some((lo, _)) if sp >= lo && sp < addr => {
                    Check::new("sp", false, false, -10, format!("{sp:#x}: below the frame on this stack"))
                }
                // IST (NMI, #DF, #MC) and entry stacks hold frames for another stack.
                _ => Check::new("sp", true, false, 2, format!("{sp:#x}: on another stack")),
            }
        }
        Mode::User | Mode::Compat if is_user_canonical(sp) && sp != 0 => {
            Check::new("sp", true, false, 5, format!("{sp:#x}: canonical user address"))
        }
        _ => Check::new("sp", false, false, -20, format!("{sp:#x}: not a canonical {} address", mode.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::{Symbol, SymbolTable};

    #[test]
    fn orig_ax_forms() {
        let t = Vectors::Modern;
        assert_eq!(decode_orig_ax(0xffff_ffff_ffff_ff13, Mode::Kernel, t), OrigAx::Irq { vector: 0xec, table: t });
        assert_eq!(
            decode_orig_ax(!0xecu64, Mode::Kernel, t).to_string(),
            "IRQ vector 0xec (local APIC timer, LOCAL_TIMER_VECTOR)"
        );
        assert!(decode_orig_ax(!0xefu64, Mode::Kernel, Vectors::Legacy).to_string().contains("local APIC timer"));
        assert!(decode_orig_ax(!0xefu64, Mode::Kernel, t).to_string().contains("MANAGED_IRQ_SHUTDOWN"));
        assert!(decode_orig_ax(!0xfdu64, Mode::Kernel, t).to_string().contains("RESCHEDULE_VECTOR"));
        assert_eq!(decode_orig_ax(u64::MAX, Mode::Kernel, t), OrigAx::NotSyscall);
        assert_eq!(decode_orig_ax(0, Mode::User, t), OrigAx::Syscall { nr: 0, compat: false });
        assert!(decode_orig_ax(0, Mode::User, t).to_string().contains("(read)"));
        assert_eq!(decode_orig_ax(2, Mode::Kernel, t), OrigAx::ErrorCode(2));
        assert_eq!(decode_orig_ax(0x1234_5678_9abc, Mode::Kernel, t), OrigAx::Unknown(0x1234_5678_9abc));
        // ~0x10 is not an IRQ vector (exceptions are not entered as ~vector).
        assert!(matches!(decode_orig_ax(!0x10u64, Mode::Kernel, t), OrigAx::Unknown(_)));
    }

    #[test]
    fn entry_stubs() {
        for n in [
            "asm_sysvec_apic_timer_interrupt",
            "entry_SYSCALL_64",
            "apic_timer_interrupt",
            "page_fault",
            "system_call_fastpath",
        ] {
            assert!(is_entry_symbol(n), "{n}");
        }
        for n in ["memcpy", "do_page_fault", "smp_call_function_single", "nmi_handle"] {
            assert!(!is_entry_symbol(n), "{n}");
        }
        let syms = SymbolTable::new(vec![Symbol::new("asm_exc_page_fault", 0xffff_ffff_81c0_0000, 0x30)]);
        assert_eq!(check_entry(0xffff_ffff_81c0_0016, &syms).detail, "entered via asm_exc_page_fault+0x16");
        assert!(!check_entry(0x16, &syms).ok);
    }

    #[test]
    fn rflags_reserved_bits() {
        assert!(check_rflags(0x202).ok);
        assert!(check_rflags(0x10202).ok, "RF is legal");
        assert!(check_rflags(0x46).ok);
        assert!(!check_rflags(0x200).ok, "bit 1 clear");
        assert!(!check_rflags(0x18).ok);
        assert!(!check_rflags(0x202 | 1 << 22).ok);
        assert!(!check_rflags(0x202 | 1 << 15).ok);
        assert!(!check_rflags(u64::MAX).ok);
    }

    #[test]
    fn segment_pairs() {
        assert_eq!(mode_of(0x10, 0x18), Mode::Kernel);
        assert_eq!(mode_of(0x10, 0), Mode::Kernel);
        assert_eq!(mode_of(0x33, 0x2b), Mode::User);
        assert_eq!(mode_of(0x23, 0x2b), Mode::Compat);
        assert_eq!(mode_of(0x33, 0x18), Mode::Invalid);
        assert_eq!(mode_of(0x1_0000_0010, 0x18), Mode::Invalid);
    }

    #[test]
    fn user_frame_at_stack_top_checks_out() {
        let syms = SymbolTable::new(vec![Symbol::new("f", 0xffff_ffff_8100_0000, 0x100)]);
        let ctx = Context { symbols: &syms, stack: None, vectors: Vectors::Modern };
        let mut w = [0u64; WORDS];
        w[ORIG_AX] = 0;
        w[IP] = 0x47b6fd;
        w[CS] = USER_CS;
        w[FLAGS] = 0x246;
        w[SP] = 0x7ffc_9ee6_82c8;
        w[SS] = USER_SS;
        let r = PtRegs::from_words(&w).unwrap();
        let checks = check(&r, 0xffff_c900_0043_bf58, &ctx);
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        assert_eq!(r.get("ss"), Some(0x2b));
        assert_eq!(r.get("nope"), None);
        // The same frame in compat mode: the syscall is not named from the 64-bit table.
        let mut c = r;
        c.words[CS] = USER32_CS;
        let checks = check(&c, 0xffff_c900_0043_bf58, &ctx);
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        assert!(checks.iter().any(|c| c.name == "orig_ax" && c.detail == "compat syscall 0"));
    }

    #[test]
    fn kernel_frame_with_null_ss_and_irq_without_if() {
        let syms = SymbolTable::new(vec![Symbol::new("f", 0xffff_ffff_8100_0000, 0x100)]);
        let ctx = Context {
            symbols: &syms,
            stack: Some((0xffff_c900_0000_0000, 0xffff_c900_0000_4000)),
            vectors: Vectors::Modern,
        };
        let addr = 0xffff_c900_0000_3008;
        let mut w = [0u64; WORDS];
        w[ORIG_AX] = !0xfdu64;
        w[IP] = 0xffff_ffff_8100_0010;
        w[CS] = KERNEL_CS;
        w[FLAGS] = 0x246;
        w[SP] = addr + SIZE + 8;
        w[SS] = 0;
        let r = PtRegs::from_words(&w).unwrap();
        let checks = check(&r, addr, &ctx);
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        assert!(checks.iter().any(|c| c.name == "segments" && c.detail.contains("null ss")));
        // An IRQ cannot arrive with IF clear; sp below the frame cannot be the old sp.
        let mut bad = r;
        bad.words[FLAGS] = 0x46;
        bad.words[SP] = addr - 0x100;
        let checks = check(&bad, addr, &ctx);
        let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        assert_eq!(failed, vec!["interrupt_flag", "sp"]);
        assert!(checks.iter().all(|c| c.ok || !c.required));
        // ip outside any symbol is fatal for a kernel frame.
        let mut bad = r;
        bad.words[IP] = 0xffff_ffff_8200_0000;
        assert!(check(&bad, addr, &ctx).iter().any(|c| c.name == "ip" && !c.ok && c.required));
    }
}
