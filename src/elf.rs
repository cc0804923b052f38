//! Function symbols read straight from ELF files, placed where the debugger loaded them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use object::{Object, ObjectSection, ObjectSymbol, SectionIndex, SymbolKind};

use crate::symbols::Symbol;

/// How an object file's link-time addresses map to the running image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Every address moved by the same amount (executables, shared objects, `symbol-file -o`).
    Bias(u64),
    /// Each section placed on its own (`add-symbol-file x.ko -s .text ADDR ...`); by section name.
    Sections(HashMap<String, u64>),
}

/// A symbol as the file states it, before placement.
#[derive(Debug, Clone)]
struct RawSymbol {
    name: String,
    value: u64,
    size: u64,
    /// Index of its section (named in `RawTable::section_names`).
    section: Option<SectionIndex>,
}

#[derive(Debug)]
struct RawTable {
    relocatable: bool,
    sections: HashMap<String, u64>,
    /// Executable sections with bytes in the file: (name, link address, size, file offset).
    code: Vec<(String, u64, u64, u64)>,
    section_names: HashMap<SectionIndex, String>,
    syms: Vec<RawSymbol>,
    /// Symbols of any kind the analysis looks up by name ([`crate::kernel::MARKERS`]).
    markers: Vec<RawSymbol>,
    /// Function extents `.eh_frame` describes (link start, size): in a stripped file,
    /// the only extents its functions have.
    fdes: Vec<(u64, u64)>,
    /// Landing pads (range start, end, pad) by function start, from the LSDAs.
    pads: Vec<(u64, Vec<(u64, u64, u64)>)>,
}

/// A file as parsed: path + size + mtime, so a rebuilt file is a new one.
type Key = (PathBuf, u64, Option<std::time::SystemTime>);

/// Files an [`ElfFiles`] keeps parsed: a session's objfiles, with room to spare.
const MAX_PARSED: usize = 16;

/// Parsed ELF files, kept by whoever builds symbol tables (e.g. a gdb session, for
/// its objfiles: each core loaded rebuilds the table from the same libc). Bounded,
/// most recent last; a file is known by path + size + mtime, a rebuilt file is
/// parsed anew.
#[derive(Debug, Default)]
pub struct ElfFiles {
    parsed: Mutex<Vec<(Key, Arc<RawTable>)>>,
}

impl ElfFiles {
    /// `path` parsed, or as parsed before if it has not changed since.
    pub fn open(&self, path: &Path) -> Result<ElfFile, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
        if let Some(table) = self.recall(&key) {
            return Ok(ElfFile { path: path.to_path_buf(), table });
        }
        let file = ElfFile::read(path)?;
        self.remember(key, file.table.clone());
        Ok(file)
    }

    fn remember(&self, key: Key, t: Arc<RawTable>) {
        if let Ok(mut m) = self.parsed.lock() {
            m.retain(|(k, _)| k.0 != key.0);
            if m.len() >= MAX_PARSED {
                m.remove(0);
            }
            m.push((key, t));
        }
    }

    fn recall(&self, key: &Key) -> Option<Arc<RawTable>> {
        let mut m = self.parsed.lock().ok()?;
        let i = m.iter().position(|(k, _)| k == key)?;
        let hit = m.remove(i);
        let t = hit.1.clone();
        m.push(hit);
        Some(t)
    }
}

/// One parsed ELF file: its symbols, markers, sections and code, placed on demand.
#[derive(Debug, Clone)]
pub struct ElfFile {
    path: PathBuf,
    table: Arc<RawTable>,
}

/// A file's bytes, if it is a regular file (a device or FIFO never ends).
pub fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_bytes(data: &[u8]) -> Result<RawTable, String> {
    let file = object::File::parse(data).map_err(|e| e.to_string())?;
    let relocatable = file.kind() == object::ObjectKind::Relocatable;
    let mut section_names: HashMap<SectionIndex, String> = HashMap::new();
    let mut sections = HashMap::new();
    for s in file.sections() {
        if let Ok(n) = s.name() {
            section_names.insert(s.index(), n.to_string());
            sections.insert(n.to_string(), s.address());
        }
    }
    let mut exec_sections = std::collections::HashSet::new();
    let mut code = Vec::new();
    for s in file.sections() {
        if let object::SectionFlags::Elf { sh_flags, .. } = s.flags() {
            if (sh_flags & object::elf::SHF_EXECINSTR).0 != 0 {
                exec_sections.insert(s.index());
                if let (Some((offset, size)), Ok(name)) = (s.file_range(), s.name()) {
                    code.push((name.to_string(), s.address(), size, offset));
                }
            }
        }
    }
    let text = |sym: object::Symbol<'_, '_>| -> Option<RawSymbol> {
        // Assembly entry points (`entry_SYSCALL_64`, `asm_exc_*`) are untyped labels in code.
        let in_code = sym.section_index().is_some_and(|i| exec_sections.contains(&i));
        let wanted = match sym.kind() {
            SymbolKind::Text => true,
            SymbolKind::Unknown | SymbolKind::Label => in_code,
            _ => false,
        };
        if !wanted || sym.is_undefined() {
            return None;
        }
        let name = sym.name().ok().filter(|n| !n.is_empty())?;
        Some(RawSymbol { name: name.to_string(), value: sym.address(), size: sym.size(), section: sym.section_index() })
    };
    let mut syms: Vec<RawSymbol> = file.symbols().filter_map(text).collect();
    if syms.is_empty() {
        syms = file.dynamic_symbols().filter_map(text).collect();
    }
    syms.extend(plt_symbols(&file));
    let markers = file
        .symbols()
        .filter(|s| s.name().is_ok_and(|n| crate::kernel::MARKERS.contains(&n)) && !s.is_undefined())
        .filter_map(|s| {
            Some(RawSymbol {
                name: s.name().ok()?.to_string(),
                value: s.address(),
                size: 0,
                section: s.section_index(),
            })
        })
        .collect();
    let (fdes, pads) = if relocatable { Default::default() } else { fde_extents(&file) };
    Ok(RawTable { relocatable, sections, code, section_names, syms, markers, fdes, pads })
}

/// FDEs read at most from one file (gdb itself has about 60,000).
const MAX_FDES: usize = 1 << 20;

type Pads = Vec<(u64, Vec<(u64, u64, u64)>)>;

/// (start, size) of every FDE of `.eh_frame` when the file holds its bytes, sorted, and
/// the landing pads of the functions with an LSDA.
fn fde_extents(file: &object::File<'_>) -> (Vec<(u64, u64)>, Pads) {
    use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, UnwindSection};
    let Some(sec) = file.section_by_name(".eh_frame") else { return Default::default() };
    let Ok(data) = sec.data() else { return Default::default() }; // NOBITS in a separate debug file
    let except = file.section_by_name(".gcc_except_table").and_then(|s| Some((s.address(), s.data().ok()?)));
    let mut pads = Vec::new();
    let addr_of = |n: &str| file.section_by_name(n).map_or(0, |s| s.address());
    let bases =
        BaseAddresses::default().set_eh_frame(sec.address()).set_text(addr_of(".text")).set_got(addr_of(".got"));
    let eh = EhFrame::new(data, LittleEndian);
    let mut out = Vec::new();
    let mut entries = eh.entries(&bases);
    while let Ok(Some(e)) = entries.next() {
        if let CieOrFde::Fde(partial) = e {
            if let Ok(fde) = partial.parse(EhFrame::cie_from_offset) {
                if fde.len() > 0 {
                    out.push((fde.initial_address(), fde.len()));
                }
                if let (Some(gimli::Pointer::Direct(lsda)), Some((at, bytes))) = (fde.lsda(), except) {
                    let p = crate::lsda::landing_pads(bytes, at, lsda, fde.initial_address());
                    if !p.is_empty() {
                        pads.push((fde.initial_address(), p));
                    }
                }
            }
        }
        if out.len() >= MAX_FDES {
            break;
        }
    }
    out.sort_unstable();
    (out, pads)
}

/// PLT stubs get no symbol from the linker; name them `foo@plt` as gdb (BFD) does:
/// each stub's `jmp *GOT(%rip)` names a GOT slot, and the relocation of that slot
/// (`.rela.plt`, or `.rela.dyn` for `.plt.got`) names the symbol. Covers the lazy
/// `.plt`, IBT's `.plt.sec` (`endbr64; bnd jmp`) and `.plt.got` (`-z now`).
fn plt_symbols(file: &object::File<'_>) -> Vec<RawSymbol> {
    use object::{ObjectSymbolTable, RelocationTarget};
    let mut out = Vec::new();
    let (Some(relocs), Some(dynsym)) = (file.dynamic_relocations(), file.dynamic_symbol_table()) else {
        return out;
    };
    let mut by_slot: HashMap<u64, String> = HashMap::new();
    for (slot, r) in relocs {
        if let RelocationTarget::Symbol(i) = r.target() {
            if let Some(n) = dynsym.symbol_by_index(i).ok().and_then(|s| s.name().ok().map(str::to_string)) {
                if !n.is_empty() {
                    by_slot.insert(slot, n);
                }
            }
        }
    }
    for sec in file.sections() {
        let Ok(name) = sec.name() else { continue };
        if !matches!(name, ".plt" | ".plt.sec" | ".plt.got") {
            continue;
        }
        let Ok(data) = sec.data() else { continue }; // NOBITS in a separate debug file
        const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
        let entry = if name == ".plt.got" && !data.starts_with(&ENDBR64) { 8 } else { 16 };
        for (k, stub) in data.chunks_exact(entry).enumerate() {
            let mut i = if stub.starts_with(&ENDBR64) { 4 } else { 0 };
            if stub.get(i) == Some(&0xf2) {
                i += 1; // bnd
            }
            let (Some(&[0xff, 0x25]), Some(d)) = (stub.get(i..i + 2), stub.get(i + 2..i + 6)) else { continue };
            let disp = i32::from_le_bytes([d[0], d[1], d[2], d[3]]);
            let at = sec.address().wrapping_add((k * entry) as u64);
            let slot = at.wrapping_add(i as u64 + 6).wrapping_add_signed(i64::from(disp));
            if let Some(n) = by_slot.get(&slot) {
                out.push(RawSymbol {
                    name: format!("{n}{PLT_SUFFIX}"),
                    value: at,
                    size: entry as u64,
                    section: Some(sec.index()),
                });
            }
        }
    }
    out
}

/// The suffix of a PLT stub's name (`foo@plt`).
pub const PLT_SUFFIX: &str = "@plt";

impl ElfFile {
    /// `path` parsed, kept by nobody (see [`ElfFiles::open`]).
    pub fn read(path: &Path) -> Result<ElfFile, String> {
        let data = read_file(path)?;
        let table = Arc::new(parse_bytes(&data).map_err(|e| format!("{}: {e}", path.display()))?);
        Ok(ElfFile { path: path.to_path_buf(), table })
    }

    /// The text symbols, placed, each tagged with `module`.
    pub fn symbols(&self, placement: &Placement, module: Option<&str>) -> Vec<Symbol> {
        placed(&self.table, placement, module, |_| true)
    }

    /// The PLT stubs only (the file's code, when the symbols come from a separate debug file).
    pub fn plt_symbols(&self, placement: &Placement, module: Option<&str>) -> Vec<Symbol> {
        placed(&self.table, placement, module, |s| s.name.ends_with(PLT_SUFFIX))
    }

    /// The [`crate::kernel::MARKERS`] symbols the file defines, placed: `(name, address)`.
    pub fn markers(&self, placement: &Placement) -> Vec<(String, u64)> {
        let t = &*self.table;
        t.markers.iter().filter_map(|s| Some((s.name.clone(), place(t, s, placement)?))).collect()
    }

    /// The extents of the file's functions as `.eh_frame` gives them, placed (by a
    /// bias only: a relocatable file has none), as nameless symbols tagged `module`.
    pub fn fde_functions(&self, placement: &Placement, module: Option<&str>) -> Vec<Symbol> {
        let Placement::Bias(b) = placement else { return Vec::new() };
        let module: Option<Arc<str>> = module.map(Into::into);
        let name: Arc<str> = "".into();
        self.table
            .fdes
            .iter()
            .map(|&(start, size)| Symbol {
                name: name.clone(),
                start: start.wrapping_add(*b),
                size,
                module: module.clone(),
            })
            .collect()
    }

    /// The landing pads of the file's functions (by function start), placed by a bias.
    pub fn landing_pads(&self, placement: &Placement) -> Pads {
        let Placement::Bias(b) = *placement else { return Vec::new() };
        let at = |a: u64| a.wrapping_add(b);
        self.table
            .pads
            .iter()
            .map(|(f, v)| (at(*f), v.iter().map(|&(lo, hi, pad)| (at(lo), at(hi), at(pad))).collect()))
            .collect()
    }

    /// Link-time address of a section, to compute a bias from where the debugger put it.
    pub fn section_address(&self, name: &str) -> Option<u64> {
        self.table.sections.get(name).copied()
    }

    /// A function symbol whose address tells where the debugger placed the file: the
    /// largest sized one, whose name is least likely to be shared with another file.
    pub fn probe_symbol(&self) -> Option<(String, u64)> {
        let t = &*self.table;
        t.syms
            .iter()
            .filter(|s| s.size > 0 && !s.name.contains('.') && !t.relocatable)
            .max_by_key(|s| (s.size, std::cmp::Reverse(s.name.clone())))
            .map(|s| (s.name.clone(), s.value))
    }

    /// The file's code bytes, placed; None when it holds none (a symbol-only vmlinux:
    /// `.text` is NOBITS).
    pub fn code_image(&self, placement: &Placement) -> Option<CodeImage> {
        let t = &*self.table;
        let sections: Vec<(u64, u64, u64)> = t
            .code
            .iter()
            .filter_map(|(name, link, size, offset)| {
                let at = match placement {
                    Placement::Bias(b) => link.wrapping_add(*b),
                    Placement::Sections(map) if t.relocatable => *map.get(name)?,
                    Placement::Sections(map) => link.wrapping_add(*map.get(name)?),
                };
                Some((at, *size, *offset))
            })
            .collect();
        if sections.is_empty() {
            return None;
        }
        Some(CodeImage {
            path: self.path.clone(),
            sections,
            file: Mutex::new(None),
            calls: once_cell::sync::OnceCell::new(),
        })
    }
}

// The same for callers that keep no parsed files: each call parses `path`.

/// The PLT stubs of `path` only (see [`ElfFile::plt_symbols`]).
pub fn load_plt_symbols(path: &Path, placement: &Placement, module: Option<&str>) -> Result<Vec<Symbol>, String> {
    Ok(ElfFile::read(path)?.plt_symbols(placement, module))
}

/// The text symbols of `path`, placed, each tagged with `module`.
pub fn load_symbols(path: &Path, placement: &Placement, module: Option<&str>) -> Result<Vec<Symbol>, String> {
    Ok(ElfFile::read(path)?.symbols(placement, module))
}

/// The same from the bytes of a file.
pub fn symbols_from_bytes(data: &[u8], placement: &Placement, module: Option<&str>) -> Result<Vec<Symbol>, String> {
    Ok(placed(&parse_bytes(data)?, placement, module, |_| true))
}

/// The [`crate::kernel::MARKERS`] symbols `path` defines, placed: `(name, address)`.
pub fn load_markers(path: &Path, placement: &Placement) -> Result<Vec<(String, u64)>, String> {
    Ok(ElfFile::read(path)?.markers(placement))
}

/// Link-time address of a section of `path` (see [`ElfFile::section_address`]).
pub fn section_address(path: &Path, name: &str) -> Result<Option<u64>, String> {
    Ok(ElfFile::read(path)?.section_address(name))
}

/// The probe symbol of `path` (see [`ElfFile::probe_symbol`]).
pub fn probe_symbol(path: &Path) -> Result<Option<(String, u64)>, String> {
    Ok(ElfFile::read(path)?.probe_symbol())
}

fn placed(t: &RawTable, placement: &Placement, module: Option<&str>, keep: impl Fn(&RawSymbol) -> bool) -> Vec<Symbol> {
    let mut out = Vec::with_capacity(t.syms.len());
    for s in t.syms.iter().filter(|s| keep(s)) {
        let Some(start) = place(t, s, placement) else { continue };
        out.push(Symbol { name: s.name.as_str().into(), start, size: s.size, module: module.map(Into::into) });
    }
    out
}

fn place(t: &RawTable, s: &RawSymbol, placement: &Placement) -> Option<u64> {
    Some(match placement {
        Placement::Bias(b) => s.value.wrapping_add(*b),
        Placement::Sections(map) => {
            let base = s.section.and_then(|i| t.section_names.get(&i)).and_then(|n| map.get(n))?;
            // In ET_REL the value is an offset in its section.
            if t.relocatable {
                base.wrapping_add(s.value)
            } else {
                s.value.wrapping_add(*base)
            }
        }
    })
}

/// The separate debug file of `path` (`/usr/lib/debug/.build-id/xx/yyyy.debug`, as
/// Debian's `-dbg` packages install them), when there is one: it has the full symbol
/// table where the file itself has only `.dynsym`.
pub fn debug_file(path: &Path) -> Option<PathBuf> {
    let data = read_file(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let id = file.build_id().ok()??;
    let (first, rest) = id.split_first()?;
    let hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
    let p = PathBuf::from(format!("/usr/lib/debug/.build-id/{first:02x}/{hex}.debug"));
    p.is_file().then_some(p)
}

/// The link-time address of the segment that starts at file offset 0: a mapping of
/// offset 0 at address A puts the file at bias `A - this`.
pub fn first_load_vaddr(path: &Path) -> Result<u64, String> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let data = read_file(path)?;
    let hdr = object::elf::FileHeader64::<object::Endianness>::parse(&*data)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let endian = hdr.endian().map_err(|e| format!("{}: {e}", path.display()))?;
    let phdrs = hdr.program_headers(endian, &*data).map_err(|e| format!("{}: {e}", path.display()))?;
    phdrs
        .iter()
        .find(|p| p.p_type(endian) == object::elf::PT_LOAD && p.p_offset(endian) == 0)
        .map(|p| p.p_vaddr(endian))
        .ok_or_else(|| format!("{}: no loadable segment at offset 0", path.display()))
}

/// The code bytes of a file's executable sections, placed, read on demand: what the
/// running image held before it changed it (a kernel's freed `.init.text`).
#[derive(Debug)]
pub struct CodeImage {
    path: PathBuf,
    /// (placed address, size, file offset)
    sections: Vec<(u64, u64, u64)>,
    file: Mutex<Option<std::fs::File>>,
    /// Target -> addresses of the `call rel32` instructions that reach it, built on
    /// first use (only a lost frame asks).
    /// `call rel32` (e8) and `jmp rel32` (e9) byte patterns by target.
    calls: once_cell::sync::OnceCell<[HashMap<u64, Vec<u64>>; 2]>,
}

impl CodeImage {
    /// The code of `path`, parsed for this call (see [`ElfFile::code_image`]).
    pub fn open(path: &Path, placement: &Placement) -> Result<Option<CodeImage>, String> {
        Ok(ElfFile::read(path)?.code_image(placement))
    }

    /// Addresses of the `call rel32` (e8) byte patterns whose target is `target`. Some
    /// are no instructions (an e8 inside another one): callers decode to check.
    pub fn calls_to(&self, target: u64) -> &[u64] {
        self.rel32_to(0, target)
    }

    /// The same for `jmp rel32` (e9): tail calls into `target`, among other jumps.
    pub fn jumps_to(&self, target: u64) -> &[u64] {
        self.rel32_to(1, target)
    }

    fn rel32_to(&self, which: usize, target: u64) -> &[u64] {
        let index = self.calls.get_or_init(|| {
            let mut index: [HashMap<u64, Vec<u64>>; 2] = Default::default();
            for &(at, size, _) in &self.sections {
                // Sections past a sane size are not indexed (a file's sizes are checked
                // against the file when read, but this reads them whole).
                let Ok(len) = usize::try_from(size) else { continue };
                if len > 256 << 20 || len < 5 {
                    continue;
                }
                let mut bytes = vec![0u8; len];
                if !self.read(at, &mut bytes) {
                    continue;
                }
                for i in 0..len - 4 {
                    let k = match bytes[i] {
                        0xe8 => 0,
                        0xe9 => 1,
                        _ => continue,
                    };
                    let rel = i32::from_le_bytes([bytes[i + 1], bytes[i + 2], bytes[i + 3], bytes[i + 4]]);
                    let Some(next) = at.checked_add(i as u64 + 5) else { continue };
                    if let Some(t) = next.checked_add_signed(i64::from(rel)) {
                        index[k].entry(t).or_default().push(at + i as u64);
                    }
                }
            }
            index
        });
        index[which].get(&target).map_or(&[], |v| v.as_slice())
    }

    /// Fill `buf` with the file's bytes at `addr`; false when the file has none there.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let Some(&(at, size, offset)) = self.sections.iter().find(|(at, size, _)| addr >= *at && addr - *at < *size)
        else {
            return false;
        };
        if (addr - at).saturating_add(buf.len() as u64) > size {
            return false;
        }
        let Ok(mut file) = self.file.lock() else { return false };
        if file.is_none() {
            *file = std::fs::File::open(&self.path).ok();
        }
        let Some(f) = file.as_mut() else { return false };
        f.seek(SeekFrom::Start(offset + (addr - at))).is_ok() && f.read_exact(buf).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_files_are_bounded_and_a_rebuilt_file_is_read_anew() {
        let dir = std::env::temp_dir().join(format!("stackproof-elf-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&exe).unwrap();
        let paths: Vec<PathBuf> = (0..MAX_PARSED + 4).map(|i| dir.join(format!("f{i}"))).collect();
        let files = ElfFiles::default();
        for p in &paths {
            std::fs::write(p, &bytes).unwrap();
            files.open(p).unwrap();
        }
        let held = |p: &Path| files.parsed.lock().unwrap().iter().filter(|(k, _)| k.0 == p).count();
        assert!(files.parsed.lock().unwrap().len() <= MAX_PARSED);
        assert_eq!(held(&paths[0]), 0, "the oldest was dropped");
        let p = paths.last().unwrap();
        assert_eq!(held(p), 1);
        let first = files.open(p).unwrap();
        assert!(Arc::ptr_eq(&first.table, &files.open(p).unwrap().table), "an unchanged file is parsed once");
        assert!(
            !Arc::ptr_eq(&first.table, &ElfFiles::default().open(p).unwrap().table),
            "another owner parses its own"
        );
        // the same path rewritten (another size): one entry, the new one
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(p, &longer).unwrap();
        let again = files.open(p).unwrap();
        assert!(!Arc::ptr_eq(&first.table, &again.table), "a rebuilt file is parsed anew");
        assert_eq!(held(p), 1);
        assert!(read_file(Path::new("/dev/zero")).unwrap_err().contains("not a regular file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
