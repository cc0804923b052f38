//! Answers remembered while one check reads one memory image.
//!
//! A check asks the same questions many times (the unwinder and the verifier
//! both decode the call before every return address; a 5000-deep recursion
//! asks 5000 times whether `rec` leads to `rec`). Answers depend on memory, so
//! a [`Memo`] is held by the memory view a check reads
//! ([`crate::memory::scoped`]) and passed down with it: no global, no thread-local.
//! Each question has its own table, named by the asker's own tag type: the memo
//! knows nothing of what it holds, so no module depends on another through it.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;

type Tables = HashMap<TypeId, Box<dyn Any>>;

/// The answers of one check, held by the memory view it reads
/// ([`crate::memory::scoped`]): they die with it.
#[derive(Default)]
pub struct Memo(RefCell<Tables>);

fn table<Tag: 'static, K: 'static, V: 'static>(t: &mut Tables) -> Option<&mut HashMap<K, V>> {
    t.entry(TypeId::of::<(Tag, K, V)>()).or_insert_with(|| Box::new(HashMap::<K, V>::new())).downcast_mut()
}

impl Memo {
    /// The answer for `key` in the table of `Tag`, computed once.
    pub fn remembered<Tag: 'static, K: Eq + Hash + 'static, V: Clone + 'static>(
        &self,
        key: K,
        compute: impl FnOnce() -> V,
    ) -> V {
        if let Some(hit) = table::<Tag, K, V>(&mut self.0.borrow_mut()).and_then(|t| t.get(&key).cloned()) {
            return hit;
        }
        // Computing may ask the memo again (a `.cold` part's parent layout): no borrow held here.
        let r = compute();
        if let Some(t) = table::<Tag, K, V>(&mut self.0.borrow_mut()) {
            t.insert(key, r.clone());
        }
        r
    }
}

/// Answers kept as long as their owner is (a symbol table: what its functions' code
/// gives), in a table per asker's tag type, each at most `max` entries (then emptied).
/// The explicit counterpart of a global cache: whoever holds the owner holds these.
#[derive(Default)]
pub struct Store(std::sync::Mutex<HashMap<TypeId, Box<dyn Any + Send>>>);

impl Store {
    pub fn get<Tag: 'static, K: Eq + Hash + Send + 'static, V: Clone + Send + 'static>(&self, key: &K) -> Option<V> {
        let mut t = self.0.lock().ok()?;
        t.get_mut(&TypeId::of::<(Tag, K, V)>())?.downcast_mut::<HashMap<K, V>>()?.get(key).cloned()
    }

    pub fn put<Tag: 'static, K: Eq + Hash + Send + 'static, V: Send + 'static>(&self, key: K, value: V, max: usize) {
        let Ok(mut t) = self.0.lock() else { return };
        let entry = t.entry(TypeId::of::<(Tag, K, V)>()).or_insert_with(|| Box::new(HashMap::<K, V>::new()));
        if let Some(m) = entry.downcast_mut::<HashMap<K, V>>() {
            if m.len() >= max {
                m.clear();
            }
            m.insert(key, value);
        }
    }
}

impl Clone for Store {
    /// A copy of the owner starts with nothing remembered.
    fn clone(&self) -> Self {
        Store::default()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum A {}
    enum B {}

    #[test]
    fn a_store_keeps_each_table_apart_and_bounded() {
        let s = Store::default();
        s.put::<A, _, _>(1u64, "a", 2);
        s.put::<B, _, _>(1u64, "b", 2);
        assert_eq!(s.get::<A, u64, &str>(&1), Some("a"));
        assert_eq!(s.get::<B, u64, &str>(&1), Some("b"));
        s.put::<A, _, _>(2u64, "a2", 2);
        s.put::<A, _, _>(3u64, "a3", 2); // full: emptied first
        assert_eq!(s.get::<A, u64, &str>(&1), None);
        assert_eq!(s.get::<A, u64, &str>(&3), Some("a3"));
        assert_eq!(s.clone().get::<B, u64, &str>(&1), None);
    }

    #[test]
    fn tables_are_apart_and_live_with_the_memo() {
        let mut n = 0;
        let memo = Memo::default();
        let mut ask = |m: &Memo, tag_a: bool| {
            let mut count = || {
                n += 1;
                n
            };
            if tag_a {
                m.remembered::<A, _, _>(1u64, &mut count)
            } else {
                m.remembered::<B, _, _>(1u64, &mut count)
            }
        };
        assert_eq!(ask(&memo, true), 1);
        assert_eq!(ask(&memo, true), 1, "remembered");
        assert_eq!(ask(&memo, false), 2, "another table");
        assert_eq!(ask(&Memo::default(), true), 3, "a new memo knows nothing");
    }
}
