//! `btrfs`: reads `<sysfs>/fs/btrfs/<uuid>/` (`label`, `allocation/global_rsv_size`,
//! `allocation/{data,metadata,system}/bytes_reserved` and `/<layout>/{total,used}_bytes`,
//! `devices/<dev>/size` in 512-byte sectors); produces node_exporter 1.5's
//! `node_btrfs_info{label,uuid}`, `node_btrfs_global_rsv_size_bytes{uuid}`,
//! `node_btrfs_device_size_bytes{device,uuid}`, `node_btrfs_reserved_bytes{block_group_type,
//! uuid}` and `node_btrfs_{size_bytes,used_bytes,allocation_ratio}{block_group_type,mode,uuid}`.
//!
//! For each mounted btrfs (`<procfs>/1/mounts`, else `<procfs>/mounts`) it also asks the
//! kernel through the btrfs ioctls `BTRFS_IOC_FS_INFO`, `BTRFS_IOC_DEV_INFO` and
//! `BTRFS_IOC_GET_DEV_STATS` (include/uapi/linux/btrfs.h) for per-device statistics, as
//! node_exporter 1.5 does: `node_btrfs_device_errors_total{device,btrfs_dev_uuid,type,uuid}`,
//! `node_btrfs_device_unused_bytes` and `node_btrfs_device_size_bytes` then carry
//! `btrfs_dev_uuid`. When the ioctls are not available the sysfs device sizes are used.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    sysfs::{Samples, attr, list_dir},
};
use crate::{emit::Out, paths::Paths};

#[derive(Debug)]
pub struct Btrfs {
    dir: PathBuf,
    paths: Paths,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Btrfs {
        dir: ctx.paths.sys("fs/btrfs"),
        paths: ctx.paths.clone(),
    }))
}

/// One device of a mounted filesystem, from the ioctls.
#[derive(Debug, Clone, PartialEq)]
pub struct IoctlDevice {
    /// Base name of the device path (`loop0`).
    pub name: String,
    /// The device's own UUID (`btrfs_dev_uuid`).
    pub uuid: String,
    pub total_bytes: u64,
    pub bytes_used: u64,
    /// write, read, flush, corruption, generation error counts (`None` when not reported).
    pub errors: [Option<u64>; 5],
}

const ERROR_TYPES: [&str; 5] = ["write", "read", "flush", "corruption", "generation"];

/// Formats 16 UUID bytes as `8798e0ff-a65a-4170-a8b5-83ecdc9c3d8e`.
pub fn format_uuid(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    if hex.len() != 32 {
        return hex;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The (device, mount point) of each btrfs mount in a `/proc/<pid>/mounts` text.
pub fn btrfs_mounts(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[2] == "btrfs").then(|| {
                (
                    crate::collectors::filesystem::unescape(f[0]),
                    crate::collectors::filesystem::unescape(f[1]),
                )
            })
        })
        .collect()
}

mod ioctl {
    //! The three read-only btrfs ioctls, over plain byte buffers laid out as the kernel's
    //! structs (little-endian x86_64/aarch64; offsets from include/uapi/linux/btrfs.h).
    use std::{fs::File, io, os::fd::AsRawFd};

    const MAGIC: u64 = 0x94;
    const fn ioc(dir: u64, nr: u64, size: u64) -> u64 {
        (dir << 30) | (size << 16) | (MAGIC << 8) | nr
    }
    const FS_INFO_SIZE: usize = 1024;
    const DEV_INFO_SIZE: usize = 4096;
    const DEV_STATS_SIZE: usize = 1032;
    const IOC_FS_INFO: u64 = ioc(2, 31, FS_INFO_SIZE as u64);
    const IOC_DEV_INFO: u64 = ioc(3, 30, DEV_INFO_SIZE as u64);
    const IOC_GET_DEV_STATS: u64 = ioc(3, 52, DEV_STATS_SIZE as u64);

    fn call(f: &File, req: u64, buf: &mut [u8]) -> io::Result<()> {
        // SAFETY: `buf` is as large as the struct the request code names, so the kernel
        // reads and writes only inside it; the fd stays open for the call.
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), req as _, buf.as_mut_ptr()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[off..off + 8]);
        u64::from_le_bytes(a)
    }

    /// (max device id, filesystem UUID bytes).
    pub fn fs_info(f: &File) -> io::Result<(u64, [u8; 16])> {
        let mut b = vec![0u8; FS_INFO_SIZE];
        call(f, IOC_FS_INFO, &mut b)?;
        let mut fsid = [0u8; 16];
        fsid.copy_from_slice(&b[16..32]);
        Ok((u64_at(&b, 0), fsid))
    }

    /// (device UUID bytes, bytes used, total bytes, path) of device `devid`.
    pub fn dev_info(f: &File, devid: u64) -> io::Result<([u8; 16], u64, u64, String)> {
        let mut b = vec![0u8; DEV_INFO_SIZE];
        b[0..8].copy_from_slice(&devid.to_le_bytes());
        call(f, IOC_DEV_INFO, &mut b)?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[8..24]);
        let path = &b[DEV_INFO_SIZE - 1024..];
        let end = path.iter().position(|c| *c == 0).unwrap_or(path.len());
        Ok((
            uuid,
            u64_at(&b, 24),
            u64_at(&b, 32),
            String::from_utf8_lossy(&path[..end]).into_owned(),
        ))
    }

    /// The error counters of device `devid` (as many as the kernel reports, at most 5).
    pub fn dev_stats(f: &File, devid: u64) -> io::Result<Vec<u64>> {
        let mut b = vec![0u8; DEV_STATS_SIZE];
        b[0..8].copy_from_slice(&devid.to_le_bytes());
        b[8..16].copy_from_slice(&5u64.to_le_bytes());
        call(f, IOC_GET_DEV_STATS, &mut b)?;
        let n = (u64_at(&b, 8) as usize).min(5);
        Ok((0..n).map(|i| u64_at(&b, 24 + 8 * i)).collect())
    }
}

/// Per-device statistics of every mounted btrfs, by filesystem UUID. Failures are logged at
/// debug level and leave that filesystem to the sysfs values, as node_exporter does.
fn ioctl_stats(paths: &Paths) -> HashMap<String, Vec<IoctlDevice>> {
    let mut out = HashMap::new();
    let text = super::read_text(paths.proc("1/mounts"))
        .or_else(|_| super::read_text(paths.proc("mounts")))
        .unwrap_or_default();
    let mut done: HashSet<String> = HashSet::new();
    for (device, mountpoint) in btrfs_mounts(&text) {
        if done.contains(&device) {
            continue;
        }
        let path = paths.root(mountpoint.trim_start_matches('/'));
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(collector = "btrfs", path = %path.display(), error = %e, "cannot open mount");
                continue;
            }
        };
        let (max_id, fsid) = match ioctl::fs_info(&f) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(collector = "btrfs", path = %path.display(), error = %e, "BTRFS_IOC_FS_INFO failed");
                continue;
            }
        };
        let mut devices = Vec::new();
        for devid in 1..=max_id.min(4096) {
            let Ok((uuid, used, total, dev_path)) = ioctl::dev_info(&f, devid) else {
                continue; // ENODEV: no device with this id
            };
            let stats = ioctl::dev_stats(&f, devid).unwrap_or_default();
            let mut errors = [None; 5];
            for (i, v) in stats.into_iter().enumerate() {
                errors[i] = Some(v);
            }
            done.insert(dev_path.clone());
            let name = Path::new(&dev_path)
                .file_name()
                .map_or(dev_path.clone(), |n| n.to_string_lossy().into_owned());
            devices.push(IoctlDevice {
                name,
                uuid: format_uuid(&uuid),
                total_bytes: total,
                bytes_used: used,
                errors,
            });
        }
        out.insert(format_uuid(&fsid), devices);
    }
    out
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

fn filesystem(
    m: &mut Samples,
    uuid: &str,
    dir: &Path,
    ioctl_devices: Option<&Vec<IoctlDevice>>,
) -> Result<(), CollectorError> {
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
    let size_help = "Size of a device that is part of the filesystem.";
    match ioctl_devices {
        Some(devs) => device_metrics(m, uuid, devs),
        None => {
            for dev in &devices {
                if let Some(sectors) = read_uint(&dir.join("devices").join(dev).join("size"))? {
                    m.gauge(
                        "node_btrfs_device_size_bytes",
                        size_help,
                        &[("device", dev), ("uuid", uuid)],
                        sectors * 512.0,
                    );
                }
            }
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

/// The ioctl-based per-device families of one filesystem.
pub fn device_metrics(m: &mut Samples, uuid: &str, devs: &[IoctlDevice]) {
    for d in devs {
        let l = [
            ("device", d.name.as_str()),
            ("btrfs_dev_uuid", d.uuid.as_str()),
            ("uuid", uuid),
        ];
        for (ty, v) in ERROR_TYPES.iter().zip(d.errors) {
            if let Some(v) = v {
                m.add(
                    "node_btrfs_device_errors_total",
                    "Errors reported for the device",
                    crate::emit::Kind::Counter,
                    &[l[0], l[1], ("type", ty), l[2]],
                    v as f64,
                );
            }
        }
        m.gauge(
            "node_btrfs_device_size_bytes",
            "Size of a device that is part of the filesystem.",
            &l,
            d.total_bytes as f64,
        );
        m.gauge(
            "node_btrfs_device_unused_bytes",
            "Unused bytes unused on a device that is part of the filesystem.",
            &l,
            d.total_bytes.saturating_sub(d.bytes_used) as f64,
        );
    }
}

impl NodeCollector for Btrfs {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        let filesystems = list_dir(&self.dir)?;
        let ioctl = ioctl_stats(&self.paths);
        for uuid in filesystems {
            let dir = self.dir.join(&uuid);
            // Filesystems are the directories named by UUID; `features/` is global.
            if !dir.join("allocation").is_dir() {
                continue;
            }
            filesystem(&mut m, &uuid, &dir, ioctl.get(&uuid))?;
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

    #[test]
    fn mounts_and_uuids() {
        let m = btrfs_mounts("/dev/loop0 /mnt/a\\040b btrfs rw 0 0\nproc /proc proc rw 0 0\n");
        assert_eq!(m, vec![("/dev/loop0".to_string(), "/mnt/a b".to_string())]);
        assert_eq!(crate::collectors::filesystem::unescape("x\\04"), "x\\04");
        // Beyond a byte: kept as written (the kernel never writes it; a fake table may).
        assert_eq!(
            crate::collectors::filesystem::unescape("/mnt/\\777x"),
            "/mnt/\\777x"
        );
        assert_eq!(crate::collectors::filesystem::unescape("/a\\040b"), "/a b");
        let u: Vec<u8> = (0..16).collect();
        assert_eq!(format_uuid(&u), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        let mut s = Samples::default();
        device_metrics(
            &mut s,
            "fs",
            &[IoctlDevice {
                name: "loop0".into(),
                uuid: "d".into(),
                total_bytes: 100,
                bytes_used: 30,
                errors: [Some(1), Some(0), None, None, None],
            }],
        );
        let l = [("device", "loop0"), ("btrfs_dev_uuid", "d"), ("uuid", "fs")];
        assert_eq!(s.get("node_btrfs_device_unused_bytes", &l), Some(70.0));
        assert_eq!(
            s.get(
                "node_btrfs_device_errors_total",
                &[l[0], l[1], ("type", "write"), l[2]]
            ),
            Some(1.0)
        );
    }
}
