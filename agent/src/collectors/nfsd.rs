//! `nfsd`: reads `<procfs>/net/rpc/nfsd` (the kernel NFS server's statistics, fs/nfsd/stats.c);
//! produces node_exporter 1.5's `node_nfsd_reply_cache_{hits,misses,nocache}_total`,
//! `node_nfsd_file_handles_stale_total`, `node_nfsd_disk_bytes_{read,written}_total`,
//! `node_nfsd_server_threads`, `node_nfsd_read_ahead_cache_size_blocks`,
//! `node_nfsd_read_ahead_cache_not_found_total`, `node_nfsd_packets_total{proto}`,
//! `node_nfsd_connections_total`, `node_nfsd_server_rpcs_total`,
//! `node_nfsd_rpc_errors_total{error}` and `node_nfsd_requests_total{method,proto}`.
use std::path::PathBuf;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    nfs::{V2, V3, need, parse_lines, proc_values, requests},
    read_file,
    sysfs::Samples,
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Nfsd {
    path: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Nfsd {
        path: ctx.paths.proc("net/rpc/nfsd"),
    }))
}

/// NFSv4 server operations by op number (RFC 5661); `None` ones are not exported.
const V4_OPS: &[Option<&str>] = &[
    None,
    None,
    None,
    Some("Access"),
    Some("Close"),
    Some("Commit"),
    Some("Create"),
    Some("DelegPurge"),
    Some("DelegReturn"),
    Some("GetAttr"),
    Some("GetFH"),
    Some("Link"),
    Some("Lock"),
    Some("Lockt"),
    Some("Locku"),
    Some("Lookup"),
    Some("LookupRoot"),
    Some("Nverify"),
    Some("Open"),
    Some("OpenAttr"),
    Some("OpenConfirm"),
    Some("OpenDgrd"),
    Some("PutFH"),
    None,
    None,
    Some("Read"),
    Some("ReadDir"),
    Some("ReadLink"),
    Some("Remove"),
    Some("Rename"),
    Some("Renew"),
    Some("RestoreFH"),
    Some("SaveFH"),
    Some("SecInfo"),
    Some("SetAttr"),
    Some("Verify"),
    Some("Write"),
    Some("RelLockOwner"),
];

fn c(m: &mut Samples, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
    m.add(name, help, Kind::Counter, labels, v);
}

/// All of the server's families from the file's text.
pub fn metrics(m: &mut Samples, text: &str) -> Result<(), LineError> {
    let lines = parse_lines(text)?;
    if let Some(rc) = need(&lines, "rc", 3)? {
        c(
            m,
            "node_nfsd_reply_cache_hits_total",
            "Total number of NFSd Reply Cache hits (client lost server response).",
            &[],
            rc[0],
        );
        c(
            m,
            "node_nfsd_reply_cache_misses_total",
            "Total number of NFSd Reply Cache an operation that requires caching (idempotent).",
            &[],
            rc[1],
        );
        c(
            m,
            "node_nfsd_reply_cache_nocache_total",
            "Total number of NFSd Reply Cache non-idempotent operations (rename/delete/…).",
            &[],
            rc[2],
        );
    }
    if let Some(fh) = need(&lines, "fh", 1)? {
        c(
            m,
            "node_nfsd_file_handles_stale_total",
            "Total number of NFSd stale file handles",
            &[],
            fh[0],
        );
    }
    if let Some(io) = need(&lines, "io", 2)? {
        c(
            m,
            "node_nfsd_disk_bytes_read_total",
            "Total NFSd bytes read.",
            &[],
            io[0],
        );
        c(
            m,
            "node_nfsd_disk_bytes_written_total",
            "Total NFSd bytes written.",
            &[],
            io[1],
        );
    }
    if let Some(th) = need(&lines, "th", 1)? {
        m.gauge(
            "node_nfsd_server_threads",
            "Total number of NFSd kernel threads that are running.",
            &[],
            th[0],
        );
    }
    if let Some(ra) = need(&lines, "ra", 12)? {
        m.gauge(
            "node_nfsd_read_ahead_cache_size_blocks",
            "How large the read ahead cache is in blocks.",
            &[],
            ra[0],
        );
        c(
            m,
            "node_nfsd_read_ahead_cache_not_found_total",
            "Total number of NFSd read ahead cache not found.",
            &[],
            ra[11],
        );
    }
    if let Some(net) = need(&lines, "net", 4)? {
        let help = "Total NFSd network packets (sent+received) by protocol type.";
        c(
            m,
            "node_nfsd_packets_total",
            help,
            &[("proto", "udp")],
            net[1],
        );
        c(
            m,
            "node_nfsd_packets_total",
            help,
            &[("proto", "tcp")],
            net[2],
        );
        c(
            m,
            "node_nfsd_connections_total",
            "Total number of NFSd TCP connections.",
            &[],
            net[3],
        );
    }
    if let Some(rpc) = need(&lines, "rpc", 5)? {
        c(
            m,
            "node_nfsd_server_rpcs_total",
            "Total number of NFSd RPCs.",
            &[],
            rpc[0],
        );
        let help = "Total number of NFSd RPC errors by error type.";
        c(
            m,
            "node_nfsd_rpc_errors_total",
            help,
            &[("error", "fmt")],
            rpc[2],
        );
        c(
            m,
            "node_nfsd_rpc_errors_total",
            help,
            &[("error", "auth")],
            rpc[3],
        );
        c(
            m,
            "node_nfsd_rpc_errors_total",
            help,
            &[("error", "cInt")],
            rpc[4],
        );
    }
    let help = "Total number NFSd Requests by method and protocol.";
    // node_exporter leaves out the v2/v3 Null procedure for the server.
    let v2: Vec<Option<&str>> = V2
        .iter()
        .enumerate()
        .map(|(i, n)| if i == 0 { None } else { *n })
        .collect();
    let v3: Vec<Option<&str>> = V3
        .iter()
        .enumerate()
        .map(|(i, n)| if i == 0 { None } else { *n })
        .collect();
    for (key, proto, names, pad) in [
        ("proc2", "2", &v2[..], false),
        ("proc3", "3", &v3[..], false),
        ("proc4ops", "4", V4_OPS, true),
    ] {
        if let Some(vals) = proc_values(&lines, key, names, pad)? {
            requests(m, "node_nfsd_requests_total", help, proto, names, &vals);
        }
    }
    Ok(())
}

impl NodeCollector for Nfsd {
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
    fn server_stats() {
        let mut m = Samples::default();
        metrics(
            &mut m,
            "rc 0 6 18622\nth 8 0 0.000 0.000\nra 32 0 0 0 0 0 0 0 0 0 0 5\nrpc 18628 1 2 3 4\nproc4ops 5 0 0 0 7 8\n",
        )
        .unwrap();
        assert_eq!(
            m.get("node_nfsd_reply_cache_nocache_total", &[]),
            Some(18622.0)
        );
        assert_eq!(m.get("node_nfsd_server_threads", &[]), Some(8.0));
        assert_eq!(
            m.get("node_nfsd_read_ahead_cache_not_found_total", &[]),
            Some(5.0)
        );
        assert_eq!(
            m.get("node_nfsd_rpc_errors_total", &[("error", "cInt")]),
            Some(4.0)
        );
        let r = |meth: &str| {
            m.get(
                "node_nfsd_requests_total",
                &[("method", meth), ("proto", "4")],
            )
        };
        assert_eq!(r("Close"), Some(8.0));
        assert_eq!(r("Write"), Some(0.0));
    }

    #[test]
    fn malformed_is_an_error() {
        assert_eq!(
            metrics(&mut Samples::default(), "rc 0 1\n")
                .unwrap_err()
                .line,
            1
        );
        assert_eq!(
            metrics(&mut Samples::default(), "io 1\nth x\n")
                .unwrap_err()
                .line,
            2
        );
        assert_eq!(
            metrics(&mut Samples::default(), "io 1\n").unwrap_err().line,
            1
        );
    }
}
