//! `ipvs`: reads `<procfs>/net/ip_vs_stats` and `<procfs>/net/ip_vs` (IP Virtual Server,
//! net/netfilter/ipvs/ip_vs_ctl.c; hexadecimal addresses, ports and totals); produces
//! node_exporter 1.5's `node_ipvs_{connections,incoming_packets,outgoing_packets,
//! incoming_bytes,outgoing_bytes}_total` and `node_ipvs_backend_{connections_active,
//! connections_inactive,weight}{local_address,local_port,remote_address,remote_port,proto,
//! local_mark}` (backends with the same labels are summed, as node_exporter does).
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, read_file, sysfs::Samples,
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Ipvs {
    stats: PathBuf,
    backends: PathBuf,
    /// Which of [`LABELS`] the backend series carry (`--collector.ipvs.backend-labels`).
    labels: [bool; 6],
}

/// The backend labels in node_exporter's order.
pub const LABELS: [&str; 6] = [
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "proto",
    "local_mark",
];

/// Which labels a `--collector.ipvs.backend-labels` value keeps; an unknown name is an error.
pub fn label_mask(spec: &str) -> Result<[bool; 6], String> {
    let mut mask = [false; 6];
    for l in spec.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        let i = LABELS
            .iter()
            .position(|k| *k == l)
            .ok_or_else(|| format!("unknown IPVS backend label {l:?}"))?;
        mask[i] = true;
    }
    Ok(mask)
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    let labels = label_mask(&ctx.settings.ipvs.backend_labels).map_err(|e| {
        CollectorError::parse(
            std::path::Path::new("--collector.ipvs.backend-labels"),
            0,
            e,
        )
    })?;
    Ok(Box::new(Ipvs {
        stats: ctx.paths.proc("net/ip_vs_stats"),
        backends: ctx.paths.proc("net/ip_vs"),
        labels,
    }))
}

/// Totals from `ip_vs_stats`: connections, incoming packets, outgoing packets, incoming bytes,
/// outgoing bytes (the third line, hexadecimal).
pub fn parse_stats(text: &str) -> Result<[f64; 5], LineError> {
    let line = text
        .lines()
        .nth(2)
        .ok_or_else(|| LineError::new(3, "missing the totals line"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 5 {
        return Err(LineError::new(3, format!("{} fields, expected 5", f.len())));
    }
    let mut out = [0.0; 5];
    for (i, v) in f.iter().take(5).enumerate() {
        out[i] = u64::from_str_radix(v, 16)
            .map_err(|_| LineError::new(3, format!("{v:?} is not hexadecimal")))?
            as f64;
    }
    Ok(out)
}

/// One backend: (labels in node_exporter's order, active, inactive, weight).
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub local_address: String,
    pub local_port: String,
    pub remote_address: String,
    pub remote_port: String,
    pub proto: String,
    pub local_mark: String,
    pub active: f64,
    pub inactive: f64,
    pub weight: f64,
}

/// `C0A80016:0CEA` or `[2620:...:0001]:0050` -> ("192.168.0.22", "3306").
fn addr_port(s: &str, line: usize) -> Result<(String, String), LineError> {
    let bad = || LineError::new(line, format!("{s:?} is not ADDRESS:PORT in hexadecimal"));
    let (addr, port) = if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once("]:").ok_or_else(bad)?;
        let ip: Ipv6Addr = a.parse().map_err(|_| bad())?;
        (ip.to_string(), p)
    } else {
        let (a, p) = s.split_once(':').ok_or_else(bad)?;
        let n = u32::from_str_radix(a, 16).map_err(|_| bad())?;
        if a.len() != 8 {
            return Err(bad());
        }
        (Ipv4Addr::from(n).to_string(), p)
    };
    let port = u16::from_str_radix(port, 16).map_err(|_| bad())?;
    Ok((addr, port.to_string()))
}

fn num(s: &str, line: usize) -> Result<f64, LineError> {
    s.parse::<u64>()
        .map(|v| v as f64)
        .map_err(|_| LineError::new(line, format!("{s:?} is not a number")))
}

/// Parses `/proc/net/ip_vs`.
pub fn parse_backends(text: &str) -> Result<Vec<Backend>, LineError> {
    let mut out = Vec::new();
    let mut service: Option<(String, String, String, String)> = None;
    for (i, line) in text.lines().enumerate().skip(3) {
        let no = i + 1;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        match f[0] {
            "TCP" | "UDP" | "SCTP" => {
                let a = f
                    .get(1)
                    .ok_or_else(|| LineError::new(no, "service without address"))?;
                let (addr, port) = addr_port(a, no)?;
                service = Some((f[0].to_string(), addr, port, String::new()));
            }
            "FWM" => {
                let mark = f
                    .get(1)
                    .ok_or_else(|| LineError::new(no, "FWM without mark"))?;
                service = Some(("FWM".into(), String::new(), "0".into(), mark.to_string()));
            }
            "->" => {
                if f.len() < 6 {
                    return Err(LineError::new(
                        no,
                        format!("backend line has {} fields, expected 6", f.len()),
                    ));
                }
                let Some((proto, laddr, lport, mark)) = &service else {
                    return Err(LineError::new(no, "backend before any service"));
                };
                let (raddr, rport) = addr_port(f[1], no)?;
                out.push(Backend {
                    local_address: laddr.clone(),
                    local_port: lport.clone(),
                    remote_address: raddr,
                    remote_port: rport,
                    proto: proto.clone(),
                    local_mark: mark.clone(),
                    weight: num(f[3], no)?,
                    active: num(f[4], no)?,
                    inactive: num(f[5], no)?,
                });
            }
            other => {
                return Err(LineError::new(
                    no,
                    format!("unexpected line start {other:?}"),
                ));
            }
        }
    }
    Ok(out)
}

pub fn metrics(m: &mut Samples, stats: [f64; 5], backends: &[Backend], mask: [bool; 6]) {
    for (name, help, v) in [
        (
            "node_ipvs_connections_total",
            "The total number of connections made.",
            stats[0],
        ),
        (
            "node_ipvs_incoming_packets_total",
            "The total number of incoming packets.",
            stats[1],
        ),
        (
            "node_ipvs_outgoing_packets_total",
            "The total number of outgoing packets.",
            stats[2],
        ),
        (
            "node_ipvs_incoming_bytes_total",
            "The total amount of incoming data.",
            stats[3],
        ),
        (
            "node_ipvs_outgoing_bytes_total",
            "The total amount of outgoing data.",
            stats[4],
        ),
    ] {
        m.add(name, help, Kind::Counter, &[], v);
    }
    let mut sums: BTreeMap<[&str; 6], [f64; 3]> = BTreeMap::new();
    for b in backends {
        let key = [
            b.local_address.as_str(),
            b.local_port.as_str(),
            b.remote_address.as_str(),
            b.remote_port.as_str(),
            b.proto.as_str(),
            b.local_mark.as_str(),
        ];
        // Labels not selected become "" and are left out below; their series are summed.
        let mut key = key;
        for (k, keep) in key.iter_mut().zip(mask) {
            if !keep {
                *k = "";
            }
        }
        let s = sums.entry(key).or_default();
        s[0] += b.active;
        s[1] += b.inactive;
        s[2] += b.weight;
    }
    for (k, v) in sums {
        let l: Vec<(&str, &str)> = LABELS
            .iter()
            .zip(k)
            .zip(mask)
            .filter(|(_, keep)| *keep)
            .map(|((name, v), _)| (*name, v))
            .collect();
        m.gauge(
            "node_ipvs_backend_connections_active",
            "The current active connections by local and remote address.",
            &l,
            v[0],
        );
        m.gauge(
            "node_ipvs_backend_connections_inactive",
            "The current inactive connections by local and remote address.",
            &l,
            v[1],
        );
        m.gauge(
            "node_ipvs_backend_weight",
            "The current backend weight by local and remote address.",
            &l,
            v[2],
        );
    }
}

impl NodeCollector for Ipvs {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.stats)?;
        let stats = parse_stats(&text).map_err(|e| e.at(&self.stats))?;
        let text = read_file(&self.backends)?;
        let backends = parse_backends(&text).map_err(|e| e.at(&self.backends))?;
        let mut m = Samples::default();
        metrics(&mut m, stats, &backends, self.labels);
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_backends() {
        let s =
            parse_stats("h\nh\n 23765872 16E2D9C8        0      2B3ACBD5C3        0\n").unwrap();
        assert_eq!(s[0], 594958450.0);
        let b = parse_backends("v\nh\nh\nTCP  C0A80016:0CEA wlc\n  -> C0A85216:0CEA      Tunnel  100    248        2\nFWM  10001000 wlc\n  -> [2620:0000:0000:0000:0000:0000:0000:0002]:0050 Route 1 0 3\n").unwrap();
        assert_eq!(b[0].local_address, "192.168.0.22");
        assert_eq!(b[0].remote_port, "3306");
        assert_eq!(
            (b[0].weight, b[0].active, b[0].inactive),
            (100.0, 248.0, 2.0)
        );
        assert_eq!(b[1].remote_address, "2620::2");
        assert_eq!(b[1].local_mark, "10001000");
        assert_eq!(
            parse_backends("v\nh\nh\n  -> C0A85216:0CEA Tunnel 1 2 3\n")
                .unwrap_err()
                .line,
            4
        );
        assert_eq!(
            parse_backends("v\nh\nh\nTCP zz:1 wlc\n").unwrap_err().line,
            4
        );
        assert!(parse_stats("a\nb\n1 2 3\n").is_err());
        // Backend labels reduced to proto: both backends sum into one series.
        let mask = label_mask("proto").unwrap();
        let mut m = Samples::default();
        metrics(&mut m, s, &b[..1], mask);
        metrics(&mut Samples::default(), s, &b, mask);
        assert_eq!(
            m.get("node_ipvs_backend_connections_active", &[("proto", "TCP")]),
            Some(248.0)
        );
        assert!(label_mask("proto,port").is_err());
    }
}
