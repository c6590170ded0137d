//! `infiniband`: reads `<sysfs>/class/infiniband/<device>/{board_id,fw_ver,hca_type}` and each
//! `ports/<n>/{state,phys_state,rate,counters/*,counters_ext/*}`; produces node_exporter 1.5's
//! `node_infiniband_info{device,board_id,firmware_version,hca_type}`,
//! `node_infiniband_{state_id,physical_state_id,rate_bytes_per_second}{device,port}` and the
//! port counters `node_infiniband_*_total{device,port}`. `port_*_data` counters count 4-byte
//! words (InfiniBand spec, PortCounters), so they are multiplied by 4 into bytes; a counter
//! reading "N/A (no PMA)" is left out.
use std::path::{Path, PathBuf};

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    sysfs::{Samples, attr, list_dir},
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Infiniband {
    class: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Infiniband {
        class: ctx.paths.sys("class/infiniband"),
    }))
}

/// (directory, file, metric suffix, multiplier, help).
const COUNTERS: &[(&str, &str, &str, f64, &str)] = &[
    (
        "counters",
        "excessive_buffer_overrun_errors",
        "excessive_buffer_overrun_errors_total",
        1.0,
        "Number of times that OverrunErrors consecutive flow control update periods occurred, each having at least one overrun error.",
    ),
    (
        "counters",
        "link_downed",
        "link_downed_total",
        1.0,
        "Number of times the link failed to recover from an error state and went down",
    ),
    (
        "counters",
        "link_error_recovery",
        "link_error_recovery_total",
        1.0,
        "Number of times the link successfully recovered from an error state",
    ),
    (
        "counters",
        "local_link_integrity_errors",
        "local_link_integrity_errors_total",
        1.0,
        "Number of times that the count of local physical errors exceeded the threshold specified by LocalPhyErrors.",
    ),
    (
        "counters",
        "multicast_rcv_packets",
        "multicast_packets_received_total",
        1.0,
        "Number of multicast packets received (including errors)",
    ),
    (
        "counters",
        "multicast_xmit_packets",
        "multicast_packets_transmitted_total",
        1.0,
        "Number of multicast packets transmitted (including errors)",
    ),
    (
        "counters",
        "port_rcv_constraint_errors",
        "port_constraint_errors_received_total",
        1.0,
        "Number of packets received on the switch physical port that are discarded",
    ),
    (
        "counters",
        "port_rcv_data",
        "port_data_received_bytes_total",
        4.0,
        "Number of data octets received on all links",
    ),
    (
        "counters",
        "port_rcv_discards",
        "port_discards_received_total",
        1.0,
        "Number of inbound packets discarded by the port because the port is down or congested",
    ),
    (
        "counters",
        "port_rcv_errors",
        "port_errors_received_total",
        1.0,
        "Number of packets containing an error that were received on this port",
    ),
    (
        "counters",
        "port_rcv_packets",
        "port_packets_received_total",
        1.0,
        "Number of packets received on all VLs by this port (including errors)",
    ),
    (
        "counters",
        "port_rcv_remote_physical_errors",
        "port_receive_remote_physical_errors_total",
        1.0,
        "Number of packets marked with the EBP (End of Bad Packet) delimiter received on the port.",
    ),
    (
        "counters",
        "port_rcv_switch_relay_errors",
        "port_receive_switch_relay_errors_total",
        1.0,
        "Number of packets that could not be forwarded by the switch.",
    ),
    (
        "counters",
        "port_xmit_constraint_errors",
        "port_constraint_errors_transmitted_total",
        1.0,
        "Number of packets not transmitted from the switch physical port",
    ),
    (
        "counters",
        "port_xmit_data",
        "port_data_transmitted_bytes_total",
        4.0,
        "Number of data octets transmitted on all links",
    ),
    (
        "counters",
        "port_xmit_discards",
        "port_discards_transmitted_total",
        1.0,
        "Number of outbound packets discarded by the port because the port is down or congested",
    ),
    (
        "counters",
        "port_xmit_packets",
        "port_packets_transmitted_total",
        1.0,
        "Number of packets transmitted on all VLs from this port (including errors)",
    ),
    (
        "counters",
        "port_xmit_wait",
        "port_transmit_wait_total",
        1.0,
        "Number of ticks during which the port had data to transmit but no data was sent during the entire tick",
    ),
    (
        "counters",
        "symbol_error",
        "symbol_error_total",
        1.0,
        "Number of minor link errors detected on one or more physical lanes.",
    ),
    (
        "counters",
        "unicast_rcv_packets",
        "unicast_packets_received_total",
        1.0,
        "Number of unicast packets received (including errors)",
    ),
    (
        "counters",
        "unicast_xmit_packets",
        "unicast_packets_transmitted_total",
        1.0,
        "Number of unicast packets transmitted (including errors)",
    ),
    (
        "counters",
        "VL15_dropped",
        "vl15_dropped_total",
        1.0,
        "Number of incoming VL15 packets dropped due to resource limitations.",
    ),
    (
        "counters_ext",
        "port_multicast_rcv_packets",
        "legacy_multicast_packets_received_total",
        1.0,
        "Number of multicast packets received",
    ),
    (
        "counters_ext",
        "port_multicast_xmit_packets",
        "legacy_multicast_packets_transmitted_total",
        1.0,
        "Number of multicast packets transmitted",
    ),
    (
        "counters_ext",
        "port_rcv_data_64",
        "legacy_data_received_bytes_total",
        4.0,
        "Number of data octets received on all links",
    ),
    (
        "counters_ext",
        "port_rcv_packets_64",
        "legacy_packets_received_total",
        1.0,
        "Number of data packets received on all links",
    ),
    (
        "counters_ext",
        "port_unicast_rcv_packets",
        "legacy_unicast_packets_received_total",
        1.0,
        "Number of unicast packets received",
    ),
    (
        "counters_ext",
        "port_unicast_xmit_packets",
        "legacy_unicast_packets_transmitted_total",
        1.0,
        "Number of unicast packets transmitted",
    ),
    (
        "counters_ext",
        "port_xmit_data_64",
        "legacy_data_transmitted_bytes_total",
        4.0,
        "Number of data octets transmitted on all links",
    ),
    (
        "counters_ext",
        "port_xmit_packets_64",
        "legacy_packets_transmitted_total",
        1.0,
        "Number of data packets received on all links",
    ),
];

/// `4: ACTIVE` -> 4.
pub fn state_id(text: &str) -> Result<f64, LineError> {
    let id = text.split(':').next().unwrap_or("").trim();
    id.parse::<u8>()
        .map(f64::from)
        .map_err(|_| LineError::new(1, format!("{:?} is not \"<id>: <NAME>\"", text.trim())))
}

/// `40 Gb/sec (4X QDR)` -> 5e9 bytes per second.
pub fn rate(text: &str) -> Result<f64, LineError> {
    let mut f = text.split_whitespace();
    let bad = || LineError::new(1, format!("{:?} is not \"<n> Gb/sec ...\"", text.trim()));
    let v: f64 = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let scale = match f.next() {
        Some("Gb/sec") => 1e9,
        Some("Mb/sec") => 1e6,
        Some("Kb/sec") => 1e3,
        _ => return Err(bad()),
    };
    Ok(v * scale / 8.0)
}

/// A counter file's value: `None` for "N/A (no PMA)".
pub fn counter(text: &str) -> Result<Option<f64>, LineError> {
    let t = text.trim();
    if t.starts_with("N/A") {
        return Ok(None);
    }
    t.parse::<u64>()
        .map(|v| Some(v as f64))
        .map_err(|_| LineError::new(1, format!("{t:?} is not a counter value")))
}

fn port(m: &mut Samples, dev: &str, port: &str, dir: &Path) -> Result<(), CollectorError> {
    let l = [("device", dev), ("port", port)];
    for (file, name, help, parse) in [
        (
            "state",
            "node_infiniband_state_id",
            "State of the InfiniBand port (0: no change, 1: down, 2: init, 3: armed, 4: active, 5: act defer)",
            state_id as fn(&str) -> Result<f64, LineError>,
        ),
        (
            "phys_state",
            "node_infiniband_physical_state_id",
            "Physical state of the InfiniBand port (0: no change, 1: sleep, 2: polling, 3: disable, 4: shift, 5: link up, 6: link error recover, 7: phytest)",
            state_id,
        ),
        (
            "rate",
            "node_infiniband_rate_bytes_per_second",
            "Maximum signal transfer rate",
            rate,
        ),
    ] {
        let p = dir.join(file);
        let text = super::read_file(&p)?;
        m.gauge(name, help, &l, parse(&text).map_err(|e| e.at(&p))?);
    }
    for (sub, file, suffix, mul, help) in COUNTERS {
        let p = dir.join(sub).join(file);
        let Some(text) = attr(&p) else { continue };
        if let Some(v) = counter(&text).map_err(|e| e.at(&p))? {
            m.add(
                &format!("node_infiniband_{suffix}"),
                help,
                Kind::Counter,
                &l,
                v * mul,
            );
        }
    }
    Ok(())
}

impl NodeCollector for Infiniband {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        for dev in list_dir(&self.class)? {
            let d = self.class.join(&dev);
            let a = |f: &str| attr(&d.join(f)).unwrap_or_default();
            let (board, fw, hca) = (a("board_id"), a("fw_ver"), a("hca_type"));
            m.gauge(
                "node_infiniband_info",
                "Non-numeric data from /sys/class/infiniband/<device>, value is always 1.",
                &[
                    ("device", &dev),
                    ("board_id", &board),
                    ("firmware_version", &fw),
                    ("hca_type", &hca),
                ],
                1.0,
            );
            let ports = match list_dir(&d.join("ports")) {
                Ok(p) => p,
                Err(CollectorError::NoData(_)) => continue,
                Err(e) => return Err(e),
            };
            for p in ports {
                if p.parse::<u32>().is_ok() {
                    port(&mut m, &dev, &p, &d.join("ports").join(&p))?;
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
    fn parses_state_rate_and_counters() {
        assert_eq!(state_id("4: ACTIVE\n").unwrap(), 4.0);
        assert!(state_id("ACTIVE").is_err());
        assert_eq!(rate("40 Gb/sec (4X QDR)").unwrap(), 5e9);
        assert_eq!(rate("2.5 Gb/sec (1X SDR)").unwrap(), 312_500_000.0);
        assert!(rate("fast").is_err());
        assert_eq!(counter("N/A (no PMA)").unwrap(), None);
        assert_eq!(counter("12\n").unwrap(), Some(12.0));
        assert!(counter("x").is_err());
    }
}
