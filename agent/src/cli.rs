//! Command-line flags in node_exporter's style. Per-collector and per-probe flags are derived
//! from the registration tables. Flags override the config file.
use std::{ffi::OsString, path::PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};

use crate::{
    collectors::COLLECTORS,
    config::{Config, ConfigError, LogLevel},
    probes::PROBES,
};

/// Exit code for bad flags and bad configuration (sysexits.h EX_USAGE).
pub const EX_USAGE: u8 = 64;

pub fn command() -> Command {
    let mut cmd = Command::new("hostlens")
        .version(concat!(env!("CARGO_PKG_VERSION"), " (", env!("HOSTLENS_REVISION"), ")"))
        .about("eBPF host and process agent with node_exporter-compatible /metrics")
        .arg(
            Arg::new("config.file")
                .long("config.file")
                .value_name("PATH")
                .value_parser(value_parser!(PathBuf))
                .help("YAML configuration file (every key documented in config/hostlens.yaml)"),
        )
        .arg(
            Arg::new("web.listen-address")
                .long("web.listen-address")
                .value_name("ADDR")
                .help("Address to serve /metrics on, host:port or :port [default: :9100]"),
        )
        .arg(
            Arg::new("web.telemetry-path")
                .long("web.telemetry-path")
                .value_name("PATH")
                .help("Path under which to expose metrics [default: /metrics]"),
        )
        .arg(
            Arg::new("web.max-requests")
                .long("web.max-requests")
                .value_name("N")
                .value_parser(value_parser!(usize))
                .help("Maximum number of parallel scrape requests; 0 disables the limit [default: 40]"),
        )
        .arg(
            Arg::new("web.config.file")
                .long("web.config.file")
                .value_name("PATH")
                .value_parser(value_parser!(PathBuf))
                .help("Web config file (TLS, basic auth) in node_exporter's exporter-toolkit format"),
        )
        .arg(
            Arg::new("log.level")
                .long("log.level")
                .value_name("LEVEL")
                .value_parser(value_parser!(LogLevel))
                .help("Only log messages with the given severity or above [default: info]"),
        )
        .arg(path_arg("path.procfs", "procfs mountpoint [default: /proc]"))
        .arg(path_arg("path.sysfs", "sysfs mountpoint [default: /sys]"))
        .arg(path_arg("path.rootfs", "rootfs mountpoint [default: /]"))
        .arg(path_arg(
            "path.udev.data",
            "udev data path [default: /run/udev/data]",
        ))
        .arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Set all collectors to disabled by default"),
        )
        .arg(setting_arg(
            "collector.textfile.directory",
            "DIR",
            "Directory (or glob) to read *.prom text files with metrics from [default: \"\"]",
        ))
        .arg(setting_arg(
            "collector.netclass.ignored-devices",
            "REGEX",
            "Regexp of net devices to ignore for netclass collector [default: ^$]",
        ))
        .arg(setting_arg(
            "collector.powersupply.ignored-supplies",
            "REGEX",
            "Regexp of power supplies to ignore for powersupplyclass collector [default: ^$]",
        ))
        .arg(setting_arg(
            "collector.ipvs.backend-labels",
            "LABELS",
            "Comma separated list for IPVS backend stats labels [default: local_address,local_port,remote_address,remote_port,proto,local_mark]",
        ))
        .arg(setting_arg(
            "collector.tapestats.ignored-devices",
            "REGEX",
            "Regexp of devices to ignore for tapestats [default: ^$]",
        ))
        .arg(
            Arg::new("probe.disable-defaults")
                .long("probe.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Set all eBPF probes to disabled by default"),
        );
    for (name, help) in SETTING_FLAGS {
        cmd = cmd.arg(Arg::new(*name).long(*name).value_name("VALUE").help(*help));
    }
    cmd = bool_setting_args(
        cmd,
        "collector.netclass.ignore-invalid-speed",
        "Ignore devices where the speed is invalid. This will be the default behavior in 2.x",
    );
    cmd = bool_setting_args(
        cmd,
        "collector.bcache.priorityStats",
        "Expose expensive priority stats.",
    );
    cmd = bool_setting_args(
        cmd,
        "collector.rapl.enable-zone-label",
        "One node_rapl_joules_total family with a rapl_zone label instead of one family per zone",
    );
    cmd = toggle_args(cmd, "collector", "cpu.guest", "enabled");
    cmd = toggle_args(cmd, "collector", "cpu.info", "disabled");
    cmd = toggle_args(cmd, "collector", "stat.softirq", "disabled");
    cmd = toggle_args(cmd, "collector", "netdev.address-info", "disabled");
    cmd = toggle_args(
        cmd,
        "collector",
        "netdev.enable-detailed-metrics",
        "disabled",
    );
    cmd = toggle_args(cmd, "collector", "netdev.netlink", "enabled");
    for c in COLLECTORS {
        let default = if c.default_enabled {
            "enabled"
        } else {
            "disabled"
        };
        cmd = toggle_args(cmd, "collector", c.name, default);
    }
    for p in PROBES {
        let default = if p.default_enabled {
            "enabled"
        } else {
            "disabled"
        };
        cmd = toggle_args(cmd, "probe", p.name, default);
    }
    cmd
}

/// Per-collector settings taking a value (node_exporter's names); see `collector_settings:`.
const SETTING_FLAGS: &[(&str, &str)] = &[
    (
        "collector.arp.device-include",
        "Regexp of arp devices to include (with device-exclude set too, both apply)",
    ),
    (
        "collector.arp.device-exclude",
        "Regexp of arp devices to exclude (with device-include set too, both apply)",
    ),
    (
        "collector.cpu.info.flags-include",
        "Regexp of CPU flags exported as node_cpu_flag_info (needs --collector.cpu.info)",
    ),
    (
        "collector.cpu.info.bugs-include",
        "Regexp of CPU bugs exported as node_cpu_bug_info (needs --collector.cpu.info)",
    ),
    (
        "collector.diskstats.device-exclude",
        "Regexp of diskstats devices to exclude [default: node_exporter's]",
    ),
    (
        "collector.diskstats.device-include",
        "Regexp of diskstats devices to include (replaces the exclude list)",
    ),
    (
        "collector.filesystem.mount-points-exclude",
        "Regexp of mount points to exclude [default: node_exporter's]",
    ),
    (
        "collector.filesystem.fs-types-exclude",
        "Regexp of filesystem types to exclude [default: node_exporter's]",
    ),
    (
        "collector.filesystem.mount-timeout",
        "How long a statfs may take before the mount is reported stuck, e.g. 5s (node_exporter 1.6's flag; 1.5 waits 30s) [default: 5s]",
    ),
    (
        "collector.netdev.device-include",
        "Regexp of net devices to include (mutually exclusive to device-exclude)",
    ),
    (
        "collector.netdev.device-exclude",
        "Regexp of net devices to exclude (mutually exclusive to device-include)",
    ),
    (
        "collector.netstat.fields",
        "Regexp of fields to return for the netstat collector [default: node_exporter's]",
    ),
    (
        "collector.vmstat.fields",
        "Regexp of fields to return for the vmstat collector [default: node_exporter's]",
    ),
];

/// Parses a Go-style duration as node_exporter takes it: `5s`, `500ms`, `1m`, or bare seconds.
fn parse_duration(v: &str) -> Result<f64, String> {
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    match num.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x * scale),
        _ => Err(format!("invalid duration {v:?} (e.g. 5s, 500ms)")),
    }
}

fn path_arg(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .value_name("PATH")
        .value_parser(value_parser!(PathBuf))
        .help(help)
}

fn setting_arg(name: &'static str, value: &'static str, help: &'static str) -> Arg {
    Arg::new(name).long(name).value_name(value).help(help)
}

fn toggle_args(cmd: Command, kind: &str, name: &str, default: &str) -> Command {
    flag_pair(
        cmd,
        &format!("{kind}.{name}"),
        format!("Enable the {name} {kind} [default: {default}]"),
        format!("Disable the {name} {kind}"),
    )
}

/// `--NAME` and its negation `--no-NAME`, the later one on the command line winning.
fn flag_pair(cmd: Command, name: &str, on_help: String, off_help: String) -> Command {
    let off = format!("no-{name}");
    cmd.arg(
        Arg::new(name.to_string())
            .long(name.to_string())
            .action(ArgAction::SetTrue)
            .overrides_with(off.clone())
            .help(on_help),
    )
    .arg(
        Arg::new(off.clone())
            .long(off)
            .action(ArgAction::SetTrue)
            .overrides_with(name.to_string())
            .help(off_help),
    )
}

/// A boolean setting `--NAME` with its negation `--no-NAME` (kingpin's form, so a `true` in the
/// config file can be turned off from the command line).
fn bool_setting_args(cmd: Command, name: &str, help: &str) -> Command {
    flag_pair(cmd, name, help.to_string(), format!("Negates --{name}"))
}

/// Parsed flags.
#[derive(Debug)]
pub struct Flags {
    pub matches: ArgMatches,
}

/// Why the program stops before running.
#[derive(Debug)]
pub enum CliExit {
    /// `--help` / `--version`: print and exit 0.
    Info(String),
    /// Bad flag or config: print and exit 64.
    Usage(String),
}

pub fn parse<I, T>(args: I) -> Result<Flags, CliExit>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match command().try_get_matches_from(args) {
        Ok(matches) => Ok(Flags { matches }),
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                Err(CliExit::Info(e.render().to_string()))
            }
            _ => Err(CliExit::Usage(e.render().to_string())),
        },
    }
}

impl Flags {
    /// The effective configuration: defaults, then the file (if any), then the flags.
    pub fn config(&self) -> Result<Config, CliExit> {
        let m = &self.matches;
        let mut cfg = match m.get_one::<PathBuf>("config.file") {
            Some(p) => Config::load(p).map_err(|e| CliExit::Usage(e.to_string()))?,
            None => Config::default(),
        };
        if let Some(v) = m.get_one::<String>("web.listen-address") {
            cfg.web.listen_address = v.clone();
        }
        if let Some(v) = m.get_one::<String>("web.telemetry-path") {
            cfg.web.telemetry_path = v.clone();
        }
        if let Some(v) = m.get_one::<usize>("web.max-requests") {
            cfg.web.max_requests = *v;
        }
        if let Some(v) = m.get_one::<PathBuf>("web.config.file") {
            cfg.web.config_file = Some(v.clone());
        }
        if let Some(v) = m.get_one::<LogLevel>("log.level") {
            cfg.log.level = *v;
        }
        if let Some(v) = m.get_one::<PathBuf>("path.procfs") {
            cfg.paths.procfs = v.clone();
        }
        if let Some(v) = m.get_one::<PathBuf>("path.sysfs") {
            cfg.paths.sysfs = v.clone();
        }
        if let Some(v) = m.get_one::<PathBuf>("path.rootfs") {
            cfg.paths.rootfs = v.clone();
        }
        if let Some(v) = m.get_one::<PathBuf>("path.udev.data") {
            cfg.paths.udev_data = v.clone();
        }
        let cs = &mut cfg.collector_settings;
        for (name, _) in SETTING_FLAGS {
            let Some(v) = m.get_one::<String>(name).cloned() else {
                continue;
            };
            match *name {
                "collector.arp.device-include" => cs.arp.device_include = v,
                "collector.arp.device-exclude" => cs.arp.device_exclude = v,
                "collector.cpu.info.flags-include" => cs.cpu.info_flags_include = v,
                "collector.cpu.info.bugs-include" => cs.cpu.info_bugs_include = v,
                "collector.diskstats.device-exclude" => cs.diskstats.device_exclude = v,
                "collector.diskstats.device-include" => cs.diskstats.device_include = v,
                "collector.filesystem.mount-points-exclude" => {
                    cs.filesystem.mount_points_exclude = v
                }
                "collector.filesystem.fs-types-exclude" => cs.filesystem.fs_types_exclude = v,
                "collector.filesystem.mount-timeout" => {
                    cs.filesystem.mount_timeout_seconds = parse_duration(&v).map_err(|e| {
                        CliExit::Usage(format!("--collector.filesystem.mount-timeout: {e}"))
                    })?
                }
                "collector.netdev.device-include" => cs.netdev.device_include = v,
                "collector.netdev.device-exclude" => cs.netdev.device_exclude = v,
                "collector.netstat.fields" => cs.netstat.fields = v,
                "collector.vmstat.fields" => cs.vmstat.fields = v,
                _ => unreachable!("every SETTING_FLAGS entry is handled"),
            }
        }
        if let Some(on) = toggle(m, "collector", "cpu.guest") {
            cs.cpu.guest = on;
        }
        if let Some(on) = toggle(m, "collector", "cpu.info") {
            cs.cpu.info = on;
        }
        if let Some(on) = toggle(m, "collector", "stat.softirq") {
            cs.stat.softirq = on;
        }
        if let Some(on) = toggle(m, "collector", "netdev.address-info") {
            cs.netdev.address_info = on;
        }
        if let Some(on) = toggle(m, "collector", "netdev.enable-detailed-metrics") {
            cs.netdev.enable_detailed_metrics = on;
        }
        if let Some(on) = toggle(m, "collector", "netdev.netlink") {
            cs.netdev.netlink = on;
        }
        let settings = &mut cfg.collector_settings;
        if let Some(v) = m.get_one::<String>("collector.textfile.directory") {
            settings.textfile.directory = v.clone();
        }
        if let Some(v) = m.get_one::<String>("collector.netclass.ignored-devices") {
            settings.netclass.ignored_devices = v.clone();
        }
        if let Some(on) = toggle(m, "collector", "netclass.ignore-invalid-speed") {
            settings.netclass.ignore_invalid_speed = on;
        }
        if let Some(v) = m.get_one::<String>("collector.powersupply.ignored-supplies") {
            settings.powersupplyclass.ignored_supplies = v.clone();
        }
        if let Some(on) = toggle(m, "collector", "bcache.priorityStats") {
            settings.bcache.priority_stats = on;
        }
        if let Some(v) = m.get_one::<String>("collector.ipvs.backend-labels") {
            settings.ipvs.backend_labels = v.clone();
        }
        if let Some(on) = toggle(m, "collector", "rapl.enable-zone-label") {
            settings.rapl.enable_zone_label = on;
        }
        if let Some(v) = m.get_one::<String>("collector.tapestats.ignored-devices") {
            settings.tapestats.ignored_devices = v.clone();
        }
        if m.get_flag("collector.disable-defaults") {
            cfg.collectors.disable_defaults = true;
        }
        if m.get_flag("probe.disable-defaults") {
            cfg.probes.disable_defaults = true;
        }
        for c in COLLECTORS {
            if let Some(on) = toggle(m, "collector", c.name) {
                cfg.collectors.set(c.name, on).map_err(CliExit::Usage)?;
            }
        }
        for p in PROBES {
            if let Some(on) = toggle(m, "probe", p.name) {
                cfg.probes.set(p.name, on).map_err(CliExit::Usage)?;
            }
        }
        // Values from flags are checked like values from the file.
        cfg.validate(std::path::Path::new("(flags)"))
            .map_err(|e| match e {
                ConfigError::Invalid { key, msg, .. } => {
                    CliExit::Usage(format!("invalid value for {key}: {msg}"))
                }
                other => CliExit::Usage(other.to_string()),
            })?;
        Ok(cfg)
    }
}

fn toggle(m: &ArgMatches, kind: &str, name: &str) -> Option<bool> {
    if m.get_flag(&format!("{kind}.{name}")) {
        Some(true)
    } else if m.get_flag(&format!("no-{kind}.{name}")) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config, CliExit> {
        let mut v = vec!["hostlens"];
        v.extend_from_slice(args);
        parse(v)?.config()
    }

    #[test]
    fn table_derives_flags() {
        let c = cfg(&["--no-collector.loadavg", "--collector.meminfo"]).unwrap();
        assert!(!c.collectors.enabled("loadavg"));
        assert!(c.collectors.enabled("meminfo"));
        let c = cfg(&["--collector.disable-defaults", "--collector.uname"]).unwrap();
        assert!(c.collectors.enabled("uname") && !c.collectors.enabled("meminfo"));
        let c = cfg(&["--no-probe.syscalls"]).unwrap();
        assert!(!c.probes.enabled("syscalls"));
        // The last of --x / --no-x wins, as with node_exporter's boolean flags.
        let c = cfg(&["--collector.loadavg", "--no-collector.loadavg"]).unwrap();
        assert!(!c.collectors.enabled("loadavg"));
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("hostlens-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(
            &f,
            "web:\n  listen_address: \":9999\"\ncollectors:\n  loadavg: false\n",
        )
        .unwrap();
        let fs = f.to_str().unwrap();
        let c = cfg(&["--config.file", fs]).unwrap();
        assert_eq!(c.web.listen_address, ":9999");
        assert!(!c.collectors.enabled("loadavg"));
        let c = cfg(&[
            "--config.file",
            fs,
            "--web.listen-address",
            "127.0.0.1:1",
            "--collector.loadavg",
        ])
        .unwrap();
        assert_eq!(c.web.listen_address, "127.0.0.1:1");
        assert!(c.collectors.enabled("loadavg"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn collector_setting_flags() {
        let c = cfg(&[
            "--collector.netdev.device-exclude=^lo$",
            "--collector.filesystem.mount-timeout",
            "250ms",
            "--no-collector.cpu.guest",
            "--path.udev.data",
            "/x",
        ])
        .unwrap();
        assert_eq!(c.collector_settings.netdev.device_exclude, "^lo$");
        assert_eq!(c.collector_settings.filesystem.mount_timeout_seconds, 0.25);
        assert!(!c.collector_settings.cpu.guest);
        assert_eq!(c.paths.udev_data, PathBuf::from("/x"));
        assert!(matches!(
            cfg(&["--collector.vmstat.fields", "("]),
            Err(CliExit::Usage(m)) if m.contains("collector_settings.vmstat.fields")
        ));
        assert!(cfg(&["--collector.filesystem.mount-timeout", "soon"]).is_err());
    }

    #[test]
    fn hardware_collector_setting_flags() {
        let c = cfg(&[
            "--collector.textfile.directory",
            "/t",
            "--collector.netclass.ignored-devices",
            "^lo$",
            "--collector.netclass.ignore-invalid-speed",
        ])
        .unwrap();
        assert_eq!(c.collector_settings.textfile.directory, "/t");
        assert_eq!(c.collector_settings.netclass.ignored_devices, "^lo$");
        assert!(c.collector_settings.netclass.ignore_invalid_speed);
        assert!(matches!(
            cfg(&["--collector.netclass.ignored-devices", "("]),
            Err(CliExit::Usage(_))
        ));
        let c = cfg(&[
            "--collector.bcache.priorityStats",
            "--collector.rapl.enable-zone-label",
            "--collector.ipvs.backend-labels",
            "proto,local_address",
            "--collector.tapestats.ignored-devices",
            "^st1$",
        ])
        .unwrap();
        let s = &c.collector_settings;
        assert!(s.bcache.priority_stats && s.rapl.enable_zone_label);
        assert_eq!(s.ipvs.backend_labels, "proto,local_address");
        assert_eq!(s.tapestats.ignored_devices, "^st1$");
        assert!(matches!(
            cfg(&["--collector.ipvs.backend-labels", "proto,port"]),
            Err(CliExit::Usage(m)) if m.contains("port")
        ));
    }

    #[test]
    fn negated_setting_flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("hostlens-cli-neg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hostlens.yaml");
        std::fs::write(
            &file,
            "collector_settings:\n  netclass:\n    ignore_invalid_speed: true\n  bcache:\n    priority_stats: true\n  rapl:\n    enable_zone_label: true\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let s = cfg(&["--config.file", path]).unwrap().collector_settings;
        assert!(s.netclass.ignore_invalid_speed && s.bcache.priority_stats);
        assert!(s.rapl.enable_zone_label);
        let s = cfg(&[
            "--config.file",
            path,
            "--no-collector.netclass.ignore-invalid-speed",
            "--no-collector.bcache.priorityStats",
            "--no-collector.rapl.enable-zone-label",
        ])
        .unwrap()
        .collector_settings;
        assert!(!s.netclass.ignore_invalid_speed && !s.bcache.priority_stats);
        assert!(!s.rapl.enable_zone_label);
        // The last of a flag and its negation wins, as with kingpin.
        let s = cfg(&[
            "--no-collector.rapl.enable-zone-label",
            "--collector.rapl.enable-zone-label",
        ])
        .unwrap()
        .collector_settings;
        assert!(s.rapl.enable_zone_label);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            &["--collector.nope"][..],
            &["--log.level", "loud"],
            &["--web.max-requests", "-3"],
            &["--web.listen-address", "nonsense"],
            &["--config.file", "/nonexistent/x.yaml"],
        ] {
            match cfg(args) {
                Err(CliExit::Usage(m)) => assert!(!m.is_empty()),
                other => panic!("{args:?}: expected a usage error, got {other:?}"),
            }
        }
        assert!(matches!(cfg(&["--help"]), Err(CliExit::Info(_))));
    }
}
