//! Bounded `process_name` label values, shared by every probe that labels by process.
//!
//! A process group is what the kernel side keys by (the thread's `comm`). Each probe keeps a
//! [`ProcessNames`]: the K most active groups keep their own name, every other group is
//! counted under [`OTHER`]. A free slot goes to the most active unnamed group; a slot is kept
//! until its group has been idle for the grace period, or until an unnamed group becomes more
//! than twice as active (moving average over scrapes) as the least active named one, which then
//! hands its slot over. Every exported counter stays monotonic: a group's deltas always go to
//! the one label it holds at that moment, and a label's series is only ever removed (when its
//! group expires or loses its name), never decreased.
//!
//! [`GroupCounters`] turns the kernel's raw cumulative counters per `(group, sub-key)` into the
//! exported `(process_name, sub-key)` counters: raw sources that restart (deleted and
//! re-created map entries) add their new value, sources idle past the grace period are
//! returned for deletion from the kernel map, and the named series of expired groups go away.
use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    time::{Duration, Instant},
};

/// Label value of every group without a named slot.
pub const OTHER: &str = "other";

/// Label values hostlens gives itself: a process with such a name gets a leading `\`.
pub const RESERVED: [&str; 2] = [OTHER, "unknown"];

/// The group name of a thread's `comm` (the bytes up to the first NUL), one to one, so that
/// two different comms never share a group and the kernel's key can be rebuilt from it
/// ([`comm_bytes`]): UTF-8 text as it is, a backslash doubled, a byte that is not UTF-8 as
/// `\xHH`; an empty name, or one equal to a [`RESERVED`] label, gets a leading backslash.
pub fn comm_label(comm: &[u8]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    let mut rest = &comm[..end];
    let mut out = String::with_capacity(end);
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(v) => (v, &[][..]),
            Err(e) => {
                // The first `valid_up_to` bytes are UTF-8 by definition.
                let (v, b) = rest.split_at(e.valid_up_to());
                (std::str::from_utf8(v).unwrap_or_default(), b)
            }
        };
        out.push_str(&valid.replace('\\', "\\\\"));
        let Some((&b, tail)) = bad.split_first() else {
            break;
        };
        out.push_str(&format!("\\x{b:02x}"));
        rest = tail;
    }
    if out.is_empty() || RESERVED.contains(&out.as_str()) {
        out.insert(0, '\\');
    }
    out
}

/// The kernel's 16-byte `comm` key of a [`comm_label`] (None: not one it makes).
pub fn comm_bytes(label: &str) -> Option<[u8; 16]> {
    let text = match label.strip_prefix('\\') {
        Some(r) if r.is_empty() || RESERVED.contains(&r) => r,
        _ => label,
    };
    let mut raw = Vec::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            raw.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1)? {
            b'\\' => {
                raw.push(b'\\');
                i += 2;
            }
            b'x' => {
                let hex = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
                raw.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    // A comm is at most 15 bytes and a NUL.
    if raw.len() > 15 || raw.contains(&0) {
        return None;
    }
    let mut key = [0u8; 16];
    key[..raw.len()].copy_from_slice(&raw);
    Some(key)
}

/// Default number of named process groups per probe (`process_names.top_k`).
pub const DEFAULT_TOP_K: usize = 50;
/// Default time a group must be idle before its series and map entries go
/// (`process_names.grace_period`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameLimits {
    /// How many groups keep their own name (K).
    pub top_k: usize,
    /// Idle time after which a group's series are removed.
    pub grace: Duration,
}

impl Default for NameLimits {
    fn default() -> Self {
        Self {
            top_k: DEFAULT_TOP_K,
            grace: DEFAULT_GRACE,
        }
    }
}

#[derive(Debug)]
struct Group {
    named: bool,
    last_active: Instant,
    /// Activity recorded in the current round.
    round: u64,
    /// Exponential moving average of the per-round activity (weight 1/2 per round).
    ema: f64,
}

/// Which process groups keep their name.
#[derive(Debug)]
pub struct ProcessNames {
    limits: NameLimits,
    groups: HashMap<String, Group>,
    named: usize,
}

impl ProcessNames {
    pub fn new(limits: NameLimits) -> Self {
        Self {
            limits,
            groups: HashMap::new(),
            named: 0,
        }
    }

    /// Records `activity` (a counter delta) of `group` in the current round. A group seen with
    /// zero activity is known but not refreshed.
    pub fn record(&mut self, group: &str, activity: u64, now: Instant) {
        match self.groups.get_mut(group) {
            Some(g) => {
                g.round = g.round.saturating_add(activity);
                if activity > 0 {
                    g.last_active = now;
                }
            }
            None => {
                self.groups.insert(
                    group.to_string(),
                    Group {
                        named: false,
                        last_active: now,
                        round: activity,
                        ema: 0.0,
                    },
                );
            }
        }
    }

    /// Ends a round: forgets groups idle for longer than the grace period, gives the free
    /// named slots to the most active groups without one, and hands a slot over when an
    /// unnamed group has become clearly (more than twice) more active, on average, than the
    /// least active named one. Returns the groups that lost their name (expired or
    /// displaced), so that their named series can be removed.
    pub fn end_round(&mut self, now: Instant) -> Vec<String> {
        let grace = self.limits.grace;
        for g in self.groups.values_mut() {
            g.ema = g.ema * 0.5 + g.round as f64 * 0.5;
        }
        let mut lost: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| now.saturating_duration_since(g.last_active) > grace)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &lost {
            if let Some(g) = self.groups.remove(n)
                && g.named
            {
                self.named -= 1;
            }
        }
        let free = self.limits.top_k.saturating_sub(self.named);
        if free > 0 {
            let mut candidates: Vec<(&String, u64)> = self
                .groups
                .iter()
                .filter(|(_, g)| !g.named && g.round > 0)
                .map(|(n, g)| (n, g.round))
                .collect();
            // Most active first; the name breaks ties so the choice is deterministic.
            candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            let chosen: Vec<String> = candidates
                .into_iter()
                .take(free)
                .map(|(n, _)| n.clone())
                .collect();
            for n in chosen {
                if let Some(g) = self.groups.get_mut(&n) {
                    g.named = true;
                    self.named += 1;
                }
            }
        }
        // Displacement, at most K per round; the factor 2 keeps names from flapping.
        for _ in 0..self.limits.top_k {
            let best = self
                .groups
                .iter()
                .filter(|(_, g)| !g.named)
                .max_by(|a, b| a.1.ema.total_cmp(&b.1.ema).then_with(|| b.0.cmp(a.0)));
            let worst = self
                .groups
                .iter()
                .filter(|(_, g)| g.named)
                .min_by(|a, b| a.1.ema.total_cmp(&b.1.ema).then_with(|| b.0.cmp(a.0)));
            let (Some((b, bg)), Some((w, wg))) = (best, worst) else {
                break;
            };
            if bg.ema <= 2.0 * wg.ema + 1.0 {
                break;
            }
            let (b, w) = (b.clone(), w.clone());
            if let Some(g) = self.groups.get_mut(&b) {
                g.named = true;
            }
            if let Some(g) = self.groups.get_mut(&w) {
                g.named = false;
            }
            lost.push(w);
        }
        for g in self.groups.values_mut() {
            g.round = 0;
        }
        lost
    }

    /// The label value of `group`: its own name when it holds a slot, else [`OTHER`].
    pub fn label<'a>(&self, group: &'a str) -> &'a str {
        match self.groups.get(group) {
            Some(g) if g.named => group,
            _ => OTHER,
        }
    }

    /// Groups currently tracked (named or not).
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[derive(Debug)]
struct Source<const N: usize> {
    last: [u64; N],
    changed: Instant,
}

/// Raw kernel counters per `(group, sub)` → monotonic exported counters per
/// `(process_name, sub)`, `N` values each (e.g. calls and errors).
#[derive(Debug)]
pub struct GroupCounters<S, const N: usize> {
    names: ProcessNames,
    sources: HashMap<(String, S), Source<N>>,
    series: BTreeMap<(String, S), [u64; N]>,
}

/// One raw reading: the group, the sub-key and its cumulative values.
pub type Reading<S, const N: usize> = (String, S, [u64; N]);

impl<S: Clone + Ord + Hash + Eq, const N: usize> GroupCounters<S, N> {
    pub fn new(limits: NameLimits) -> Self {
        Self {
            names: ProcessNames::new(limits),
            sources: HashMap::new(),
            series: BTreeMap::new(),
        }
    }

    /// Folds one complete reading of the kernel map into the exported series. Returns the
    /// sources idle past the grace period with the values last read: the caller deletes them
    /// from the kernel map, hands anything counted since that read to [`Self::fold_late`], and
    /// a later re-creation counts from its new value.
    pub fn update(&mut self, readings: Vec<Reading<S, N>>, now: Instant) -> Vec<Reading<S, N>> {
        let grace = self.names.limits.grace;
        let mut pending = Vec::with_capacity(readings.len());
        let mut seen = std::collections::HashSet::with_capacity(readings.len());
        for (group, sub, raw) in readings {
            let key = (group, sub);
            let delta: [u64; N] = match self.sources.get_mut(&key) {
                Some(src) => {
                    let mut d = [0u64; N];
                    // A value below the last one means the entry was deleted and re-created
                    // (LRU eviction, our own cleanup): everything in it is new.
                    let restarted = raw.iter().zip(src.last.iter()).any(|(r, l)| r < l);
                    for i in 0..N {
                        d[i] = if restarted {
                            raw[i]
                        } else {
                            raw[i] - src.last[i]
                        };
                    }
                    if d.iter().any(|v| *v > 0) {
                        src.changed = now;
                    }
                    src.last = raw;
                    d
                }
                None => {
                    self.sources.insert(
                        key.clone(),
                        Source {
                            last: raw,
                            changed: now,
                        },
                    );
                    raw
                }
            };
            let activity = delta.iter().fold(0u64, |a, v| a.saturating_add(*v));
            self.names.record(&key.0, activity, now);
            seen.insert(key.clone());
            pending.push((key, delta));
        }
        for group in self.names.end_round(now) {
            self.series.retain(|(label, _), _| *label != group);
        }
        for ((group, sub), delta) in pending {
            if delta.iter().all(|v| *v == 0) {
                continue;
            }
            let label = self.names.label(&group).to_string();
            let s = self.series.entry((label, sub)).or_insert([0; N]);
            for i in 0..N {
                s[i] = s[i].wrapping_add(delta[i]);
            }
        }
        // Sources gone from the map are forgotten; idle ones are handed back for deletion.
        let mut stale = Vec::new();
        self.sources.retain(|key, src| {
            if !seen.contains(key) {
                return false;
            }
            if now.saturating_duration_since(src.changed) > grace {
                stale.push((key.0.clone(), key.1.clone(), src.last));
                return false;
            }
            true
        });
        stale
    }

    /// Counts a deleted source held beyond the values [`Self::update`] last read (`last`):
    /// its final values `taken` came back with the deletion. The difference is added where
    /// the next reading would have put it.
    pub fn fold_late(&mut self, (group, sub, last): Reading<S, N>, taken: [u64; N], now: Instant) {
        // Below the last reading: the entry was re-created in between, all of it is new.
        let restarted = taken.iter().zip(last.iter()).any(|(t, l)| t < l);
        let mut delta = [0u64; N];
        for i in 0..N {
            delta[i] = if restarted {
                taken[i]
            } else {
                taken[i] - last[i]
            };
        }
        let activity = delta.iter().fold(0u64, |a, v| a.saturating_add(*v));
        if activity == 0 {
            return;
        }
        self.names.record(&group, activity, now);
        let label = self.names.label(&group).to_string();
        let s = self.series.entry((label, sub)).or_insert([0; N]);
        for i in 0..N {
            s[i] = s[i].wrapping_add(delta[i]);
        }
    }

    /// Exported series: `(process_name, sub)` -> values.
    pub fn series(&self) -> &BTreeMap<(String, S), [u64; N]> {
        &self.series
    }

    pub fn groups(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(s: &[u8]) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s);
        c
    }

    /// Every comm gets its own label, and the label gives the kernel key back: a name cut in
    /// the middle of a UTF-8 character, two names differing only in an invalid byte, a
    /// backslash, the labels hostlens uses itself, the empty name.
    #[test]
    fn comm_labels_are_one_to_one() {
        let cases: [(&[u8], &str); 9] = [
            (b"python3", "python3"),
            ("app-数据处".as_bytes(), "app-数据处"),
            (b"app-\xe6\x95\xb0\xe6\x8d", "app-数\\xe6\\x8d"),
            (b"a\xd0", "a\\xd0"),
            (b"a\xd1", "a\\xd1"),
            (b"x\\y", "x\\\\y"),
            (b"other", "\\other"),
            (b"unknown", "\\unknown"),
            (b"", "\\"),
        ];
        let mut seen = std::collections::HashSet::new();
        for (raw, label) in cases {
            let c = comm(raw);
            assert_eq!(comm_label(&c), label, "{raw:?}");
            assert_eq!(comm_bytes(label), Some(c), "{label}");
            assert!(seen.insert(comm_label(&c)), "{label} twice");
        }
        // Exhaustively over short names of awkward bytes.
        let alphabet = [b'a', b'\\', b'x', 0xc3, 0xa9, 0xff];
        let mut labels = std::collections::HashSet::new();
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    let k = comm(&[a, b, c]);
                    let l = comm_label(&k);
                    assert_eq!(comm_bytes(&l), Some(k), "{l}");
                    assert!(labels.insert(l));
                }
            }
        }
        assert_eq!(comm_bytes("bad\\q"), None);
        assert_eq!(comm_bytes("\\x4"), None);
    }

    fn limits(k: usize, grace_s: u64) -> NameLimits {
        NameLimits {
            top_k: k,
            grace: Duration::from_secs(grace_s),
        }
    }

    fn r(g: &str, s: &'static str, v: u64) -> Reading<&'static str, 1> {
        (g.to_string(), s, [v])
    }

    #[test]
    fn top_k_by_activity_keep_their_name_rest_is_other() {
        let mut c = GroupCounters::<&str, 1>::new(limits(2, 60));
        let t0 = Instant::now();
        c.update(vec![r("a", "x", 10), r("b", "x", 100), r("c", "x", 50)], t0);
        let s = c.series();
        assert_eq!(s.get(&("b".into(), "x")), Some(&[100]));
        assert_eq!(s.get(&("c".into(), "x")), Some(&[50]));
        assert_eq!(s.get(&("other".into(), "x")), Some(&[10]));
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn counters_stay_monotonic_when_slots_are_sticky() {
        let mut c = GroupCounters::<&str, 1>::new(limits(1, 60));
        let t0 = Instant::now();
        c.update(vec![r("a", "x", 5), r("b", "x", 1)], t0);
        // b becomes somewhat more active, not clearly: a keeps its slot, b's deltas go to other.
        c.update(
            vec![r("a", "x", 6), r("b", "x", 4)],
            t0 + Duration::from_secs(1),
        );
        let s = c.series();
        assert_eq!(s.get(&("a".into(), "x")), Some(&[6]));
        assert_eq!(s.get(&("other".into(), "x")), Some(&[4]));
    }

    #[test]
    fn a_clearly_busier_group_takes_over_the_least_active_slot() {
        let mut c = GroupCounters::<&str, 1>::new(limits(1, 600));
        let t0 = Instant::now();
        c.update(vec![r("a", "x", 10), r("b", "x", 1)], t0);
        assert!(c.series().contains_key(&("a".into(), "x")));
        // a stays mildly active, b becomes 100 times busier: after a few rounds b is named,
        // a's series is removed and a counts under other from then on.
        let mut a = 10;
        let mut b = 1;
        for i in 1..6 {
            a += 1;
            b += 100;
            c.update(
                vec![r("a", "x", a), r("b", "x", b)],
                t0 + Duration::from_secs(i),
            );
        }
        let s = c.series();
        assert!(s.contains_key(&("b".into(), "x")), "{s:?}");
        assert!(!s.contains_key(&("a".into(), "x")), "{s:?}");
        // other only grows: b's first increment, then a's after it lost its name.
        let other = s.get(&("other".into(), "x")).unwrap()[0];
        assert!(other >= 2, "{s:?}");
        assert!(b > a);
    }

    #[test]
    fn idle_groups_expire_and_free_their_slot() {
        let mut c = GroupCounters::<&str, 1>::new(limits(1, 10));
        let t0 = Instant::now();
        c.update(vec![r("a", "x", 5), r("b", "x", 1)], t0);
        let stale = c.update(
            vec![r("a", "x", 5), r("b", "x", 3)],
            t0 + Duration::from_secs(11),
        );
        assert_eq!(stale, vec![("a".to_string(), "x", [5])]);
        assert!(!c.series().contains_key(&("a".into(), "x")), "a expired");
        // b was active, so it took the freed slot in that round; other keeps what it had.
        c.update(vec![r("b", "x", 4)], t0 + Duration::from_secs(12));
        let s = c.series();
        assert_eq!(s.get(&("other".into(), "x")), Some(&[1]));
        assert_eq!(s.get(&("b".into(), "x")), Some(&[3]));
    }

    #[test]
    fn a_count_landing_before_the_delete_is_kept() {
        let mut c = GroupCounters::<&str, 1>::new(limits(5, 10));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        c.update(vec![r("a", "x", 5), r("a", "y", 1)], t0);
        // y stays busy (a keeps its name); x is idle past the grace period: handed back for
        // deletion with the value last read.
        let stale = c.update(vec![r("a", "x", 5), r("a", "y", 9)], at(11));
        assert_eq!(stale, vec![("a".to_string(), "x", [5])]);
        // Two calls landed between that read and the delete: the delete returned 7.
        c.fold_late(stale[0].clone(), [7], at(11));
        assert_eq!(c.series().get(&("a".into(), "x")), Some(&[7]));
        // The kernel re-creates the entry from zero; the series goes on from there.
        c.update(vec![r("a", "x", 1), r("a", "y", 9)], at(12));
        assert_eq!(c.series().get(&("a".into(), "x")), Some(&[8]));
        // Nothing late: nothing changes.
        c.fold_late(r("a", "y", 9), [9], at(12));
        assert_eq!(c.series().get(&("a".into(), "y")), Some(&[9]));
        // Re-created in between (below the last reading): all of it is new.
        c.fold_late(r("a", "y", 9), [2], at(12));
        assert_eq!(c.series().get(&("a".into(), "y")), Some(&[11]));
        // A group no longer named counts under other, as its next reading would.
        c.fold_late(r("gone", "x", 3), [4], at(12));
        assert_eq!(c.series().get(&("other".into(), "x")), Some(&[1]));
    }

    #[test]
    fn restarted_source_adds_its_new_value() {
        let mut c = GroupCounters::<&str, 2>::new(limits(5, 60));
        let t0 = Instant::now();
        c.update(vec![("a".into(), "x", [10, 2])], t0);
        c.update(vec![("a".into(), "x", [3, 0])], t0 + Duration::from_secs(1));
        assert_eq!(c.series().get(&("a".into(), "x")), Some(&[13, 2]));
    }

    #[test]
    fn many_groups_stay_bounded() {
        let mut c = GroupCounters::<u32, 1>::new(limits(10, 5));
        let t0 = Instant::now();
        for round in 0..50u64 {
            let readings = (0..1000u32)
                .map(|i| (format!("p{}", round * 1000 + u64::from(i)), i % 3, [1]))
                .collect();
            c.update(readings, t0 + Duration::from_secs(round));
        }
        // 10 named groups × 3 sub-keys, plus other × 3.
        assert!(c.series().len() <= 33, "{}", c.series().len());
        assert!(c.groups() <= 7000, "{}", c.groups());
    }
}
