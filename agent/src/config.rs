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
    /// Prometheus' `remote_write:` section (see `remote_write/config.rs`).
    pub remote_write: Vec<crate::remote_write::config::RemoteWriteConfig>,
    pub remote_write_options: crate::remote_write::config::RemoteWriteOptions,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// `host:port`, `:port` (all interfaces) or `[v6]:port`.
    pub listen_address: String,
    pub telemetry_path: String,
    /// Concurrent `/metrics` scrapes served at once; further ones wait (node_exporter's
    /// `--web.max-requests`, default 40). 0 means no limit.
    pub max_requests: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen_address: ":9100".into(),
            telemetry_path: "/metrics".into(),
            max_requests: 40,
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
}

impl Default for PathsConfig {
    fn default() -> Self {
        let p = Paths::default();
        Self {
            procfs: p.procfs,
            sysfs: p.sysfs,
            rootfs: p.rootfs,
        }
    }
}

impl PathsConfig {
    pub fn paths(&self) -> Paths {
        Paths {
            procfs: self.procfs.clone(),
            sysfs: self.sysfs.clone(),
            rootfs: self.rootfs.clone(),
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
        if ["/", "/healthz", "/readyz"].contains(&self.web.telemetry_path.as_str()) {
            return Err(invalid(
                "web.telemetry_path",
                format!("{:?} is taken by another endpoint", self.web.telemetry_path),
            ));
        }
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
        assert_eq!(
            (&shipped.remote_write, &shipped.remote_write_options),
            (&d.remote_write, &d.remote_write_options)
        );
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
    }

    #[test]
    fn missing_file_is_named() {
        let m = Config::load(Path::new("/nonexistent/hostlens.yaml"))
            .unwrap_err()
            .to_string();
        assert!(m.contains("/nonexistent/hostlens.yaml"), "{m}");
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
