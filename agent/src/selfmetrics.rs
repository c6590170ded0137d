//! The agent's own metrics: `hostlens_build_info` and the standard `process_*` families of
//! the Prometheus client libraries, read from `/proc/self` (the agent's own process, whatever
//! `--path.procfs` says).
use std::fmt;

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use crate::emit::{Kind, Out};

#[derive(Debug, Default)]
pub struct SelfMetrics;

/// Fields of `/proc/self/stat` we use, in their raw units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub starttime_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may contain spaces and parentheses,
/// so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    // rest starts at field 3 (state); field n is index n - 3.
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let get = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        utime_ticks: get(14)?,
        stime_ticks: get(15)?,
        starttime_ticks: get(22)?,
        vsize_bytes: get(23)?,
        rss_pages: get(24)?,
    })
}

/// The soft limit of a `/proc/<pid>/limits` row ("Max open files  1024  4096  files"),
/// `None` for unlimited or absent.
pub fn parse_limit(text: &str, row: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(row))?;
    let soft = line[row.len()..].split_ascii_whitespace().next()?;
    soft.parse::<f64>().ok()
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
pub fn parse_btime(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as f64 } else { 4096.0 }
}

impl Collector for SelfMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut out = Out::new(&mut encoder);
        out.family(
            "hostlens_build_info",
            "A metric with a constant '1' value labeled by version, revision and rustc.",
            Kind::Gauge,
        )?
        .sample(
            &[
                ("revision", env!("HOSTLENS_REVISION")),
                ("rustc", env!("HOSTLENS_RUSTC")),
                ("version", env!("CARGO_PKG_VERSION")),
            ],
            1.0,
        )?;
        // Self metrics are best effort: an unreadable file leaves its families out.
        if let Some(st) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            let tck = clock_ticks();
            out.counter(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                (st.utime_ticks + st.stime_ticks) as f64 / tck,
            )?;
            out.gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                st.vsize_bytes as f64,
            )?;
            out.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                st.rss_pages as f64 * page_size(),
            )?;
            if let Some(btime) = std::fs::read_to_string("/proc/stat")
                .ok()
                .as_deref()
                .and_then(parse_btime)
            {
                out.gauge(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    btime + st.starttime_ticks as f64 / tck,
                )?;
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            out.gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                dir.count() as f64,
            )?;
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            if let Some(v) = parse_limit(&limits, "Max open files") {
                out.gauge(
                    "process_max_fds",
                    "Maximum number of open file descriptors.",
                    v,
                )?;
            }
            // Unlimited address space is reported as -1, as the Go client does.
            let max_as = parse_limit(&limits, "Max address space").unwrap_or(-1.0);
            out.gauge(
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
                max_as,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let line = "4454 (a (b) c) S 1 4454 4454 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 1234 5000000 250 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line).unwrap(),
            ProcStat {
                utime_ticks: 7,
                stime_ticks: 3,
                starttime_ticks: 1234,
                vsize_bytes: 5000000,
                rss_pages: 250
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn limits_and_btime() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \nMax address space         unlimited            unlimited            bytes     \n";
        assert_eq!(parse_limit(limits, "Max open files"), Some(1024.0));
        assert_eq!(parse_limit(limits, "Max address space"), None);
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\n"),
            Some(1700000000.0)
        );
    }

    #[test]
    fn own_process_values_match_the_kernel() {
        let st = parse_stat(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_size_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .parse()
            .unwrap();
        // /proc/self/stat's vsize is VmSize in bytes (read a moment apart, so within 64 MiB).
        assert!(st.vsize_bytes.abs_diff(vm_size_kb * 1024) < 64 << 20);
    }
}
