//! Decoding results remembered while one check reads one memory image.
//!
//! A check asks the same questions many times (the unwinder and the verifier
//! both decode the call before every return address; a 5000-deep recursion
//! asks 5000 times whether `rec` leads to `rec`). Answers depend on memory, so
//! they are kept only inside [`scoped`], which a check wraps around its work.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hash;

use std::sync::Arc;

use super::callsite::CallCheck;
use super::target::TargetMatch;
use crate::layout::FunctionLayout;
use crate::memory::ReadError;

type LayoutResult = Result<Arc<FunctionLayout>, &'static str>;

#[derive(Default)]
struct Memo {
    calls: HashMap<(u64, Option<u64>), Result<CallCheck, ReadError>>,
    targets: HashMap<(u64, u64, Arc<str>), TargetMatch>,
    savers: HashMap<(u64, usize, i32), Option<(u64, String)>>,
    layouts: HashMap<(u64, u64), LayoutResult>,
}

thread_local! {
    static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
}

/// Run `f` with answers remembered; they are forgotten when it returns.
pub fn scoped<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            if self.0 {
                MEMO.with(|m| *m.borrow_mut() = None);
            }
        }
    }
    let outer = MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let fresh = m.is_none();
        if fresh {
            *m = Some(Memo::default());
        }
        fresh
    });
    let _reset = Reset(outer);
    f()
}

/// The answer for `key` in one of the memo's tables, computed once per scope.
fn remembered<K: Eq + Hash, V: Clone>(
    table: fn(&mut Memo) -> &mut HashMap<K, V>,
    key: K,
    compute: impl FnOnce() -> V,
) -> V {
    if let Some(hit) = MEMO.with(|m| m.borrow_mut().as_mut().and_then(|m| table(m).get(&key).cloned())) {
        return hit;
    }
    // Computing may ask the memo again (a `.cold` part's parent layout): no borrow held here.
    let r = compute();
    MEMO.with(|m| {
        if let Some(m) = m.borrow_mut().as_mut() {
            table(m).insert(key, r.clone());
        }
    });
    r
}

pub(super) fn call(
    key: (u64, Option<u64>),
    compute: impl FnOnce() -> Result<CallCheck, ReadError>,
) -> Result<CallCheck, ReadError> {
    remembered(|m| &mut m.calls, key, compute)
}

pub(super) fn target(key: (u64, u64, Arc<str>), compute: impl FnOnce() -> TargetMatch) -> TargetMatch {
    remembered(|m| &mut m.targets, key, compute)
}

/// The instruction that saved a callee-saved register (function start, register index, CFA offset).
pub fn saver(key: (u64, usize, i32), compute: impl FnOnce() -> Option<(u64, String)>) -> Option<(u64, String)> {
    remembered(|m| &mut m.savers, key, compute)
}

/// How deep a layout may ask for layouts while it is computed (a `.cold` part
/// asks for its parent's: 2); deeper is a cycle, refused before it recurses.
const MAX_LAYOUT_NESTING: u32 = 4;

thread_local! {
    static LAYOUT_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// A function's layout (start, size): its code is read and looked up once per check.
pub fn layout(key: (u64, u64), compute: impl FnOnce() -> LayoutResult) -> LayoutResult {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            LAYOUT_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    let depth = LAYOUT_DEPTH.with(|d| d.get());
    if depth >= MAX_LAYOUT_NESTING {
        return Err("layouts ask for each other in a cycle");
    }
    LAYOUT_DEPTH.with(|d| d.set(depth + 1));
    let _leave = Leave;
    remembered(|m| &mut m.layouts, key, compute)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout that asks for itself (what a `.cold` part that is its own parent did) ends.
    fn self_asking(n: &mut u32) -> LayoutResult {
        *n += 1;
        layout((1, 2), || self_asking(n))
    }

    #[test]
    fn a_layout_cycle_ends() {
        for scopedness in [false, true] {
            let mut n = 0;
            let r = if scopedness { scoped(|| self_asking(&mut n)) } else { self_asking(&mut n) };
            assert!(r.is_err());
            assert_eq!(n, MAX_LAYOUT_NESTING + 1);
            assert_eq!(LAYOUT_DEPTH.with(|d| d.get()), 0);
        }
    }
}
