//! The histogram series of one metric family: found by label values, or by the slot number a
//! connection remembers from its previous request (keep-alive connections repeat the same
//! series, so most observations skip hashing the labels).
use std::hash::Hash;

use super::{BUCKETS, FastMap};

/// One histogram: counts per bucket of [`BUCKETS`] plus `+Inf`, sum and count.
#[derive(Debug, Clone, Default)]
pub struct Hist {
    pub buckets: [u64; BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Hist {
    pub fn observe(&mut self, v: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// A slot number handed out by [`Series::observe`], valid while the table's generation is
/// the one it was handed out under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    index: usize,
    generation: u64,
}

/// The series of one family, at most `max` of them; observations past the cap are counted
/// in `dropped`.
#[derive(Debug)]
pub struct Series<K> {
    slots: Vec<Option<(K, Hist)>>,
    index: FastMap<K, usize>,
    free: Vec<usize>,
    /// Bumped whenever a series is removed, so no remembered slot outlives its series.
    generation: u64,
    max: usize,
    pub dropped: u64,
}

impl<K: Clone + Eq + Hash> Series<K> {
    pub fn new(max: usize) -> Self {
        Series {
            slots: Vec::new(),
            index: FastMap::default(),
            free: Vec::new(),
            generation: 0,
            max,
            dropped: 0,
        }
    }

    /// Observes `v` under `key`; the series' slot, or None when the family is full.
    pub fn observe(&mut self, key: K, v: f64) -> Option<Slot> {
        let index = match self.index.get(&key) {
            Some(i) => *i,
            None if self.index.len() < self.max => {
                let i = match self.free.pop() {
                    Some(i) => i,
                    None => {
                        self.slots.push(None);
                        self.slots.len() - 1
                    }
                };
                self.slots[i] = Some((key.clone(), Hist::default()));
                self.index.insert(key, i);
                i
            }
            None => {
                self.dropped += 1;
                return None;
            }
        };
        let slot = Slot {
            index,
            generation: self.generation,
        };
        self.observe_slot(slot, v);
        Some(slot)
    }

    /// Observes `v` in the series of `slot`; false when the slot is stale (nothing observed).
    pub fn observe_slot(&mut self, slot: Slot, v: f64) -> bool {
        if slot.generation != self.generation {
            return false;
        }
        match self.slots.get_mut(slot.index) {
            Some(Some((_, h))) => {
                h.observe(v);
                true
            }
            _ => false,
        }
    }

    /// Keeps the series whose key `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        let mut removed = false;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Some((k, _)) = s
                && !keep(k)
            {
                self.index.remove(k);
                *s = None;
                self.free.push(i);
                removed = true;
            }
        }
        if removed {
            self.generation += 1;
        }
    }

    pub fn get(&self, key: &K) -> Option<&Hist> {
        let i = *self.index.get(key)?;
        self.slots[i].as_ref().map(|(_, h)| h)
    }
}

impl<K> Series<K> {
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Hist)> {
        self.slots.iter().flatten().map(|(k, h)| (k, h))
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_find_their_series_until_one_is_removed() {
        let mut s: Series<&str> = Series::new(2);
        let a = s.observe("a", 0.001).unwrap();
        let b = s.observe("b", 0.2).unwrap();
        assert_ne!(a, b);
        assert_eq!(s.observe("a", 0.003), Some(a));
        assert!(s.observe_slot(a, 0.004));
        assert_eq!(s.get(&"a").unwrap().count, 3);
        // Full: a third series is dropped and counted.
        assert_eq!(s.observe("c", 1.0), None);
        assert_eq!(s.dropped, 1);
        // Removing a series makes every remembered slot stale, even the kept one's.
        s.retain(|k| *k != "a");
        assert!(!s.observe_slot(b, 0.2));
        assert!(!s.observe_slot(a, 0.2));
        assert_eq!(s.get(&"b").unwrap().count, 1);
        // The freed slot is reused for the next new series.
        let c = s.observe("c", 1.0).unwrap();
        assert_eq!(c.index, a.index);
        assert_eq!(s.len(), 2);
        let mut keys: Vec<&str> = s.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(s.get(&"c").unwrap().buckets[BUCKETS.len() - 5], 1);
    }
}
