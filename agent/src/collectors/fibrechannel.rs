//! `fibrechannel`: reads `<sysfs>/class/fc_host/<host>/*` and `statistics/*` (hexadecimal
//! counters; all ones means "not available" and is left out); produces node_exporter 1.5's
//! `node_fibrechannel_info{fc_host,dev_loss_tmo,fabric_name,port_id,port_name,port_state,
//! port_type,speed,supported_classes,supported_speeds,symbolic_name}` and
//! `node_fibrechannel_*_total{fc_host}` counters.
use std::path::PathBuf;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    sysfs::{Samples, attr, list_dir},
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Fibrechannel {
    class: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Fibrechannel {
        class: ctx.paths.sys("class/fc_host"),
    }))
}

/// (statistics file, metric suffix, help).
const STATS: &[(&str, &str, &str)] = &[
    (
        "dumped_frames",
        "dumped_frames_total",
        "Number of dumped frames",
    ),
    (
        "error_frames",
        "error_frames_total",
        "Number of errors in frames",
    ),
    (
        "invalid_crc_count",
        "invalid_crc_total",
        "Invalid Cyclic Redundancy Check count",
    ),
    ("rx_frames", "rx_frames_total", "Number of frames received"),
    (
        "rx_words",
        "rx_words_total",
        "Number of words received by host port",
    ),
    (
        "tx_frames",
        "tx_frames_total",
        "Number of frames transmitted by host port",
    ),
    (
        "tx_words",
        "tx_words_total",
        "Number of words transmitted by host port",
    ),
    (
        "seconds_since_last_reset",
        "seconds_since_last_reset_total",
        "Number of seconds since last host port reset",
    ),
    (
        "invalid_tx_word_count",
        "invalid_tx_words_total",
        "Number of invalid words transmitted by host port",
    ),
    (
        "link_failure_count",
        "link_failure_total",
        "Number of times the host port link has failed",
    ),
    (
        "loss_of_sync_count",
        "loss_of_sync_total",
        "Number of failures on either bit or transmission word boundaries",
    ),
    (
        "loss_of_signal_count",
        "loss_of_signal_total",
        "Number of times signal has been lost",
    ),
    (
        "nos_count",
        "nos_total",
        "Number Not_Operational Primitive Sequence received by host port",
    ),
    (
        "fcp_packet_aborts",
        "fcp_packet_aborts_total",
        "Number of aborted packets",
    ),
];

/// Info labels: (file, label, strip a `0x` prefix).
const INFO: &[(&str, &str, bool)] = &[
    ("dev_loss_tmo", "dev_loss_tmo", false),
    ("fabric_name", "fabric_name", true),
    ("port_id", "port_id", true),
    ("port_name", "port_name", true),
    ("port_state", "port_state", false),
    ("port_type", "port_type", false),
    ("speed", "speed", false),
    ("supported_classes", "supported_classes", false),
    ("supported_speeds", "supported_speeds", false),
    ("symbolic_name", "symbolic_name", false),
];

/// A statistics value: hexadecimal (`0x1a`) or decimal; `None` when all ones (unsupported).
pub fn stat(text: &str) -> Result<Option<f64>, LineError> {
    let t = text.trim();
    let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse::<u64>().ok(),
    }
    .ok_or_else(|| LineError::new(1, format!("{t:?} is not a counter value")))?;
    Ok((v != u64::MAX).then_some(v as f64))
}

impl NodeCollector for Fibrechannel {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        for host in list_dir(&self.class)? {
            let d = self.class.join(&host);
            let values: Vec<String> = INFO
                .iter()
                .map(|(f, _, strip)| {
                    let v = attr(&d.join(f)).unwrap_or_default();
                    match (strip, v.strip_prefix("0x")) {
                        (true, Some(s)) => s.to_string(),
                        _ => v,
                    }
                })
                .collect();
            let mut labels: Vec<(&str, &str)> = vec![("fc_host", &host)];
            labels.extend(
                INFO.iter()
                    .zip(&values)
                    .map(|((_, l, _), v)| (*l, v.as_str())),
            );
            m.gauge(
                "node_fibrechannel_info",
                "Non-numeric data from /sys/class/fc_host/<host>, value is always 1.",
                &labels,
                1.0,
            );
            for (file, suffix, help) in STATS {
                let p = d.join("statistics").join(file);
                let Some(text) = attr(&p) else { continue };
                if let Some(v) = stat(&text).map_err(|e| e.at(&p))? {
                    m.add(
                        &format!("node_fibrechannel_{suffix}"),
                        help,
                        Kind::Counter,
                        &[("fc_host", &host)],
                        v,
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
    fn hex_counters_and_unavailable() {
        assert_eq!(stat("0x1a\n").unwrap(), Some(26.0));
        assert_eq!(stat("0xffffffffffffffff").unwrap(), None);
        assert_eq!(stat("30").unwrap(), Some(30.0));
        assert!(stat("0xzz").is_err());
    }
}
