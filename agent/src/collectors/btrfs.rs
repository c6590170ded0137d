//! `btrfs`: reads `<sysfs>/fs/btrfs/<uuid>/` (`label`, `allocation/global_rsv_size`,
//! `allocation/{data,metadata,system}/bytes_reserved` and `/<layout>/{total,used}_bytes`,
//! `devices/<dev>/size` in 512-byte sectors); produces node_exporter 1.5's
//! `node_btrfs_info{label,uuid}`, `node_btrfs_global_rsv_size_bytes{uuid}`,
//! `node_btrfs_device_size_bytes{device,uuid}`, `node_btrfs_reserved_bytes{block_group_type,
//! uuid}` and `node_btrfs_{size_bytes,used_bytes,allocation_ratio}{block_group_type,mode,uuid}`.
use std::path::{Path, PathBuf};

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    sysfs::{Samples, attr, list_dir},
};
use crate::emit::Out;

#[derive(Debug)]
pub struct Btrfs {
    dir: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Btrfs {
        dir: ctx.paths.sys("fs/btrfs"),
    }))
}

/// Bytes of raw space per byte of data for a RAID layout with `devices` devices (as procfs
/// computes it; layouts it does not know give 0).
pub fn allocation_ratio(layout: &str, devices: usize) -> f64 {
    let n = devices as f64;
    match layout {
        "single" | "raid0" => 1.0,
        "dup" | "raid1" | "raid10" => 2.0,
        "raid5" if devices > 1 => n / (n - 1.0),
        "raid6" if devices > 2 => n / (n - 2.0),
        _ => 0.0,
    }
}

pub fn uint(text: &str) -> Result<f64, LineError> {
    text.trim()
        .parse::<u64>()
        .map(|v| v as f64)
        .map_err(|_| LineError::new(1, format!("{:?} is not an unsigned integer", text.trim())))
}

fn read_uint(path: &Path) -> Result<Option<f64>, CollectorError> {
    match attr(path) {
        None => Ok(None),
        Some(t) => uint(&t).map(Some).map_err(|e| e.at(path)),
    }
}

const BLOCK_GROUPS: [&str; 3] = ["data", "metadata", "system"];

fn filesystem(m: &mut Samples, uuid: &str, dir: &Path) -> Result<(), CollectorError> {
    let label = attr(&dir.join("label")).unwrap_or_default();
    m.gauge(
        "node_btrfs_info",
        "Filesystem information",
        &[("label", &label), ("uuid", uuid)],
        1.0,
    );
    let alloc = dir.join("allocation");
    if let Some(v) = read_uint(&alloc.join("global_rsv_size"))? {
        m.gauge(
            "node_btrfs_global_rsv_size_bytes",
            "Size of global reserve.",
            &[("uuid", uuid)],
            v,
        );
    }
    let devices = match list_dir(&dir.join("devices")) {
        Ok(d) => d,
        Err(CollectorError::NoData(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    for dev in &devices {
        if let Some(sectors) = read_uint(&dir.join("devices").join(dev).join("size"))? {
            m.gauge(
                "node_btrfs_device_size_bytes",
                "Size of a device that is part of the filesystem.",
                &[("device", dev), ("uuid", uuid)],
                sectors * 512.0,
            );
        }
    }
    for bg in BLOCK_GROUPS {
        let bgdir = alloc.join(bg);
        if !bgdir.is_dir() {
            continue;
        }
        if let Some(v) = read_uint(&bgdir.join("bytes_reserved"))? {
            m.gauge(
                "node_btrfs_reserved_bytes",
                "Amount of space reserved for a data type",
                &[("block_group_type", bg), ("uuid", uuid)],
                v,
            );
        }
        for layout in list_dir(&bgdir)? {
            let ldir = bgdir.join(&layout);
            if !ldir.is_dir() {
                continue;
            }
            let l = [
                ("block_group_type", bg),
                ("mode", layout.as_str()),
                ("uuid", uuid),
            ];
            if let Some(v) = read_uint(&ldir.join("total_bytes"))? {
                m.gauge(
                    "node_btrfs_size_bytes",
                    "Amount of space allocated for a layout/data type",
                    &l,
                    v,
                );
            }
            if let Some(v) = read_uint(&ldir.join("used_bytes"))? {
                m.gauge(
                    "node_btrfs_used_bytes",
                    "Amount of used space by a layout/data type",
                    &l,
                    v,
                );
            }
            m.gauge(
                "node_btrfs_allocation_ratio",
                "Data allocation ratio for a layout/data type",
                &l,
                allocation_ratio(&layout, devices.len()),
            );
        }
    }
    Ok(())
}

impl NodeCollector for Btrfs {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        for uuid in list_dir(&self.dir)? {
            let dir = self.dir.join(&uuid);
            // Filesystems are the directories named by UUID; `features/` is global.
            if !dir.join("allocation").is_dir() {
                continue;
            }
            filesystem(&mut m, &uuid, &dir)?;
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_values() {
        assert_eq!(allocation_ratio("raid1", 2), 2.0);
        assert_eq!(allocation_ratio("raid5", 3), 1.5);
        assert_eq!(allocation_ratio("raid6", 2), 0.0);
        assert_eq!(allocation_ratio("single", 1), 1.0);
        assert_eq!(uint("16777216\n").unwrap(), 16777216.0);
        assert!(uint("-1").is_err());
    }
}
