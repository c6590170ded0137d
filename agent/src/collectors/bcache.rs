//! `bcache`: reads `<sysfs>/fs/bcache/<uuid>/` (cache set: `average_key_size`,
//! `btree_cache_size`, `internal/*`, ...), each backing device `bdev<N>/` (`dirty_data`,
//! `writeback_rate_debug`, `stats_total/*`) and cache device `cache<N>/` (`io_errors`,
//! `metadata_written`, `written`); produces node_exporter 1.5's `node_bcache_*` families with
//! labels `uuid`, `backing_device`, `cache_device`; with `--collector.bcache.priorityStats`
//! also `node_bcache_priority_stats_{unused,metadata}_percent` from `cache<N>/priority_stats`.
//!
//! Values are printed by the kernel's `bch_hprint()` (drivers/md/bcache/util.c): `2.5M` is
//! 2 MiB plus 5/10.24 of a MiB (the digit after the point counts 1/1024ths times 10), so it is
//! decoded the same way procfs does, giving node_exporter's values exactly.
use std::path::{Path, PathBuf};

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    sysfs::{Samples, attr, list_dir},
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Bcache {
    dir: PathBuf,
    priority_stats: bool,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Bcache {
        dir: ctx.paths.sys("fs/bcache"),
        priority_stats: ctx.settings.bcache.priority_stats,
    }))
}

/// `priority_stats`: (unused percent, metadata percent), from the `Unused:` and `Metadata:`
/// lines (`99%`).
pub fn priority_stats(text: &str) -> Result<[Option<f64>; 2], LineError> {
    let mut out = [None; 2];
    for (i, line) in text.lines().enumerate() {
        let slot = if line.starts_with("Unused:") {
            0
        } else if line.starts_with("Metadata:") {
            1
        } else {
            continue;
        };
        let raw = line.split_whitespace().last().unwrap_or("");
        let v = raw.strip_suffix('%').unwrap_or(raw);
        out[slot] = Some(
            v.parse::<u64>()
                .map(|v| v as f64)
                .map_err(|_| LineError::new(i + 1, format!("{raw:?} is not a percentage")))?,
        );
    }
    Ok(out)
}

/// Decodes a `bch_hprint()` value (`12`, `2.5M`, `427.5k`); negative with a leading `-`.
pub fn dehumanize(s: &str) -> Result<f64, LineError> {
    let s = s.trim();
    let bad = || LineError::new(1, format!("{s:?} is not a bcache size"));
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let last = s.chars().last().ok_or_else(bad)?;
    let v = if last.is_ascii_digit() {
        s.parse::<f64>().map_err(|_| bad())?.trunc()
    } else {
        let exp = match last {
            'k' => 1,
            'M' => 2,
            'G' => 3,
            'T' => 4,
            'P' => 5,
            'E' => 6,
            'Z' => 7,
            'Y' => 8,
            _ => return Err(bad()),
        };
        let mul = 1024f64.powi(exp);
        let num = &s[..s.len() - 1];
        let mant = match num.split_once('.') {
            None => num.parse::<f64>().map_err(|_| bad())?,
            Some((i, f)) => {
                let i = i.parse::<f64>().map_err(|_| bad())?;
                let f = f.parse::<f64>().map_err(|_| bad())?;
                i + f / 10.24
            }
        };
        if !mant.is_finite() || mant < 0.0 {
            return Err(bad());
        }
        (mant * mul).trunc()
    };
    Ok(if neg { -v } else { v })
}

fn read(path: &Path) -> Result<Option<f64>, CollectorError> {
    match attr(path) {
        None => Ok(None),
        Some(t) => dehumanize(&t).map(Some).map_err(|e| e.at(path)),
    }
}

/// `writeback_rate_debug`: (rate, target, proportional, integral, change).
pub fn writeback(text: &str) -> Result<[Option<f64>; 5], LineError> {
    let mut out = [None; 5];
    for (i, line) in text.lines().enumerate() {
        let slot = match line.split(':').next().unwrap_or("") {
            "rate" => 0,
            "target" => 1,
            "proportional" => 2,
            "integral" => 3,
            "change" => 4,
            _ => continue,
        };
        let raw = line.split_whitespace().last().unwrap_or("");
        let v = raw.strip_suffix("/sec").unwrap_or(raw);
        out[slot] = Some(dehumanize(v).map_err(|e| LineError::new(i + 1, e.msg))?);
    }
    Ok(out)
}

const SET: &[(&str, &str, Kind, f64, &str)] = &[
    (
        "average_key_size",
        "average_key_size_sectors",
        Kind::Gauge,
        1.0,
        "Average data per key in the btree (sectors).",
    ),
    (
        "btree_cache_size",
        "btree_cache_size_bytes",
        Kind::Gauge,
        1.0,
        "Amount of memory currently used by the btree cache.",
    ),
    (
        "cache_available_percent",
        "cache_available_percent",
        Kind::Gauge,
        1.0,
        "Percentage of cache device without dirty data, usable for writeback (may contain clean cached data).",
    ),
    ("congested", "congested", Kind::Gauge, 1.0, "Congestion."),
    (
        "root_usage_percent",
        "root_usage_percent",
        Kind::Gauge,
        1.0,
        "Percentage of the root btree node in use (tree depth increases if too high).",
    ),
    (
        "tree_depth",
        "tree_depth",
        Kind::Gauge,
        1.0,
        "Depth of the btree.",
    ),
    (
        "internal/active_journal_entries",
        "active_journal_entries",
        Kind::Gauge,
        1.0,
        "Number of journal entries that are newer than the index.",
    ),
    (
        "internal/btree_nodes",
        "btree_nodes",
        Kind::Gauge,
        1.0,
        "Total nodes in the btree.",
    ),
    // node_exporter reads this microsecond value as nanoseconds; kept for compatibility.
    (
        "internal/btree_read_average_duration_us",
        "btree_read_average_duration_seconds",
        Kind::Gauge,
        1e-9,
        "Average btree read duration.",
    ),
    (
        "internal/cache_read_races",
        "cache_read_races_total",
        Kind::Counter,
        1.0,
        "Counts instances where while data was being read from the cache, the bucket was reused and invalidated - i.e. where the pointer was stale after the read completed.",
    ),
];

const BDEV_TOTALS: &[(&str, &str, &str)] = &[
    (
        "bypassed",
        "bypassed_bytes_total",
        "Amount of IO (both reads and writes) that has bypassed the cache.",
    ),
    (
        "cache_hits",
        "cache_hits_total",
        "Hits counted per individual IO as bcache sees them.",
    ),
    (
        "cache_misses",
        "cache_misses_total",
        "Misses counted per individual IO as bcache sees them.",
    ),
    (
        "cache_bypass_hits",
        "cache_bypass_hits_total",
        "Hits for IO intended to skip the cache.",
    ),
    (
        "cache_bypass_misses",
        "cache_bypass_misses_total",
        "Misses for IO intended to skip the cache.",
    ),
    (
        "cache_miss_collisions",
        "cache_miss_collisions_total",
        "Instances where data insertion from cache miss raced with write (data already present).",
    ),
    (
        "cache_readaheads",
        "cache_readaheads_total",
        "Count of times readahead occurred.",
    ),
];

const WRITEBACK: [(&str, &str); 5] = [
    (
        "writeback_rate",
        "Current writeback rate for this backing device in bytes.",
    ),
    (
        "dirty_target_bytes",
        "Current dirty data target threshold for this backing device in bytes.",
    ),
    (
        "writeback_rate_proportional_term",
        "Current result of proportional controller, part of writeback rate",
    ),
    (
        "writeback_rate_integral_term",
        "Current result of integral controller, part of writeback rate",
    ),
    (
        "writeback_change",
        "Last writeback rate change step for this backing device.",
    ),
];

const CACHE: &[(&str, &str, Kind, &str)] = &[
    (
        "io_errors",
        "io_errors",
        Kind::Gauge,
        "Number of errors that have occurred, decayed by io_error_halflife.",
    ),
    (
        "metadata_written",
        "metadata_written_bytes_total",
        Kind::Counter,
        "Sum of all non data writes (btree writes and all other metadata).",
    ),
    (
        "written",
        "written_bytes_total",
        Kind::Counter,
        "Sum of all data that has been written to the cache.",
    ),
];

fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
}

fn cache_set(
    m: &mut Samples,
    uuid: &str,
    dir: &Path,
    with_priority: bool,
) -> Result<(), CollectorError> {
    for (file, suffix, kind, mul, help) in SET {
        if let Some(v) = read(&dir.join(file))? {
            m.add(
                &format!("node_bcache_{suffix}"),
                help,
                *kind,
                &[("uuid", uuid)],
                v * mul,
            );
        }
    }
    for entry in list_dir(dir)? {
        let sub = dir.join(&entry);
        if numbered(&entry, "bdev") {
            let l = [("backing_device", entry.as_str()), ("uuid", uuid)];
            if let Some(v) = read(&sub.join("dirty_data"))? {
                m.gauge(
                    "node_bcache_dirty_data_bytes",
                    "Amount of dirty data for this backing device in the cache.",
                    &l,
                    v,
                );
            }
            let wpath = sub.join("writeback_rate_debug");
            if let Some(text) = attr(&wpath) {
                let vals = writeback(&text).map_err(|e| e.at(&wpath))?;
                for ((name, help), v) in WRITEBACK.iter().zip(vals) {
                    if let Some(v) = v {
                        m.gauge(&format!("node_bcache_{name}"), help, &l, v);
                    }
                }
            }
            for (file, suffix, help) in BDEV_TOTALS {
                if let Some(v) = read(&sub.join("stats_total").join(file))? {
                    m.add(&format!("node_bcache_{suffix}"), help, Kind::Counter, &l, v);
                }
            }
        } else if numbered(&entry, "cache") {
            let l = [("cache_device", entry.as_str()), ("uuid", uuid)];
            for (file, suffix, kind, help) in CACHE {
                if let Some(v) = read(&sub.join(file))? {
                    m.add(&format!("node_bcache_{suffix}"), help, *kind, &l, v);
                }
            }
            let ppath = sub.join("priority_stats");
            if with_priority && let Some(text) = attr(&ppath) {
                let [unused, metadata] = priority_stats(&text).map_err(|e| e.at(&ppath))?;
                if let Some(v) = unused {
                    m.gauge(
                        "node_bcache_priority_stats_unused_percent",
                        "The percentage of the cache that doesn't contain any data.",
                        &l,
                        v,
                    );
                }
                if let Some(v) = metadata {
                    m.gauge(
                        "node_bcache_priority_stats_metadata_percent",
                        "Bcache's metadata overhead.",
                        &l,
                        v,
                    );
                }
            }
        }
    }
    Ok(())
}

impl NodeCollector for Bcache {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        for uuid in list_dir(&self.dir)? {
            // Cache sets are named by UUID; `register` and friends are control files.
            if !uuid.contains('-') || !self.dir.join(&uuid).is_dir() {
                continue;
            }
            cache_set(&mut m, &uuid, &self.dir.join(&uuid), self.priority_stats)?;
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bch_hprint() {
        assert_eq!(dehumanize("2.5M").unwrap(), 2609152.0);
        assert_eq!(dehumanize("427.5k").unwrap(), 437748.0);
        assert_eq!(dehumanize("20.4G").unwrap(), 21894266880.0);
        assert_eq!(dehumanize("1.0k").unwrap(), 1024.0);
        assert_eq!(dehumanize("512").unwrap(), 512.0);
        assert_eq!(dehumanize("-3.0k").unwrap(), -3072.0);
        assert!(dehumanize("").is_err());
        assert!(dehumanize("5X").is_err());
        assert!(dehumanize("x.yM").is_err());
    }

    #[test]
    fn writeback_debug() {
        let v = writeback("rate:\t\t1.1M/sec\ndirty:\t\t20.4G\ntarget:\t\t20.4G\nproportional:\t427.5k\nintegral:\t790.0k\nchange:\t\t-321.5k/sec\nnext io:\t17ms\n").unwrap();
        assert_eq!(v[0], Some(1150976.0));
        assert_eq!(v[4], Some(-329204.0));
        assert_eq!(writeback("rate: lots\n").unwrap_err().line, 1);
        let p = priority_stats("Unused:\t\t99%\nClean:\t\t1%\nMetadata:\t0%\n").unwrap();
        assert_eq!(p, [Some(99.0), Some(0.0)]);
        assert_eq!(priority_stats("x\nUnused: lots\n").unwrap_err().line, 2);
    }
}
