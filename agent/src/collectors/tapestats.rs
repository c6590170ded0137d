//! `tapestats`: reads `<sysfs>/class/scsi_tape/st<N>/stats/*` (the kernel's st driver
//! statistics, Documentation/scsi/st.rst); produces node_exporter 1.5's `node_tape_*{device}`:
//! `io_now`, `io_time_seconds_total`, `io_others_total`, `read_bytes_total`,
//! `reads_completed_total`, `read_time_seconds_total`, `residual_total`,
//! `written_bytes_total`, `writes_completed_total`, `write_time_seconds_total`. Only the
//! rewinding devices `st<N>` are reported (`nst<N>`, `st<N>a`... are the same drive), less
//! those matching `--collector.tapestats.ignored-devices`.
use std::path::PathBuf;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    sysfs::{Samples, attr, list_dir},
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Tapestats {
    class: PathBuf,
    ignored: regex::Regex,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    let re = &ctx.settings.tapestats.ignored_devices;
    let ignored = regex::Regex::new(re).map_err(|e| {
        CollectorError::parse(
            std::path::Path::new("--collector.tapestats.ignored-devices"),
            0,
            e.to_string(),
        )
    })?;
    Ok(Box::new(Tapestats {
        class: ctx.paths.sys("class/scsi_tape"),
        ignored,
    }))
}

/// (stats file, metric suffix, kind, multiplier, help). Nanoseconds are multiplied by 1e-9
/// (not divided by 1e9) so that the values are bit-identical with node_exporter's.
const STATS: &[(&str, &str, Kind, f64, &str)] = &[
    (
        "in_flight",
        "io_now",
        Kind::Gauge,
        1.0,
        "The number of I/Os currently outstanding to this device.",
    ),
    (
        "io_ns",
        "io_time_seconds_total",
        Kind::Counter,
        1e-9,
        "The amount of time spent waiting for all I/O to complete (including read and write). This includes tape movement commands such as seeking between file or set marks and implicit tape movement such as when rewind on close tape devices are used.",
    ),
    (
        "other_cnt",
        "io_others_total",
        Kind::Counter,
        1.0,
        "The number of I/Os issued to the tape drive other than read or write commands. The time taken to complete these commands uses the following calculation io_time_seconds_total-read_time_seconds_total-write_time_seconds_total",
    ),
    (
        "read_byte_cnt",
        "read_bytes_total",
        Kind::Counter,
        1.0,
        "The number of bytes read from the tape drive.",
    ),
    (
        "read_cnt",
        "reads_completed_total",
        Kind::Counter,
        1.0,
        "The number of read requests issued to the tape drive.",
    ),
    (
        "read_ns",
        "read_time_seconds_total",
        Kind::Counter,
        1e-9,
        "The amount of time spent waiting for read requests to complete.",
    ),
    (
        "resid_cnt",
        "residual_total",
        Kind::Counter,
        1.0,
        "The number of times during a read or write we found the residual amount to be non-zero. This should mean that a program is issuing a read larger thean the block size on tape. For write not all data made it to tape.",
    ),
    (
        "write_byte_cnt",
        "written_bytes_total",
        Kind::Counter,
        1.0,
        "The number of bytes written to the tape drive.",
    ),
    (
        "write_cnt",
        "writes_completed_total",
        Kind::Counter,
        1.0,
        "The number of write requests issued to the tape drive.",
    ),
    (
        "write_ns",
        "write_time_seconds_total",
        Kind::Counter,
        1e-9,
        "The amount of time spent waiting for write requests to complete.",
    ),
];

/// `st0` yes; `nst0`, `st0a`, `st` no.
pub fn is_tape(name: &str) -> bool {
    name.strip_prefix("st")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

pub fn value(text: &str) -> Result<f64, LineError> {
    text.trim()
        .parse::<u64>()
        .map(|v| v as f64)
        .map_err(|_| LineError::new(1, format!("{:?} is not a counter value", text.trim())))
}

impl NodeCollector for Tapestats {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        for dev in list_dir(&self.class)? {
            if !is_tape(&dev) || self.ignored.is_match(&dev) {
                continue;
            }
            let d = self.class.join(&dev).join("stats");
            for (file, suffix, kind, mul, help) in STATS {
                let p = d.join(file);
                let Some(text) = attr(&p) else { continue };
                let v = value(&text).map_err(|e| e.at(&p))?;
                m.add(
                    &format!("node_tape_{suffix}"),
                    help,
                    *kind,
                    &[("device", &dev)],
                    v * mul,
                );
            }
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tape_names_and_values() {
        assert!(is_tape("st0") && is_tape("st12"));
        assert!(!is_tape("nst0") && !is_tape("st0a") && !is_tape("st"));
        assert_eq!(value("1007\n").unwrap(), 1007.0);
        assert!(value("-1").is_err());
    }
}
