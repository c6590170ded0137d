//! Node collectors: procfs/sysfs readers that produce node_exporter's families at scrape time.
//!
//! One collector, one file; [`COLLECTORS`] is the single registration table. It derives the
//! `--collector.<name>` / `--no-collector.<name>` flags and the `collectors:` YAML keys, and
//! its defaults are node_exporter 1.5's.
use std::{
    fmt, fs, io,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use crate::{
    emit::{Kind, Out},
    paths::Paths,
};

pub mod arp;
pub mod bcache;
pub mod bonding;
pub mod btrfs;
pub mod conntrack;
pub mod cpu;
pub mod cpufreq;
pub mod diskstats;
pub mod dmi;
pub mod edac;
pub mod entropy;
pub mod fibrechannel;
pub mod filefd;
pub mod filesystem;
pub mod hwmon;
pub mod infiniband;
pub mod interrupts;
pub mod ipvs;
pub mod loadavg;
pub mod mdadm;
pub mod meminfo;
pub mod netclass;
pub mod netdev;
pub mod netstat;
pub mod nfs;
pub mod nfsd;
pub mod nvme;
pub mod os;
pub mod powersupplyclass;
pub mod pressure;
pub mod process_groups;
pub mod processes;
pub mod rapl;
pub mod schedstat;
pub mod selinux;
pub mod sockstat;
pub mod softnet;
pub mod stat;
pub mod sysfs;
pub mod tapestats;
pub mod tcpstat;
pub mod textfile;
pub mod thermal_zone;
pub mod time;
pub mod timex;
pub mod udp_queues;
pub mod uname;
pub mod vmstat;
pub mod xfs;
pub mod zfs;

/// A collector reads its sources and writes its families, once per scrape.
pub trait NodeCollector: fmt::Debug + Send + Sync {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError>;
}

/// What a collector is built from.
#[derive(Debug, Clone)]
pub struct CollectorContext {
    pub paths: Paths,
    /// `collector_settings:` / `--collector.<name>.<setting>` values.
    pub settings: crate::config::CollectorSettings,
    /// `process_groups:` matchers of the `process_groups` collector.
    pub process_groups: process_groups::ProcessGroupsConfig,
}

impl CollectorContext {
    /// A context reading through `paths` with default settings (tests, fixtures).
    pub fn with_paths(paths: Paths) -> Self {
        Self {
            paths,
            settings: Default::default(),
            process_groups: Default::default(),
        }
    }
}

type Constructor = fn(&CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError>;

/// One row of the registration table.
pub struct CollectorEntry {
    /// snake_case name: flag `--collector.<name>`, YAML key `collectors.<name>`, label value of
    /// `node_scrape_collector_success{collector}`.
    pub name: &'static str,
    /// Enabled when neither flag nor config says otherwise (node_exporter 1.5's default).
    pub default_enabled: bool,
    pub new: Constructor,
}

/// The registration table. Adding a collector adds one line here.
pub static COLLECTORS: &[CollectorEntry] = &[
    CollectorEntry {
        name: "arp",
        default_enabled: true,
        new: arp::new,
    },
    CollectorEntry {
        name: "conntrack",
        default_enabled: true,
        new: conntrack::new,
    },
    CollectorEntry {
        name: "cpu",
        default_enabled: true,
        new: cpu::new,
    },
    CollectorEntry {
        name: "diskstats",
        default_enabled: true,
        new: diskstats::new,
    },
    CollectorEntry {
        name: "entropy",
        default_enabled: true,
        new: entropy::new,
    },
    CollectorEntry {
        name: "filefd",
        default_enabled: true,
        new: filefd::new,
    },
    CollectorEntry {
        name: "filesystem",
        default_enabled: true,
        new: filesystem::new,
    },
    CollectorEntry {
        name: "interrupts",
        default_enabled: false,
        new: interrupts::new,
    },
    CollectorEntry {
        name: "loadavg",
        default_enabled: true,
        new: loadavg::new,
    },
    CollectorEntry {
        name: "meminfo",
        default_enabled: true,
        new: meminfo::new,
    },
    CollectorEntry {
        name: "netdev",
        default_enabled: true,
        new: netdev::new,
    },
    CollectorEntry {
        name: "netstat",
        default_enabled: true,
        new: netstat::new,
    },
    CollectorEntry {
        name: "os",
        default_enabled: true,
        new: os::new,
    },
    CollectorEntry {
        name: "pressure",
        default_enabled: true,
        new: pressure::new,
    },
    CollectorEntry {
        name: "processes",
        default_enabled: false,
        new: processes::new,
    },
    CollectorEntry {
        name: "schedstat",
        default_enabled: true,
        new: schedstat::new,
    },
    CollectorEntry {
        name: "sockstat",
        default_enabled: true,
        new: sockstat::new,
    },
    CollectorEntry {
        name: "softnet",
        default_enabled: true,
        new: softnet::new,
    },
    CollectorEntry {
        name: "stat",
        default_enabled: true,
        new: stat::new,
    },
    CollectorEntry {
        name: "tcpstat",
        default_enabled: false,
        new: tcpstat::new,
    },
    CollectorEntry {
        name: "time",
        default_enabled: true,
        new: time::new,
    },
    CollectorEntry {
        name: "timex",
        default_enabled: true,
        new: timex::new,
    },
    CollectorEntry {
        name: "udp_queues",
        default_enabled: true,
        new: udp_queues::new,
    },
    CollectorEntry {
        name: "uname",
        default_enabled: true,
        new: uname::new,
    },
    CollectorEntry {
        name: "vmstat",
        default_enabled: true,
        new: vmstat::new,
    },
    CollectorEntry {
        name: "hwmon",
        default_enabled: true,
        new: hwmon::new,
    },
    CollectorEntry {
        name: "thermal_zone",
        default_enabled: true,
        new: thermal_zone::new,
    },
    CollectorEntry {
        name: "cpufreq",
        default_enabled: true,
        new: cpufreq::new,
    },
    CollectorEntry {
        name: "powersupplyclass",
        default_enabled: true,
        new: powersupplyclass::new,
    },
    CollectorEntry {
        name: "netclass",
        default_enabled: true,
        new: netclass::new,
    },
    CollectorEntry {
        name: "nvme",
        default_enabled: true,
        new: nvme::new,
    },
    CollectorEntry {
        name: "mdadm",
        default_enabled: true,
        new: mdadm::new,
    },
    CollectorEntry {
        name: "bonding",
        default_enabled: true,
        new: bonding::new,
    },
    CollectorEntry {
        name: "rapl",
        default_enabled: true,
        new: rapl::new,
    },
    CollectorEntry {
        name: "edac",
        default_enabled: true,
        new: edac::new,
    },
    CollectorEntry {
        name: "dmi",
        default_enabled: true,
        new: dmi::new,
    },
    CollectorEntry {
        name: "infiniband",
        default_enabled: true,
        new: infiniband::new,
    },
    CollectorEntry {
        name: "fibrechannel",
        default_enabled: true,
        new: fibrechannel::new,
    },
    CollectorEntry {
        name: "tapestats",
        default_enabled: true,
        new: tapestats::new,
    },
    CollectorEntry {
        name: "nfs",
        default_enabled: true,
        new: nfs::new,
    },
    CollectorEntry {
        name: "nfsd",
        default_enabled: true,
        new: nfsd::new,
    },
    CollectorEntry {
        name: "zfs",
        default_enabled: true,
        new: zfs::new,
    },
    CollectorEntry {
        name: "xfs",
        default_enabled: true,
        new: xfs::new,
    },
    CollectorEntry {
        name: "ipvs",
        default_enabled: true,
        new: ipvs::new,
    },
    CollectorEntry {
        name: "selinux",
        default_enabled: true,
        new: selinux::new,
    },
    CollectorEntry {
        name: "btrfs",
        default_enabled: true,
        new: btrfs::new,
    },
    CollectorEntry {
        name: "bcache",
        default_enabled: true,
        new: bcache::new,
    },
    // Not in node_exporter: process-exporter's namedprocess_namegroup_* families.
    CollectorEntry {
        name: "process_groups",
        default_enabled: false,
        new: process_groups::new,
    },
    // Last, so that a collector's own family wins over a `*.prom` file redefining it
    // (exposition::merge_duplicate_families keeps the first).
    CollectorEntry {
        name: "textfile",
        default_enabled: true,
        new: textfile::new,
    },
];

pub fn entry(name: &str) -> Option<&'static CollectorEntry> {
    COLLECTORS.iter().find(|e| e.name == name)
}

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The source does not exist here (no such file): "no data", not a failure.
    #[error("no data: {0} does not exist")]
    NoData(PathBuf),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("invalid setting {0}")]
    Setting(String),
    #[error("{0}")]
    Other(String),
    #[error("encoding metrics: {0}")]
    Encode(#[from] fmt::Error),
}

impl CollectorError {
    pub fn parse(path: &Path, line: usize, msg: impl Into<String>) -> Self {
        CollectorError::Parse {
            path: path.to_path_buf(),
            line,
            msg: msg.into(),
        }
    }
}

/// Bytes reserved before reading a file: most procfs and sysfs files fit, so they come in one
/// read plus the one that finds the end.
const READ_CAPACITY: usize = 8 * 1024;

/// Reads a whole file as text. Unlike `fs::read_to_string` it asks no size (procfs reports 0,
/// so the answer is of no use) and reads [`READ_CAPACITY`] bytes at a time, not 32 doubling at
/// every read: a 4 KiB procfs file takes 2 reads instead of 9, and no `statx`.
pub fn read_text(path: impl AsRef<Path>) -> io::Result<String> {
    use std::io::Read as _;
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; READ_CAPACITY];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// Reads a whole (small) procfs/sysfs file; a missing file is [`CollectorError::NoData`].
pub fn read_file(path: &Path) -> Result<String, CollectorError> {
    read_text(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CollectorError::NoData(path.to_path_buf()),
        _ => CollectorError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// A parse error of one line in a file, before the path is known to the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    pub msg: String,
}

impl LineError {
    pub fn new(line: usize, msg: impl Into<String>) -> Self {
        Self {
            line,
            msg: msg.into(),
        }
    }

    pub fn at(self, path: &Path) -> CollectorError {
        CollectorError::parse(path, self.line, self.msg)
    }
}

/// Parses a float the way procfs writes them, naming the field when it is not one.
pub fn parse_f64(s: &str, line: usize, what: &str) -> Result<f64, LineError> {
    s.parse::<f64>()
        .map_err(|_| LineError::new(line, format!("{what}: {s:?} is not a number")))
}

/// Parses a hexadecimal field (`/proc/net/softnet_stat`, `/proc/net/udp` queues).
pub fn parse_hex(s: &str, line: usize, what: &str) -> Result<u64, LineError> {
    u64::from_str_radix(s, 16)
        .map_err(|_| LineError::new(line, format!("{what}: {s:?} is not a hexadecimal number")))
}

/// Compiles a regexp setting (already validated with the configuration).
pub fn settings_regex(key: &str, re: &str) -> Result<Option<regex::Regex>, CollectorError> {
    if re.is_empty() {
        return Ok(None);
    }
    regex::Regex::new(re)
        .map(Some)
        .map_err(|e| CollectorError::Setting(format!("{key}: {re:?}: {e}")))
}

/// Reads a small file holding one number (sysctl-like files).
pub fn read_number(path: &Path) -> Result<f64, CollectorError> {
    let text = read_file(path)?;
    let t = text.trim();
    parse_f64(t, 1, "value").map_err(|e| e.at(path))
}

/// A collector call still running after this long is taken as stuck in the kernel (a hung
/// mount, a device that does not answer): later scrapes skip the collector, reporting it
/// failed, until that call returns.
pub const STUCK_AFTER: Duration = Duration::from_secs(10);

/// The calls of one collector in progress (start times; several scrapes may run at once).
#[derive(Debug, Default)]
struct Inflight {
    started: Mutex<Vec<Instant>>,
    /// The current stuck episode was logged.
    logged: AtomicBool,
}

impl Inflight {
    /// How long the oldest call has been running, when longer than [`STUCK_AFTER`].
    fn stuck(&self) -> Option<Duration> {
        let started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = started.iter().min()?.elapsed();
        (oldest > STUCK_AFTER).then_some(oldest)
    }

    fn enter(&self) -> Instant {
        let now = Instant::now();
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now);
        now
    }

    fn leave(&self, t: Instant) {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = started.iter().position(|s| *s == t) {
            started.swap_remove(i);
        }
        if started.is_empty() {
            self.logged.store(false, Ordering::Relaxed);
        }
    }
}

/// The enabled collectors, run in table order at every scrape. Registered in the registry as
/// one prometheus-client [`Collector`] so that the per-collector scrape metrics come from the
/// same pass. A collector stuck in a call (see [`STUCK_AFTER`]) is skipped by later scrapes,
/// so one hung source costs one scrape, not all the following ones.
#[derive(Debug)]
pub struct NodeCollectors {
    active: Vec<(&'static str, Box<dyn NodeCollector>)>,
    inflight: Vec<Inflight>,
}

impl NodeCollectors {
    pub fn new(active: Vec<(&'static str, Box<dyn NodeCollector>)>) -> Self {
        let inflight = active.iter().map(|_| Inflight::default()).collect();
        Self { active, inflight }
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.active.iter().map(|(n, _)| *n)
    }
}

impl Collector for NodeCollectors {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut results = Vec::with_capacity(self.active.len());
        for ((name, collector), inflight) in self.active.iter().zip(&self.inflight) {
            if let Some(running) = inflight.stuck() {
                if !inflight.logged.swap(true, Ordering::Relaxed) {
                    tracing::error!(collector = name, running = ?running, "collector stuck in a call; skipped (reported failed) until it returns");
                }
                results.push((*name, 0.0, false));
                continue;
            }
            let start = inflight.enter();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                crate::faults::panic_at("collector", name);
                collector.update(&mut Out::new(&mut encoder))
            }));
            inflight.leave(start);
            let ok = match outcome {
                Ok(Ok(())) => true,
                Ok(Err(CollectorError::NoData(path))) => {
                    tracing::debug!(collector = name, path = %path.display(), "no data");
                    true
                }
                Ok(Err(CollectorError::Encode(e))) => return Err(e),
                Ok(Err(e)) => {
                    tracing::warn!(collector = name, error = %e, "collector failed");
                    false
                }
                Err(_) => {
                    tracing::error!(collector = name, "collector panicked; reported as failed");
                    false
                }
            };
            results.push((*name, start.elapsed().as_secs_f64(), ok));
        }
        let mut out = Out::new(&mut encoder);
        let mut duration = out.family(
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
            Kind::Gauge,
        )?;
        for (name, secs, _) in &results {
            duration.sample(&[("collector", *name)], *secs)?;
        }
        drop(duration);
        let mut success = out.family(
            "node_scrape_collector_success",
            "node_exporter: Whether a collector succeeded.",
            Kind::Gauge,
        )?;
        for (name, _, ok) in &results {
            success.sample(&[("collector", *name)], if *ok { 1.0 } else { 0.0 })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for e in COLLECTORS {
            assert!(seen.insert(e.name), "duplicate collector {}", e.name);
            assert!(
                !e.name.is_empty()
                    && e.name.starts_with(|c: char| c.is_ascii_lowercase())
                    && e.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "collector name {:?} is not snake_case",
                e.name
            );
        }
    }

    #[test]
    fn read_text_reads_whole_files() {
        let dir = std::env::temp_dir().join(format!("hostlens-readtext-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // More than two rounds of the initial capacity, not a multiple of it.
        let long: String = (0..20_000u32)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        fs::write(dir.join("long"), &long).unwrap();
        assert_eq!(read_text(dir.join("long")).unwrap(), long);
        let exact = "x".repeat(READ_CAPACITY);
        fs::write(dir.join("exact"), &exact).unwrap();
        assert_eq!(read_text(dir.join("exact")).unwrap(), exact);
        fs::write(dir.join("empty"), "").unwrap();
        assert_eq!(read_text(dir.join("empty")).unwrap(), "");
        fs::write(dir.join("binary"), [0xff, 0xfe, b'\n']).unwrap();
        let e = read_text(dir.join("binary")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        fs::remove_dir_all(&dir).unwrap();
        // A procfs file (size 0 to stat) comes whole.
        assert_eq!(
            read_text("/proc/version").unwrap(),
            fs::read_to_string("/proc/version").unwrap()
        );
    }

    #[test]
    fn missing_file_is_no_data() {
        let err = read_file(Path::new("/nonexistent/hostlens/file")).unwrap_err();
        assert!(matches!(err, CollectorError::NoData(_)), "{err}");
    }
}
