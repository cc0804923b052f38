//! Answers remembered while one check reads one memory image.
//!
//! A check asks the same questions many times (the unwinder and the verifier
//! both decode the call before every return address; a 5000-deep recursion
//! asks 5000 times whether `rec` leads to `rec`). Answers depend on memory, so
//! they are kept only inside [`scoped`], which a check wraps around its work.
//! Each question has its own table, named by the asker's own tag type: the memo
//! knows nothing of what it holds, so no module depends on another through it.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;

type Tables = HashMap<TypeId, Box<dyn Any>>;

thread_local! {
    static MEMO: RefCell<Option<Tables>> = const { RefCell::new(None) };
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
            *m = Some(Tables::new());
        }
        fresh
    });
    let _reset = Reset(outer);
    f()
}

fn table<Tag: 'static, K: 'static, V: 'static>(t: &mut Tables) -> Option<&mut HashMap<K, V>> {
    t.entry(TypeId::of::<(Tag, K, V)>()).or_insert_with(|| Box::new(HashMap::<K, V>::new())).downcast_mut()
}

/// The answer for `key` in the table of `Tag`, computed once per scope (every time
/// outside one).
pub fn remembered<Tag: 'static, K: Eq + Hash + 'static, V: Clone + 'static>(key: K, compute: impl FnOnce() -> V) -> V {
    if let Some(hit) = MEMO.with(|m| m.borrow_mut().as_mut().and_then(|t| table::<Tag, K, V>(t)?.get(&key).cloned())) {
        return hit;
    }
    // Computing may ask the memo again (a `.cold` part's parent layout): no borrow held here.
    let r = compute();
    MEMO.with(|m| {
        if let Some(t) = m.borrow_mut().as_mut().and_then(|t| table::<Tag, K, V>(t)) {
            t.insert(key, r.clone());
        }
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    enum A {}
    enum B {}

    #[test]
    fn tables_are_apart_and_live_for_the_scope() {
        let mut n = 0;
        let mut ask = |tag_a: bool| {
            let mut count = || {
                n += 1;
                n
            };
            if tag_a {
                remembered::<A, _, _>(1u64, &mut count)
            } else {
                remembered::<B, _, _>(1u64, &mut count)
            }
        };
        scoped(|| {
            assert_eq!(ask(true), 1);
            assert_eq!(ask(true), 1, "remembered");
            assert_eq!(ask(false), 2, "another table");
        });
        assert_eq!(ask(true), 3, "forgotten after the scope");
        assert_eq!(ask(true), 4, "not remembered outside a scope");
    }
}
