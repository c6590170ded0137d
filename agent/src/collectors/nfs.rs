//! `nfs`: reads `<procfs>/net/rpc/nfs` (the kernel's NFS client RPC statistics,
//! net/sunrpc/stats.c and fs/nfs/); produces node_exporter 1.5's `node_nfs_packets_total
//! {protocol}`, `node_nfs_connections_total`, `node_nfs_rpcs_total`,
//! `node_nfs_rpc_retransmissions_total`, `node_nfs_rpc_authentication_refreshes_total` and
//! `node_nfs_requests_total{method,proto}` for NFS v2, v3 and v4 procedures.
//!
//! Each line is `<key> <values...>`; `procN` lines start with the number of values that
//! follow. A v4 line shorter than today's (older kernels) is padded with zeros, as procfs does.
use std::{collections::BTreeMap, path::PathBuf};

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, read_file, sysfs::Samples,
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Nfs {
    path: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Nfs {
        path: ctx.paths.proc("net/rpc/nfs"),
    }))
}

/// A parsed line: its 1-based number and its values.
pub type Lines = BTreeMap<String, (usize, Vec<f64>)>;

/// Parses `<key> <number>...` lines. Numbers may be decimals (the `th` line of nfsd).
pub fn parse_lines(text: &str) -> Result<Lines, LineError> {
    let mut out = Lines::new();
    for (i, line) in text.lines().enumerate() {
        let mut f = line.split_whitespace();
        let Some(key) = f.next() else { continue };
        let mut vals = Vec::new();
        for v in f {
            vals.push(
                v.parse::<f64>()
                    .map_err(|_| LineError::new(i + 1, format!("{key}: {v:?} is not a number")))?,
            );
        }
        out.insert(key.to_string(), (i + 1, vals));
    }
    Ok(out)
}

/// At least `n` values of line `key`, or an error naming the line.
pub fn need<'a>(lines: &'a Lines, key: &str, n: usize) -> Result<Option<&'a [f64]>, LineError> {
    match lines.get(key) {
        None => Ok(None),
        Some((no, v)) if v.len() < n => Err(LineError::new(
            *no,
            format!("{key}: {} values, expected at least {n}", v.len()),
        )),
        Some((_, v)) => Ok(Some(v)),
    }
}

/// The values of a `procN` line, checked against its leading count; `pad` pads short lines
/// with zeros up to `names.len()` instead of failing.
pub fn proc_values(
    lines: &Lines,
    key: &str,
    names: &[Option<&str>],
    pad: bool,
) -> Result<Option<Vec<f64>>, LineError> {
    let Some((no, v)) = lines.get(key) else {
        return Ok(None);
    };
    let count = v.first().copied().unwrap_or(-1.0);
    let vals = v.get(1..).unwrap_or(&[]);
    if count < 0.0 || count as usize != vals.len() {
        return Err(LineError::new(
            *no,
            format!("{key}: count {count} does not match {} values", vals.len()),
        ));
    }
    let mut vals = vals.to_vec();
    if vals.len() < names.len() {
        if !pad {
            return Err(LineError::new(
                *no,
                format!("{key}: {} values, expected {}", vals.len(), names.len()),
            ));
        }
        vals.resize(names.len(), 0.0);
    }
    Ok(Some(vals))
}

pub const V2: &[Option<&str>] = &[
    Some("Null"),
    Some("GetAttr"),
    Some("SetAttr"),
    Some("Root"),
    Some("Lookup"),
    Some("ReadLink"),
    Some("Read"),
    Some("WrCache"),
    Some("Write"),
    Some("Create"),
    Some("Remove"),
    Some("Rename"),
    Some("Link"),
    Some("SymLink"),
    Some("MkDir"),
    Some("RmDir"),
    Some("ReadDir"),
    Some("FsStat"),
];

pub const V3: &[Option<&str>] = &[
    Some("Null"),
    Some("GetAttr"),
    Some("SetAttr"),
    Some("Lookup"),
    Some("Access"),
    Some("ReadLink"),
    Some("Read"),
    Some("Write"),
    Some("Create"),
    Some("MkDir"),
    Some("SymLink"),
    Some("MkNod"),
    Some("Remove"),
    Some("RmDir"),
    Some("Rename"),
    Some("Link"),
    Some("ReadDir"),
    Some("ReadDirPlus"),
    Some("FsStat"),
    Some("FsInfo"),
    Some("PathConf"),
    Some("Commit"),
];

const V4_CLIENT: &[Option<&str>] = &[
    Some("Null"),
    Some("Read"),
    Some("Write"),
    Some("Commit"),
    Some("Open"),
    Some("OpenConfirm"),
    Some("OpenNoattr"),
    Some("OpenDowngrade"),
    Some("Close"),
    Some("Setattr"),
    Some("FsInfo"),
    Some("Renew"),
    Some("SetClientID"),
    Some("SetClientIDConfirm"),
    Some("Lock"),
    Some("Lockt"),
    Some("Locku"),
    Some("Access"),
    Some("Getattr"),
    Some("Lookup"),
    Some("LookupRoot"),
    Some("Remove"),
    Some("Rename"),
    Some("Link"),
    Some("Symlink"),
    Some("Create"),
    Some("Pathconf"),
    Some("StatFs"),
    Some("ReadLink"),
    Some("ReadDir"),
    Some("ServerCaps"),
    Some("DelegReturn"),
    Some("GetACL"),
    Some("SetACL"),
    Some("FsLocations"),
    Some("ReleaseLockowner"),
    Some("Secinfo"),
    Some("FsidPresent"),
    Some("ExchangeID"),
    Some("CreateSession"),
    Some("DestroySession"),
    Some("Sequence"),
    Some("GetLeaseTime"),
    Some("ReclaimComplete"),
    Some("LayoutGet"),
    Some("GetDeviceInfo"),
    Some("LayoutCommit"),
    Some("LayoutReturn"),
    Some("SecinfoNoName"),
    Some("TestStateID"),
    Some("FreeStateID"),
    Some("GetDeviceList"),
    Some("BindConnToSession"),
    Some("DestroyClientID"),
    Some("Seek"),
    Some("Allocate"),
    Some("DeAllocate"),
    Some("LayoutStats"),
    Some("Clone"),
];

/// Adds `<family>{method,proto}` for each named procedure of a `procN` line.
pub fn requests(
    m: &mut Samples,
    family: &str,
    help: &str,
    proto: &str,
    names: &[Option<&str>],
    vals: &[f64],
) {
    for (name, v) in names.iter().zip(vals) {
        if let Some(method) = name {
            m.add(
                family,
                help,
                Kind::Counter,
                &[("method", method), ("proto", proto)],
                *v,
            );
        }
    }
}

/// All of the client's families from the file's text.
pub fn metrics(m: &mut Samples, text: &str) -> Result<(), LineError> {
    let lines = parse_lines(text)?;
    if let Some(net) = need(&lines, "net", 4)? {
        let help = "Total NFSd network packets (sent+received) by protocol type.";
        m.add(
            "node_nfs_packets_total",
            help,
            Kind::Counter,
            &[("protocol", "udp")],
            net[1],
        );
        m.add(
            "node_nfs_packets_total",
            help,
            Kind::Counter,
            &[("protocol", "tcp")],
            net[2],
        );
        m.add(
            "node_nfs_connections_total",
            "Total number of NFSd TCP connections.",
            Kind::Counter,
            &[],
            net[3],
        );
    }
    if let Some(rpc) = need(&lines, "rpc", 3)? {
        for (name, help, v) in [
            (
                "node_nfs_rpcs_total",
                "Total number of RPCs performed.",
                rpc[0],
            ),
            (
                "node_nfs_rpc_retransmissions_total",
                "Number of RPC transmissions performed.",
                rpc[1],
            ),
            (
                "node_nfs_rpc_authentication_refreshes_total",
                "Number of RPC authentication refreshes performed.",
                rpc[2],
            ),
        ] {
            m.add(name, help, Kind::Counter, &[], v);
        }
    }
    let help = "Number of NFS procedures invoked.";
    for (key, proto, names, pad) in [
        ("proc2", "2", V2, false),
        ("proc3", "3", V3, false),
        ("proc4", "4", V4_CLIENT, true),
    ] {
        if let Some(vals) = proc_values(&lines, key, names, pad)? {
            requests(m, "node_nfs_requests_total", help, proto, names, &vals);
        }
    }
    Ok(())
}

impl NodeCollector for Nfs {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let mut m = Samples::default();
        metrics(&mut m, &text).map_err(|e| e.at(&self.path))?;
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_stats() {
        let mut m = Samples::default();
        let v3: Vec<String> = (0..22).map(|i| (100 + i).to_string()).collect();
        let text = format!(
            "net 10 1 9 6\nrpc 4329785 3 4338291\nproc3 22 {}\nproc4 2 7 8\n",
            v3.join(" ")
        );
        metrics(&mut m, &text).unwrap();
        assert_eq!(
            m.get("node_nfs_packets_total", &[("protocol", "tcp")]),
            Some(9.0)
        );
        assert_eq!(m.get("node_nfs_rpc_retransmissions_total", &[]), Some(3.0));
        let r = |meth: &str, p: &str| {
            m.get("node_nfs_requests_total", &[("method", meth), ("proto", p)])
        };
        assert_eq!(r("Commit", "3"), Some(121.0));
        assert_eq!(r("Read", "4"), Some(8.0));
        assert_eq!(r("Clone", "4"), Some(0.0), "short v4 lines are padded");
    }

    #[test]
    fn malformed_lines_are_named() {
        let e = metrics(&mut Samples::default(), "net 1 2 3 4\nrpc 1 x 3\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = metrics(&mut Samples::default(), "proc2 18 1 2\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = metrics(&mut Samples::default(), "net 1 2\n").unwrap_err();
        assert!(e.msg.contains("at least 4"), "{}", e.msg);
    }
}
