//! A user-space ELF core file read without a debugger: its threads' registers
//! (NT_PRSTATUS), its memory (PT_LOAD segments, and for what the kernel did not
//! dump, the files NT_FILE says were mapped there) and where each mapped ELF
//! file was loaded, so its symbols can be placed.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::memory::{Memory, ReadError};

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const NT_PRSTATUS: u32 = 1;
const NT_PRPSINFO: u32 = 3;
const NT_AUXV: u32 = 6;
const NT_FILE: u32 = 0x4649_4c45;
/// auxv: where the executable's program headers were mapped.
const AT_PHDR: u64 = 3;
/// Notes larger than this are not a core's (a damaged header).
const MAX_NOTES: u64 = 64 << 20;
/// `struct elf_prstatus` (x86-64): pr_cursig, pr_pid, pr_reg.
const PRSTATUS_CURSIG: usize = 12;
const PRSTATUS_PID: usize = 32;
const PRSTATUS_REG: usize = 112;
/// `struct prpsinfo` (x86-64): pr_fname[16].
const PRPSINFO_FNAME: usize = 40;

/// `struct user_regs_struct`, in order: the names gdb uses.
pub const USER_REGS: [&str; 27] = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax",
    "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
];

/// One thread of the core (one NT_PRSTATUS), in the core's order.
#[derive(Debug, Clone)]
pub struct CoreThread {
    pub pid: u32,
    pub signal: u16,
    /// [`USER_REGS`] order.
    pub regs: [u64; 27],
}

impl CoreThread {
    pub fn reg(&self, name: &str) -> Option<u64> {
        USER_REGS.iter().position(|n| *n == name).map(|i| self.regs[i])
    }
}

/// A file the process had mapped (NT_FILE): `[start, end)` shows the file from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    filesz: u64,
    offset: u64,
}

#[derive(Debug)]
pub struct CoreFile {
    file: File,
    len: u64,
    segments: Vec<Segment>,
    pub threads: Vec<CoreThread>,
    pub mappings: Vec<Mapping>,
    /// The command name (NT_PRPSINFO), when present.
    pub command: Option<String>,
    /// AT_PHDR of the auxiliary vector: an address inside the executable's mapping.
    phdr: Option<u64>,
    /// Mapped files as opened (None: could not be), by path.
    files: Mutex<HashMap<String, Option<(File, u64)>>>,
    /// Where a mapped file is read from instead of its recorded path.
    remap: HashMap<String, PathBuf>,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o.checked_add(8)?)?.try_into().ok()?))
}

fn err(path: &Path, what: impl std::fmt::Display) -> String {
    format!("{}: {what}", path.display())
}

impl CoreFile {
    /// Open an x86-64 ELF core; every size and offset is checked against the file.
    pub fn open(path: &Path) -> Result<CoreFile, String> {
        let file = File::open(path).map_err(|e| err(path, e))?;
        let len = file.metadata().map_err(|e| err(path, e))?.len();
        let mut hdr = [0u8; 64];
        file.read_exact_at(&mut hdr, 0).map_err(|_| err(path, "not an ELF file (too short)"))?;
        if &hdr[..4] != b"\x7fELF" {
            return Err(err(path, "not an ELF file"));
        }
        if hdr[4] != 2 || hdr[5] != 1 {
            return Err(err(path, "not a 64-bit little-endian ELF file"));
        }
        let e_type = u16_at(&hdr, 16).unwrap_or(0);
        let machine = u16_at(&hdr, 18).unwrap_or(0);
        if e_type != 4 {
            return Err(err(path, "not a core file (ELF type is not ET_CORE)"));
        }
        if machine != 62 {
            return Err(err(path, format!("not an x86-64 core (e_machine {machine})")));
        }
        let phoff = u64_at(&hdr, 32).unwrap_or(0);
        let phentsize = u64::from(u16_at(&hdr, 54).unwrap_or(0));
        let phnum = u64::from(u16_at(&hdr, 56).unwrap_or(0));
        if phentsize < 56 || phoff.checked_add(phentsize * phnum).is_none_or(|end| end > len) {
            return Err(err(path, "program headers lie outside the file"));
        }
        let mut ph = vec![0u8; (phentsize * phnum) as usize];
        file.read_exact_at(&mut ph, phoff).map_err(|e| err(path, e))?;
        let mut segments = Vec::new();
        let mut notes = Vec::new();
        for i in 0..phnum as usize {
            let p = &ph[i * phentsize as usize..];
            let (Some(ty), Some(offset), Some(vaddr), Some(filesz), Some(memsz)) =
                (u32_at(p, 0), u64_at(p, 8), u64_at(p, 16), u64_at(p, 32), u64_at(p, 40))
            else {
                continue;
            };
            // Bytes past the end of a truncated core are not there: never read them.
            let filesz = filesz.min(len.saturating_sub(offset));
            match ty {
                PT_LOAD => segments.push(Segment { vaddr, filesz: filesz.min(memsz), offset }),
                PT_NOTE if filesz <= MAX_NOTES => {
                    let mut b = vec![0u8; filesz as usize];
                    if file.read_exact_at(&mut b, offset).is_ok() {
                        notes.push(b);
                    }
                }
                _ => {}
            }
        }
        segments.sort_by_key(|s| s.vaddr);
        let mut core = CoreFile {
            file,
            len,
            segments,
            threads: Vec::new(),
            mappings: Vec::new(),
            command: None,
            phdr: None,
            files: Mutex::new(HashMap::new()),
            remap: HashMap::new(),
        };
        for n in &notes {
            core.read_notes(n);
        }
        if core.threads.is_empty() {
            return Err(err(path, "the core has no thread (no NT_PRSTATUS note)"));
        }
        Ok(core)
    }

    fn read_notes(&mut self, b: &[u8]) {
        let align4 = |n: usize| n.checked_add(3).map(|v| v & !3);
        let mut o = 0usize;
        while let (Some(namesz), Some(descsz), Some(ty)) = (u32_at(b, o), u32_at(b, o + 4), u32_at(b, o + 8)) {
            let Some(desc_at) = align4(namesz as usize).and_then(|n| (o + 12).checked_add(n)) else { break };
            let Some(end) = desc_at.checked_add(descsz as usize).filter(|&e| e <= b.len()) else { break };
            let desc = &b[desc_at..end];
            match ty {
                NT_PRSTATUS => self.prstatus(desc),
                NT_PRPSINFO => {
                    let name = desc.get(PRPSINFO_FNAME..PRPSINFO_FNAME + 16).unwrap_or_default();
                    let name = name.split(|&c| c == 0).next().unwrap_or_default();
                    self.command = Some(String::from_utf8_lossy(name).into_owned());
                }
                NT_FILE => self.nt_file(desc),
                NT_AUXV => {
                    self.phdr = desc
                        .chunks_exact(16)
                        .filter_map(|kv| Some((u64_at(kv, 0)?, u64_at(kv, 8)?)))
                        .find(|(k, _)| *k == AT_PHDR)
                        .map(|(_, v)| v)
                }
                _ => {}
            }
            let Some(next) = align4(end) else { break };
            o = next;
        }
    }

    fn prstatus(&mut self, d: &[u8]) {
        let mut regs = [0u64; 27];
        for (i, r) in regs.iter_mut().enumerate() {
            match u64_at(d, PRSTATUS_REG + 8 * i) {
                Some(v) => *r = v,
                None => return,
            }
        }
        let pid = u32_at(d, PRSTATUS_PID).unwrap_or(0);
        let signal = u16_at(d, PRSTATUS_CURSIG).unwrap_or(0);
        self.threads.push(CoreThread { pid, signal, regs });
    }

    fn nt_file(&mut self, d: &[u8]) {
        let (Some(count), Some(page)) = (u64_at(d, 0), u64_at(d, 8)) else { return };
        let Some(names_at) = count.checked_mul(24).and_then(|n| n.checked_add(16)).filter(|&n| n <= d.len() as u64)
        else {
            return;
        };
        let mut names = d[names_at as usize..].split(|&c| c == 0);
        for i in 0..count as usize {
            let (Some(start), Some(end), Some(pgoff)) =
                (u64_at(d, 16 + 24 * i), u64_at(d, 24 + 24 * i), u64_at(d, 32 + 24 * i))
            else {
                return;
            };
            let Some(name) = names.next() else { return };
            let Some(offset) = pgoff.checked_mul(page) else { continue };
            self.mappings.push(Mapping { start, end, offset, path: String::from_utf8_lossy(name).into_owned() });
        }
    }

    /// Read mapped file `recorded` from `actual` (a sysroot, a moved binary).
    pub fn remap(&mut self, recorded: &str, actual: PathBuf) {
        self.remap.insert(recorded.to_string(), actual);
        if let Ok(mut f) = self.files.lock() {
            f.remove(recorded);
        }
    }

    /// The path a mapped file is read from.
    pub fn local_path(&self, recorded: &str) -> PathBuf {
        self.remap.get(recorded).cloned().unwrap_or_else(|| PathBuf::from(recorded))
    }

    /// Each mapped file once, with the address its offset 0 was mapped at
    /// (the load bias of an ELF whose first PT_LOAD has vaddr 0).
    pub fn objects(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Vec::new();
        for m in self.mappings.iter().filter(|m| m.offset == 0) {
            if !out.iter().any(|(p, _)| *p == m.path) {
                out.push((m.path.clone(), m.start));
            }
        }
        out
    }

    /// The recorded path of the executable (the file mapped where AT_PHDR points).
    pub fn executable(&self) -> Option<&str> {
        let at = self.phdr?;
        self.mappings.iter().find(|m| m.start <= at && at < m.end).map(|m| m.path.as_str())
    }

    /// Up to `buf.len()` bytes at `addr` from the core: how many were there.
    fn read_dumped(&self, addr: u64, buf: &mut [u8]) -> Option<usize> {
        let i = self.segments.partition_point(|s| s.vaddr <= addr).checked_sub(1)?;
        let s = self.segments.get(i)?;
        let off = addr - s.vaddr;
        if off >= s.filesz {
            return None;
        }
        let n = (s.filesz - off).min(buf.len() as u64) as usize;
        let at = s.offset.checked_add(off)?;
        if at.checked_add(n as u64)? > self.len {
            return None;
        }
        self.file.read_exact_at(&mut buf[..n], at).ok()?;
        Some(n)
    }

    /// Up to `buf.len()` bytes at `addr` from the file mapped there.
    fn read_mapped(&self, addr: u64, buf: &mut [u8]) -> Option<usize> {
        let m = self.mappings.iter().find(|m| m.start <= addr && addr < m.end)?;
        let at = m.offset.checked_add(addr - m.start)?;
        let mut files = self.files.lock().ok()?;
        let entry = files.entry(m.path.clone()).or_insert_with(|| {
            let f = File::open(self.local_path(&m.path)).ok()?;
            let len = f.metadata().ok()?.len();
            Some((f, len))
        });
        let (f, len) = entry.as_ref()?;
        let n = (m.end - addr).min(len.saturating_sub(at)).min(buf.len() as u64) as usize;
        if n == 0 {
            return None;
        }
        f.read_exact_at(&mut buf[..n], at).ok()?;
        Some(n)
    }
}

impl Memory for CoreFile {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(ReadError { addr })?;
            let rest = &mut buf[done..];
            let n = self.read_dumped(a, rest).or_else(|| self.read_mapped(a, rest)).ok_or(ReadError { addr: a })?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal core: one PT_NOTE (prstatus, NT_FILE) and one PT_LOAD.
    fn tiny_core(dir: &Path, truncate: bool) -> PathBuf {
        let mut notes = Vec::new();
        let mut note = |ty: u32, desc: &[u8]| {
            notes.extend_from_slice(&5u32.to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            notes.extend_from_slice(&ty.to_le_bytes());
            notes.extend_from_slice(b"CORE\0\0\0\0");
            notes.extend_from_slice(desc);
            while notes.len() % 4 != 0 {
                notes.push(0);
            }
        };
        let mut pr = vec![0u8; 336];
        pr[PRSTATUS_PID..PRSTATUS_PID + 4].copy_from_slice(&1234u32.to_le_bytes());
        pr[PRSTATUS_CURSIG..PRSTATUS_CURSIG + 2].copy_from_slice(&11u16.to_le_bytes());
        pr[PRSTATUS_REG + 16 * 8..PRSTATUS_REG + 17 * 8].copy_from_slice(&0x401000u64.to_le_bytes());
        pr[PRSTATUS_REG + 19 * 8..PRSTATUS_REG + 20 * 8].copy_from_slice(&0x7000_0010u64.to_le_bytes());
        note(NT_PRSTATUS, &pr);
        let mut nf = Vec::new();
        for v in [1u64, 4096, 0x400000, 0x402000, 0] {
            nf.extend_from_slice(&v.to_le_bytes());
        }
        nf.extend_from_slice(b"/nonexistent/prog\0");
        note(NT_FILE, &nf);
        let data: Vec<u8> = (0..32u8).collect();
        let phoff = 64u64;
        let notes_off = phoff + 2 * 56;
        let data_off = notes_off + notes.len() as u64;
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[16..18].copy_from_slice(&4u16.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[32..40].copy_from_slice(&phoff.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let mut ph = |ty: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64| {
            let mut p = vec![0u8; 56];
            p[..4].copy_from_slice(&ty.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[32..40].copy_from_slice(&filesz.to_le_bytes());
            p[40..48].copy_from_slice(&memsz.to_le_bytes());
            f.extend_from_slice(&p);
        };
        ph(PT_NOTE, notes_off, 0, notes.len() as u64, 0);
        ph(PT_LOAD, data_off, 0x7000_0000, 32, 0x1000);
        f.extend_from_slice(&notes);
        f.extend_from_slice(&data);
        if truncate {
            f.truncate(f.len() - 16);
        }
        let p = dir.join(if truncate { "core.short" } else { "core" });
        std::fs::write(&p, f).unwrap();
        p
    }

    #[test]
    fn reads_threads_mappings_and_memory() {
        let dir = std::env::temp_dir().join(format!("stackproof-core-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = CoreFile::open(&tiny_core(&dir, false)).unwrap();
        assert_eq!(c.threads.len(), 1);
        assert_eq!(c.threads[0].pid, 1234);
        assert_eq!(c.threads[0].signal, 11);
        assert_eq!(c.threads[0].reg("rip"), Some(0x401000));
        assert_eq!(c.threads[0].reg("rsp"), Some(0x7000_0010));
        assert_eq!(c.objects(), vec![("/nonexistent/prog".to_string(), 0x400000)]);
        assert_eq!(c.read_u64(0x7000_0008).unwrap(), u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]));
        // Beyond filesz (not dumped) and in a mapped file that does not exist: unreadable, not zero.
        assert_eq!(c.read_u64(0x7000_0020).unwrap_err().addr, 0x7000_0020);
        assert!(c.read_u64(0x400000).is_err());
        // Straddling the end of what was dumped fails at the first missing byte.
        assert_eq!(c.read_u64(0x7000_001c).unwrap_err().addr, 0x7000_0020);

        let short = CoreFile::open(&tiny_core(&dir, true)).unwrap();
        assert!(short.read_u64(0x7000_0000).is_ok());
        assert!(short.read_u64(0x7000_0010).is_err(), "bytes past the end of a truncated core are not read");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn refuses_what_is_not_a_core() {
        let dir = std::env::temp_dir().join(format!("stackproof-notcore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x");
        std::fs::write(&p, b"hello").unwrap();
        assert!(CoreFile::open(&p).unwrap_err().contains("not an ELF"));
        let exe = std::env::current_exe().unwrap();
        assert!(CoreFile::open(&exe).unwrap_err().contains("not a core"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
