//! One function per entry point: build an input from the generator, call the
//! library, check what can be checked against the ground truth. A returned
//! string is a finding (an invariant broken); a panic is caught by the driver.

use stackproof::check::{check, check_crash_task, LiveCpu};
use stackproof::crashbt;
use stackproof::layout::{analyze_with, at_pc, Options};
use stackproof::memory::{BlockCache, Memory, PAGE};
use stackproof::oracle::{eh_frame, image, orc};
use stackproof::regs::annotate::{frame_labels, stack_words, StackWord};
use stackproof::regs::scan::{decode_at, scan_memory, ScanOptions};
use stackproof::regs::{sigframe, Layout};
use stackproof::symbols::Symbols;
use stackproof::unwind::{unwind, Origin, Start};
use stackproof::verify::{FrameIn, FrameKind, Trust};
use stackproof::x86::callsite::{call_before, CallCheck};

use crate::gen::{self, Image, Mem, Rng, KERNEL_STACK, KERNEL_TEXT, USER_STACK, USER_TEXT};

/// Real inputs read once per worker: crash texts and ELF files.
#[derive(Default)]
pub struct Corpus {
    pub texts: Vec<String>,
    pub elves: Vec<Vec<u8>>,
    /// `.eh_frame` sections of the ELF files: (bytes, address).
    pub eh_frames: Vec<(Vec<u8>, u64)>,
}

pub type Target = fn(&mut Rng, &Corpus) -> Vec<String>;

pub const TARGETS: &[(&str, Target)] = &[
    ("layout", layout),
    ("layout-at-pc", layout_at_pc),
    ("call-site", call_site),
    ("unwind", unwinder),
    ("scan", scanner),
    ("decode-at", decode),
    ("annotate", annotate),
    ("check", whole_check),
    ("crash-text", crash_text),
    ("crash-task", crash_task),
    ("elf", elf),
    ("cfi", cfi),
    ("orc", orc_table),
    ("block-cache", block_cache),
];

fn world(rng: &mut Rng) -> (Image, u64, Vec<u64>) {
    let kernel = rng.chance(50);
    let mut img = gen::image(rng, if kernel { KERNEL_TEXT } else { USER_TEXT });
    let base = if rng.chance(3) {
        u64::MAX - rng.below(4) * PAGE - 0xfff // the top of the address space
    } else if kernel {
        KERNEL_STACK
    } else {
        USER_STACK
    } & !7;
    let n = (1 + rng.below(if rng.chance(10) { 4096 } else { 600 })) as usize;
    let n = n.min(((u64::MAX - base) / 8) as usize);
    let words = gen::stack(rng, &img, base, n);
    gen::stack_mem(rng, &mut img.mem, base, &words);
    (img, base, words)
}

fn start_of(rng: &mut Rng, img: &Image, base: u64, n: usize) -> Start {
    let pc = match rng.below(4) {
        0 => rng.next(),
        1 if !img.ras.is_empty() => *rng.pick(&img.ras),
        _ => img.text.0 + rng.below(img.text.1 - img.text.0),
    };
    let sp = match rng.below(5) {
        0 => rng.next(),
        _ => base.saturating_add(8 * rng.below(n as u64 + 1)),
    };
    let mut callee_saved = [None; 6];
    for r in callee_saved.iter_mut() {
        if rng.chance(70) {
            *r = Some(if rng.chance(50) { base.saturating_add(8 * rng.below(n as u64 + 1)) } else { rng.next() });
        }
    }
    Start { pc, sp, callee_saved, scratch: Vec::new() }
}

/// `f` on `mem`, with a memo half of the time.
fn scoped<M: stackproof::memory::Memory, T>(
    rng: &Rng,
    mem: &M,
    f: impl FnOnce(&dyn stackproof::memory::Memory) -> T,
) -> T {
    if rng.chance(50) {
        stackproof::memory::scoped(mem, |m| f(m))
    } else {
        f(mem)
    }
}

fn layout(rng: &mut Rng, _c: &Corpus) -> Vec<String> {
    let base = if rng.chance(50) { USER_TEXT } else { KERNEL_TEXT };
    let len = 1 + rng.below(if rng.chance(5) { 8192 } else { 512 }) as usize;
    let (code, _) = gen::code(rng, base, len, base, base + len as u64);
    let mut opts = Options { ud2_continues: rng.chance(50), ..Options::default() };
    if rng.chance(30) {
        opts.landing_pads.push((base, base + rng.below(len as u64), base + rng.below(len as u64 + 16)));
    }
    if rng.chance(20) {
        opts.return_thunks.push(base + rng.below(len as u64));
    }
    let l = analyze_with(&code, base, &opts);
    for _ in 0..8 {
        let _ = l.rule_at(base.wrapping_add(rng.below(len as u64 + 8)));
    }
    let _ = l.entries_into(base, base + len as u64);
    Vec::new()
}

fn layout_at_pc(rng: &mut Rng, _c: &Corpus) -> Vec<String> {
    let img = gen::image(rng, if rng.chance(50) { USER_TEXT } else { KERNEL_TEXT });
    let mut out = Vec::new();
    scoped(rng, &img.mem, |mem| {
        for _ in 0..4 {
            let pc = match rng.below(3) {
                0 if !img.ras.is_empty() => *rng.pick(&img.ras),
                1 => rng.next(),
                _ => img.text.0 + rng.below(img.text.1 - img.text.0 + 16),
            };
            let _ = at_pc::rule_at(&mem, &img.syms, pc);
        }
    });
    for &(s, _) in &img.funcs {
        if let Some(sym) = img.syms.lookup(s) {
            if let Ok(l) = at_pc::layout_of(&img.mem, &img.syms, &sym) {
                if l.start != sym.start {
                    out.push(format!("layout of {} starts at {:#x}", sym.name, l.start));
                }
            }
        }
    }
    out
}

fn call_site(rng: &mut Rng, _c: &Corpus) -> Vec<String> {
    let img = gen::image(rng, if rng.chance(50) { USER_TEXT } else { KERNEL_TEXT });
    let mut out = Vec::new();
    for _ in 0..4 {
        let ra = if rng.chance(70) && !img.ras.is_empty() {
            *rng.pick(&img.ras)
        } else {
            img.text.0 + rng.below(img.text.1 - img.text.0 + 32)
        };
        let start = match rng.below(3) {
            0 => None,
            1 => img.syms.lookup(ra.wrapping_sub(1)).map(|s| s.start),
            _ => Some(rng.next()),
        };
        if let Ok(CallCheck::Call { site, .. }) = call_before(&img.mem, ra, start) {
            if site.addr.wrapping_add(site.len as u64) != ra {
                out.push(format!("call at {:#x}+{} does not end at {ra:#x}", site.addr, site.len));
            }
            if (0..site.len as u64).any(|i| !img.mem.readable(site.addr + i)) {
                out.push(format!("call at {:#x} decoded from unreadable bytes", site.addr));
            }
        }
    }
    out
}

/// A value said to be read at `addr` is what memory holds there.
fn read_equals(mem: &Mem, addr: u64, value: u64, what: &str, out: &mut Vec<String>) {
    if mem.u64_at(addr) != Some(value) {
        out.push(format!("{what}: {value:#x} said read at {addr:#x}, memory holds {:?}", mem.u64_at(addr)));
    }
}

fn unwinder(rng: &mut Rng, _c: &Corpus) -> Vec<String> {
    let (img, base, words) = world(rng);
    let start = start_of(rng, &img, base, words.len());
    let max = 1 + rng.below(300) as usize;
    let u = scoped(rng, &img.mem, |mem| unwind(&mem, &img.syms, &start, max));
    let mut out = Vec::new();
    if u.frames.len() > max {
        out.push(format!("{} frames for max {max}", u.frames.len()));
    }
    if std::env::var_os("STACKPROOF_FUZZ_SHOW").is_some() {
        for f in &u.frames {
            eprintln!(
                "#{} pc {:#x} sp {:?} slot {:?} {:?} {:?} cfa {:?} {:?}",
                f.frame.level,
                f.frame.pc,
                f.frame.sp.map(|s| format!("{s:#x}")),
                f.frame.slot.map(|s| format!("{s:#x}")),
                f.frame.kind,
                f.frame.trust,
                f.cfa.map(|s| format!("{s:#x}")),
                f.layout_note
            );
        }
        eprintln!("stop {:?}", u.stop);
    }
    let mut seen = std::collections::HashSet::new();
    for f in &u.frames {
        if !seen.insert((f.frame.pc, f.frame.sp, f.frame.kind.as_str())) {
            out.push(format!("frame (pc {:#x}, sp {:?}) twice: a loop was walked", f.frame.pc, f.frame.sp));
            break;
        }
        if let (Some(slot), true) = (f.frame.slot, f.frame.level > 0) {
            read_equals(&img.mem, slot, f.frame.pc, "return address", &mut out);
        }
        for r in f.regs.iter().flatten() {
            if let Origin::Saved { addr, .. } = r.origin {
                read_equals(&img.mem, addr, r.value, "saved register", &mut out);
            }
        }
    }
    out
}

/// The scanner's claims against memory: registers are the words at their slots,
/// unreadable ranges do not read, everything else in the range does.
/// With `exact` (the memory told its ranges) every byte of an unreadable range is checked
/// by sampling; else only its ends (probing may miss a small piece inside).
fn scan_claims(mem: &Mem, lo: u64, hi: u64, exact: bool, scan: &stackproof::regs::Scan, out: &mut Vec<String>) {
    for f in &scan.found {
        check_found(mem, f, out);
    }
    let end = scan.truncated_at.unwrap_or(hi);
    for &(s, e) in &scan.unreadable {
        let inner = if exact { vec![s + (e - s) / 2, s + (e - s) / 3] } else { vec![] };
        for a in [s, e - 1].into_iter().chain(inner) {
            if mem.readable(a) {
                out.push(format!("{a:#x} reported unreadable in [{s:#x}, {e:#x}) reads"));
            }
        }
    }
    let mut a = lo;
    while a < end {
        let inside = scan.unreadable.iter().any(|&(s, e)| a >= s && a < e);
        if !inside && !mem.readable(a) {
            out.push(format!("{a:#x} unreadable but not reported"));
            break;
        }
        a = match a.checked_add(61) {
            Some(n) => n,
            None => break,
        };
    }
}

fn check_found(mem: &Mem, f: &stackproof::regs::Found, out: &mut Vec<String>) {
    let labels = frame_labels(f);
    for (name, value) in &f.regs {
        if f.layout != Layout::PtRegs && !sigframe::GPR_NAMES.contains(name) {
            continue;
        }
        let want = format!("{}.{name}", f.layout.label_prefix());
        if let Some((addr, _)) = labels.iter().find(|(_, l)| *l == want) {
            read_equals(mem, *addr, *value, &want, out);
        }
    }
}

fn scanner(rng: &mut Rng, _c: &Corpus) -> Vec<String> {
    let (img, base, words) = world(rng);
    let len = words.len() as u64 * 8;
    let lo = base.saturating_add(rng.below(len.min(64) + 1) & !7).saturating_sub(rng.below(3) * 8);
    let hi = if rng.chance(5) { u64::MAX } else { base.saturating_add(len + rng.below(3) * 8) };
    let opts = ScanOptions { live_sp: rng.chance(70).then(|| base + rng.below(len + 1)), ..ScanOptions::default() };
    let exact = rng.chance(60);
    let scan = if exact {
        scan_memory(&img.mem, lo, hi, &img.syms, &opts)
    } else {
        scan_memory(&gen::Opaque(&img.mem), lo, hi, &img.syms, &opts)
    };
    let mut out = Vec::new();
    scan_claims(&img.mem, lo, hi.min(lo.saturating_add(1 << 20)), exact, &scan, &mut out);
    out
}

fn decode(rng: &mut Rng, _c: &Corpus) -> Vec<String> {
    let (img, base, words) = world(rng);
    let addr = if rng.chance(10) { u64::MAX - rng.below(400) } else { base + 8 * rng.below(words.len() as u64 + 1) };
    let layout = *rng.pick(&[Layout::PtRegs, Layout::SigFrame, Layout::Ucontext]);
    let mut out = Vec::new();
    if let Ok(f) = decode_at(&img.mem, addr, layout, &img.syms, &ScanOptions::default()) {
        check_found(&img.mem, &f, &mut out);
    }
    out
}

fn annotate(rng: &mut Rng, _c: &Corpus) -> Vec<String> {
    let (img, base, words) = world(rng);
    let lo = if rng.chance(5) { rng.next() } else { base.saturating_sub(rng.below(0x3000)) };
    let hi = if rng.chance(5) { u64::MAX } else { lo.saturating_add(words.len() as u64 * 8 + rng.below(0x3000)) };
    let max = 1 + rng.below(1 << 14);
    let exact = rng.chance(60);
    let (rows, cut) = if exact {
        stack_words(&img.mem, &img.syms, lo, hi, max)
    } else {
        stack_words(&gen::Opaque(&img.mem), &img.syms, lo, hi, max)
    };
    let mut out = Vec::new();
    let mut next = lo;
    for r in &rows {
        match r {
            StackWord::Word { address, value, .. } => {
                read_equals(&img.mem, *address, *value, "annotated word", &mut out);
                next = address + 8;
            }
            StackWord::Unreadable { address, len } => {
                let inner = if exact { vec![address + (len / 16) * 8] } else { vec![] };
                for a in [*address, address + len - 8].into_iter().chain(inner) {
                    if img.mem.u64_at(a).is_some() {
                        out.push(format!("word at {a:#x} said unreadable reads"));
                    }
                }
                next = address + len;
            }
        }
    }
    let words = hi.saturating_sub(lo) / 8;
    match cut {
        Some(c) if c != lo + max * 8 || words <= max => out.push(format!("cut at {c:#x} for max {max}")),
        None if words > max => out.push("not cut".into()),
        _ => {}
    }
    if next != lo + words.min(max) * 8 {
        out.push(format!("rows end at {next:#x}"));
    }
    out
}

fn given_frames(rng: &mut Rng, img: &Image, base: u64, n: usize) -> Vec<FrameIn> {
    let k = rng.below(12) as usize;
    (0..k)
        .map(|i| FrameIn {
            level: i as u32,
            pc: if rng.chance(70) && !img.ras.is_empty() { *rng.pick(&img.ras) } else { rng.next() },
            sp: rng.chance(90).then(|| base.saturating_add(8 * rng.below(n as u64 + 2))),
            slot: rng.chance(30).then(|| base.saturating_add(8 * rng.below(n as u64 + 2))),
            bp: rng.chance(30).then(|| base.saturating_add(8 * rng.below(n as u64 + 2))),
            kind: *rng.pick(&[
                FrameKind::Normal,
                FrameKind::Normal,
                FrameKind::Inline,
                FrameKind::SigTramp,
                FrameKind::TailCall,
                FrameKind::Interrupted,
            ]),
            name: None,
            trust: *rng.pick(&[Trust::Registers, Trust::Cfi, Trust::Scan]),
        })
        .collect()
}

fn whole_check(rng: &mut Rng, _c: &Corpus) -> Vec<String> {
    let (img, base, words) = world(rng);
    let frames = rng.chance(70).then(|| given_frames(rng, &img, base, words.len()));
    let start = rng.chance(70).then(|| start_of(rng, &img, base, words.len()));
    let max = 1 + rng.below(200) as usize;
    let c = check(&img.mem, &img.syms, frames, start.as_ref(), max);
    let mut out = Vec::new();
    for r in &c.reports {
        if let (Some(slot), Some(v)) = (r.slot, r.slot_value) {
            read_equals(&img.mem, slot, v, "slot value", &mut out);
        }
    }
    out
}

fn crash_text(rng: &mut Rng, c: &Corpus) -> Vec<String> {
    let mut text = if c.texts.is_empty() || rng.chance(10) {
        String::from_utf8_lossy(&rng.bytes(rng.below(400) as usize)).into_owned()
    } else {
        let t = rng.pick(&c.texts);
        // a window of a real text, mutated line by line
        let lines: Vec<&str> = t.lines().collect();
        let from = rng.below(lines.len() as u64) as usize;
        let to = (from + 1 + rng.below(80) as usize).min(lines.len());
        lines[from..to].join("\n")
    };
    let mut b = text.into_bytes();
    if rng.chance(80) {
        gen::mutate(rng, &mut b);
    }
    text = String::from_utf8_lossy(&b).into_owned();
    let _ = crashbt::parse(&text);
    let (tasks, _errors) = crashbt::parse_lenient(&text);
    for t in &tasks {
        let _ = crashbt::task_chain(t);
    }
    Vec::new()
}

/// A crash `bt -f`-like text naming slots and return addresses of a synthetic world.
fn crash_task(rng: &mut Rng, _c: &Corpus) -> Vec<String> {
    let (img, base, words) = world(rng);
    let mut text = format!("PID: 1  TASK: {:x}  CPU: 0  COMMAND: \"x\"\n", rng.next());
    for i in 0..rng.below(10) {
        let slot = base.saturating_add(8 * rng.below(words.len() as u64 + 1));
        let ra = match img.mem.u64_at(slot) {
            Some(v) if rng.chance(50) => v,
            _ if !img.ras.is_empty() => *rng.pick(&img.ras),
            _ => rng.next(),
        };
        let name = img.syms.lookup(ra).map_or("??".to_string(), |s| s.name.to_string());
        text.push_str(&format!(" #{i} [{slot:016x}] {name} at {ra:016x}\n"));
        if rng.chance(30) {
            text.push_str(&format!("    {:016x}: {:016x} {:016x}\n", slot, rng.next(), rng.next()));
        }
    }
    let mut out = Vec::new();
    let Ok(tasks) = crashbt::parse(&text) else { return out };
    let live =
        rng.chance(40).then(|| LiveCpu { start: start_of(rng, &img, base, words.len()), user_mode: rng.chance(30) });
    for t in &tasks {
        let reports = check_crash_task(&img.mem, &img.syms, t, live.as_ref(), 1 + rng.below(100) as usize);
        for r in &reports {
            if let (Some(slot), Some(v)) = (r.slot, r.slot_value) {
                read_equals(&img.mem, slot, v, "crash slot value", &mut out);
            }
        }
    }
    out
}

fn elf(rng: &mut Rng, c: &Corpus) -> Vec<String> {
    let mut data = if c.elves.is_empty() || rng.chance(30) {
        let name = *rng.pick(&[
            ".plt",
            ".plt.sec",
            ".plt.got",
            ".text",
            ".eh_frame",
            ".orc_unwind_ip",
            ".rela.plt",
            ".symtab",
        ]);
        let body = rng.bytes(rng.below(512) as usize);
        let size = *rng.pick(&[16, 64, body.len() as u64, u64::MAX, 1 << 40, rng.next()]);
        stackproof::synth::tiny_elf(&[(name, 1, 6, 0x401000, 64, size)], &body)
    } else {
        rng.pick(&c.elves).clone()
    };
    gen::mutate(rng, &mut data);
    let len = data.len();
    if let Ok(img) = image::Image::parse(data.clone()) {
        let funcs = img.functions(&[(0x401000, 0x402000)]);
        if funcs.len() > len / 16 + img.symbols.len() + 1 {
            return vec![format!("{} functions from a {len}-byte file", funcs.len())];
        }
        let _ = img.cfi();
        let _ = img.orc();
        let _ = img.code_pointers();
        let _ = img.call_targets(&funcs[..funcs.len().min(64)]);
    }
    let placement = stackproof::elf::Placement::Bias(rng.next());
    let _ = stackproof::elf::symbols_from_bytes(&data, &placement, None);
    Vec::new()
}

fn cfi(rng: &mut Rng, c: &Corpus) -> Vec<String> {
    // .eh_frame of a real file, mutated, or noise
    let (mut data, addr) = if c.eh_frames.is_empty() || rng.chance(20) {
        (rng.bytes(rng.below(256) as usize), rng.next())
    } else {
        rng.pick(&c.eh_frames).clone()
    };
    gen::mutate(rng, &mut data);
    let _ = eh_frame::eh_frame(&data, addr, addr & !0xfffff, rng.next());
    let _ = eh_frame::debug_frame(&data);
    let _ = eh_frame::landing_pads(&data, rng.next() & 0xffff, rng.below(data.len() as u64 + 8), rng.next());
    Vec::new()
}

fn orc_table(rng: &mut Rng, _c: &Corpus) -> Vec<String> {
    let ip = rng.bytes(rng.below(400) as usize);
    let un = rng.bytes(rng.below(600) as usize);
    let _ = orc::table(&ip, rng.next(), &un);
    Vec::new()
}

fn block_cache(rng: &mut Rng, _c: &Corpus) -> Vec<String> {
    let (img, base, words) = world(rng);
    let mem = &img.mem;
    let cache = BlockCache::new(mem, 1 << (12 + rng.below(6)));
    let mut out = Vec::new();
    for _ in 0..16 {
        let addr = if rng.chance(10) {
            rng.next()
        } else {
            base.wrapping_add(rng.below(words.len() as u64 * 8 + 64)).wrapping_sub(32)
        };
        let n = rng.below(if rng.chance(10) { 3 * PAGE } else { 64 }) as usize;
        let mut buf = vec![0u8; n];
        let got = cache.read(addr, &mut buf);
        let mut truth = vec![0u8; n];
        let want = mem.read(addr, &mut truth);
        match (got, want) {
            (Ok(()), Ok(())) if buf != truth => out.push(format!("read {addr:#x}+{n}: bytes differ from memory")),
            (Ok(()), Err(e)) => out.push(format!("read {addr:#x}+{n} succeeded, memory fails at {:#x}", e.addr)),
            (Err(e), Ok(())) => out.push(format!("read {addr:#x}+{n} failed at {:#x}, memory reads", e.addr)),
            (Err(e), Err(w)) if e.addr != w.addr => {
                out.push(format!("read {addr:#x}+{n} failed at {:#x}, first unreadable is {:#x}", e.addr, w.addr))
            }
            _ => {}
        }
        let p = cache.readable_prefix(addr, n);
        let want = (0..n).take_while(|i| addr.checked_add(*i as u64).is_some_and(|a| mem.readable(a))).count();
        if p.len() != want || p[..] != truth[..p.len().min(truth.len())] && want == n {
            out.push(format!("readable prefix of {addr:#x}+{n}: {} bytes, memory has {want}", p.len()));
        }
    }
    out
}
