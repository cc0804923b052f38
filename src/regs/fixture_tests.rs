//! Scans of the real kernel fixtures (/work/shared/fixtures/kernel), compared with what
//! crash 8.0.6 (`bt -e -a`) and drgn 0.3.0 report. Skipped when the fixtures are absent.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSegment};

use super::ptregs;
use super::scan::{scan_memory, Found, Scan, ScanOptions};
use super::{Layout, Status};
use crate::elf::{load_symbols, Placement};
use crate::memory::Regions;
use crate::symbols::SymbolTable;

const FIXTURES: &str = "/work/shared/fixtures/kernel";
const THREAD_SIZE: u64 = 0x4000;

fn skip(why: &str) {
    eprintln!("skip: {why}");
}

/// `xz -dc` into a per-user temp dir once; renamed into place so parallel tests agree.
fn unxz(src: &Path, name: &str) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join("stackproof-regs-fixtures");
    let dst = dir.join(name);
    if dst.metadata().is_ok_and(|m| m.len() > 0) {
        return Some(dst);
    }
    fs::create_dir_all(&dir).ok()?;
    let out = Command::new("xz").arg("-dc").arg(src).output().ok()?;
    if !out.status.success() || out.stdout.is_empty() {
        return None;
    }
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    fs::write(&tmp, &out.stdout).ok()?;
    fs::rename(&tmp, &dst).ok()?;
    Some(dst)
}

/// Every PT_LOAD of the mini core, by virtual address.
fn core_memory(path: &Path) -> Regions {
    let data = fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let mut m = Regions::new();
    for seg in file.segments() {
        let bytes = seg.data().unwrap();
        if !bytes.is_empty() {
            m.add(seg.address(), bytes.to_vec());
        }
    }
    m
}

struct Scenario {
    mem: Regions,
    syms: SymbolTable,
    /// Per CPU: the live rsp.
    cpu_sp: Vec<u64>,
    dir: PathBuf,
}

fn load(name: &str) -> Option<Scenario> {
    let root = Path::new(FIXTURES);
    let dir = root.join(name);
    if !dir.is_dir() {
        skip(&format!("{} absent", dir.display()));
        return None;
    }
    let Some(core) = unxz(&dir.join("minicore.elf.xz"), &format!("{name}-minicore.elf")) else {
        skip("cannot decompress the mini core (xz missing?)");
        return None;
    };
    let Some(vmlinux) = unxz(&root.join("vmlinux.sym.xz"), "vmlinux.sym") else {
        skip("cannot decompress vmlinux.sym");
        return None;
    };
    let kaslr = fs::read_to_string(dir.join("kaslr.txt")).unwrap();
    let off = u64::from_str_radix(kaslr.trim().trim_start_matches("KERNELOFFSET="), 16).unwrap();
    let syms = SymbolTable::new(load_symbols(&vmlinux, &Placement::Bias(off), None).unwrap());
    let manifest = fs::read_to_string(dir.join("manifest.json")).unwrap();
    // "RSP": "ffff..." once per CPU, in CPU order; no JSON crate needed for that.
    let cpu_sp = manifest
        .match_indices("\"RSP\": \"")
        .map(|(i, m)| u64::from_str_radix(&manifest[i + m.len()..i + m.len() + 16], 16).unwrap())
        .collect();
    Some(Scenario { mem: core_memory(&core), syms, cpu_sp, dir })
}

/// crash's name for a pt_regs field.
fn crash_name(n: &str) -> Option<&'static str> {
    Some(match n {
        "RIP" => "ip",
        "RSP" => "sp",
        "RFLAGS" => "flags",
        "RAX" => "ax",
        "RBX" => "bx",
        "RCX" => "cx",
        "RDX" => "dx",
        "RSI" => "si",
        "RDI" => "di",
        "RBP" => "bp",
        "R8" => "r8",
        "R9" => "r9",
        "R10" => "r10",
        "R11" => "r11",
        "R12" => "r12",
        "R13" => "r13",
        "R14" => "r14",
        "R15" => "r15",
        "ORIG_RAX" => "orig_ax",
        "CS" => "cs",
        "SS" => "ss",
        _ => return None,
    })
}

/// `(frame address, kernel mode?, registers)` from `bt -e -a`, with the task's CPU.
fn crash_frames(text: &str) -> Vec<(u64, bool, usize, HashMap<&'static str, u64>)> {
    let mut out = Vec::new();
    let mut cpu = 0usize;
    for line in text.lines() {
        if let Some(i) = line.find("CPU: ") {
            cpu = line[i + 5..].split_whitespace().next().unwrap().parse().unwrap();
        } else if let Some(i) = line.find("EXCEPTION FRAME AT: ") {
            let addr = u64::from_str_radix(line[i + 20..].trim(), 16).unwrap();
            out.push((addr, line.contains("KERNEL-MODE"), cpu, HashMap::new()));
        } else if let Some(last) = out.last_mut() {
            let toks: Vec<&str> = line.split_whitespace().collect();
            for pair in toks.chunks(2) {
                if let [k, v] = pair {
                    if let (Some(n), Ok(v)) = (crash_name(k.trim_end_matches(':')), u64::from_str_radix(v, 16)) {
                        last.3.insert(n, v);
                    }
                }
            }
        }
    }
    out
}

/// drgn's `regs:` line for the interrupted frame at `pc`, as pt_regs names.
fn drgn_regs(text: &str, pc: u64) -> Option<HashMap<&'static str, u64>> {
    let key = format!("pc={pc:#x} ");
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.contains(&key) && l.contains("interrupted=True") {
            let regs = lines.next()?.trim().strip_prefix("regs: ")?;
            let mut m = HashMap::new();
            for kv in regs.split_whitespace() {
                let (k, v) = kv.split_once('=')?;
                // drgn's names (rax, rip, rflags, r8...) are crash's, lower case.
                let Some(name) = crash_name(&k.to_uppercase()) else { continue };
                m.insert(name, u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()?);
            }
            return Some(m);
        }
    }
    None
}

/// Scan the 16 KiB stack holding `addr`, with the CPU's rsp as live sp when it is on it.
fn scan_stack(s: &Scenario, addr: u64, cpu: usize) -> Scan {
    let lo = addr & !(THREAD_SIZE - 1);
    let live_sp = s.cpu_sp.get(cpu).copied().filter(|sp| (lo..lo + THREAD_SIZE).contains(sp));
    let opts = ScanOptions { live_sp, ..ScanOptions::default() };
    let scan = scan_memory(&s.mem, lo, lo + THREAD_SIZE, &s.syms, &opts);
    for f in &scan.found {
        eprintln!("  {:#x} {:?} {:?} score {}: {}", f.address, f.layout, f.status, f.score, f.summary);
    }
    scan
}

fn assert_regs(f: &Found, want: &HashMap<&'static str, u64>, who: &str) {
    assert!(want.len() >= 8, "{who}: too few registers parsed: {want:?}");
    for (n, v) in want {
        assert_eq!(f.reg(n), Some(*v), "{who}: {n} of the frame at {:#x}", f.address);
    }
}

/// Every exception frame crash reports is found at its address with crash's values.
fn check_scenario(name: &str, stale: &[u64]) -> Option<Scenario> {
    let s = load(name)?;
    let text = fs::read_to_string(s.dir.join("expected-crash-8.0.6-bt-e-a.txt")).unwrap();
    let frames = crash_frames(&text);
    assert!(!frames.is_empty());
    for (addr, kernel, cpu, regs) in &frames {
        eprintln!("{name}: crash frame at {addr:#x} (cpu {cpu})");
        let scan = scan_stack(&s, *addr, *cpu);
        if scan.unreadable.iter().any(|&(a, e)| (a..e).contains(addr)) {
            // Not kept in the mini core: reported as unreadable, and no frame made up from zeros.
            assert!(scan.found.iter().all(|f| !f.overlaps_range(*addr, ptregs::SIZE)));
            eprintln!("  unreadable in the mini core: {:x?}", scan.unreadable);
            continue;
        }
        let f = scan.found.iter().find(|f| f.address == *addr).unwrap_or_else(|| panic!("{name}: no frame at {addr:#x}"));
        assert_eq!(f.layout, Layout::PtRegs);
        let want = if stale.contains(addr) { Status::Stale } else { Status::Live };
        assert_eq!(f.status, want, "{name}: {addr:#x}");
        assert_regs(f, regs, &format!("{name} crash"));
        assert_eq!(f.check("segments").map(|c| c.detail.contains("kernel")), Some(*kernel));
        assert!(f.checks.iter().all(|c| c.ok), "{name} {addr:#x}: {:#?}", f.checks);
    }
    Some(s)
}

#[test]
fn irq_fixture_frames_match_crash_and_drgn() {
    let Some(s) = check_scenario("irq", &[]) else { return };
    // The kernel-mode frame the README names, against drgn as well.
    let found = scan_stack(&s, 0xffffc9000043ba58, 1).found;
    let f = found.iter().find(|f| f.address == 0xffffc9000043ba58).unwrap();
    let drgn = fs::read_to_string(s.dir.join("expected-drgn-0.3.0-cpus.txt")).unwrap();
    let want = drgn_regs(&drgn, 0xffffffff819ff685).unwrap();
    assert_regs(f, &want, "irq drgn");
    assert_eq!(f.reg("orig_ax"), Some(u64::MAX));
    assert!(f.check("ip").unwrap().detail.contains("memcpy+0x15"), "{}", f.check("ip").unwrap().detail);
    assert!(f.check("sp").unwrap().detail.contains("just above the frame"));
    // The user-mode frame at the top: a read(2).
    let u = found.iter().find(|f| f.address == 0xffffc9000043bf58).unwrap();
    assert!(u.check("orig_ax").unwrap().detail.contains("syscall 0 (read)"));
    assert!(u.check("stack_top").unwrap().ok);
}

#[test]
fn busy_fixture_stale_frame_is_stale() {
    // crash's kernel-mode frame at number+658 lies below CPU 0's live rsp; CPU 1's task
    // stack (user mode) is not in the mini core.
    check_scenario("busy", &[0xffffcfd90046b798]);
}

#[test]
fn panic_fixture_frames_match_crash() {
    check_scenario("panic", &[]);
}

