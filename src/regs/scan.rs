//! Find pt_regs and rt_sigframes in a stack range without being told where.
//!
//! Every 8-aligned position is tried; a candidate survives only if no required check
//! fails. Overlapping survivors are resolved by score so exactly one alignment wins;
//! frames repeating another's iret 5-tuple are copies; frames below the live sp are stale.

use std::collections::HashMap;

use super::ptregs::{self, PtRegs, Vectors};
use super::sigframe::{self, SigFrame, Ucontext};
use super::{is_user_canonical, verdict, word_at, Check, Layout, Status};
use crate::memory::{Memory, ReadError, PAGE};
use crate::symbols::Symbols;

/// Larger ranges are cut here: a stack is at most a few pages, this bounds the allocation.
pub const MAX_SCAN: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The live stack pointer; frames below it are stale.
    pub live_sp: Option<u64>,
    /// Known addresses of `__restore_rt` (a sigframe's pretcode).
    pub restore_rt: Vec<u64>,
    /// Also ask the symbols about each user-address word (is it `__restore_rt`?).
    pub lookup_restore_rt: bool,
    pub vectors: Vectors,
    pub pt_regs: bool,
    pub sigframes: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            live_sp: None,
            restore_rt: Vec::new(),
            lookup_restore_rt: true,
            vectors: Vectors::Modern,
            pt_regs: true,
            sigframes: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub address: u64,
    pub layout: Layout,
    pub status: Status,
    pub regs: Vec<(&'static str, u64)>,
    pub checks: Vec<Check>,
    pub score: i32,
    /// For a copy: the address of the frame it repeats.
    pub copy_of: Option<u64>,
    /// Why the status is what it is (live sp comparison, copy, overwritten slot).
    pub status_reason: String,
    /// One line: mode, ip and how the kernel was entered.
    pub summary: String,
}

impl Found {
    pub fn reg(&self, name: &str) -> Option<u64> {
        self.regs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// First address past the layout (saturating).
    pub fn end(&self) -> u64 {
        self.address.saturating_add(self.layout.size())
    }

    fn overlaps(&self, o: &Found) -> bool {
        self.overlaps_range(o.address, o.layout.size())
    }

    /// Whether the frame shares a byte with `[addr, addr + len)`.
    pub fn overlaps_range(&self, addr: u64, len: u64) -> bool {
        self.address < addr.saturating_add(len) && addr < self.end()
    }

    /// The iret frame for pt_regs; copies share it.
    fn iret_key(&self) -> Option<[u64; 5]> {
        if self.layout != Layout::PtRegs {
            return None;
        }
        Some([self.reg("ip")?, self.reg("cs")?, self.reg("flags")?, self.reg("sp")?, self.reg("ss")?])
    }
}

#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub base: u64,
    pub end: u64,
    pub found: Vec<Found>,
    /// `[start, end)` ranges that could not be read (never treated as zeros).
    pub unreadable: Vec<(u64, u64)>,
    /// Set when the range was longer than [`MAX_SCAN`] and cut there.
    pub truncated_at: Option<u64>,
}

fn detail<'a>(checks: &'a [Check], name: &str) -> &'a str {
    checks.iter().find(|c| c.name == name).map_or("", |c| c.detail.as_str())
}

/// `below`: the word just under the frame, when it was read.
fn pt_regs_found(r: &PtRegs, addr: u64, below: Option<u64>, ctx: &ptregs::Context) -> Found {
    let mut checks = ptregs::check(r, addr, ctx);
    if let Some(b) = below {
        checks.push(ptregs::check_entry(b, ctx.symbols));
    }
    // A live kernel-mode frame always holds an entry value in orig_ax; anything else
    // means later calls reused the slot, so whatever the sp says the frame is old.
    let overwritten = r.mode() == ptregs::Mode::Kernel
        && !ptregs::decode_orig_ax(r.orig_ax(), ptregs::Mode::Kernel, ctx.vectors).is_known();
    let (status, status_reason) = if overwritten {
        (Status::Stale, "orig_ax slot overwritten since the interrupt".to_string())
    } else {
        (Status::Live, String::new())
    };
    let (_, score) = verdict(&checks);
    let via = checks.iter().find(|c| c.name == "entry" && c.ok).map(|c| format!("; {}", c.detail)).unwrap_or_default();
    let summary = format!(
        "{}-mode pt_regs: ip {}; orig_ax {}{via}",
        r.mode().name(),
        detail(&checks, "ip"),
        detail(&checks, "orig_ax")
    );
    Found {
        address: addr,
        layout: Layout::PtRegs,
        status,
        regs: r.regs(),
        checks,
        score,
        copy_of: None,
        status_reason,
        summary,
    }
}

fn sigframe_found(f: &SigFrame, addr: u64, restore_rt: Option<u64>) -> Found {
    let checks = sigframe::check_sigframe(f, addr, restore_rt);
    let (_, score) = verdict(&checks);
    let summary = format!("rt_sigframe: {}; rip {:#x} rsp {:#x}", detail(&checks, "siginfo"), f.uc.rip(), f.uc.rsp());
    Found {
        address: addr,
        layout: Layout::SigFrame,
        status: Status::Live,
        regs: f.regs(),
        checks,
        score,
        copy_of: None,
        status_reason: String::new(),
        summary,
    }
}

fn ucontext_found(uc: &Ucontext, addr: u64) -> Found {
    let checks = sigframe::check_ucontext(uc, addr);
    let (_, score) = verdict(&checks);
    let summary = format!("ucontext: rip {:#x} rsp {:#x}", uc.rip(), uc.rsp());
    Found {
        address: addr,
        layout: Layout::Ucontext,
        status: Status::Live,
        regs: uc.regs(),
        checks,
        score,
        copy_of: None,
        status_reason: String::new(),
        summary,
    }
}

/// Decode the set at `addr` in `layout` or, when None, in the layout the address
/// implies: a kernel stack holds a pt_regs; a user stack an rt_sigframe or a
/// ucontext, the first whose required checks pass. The note says what was chosen.
pub fn decode_chosen(
    mem: &dyn Memory,
    addr: u64,
    layout: Option<Layout>,
    symbols: &dyn Symbols,
    opts: &ScanOptions,
) -> Result<(Found, Option<String>), ReadError> {
    if let Some(l) = layout {
        return Ok((decode_at(mem, addr, l, symbols, opts)?, None));
    }
    if crate::kernel::is_kernel(addr) {
        return Ok((decode_at(mem, addr, Layout::PtRegs, symbols, opts)?, None));
    }
    let first = decode_at(mem, addr, Layout::SigFrame, symbols, opts)?;
    for f in [Ok(first.clone()), decode_at(mem, addr, Layout::Ucontext, symbols, opts)] {
        let f = f?;
        if verdict(&f.checks).0 {
            let note =
                format!("layout {}: a user-space address, and its checks pass (--layout to choose)", f.layout.name());
            return Ok((f, Some(note)));
        }
    }
    let note = format!(
        "layout {}: a user-space address; neither rt_sigframe nor ucontext passes its checks here \
         (--layout pt_regs|sigframe|ucontext to choose)",
        first.layout.name()
    );
    Ok((first, Some(note)))
}

/// Does a signal frame start at `slot` (its pretcode): a ucontext of 64-bit user mode
/// right above it? Says nothing of the registers it holds. None: unreadable.
pub fn signal_frame_at(mem: &dyn Memory, slot: u64, symbols: &dyn Symbols) -> Option<bool> {
    let opts = ScanOptions { lookup_restore_rt: false, ..ScanOptions::default() };
    let f = decode_at(mem, slot, Layout::SigFrame, symbols, &opts).ok()?;
    Some(f.checks.iter().any(|c| c.name == "segments" && c.ok))
}

/// Decode one layout at a given address (no search, no rejection: the checks say how it fares).
pub fn decode_at(
    mem: &dyn Memory,
    addr: u64,
    layout: Layout,
    symbols: &dyn Symbols,
    opts: &ScanOptions,
) -> Result<Found, ReadError> {
    let mut f = match layout {
        Layout::PtRegs => {
            let ctx = ptregs::Context { symbols, stack: None, vectors: opts.vectors };
            let below = addr.checked_sub(8).and_then(|b| mem.read_u64(b).ok());
            pt_regs_found(&PtRegs::read(mem, addr)?, addr, below, &ctx)
        }
        Layout::SigFrame => {
            let mut b = vec![0u8; (sigframe::FRAME_SIZE + sigframe::SIGINFO_SIZE) as usize];
            // siginfo is optional: fall back to the frame alone.
            if mem.read(addr, &mut b).is_err() {
                b.truncate(sigframe::FRAME_SIZE as usize);
                mem.read(addr, &mut b)?;
            }
            let f = SigFrame::from_bytes(&b).ok_or(ReadError { addr })?;
            let known = restore_rt_set(symbols, opts);
            let hit = known.contains(&f.pretcode) || is_restore_rt(symbols, f.pretcode);
            let restore = if hit { Some(f.pretcode) } else { known.first().copied() };
            sigframe_found(&f, addr, restore)
        }
        Layout::Ucontext => ucontext_found(&Ucontext::read(mem, addr)?, addr),
    };
    place(&mut f, opts.live_sp);
    Ok(f)
}

/// Whether `w` is the start of a function named `__restore_rt` (glibc and musl both use it).
fn is_restore_rt(symbols: &dyn Symbols, w: u64) -> bool {
    symbols.lookup(w).is_some_and(|s| s.start == w && s.base_name() == crate::libc::RESTORE_RT)
}

fn restore_rt_set(symbols: &dyn Symbols, opts: &ScanOptions) -> Vec<u64> {
    let mut v = opts.restore_rt.clone();
    if let Some(a) = symbols.address_of(crate::libc::RESTORE_RT) {
        v.push(a);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// All accepted candidates in one readable run of bytes.
fn candidates(
    base: u64,
    bytes: &[u8],
    stack: (u64, u64),
    symbols: &dyn Symbols,
    opts: &ScanOptions,
    restore: &[u64],
    is_restore: &mut HashMap<u64, bool>,
) -> Vec<Found> {
    let mut out = Vec::new();
    let ctx = ptregs::Context { symbols, stack: Some(stack), vectors: opts.vectors };
    let first = ((8 - base % 8) % 8) as usize;
    let mut off = first;
    while let Some(word) = word_at(bytes, off) {
        let Some(addr) = base.checked_add(off as u64) else { break };
        if opts.pt_regs {
            // Cheap prefilter on the segment pair before the full decode.
            let cs = word_at(bytes, off + 17 * 8);
            let ss = word_at(bytes, off + 20 * 8);
            if let (Some(cs), Some(ss)) = (cs, ss) {
                if ptregs::mode_of(cs, ss) != ptregs::Mode::Invalid {
                    if let Some(r) = bytes.get(off..).and_then(PtRegs::from_bytes) {
                        let below = off.checked_sub(8).and_then(|b| word_at(bytes, b));
                        let f = pt_regs_found(&r, addr, below, &ctx);
                        if verdict(&f.checks).0 {
                            out.push(f);
                        }
                    }
                }
            }
        }
        // User text is never below mmap_min_addr (64 KiB): small integers skip the lookup.
        if opts.sigframes && word >= 0x10000 && is_user_canonical(word) {
            let hit = restore.binary_search(&word).is_ok()
                || (opts.lookup_restore_rt && *is_restore.entry(word).or_insert_with(|| is_restore_rt(symbols, word)));
            if hit {
                if let Some(f) = bytes.get(off..).and_then(SigFrame::from_bytes) {
                    let f = sigframe_found(&f, addr, Some(word));
                    if verdict(&f.checks).0 {
                        out.push(f);
                    }
                }
            }
        }
        off += 8;
    }
    out
}

/// Live or stale against the live sp (a frame already known stale stays so).
fn place(f: &mut Found, live_sp: Option<u64>) {
    if f.status != Status::Live {
        return;
    }
    match live_sp {
        Some(sp) if f.address < sp => {
            f.status = Status::Stale;
            f.status_reason = format!("below the live sp {sp:#x}");
        }
        Some(sp) => f.status_reason = format!("at or above the live sp {sp:#x}"),
        None => f.status_reason = "no live sp given".to_string(),
    }
}

/// Pick one alignment among overlapping candidates, then mark copies and stale frames.
fn resolve(mut cands: Vec<Found>, live_sp: Option<u64>) -> Vec<Found> {
    cands.sort_by(|a, b| b.score.cmp(&a.score).then(a.address.cmp(&b.address)));
    let mut kept: Vec<Found> = Vec::new();
    for c in cands {
        let key = c.iret_key();
        // Copies of one iret frame may overlap each other; they are sorted out below.
        let clash = kept.iter().any(|k| k.overlaps(&c) && !(key.is_some() && k.iret_key() == key));
        if !clash {
            kept.push(c);
        }
    }
    // Best first, so the first of each 5-tuple is the frame and the rest are its copies.
    let mut primary: HashMap<[u64; 5], u64> = HashMap::new();
    for f in kept.iter_mut() {
        if let Some(key) = f.iret_key() {
            match primary.get(&key) {
                Some(&p) => {
                    f.status = Status::Copy;
                    f.copy_of = Some(p);
                    f.status_reason = format!("same ip/cs/flags/sp/ss as the frame at {p:#x}");
                    continue;
                }
                None => {
                    primary.insert(key, f.address);
                }
            }
        }
        place(f, live_sp);
    }
    kept.sort_by_key(|f| f.address);
    kept
}

/// Scan bytes already read from `base` (the whole slice is the stack range).
pub fn scan_bytes(base: u64, bytes: &[u8], symbols: &dyn Symbols, opts: &ScanOptions) -> Vec<Found> {
    let end = base.saturating_add(bytes.len() as u64);
    let restore = restore_rt_set(symbols, opts);
    let mut cache = HashMap::new();
    resolve(candidates(base, bytes, (base, end), symbols, opts, &restore, &mut cache), opts.live_sp)
}

/// Read `[lo, hi)` in one request (page by page only if that fails) and scan it.
pub fn scan_memory(mem: &dyn Memory, lo: u64, hi: u64, symbols: &dyn Symbols, opts: &ScanOptions) -> Scan {
    let mut scan = Scan { base: lo, end: hi, ..Scan::default() };
    if hi <= lo {
        return scan;
    }
    let mut hi = hi;
    if hi - lo > MAX_SCAN {
        hi = lo + MAX_SCAN;
        scan.truncated_at = Some(hi);
    }
    let runs = read_runs(mem, lo, hi, &mut scan.unreadable);
    let restore = restore_rt_set(symbols, opts);
    let mut cache = HashMap::new();
    let mut cands = Vec::new();
    for (base, bytes) in &runs {
        cands.extend(candidates(*base, bytes, (lo, hi), symbols, opts, &restore, &mut cache));
    }
    scan.found = resolve(cands, opts.live_sp);
    scan
}

/// Readable runs of `[lo, hi)`; unreadable ranges are recorded, merged.
pub(crate) fn read_runs(mem: &dyn Memory, lo: u64, hi: u64, unreadable: &mut Vec<(u64, u64)>) -> Vec<(u64, Vec<u8>)> {
    let len = (hi - lo) as usize;
    let mut whole = vec![0u8; len];
    if mem.read(lo, &mut whole).is_ok() {
        return vec![(lo, whole)];
    }
    drop(whole);
    let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut a = lo;
    while a < hi {
        let next = (a & !(PAGE - 1)).checked_add(PAGE).map_or(hi, |n| n.min(hi));
        for (start, end, bytes) in page_pieces(mem, a, next) {
            match bytes {
                Some(chunk) => match runs.last_mut() {
                    Some((b, v)) if b.checked_add(v.len() as u64) == Some(start) => v.extend_from_slice(&chunk),
                    _ => runs.push((start, chunk)),
                },
                None => match unreadable.last_mut() {
                    Some((_, e)) if *e == start => *e = end,
                    _ => unreadable.push((start, end)),
                },
            }
        }
        a = next;
    }
    runs
}

/// Readable pieces lying inside an otherwise unreadable stretch are looked for this
/// far apart when the source cannot tell its readable ranges (a smaller one may be missed).
const PROBE_STEP: u64 = 256;

/// `[a, next)` (within one page) as pieces `(start, end, bytes or None if unreadable)`.
/// Exact when the source knows its readable ranges; else a page readable in part gives
/// its readable prefix (up to the address the failed read names) and suffix (bisection)
/// exactly, and pieces in between are probed every [`PROBE_STEP`] bytes.
fn page_pieces(mem: &dyn Memory, a: u64, next: u64) -> Vec<(u64, u64, Option<Vec<u8>>)> {
    let read = |s: u64, e: u64| {
        let mut b = vec![0u8; (e - s) as usize];
        mem.read(s, &mut b).map(|()| b)
    };
    if let Ok(b) = read(a, next) {
        return vec![(a, next, Some(b))];
    }
    let readable = match mem.readable_ranges(a, next) {
        Some(r) => r,
        None => probe_readable(mem, a, next),
    };
    let mut out = Vec::new();
    let mut at = a;
    for (s, e) in readable {
        match read(s, e) {
            Ok(b) => {
                if s > at {
                    out.push((at, s, None));
                }
                out.push((s, e, Some(b)));
                at = e;
            }
            Err(_) => continue,
        }
    }
    if at < next {
        out.push((at, next, None));
    }
    out
}

/// The readable stretches of `[a, next)` found by reading, assuming each is contiguous.
fn probe_readable(mem: &dyn Memory, a: u64, next: u64) -> Vec<(u64, u64)> {
    let reads = |s: u64, e: u64| s < e && mem.read(s, &mut vec![0u8; (e - s) as usize]).is_ok();
    // Where a read from `s` stops (the failing address it names), at most `next`.
    let stops = |s: u64| match mem.read(s, &mut vec![0u8; (next - s) as usize]) {
        Ok(()) => next,
        Err(e) => e.addr.clamp(s, next),
    };
    let mut found = Vec::new();
    let mut known_bad = a; // the first byte of the current unreadable stretch
    let prefix = stops(a);
    if prefix > a {
        found.push((a, prefix));
        known_bad = prefix;
    }
    let mut p = known_bad;
    while p < next {
        // the next probe point past the stretch known unreadable, and the page's last byte
        p = (p / PROBE_STEP + 1).saturating_mul(PROBE_STEP).min(next - 1).max(p + 1).min(next);
        if p >= next || !reads(p, p + 1) {
            if p >= next - 1 {
                break;
            }
            continue;
        }
        // a piece holding p: its start by bisection (bad below, good at p), its end from a read
        let (mut bad, mut good) = (known_bad, p);
        while good - bad > 1 {
            let mid = bad + (good - bad) / 2;
            if reads(mid, p + 1) {
                good = mid;
            } else {
                bad = mid;
            }
        }
        let end = stops(good);
        found.push((good, end));
        known_bad = end;
        p = end;
    }
    found
}
