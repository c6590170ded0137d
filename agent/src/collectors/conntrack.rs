//! `conntrack`: reads `<procfs>/sys/net/netfilter/nf_conntrack_{count,max}` and
//! `<procfs>/net/stat/nf_conntrack` (per-CPU hex counters, summed); produces
//! `node_nf_conntrack_entries`, `node_nf_conntrack_entries_limit` and
//! `node_nf_conntrack_stat_{found,invalid,ignore,insert,insert_failed,drop,early_drop,search_restart}`.
use std::path::PathBuf;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, parse_hex, read_file, read_number,
};
use crate::emit::Out;

/// The per-CPU statistics node_exporter exports, with their help.
const STATS: [(&str, &str); 8] = [
    ("found", "Number of searched entries which were successful."),
    (
        "invalid",
        "Number of packets seen which can not be tracked.",
    ),
    (
        "ignore",
        "Number of packets seen which are already connected to a conntrack entry.",
    ),
    ("insert", "Number of entries inserted into the list."),
    (
        "insert_failed",
        "Number of entries for which list insertion was attempted but failed.",
    ),
    (
        "drop",
        "Number of packets dropped due to conntrack failure.",
    ),
    (
        "early_drop",
        "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    ),
    (
        "search_restart",
        "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
    ),
];

#[derive(Debug)]
pub struct Conntrack {
    count: PathBuf,
    max: PathBuf,
    stat: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Conntrack {
        count: ctx.paths.proc("sys/net/netfilter/nf_conntrack_count"),
        max: ctx.paths.proc("sys/net/netfilter/nf_conntrack_max"),
        stat: ctx.paths.proc("net/stat/nf_conntrack"),
    }))
}

/// Sums the per-CPU rows of `/proc/net/stat/nf_conntrack`, by header name, for [`STATS`].
pub fn parse_stat(text: &str) -> Result<[f64; 8], LineError> {
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err(LineError::new(1, "empty file"));
    };
    let cols: Vec<&str> = header.split_ascii_whitespace().collect();
    let idx: Vec<Option<usize>> = STATS
        .iter()
        .map(|(n, _)| cols.iter().position(|c| c == n))
        .collect();
    let mut sums = [0.0; 8];
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let vals: Vec<&str> = line.split_ascii_whitespace().collect();
        if vals.len() != cols.len() {
            return Err(LineError::new(
                i + 1,
                format!("{} columns, header has {}", vals.len(), cols.len()),
            ));
        }
        for (k, ix) in idx.iter().enumerate() {
            if let Some(ix) = ix {
                sums[k] += parse_hex(vals[*ix], i + 1, STATS[k].0)? as f64;
            }
        }
    }
    Ok(sums)
}

impl NodeCollector for Conntrack {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let count = read_number(&self.count)?;
        let max = read_number(&self.max)?;
        out.gauge(
            "node_nf_conntrack_entries",
            "Number of currently allocated flow entries for connection tracking.",
            count,
        )?;
        out.gauge(
            "node_nf_conntrack_entries_limit",
            "Maximum size of connection tracking table.",
            max,
        )?;
        let text = read_file(&self.stat)?;
        let sums = parse_stat(&text).map_err(|e| e.at(&self.stat))?;
        let mut name = String::with_capacity(48);
        for ((field, help), v) in STATS.iter().zip(sums) {
            name.clear();
            name.push_str("node_nf_conntrack_stat_");
            name.push_str(field);
            out.gauge(&name, help, v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cpus_by_header() {
        let t = "entries  clashres found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n00000021  00000000 00000001 00000000 00000002 0000000a 00000000 00000000 00000003 00000000 00000004 00000005 00000000  00000000 00000000 00000000 00000006\n00000021  00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000010\n";
        assert_eq!(
            parse_stat(t).unwrap(),
            [2.0, 2.0, 10.0, 3.0, 0.0, 4.0, 5.0, 22.0]
        );
        assert_eq!(parse_stat("found drop\n1 2\n1 zz\n").unwrap_err().line, 3);
        assert_eq!(parse_stat("found\n1 2\n").unwrap_err().line, 2);
    }
}
