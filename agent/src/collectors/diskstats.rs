//! `diskstats`: reads `<procfs>/diskstats` and the udev database
//! (`<udev.data>/b<major>:<minor>`); produces `node_disk_*` (reads, writes, discards, flushes,
//! times, `node_disk_io_now`), `node_disk_info{device,major,minor,path,wwn,model,serial,revision}`
//! and, where udev knows them, `node_disk_filesystem_info`, `node_disk_device_mapper_info`,
//! `node_disk_ata_*`. Devices matching `--collector.diskstats.device-exclude` are left out.
use std::path::{Path, PathBuf};

use regex::Regex;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file,
    settings_regex,
};
use crate::emit::{Kind, Out};

/// Sector size the kernel uses in `/proc/diskstats`, whatever the device's.
const SECTOR: f64 = 512.0;

/// The `/proc/diskstats` columns after the device name, in kernel order
/// (Documentation/admin-guide/iostats.rst): name, help, kind, scale.
const FIELDS: [(&str, &str, Kind, f64); 17] = [
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        Kind::Counter,
        SECTOR,
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        Kind::Counter,
        0.001,
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_writes_merged_total",
        "The number of writes merged.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        Kind::Counter,
        SECTOR,
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        Kind::Counter,
        0.001,
    ),
    (
        "node_disk_io_now",
        "The number of I/Os currently in progress.",
        Kind::Gauge,
        1.0,
    ),
    (
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        Kind::Counter,
        0.001,
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        Kind::Counter,
        0.001,
    ),
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        Kind::Counter,
        0.001,
    ),
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        Kind::Counter,
        1.0,
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        Kind::Counter,
        0.001,
    ),
];

#[derive(Debug)]
pub struct Diskstats {
    path: PathBuf,
    udev: PathBuf,
    include: Option<Regex>,
    exclude: Option<Regex>,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    let s = &ctx.settings.diskstats;
    let include = settings_regex("diskstats.device_include", &s.device_include)?;
    let exclude = if include.is_some() {
        None
    } else {
        settings_regex("diskstats.device_exclude", &s.device_exclude)?
    };
    Ok(Box::new(Diskstats {
        path: ctx.paths.proc("diskstats"),
        udev: ctx.paths.udev_data.clone(),
        include,
        exclude,
    }))
}

/// One `/proc/diskstats` line: major, minor, device and up to 17 values (already scaled to
/// node_exporter's units); `n` of them present (11, 15 or 17 depending on the kernel).
#[derive(Debug, Clone, PartialEq)]
pub struct Disk<'a> {
    pub major: &'a str,
    pub minor: &'a str,
    pub device: &'a str,
    pub values: [f64; 17],
    pub n: usize,
}

pub fn parse(text: &str) -> Result<Vec<Disk<'_>>, LineError> {
    let mut disks = Vec::with_capacity(16);
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(major), Some(minor), Some(device)) = (parts.next(), parts.next(), parts.next())
        else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(LineError::new(i + 1, "fewer than 3 columns"));
        };
        let mut values = [0.0; 17];
        let mut n = 0;
        for (k, v) in parts.enumerate() {
            if k >= 17 {
                break;
            }
            values[k] = parse_f64(v, i + 1, FIELDS[k].0)? * FIELDS[k].3;
            n = k + 1;
        }
        if n < 11 {
            return Err(LineError::new(
                i + 1,
                format!("{device}: {n} statistics, expected at least 11"),
            ));
        }
        disks.push(Disk {
            major,
            minor,
            device,
            values,
            n,
        });
    }
    Ok(disks)
}

/// The `E:KEY=value` properties of a udev database entry.
pub fn parse_udev(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("E:"))
        .filter_map(|l| l.split_once('='))
        .collect()
}

fn prop<'a>(props: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    props.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

impl Diskstats {
    fn wanted(&self, device: &str) -> bool {
        if let Some(re) = &self.include {
            return re.is_match(device);
        }
        !self.exclude.as_ref().is_some_and(|re| re.is_match(device))
    }

    fn udev_props(&self, d: &Disk<'_>) -> String {
        let p: PathBuf = self.udev.join(format!("b{}:{}", d.major, d.minor));
        read_udev(&p)
    }
}

/// A missing or unreadable udev entry is simply no properties, as node_exporter.
fn read_udev(p: &Path) -> String {
    super::read_text(p).unwrap_or_default()
}

impl NodeCollector for Diskstats {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let mut disks = parse(&text).map_err(|e| e.at(&self.path))?;
        disks.retain(|d| self.wanted(d.device));
        let udev: Vec<String> = disks.iter().map(|d| self.udev_props(d)).collect();
        let props: Vec<Vec<(&str, &str)>> = udev.iter().map(|t| parse_udev(t)).collect();

        let mut f = out.family(
            "node_disk_info",
            "Info of /sys/block/<block_device>.",
            Kind::Gauge,
        )?;
        for (d, p) in disks.iter().zip(&props) {
            let g = |k| prop(p, k).unwrap_or("");
            f.sample(
                &[
                    ("device", d.device),
                    ("major", d.major),
                    ("minor", d.minor),
                    ("path", g("ID_PATH")),
                    ("wwn", g("ID_WWN")),
                    ("model", g("ID_MODEL")),
                    ("serial", g("ID_SERIAL_SHORT")),
                    ("revision", g("ID_REVISION")),
                ],
                1.0,
            )?;
        }
        drop(f);
        for (k, (name, help, kind, _)) in FIELDS.iter().enumerate() {
            if !disks.iter().any(|d| d.n > k) {
                continue;
            }
            let mut f = out.family(name, help, *kind)?;
            for d in disks.iter().filter(|d| d.n > k) {
                f.sample(&[("device", d.device)], d.values[k])?;
            }
        }
        if props.iter().any(|p| prop(p, "ID_FS_TYPE").is_some()) {
            let mut f = out.family(
                "node_disk_filesystem_info",
                "Info about disk filesystem.",
                Kind::Gauge,
            )?;
            for (d, p) in disks.iter().zip(&props) {
                let Some(t) = prop(p, "ID_FS_TYPE") else {
                    continue;
                };
                let g = |k| prop(p, k).unwrap_or("");
                f.sample(
                    &[
                        ("device", d.device),
                        ("type", t),
                        ("usage", g("ID_FS_USAGE")),
                        ("uuid", g("ID_FS_UUID")),
                        ("version", g("ID_FS_VERSION")),
                    ],
                    1.0,
                )?;
            }
        }
        if props.iter().any(|p| prop(p, "DM_NAME").is_some()) {
            let mut f = out.family(
                "node_disk_device_mapper_info",
                "Info about disk device mapper.",
                Kind::Gauge,
            )?;
            for (d, p) in disks.iter().zip(&props) {
                let Some(n) = prop(p, "DM_NAME") else {
                    continue;
                };
                let g = |k| prop(p, k).unwrap_or("");
                f.sample(
                    &[
                        ("device", d.device),
                        ("name", n),
                        ("uuid", g("DM_UUID")),
                        ("vg_name", g("DM_VG_NAME")),
                        ("lv_name", g("DM_LV_NAME")),
                        ("lv_layer", g("DM_LV_LAYER")),
                    ],
                    1.0,
                )?;
            }
        }
        for (key, name, help) in [
            (
                "ID_ATA_FEATURE_SET_WRITE_CACHE",
                "node_disk_ata_write_cache",
                "ATA disk has a write cache.",
            ),
            (
                "ID_ATA_FEATURE_SET_WRITE_CACHE_ENABLED",
                "node_disk_ata_write_cache_enabled",
                "ATA disk has its write cache enabled.",
            ),
            (
                "ID_ATA_ROTATION_RATE_RPM",
                "node_disk_ata_rotation_rate_rpm",
                "ATA disk rotation rate in RPMs (0 for SSDs).",
            ),
        ] {
            let vals: Vec<(&str, f64)> = disks
                .iter()
                .zip(&props)
                .filter_map(|(d, p)| {
                    prop(p, key)
                        .and_then(|v| v.parse::<f64>().ok())
                        .map(|v| (d.device, v))
                })
                .collect();
            if vals.is_empty() {
                continue;
            }
            let mut f = out.family(name, help, Kind::Gauge)?;
            for (dev, v) in vals {
                f.sample(&[("device", dev)], v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_sectors_and_milliseconds() {
        let t = " 254       0 vda 187168 10314 12471730 556876 24225 92947 42038168 219106 0 42104 778331 8892 36 1327528 2256 1155 91\n   7 0 loop0 1 0 2 3 4 0 0 0 0 5 6\n";
        let d = parse(t).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].device, "vda");
        assert_eq!(d[0].n, 17);
        assert_eq!(d[0].values[2], 12471730.0 * 512.0);
        assert_eq!(d[0].values[3], 556.876);
        assert_eq!(d[0].values[16], 0.091);
        assert_eq!(d[1].n, 11);
    }

    #[test]
    fn names_the_bad_line() {
        assert_eq!(parse("8 0 sda 1 2 3\n").unwrap_err().line, 1);
        let e = parse("8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n8 1 sda1 1 x 3 4 5 6 7 8 9 10 11\n")
            .unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn default_exclude_drops_partitions_and_loops() {
        let re = Regex::new(crate::config::DISKSTATS_DEVICE_EXCLUDE).unwrap();
        for d in ["sda1", "loop0", "ram1", "nvme0n1p1", "vda2"] {
            assert!(re.is_match(d), "{d}");
        }
        for d in ["sda", "vda", "nvme0n1", "dm-0", "zram0", "md0"] {
            assert!(!re.is_match(d), "{d}");
        }
    }

    #[test]
    fn udev_properties() {
        let p = parse_udev("S:disk/by-id/x\nE:ID_MODEL=QEMU\nE:ID_PATH=pci-0000:00:05.0\nG:x\n");
        assert_eq!(prop(&p, "ID_MODEL"), Some("QEMU"));
        assert_eq!(prop(&p, "ID_PATH"), Some("pci-0000:00:05.0"));
    }
}
