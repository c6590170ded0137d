//! `stat`: reads `<procfs>/stat`; produces `node_boot_time_seconds`,
//! `node_context_switches_total`, `node_forks_total`, `node_intr_total`, `node_procs_running`,
//! `node_procs_blocked`, and with `--collector.stat.softirq` `node_softirqs_total{vector}`.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file};
use crate::emit::Out;

#[derive(Debug)]
pub struct Stat {
    path: PathBuf,
    softirq: bool,
}

/// The softirq vectors in the order of the `softirq` line (include/linux/interrupt.h).
const SOFTIRQ_VECTORS: [&str; 10] = [
    "hi",
    "timer",
    "net_tx",
    "net_rx",
    "block",
    "block_iopoll",
    "tasklet",
    "sched",
    "hrtimer",
    "rcu",
];

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Stat {
        path: ctx.paths.proc("stat"),
        softirq: ctx.settings.stat.softirq,
    }))
}

/// The system-wide lines of `/proc/stat`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SysStat {
    pub intr: Option<f64>,
    pub ctxt: Option<f64>,
    pub btime: Option<f64>,
    pub processes: Option<f64>,
    pub procs_running: Option<f64>,
    pub procs_blocked: Option<f64>,
    /// Per-vector counts of the `softirq` line (after its total).
    pub softirqs: Vec<f64>,
}

pub fn parse(text: &str) -> Result<SysStat, LineError> {
    let mut s = SysStat::default();
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(key), value) = (parts.next(), parts.next()) else {
            continue;
        };
        if key == "softirq" {
            for v in parts {
                s.softirqs.push(parse_f64(v, i + 1, "softirq")?);
            }
            continue;
        }
        let slot = match key {
            "intr" => &mut s.intr,
            "ctxt" => &mut s.ctxt,
            "btime" => &mut s.btime,
            "processes" => &mut s.processes,
            "procs_running" => &mut s.procs_running,
            "procs_blocked" => &mut s.procs_blocked,
            _ => continue,
        };
        let value = value.ok_or_else(|| LineError::new(i + 1, format!("{key} has no value")))?;
        *slot = Some(parse_f64(value, i + 1, key)?);
    }
    Ok(s)
}

impl NodeCollector for Stat {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let s = parse(&text).map_err(|e| e.at(&self.path))?;
        if let Some(v) = s.btime {
            out.gauge("node_boot_time_seconds", "Node boot time, in unixtime.", v)?;
        }
        if let Some(v) = s.ctxt {
            out.counter(
                "node_context_switches_total",
                "Total number of context switches.",
                v,
            )?;
        }
        if let Some(v) = s.processes {
            out.counter("node_forks_total", "Total number of forks.", v)?;
        }
        if let Some(v) = s.intr {
            out.counter("node_intr_total", "Total number of interrupts serviced.", v)?;
        }
        if let Some(v) = s.procs_blocked {
            out.gauge(
                "node_procs_blocked",
                "Number of processes blocked waiting for I/O to complete.",
                v,
            )?;
        }
        if self.softirq && !s.softirqs.is_empty() {
            let mut f = out.family(
                "node_softirqs_total",
                "Number of softirq calls.",
                crate::emit::Kind::Counter,
            )?;
            for (vector, v) in SOFTIRQ_VECTORS.iter().zip(&s.softirqs) {
                f.sample(&[("vector", *vector)], *v)?;
            }
        }
        if let Some(v) = s.procs_running {
            out.gauge(
                "node_procs_running",
                "Number of processes in runnable state.",
                v,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_lines() {
        let s = parse("cpu 1 2\nintr 766973 0 9\nctxt 803938\nbtime 1795926392\nprocesses 26425\nprocs_running 5\nprocs_blocked 0\nsoftirq 1 2\n").unwrap();
        assert_eq!(s.intr, Some(766973.0));
        assert_eq!(s.ctxt, Some(803938.0));
        assert_eq!(s.btime, Some(1795926392.0));
        assert_eq!(s.processes, Some(26425.0));
        assert_eq!(s.procs_running, Some(5.0));
        assert_eq!(s.procs_blocked, Some(0.0));
        assert_eq!(s.softirqs, vec![2.0]);
        assert!(parse("softirq 3 1 x\n").is_err());
    }

    #[test]
    fn names_the_bad_line() {
        let e = parse("ctxt 1\nbtime soon\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("btime"));
        assert_eq!(parse("ctxt\n").unwrap_err().line, 1);
    }
}
