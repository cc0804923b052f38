//! x86-64 user `rt_sigframe` and `ucontext` (arch/x86/include/asm/sigframe.h,
//! uapi/asm/sigcontext.h, uapi/asm-generic/ucontext.h):
//!
//! ```text
//! rt_sigframe: +0 pretcode (-> __restore_rt), +8 struct ucontext, +312 siginfo (128 bytes), fp state
//! ucontext:    +0 uc_flags, +8 uc_link, +16 uc_stack {ss_sp, ss_flags (int + pad), ss_size},
//!              +40 sigcontext (256 bytes), +296 uc_sigmask (8 bytes)
//! sigcontext:  r8 r9 r10 r11 r12 r13 r14 r15 rdi rsi rbp rbx rdx rax rcx rsp rip eflags,
//!              cs gs fs ss (u16 each; ss was __pad0 before 4.6), err trapno oldmask cr2 fpstate,
//!              reserved1[8]
//! ```

use super::ptregs::{check_rflags, USER_CS, USER_SS};
use super::{is_user_canonical, word_at, Check};
use crate::memory::{Memory, ReadError};

pub const UCONTEXT_SIZE: u64 = 304;
pub const SIGCONTEXT_OFFSET: u64 = 40;
/// pretcode + ucontext; siginfo follows.
pub const FRAME_SIZE: u64 = 8 + UCONTEXT_SIZE;
pub const SIGINFO_OFFSET: u64 = FRAME_SIZE;
pub const SIGINFO_SIZE: u64 = 128;

/// The sigcontext's general registers, in memory order from +40.
pub const GPR_NAMES: [&str; 18] = [
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx", "rdx", "rax", "rcx", "rsp",
    "rip", "eflags",
];

/// Named 8-byte slots of a ucontext (reserved words left out).
pub const UCONTEXT_FIELDS: [(&str, u64); 30] = [
    ("uc_flags", 0),
    ("uc_link", 8),
    ("uc_stack.ss_sp", 16),
    ("uc_stack.ss_flags", 24),
    ("uc_stack.ss_size", 32),
    ("r8", 40),
    ("r9", 48),
    ("r10", 56),
    ("r11", 64),
    ("r12", 72),
    ("r13", 80),
    ("r14", 88),
    ("r15", 96),
    ("rdi", 104),
    ("rsi", 112),
    ("rbp", 120),
    ("rbx", 128),
    ("rdx", 136),
    ("rax", 144),
    ("rcx", 152),
    ("rsp", 160),
    ("rip", 168),
    ("eflags", 176),
    ("cs/gs/fs/ss", 184),
    ("err", 192),
    ("trapno", 200),
    ("oldmask", 208),
    ("cr2", 216),
    ("fpstate", 224),
    ("uc_sigmask", 296),
];

const UC_FLAGS_KNOWN: u64 = 0x7; // UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
const RFLAGS_IF: u64 = 1 << 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ucontext {
    pub uc_flags: u64,
    pub uc_link: u64,
    pub ss_sp: u64,
    pub ss_flags: u32,
    pub ss_size: u64,
    /// r8 .. eflags, as [`GPR_NAMES`].
    pub gprs: [u64; 18],
    pub cs: u16,
    pub gs: u16,
    pub fs: u16,
    pub ss: u16,
    pub err: u64,
    pub trapno: u64,
    pub oldmask: u64,
    pub cr2: u64,
    pub fpstate: u64,
    pub sigmask: u64,
}

fn w(b: &[u8], off: u64) -> Option<u64> {
    word_at(b, usize::try_from(off).ok()?)
}

impl Ucontext {
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let mut gprs = [0u64; 18];
        for (i, g) in gprs.iter_mut().enumerate() {
            *g = w(b, SIGCONTEXT_OFFSET + i as u64 * 8)?;
        }
        let segs = w(b, 184)?;
        Some(Ucontext {
            uc_flags: w(b, 0)?,
            uc_link: w(b, 8)?,
            ss_sp: w(b, 16)?,
            ss_flags: w(b, 24)? as u32,
            ss_size: w(b, 32)?,
            gprs,
            cs: segs as u16,
            gs: (segs >> 16) as u16,
            fs: (segs >> 32) as u16,
            ss: (segs >> 48) as u16,
            err: w(b, 192)?,
            trapno: w(b, 200)?,
            oldmask: w(b, 208)?,
            cr2: w(b, 216)?,
            fpstate: w(b, 224)?,
            sigmask: w(b, 296)?,
        })
    }

    pub fn read(mem: &dyn Memory, addr: u64) -> Result<Self, ReadError> {
        let mut b = [0u8; UCONTEXT_SIZE as usize];
        mem.read(addr, &mut b)?;
        Self::from_bytes(&b).ok_or(ReadError { addr })
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        self.regs().into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn rip(&self) -> u64 {
        self.gprs[16]
    }
    pub fn rsp(&self) -> u64 {
        self.gprs[15]
    }
    pub fn eflags(&self) -> u64 {
        self.gprs[17]
    }

    pub fn regs(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<(&'static str, u64)> = GPR_NAMES.iter().copied().zip(self.gprs.iter().copied()).collect();
        v.extend([
            ("cs", u64::from(self.cs)),
            ("gs", u64::from(self.gs)),
            ("fs", u64::from(self.fs)),
            ("ss", u64::from(self.ss)),
            ("err", self.err),
            ("trapno", self.trapno),
            ("oldmask", self.oldmask),
            ("cr2", self.cr2),
            ("fpstate", self.fpstate),
            ("uc_flags", self.uc_flags),
            ("uc_sigmask", self.sigmask),
        ]);
        v
    }
}

/// The siginfo area of an rt_sigframe, as found: the kernel writes it only for a
/// handler installed with `SA_SIGINFO` (x64_setup_rt_frame: `if (ksig->ka.sa.sa_flags &
/// SA_SIGINFO) copy_siginfo_to_user(&frame->info, ...)`); otherwise it holds whatever the
/// stack held before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: i32,
    pub errno: i32,
    pub code: i32,
    /// First word of the union: si_addr for faults, si_pid | si_uid << 32 for kill/tkill.
    pub addr: u64,
    /// Whether bytes 48..128 (`si_expansion`) are all zero.
    pub expansion_zero: bool,
}

/// `sizeof(struct kernel_siginfo)`: copy_siginfo_to_user copies this much and clears the rest.
pub const KERNEL_SIGINFO_SIZE: u64 = 48;

/// The largest positive si_code the kernel gives each signal (uapi/asm-generic/siginfo.h NSIG*).
fn max_signal_code(signo: i32) -> i32 {
    match signo {
        4 => 11,  // SIGILL: NSIGILL
        5 => 6,   // SIGTRAP: NSIGTRAP
        7 => 5,   // SIGBUS: NSIGBUS
        8 => 15,  // SIGFPE: NSIGFPE
        11 => 10, // SIGSEGV: NSIGSEGV
        17 => 6,  // SIGCHLD: NSIGCHLD
        29 => 6,  // SIGPOLL: NSIGPOLL
        31 => 2,  // SIGSYS: NSIGSYS
        _ => 0,
    }
}

impl SigInfo {
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let i = |o: usize| -> Option<i32> { Some(i32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?)) };
        let tail = b.get(KERNEL_SIGINFO_SIZE as usize..SIGINFO_SIZE as usize)?;
        Some(SigInfo {
            signo: i(0)?,
            errno: i(4)?,
            code: i(8)?,
            addr: word_at(b, 16)?,
            expansion_zero: tail.iter().all(|&x| x == 0),
        })
    }

    /// Whether this is a siginfo the kernel wrote (Ok), or leftover stack contents (Err: why
    /// not). Decided from the bytes alone: since Linux 4.20 copy_siginfo_to_user copies the
    /// 48-byte kernel_siginfo and clears the 80 bytes after it, so a written siginfo has a
    /// signal number, an si_code the kernel or kill/sigqueue gives that signal, and a zero
    /// tail. A handler without SA_SIGINFO gets none of it.
    pub fn meaningful(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.signo) {
            return Err(format!("si_signo {}: not a signal", self.signo));
        }
        // SI_USER 0, SI_QUEUE -1 .. SI_DETHREAD -7, SI_ASYNCNL -60, SI_KERNEL 0x80.
        let code_ok = (-7..=0).contains(&self.code)
            || self.code == -60
            || self.code == 0x80
            || (self.code > 0 && self.code <= max_signal_code(self.signo));
        if !code_ok {
            return Err(format!("si_code {} is no code of signal {}", self.code, self.signo));
        }
        if !self.expansion_zero {
            return Err("bytes 48..127 are not zero (the kernel clears them)".to_string());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigFrame {
    pub pretcode: u64,
    pub uc: Ucontext,
    /// The siginfo area; None when it was not in the bytes given. Whether the kernel
    /// wrote it: [`SigInfo::meaningful`].
    pub siginfo: Option<SigInfo>,
}

impl SigFrame {
    /// Needs at least [`FRAME_SIZE`] bytes; siginfo is decoded if present.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let uc = Ucontext::from_bytes(b.get(8..)?)?;
        let siginfo = b.get(SIGINFO_OFFSET as usize..).and_then(SigInfo::from_bytes);
        Some(SigFrame { pretcode: w(b, 0)?, uc, siginfo })
    }

    /// One read of pretcode + ucontext + siginfo.
    pub fn read(mem: &dyn Memory, addr: u64) -> Result<Self, ReadError> {
        let mut b = [0u8; (FRAME_SIZE + SIGINFO_SIZE) as usize];
        mem.read(addr, &mut b)?;
        Self::from_bytes(&b).ok_or(ReadError { addr })
    }

    pub fn regs(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![("pretcode", self.pretcode)];
        v.extend(self.uc.regs());
        v
    }
}

/// Validate a ucontext at `uc_addr`.
pub fn check_ucontext(uc: &Ucontext, uc_addr: u64) -> Vec<Check> {
    let mut out = Vec::with_capacity(9);
    let (cs, ss) = (u64::from(uc.cs), u64::from(uc.ss));
    // ss is 0 from kernels that still called it __pad0.
    let seg_ok = cs == USER_CS && (ss == USER_SS || ss == 0);
    out.push(Check::new(
        "segments",
        seg_ok,
        true,
        if seg_ok { 30 } else { 0 },
        format!("cs {cs:#x} / ss {ss:#x}{}", if seg_ok { ": 64-bit user mode" } else { ": not 64-bit user mode" }),
    ));
    out.push(check_rflags(uc.eflags()));
    let if_set = uc.eflags() & RFLAGS_IF != 0;
    out.push(Check::new(
        "interrupt_flag",
        if_set,
        false,
        if if_set { 5 } else { -20 },
        if if_set { "IF set" } else { "IF clear in user mode" },
    ));
    let rip = uc.rip();
    let rip_ok = rip != 0 && is_user_canonical(rip);
    out.push(Check::new("rip", rip_ok, true, if rip_ok { 10 } else { 0 }, format!("{rip:#x}")));
    let rsp = uc.rsp();
    let rsp_ok = rsp != 0 && is_user_canonical(rsp);
    out.push(Check::new("rsp", rsp_ok, true, if rsp_ok { 5 } else { 0 }, format!("{rsp:#x}")));
    // The frame goes below the interrupted sp (and its red zone) unless on a sigaltstack.
    out.push(if rsp > uc_addr {
        Check::new("rsp_above_frame", true, false, 5, "interrupted rsp is above the frame")
    } else if uc.ss_sp != 0 {
        Check::new("rsp_above_frame", true, false, 0, "interrupted rsp is below the frame: frame on a sigaltstack")
    } else {
        Check::new("rsp_above_frame", false, false, -5, "interrupted rsp is below the frame and no sigaltstack")
    });
    let fl_ok = uc.uc_flags & !UC_FLAGS_KNOWN == 0;
    out.push(Check::new(
        "uc_flags",
        fl_ok,
        false,
        if fl_ok { 5 } else { -10 },
        format!("{:#x}{}", uc.uc_flags, if fl_ok { "" } else { ": unknown bits" }),
    ));
    let fp = uc.fpstate;
    // The kernel puts the fp state right after the frame.
    let fp_ok = fp == 0 || (is_user_canonical(fp) && fp > uc_addr && fp - uc_addr < 0x10000);
    out.push(Check::new(
        "fpstate",
        fp_ok,
        false,
        if fp_ok { 3 } else { -10 },
        match (fp, fp_ok) {
            (0, _) => "0: no FPU context".to_string(),
            (_, true) => format!("{fp:#x}: just above the frame"),
            _ => format!("{fp:#x}: not near the frame"),
        },
    ));
    let trap_ok = uc.trapno <= 31;
    out.push(Check::new("trapno", trap_ok, false, if trap_ok { 2 } else { -5 }, format!("{}", uc.trapno)));
    out
}

/// Validate an rt_sigframe at `addr`; `restore_rt` is what pretcode must equal, if known.
pub fn check_sigframe(f: &SigFrame, addr: u64, restore_rt: Option<u64>) -> Vec<Check> {
    let mut out = Vec::with_capacity(12);
    out.push(match restore_rt {
        Some(r) if r == f.pretcode => Check::new("pretcode", true, true, 20, format!("{r:#x}: __restore_rt")),
        Some(r) => Check::new("pretcode", false, true, 0, format!("{:#x}, not __restore_rt {r:#x}", f.pretcode)),
        None => Check::new("pretcode", true, false, 0, format!("{:#x}: __restore_rt unknown", f.pretcode)),
    });
    // get_sigframe() leaves (frame + 8) 16-aligned, as after a call.
    let aligned = addr % 16 == 8;
    out.push(Check::new(
        "alignment",
        aligned,
        false,
        if aligned { 10 } else { -10 },
        if aligned { "starts 8 mod 16, as the kernel places it" } else { "misaligned for a signal frame" },
    ));
    out.extend(check_ucontext(&f.uc, addr.saturating_add(8)));
    // An unwritten siginfo is no evidence against the frame: the handler may lack SA_SIGINFO.
    out.push(match f.siginfo.map(|si| (si, si.meaningful())) {
        Some((si, Ok(()))) => {
            Check::new("siginfo", true, false, 10, format!("signal {}, si_code {}", si.signo, si.code))
        }
        Some((_, Err(why))) => {
            Check::new("siginfo", true, false, 0, format!("no siginfo (handler without SA_SIGINFO?): {why}"))
        }
        None => Check::new("siginfo", false, false, 0, "siginfo beyond the bytes read"),
    });
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::Regions;

    /// A plausible x86-64 rt_sigframe as the kernel writes it (test builder, shared with scan).
    pub(crate) fn synthetic_frame(addr: u64, restore_rt: u64) -> Vec<u64> {
        let mut w = vec![0u64; ((FRAME_SIZE + SIGINFO_SIZE) / 8) as usize];
        w[0] = restore_rt;
        w[1] = 0x7; // uc_flags
        let sc = 1 + 5; // words: pretcode + 5 ucontext header words
        for i in 0..16 {
            w[sc + i] = 0x1000 + i as u64;
        }
        w[sc + 15] = addr + 0x1000; // rsp
        w[sc + 16] = 0x40_1234; // rip
        w[sc + 17] = 0x10246; // eflags
        w[sc + 18] = USER_CS | USER_SS << 48;
        w[sc + 20] = 14; // trapno
        w[sc + 23] = addr + FRAME_SIZE + SIGINFO_SIZE; // fpstate
        w[(SIGINFO_OFFSET / 8) as usize] = 11; // si_signo 11, si_errno 0
        w[(SIGINFO_OFFSET / 8) as usize + 1] = 1; // si_code SEGV_MAPERR
        w
    }

    #[test]
    fn a_signal_frame_starts_only_where_its_ucontext_is() {
        use crate::regs::scan::signal_frame_at;
        use crate::symbols::SymbolTable;
        let at = 0x7ffd_0000_1008u64;
        let mut m = Regions::new();
        m.add_u64s(at - 0x20, &[0x1111; 4]);
        m.add_u64s(at, &synthetic_frame(at, 0x40_0100));
        let syms = SymbolTable::new(vec![]);
        assert_eq!(signal_frame_at(&m, at, &syms), Some(true));
        // whatever the pretcode holds (it is what a lost return address loses)
        m.add_u64s(at, &[0]);
        assert_eq!(signal_frame_at(&m, at, &syms), Some(true));
        // 32 bytes lower, the words there are no ucontext of 64-bit user mode
        assert_eq!(signal_frame_at(&m, at - 0x20, &syms), Some(false));
        assert_eq!(signal_frame_at(&m, 0x1000, &syms), None);
    }

    #[test]
    fn offsets_match_the_kernel_headers() {
        // sigcontext is 256 bytes: 18 gprs, 4 u16 selectors, 5 words, reserved1[8].
        assert_eq!(18 * 8 + 8 + 5 * 8 + 8 * 8, 256);
        assert_eq!(SIGCONTEXT_OFFSET + 256, 296);
        assert_eq!(UCONTEXT_FIELDS.iter().find(|f| f.0 == "rip").map(|f| f.1), Some(168));
        assert_eq!(UCONTEXT_FIELDS.iter().find(|f| f.0 == "uc_sigmask").map(|f| f.1), Some(296));
        assert_eq!(UCONTEXT_SIZE, 296 + 8);
    }

    #[test]
    fn decode_and_check_synthetic_frame() {
        let addr = 0x7ffd_0000_1008;
        let mut m = Regions::new();
        m.add_u64s(addr, &synthetic_frame(addr, 0x40_0100));
        let f = SigFrame::read(&m, addr).unwrap();
        assert_eq!(f.uc.rip(), 0x40_1234);
        assert_eq!(f.uc.rsp(), addr + 0x1000);
        assert_eq!((f.uc.cs, f.uc.ss), (0x33, 0x2b));
        assert_eq!(f.uc.trapno, 14);
        let si = f.siginfo.unwrap();
        assert_eq!((si.signo, si.errno, si.code, si.expansion_zero), (11, 0, 1, true));
        assert_eq!(si.meaningful(), Ok(()));
        assert_eq!(f.uc.get("r8"), Some(0x1000));
        assert_eq!(f.uc.get("rcx"), Some(0x100e));
        let checks = check_sigframe(&f, addr, Some(0x40_0100));
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        let bad = check_sigframe(&f, addr, Some(0x40_0200));
        assert!(bad.iter().any(|c| c.name == "pretcode" && !c.ok && c.required));
        // The bare ucontext decodes the same registers.
        let uc = Ucontext::read(&m, addr + 8).unwrap();
        assert_eq!(uc, f.uc);
        assert!(check_ucontext(&uc, addr + 8).iter().all(|c| c.ok));
    }

    #[test]
    fn short_or_unreadable_input() {
        assert!(SigFrame::from_bytes(&[0u8; 100]).is_none());
        let f = SigFrame::from_bytes(&[0u8; FRAME_SIZE as usize]).unwrap();
        assert_eq!(f.siginfo, None);
        let m = Regions::new();
        assert_eq!(Ucontext::read(&m, 0x1000), Err(ReadError { addr: 0x1000 }));
    }

    fn frame_bytes(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn siginfo_reported_only_when_the_kernel_wrote_it() {
        let addr = 0x7ffd_0000_1008;
        let si = (SIGINFO_OFFSET / 8) as usize;
        let checked = |w: &[u64]| {
            let f = SigFrame::from_bytes(&frame_bytes(w)).unwrap();
            let c = check_sigframe(&f, addr, Some(0x40_0100)).into_iter().find(|c| c.name == "siginfo").unwrap();
            (f, c)
        };
        // SA_SIGINFO: SIGSEGV, SEGV_MAPERR, si_addr, the expansion cleared.
        let mut w = synthetic_frame(addr, 0x40_0100);
        w[si + 2] = 0x10;
        let (f, c) = checked(&w);
        assert_eq!(f.siginfo.map(|s| s.addr), Some(0x10));
        assert_eq!((c.ok, c.score, c.detail.as_str()), (true, 10, "signal 11, si_code 1"));
        // raise(): SI_TKILL (-6), si_pid and si_uid.
        w[si] = 10;
        w[si + 1] = u64::from(-6i32 as u32);
        w[si + 2] = 1000 << 32 | 4242;
        assert_eq!(checked(&w).1.detail, "signal 10, si_code -6");
        // No SA_SIGINFO: leftover stack words, as "signal 32, si_code 32" once was.
        let mut w = synthetic_frame(addr, 0x40_0100);
        w[si] = 0x20;
        w[si + 1] = 0x20;
        w[si + 6] = 0x7fff_ffff_d4f4; // byte 48: past kernel_siginfo
        let (_, c) = checked(&w);
        assert!(c.ok && c.score == 0, "{c:?}");
        assert!(c.detail.starts_with("no siginfo"), "{c:?}");
        assert!(c.detail.contains("si_code 32 is no code of signal 32"), "{c:?}");
        // A plausible header over a dirty tail is leftover too.
        w[si + 1] = 1;
        w[si] = 11;
        let (_, c) = checked(&w);
        assert!(c.detail.contains("bytes 48..127 are not zero"), "{c:?}");
        // An untouched, zeroed stack (a fresh sigaltstack).
        let mut w = synthetic_frame(addr, 0x40_0100);
        w[si] = 0;
        w[si + 1] = 0;
        let (_, c) = checked(&w);
        assert_eq!(c.detail, "no siginfo (handler without SA_SIGINFO?): si_signo 0: not a signal");
        // The frame is accepted either way.
        assert!(check_sigframe(&SigFrame::from_bytes(&frame_bytes(&w)).unwrap(), addr, Some(0x40_0100))
            .iter()
            .all(|c| c.ok));
    }
}
