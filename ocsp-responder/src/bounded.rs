//! A map bounded by weight (bytes), for caches that would otherwise grow with
//! every serial ever asked about: a million cached responses carrying the
//! 500-byte signer certificate take about a gigabyte.
//!
//! Two generations approximate least-recently-used at no cost per hit: new
//! entries go into the young map; when it reaches half the budget it becomes
//! the old map and the previous old map is dropped. A hit in the old map is
//! promoted by the caller (`insert` again), so what is in use survives.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

pub(crate) struct Bounded<K, V> {
    young: HashMap<K, (V, usize)>,
    old: HashMap<K, (V, usize)>,
    young_weight: usize,
    old_weight: usize,
    /// Budget of each generation: half the whole.
    half: usize,
}

impl<K: Hash + Eq, V: Clone> Bounded<K, V> {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            young_weight: 0,
            old_weight: 0,
            half: (budget_bytes / 2).max(1),
        }
    }

    /// The value and whether it came from the old generation (then the caller
    /// should `insert` it again to keep it).
    pub fn get<Q>(&self, k: &Q) -> Option<(V, bool)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some((v, _)) = self.young.get(k) {
            return Some((v.clone(), false));
        }
        self.old.get(k).map(|(v, _)| (v.clone(), true))
    }

    /// Inserts with its weight in bytes (key, value and bookkeeping).
    pub fn insert(&mut self, k: K, v: V, weight: usize) {
        if self.young_weight + weight > self.half && !self.young.is_empty() {
            self.old = std::mem::take(&mut self.young);
            self.old_weight = self.young_weight;
            self.young_weight = 0;
        }
        if let Some((_, w)) = self.young.insert(k, (v, weight)) {
            self.young_weight -= w;
        }
        self.young_weight += weight;
    }

    pub fn remove<Q>(&mut self, k: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some((_, w)) = self.young.remove(k) {
            self.young_weight -= w;
        }
        if let Some((_, w)) = self.old.remove(k) {
            self.old_weight -= w;
        }
    }

    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
        self.young_weight = 0;
        self.old_weight = 0;
    }

    /// Entries held (both generations; a promoted key may count twice).
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Bytes held, by the weights given.
    pub fn weight(&self) -> usize {
        self.young_weight + self.old_weight
    }
}

#[cfg(test)]
mod tests {
    use super::Bounded;

    #[test]
    fn stays_within_budget_and_keeps_what_is_used() {
        let mut m = Bounded::new(10_000);
        for i in 0..100_000u32 {
            m.insert(i, i, 100);
            // Key 7 is asked about all the time: promoted whenever it is old.
            if let Some((_, old)) = m.get(&7u32)
                && old
            {
                m.insert(7, 7, 100);
            }
            assert!(m.weight() <= 10_000 + 100, "{}", m.weight());
        }
        assert_eq!(m.get(&7).map(|(v, _)| v), Some(7));
        assert_eq!(m.get(&5), None);
        assert!(m.get(&99_999).is_some());
        m.remove(&99_999);
        assert!(m.get(&99_999).is_none());
        assert!(m.len() <= 101);
        m.clear();
        assert_eq!((m.len(), m.weight()), (0, 0));
    }
}
