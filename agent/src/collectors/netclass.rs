//! `netclass`: reads the attribute files of `<sysfs>/class/net/<device>/`; produces
//! node_exporter 1.5's `node_network_up`, `node_network_info{device,address,broadcast,duplex,
//! operstate,ifalias}` and `node_network_<property>{device}` (`mtu_bytes`, `speed_bytes`,
//! `carrier_changes_total`, `iface_id`, `flags`, ...).
//!
//! Settings: `--collector.netclass.ignored-devices` (regexp, default `^$`) and
//! `--collector.netclass.ignore-invalid-speed` (leave out `speed_bytes` when the kernel reports
//! -1). An attribute the driver refuses to read (EINVAL for `speed` on a down link) is left
//! out; an attribute that is not a number fails the collector naming the file.
use std::{collections::BTreeMap, path::PathBuf};

use regex::Regex;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    sysfs::{AttrDir, Samples, list_dir},
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Netclass {
    class: PathBuf,
    ignored: Regex,
    ignore_invalid_speed: bool,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    let s = &ctx.settings.netclass;
    let ignored = Regex::new(&s.ignored_devices).map_err(|e| {
        CollectorError::parse(
            std::path::Path::new("--collector.netclass.ignored-devices"),
            0,
            e.to_string(),
        )
    })?;
    Ok(Box::new(Netclass {
        class: ctx.paths.sys("class/net"),
        ignored,
        ignore_invalid_speed: s.ignore_invalid_speed,
    }))
}

/// Integer attributes as procfs parses them (base prefix allowed: `0x1003`).
const INTS: &[&str] = &[
    "addr_assign_type",
    "addr_len",
    "carrier",
    "carrier_changes",
    "carrier_up_count",
    "carrier_down_count",
    "dev_id",
    "dormant",
    "flags",
    "ifindex",
    "iflink",
    "link_mode",
    "mtu",
    "name_assign_type",
    "netdev_group",
    "speed",
    "tx_queue_len",
    "type",
];

/// Text attributes: labels of `node_network_info` and `operstate` for `node_network_up`.
const STRINGS: &[&str] = &["address", "broadcast", "duplex", "operstate", "ifalias"];

/// (attribute, property name, counter?) in node_exporter's order.
const PROPS: &[(&str, &str, bool)] = &[
    ("addr_assign_type", "address_assign_type", false),
    ("carrier", "carrier", false),
    ("carrier_changes", "carrier_changes_total", true),
    ("carrier_up_count", "carrier_up_changes_total", true),
    ("carrier_down_count", "carrier_down_changes_total", true),
    ("dev_id", "device_id", false),
    ("dormant", "dormant", false),
    ("flags", "flags", false),
    ("ifindex", "iface_id", false),
    ("iflink", "iface_link", false),
    ("link_mode", "iface_link_mode", false),
    ("mtu", "mtu_bytes", false),
    ("name_assign_type", "name_assign_type", false),
    ("netdev_group", "net_dev_group", false),
    ("tx_queue_len", "transmit_queue_length", false),
    ("type", "protocol_type", false),
];

/// Go's `strconv.ParseInt(s, 0, 64)`: decimal, `0x` hex, `0o`/`0` octal, `0b` binary.
pub fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let lower = body.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8).ok()?
    } else {
        if body.starts_with(['+', '-']) {
            return None;
        }
        body.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// One device: attribute file -> content (trimmed).
pub fn device_metrics(
    m: &mut Samples,
    device: &str,
    attrs: &BTreeMap<String, String>,
    ignore_invalid_speed: bool,
) -> Result<(), (String, LineError)> {
    let mut ints: BTreeMap<&str, i64> = BTreeMap::new();
    for key in INTS {
        if let Some(text) = attrs.get(*key) {
            let v = parse_int(text).ok_or_else(|| {
                (
                    key.to_string(),
                    LineError::new(1, format!("{:?} is not an integer", text.trim())),
                )
            })?;
            ints.insert(key, v);
        }
    }
    let s = |k: &str| attrs.get(k).map_or("", String::as_str);
    let dev = [("device", device)];
    m.gauge(
        "node_network_up",
        "Value is 1 if operstate is 'up', 0 otherwise.",
        &dev,
        if s("operstate") == "up" { 1.0 } else { 0.0 },
    );
    m.gauge(
        "node_network_info",
        "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
        &[
            ("device", device),
            ("address", s("address")),
            ("broadcast", s("broadcast")),
            ("duplex", s("duplex")),
            ("operstate", s("operstate")),
            ("ifalias", s("ifalias")),
        ],
        1.0,
    );
    for (attr, prop, counter) in PROPS {
        if let Some(v) = ints.get(attr) {
            let kind = if *counter { Kind::Counter } else { Kind::Gauge };
            m.add(
                &format!("node_network_{prop}"),
                &format!("Network device property: {prop}"),
                kind,
                &dev,
                *v as f64,
            );
        }
    }
    if let Some(speed) = ints.get("speed")
        && (*speed >= 0 || !ignore_invalid_speed)
    {
        // Mbit/s to bytes/s, truncated to an integer as node_exporter does.
        let bytes = speed.saturating_mul(1000 * 1000) / 8;
        m.gauge(
            "node_network_speed_bytes",
            "Network device property: speed_bytes",
            &dev,
            bytes as f64,
        );
    }
    Ok(())
}

impl NodeCollector for Netclass {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        for device in list_dir(&self.class)? {
            if self.ignored.is_match(&device) {
                continue;
            }
            let dir = self.class.join(&device);
            // Not a directory (a stray file in the class): skipped.
            let Ok(files) = AttrDir::open(&dir) else {
                continue;
            };
            // Only the attributes exported are read: each sysfs read costs a driver call
            // (`duplex` and `speed` ask the NIC through ethtool under the RTNL lock).
            let attrs = files.texts(INTS.iter().chain(STRINGS).copied());
            device_metrics(&mut m, &device, &attrs, self.ignore_invalid_speed)
                .map_err(|(f, e)| e.at(&dir.join(f)))?;
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_go_style_integers() {
        assert_eq!(parse_int("0x1303"), Some(4867));
        assert_eq!(parse_int("-1"), Some(-1));
        assert_eq!(parse_int("1500\n"), Some(1500));
        assert_eq!(parse_int("010"), Some(8));
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("x"), None);
        assert_eq!(parse_int("--1"), None);
    }

    #[test]
    fn device_families() {
        let mut m = Samples::default();
        let a = attrs(&[
            ("operstate", "up"),
            ("mtu", "1500"),
            ("speed", "1000"),
            ("carrier_changes", "2"),
            ("flags", "0x1003"),
            ("address", "aa:bb"),
        ]);
        device_metrics(&mut m, "eth0", &a, false).unwrap();
        let d = [("device", "eth0")];
        assert_eq!(m.get("node_network_up", &d), Some(1.0));
        assert_eq!(m.get("node_network_mtu_bytes", &d), Some(1500.0));
        assert_eq!(m.get("node_network_speed_bytes", &d), Some(1.25e8));
        assert_eq!(m.get("node_network_carrier_changes_total", &d), Some(2.0));
        assert_eq!(m.get("node_network_flags", &d), Some(4099.0));
        let mut m = Samples::default();
        device_metrics(&mut m, "v", &attrs(&[("speed", "-1")]), true).unwrap();
        assert_eq!(m.get("node_network_speed_bytes", &[("device", "v")]), None);
        let mut m = Samples::default();
        device_metrics(&mut m, "v", &attrs(&[("speed", "-1")]), false).unwrap();
        assert_eq!(
            m.get("node_network_speed_bytes", &[("device", "v")]),
            Some(-125000.0)
        );
        let e = device_metrics(&mut m, "v", &attrs(&[("mtu", "big")]), false).unwrap_err();
        assert_eq!(e.0, "mtu");
    }
}
