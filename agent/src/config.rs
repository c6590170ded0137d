//! The YAML configuration (`--config.file`), its defaults, and validation.
//!
//! Every key is documented in `config/hostlens.yaml`. Unknown keys are rejected with the key's
//! path, the file and the line. Flags override the file (see `cli.rs`).
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Deserializer, de};

use crate::{collectors::COLLECTORS, paths::Paths, probes::PROBES};

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub web: WebConfig,
    pub log: LogConfig,
    pub paths: PathsConfig,
    pub collectors: Toggles<CollectorKind>,
    pub probes: Toggles<ProbeKind>,
    /// Per-collector settings (node_exporter's `--collector.<name>.<setting>` flags).
    pub collector_settings: CollectorSettings,
    /// Settings of the `http` probe.
    pub http: crate::probes::http::HttpConfig,
    pub process_names: ProcessNamesConfig,
    pub syscalls: SyscallsConfig,
    pub tcp: TcpConfig,
    pub process_groups: crate::collectors::process_groups::ProcessGroupsConfig,
    /// Prometheus' `remote_write:` section (see `remote_write/config.rs`).
    pub remote_write: Vec<crate::remote_write::config::RemoteWriteConfig>,
    pub remote_write_options: crate::remote_write::config::RemoteWriteOptions,
}

/// `tcp:` sizes of the `tcp` probe's kernel maps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Sockets whose owner is tracked at once; more are counted as lost.
    pub max_sockets: u32,
    /// Listening ports whose owner is tracked.
    pub max_listeners: u32,
    /// Distinct process groups counted in the kernel.
    pub max_series: u32,
}

impl Default for TcpConfig {
    fn default() -> Self {
        use agent_common::tcp::*;
        Self {
            max_sockets: DEFAULT_MAX_SOCKETS,
            max_listeners: DEFAULT_MAX_LISTENERS,
            max_series: DEFAULT_MAX_SERIES,
        }
    }
}

/// `process_names:` how the eBPF probes bound their `process_name` label (see procnames.rs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessNamesConfig {
    /// Process groups per probe that keep their own name; the rest are `other`.
    pub top_k: usize,
    /// Seconds a process group must be idle before its series and kernel map entries go.
    pub grace_period_seconds: u64,
}

impl Default for ProcessNamesConfig {
    fn default() -> Self {
        let d = crate::procnames::NameLimits::default();
        Self {
            top_k: d.top_k,
            grace_period_seconds: d.grace.as_secs(),
        }
    }
}

impl ProcessNamesConfig {
    pub fn limits(&self) -> crate::procnames::NameLimits {
        crate::procnames::NameLimits {
            top_k: self.top_k,
            grace: std::time::Duration::from_secs(self.grace_period_seconds),
        }
    }
}

/// `syscalls:` sizes of the `syscalls` probe's kernel maps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyscallsConfig {
    /// Distinct (comm, syscall) pairs counted in the kernel; more are counted as lost.
    pub max_series: u32,
    /// No longer used (per-thread state lives in task-local storage, freed with the thread);
    /// accepted so that older configuration files still load, with a warning.
    pub max_threads: Option<u32>,
}

impl Default for SyscallsConfig {
    fn default() -> Self {
        Self {
            max_series: agent_common::syscalls::DEFAULT_MAX_STATS,
            max_threads: None,
        }
    }
}

/// `collector_settings:`: one sub-section per collector that takes settings. Defaults are
/// node_exporter 1.5.0's upstream defaults (not Debian's).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorSettings {
    pub arp: ArpSettings,
    pub cpu: CpuSettings,
    pub diskstats: DiskstatsSettings,
    pub filesystem: FilesystemSettings,
    pub netdev: NetdevSettings,
    pub netstat: NetstatSettings,
    pub stat: StatSettings,
    pub vmstat: VmstatSettings,
    pub textfile: TextfileSettings,
    pub netclass: NetclassSettings,
    pub powersupplyclass: PowerSupplySettings,
    pub bcache: BcacheSettings,
    pub ipvs: IpvsSettings,
    pub rapl: RaplSettings,
    pub tapestats: TapestatsSettings,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArpSettings {
    /// Regexp of devices to keep (empty: all). Flag: `--collector.arp.device-include`.
    pub device_include: String,
    /// Regexp of devices to leave out (empty: none). Flag: `--collector.arp.device-exclude`.
    pub device_exclude: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatSettings {
    /// `node_softirqs_total{vector}`. Flag: `--collector.stat.softirq`.
    pub softirq: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpuSettings {
    /// `node_cpu_guest_seconds_total`. Flag: `--collector.cpu.guest`.
    pub guest: bool,
    /// `node_cpu_info` from `/proc/cpuinfo`. Flag: `--collector.cpu.info`.
    pub info: bool,
    /// With `info`: regexp of the first CPU's `flags` exported as `node_cpu_flag_info{flag}`
    /// (empty: none). Flag: `--collector.cpu.info.flags-include`.
    pub info_flags_include: String,
    /// With `info`: regexp of the first CPU's `bugs` exported as `node_cpu_bug_info{bug}`
    /// (empty: none). Flag: `--collector.cpu.info.bugs-include`.
    pub info_bugs_include: String,
}

impl Default for CpuSettings {
    fn default() -> Self {
        Self {
            guest: true,
            info: false,
            info_flags_include: String::new(),
            info_bugs_include: String::new(),
        }
    }
}

/// node_exporter 1.5.0's `--collector.diskstats.device-exclude` default.
pub const DISKSTATS_DEVICE_EXCLUDE: &str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskstatsSettings {
    /// Regexp of devices to leave out. Flag: `--collector.diskstats.device-exclude`.
    pub device_exclude: String,
    /// Regexp of devices to keep (when set, `device_exclude` is ignored).
    /// Flag: `--collector.diskstats.device-include`.
    pub device_include: String,
}

impl Default for DiskstatsSettings {
    fn default() -> Self {
        Self {
            device_exclude: DISKSTATS_DEVICE_EXCLUDE.into(),
            device_include: String::new(),
        }
    }
}

/// node_exporter 1.5.0's `--collector.filesystem.mount-points-exclude` default.
pub const FILESYSTEM_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter 1.5.0's `--collector.filesystem.fs-types-exclude` default.
pub const FILESYSTEM_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemSettings {
    /// Flag: `--collector.filesystem.mount-points-exclude`.
    pub mount_points_exclude: String,
    /// Flag: `--collector.filesystem.fs-types-exclude`.
    pub fs_types_exclude: String,
    /// How long one statfs may take before the mount counts as stuck
    /// (`node_filesystem_device_error 1`, not retried until that statfs returns).
    /// Flag: `--collector.filesystem.mount-timeout`.
    pub mount_timeout_seconds: f64,
}

impl Default for FilesystemSettings {
    fn default() -> Self {
        Self {
            mount_points_exclude: FILESYSTEM_MOUNT_POINTS_EXCLUDE.into(),
            fs_types_exclude: FILESYSTEM_FS_TYPES_EXCLUDE.into(),
            mount_timeout_seconds: 5.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetdevSettings {
    /// Regexp of devices to keep (empty: all). Flag: `--collector.netdev.device-include`.
    pub device_include: String,
    /// Regexp of devices to leave out (empty: none). Flag: `--collector.netdev.device-exclude`.
    pub device_exclude: String,
    /// `node_network_address_info{device,address,netmask,scope}`.
    /// Flag: `--collector.netdev.address-info`.
    pub address_info: bool,
    /// The kernel's individual counters (`receive_crc_errors`, `collisions`, …) instead of
    /// `/proc/net/dev`'s folded ones. Flag: `--collector.netdev.enable-detailed-metrics`.
    pub enable_detailed_metrics: bool,
    /// node_exporter's netlink mode (its default): the families of its netlink reader, i.e.
    /// also `node_network_receive_nohandler_total`. false: exactly its `/proc/net/dev` mode.
    /// hostlens reads procfs/sysfs either way. Flag: `--collector.netdev.netlink`.
    pub netlink: bool,
}

impl Default for NetdevSettings {
    fn default() -> Self {
        Self {
            device_include: String::new(),
            device_exclude: String::new(),
            address_info: false,
            enable_detailed_metrics: false,
            netlink: true,
        }
    }
}

/// node_exporter 1.5.0's `--collector.netstat.fields` default.
pub const NETSTAT_FIELDS: &str = "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetstatSettings {
    /// Regexp of `<Proto>_<Field>` names to export. Flag: `--collector.netstat.fields`.
    pub fields: String,
}

impl Default for NetstatSettings {
    fn default() -> Self {
        Self {
            fields: NETSTAT_FIELDS.into(),
        }
    }
}

/// node_exporter 1.5.0's `--collector.vmstat.fields` default.
pub const VMSTAT_FIELDS: &str = "^(oom_kill|pgpg|pswp|pg.*fault).*";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmstatSettings {
    /// Regexp of `/proc/vmstat` fields to export. Flag: `--collector.vmstat.fields`.
    pub fields: String,
}

impl Default for VmstatSettings {
    fn default() -> Self {
        Self {
            fields: VMSTAT_FIELDS.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BcacheSettings {
    /// Also read each cache's `priority_stats` (expensive). Flag: --collector.bcache.priorityStats
    pub priority_stats: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpvsSettings {
    /// Comma-separated labels of the backend series (a subset of the default; series that
    /// become equal are summed). Flag: --collector.ipvs.backend-labels
    pub backend_labels: String,
}

/// The labels `node_ipvs_backend_*` can carry, in node_exporter's default order.
pub const IPVS_BACKEND_LABELS: &str =
    "local_address,local_port,remote_address,remote_port,proto,local_mark";

impl Default for IpvsSettings {
    fn default() -> Self {
        Self {
            backend_labels: IPVS_BACKEND_LABELS.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaplSettings {
    /// One `node_rapl_joules_total{rapl_zone}` family instead of one family per zone.
    /// Flag: --collector.rapl.enable-zone-label
    pub enable_zone_label: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TapestatsSettings {
    /// Regexp of tape devices to ignore. Flag: --collector.tapestats.ignored-devices
    pub ignored_devices: String,
}

impl Default for TapestatsSettings {
    fn default() -> Self {
        Self {
            ignored_devices: "^$".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextfileSettings {
    /// Directory (or glob of directories) read for `*.prom` files; empty = none.
    /// Flag: --collector.textfile.directory
    pub directory: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetclassSettings {
    /// Regexp of devices to ignore. Flag: --collector.netclass.ignored-devices
    pub ignored_devices: String,
    /// Ignore devices whose speed is invalid. Flag: --collector.netclass.ignore-invalid-speed
    pub ignore_invalid_speed: bool,
}

impl Default for NetclassSettings {
    fn default() -> Self {
        Self {
            ignored_devices: "^$".into(),
            ignore_invalid_speed: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowerSupplySettings {
    /// Regexp of power supplies to ignore. Flag: --collector.powersupply.ignored-supplies
    pub ignored_supplies: String,
}

impl Default for PowerSupplySettings {
    fn default() -> Self {
        Self {
            ignored_supplies: "^$".into(),
        }
    }
}

impl CollectorSettings {
    /// Every regexp setting as (dotted key, value), for validation.
    pub fn regexes(&self) -> Vec<(&'static str, &str)> {
        vec![
            (
                "collector_settings.arp.device_include",
                &self.arp.device_include,
            ),
            (
                "collector_settings.arp.device_exclude",
                &self.arp.device_exclude,
            ),
            (
                "collector_settings.cpu.info_flags_include",
                &self.cpu.info_flags_include,
            ),
            (
                "collector_settings.cpu.info_bugs_include",
                &self.cpu.info_bugs_include,
            ),
            (
                "collector_settings.diskstats.device_exclude",
                &self.diskstats.device_exclude,
            ),
            (
                "collector_settings.diskstats.device_include",
                &self.diskstats.device_include,
            ),
            (
                "collector_settings.filesystem.mount_points_exclude",
                &self.filesystem.mount_points_exclude,
            ),
            (
                "collector_settings.filesystem.fs_types_exclude",
                &self.filesystem.fs_types_exclude,
            ),
            (
                "collector_settings.netdev.device_include",
                &self.netdev.device_include,
            ),
            (
                "collector_settings.netdev.device_exclude",
                &self.netdev.device_exclude,
            ),
            ("collector_settings.netstat.fields", &self.netstat.fields),
            ("collector_settings.vmstat.fields", &self.vmstat.fields),
            (
                "collector_settings.netclass.ignored_devices",
                &self.netclass.ignored_devices,
            ),
            (
                "collector_settings.powersupplyclass.ignored_supplies",
                &self.powersupplyclass.ignored_supplies,
            ),
            (
                "collector_settings.tapestats.ignored_devices",
                &self.tapestats.ignored_devices,
            ),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// `host:port`, `:port` (all interfaces) or `[v6]:port`.
    pub listen_address: String,
    pub telemetry_path: String,
    /// Concurrent `/metrics` scrapes served at once; further ones are answered 503 (node_exporter's
    /// `--web.max-requests`, default 40). 0 means no limit.
    pub max_requests: usize,
    /// node_exporter's `--web.config.file`: TLS and basic auth (see `webconfig.rs`).
    pub config_file: Option<PathBuf>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen_address: ":9100".into(),
            telemetry_path: "/metrics".into(),
            max_requests: 40,
            config_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: LogLevel,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
    /// udev database (`--path.udev.data`), for `node_disk_info`'s labels.
    pub udev_data: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        let p = Paths::default();
        Self {
            procfs: p.procfs,
            sysfs: p.sysfs,
            rootfs: p.rootfs,
            udev_data: p.udev_data,
        }
    }
}

impl PathsConfig {
    pub fn paths(&self) -> Paths {
        Paths {
            procfs: self.procfs.clone(),
            sysfs: self.sysfs.clone(),
            rootfs: self.rootfs.clone(),
            udev_data: self.udev_data.clone(),
        }
    }
}

/// Which registration table a [`Toggles`] section is checked against.
pub trait TableKind {
    const SECTION: &'static str;
    const ALL_KEY: &'static str;
    fn names() -> Vec<&'static str>;
    fn default_enabled(name: &str) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectorKind;
impl TableKind for CollectorKind {
    const SECTION: &'static str = "collector";
    const ALL_KEY: &'static str = "disable_defaults";
    fn names() -> Vec<&'static str> {
        COLLECTORS.iter().map(|e| e.name).collect()
    }
    fn default_enabled(name: &str) -> bool {
        COLLECTORS
            .iter()
            .any(|e| e.name == name && e.default_enabled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeKind;
impl TableKind for ProbeKind {
    const SECTION: &'static str = "probe";
    const ALL_KEY: &'static str = "disable_defaults";
    fn names() -> Vec<&'static str> {
        PROBES.iter().map(|e| e.name).collect()
    }
    fn default_enabled(name: &str) -> bool {
        PROBES.iter().any(|e| e.name == name && e.default_enabled)
    }
}

/// `collectors:` / `probes:` sections: `disable_defaults: bool` plus `<name>: bool` for names
/// of the registration table. Anything else is rejected while parsing, so the error carries
/// the line.
#[derive(Clone, PartialEq)]
pub struct Toggles<K> {
    pub disable_defaults: bool,
    pub explicit: BTreeMap<&'static str, bool>,
    kind: std::marker::PhantomData<K>,
}

impl<K> Default for Toggles<K> {
    fn default() -> Self {
        Self {
            disable_defaults: false,
            explicit: BTreeMap::new(),
            kind: std::marker::PhantomData,
        }
    }
}

impl<K> fmt::Debug for Toggles<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Toggles")
            .field("disable_defaults", &self.disable_defaults)
            .field("explicit", &self.explicit)
            .finish()
    }
}

impl<K: TableKind> Toggles<K> {
    /// Whether `name` runs: an explicit setting wins, else the table default unless
    /// `disable_defaults` (node_exporter's `--collector.disable-defaults`).
    pub fn enabled(&self, name: &str) -> bool {
        match self.explicit.get(name) {
            Some(v) => *v,
            None => !self.disable_defaults && K::default_enabled(name),
        }
    }

    /// Sets `name` explicitly; the name must be in the table.
    pub fn set(&mut self, name: &str, on: bool) -> Result<(), String> {
        let known = K::names();
        let Some(n) = known.iter().find(|n| **n == name) else {
            return Err(format!(
                "unknown {} {name:?}, expected one of: {}",
                K::SECTION,
                known.join(", ")
            ));
        };
        self.explicit.insert(n, on);
        Ok(())
    }
}

/// A key of a [`Toggles`] section, checked against the table while the key itself is parsed,
/// so that an error points at the key's own line.
enum ToggleKey {
    All,
    Name(&'static str),
}

struct ToggleKeySeed<K>(std::marker::PhantomData<K>);

impl<'de, K: TableKind> de::DeserializeSeed<'de> for ToggleKeySeed<K> {
    type Value = ToggleKey;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ToggleKey, D::Error> {
        // Validating inside visit_str lets serde_yaml attach the key's own position.
        d.deserialize_str(self)
    }
}

impl<K: TableKind> de::Visitor<'_> for ToggleKeySeed<K> {
    type Value = ToggleKey;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} name", K::SECTION)
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<ToggleKey, E> {
        if key == K::ALL_KEY {
            return Ok(ToggleKey::All);
        }
        let known = K::names();
        match known.iter().find(|n| **n == key) {
            Some(n) => Ok(ToggleKey::Name(n)),
            None => Err(E::custom(format!(
                "unknown {} {key:?}, expected {} or one of: {}",
                K::SECTION,
                K::ALL_KEY,
                known.join(", ")
            ))),
        }
    }
}

impl<'de, K: TableKind> Deserialize<'de> for Toggles<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<K>(std::marker::PhantomData<K>);
        impl<'de, K: TableKind> de::Visitor<'de> for V<K> {
            type Value = Toggles<K>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a map of {} names to true/false", K::SECTION)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Toggles::default())
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut t = Toggles::default();
                while let Some(key) =
                    map.next_key_seed(ToggleKeySeed::<K>(std::marker::PhantomData))?
                {
                    let value: bool = map.next_value()?;
                    match key {
                        ToggleKey::All => t.disable_defaults = value,
                        ToggleKey::Name(n) => {
                            t.explicit.insert(n, value);
                        }
                    }
                }
                Ok(t)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `key` is the dotted path of the offending key, e.g. `web.listen_adress`.
    #[error("config file {path}: key `{key}`: {msg}")]
    Invalid {
        path: PathBuf,
        key: String,
        msg: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses YAML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // An empty file (or one with only comments) is the default configuration.
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Ok(Config::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                path: path.to_path_buf(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                msg: e.into_inner().to_string(),
            }
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks values serde cannot: the listen address and telemetry path.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, msg: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            msg,
        };
        crate::server::parse_listen_address(&self.web.listen_address)
            .map_err(|m| invalid("web.listen_address", m))?;
        if !self.web.telemetry_path.starts_with('/') {
            return Err(invalid(
                "web.telemetry_path",
                format!("{:?} must start with '/'", self.web.telemetry_path),
            ));
        }
        for (key, re) in self.collector_settings.regexes() {
            if let Err(e) = regex::Regex::new(re) {
                return Err(invalid(key, format!("{re:?} is not a valid regexp: {e}")));
            }
        }
        let netdev = &self.collector_settings.netdev;
        if !netdev.device_include.is_empty() && !netdev.device_exclude.is_empty() {
            // As node_exporter, which refuses to start with both.
            return Err(invalid(
                "collector_settings.netdev.device_include",
                "device_include and device_exclude are mutually exclusive: set one".into(),
            ));
        }
        let t = self.collector_settings.filesystem.mount_timeout_seconds;
        if !(t.is_finite() && t > 0.0 && t <= 3600.0) {
            return Err(invalid(
                "collector_settings.filesystem.mount_timeout_seconds",
                format!("{t} must be a positive number of seconds, at most 3600"),
            ));
        }
        let labels = &self.collector_settings.ipvs.backend_labels;
        for l in labels.split(',').map(str::trim).filter(|l| !l.is_empty()) {
            if !IPVS_BACKEND_LABELS.split(',').any(|k| k == l) {
                return Err(invalid(
                    "collector_settings.ipvs.backend_labels",
                    format!(
                        "unknown IPVS backend label {l:?}, expected some of {IPVS_BACKEND_LABELS}"
                    ),
                ));
            }
        }
        for (key, v) in [
            ("syscalls.max_series", self.syscalls.max_series),
            ("tcp.max_sockets", self.tcp.max_sockets),
            ("tcp.max_listeners", self.tcp.max_listeners),
            ("tcp.max_series", self.tcp.max_series),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        self.process_groups
            .validate()
            .map_err(|(key, msg)| invalid(&format!("process_groups.{key}"), msg))?;
        for (i, rw) in self.remote_write.iter().enumerate() {
            rw.validate()
                .map_err(|(k, m)| invalid(&format!("remote_write[{i}].{k}"), m))?;
            crate::remote_write::sender::check_tls(rw)
                .map_err(|m| invalid(&format!("remote_write[{i}].tls_config"), m))?;
        }
        if self.remote_write_options.interval.0.is_zero() {
            return Err(invalid(
                "remote_write_options.interval",
                "must be greater than 0".into(),
            ));
        }
        if self.remote_write_options.queue_max_size.0 < 64 << 10 {
            return Err(invalid(
                "remote_write_options.queue_max_size",
                "must be at least 64KiB".into(),
            ));
        }
        if let Err((key, msg)) = self.http.validate() {
            return Err(invalid(&key, msg));
        }
        if ["/", "/healthz", "/readyz"].contains(&self.web.telemetry_path.as_str()) {
            return Err(invalid(
                "web.telemetry_path",
                format!("{:?} is taken by another endpoint", self.web.telemetry_path),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.yaml"))
    }

    #[test]
    fn shipped_example_documents_every_key_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/hostlens.yaml");
        let shipped = Config::load(&path).unwrap();
        let d = Config::default();
        assert_eq!(
            (&shipped.web, &shipped.log, &shipped.paths),
            (&d.web, &d.log, &d.paths)
        );
        assert_eq!(shipped.collector_settings, d.collector_settings);
        assert_eq!(
            (&shipped.remote_write, &shipped.remote_write_options),
            (&d.remote_write, &d.remote_write_options)
        );
        assert_eq!(
            (
                &shipped.process_names,
                &shipped.syscalls,
                &shipped.tcp,
                &shipped.process_groups
            ),
            (&d.process_names, &d.syscalls, &d.tcp, &d.process_groups)
        );
        assert_eq!(shipped.http, d.http, "config/hostlens.yaml http: section");
        for e in COLLECTORS {
            assert_eq!(
                shipped.collectors.explicit.get(e.name),
                Some(&e.default_enabled),
                "config/hostlens.yaml must list collector {} with its default",
                e.name
            );
        }
        for p in PROBES {
            assert_eq!(
                shipped.probes.explicit.get(p.name),
                Some(&p.default_enabled),
                "config/hostlens.yaml must list probe {} with its default",
                p.name
            );
        }
    }

    #[test]
    fn empty_file_is_default() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# nothing\n\n").unwrap(), Config::default());
    }

    #[test]
    fn defaults_enable_node_exporter_defaults_and_every_probe() {
        let c = Config::default();
        for e in COLLECTORS {
            assert_eq!(
                c.collectors.enabled(e.name),
                e.default_enabled,
                "{}",
                e.name
            );
        }
        for p in PROBES {
            assert!(c.probes.enabled(p.name), "{}", p.name);
        }
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let e = parse("web:\n  listen_address: \":1\"\n  listen_adress: \":2\"\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("test.yaml"), "{m}");
        assert!(m.contains("listen_adress"), "{m}");
        assert!(m.contains("line 3"), "{m}");
    }

    #[test]
    fn unknown_collector_names_it_with_line() {
        let m = parse("collectors:\n  loadavg: false\n  lodavg: true\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("lodavg") && m.contains("line 3"), "{m}");
        assert!(m.contains("collectors"), "{m}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let m = parse("web:\n  max_requests: many\n")
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("web.max_requests") && m.contains("line 2"),
            "{m}"
        );
        let m = parse("collectors:\n  loadavg: perhaps\n")
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("collectors.loadavg") || m.contains("line 2"),
            "{m}"
        );
        let m = parse("log:\n  level: loud\n").unwrap_err().to_string();
        assert!(m.contains("log.level") && m.contains("loud"), "{m}");
    }

    #[test]
    fn bad_values_are_rejected_with_key() {
        let m = parse("web:\n  listen_address: \"nonsense\"\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("web.listen_address"), "{m}");
        let m = parse("web:\n  telemetry_path: metrics\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("web.telemetry_path"), "{m}");
        for t in ["0", "-1", "1e20", ".nan"] {
            let m = parse(&format!(
                "collector_settings:\n  filesystem:\n    mount_timeout_seconds: {t}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                m.contains("collector_settings.filesystem.mount_timeout_seconds"),
                "{t}: {m}"
            );
        }
    }

    #[test]
    fn http_hook_is_one_of_five_names() {
        use crate::probes::http::HttpHook;
        assert_eq!(
            parse("http:\n  hook: sock\n").unwrap().http.hook,
            HttpHook::Sock
        );
        assert_eq!(
            parse("http:\n  hook: tp_btf\n").unwrap().http.hook,
            HttpHook::TpBtf
        );
        assert_eq!(
            parse("http:\n  hook: raw_tracepoint\n").unwrap().http.hook,
            HttpHook::RawTracepoint
        );
        let m = parse("http:\n  hook: kprobe\n").unwrap_err().to_string();
        assert!(m.contains("http.hook") && m.contains("kprobe"), "{m}");
    }

    #[test]
    fn retired_syscalls_max_threads_still_loads() {
        // Older files set it; it sized a map that task-local storage replaced.
        let c = parse("syscalls:\n  max_series: 100\n  max_threads: 128\n").unwrap();
        assert_eq!(c.syscalls.max_threads, Some(128));
        assert_eq!(c.syscalls.max_series, 100);
        assert!(parse("syscalls:\n  max_threads: many\n").is_err());
    }

    #[test]
    fn zero_map_size_is_rejected_with_key() {
        let m = parse("syscalls:\n  max_series: 0\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("syscalls.max_series"), "{m}");
        let m = parse("process_names:\n  top_k: -1\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("process_names.top_k"), "{m}");
    }

    #[test]
    fn bad_process_group_matcher_names_its_key() {
        let m = parse("process_groups:\n  matchers:\n  - cmdline: ['(']\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("process_groups.matchers[0].cmdline[0]"), "{m}");
        let m = parse("process_groups:\n  matchers:\n  - comm: [a]\n    pid: 1\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("pid") && m.contains("line 4"), "{m}");
    }

    #[test]
    fn missing_file_is_named() {
        let m = Config::load(Path::new("/nonexistent/hostlens.yaml"))
            .unwrap_err()
            .to_string();
        assert!(m.contains("/nonexistent/hostlens.yaml"), "{m}");
    }

    #[test]
    fn collector_settings_parse_and_validate() {
        let c = parse("collector_settings:\n  netdev:\n    device_exclude: \"^lo$\"\n").unwrap();
        assert_eq!(c.collector_settings.netdev.device_exclude, "^lo$");
        assert_eq!(c.collector_settings.vmstat.fields, VMSTAT_FIELDS);
        let m = parse("collector_settings:\n  vmstat:\n    fields: \"(\"\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("collector_settings.vmstat.fields"), "{m}");
        let m = parse("collector_settings:\n  netdev:\n    device_exclud: x\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("device_exclud") && m.contains("line 3"), "{m}");
        // netdev's include and exclude exclude each other (node_exporter refuses both too).
        let m = parse(
            "collector_settings:\n  netdev:\n    device_include: \"^eth\"\n    device_exclude: \"^lo$\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            m.contains("collector_settings.netdev.device_include") && m.contains("mutually"),
            "{m}"
        );
    }

    #[test]
    fn collector_settings_are_typed_and_checked() {
        let c = parse(
            "collector_settings:\n  textfile:\n    directory: /x\n  netclass:\n    ignored_devices: \"^veth\"\n",
        )
        .unwrap();
        assert_eq!(c.collector_settings.textfile.directory, "/x");
        assert_eq!(c.collector_settings.netclass.ignored_devices, "^veth");
        let m = parse("collector_settings:\n  textfile:\n    dir: /x\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("dir") && m.contains("line 3"), "{m}");
        let m = parse("collector_settings:\n  netclass:\n    ignored_devices: \"(\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("collector_settings.netclass.ignored_devices"),
            "{m}"
        );
    }

    #[test]
    fn disable_defaults_keeps_explicit() {
        let c = parse("collectors:\n  disable_defaults: true\n  meminfo: true\n").unwrap();
        assert!(c.collectors.enabled("meminfo"));
        assert!(!c.collectors.enabled("loadavg"));
    }

    #[test]
    fn remote_write_accepts_prometheus_section() {
        let c = parse(
            "remote_write:\n  - url: https://mimir.example:9009/api/v1/push\n    remote_timeout: 10s\n    headers:\n      X-Scope-OrgID: team-a\n    basic_auth:\n      username: u\n      password: p\n    tls_config:\n      insecure_skip_verify: true\n    queue_config:\n      capacity: 2500\n      max_shards: 200\n      max_samples_per_send: 500\n      batch_send_deadline: 5s\n      min_backoff: 30ms\n      max_backoff: 5s\n    write_relabel_configs:\n      - source_labels: [__name__]\n        regex: 'go_.*'\n        action: drop\n    protobuf_message: io.prometheus.write.v2.Request\nremote_write_options:\n  interval: 1s\n  queue_max_size: 64MiB\n",
        )
        .unwrap();
        let rw = &c.remote_write[0];
        assert_eq!(rw.queue_config.max_samples_per_send, 500);
        assert_eq!(rw.remote_timeout.0, std::time::Duration::from_secs(10));
        assert_eq!(
            rw.protobuf_message,
            crate::remote_write::config::ProtobufMessage::V2
        );
        assert_eq!(rw.endpoint_name(), "mimir.example:9009");
        assert_eq!(c.remote_write_options.queue_max_size.0, 64 << 20);
        let ext = c.remote_write_options.external_labels();
        assert_eq!(ext.get("job").map(String::as_str), Some("hostlens"));
        assert!(ext.contains_key("instance"));
    }

    #[test]
    fn remote_write_errors_name_the_key() {
        let m = parse("remote_write:\n  - url: http://a:1/w\n    remote_timeot: 1s\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("remote_timeot") && m.contains("line 3"), "{m}");
        for (key, value) in [
            ("min_shards", "1000000000"),
            ("max_samples_per_send", "10000000000000000000"),
            ("max_samples_per_send", "0"),
        ] {
            let m = parse(&format!(
                "remote_write:\n  - url: http://a:1/w\n    queue_config:\n      {key}: {value}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                m.contains(&format!("remote_write[0].queue_config.{key}"))
                    && m.contains("out of range"),
                "{key}: {m}"
            );
        }
        let m = parse("remote_write:\n  - url: \"not a url\"\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("remote_write[0].url"), "{m}");
        let m = parse("remote_write:\n  - url: ftp://a/b\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("remote_write[0].url"), "{m}");
        let m = parse(
            "remote_write:\n  - url: http://a:1/w\n    authorization:\n      credentials_file: /nonexistent/token\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            m.contains("remote_write[0].authorization.credentials_file")
                && m.contains("/nonexistent/token"),
            "{m}"
        );
        let m =
            parse("remote_write:\n  - url: http://a:1/w\n    headers:\n      Content-Type: x\n")
                .unwrap_err()
                .to_string();
        assert!(m.contains("remote_write[0].headers.Content-Type"), "{m}");
        let m = parse(
            "remote_write:\n  - url: http://a:1/w\n    queue_config:\n      max_backoff: soon\n",
        )
        .unwrap_err()
        .to_string();
        assert!(m.contains("max_backoff") && m.contains("soon"), "{m}");
        let m = parse("remote_write:\n  - url: http://a:1/w\n    tls_config:\n      ca_file: /nonexistent/ca.pem\n")
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("remote_write[0].tls_config") && m.contains("/nonexistent/ca.pem"),
            "{m}"
        );
        let m = parse("remote_write:\n  - url: http://a:1/w\n    write_relabel_configs:\n      - regex: '('\n")
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("write_relabel_configs") && m.contains("invalid regex"),
            "{m}"
        );
        let m = parse("remote_write_options:\n  interval: 0s\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("remote_write_options.interval"), "{m}");
    }
}
