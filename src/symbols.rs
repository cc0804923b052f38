//! Function symbols: which function holds an address.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub name: std::sync::Arc<str>,
    pub start: u64,
    /// 0 when unknown (assembly labels); such a symbol reaches the next one.
    pub size: u64,
    /// Loadable module or shared object holding it (`kvm`, `libc.so.6`); None for the main image.
    pub module: Option<std::sync::Arc<str>>,
}

impl Symbol {
    pub fn new(name: impl Into<std::sync::Arc<str>>, start: u64, size: u64) -> Self {
        Symbol { name: name.into(), start, size, module: None }
    }

    pub fn in_module(mut self, module: impl Into<std::sync::Arc<str>>) -> Self {
        self.module = Some(module.into());
        self
    }

    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && (self.size == 0 || addr - self.start < self.size)
    }

    /// `name+0x1c`, crash/gdb style.
    pub fn describe(&self, addr: u64) -> String {
        let off = addr.wrapping_sub(self.start);
        if off == 0 {
            self.name.to_string()
        } else {
            format!("{}+{:#x}", self.name, off)
        }
    }

    /// The function's name without a compiler suffix (`foo.cold`, `foo.isra.0`, `foo.part.1`).
    pub fn base_name(&self) -> &str {
        base_name(&self.name)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Strip gcc's clone and split suffixes: `foo.cold.3` -> `foo`, `foo.isra.0` -> `foo`.
/// Leading dots belong to the name (`.text.cold` -> `.text`, `..cold` stays).
pub fn base_name(name: &str) -> &str {
    let lead = name.len() - name.trim_start_matches('.').len();
    match name[lead..].find('.') {
        Some(i) if i > 0 => &name[..lead + i],
        _ => name,
    }
}

/// The function a split-off part is cut from: the name before its last `.cold`
/// suffix (`foo.cold.3` -> `foo`, `foo.part.0.cold` -> `foo.part.0`). None when
/// the name is no compiler's split-off part: it starts with a dot (assembly:
/// `.cold`, `..cold`, `.text.cold`), or its parent would be one itself; so
/// following parents ends after one step.
pub fn cold_parent(name: &str) -> Option<&str> {
    if name.starts_with('.') {
        return None;
    }
    let i = name.rfind(".cold")?;
    let rest = &name[i + ".cold".len()..];
    let numbered = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    if !(rest.is_empty() || rest.strip_prefix('.').is_some_and(numbered)) {
        return None;
    }
    let parent = &name[..i];
    (!parent.is_empty() && !parent.contains(".cold")).then_some(parent)
}

/// Where symbol lookups come from (ELF tables, gdb, a crash text).
pub trait Symbols {
    /// The function whose code holds `addr`.
    fn lookup(&self, addr: u64) -> Option<Symbol>;

    /// The address of a symbol by name, if this source can tell.
    fn address_of(&self, _name: &str) -> Option<u64> {
        None
    }

    /// The code bytes the object file holds at `addr` (not the target's memory); false if none.
    fn file_code(&self, _addr: u64, _buf: &mut [u8]) -> bool {
        false
    }

    /// Where the object files hold `call rel32` instructions to `target` (candidates:
    /// the caller decodes to check); empty when this source has no code.
    fn direct_calls_to(&self, _target: u64) -> Vec<u64> {
        Vec::new()
    }

    /// The same for `jmp rel32` instructions (tail calls into `target`, among other jumps).
    fn direct_jumps_to(&self, _target: u64) -> Vec<u64> {
        Vec::new()
    }

    /// Where analyses keep what they learn of these functions for the table's life
    /// (the frame-layout engine's layouts); None: nothing is kept past one check.
    fn store(&self) -> Option<&crate::memo::Store> {
        None
    }

    /// The extent of a function holding `addr` that no symbol names: a stripped file's
    /// function as its unwind tables (`.eh_frame`) describe it, its name empty.
    fn unnamed_function(&self, _addr: u64) -> Option<Symbol> {
        None
    }

    /// Where the function starting at `start` enters its catch blocks and cleanups
    /// (range start, end, landing pad), from its LSDA; no jump in the code shows them.
    fn landing_pads(&self, _start: u64) -> Vec<(u64, u64, u64)> {
        Vec::new()
    }
}

/// The function whose code holds `addr`, for its frame layout: its sized symbol, else
/// the extent the unwind tables give (a stripped file), else an unsized label.
pub fn function_extent<S: Symbols + ?Sized>(syms: &S, addr: u64) -> Option<Symbol> {
    let named = syms.lookup(addr);
    if named.as_ref().is_some_and(|s| s.size != 0) {
        return named;
    }
    syms.unnamed_function(addr).or(named)
}

impl<S: Symbols + ?Sized> Symbols for &S {
    fn lookup(&self, addr: u64) -> Option<Symbol> {
        (**self).lookup(addr)
    }
    fn address_of(&self, name: &str) -> Option<u64> {
        (**self).address_of(name)
    }
    fn file_code(&self, addr: u64, buf: &mut [u8]) -> bool {
        (**self).file_code(addr, buf)
    }
    fn store(&self) -> Option<&crate::memo::Store> {
        (**self).store()
    }
    fn direct_calls_to(&self, target: u64) -> Vec<u64> {
        (**self).direct_calls_to(target)
    }
    fn direct_jumps_to(&self, target: u64) -> Vec<u64> {
        (**self).direct_jumps_to(target)
    }
    fn unnamed_function(&self, addr: u64) -> Option<Symbol> {
        (**self).unnamed_function(addr)
    }
    fn landing_pads(&self, start: u64) -> Vec<(u64, u64, u64)> {
        (**self).landing_pads(start)
    }
}

/// A sorted table of function symbols.
#[derive(Default, Clone, Debug)]
pub struct SymbolTable {
    syms: Vec<Symbol>,
    /// Name -> lowest address, built on the first by-name lookup (kernel tables are large).
    by_name: once_cell::sync::OnceCell<std::collections::HashMap<std::sync::Arc<str>, u64>>,
    /// What the analyses learn of these functions' code (their layouts), for as long as
    /// the table lives.
    store: crate::memo::Store,
    /// Nameless function extents (a stripped file's `.eh_frame`), sorted by start.
    unnamed: Vec<Symbol>,
    /// Landing pads by function start ([`Symbols::landing_pads`]).
    pads: std::collections::HashMap<u64, Vec<(u64, u64, u64)>>,
}

impl SymbolTable {
    pub fn new(mut syms: Vec<Symbol>) -> Self {
        // Among aliases at one address keep the sized one, then the shorter name
        // (`memcpy` over `__memcpy`), so lookups are stable.
        // By address first (a cheap key), then each run of aliases by the full order.
        syms.sort_unstable_by_key(|s| s.start);
        let alias_order = |a: &Symbol, b: &Symbol| {
            (b.size != 0)
                .cmp(&(a.size != 0))
                .then(a.name.starts_with('_').cmp(&b.name.starts_with('_')))
                .then(a.name.len().cmp(&b.name.len()))
                .then(a.name.cmp(&b.name))
        };
        for run in syms.chunk_by_mut(|a, b| a.start == b.start).filter(|r| r.len() > 1) {
            run.sort_unstable_by(alias_order);
        }
        syms.dedup_by(|later, first| later.start == first.start);
        SymbolTable {
            syms,
            by_name: Default::default(),
            store: Default::default(),
            unnamed: Vec::new(),
            pads: Default::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.syms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Symbol> {
        self.syms.iter()
    }

    /// Extend with more symbols (another object).
    pub fn merge(&mut self, more: Vec<Symbol>) {
        let mut all = std::mem::take(&mut self.syms);
        all.extend(more);
        let (unnamed, pads) = (std::mem::take(&mut self.unnamed), std::mem::take(&mut self.pads));
        *self = SymbolTable::new(all);
        (self.unnamed, self.pads) = (unnamed, pads);
    }

    /// Extend with functions' landing pads ([`Symbols::landing_pads`]).
    pub fn merge_pads(&mut self, more: Vec<(u64, Vec<(u64, u64, u64)>)>) {
        self.pads.extend(more);
    }

    /// Extend with nameless function extents ([`Symbols::unnamed_function`]).
    pub fn merge_unnamed(&mut self, more: Vec<Symbol>) {
        self.unnamed.extend(more);
        self.unnamed.sort_unstable_by_key(|s| (s.start, s.size));
        self.unnamed.dedup_by_key(|s| s.start);
    }

    fn find(&self, addr: u64) -> Option<&Symbol> {
        let i = self.syms.partition_point(|s| s.start <= addr);
        let s = self.syms.get(i.checked_sub(1)?)?;
        if s.size != 0 {
            return s.contains(addr).then_some(s);
        }
        // An unsized label reaches the next symbol, but not past 1 MiB.
        let next = self.syms.get(i).map_or(u64::MAX, |n| n.start);
        (addr < next && addr - s.start < (1 << 20)).then_some(s)
    }
}

impl Symbols for SymbolTable {
    fn lookup(&self, addr: u64) -> Option<Symbol> {
        self.find(addr).cloned()
    }

    fn address_of(&self, name: &str) -> Option<u64> {
        let index = self.by_name.get_or_init(|| {
            let mut m = std::collections::HashMap::with_capacity(self.syms.len());
            for s in &self.syms {
                m.entry(s.name.clone()).or_insert(s.start);
            }
            m
        });
        index.get(name).copied()
    }

    fn store(&self) -> Option<&crate::memo::Store> {
        Some(&self.store)
    }

    fn unnamed_function(&self, addr: u64) -> Option<Symbol> {
        let i = self.unnamed.partition_point(|s| s.start <= addr);
        self.unnamed.get(i.checked_sub(1)?).filter(|s| s.contains(addr)).cloned()
    }

    fn landing_pads(&self, start: u64) -> Vec<(u64, u64, u64)> {
        self.pads.get(&start).cloned().unwrap_or_default()
    }
}

/// The first source that knows wins.
pub struct Layered<'a> {
    pub layers: Vec<&'a dyn Symbols>,
}

impl Symbols for Layered<'_> {
    fn lookup(&self, addr: u64) -> Option<Symbol> {
        self.layers.iter().find_map(|l| l.lookup(addr))
    }
    fn address_of(&self, name: &str) -> Option<u64> {
        self.layers.iter().find_map(|l| l.address_of(name))
    }
    fn file_code(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.layers.iter().any(|l| l.file_code(addr, buf))
    }
    fn direct_calls_to(&self, target: u64) -> Vec<u64> {
        self.layers.iter().flat_map(|l| l.direct_calls_to(target)).collect()
    }
    fn direct_jumps_to(&self, target: u64) -> Vec<u64> {
        self.layers.iter().flat_map(|l| l.direct_jumps_to(target)).collect()
    }
    fn store(&self) -> Option<&crate::memo::Store> {
        self.layers.iter().find_map(|l| l.store())
    }
    fn unnamed_function(&self, addr: u64) -> Option<Symbol> {
        self.layers.iter().find_map(|l| l.unnamed_function(addr))
    }
    fn landing_pads(&self, start: u64) -> Vec<(u64, u64, u64)> {
        self.layers.iter().map(|l| l.landing_pads(start)).find(|p| !p.is_empty()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nameless_extent_serves_where_no_sized_symbol_does() {
        let mut t = SymbolTable::new(vec![Symbol::new("f", 0x1000, 0x40), Symbol::new("label", 0x2000, 0)]);
        t.merge_unnamed(vec![Symbol::new("", 0x2000, 0x80), Symbol::new("", 0x3000, 0x10)]);
        t.merge(vec![Symbol::new("g", 0x5000, 0x10)]);
        let ext = |a| function_extent(&t, a).map(|s| (s.name.to_string(), s.start, s.size));
        assert_eq!(ext(0x1010), Some(("f".into(), 0x1000, 0x40)));
        assert_eq!(ext(0x2010), Some(("".into(), 0x2000, 0x80)), "the extent beats an unsized label");
        assert_eq!(ext(0x2090), Some(("label".into(), 0x2000, 0)), "past the extent: the label");
        assert_eq!(ext(0x3008), Some(("".into(), 0x3000, 0x10)), "kept through a merge");
        assert_eq!(ext(0x3010), Some(("label".into(), 0x2000, 0)), "an unsized label reaches the next symbol");
        assert_eq!(ext(0x900), None);
        assert_eq!(
            t.lookup(0x3008).map(|s| s.name.to_string()),
            Some("label".into()),
            "lookups name only named functions"
        );
    }

    #[test]
    fn lookup_respects_sizes_and_aliases() {
        let t = SymbolTable::new(vec![
            Symbol::new("__memcpy", 0x1000, 0x40),
            Symbol::new("memcpy", 0x1000, 0x40),
            Symbol::new("label", 0x2000, 0),
            Symbol::new("next", 0x2100, 0x10),
        ]);
        assert_eq!(&*t.lookup(0x1000).unwrap().name, "memcpy");
        assert_eq!(&*t.lookup(0x103f).unwrap().name, "memcpy");
        assert!(t.lookup(0x1040).is_none(), "gap after a sized symbol");
        assert_eq!(&*t.lookup(0x20ff).unwrap().name, "label");
        assert_eq!(&*t.lookup(0x2100).unwrap().name, "next");
        assert!(t.lookup(0x2110).is_none());
        assert!(t.lookup(0xfff).is_none());
        assert_eq!(t.address_of("next"), Some(0x2100));
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name("foo.cold"), "foo");
        assert_eq!(base_name("foo.isra.0"), "foo");
        assert_eq!(base_name(".hidden"), ".hidden");
        assert_eq!(base_name(".cold"), ".cold");
        assert_eq!(base_name(".cold.1"), ".cold");
        assert_eq!(base_name("..cold"), "..cold");
        assert_eq!(base_name(".text.cold"), ".text");
        assert_eq!(base_name("."), ".");
    }

    #[test]
    fn cold_parents_end_after_one_step() {
        assert_eq!(cold_parent("foo.cold"), Some("foo"));
        assert_eq!(cold_parent("foo.cold.3"), Some("foo"));
        assert_eq!(cold_parent("foo.part.0.cold"), Some("foo.part.0"));
        for none in [
            ".cold",
            ".cold.1",
            "..cold",
            "...cold.2",
            ".text.cold",
            "foo",
            "foo.coldx",
            "foo.cold.x",
            "foo.cold.cold",
            ".",
        ] {
            assert_eq!(cold_parent(none), None, "{none}");
        }
        // Whatever the name, a parent is never itself a split-off part.
        for n in ["a.cold", ".a.cold.1", "x.cold.cold.1", "..cold.cold", "a..cold"] {
            if let Some(p) = cold_parent(n) {
                assert!(p.len() < n.len() && cold_parent(p).is_none(), "{n} -> {p}");
            }
        }
    }
}
