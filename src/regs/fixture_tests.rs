//! Scans of the real kernel fixtures (tests/fixtures/kernel, unpacked by
//! `crate::testdata::kernel_fixture`), compared with what crash 8.0.6 (`bt -e -a`) and
//! drgn 0.3.0 report, and every kept stack checked for false live frames.
#![cfg(test)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

use super::ptregs;
use super::scan::{scan_memory, Found, Scan, ScanOptions};
use super::{Layout, Status};
use crate::elf::{load_symbols, Placement};
use crate::memory::{Memory, ReadError};
use crate::symbols::{Symbol, SymbolTable};

const THREAD_SIZE: u64 = 0x4000;

/// The mini core's PT_LOAD segments; a read may span adjacent ones.
struct Core {
    segs: Vec<(u64, Vec<u8>)>,
}

impl Memory for Core {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut done = 0;
        while done < buf.len() {
            let a = addr + done as u64;
            let i = self.segs.partition_point(|(s, _)| *s <= a);
            let (start, data) = i.checked_sub(1).and_then(|i| self.segs.get(i)).ok_or(ReadError { addr: a })?;
            let off = (a - start) as usize;
            if off >= data.len() {
                return Err(ReadError { addr: a });
            }
            let n = (data.len() - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&data[off..off + n]);
            done += n;
        }
        Ok(())
    }
}

fn core_memory(path: &Path) -> Core {
    let data = fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let mut segs: Vec<(u64, Vec<u8>)> = file
        .segments()
        .map(|seg| (seg.address(), seg.data().unwrap().to_vec()))
        .filter(|(_, d)| !d.is_empty())
        .collect();
    segs.sort_by_key(|s| s.0);
    Core { segs }
}

/// The entry code's symbols are NOTYPE (SYM_CODE_START), which `elf::load_symbols`
/// leaves out; the entry check needs them, so the test adds those in text sections.
fn asm_symbols(path: &Path, bias: u64) -> Vec<Symbol> {
    let data = fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.symbols()
        .filter(|s| matches!(s.kind(), SymbolKind::Label | SymbolKind::Unknown) && !s.is_undefined())
        .filter(|s| {
            s.section_index()
                .and_then(|i| file.section_by_index(i).ok())
                // vmlinux.sym keeps .text as NOBITS, so go by name rather than kind.
                .is_some_and(|sec| sec.name().is_ok_and(|n| n.ends_with(".text")))
        })
        .filter_map(|s| Some(Symbol::new(s.name().ok().filter(|n| !n.is_empty())?, s.address() + bias, s.size())))
        .collect()
}

struct Scenario {
    mem: Core,
    syms: SymbolTable,
    /// Per CPU: the live rsp.
    cpu_sp: Vec<u64>,
    dir: PathBuf,
}

fn load(name: &str) -> Scenario {
    let dir = crate::testdata::fixture("kernel").join(name);
    let core = crate::testdata::kernel_fixture(&format!("{name}/minicore.elf")).unwrap();
    let vmlinux = crate::testdata::kernel_fixture("vmlinux.sym").unwrap();
    let kaslr = fs::read_to_string(dir.join("kaslr.txt")).unwrap();
    let off = u64::from_str_radix(kaslr.trim().trim_start_matches("KERNELOFFSET="), 16).unwrap();
    let mut syms = load_symbols(&vmlinux, &Placement::Bias(off), None).unwrap();
    syms.extend(asm_symbols(&vmlinux, off));
    let syms = SymbolTable::new(syms);
    let manifest = fs::read_to_string(dir.join("manifest.json")).unwrap();
    // "RSP": "ffff..." once per CPU, in CPU order; no JSON crate needed for that.
    let cpu_sp = manifest
        .match_indices("\"RSP\": \"")
        .map(|(i, m)| u64::from_str_radix(&manifest[i + m.len()..i + m.len() + 16], 16).unwrap())
        .collect();
    Scenario { mem: core_memory(&core), syms, cpu_sp, dir }
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
fn check_scenario(name: &str, stale: &[u64]) -> Scenario {
    let s = load(name);
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
        let f =
            scan.found.iter().find(|f| f.address == *addr).unwrap_or_else(|| panic!("{name}: no frame at {addr:#x}"));
        assert_eq!(f.layout, Layout::PtRegs);
        let want = if stale.contains(addr) { Status::Stale } else { Status::Live };
        assert_eq!(f.status, want, "{name}: {addr:#x}");
        assert_regs(f, regs, &format!("{name} crash"));
        assert_eq!(f.check("segments").map(|c| c.detail.contains("kernel")), Some(*kernel));
        assert!(f.checks.iter().all(|c| c.ok), "{name} {addr:#x}: {:#?}", f.checks);
    }
    s
}

#[test]
fn irq_fixture_frames_match_crash_and_drgn() {
    let s = check_scenario("irq", &[]);
    // The kernel-mode frame the README names, against drgn as well.
    let found = scan_stack(&s, 0xffffc9000043ba58, 1).found;
    let f = found.iter().find(|f| f.address == 0xffffc9000043ba58).unwrap();
    let drgn = fs::read_to_string(s.dir.join("expected-drgn-0.3.0-cpus.txt")).unwrap();
    let want = drgn_regs(&drgn, 0xffffffff819ff685).unwrap();
    assert_regs(f, &want, "irq drgn");
    assert_eq!(f.reg("orig_ax"), Some(u64::MAX));
    assert!(f.check("ip").unwrap().detail.contains("memcpy+0x15"), "{}", f.check("ip").unwrap().detail);
    assert!(f.check("sp").unwrap().detail.contains("just above the frame"));
    // orig_ax is -1 on 6.1, but the entry stub's return address below the frame names the IRQ.
    assert_eq!(f.check("entry").unwrap().detail, "entered via asm_sysvec_apic_timer_interrupt+0x16");
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
    let s = check_scenario("panic", &[]);
    // CPU 1 was stopped by the reboot IPI inside s_next.
    let found = scan_stack(&s, 0xffffc900004739f8, 1).found;
    let f = found.iter().find(|f| f.address == 0xffffc900004739f8).unwrap();
    assert!(f.summary.ends_with("entered via asm_sysvec_reboot+0x16"), "{}", f.summary);
}

/// `"key": "0x..."` values of the manifest, in order.
fn manifest_hex(manifest: &str, key: &str) -> Vec<u64> {
    let pat = format!("\"{key}\": \"0x");
    manifest
        .match_indices(&pat)
        .filter_map(|(i, m)| {
            let rest = &manifest[i + m.len()..];
            u64::from_str_radix(&rest[..rest.find('"')?], 16).ok()
        })
        .collect()
}

fn stack_blocks(manifest: &str) -> Vec<u64> {
    let Some(i) = manifest.find("\"stack_blocks\"") else { return vec![] };
    let j = i + manifest[i..].find(']').unwrap();
    manifest[i..j].split('"').filter_map(|t| u64::from_str_radix(t.strip_prefix("0x")?, 16).ok()).collect()
}

/// A sleeping task's saved sp: the word of its task_struct that points into `lo`'s stack
/// at an inactive_task_frame, whose return address (7th word) is in __schedule.
fn saved_sp(s: &Scenario, task: u64, lo: u64) -> Option<u64> {
    let mut t = vec![0u8; 0x3000];
    s.mem.read(task, &mut t).ok()?;
    t.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).find(|&v| {
        (lo..lo + THREAD_SIZE).contains(&v)
            && s.mem
                .read_u64(v + 0x30)
                .ok()
                .and_then(|ret| crate::symbols::Symbols::lookup(&s.syms, ret))
                .is_some_and(|f| &*f.name == "__schedule")
    })
}

/// Every stack in the mini cores: the only live frames are crash's and the user-mode
/// syscall frames at stack tops; interrupt frames left on sleeping tasks' stacks are stale.
#[test]
fn no_false_live_frames_on_any_fixture_stack() {
    for name in ["irq", "busy", "panic"] {
        let s = load(name);
        let manifest = fs::read_to_string(s.dir.join("manifest.json")).unwrap();
        let crash = fs::read_to_string(s.dir.join("expected-crash-8.0.6-bt-e-a.txt")).unwrap();
        let crash_addrs: Vec<u64> = crash_frames(&crash).iter().map(|f| f.0).collect();
        let running: Vec<u64> = crash
            .match_indices("TASK: ")
            .map(|(i, m)| u64::from_str_radix(&crash[i + m.len()..i + m.len() + 16], 16).unwrap())
            .collect();
        let tasks = manifest_hex(&manifest, "task");
        assert!(!tasks.is_empty());
        let mut stale_seen = 0;
        for lo in stack_blocks(&manifest) {
            let hi = lo + THREAD_SIZE;
            let cpu_sp = s.cpu_sp.iter().copied().find(|sp| (lo..hi).contains(sp));
            let sleeper = tasks.iter().filter(|t| !running.contains(t)).find_map(|&t| saved_sp(&s, t, lo));
            let live_sp = cpu_sp.or(sleeper);
            let opts = ScanOptions { live_sp, ..ScanOptions::default() };
            let scan = scan_memory(&s.mem, lo, hi, &s.syms, &opts);
            eprintln!("{name} stack {lo:#x}: live sp {live_sp:x?}, unreadable {:x?}", scan.unreadable);
            for f in &scan.found {
                eprintln!(
                    "  {:#x} {:?} {:?} ({}) score {}: {}",
                    f.address, f.layout, f.status, f.status_reason, f.score, f.summary
                );
                let at_top = f.end() == hi && f.check("segments").is_some_and(|c| c.detail.contains("user"));
                if f.status == Status::Live {
                    assert!(crash_addrs.contains(&f.address) || at_top, "{name}: unexpected live frame {f:#?}");
                } else {
                    stale_seen += 1;
                }
            }
        }
        eprintln!("{name}: {stale_seen} stale frames");
    }
}

/// `"KEY": "hex"` values of the manifest's `cpu_registers`, one per CPU in order.
fn cpu_reg(manifest: &str, key: &str) -> Vec<u64> {
    let pat = format!("\"{key}\": \"");
    manifest
        .match_indices(&pat)
        .filter_map(|(i, m)| {
            let rest = &manifest[i + m.len()..];
            u64::from_str_radix(&rest[..rest.find('"')?], 16).ok()
        })
        .collect()
}

/// drgn's frames per CPU, `(pc, sp)` in order, without the repeats it prints for
/// inlined functions.
fn drgn_chains(text: &str) -> Vec<Vec<(u64, u64)>> {
    let mut out: Vec<Vec<(u64, u64)>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("== CPU ") {
            out.push(Vec::new());
            continue;
        }
        let t = line.trim_start();
        let (Some(pc), Some(sp)) = (t.split(" pc=0x").nth(1), t.split(" sp=0x").nth(1)) else { continue };
        let hex = |s: &str| u64::from_str_radix(s.split_whitespace().next().unwrap_or(""), 16).ok();
        let (Some(pc), Some(sp), Some(cur)) = (hex(pc), hex(sp), out.last_mut()) else { continue };
        if cur.last() != Some(&(pc, sp)) {
            cur.push((pc, sp));
        }
    }
    out
}

/// stackproof's own unwinder from each CPU's registers (the manifest's, as gdb reads
/// them from NT_PRSTATUS) gives drgn's chain: pt_regs crossings, the IRQ stack's
/// return to the task stack, down to the user-mode frame of the syscall. busy CPU 1
/// is in user mode and its user stack is not in the mini core: frame 0 only.
#[test]
fn own_chain_from_cpu_registers_is_drgns() {
    use crate::unwind::{unwind, Start};
    for name in ["panic", "irq", "busy"] {
        let s = load(name);
        let manifest = fs::read_to_string(s.dir.join("manifest.json")).unwrap();
        let drgn = drgn_chains(&fs::read_to_string(s.dir.join("expected-drgn-0.3.0-cpus.txt")).unwrap());
        let reg = |k: &str| cpu_reg(&manifest, k);
        let (rip, rsp) = (reg("RIP"), reg("RSP"));
        let callee: Vec<Vec<u64>> = ["RBX", "RBP", "R12", "R13", "R14", "R15"].iter().map(|k| reg(k)).collect();
        assert_eq!((rip.len(), rsp.len(), drgn.len()), (2, 2, 2), "{name}");
        for cpu in 0..2 {
            let start = Start {
                pc: rip[cpu],
                sp: rsp[cpu],
                callee_saved: [0, 1, 2, 3, 4, 5].map(|i| callee[i].get(cpu).copied()),
                scratch: Vec::new(),
            };
            let got: Vec<(u64, u64)> = unwind(&s.mem, &s.syms, &start, 64)
                .frames
                .iter()
                .map(|f| (f.frame.pc, f.frame.sp.unwrap_or(0)))
                .collect();
            let want = if (name, cpu) == ("busy", 1) { &drgn[cpu][..1] } else { &drgn[cpu][..] };
            assert_eq!(got, want, "{name} CPU {cpu}");
        }
    }
}
