//! Register sets saved on a stack: the kernel's `struct pt_regs` and the user-space
//! `rt_sigframe` / `ucontext` a signal handler runs on.
//!
//! Every decoder reports its checks one by one so the caller can show why a candidate
//! was taken; nothing here reads target memory word by word.
//!
//! - [`scan::scan_memory`] / [`scan::scan_bytes`]: find frames in a stack range ->
//!   [`scan::Found`] (address, layout, live/stale/copy and why, registers, checks, score).
//! - [`scan::decode_at`]: one layout at a given address (`--layout pt_regs|sigframe|ucontext`).
//! - [`ptregs`], [`sigframe`]: the decoders and their checks; [`annotate`]: labelled rows.

pub mod annotate;
#[cfg(test)]
mod fixture_tests;
pub mod ptregs;
pub mod ranges;
pub mod scan;
#[cfg(test)]
mod scan_tests;
pub mod sigframe;
pub mod syscalls;

pub use scan::{scan_bytes, scan_memory, Found, Scan, ScanOptions};

/// One validation step on a candidate register set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// A failed required check rejects the candidate outright.
    pub required: bool,
    /// What this check added to the candidate's score (negative when it counts against).
    pub score: i32,
    pub detail: String,
}

impl Check {
    pub(crate) fn new(name: &'static str, ok: bool, required: bool, score: i32, detail: impl Into<String>) -> Self {
        Check { name, ok, required, score, detail: detail.into() }
    }
}

/// Whether no required check failed, and the summed score.
/// A decoded register's name in the one naming front-ends see, `user_regs_struct`'s
/// ([`crate::corefile::USER_REGS`], gdb's amd64 names): pt_regs' `bx` is `rbx`, its
/// `flags` `eflags`; None for a name outside it.
pub fn user_name(name: &str) -> Option<&'static str> {
    let full = match name {
        "ax" => "rax",
        "bx" => "rbx",
        "cx" => "rcx",
        "dx" => "rdx",
        "si" => "rsi",
        "di" => "rdi",
        "bp" => "rbp",
        "sp" => "rsp",
        "ip" => "rip",
        "flags" => "eflags",
        "orig_ax" => "orig_rax",
        n => n,
    };
    crate::corefile::USER_REGS.iter().copied().find(|n| *n == full)
}

pub fn verdict(checks: &[Check]) -> (bool, i32) {
    let accepted = checks.iter().all(|c| c.ok || !c.required);
    (accepted, checks.iter().map(|c| c.score).sum())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    PtRegs,
    SigFrame,
    Ucontext,
}

impl Layout {
    /// A layout by the name a user gives it (`sigframe` for `rt_sigframe` too); Err: the
    /// line saying which names there are.
    pub fn from_name(name: &str) -> Result<Layout, String> {
        match name {
            "pt_regs" => Ok(Layout::PtRegs),
            "sigframe" | "rt_sigframe" => Ok(Layout::SigFrame),
            "ucontext" => Ok(Layout::Ucontext),
            other => Err(format!("unknown layout {other} (pt_regs, sigframe, ucontext)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::PtRegs => "pt_regs",
            Layout::SigFrame => "rt_sigframe",
            Layout::Ucontext => "ucontext",
        }
    }

    /// Prefix of the labels on its stack words (`pt_regs.ip`, `sigframe.rip`).
    pub fn label_prefix(self) -> &'static str {
        match self {
            Layout::PtRegs => "pt_regs",
            Layout::SigFrame => "sigframe",
            Layout::Ucontext => "ucontext",
        }
    }

    /// Bytes the layout covers (for the sigframe: without siginfo and fp state).
    pub fn size(self) -> u64 {
        match self {
            Layout::PtRegs => ptregs::SIZE,
            Layout::SigFrame => sigframe::FRAME_SIZE,
            Layout::Ucontext => sigframe::UCONTEXT_SIZE,
        }
    }

    /// Every named 8-byte slot of the layout with its offset (for labelling stack words).
    pub fn fields(self) -> Vec<(&'static str, u64)> {
        match self {
            Layout::PtRegs => ptregs::NAMES.iter().enumerate().map(|(i, n)| (*n, i as u64 * 8)).collect(),
            Layout::SigFrame => std::iter::once(("pretcode", 0))
                .chain(sigframe::UCONTEXT_FIELDS.iter().map(|&(n, o)| (n, o + 8)))
                .chain([("si_signo/si_errno", sigframe::SIGINFO_OFFSET), ("si_code", sigframe::SIGINFO_OFFSET + 8)])
                .collect(),
            Layout::Ucontext => sigframe::UCONTEXT_FIELDS.to_vec(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// At or above the live stack pointer: part of the running chain.
    Live,
    /// Below the live stack pointer: left over from an earlier interrupt or signal.
    Stale,
    /// Same iret 5-tuple as a better candidate elsewhere (NMI entry keeps copies).
    Copy,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Live => "live",
            Status::Stale => "stale",
            Status::Copy => "copy",
        }
    }
}

/// A user-half address under 4-level paging (the common case; keeps user checks strict).
pub(crate) fn is_user_canonical(a: u64) -> bool {
    a < 0x0000_8000_0000_0000
}

/// A kernel-half address, 4- or 5-level paging (LA57 puts stacks and the direct map below 0xffff8...).
pub(crate) fn is_kernel_canonical(a: u64) -> bool {
    a >> 56 == 0xff
}

/// Little-endian u64 at byte offset `off`, if all 8 bytes are there.
pub(crate) fn word_at(bytes: &[u8], off: usize) -> Option<u64> {
    let end = off.checked_add(8)?;
    let b: [u8; 8] = bytes.get(off..end)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// Words of `bytes` from `off`, exactly `n` of them or None.
pub(crate) fn words_at(bytes: &[u8], off: usize, n: usize) -> Option<Vec<u64>> {
    (0..n).map(|i| word_at(bytes, off.checked_add(i.checked_mul(8)?)?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_halves() {
        assert!(is_user_canonical(0x7fff_ffff_f000));
        assert!(!is_user_canonical(0x8000_0000_0000));
        assert!(is_kernel_canonical(0xffff_8880_0000_0000));
        assert!(is_kernel_canonical(0xff11_0000_0000_0000), "LA57 direct map");
        assert!(!is_kernel_canonical(0xfe00_0000_0000_0000));
        assert!(!is_kernel_canonical(0x0000_8000_0000_0000));
        assert!(!is_kernel_canonical(0xfeff_ffff_ffff_ffff));
    }

    #[test]
    fn every_decoded_name_has_its_user_regs_name() {
        // pt_regs and sigframe registers are all in user_regs_struct, by one name each.
        for n in ptregs::NAMES.iter().chain(sigframe::GPR_NAMES.iter()) {
            assert!(user_name(n).is_some(), "{n}");
        }
        assert_eq!(user_name("bx"), Some("rbx"));
        assert_eq!(user_name("flags"), Some("eflags"));
        assert_eq!(user_name("orig_ax"), Some("orig_rax"));
        assert_eq!(user_name("r12"), Some("r12"));
        assert_eq!(user_name("uc_flags"), None);
    }

    #[test]
    fn words_never_panic_past_the_end() {
        let b = [1u8; 12];
        assert_eq!(word_at(&b, 0), Some(0x0101_0101_0101_0101));
        assert_eq!(word_at(&b, 5), None);
        assert_eq!(word_at(&b, usize::MAX), None);
        assert_eq!(words_at(&b, 0, 2), None);
    }
}
