//! `zfs`: reads the OpenZFS kstats under `<procfs>/spl/kstat/zfs/`: `arcstats`, `abdstats`,
//! `dmu_tx`, `dnodestats`, `fm`, `vdev_cache_stats`, `vdev_mirror_stats`, `xuio_stats`,
//! `zfetchstats`, `zil` (each `name type data` table), and per pool `<pool>/io`,
//! `<pool>/objset-*` and `<pool>/state`; produces node_exporter 1.5's untyped
//! `node_zfs_<subsystem>_<stat>` (e.g. `node_zfs_arc_hits`), `node_zfs_zpool_<io field>{zpool}`,
//! `node_zfs_zpool_dataset_<stat>{zpool,dataset}` and the gauge
//! `node_zfs_zpool_state{zpool,state}`. The HELP of each is its kstat name
//! (`kstat.zfs.misc.arcstats.hits`).
use std::path::{Path, PathBuf};

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, read_file,
    sysfs::{Samples, list_dir},
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Zfs {
    base: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Zfs {
        base: ctx.paths.proc("spl/kstat/zfs"),
    }))
}

/// (metric subsystem, kstat file).
const SUBSYSTEMS: &[(&str, &str)] = &[
    ("zfs_abd", "abdstats"),
    ("zfs_arc", "arcstats"),
    ("zfs_dmu_tx", "dmu_tx"),
    ("zfs_dnode", "dnodestats"),
    ("zfs_fm", "fm"),
    ("zfs_vdev_cache", "vdev_cache_stats"),
    ("zfs_vdev_mirror", "vdev_mirror_stats"),
    ("zfs_xuio", "xuio_stats"),
    ("zfs_zfetch", "zfetchstats"),
    ("zfs_zil", "zil"),
];

const POOL_STATES: &[&str] = &[
    "online", "degraded", "faulted", "offline", "removed", "unavail",
];

/// KSTAT_DATA_UINT64 (lib/libspl/include/sys/kstat.h); node_exporter 1.5 reads only these.
const UINT64: &str = "4";

fn metric_name(stat: &str) -> String {
    stat.replace('-', "_")
}

fn uint(s: &str, line: usize, what: &str) -> Result<f64, LineError> {
    s.parse::<u64>()
        .map(|v| v as f64)
        .map_err(|_| LineError::new(line, format!("{what}: {s:?} is not an unsigned integer")))
}

/// (kstat name, value) pairs.
pub type Stats = Vec<(String, f64)>;

/// Parses a `name type data` kstat table: the (stat, value) pairs of the 64-bit integer rows
/// (`types` lists the accepted type codes). Returns the `dataset_name` row too, if any.
pub fn parse_kstat(text: &str, types: &[&str]) -> Result<(Stats, Option<String>), LineError> {
    let mut started = false;
    let mut out = Vec::new();
    let mut dataset = None;
    for (i, line) in text.lines().enumerate() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if !started {
            started = parts == ["name", "type", "data"];
            continue;
        }
        if parts.len() < 3 {
            continue;
        }
        if parts[0] == "dataset_name" {
            dataset = Some(parts[2].to_string());
            continue;
        }
        if types.contains(&parts[1]) {
            out.push((parts[0].to_string(), uint(parts[2], i + 1, parts[0])?));
        }
    }
    if !started {
        return Err(LineError::new(1, "no \"name type data\" header"));
    }
    Ok((out, dataset))
}

/// Parses a pool `io` kstat: a header line starting with `nread` (at least 12 fields) and
/// the values below it.
pub fn parse_pool_io(text: &str) -> Result<Vec<(String, f64)>, LineError> {
    let mut fields: Option<Vec<&str>> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match &fields {
            None => {
                if parts.len() >= 12 && parts[0] == "nread" {
                    fields = Some(parts);
                }
            }
            Some(f) => {
                if parts.len() < f.len() {
                    return Err(LineError::new(
                        i + 1,
                        format!("{} values for {} fields", parts.len(), f.len()),
                    ));
                }
                for (name, v) in f.iter().zip(&parts) {
                    out.push((name.to_string(), uint(v, i + 1, name)?));
                }
            }
        }
    }
    Ok(out)
}

fn untyped(m: &mut Samples, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
    m.add(name, help, Kind::Untyped, labels, v);
}

fn at(path: &Path) -> impl Fn(LineError) -> CollectorError + '_ {
    move |e| e.at(path)
}

impl NodeCollector for Zfs {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let entries = list_dir(&self.base)?;
        let mut m = Samples::default();
        for (subsystem, file) in SUBSYSTEMS {
            let path = self.base.join(file);
            let text = match read_file(&path) {
                Err(CollectorError::NoData(_)) => continue,
                other => other?,
            };
            let (stats, _) = parse_kstat(&text, &[UINT64]).map_err(at(&path))?;
            for (stat, v) in stats {
                let help = format!("kstat.zfs.misc.{file}.{stat}");
                untyped(
                    &mut m,
                    &format!("node_{subsystem}_{}", metric_name(&stat)),
                    &help,
                    &[],
                    v,
                );
            }
        }
        for pool in entries {
            let dir = self.base.join(&pool);
            if !dir.is_dir() {
                continue;
            }
            let io = dir.join("io");
            if let Ok(text) = read_file(&io) {
                for (field, v) in parse_pool_io(&text).map_err(at(&io))? {
                    let help = format!("kstat.zfs.misc.io.{field}");
                    let name = format!("node_zfs_zpool_{}", metric_name(&field));
                    untyped(&mut m, &name, &help, &[("zpool", &pool)], v);
                }
            }
            for f in list_dir(&dir)? {
                if !f.starts_with("objset-") {
                    continue;
                }
                let path = dir.join(&f);
                let text = read_file(&path)?;
                let (stats, dataset) = parse_kstat(&text, &[UINT64]).map_err(at(&path))?;
                let dataset = dataset.unwrap_or_default();
                for (stat, v) in stats {
                    let help = format!("kstat.zfs.misc.objset.{stat}");
                    let name = format!("node_zfs_zpool_dataset_{}", metric_name(&stat));
                    untyped(
                        &mut m,
                        &name,
                        &help,
                        &[("zpool", &pool), ("dataset", &dataset)],
                        v,
                    );
                }
            }
            if let Ok(text) = read_file(&dir.join("state")) {
                let actual = text.lines().next().unwrap_or("").to_lowercase();
                for state in POOL_STATES {
                    m.gauge(
                        "node_zfs_zpool_state",
                        "kstat.zfs.misc.state",
                        &[("zpool", &pool), ("state", state)],
                        if actual == *state { 1.0 } else { 0.0 },
                    );
                }
            }
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kstat_tables() {
        let text = "6 1 0x01 91 4368 5266997922 97951858082072\nname type data\nhits 4 8772612\nerpt-dropped 4 2\nneg 3 5\nstr 7 x\ndataset_name 7 pool/ds\n";
        let (s, ds) = parse_kstat(text, &[UINT64, "3"]).unwrap();
        assert_eq!(
            s,
            vec![
                ("hits".to_string(), 8772612.0),
                ("erpt-dropped".to_string(), 2.0),
                ("neg".to_string(), 5.0)
            ]
        );
        assert_eq!(ds.as_deref(), Some("pool/ds"));
        assert_eq!(metric_name("erpt-dropped"), "erpt_dropped");
        assert_eq!(parse_kstat("hits 4 1\n", &[UINT64]).unwrap_err().line, 1);
        assert_eq!(
            parse_kstat("name type data\nhits 4 x\n", &[UINT64])
                .unwrap_err()
                .line,
            2
        );
    }

    #[test]
    fn pool_io() {
        let text = "12 3 0x00 1 80 79205351707403 395818011156865\nnread nwritten reads writes wtime wlentime wupdate rtime rlentime rupdate wcnt rcnt\n1 2 3 4 5 6 7 8 9 10 11 12\n";
        let v = parse_pool_io(text).unwrap();
        assert_eq!(v.len(), 12);
        assert_eq!(v[11], ("rcnt".to_string(), 12.0));
        assert_eq!(parse_pool_io("nread nwritten reads writes wtime wlentime wupdate rtime rlentime rupdate wcnt rcnt\n1 2\n").unwrap_err().line, 2);
    }
}
