//! The layout of the function holding a pc in a live image: its symbol, its
//! code read from memory (as the debugger sees it, alternatives applied), and
//! `.cold` parts analysed in the state their parent jumps into them with.

use std::sync::Arc;

use super::{analyze_with, FunctionLayout, Limits, Options, Rule};
use crate::memory::Memory;
use crate::symbols::{cold_parent, Symbol, Symbols};
use crate::x86::decode::read_code;

/// Bytes analysed at most for one function (its symbol size, or this much when unsized).
const MAX_FUNCTION: u64 = 256 * 1024;
const UNSIZED: u64 = 16 * 1024;

fn analyze_symbol<S: Symbols>(
    syms: &S,
    sym: &Symbol,
    code: &[u8],
    entries: Vec<(u64, super::State)>,
) -> FunctionLayout {
    let noreturn = super::noreturn::noreturn_by_symbols(syms);
    let return_thunks = syms.address_of("__x86_return_thunk").into_iter().collect();
    let opts = Options {
        limits: Limits::default(),
        noreturn: Some(&noreturn),
        entries,
        ud2_continues: sym.start >= 0xffff_8000_0000_0000,
        return_thunks,
        // A frame in a catch block stands where only the unwinder enters.
        landing_pads: syms.landing_pads(sym.start),
        ..Options::default()
    };
    analyze_with(code, sym.start, &opts)
}

/// The layout of the function holding `pc` and the rule before the instruction at `pc`.
pub fn rule_at<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    pc: u64,
) -> Result<(Symbol, Arc<FunctionLayout>, Rule), &'static str> {
    let sym = crate::symbols::function_extent(syms, pc).ok_or("no symbol")?;
    let layout = layout_of(mem, syms, &sym)?;
    let rule = layout.rule_at(pc).cloned().ok_or("pc not reached by the analysis")?;
    Ok((sym, layout, rule))
}

/// How deep a layout may ask for layouts while it is computed (a `.cold` part
/// asks for its parent's: 2); deeper is a cycle, refused before it recurses.
const MAX_LAYOUT_NESTING: u32 = 4;

/// The (cached) layout of a function; a `.cold` part starts from its parent's jumps into it.
pub fn layout_of<M: Memory, S: Symbols>(mem: &M, syms: &S, sym: &Symbol) -> Result<Arc<FunctionLayout>, &'static str> {
    layout_nested(mem, syms, sym, 0)
}

/// [`layout_of`] asked by `depth` layouts being computed.
fn layout_nested<M: Memory, S: Symbols>(mem: &M, syms: &S, sym: &Symbol, depth: u32) -> LayoutResult {
    remembered_layout(mem, (sym.start, sym.size), depth, || layout_uncached(mem, syms, sym, depth + 1))
}

type LayoutResult = Result<Arc<FunctionLayout>, &'static str>;

/// A function's layout (start, size), read and looked up once per check.
fn remembered_layout<M: Memory>(
    mem: &M,
    key: (u64, u64),
    depth: u32,
    compute: impl FnOnce() -> LayoutResult,
) -> LayoutResult {
    if depth >= MAX_LAYOUT_NESTING {
        return Err("layouts ask for each other in a cycle");
    }
    enum Layouts {}
    crate::memory::remembered::<Layouts, _, _>(mem, key, compute)
}

fn layout_uncached<M: Memory, S: Symbols>(mem: &M, syms: &S, sym: &Symbol, depth: u32) -> LayoutResult {
    if sym.size == 0 {
        // An assembly label (entry code, a label inside a function): neither its
        // extent nor the state it is entered in is known.
        return Err("unsized symbol: no known entry state");
    }
    let len = if sym.size == 0 { UNSIZED } else { sym.size.min(MAX_FUNCTION) };
    let code = read_code(mem, sym.start, len as usize).map_err(|_| "code unreadable")?;
    let key = cache::key(sym, &code);
    if let Some(l) = cache::get(syms, &key) {
        return Ok(l);
    }
    let entries = if let Some(parent_name) = cold_parent(&sym.name) {
        // The parent is no split-off part itself, so its layout asks for no other: one step.
        let parent_start = syms.address_of(parent_name).ok_or("parent of .cold part unknown")?;
        let parent = syms
            .lookup(parent_start)
            .filter(|p| cold_parent(&p.name).is_none() && p.start != sym.start)
            .ok_or("parent of .cold part unknown")?;
        let pl = layout_nested(mem, syms, &parent, depth)?;
        let end = sym.start.saturating_add(len);
        let e = pl.entries_into(sym.start, end);
        if e.is_empty() {
            return Err("no jump into the .cold part");
        }
        e
    } else {
        Vec::new()
    };
    let l = Arc::new(analyze_symbol(syms, sym, &code, entries));
    cache::put(syms, key, l.clone());
    Ok(l)
}

mod cache {
    //! Each function's code is analysed once per symbol table, keyed by where it is and
    //! what it is (its bytes and name), in the table's store.
    use super::*;
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};

    pub type Key = (u64, u64);
    const MAX: usize = 1 << 14;
    enum Layouts {}

    pub fn key(sym: &Symbol, code: &[u8]) -> Key {
        let mut h = DefaultHasher::new();
        code.hash(&mut h);
        sym.name.hash(&mut h);
        (sym.start, h.finish())
    }

    pub fn get<S: Symbols>(syms: &S, key: &Key) -> Option<Arc<FunctionLayout>> {
        syms.store()?.get::<Layouts, Key, Arc<FunctionLayout>>(key)
    }

    pub fn put<S: Symbols>(syms: &S, key: Key, l: Arc<FunctionLayout>) {
        if let Some(store) = syms.store() {
            store.put::<Layouts, _, _>(key, l, MAX);
        }
    }
}

#[cfg(test)]
mod cycle_tests {
    use super::*;

    /// A layout that asks for itself (what a `.cold` part that is its own parent did) ends.
    fn self_asking<M: Memory>(mem: &M, n: &mut u32, depth: u32) -> LayoutResult {
        *n += 1;
        remembered_layout(mem, (1, 2), depth, || self_asking(mem, n, depth + 1))
    }

    #[test]
    fn a_layout_cycle_ends() {
        for scopedness in [false, true] {
            let mut n = 0;
            let mem = crate::memory::Regions::new();
            let r = if scopedness {
                crate::memory::scoped(&mem, |m| self_asking(m, &mut n, 0))
            } else {
                self_asking(&mem, &mut n, 0)
            };
            assert!(r.is_err());
            assert_eq!(n, MAX_LAYOUT_NESTING + 1);
        }
    }
}
