//! A map bounded by least-recent use, for state kept per client (rate-limit
//! buckets, filter sources): a full map forgets its least recently used entry
//! instead of everything at once, and entries can be expired oldest first.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

pub struct LruMap<K, V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<K, (V, u64)>,
    /// Use order: tick of last use → key.
    order: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V> LruMap<K, V> {
    /// At least one entry is kept.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `key`, marked most recently used, made by `make` when
    /// absent; the entry evicted to make room, if one was.
    pub fn get_or_insert_with(
        &mut self,
        key: &K,
        make: impl FnOnce() -> V,
    ) -> (&mut V, Option<(K, V)>) {
        self.tick += 1;
        let tick = self.tick;
        let evicted = if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            self.pop_oldest()
        } else {
            None
        };
        let slot = self
            .entries
            .entry(key.clone())
            .or_insert_with(|| (make(), tick));
        if slot.1 != tick {
            self.order.remove(&slot.1);
            slot.1 = tick;
        }
        self.order.insert(tick, key.clone());
        (&mut slot.0, evicted)
    }

    /// Removes and returns the least recently used entry.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        let (_, key) = self.order.pop_first()?;
        let (v, _) = self.entries.remove(&key)?;
        Some((key, v))
    }

    /// The least recently used entry.
    pub fn peek_oldest(&self) -> Option<(&K, &V)> {
        let (_, key) = self.order.first_key_value()?;
        self.entries.get(key).map(|(v, _)| (key, v))
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut m = LruMap::new(2);
        *m.get_or_insert_with(&"a", || 1).0 += 0;
        m.get_or_insert_with(&"b", || 2);
        m.get_or_insert_with(&"a", || 9); // a is now newer than b
        let (_, evicted) = m.get_or_insert_with(&"c", || 3);
        assert_eq!(evicted, Some(("b", 2)));
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(&"a"), Some(&1));
        assert_eq!(m.peek_oldest(), Some((&"a", &1)));
        assert_eq!(m.pop_oldest(), Some(("a", 1)));
        assert_eq!(m.pop_oldest(), Some(("c", 3)));
        assert!(m.is_empty());
    }
}
