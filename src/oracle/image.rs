//! An ELF file as the checker needs it: code bytes, function boundaries,
//! noreturn call targets, and the unwind sections.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, SectionKind, SymbolIndex, SymbolKind};

use super::{eh_frame, orc, Table};
use crate::symbols::base_name;

pub use crate::layout::noreturn::NORETURN;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Func {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

pub struct Image {
    data: Vec<u8>,
    code: Vec<(u64, Range<usize>)>,
    pub symbols: Vec<Func>,
    pub noreturn: HashSet<u64>,
    /// PLT stub -> this object's own definition of the symbol.
    pub plt_local: HashMap<u64, u64>,
    /// Return thunks (`__x86_return_thunk` and its variants).
    pub return_thunks: Vec<u64>,
    /// Addresses of all text symbols, sized or not (asm labels like `__x86_return_thunk`).
    pub labels: HashSet<u64>,
    /// Position-independent (ET_DYN): code pointers live in relocation addends.
    pub pic: bool,
    /// A Linux kernel image (ORC tables or return thunks): `ud2` is WARN and continues.
    pub is_kernel: bool,
    sections: Vec<(String, u64, Range<usize>)>,
    /// File ranges of allocated (loaded) sections.
    alloc: Vec<Range<usize>>,
}

/// A section's bytes in the file; None when its header puts them (partly) outside it.
fn file_range(s: &object::Section<'_, '_>, file_len: usize) -> Option<Range<usize>> {
    let (off, len) = s.file_range()?;
    let a = usize::try_from(off).ok()?;
    let b = a.checked_add(usize::try_from(len).ok()?)?;
    (b <= file_len).then_some(a..b)
}

impl Image {
    pub fn load(path: &Path) -> Result<Image, String> {
        let data = crate::elf::read_file(path)?;
        Image::parse(data).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// An image from the bytes of an ELF file.
    pub fn parse(data: Vec<u8>) -> Result<Image, String> {
        let (code, symbols, noreturn, plt_local, return_thunks, labels, sections, alloc, pic) = {
            let f = object::File::parse(&*data).map_err(|e| e.to_string())?;
            if f.kind() == object::ObjectKind::Relocatable {
                // Unrelocated: every section at 0, call targets are relocation placeholders.
                return Err("relocatable object; analyze the linked image (or live memory)".to_string());
            }
            let pic = f.kind() == object::ObjectKind::Dynamic;
            let mut code = Vec::new();
            let mut sections = Vec::new();
            let mut alloc = Vec::new();
            for s in f.sections() {
                let Some(r) = file_range(&s, data.len()) else { continue };
                if let object::SectionFlags::Elf { sh_flags, .. } = s.flags() {
                    if sh_flags.0 & object::elf::SHF_ALLOC.0 != 0 {
                        alloc.push(r.clone());
                    }
                }
                let name = s.name().unwrap_or("").to_string();
                if s.kind() == SectionKind::Text {
                    code.push((s.address(), r.clone()));
                }
                sections.push((name, s.address(), r));
            }
            code.sort_by_key(|c| c.0);
            let mut symbols = Vec::new();
            let mut noreturn = HashSet::new();
            let mut labels = HashSet::new();
            let mut return_thunks = Vec::new();
            let nr: HashSet<&str> = NORETURN.iter().copied().collect();
            for sym in f.symbols().chain(f.dynamic_symbols()) {
                if sym.is_undefined() {
                    continue;
                }
                if matches!(sym.kind(), SymbolKind::Text | SymbolKind::Unknown | SymbolKind::Label) {
                    labels.insert(sym.address());
                    if sym.name().is_ok_and(|n| n.ends_with("_return_thunk") || n == "__ret") {
                        return_thunks.push(sym.address());
                    }
                }
                if sym.kind() != SymbolKind::Text {
                    continue;
                }
                let Ok(name) = sym.name() else { continue };
                if nr.contains(name) || nr.contains(base_name(name)) {
                    noreturn.insert(sym.address());
                }
                if sym.size() > 0 {
                    let end = sym.address().saturating_add(sym.size());
                    symbols.push(Func { name: name.to_string(), start: sym.address(), end });
                }
            }
            let plt_local = plt_stubs(&f, &data, &sections, &nr, &mut noreturn);
            symbols.sort_by(|a, b| a.start.cmp(&b.start).then(a.name.len().cmp(&b.name.len())));
            symbols.dedup_by_key(|s| s.start);
            (code, symbols, noreturn, plt_local, return_thunks, labels, sections, alloc, pic)
        };
        let is_kernel = sections.iter().any(|s| s.0 == ".orc_unwind")
            || symbols.iter().any(|s| s.name == "__x86_return_thunk" || s.name == "startup_64");
        Ok(Image { data, code, symbols, noreturn, plt_local, return_thunks, labels, pic, is_kernel, sections, alloc })
    }

    fn section(&self, name: &str) -> Option<(u64, &[u8])> {
        let (_, a, r) = self.sections.iter().find(|s| s.0 == name)?;
        Some((*a, self.data.get(r.clone())?))
    }

    /// Code bytes of [start, end), if one code section holds them.
    pub fn bytes(&self, start: u64, end: u64) -> Option<&[u8]> {
        let i = self.code.partition_point(|c| c.0 <= start);
        let (a, r) = self.code.get(i.checked_sub(1)?)?;
        let off = usize::try_from(start - a).ok()?;
        let len = usize::try_from(end.checked_sub(start)?).ok()?;
        let lo = r.start.checked_add(off)?;
        let hi = lo.checked_add(len)?;
        if hi > r.end {
            return None;
        }
        self.data.get(lo..hi)
    }

    /// `.eh_frame`, else `.debug_frame`.
    pub fn cfi(&self) -> Result<Table, String> {
        if let Some((addr, d)) = self.section(".eh_frame") {
            let text = self.section(".text").map_or(0, |t| t.0);
            let got = self.section(".got").map_or(0, |t| t.0);
            return eh_frame::eh_frame(d, addr, text, got);
        }
        if let Some((_, d)) = self.section(".debug_frame") {
            return eh_frame::debug_frame(d);
        }
        Err("no .eh_frame or .debug_frame".into())
    }

    /// Aligned 8-byte words of the non-code sections that point into code: pointer
    /// tables and (PIE) relocation addends, i.e. address-taken functions.
    pub fn code_pointers(&self) -> HashSet<u64> {
        let mut out = HashSet::new();
        let (lo, hi) = match (self.code.first(), self.code.last()) {
            (Some(a), Some(b)) => (a.0, b.0.saturating_add((b.1.end - b.1.start) as u64)),
            _ => return out,
        };
        if self.pic {
            // R_X86_64_RELATIVE addends (a word scan would also match small integers).
            for (name, _, r) in &self.sections {
                if !name.starts_with(".rela") {
                    continue;
                }
                let Some(d) = self.data.get(r.clone()) else { continue };
                for e in d.chunks_exact(24) {
                    let word = |i: usize| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&e[i..i + 8]);
                        u64::from_le_bytes(b)
                    };
                    let v = word(16);
                    // R_X86_64_RELATIVE, and IRELATIVE (ifunc resolvers)
                    let ty = word(8) & 0xffff_ffff;
                    if (ty == 8 || ty == 37) && v >= lo && v < hi {
                        out.insert(v);
                    }
                }
            }
            for a in self.relr_targets() {
                if let Some(v) = self.word_at(a) {
                    if v >= lo && v < hi {
                        out.insert(v);
                    }
                }
            }
            return out;
        }
        for (name, _, r) in &self.sections {
            let skip = self.code.iter().any(|c| c.1 == *r) || name.starts_with(".orc") || name.starts_with(".eh_frame");
            if skip || !self.alloc.contains(r) {
                continue;
            }
            let Some(d) = self.data.get(r.clone()) else { continue };
            for w in d.chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                let v = u64::from_le_bytes(b);
                if v >= lo && v < hi {
                    out.insert(v);
                }
            }
        }
        out
    }

    /// Direct call targets found by a linear sweep of the functions' code (code
    /// reached by no analyzed path still names its callees).
    pub fn call_targets(&self, funcs: &[Func]) -> HashSet<u64> {
        let mut out = HashSet::new();
        let mut ins = iced_x86::Instruction::default();
        for f in funcs {
            let Some(code) = self.bytes(f.start, f.end) else { continue };
            let mut d = iced_x86::Decoder::with_ip(64, code, f.start, iced_x86::DecoderOptions::NONE);
            while d.can_decode() {
                d.decode_out(&mut ins);
                if ins.flow_control() == iced_x86::FlowControl::Call {
                    out.insert(ins.near_branch_target());
                }
            }
        }
        out
    }

    /// Is `a` in a PLT section or `.altinstr_aux` (stubs entered by jumps though no symbol names them)?
    pub fn in_plt(&self, a: u64) -> bool {
        self.sections.iter().any(|(n, addr, r)| {
            (n.starts_with(".plt") || n == ".altinstr_aux") && a >= *addr && a - addr < (r.end - r.start) as u64
        })
    }

    /// The 8-byte word the file holds at link-time address `a`.
    fn word_at(&self, a: u64) -> Option<u64> {
        let (_, addr, r) =
            self.sections.iter().find(|(_, addr, r)| a >= *addr && a - addr < (r.end - r.start) as u64)?;
        let off = r.start.checked_add(usize::try_from(a - addr).ok()?)?;
        let b = self.data.get(off..off.checked_add(8)?)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Some(u64::from_le_bytes(w))
    }

    /// Addresses relocated by `.relr.dyn` (packed relative relocations; the words
    /// there hold link-time pointers).
    fn relr_targets(&self) -> Vec<u64> {
        let mut out = Vec::new();
        let Some((_, d)) = self.section(".relr.dyn") else { return out };
        let mut base = 0u64;
        for e in d.chunks_exact(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(e);
            let v = u64::from_le_bytes(w);
            if v & 1 == 0 {
                out.push(v);
                base = v.wrapping_add(8);
            } else {
                for bit in 1..64u64 {
                    if (v >> bit) & 1 == 1 {
                        out.push(base.wrapping_add((bit - 1) * 8));
                    }
                }
                base = base.wrapping_add(63 * 8);
            }
        }
        out
    }

    /// Landing pads of the function starting at `start`, from its LSDA.
    pub fn landing_pads(&self, t: &Table, start: u64) -> Vec<(u64, u64, u64)> {
        let Ok(i) = t.lsda.binary_search_by_key(&start, |l| l.0) else { return Vec::new() };
        let Some((addr, sec)) = self.section(".gcc_except_table") else { return Vec::new() };
        eh_frame::landing_pads(sec, addr, t.lsda[i].1, start)
    }

    pub fn orc(&self) -> Result<Table, String> {
        let (ip_addr, ip) = self.section(".orc_unwind_ip").ok_or("no .orc_unwind_ip")?;
        let (_, un) = self.section(".orc_unwind").ok_or("no .orc_unwind")?;
        Ok(orc::table(ip, ip_addr, un))
    }

    /// Functions to analyze: sized symbols, plus oracle ranges no symbol covers (stripped code).
    pub fn functions(&self, ranges: &[(u64, u64)]) -> Vec<Func> {
        let mut out = self.symbols.clone();
        let covered = |a: u64| {
            let i = self.symbols.partition_point(|s| s.start <= a);
            i.checked_sub(1).and_then(|i| self.symbols.get(i)).is_some_and(|s| a < s.end)
        };
        for &(s, e) in ranges {
            if e > s && !covered(s) {
                out.push(Func { name: format!("fde_{s:x}"), start: s, end: e });
            }
        }
        // PLT stubs are 16-byte functions of their own, whatever range covers them.
        for (name, addr, r) in &self.sections {
            if !(name == ".plt" || name == ".plt.sec" || name == ".plt.got") {
                continue;
            }
            let end = addr.saturating_add((r.end - r.start) as u64);
            out.retain(|f| f.start < *addr || f.start >= end);
            let mut a = *addr;
            while a < end {
                out.push(Func { name: format!("{name}_{a:x}"), start: a, end: a.saturating_add(16).min(end) });
                a = a.saturating_add(16);
            }
        }
        out.sort_by_key(|f| f.start);
        out.dedup_by_key(|f| f.start);
        out
    }
}

/// PLT stubs: those of noreturn imports (`call abort@plt`) go to `out`; the map
/// gives the local definition of stubs for symbols this object defines itself.
/// Stub i is at `.plt + 16*(i+1)`, or `.plt.sec + 16*i` with IBT.
fn plt_stubs(
    f: &object::File<'_>,
    data: &[u8],
    sections: &[(String, u64, Range<usize>)],
    nr: &HashSet<&str>,
    out: &mut HashSet<u64>,
) -> HashMap<u64, u64> {
    let mut local = HashMap::new();
    let find = |n: &str| sections.iter().find(|s| s.0 == n);
    let Some((_, _, rela)) = find(".rela.plt") else { return local };
    let Some(rela) = data.get(rela.clone()) else { return local };
    let (base, first) = match (find(".plt.sec"), find(".plt")) {
        (Some(s), _) => (s.1, 0u64),
        (None, Some(p)) => (p.1, 1u64),
        _ => return local,
    };
    let Some(dynsym) = f.dynamic_symbol_table() else { return local };
    for (i, e) in rela.chunks_exact(24).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&e[8..16]);
        let info = u64::from_le_bytes(w);
        let sym = (info >> 32) as usize;
        if sym == 0 {
            continue;
        }
        let Ok(s) = dynsym.symbol_by_index(SymbolIndex(sym)) else { continue };
        let stub = base.wrapping_add(16 * (i as u64 + first));
        if s.name().is_ok_and(|n| nr.contains(n)) {
            out.insert(stub);
        }
        if !s.is_undefined() && s.address() != 0 {
            local.insert(stub, s.address());
        }
    }
    local
}
