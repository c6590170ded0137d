//! `cpu`: reads `<procfs>/stat` (`cpuN` lines), `<sysfs>/devices/system/cpu/cpuN/{topology,
//! thermal_throttle}` and, with `--collector.cpu.info`, `<procfs>/cpuinfo`; produces
//! `node_cpu_seconds_total{cpu,mode}`, `node_cpu_guest_seconds_total{cpu,mode}` (unless
//! `--no-collector.cpu.guest`), `node_cpu_core_throttles_total{core,package}`,
//! `node_cpu_package_throttles_total{package}`, `node_cpu_info{..}`,
//! `node_cpu_flag_info{flag}` and `node_cpu_bug_info{bug}`. Times are in USER_HZ (100 per
//! second on every Linux ABI).
use std::{collections::BTreeMap, path::PathBuf};

use regex::Regex;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file,
    settings_regex,
};
use crate::emit::{Kind, Out};

/// Kernel ABI constant USER_HZ (`sysconf(_SC_CLK_TCK)`), which procfs uses for these times.
const USER_HZ: f64 = 100.0;

/// `/proc/stat` columns after `cpuN`, in kernel order.
const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

#[derive(Debug)]
pub struct Cpu {
    stat: PathBuf,
    cpuinfo: PathBuf,
    cpu_dir: PathBuf,
    guest: bool,
    info: bool,
    flags_include: Option<Regex>,
    bugs_include: Option<Regex>,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Cpu {
        stat: ctx.paths.proc("stat"),
        cpuinfo: ctx.paths.proc("cpuinfo"),
        cpu_dir: ctx.paths.sys("devices/system/cpu"),
        guest: ctx.settings.cpu.guest,
        info: ctx.settings.cpu.info,
        flags_include: settings_regex(
            "cpu.info_flags_include",
            &ctx.settings.cpu.info_flags_include,
        )?,
        bugs_include: settings_regex("cpu.info_bugs_include", &ctx.settings.cpu.info_bugs_include)?,
    }))
}

/// One `cpuN` line: the CPU number (as text) and its ten times in seconds (missing trailing
/// columns of old kernels are 0).
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTimes<'a> {
    pub cpu: &'a str,
    pub seconds: [f64; 10],
}

/// Parses the per-CPU lines of `/proc/stat` (the aggregate `cpu` line is skipped).
pub fn parse(text: &str) -> Result<Vec<CpuTimes<'_>>, LineError> {
    let mut cpus = Vec::with_capacity(8);
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut parts = rest.split_ascii_whitespace();
        let Some(id) = parts.next() else { continue };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue; // the "cpu " total line
        }
        if !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LineError::new(i + 1, format!("bad cpu name cpu{id:?}")));
        }
        let mut seconds = [0.0; 10];
        let mut n = 0;
        for (slot, v) in seconds.iter_mut().zip(parts.by_ref()) {
            *slot = parse_f64(v, i + 1, "cpu time")? / USER_HZ;
            n += 1;
        }
        if n < 4 {
            return Err(LineError::new(i + 1, format!("cpu{id}: only {n} columns")));
        }
        cpus.push(CpuTimes { cpu: id, seconds });
    }
    Ok(cpus)
}

/// One processor block of `/proc/cpuinfo`, as `node_cpu_info` labels.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CpuInfo<'a> {
    pub processor: &'a str,
    pub vendor: &'a str,
    pub family: &'a str,
    pub model: &'a str,
    pub model_name: &'a str,
    pub microcode: &'a str,
    pub stepping: &'a str,
    pub cachesize: &'a str,
    pub package: &'a str,
    pub core: &'a str,
    pub flags: &'a str,
    pub bugs: &'a str,
}

/// Parses `/proc/cpuinfo` (x86 layout) into one entry per `processor` block.
pub fn parse_cpuinfo(text: &str) -> Result<Vec<CpuInfo<'_>>, LineError> {
    let mut out: Vec<CpuInfo<'_>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(LineError::new(i + 1, format!("no ':' in {line:?}")));
        };
        let (k, v) = (k.trim(), v.trim());
        if k == "processor" {
            out.push(CpuInfo {
                processor: v,
                ..Default::default()
            });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        match k {
            "vendor_id" => cur.vendor = v,
            "cpu family" => cur.family = v,
            "model" => cur.model = v,
            "model name" => cur.model_name = v,
            "microcode" => cur.microcode = v,
            "stepping" => cur.stepping = v,
            "cache size" => cur.cachesize = v,
            "physical id" => cur.package = v,
            "core id" => cur.core = v,
            "flags" => cur.flags = v,
            "bugs" => cur.bugs = v,
            _ => {}
        }
    }
    Ok(out)
}

/// Reads a sysfs file holding one unsigned number; `None` when absent or not a number.
fn read_u64(p: &std::path::Path) -> Option<u64> {
    super::read_text(p).ok()?.trim().parse().ok()
}

impl Cpu {
    /// Thermal throttle counts per package and per (package, core), read once per core and
    /// package as node_exporter does (x86 `thermal_throttle` sysfs group).
    fn throttles(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let Ok(entries) = std::fs::read_dir(&self.cpu_dir) else {
            return Ok(());
        };
        let mut packages: BTreeMap<u64, Option<u64>> = BTreeMap::new();
        let mut cores: BTreeMap<(u64, u64), Option<u64>> = BTreeMap::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(n) = name.to_str().and_then(|n| n.strip_prefix("cpu")) else {
                continue;
            };
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let dir = e.path();
            let (Some(pkg), Some(core)) = (
                read_u64(&dir.join("topology/physical_package_id")),
                read_u64(&dir.join("topology/core_id")),
            ) else {
                continue;
            };
            cores
                .entry((pkg, core))
                .or_insert_with(|| read_u64(&dir.join("thermal_throttle/core_throttle_count")));
            packages
                .entry(pkg)
                .or_insert_with(|| read_u64(&dir.join("thermal_throttle/package_throttle_count")));
        }
        if cores.values().any(Option::is_some) {
            let mut f = out.family(
                "node_cpu_core_throttles_total",
                "Number of times this CPU core has been throttled.",
                Kind::Counter,
            )?;
            for ((pkg, core), n) in &cores {
                if let Some(n) = n {
                    let (c, p) = (core.to_string(), pkg.to_string());
                    f.sample(&[("core", c.as_str()), ("package", p.as_str())], *n as f64)?;
                }
            }
        }
        if packages.values().any(Option::is_some) {
            let mut f = out.family(
                "node_cpu_package_throttles_total",
                "Number of times this CPU package has been throttled.",
                Kind::Counter,
            )?;
            for (pkg, n) in &packages {
                if let Some(n) = n {
                    f.sample(&[("package", pkg.to_string().as_str())], *n as f64)?;
                }
            }
        }
        Ok(())
    }
}

impl NodeCollector for Cpu {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        self.throttles(out)?;
        if self.info {
            let text = read_file(&self.cpuinfo)?;
            let infos = parse_cpuinfo(&text).map_err(|e| e.at(&self.cpuinfo))?;
            let mut f = out.family(
                "node_cpu_info",
                "CPU information from /proc/cpuinfo.",
                Kind::Gauge,
            )?;
            for c in &infos {
                f.sample(
                    &[
                        ("cachesize", c.cachesize),
                        ("core", c.core),
                        ("cpu", c.processor),
                        ("family", c.family),
                        ("microcode", c.microcode),
                        ("model", c.model),
                        ("model_name", c.model_name),
                        ("package", c.package),
                        ("stepping", c.stepping),
                        ("vendor", c.vendor),
                    ],
                    1.0,
                )?;
            }
            drop(f);
            if let Some(first) = infos.first() {
                for (re, list, name, help, label) in [
                    (
                        &self.flags_include,
                        first.flags,
                        "node_cpu_flag_info",
                        "The `flags` field of CPU information from /proc/cpuinfo taken from the first core.",
                        "flag",
                    ),
                    (
                        &self.bugs_include,
                        first.bugs,
                        "node_cpu_bug_info",
                        "The `bugs` field of CPU information from /proc/cpuinfo taken from the first core.",
                        "bug",
                    ),
                ] {
                    let Some(re) = re else { continue };
                    let mut f = out.family(name, help, Kind::Gauge)?;
                    for item in list.split_ascii_whitespace().filter(|i| re.is_match(i)) {
                        f.sample(&[(label, item)], 1.0)?;
                    }
                }
            }
        }
        let text = read_file(&self.stat)?;
        let cpus = parse(&text).map_err(|e| e.at(&self.stat))?;
        let mut f = out.family(
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
            Kind::Counter,
        )?;
        for c in &cpus {
            for (mode, v) in MODES.iter().zip(c.seconds) {
                f.sample(&[("cpu", c.cpu), ("mode", mode)], v)?;
            }
        }
        drop(f);
        if self.guest {
            let mut f = out.family(
                "node_cpu_guest_seconds_total",
                "Seconds the CPUs spent in guests (VMs) for each mode.",
                Kind::Counter,
            )?;
            for c in &cpus {
                f.sample(&[("cpu", c.cpu), ("mode", "user")], c.seconds[8])?;
                f.sample(&[("cpu", c.cpu), ("mode", "nice")], c.seconds[9])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_lines_in_seconds() {
        let t = "cpu  10 0 0 0 0 0 0 0 0 0\ncpu0 45097 1 12305 66332 326 0 22 450 7 3\ncpu1 1 2 3 4\nintr 5\n";
        let c = parse(t).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].cpu, "0");
        assert_eq!(c[0].seconds[0], 450.97);
        assert_eq!(c[0].seconds[7], 4.5);
        assert_eq!(c[0].seconds[9], 0.03);
        assert_eq!(c[1].seconds[3], 0.04);
        assert_eq!(c[1].seconds[8], 0.0);
    }

    #[test]
    fn names_the_bad_line() {
        let e = parse("cpu 1 2 3 4\ncpu0 1 2 x 4\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(parse("cpu0 1 2\n").unwrap_err().line, 1);
    }

    #[test]
    fn cpuinfo_blocks() {
        let t = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 1\ncore id\t: 1\n";
        let c = parse_cpuinfo(t).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].vendor, "GenuineIntel");
        assert_eq!(c[1].core, "1");
        assert_eq!(parse_cpuinfo("processor 0\n").unwrap_err().line, 1);
    }
}
