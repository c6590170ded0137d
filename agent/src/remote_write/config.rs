//! The `remote_write:` section (Prometheus' own schema for it, so an operator can paste the
//! section of their `prometheus.yml`) and hostlens' `remote_write_options:` (gather interval,
//! external labels, disk queue). Unknown keys are rejected by serde with the key's path.
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer, de};

/// One `remote_write:` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    pub url: String,
    /// Endpoint name used in logs, metric labels and the queue directory; default: a name
    /// derived from the URL.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_remote_timeout")]
    pub remote_timeout: PromDuration,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub authorization: Option<Authorization>,
    #[serde(default)]
    pub tls_config: TlsConfig,
    #[serde(default)]
    pub proxy_url: Option<String>,
    #[serde(default)]
    pub queue_config: QueueConfig,
    #[serde(default)]
    pub write_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub protobuf_message: ProtobufMessage,
}

fn default_remote_timeout() -> PromDuration {
    PromDuration(Duration::from_secs(30))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ProtobufMessage {
    #[default]
    #[serde(rename = "prometheus.WriteRequest")]
    V1,
    #[serde(rename = "io.prometheus.write.v2.Request")]
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(default = "default_auth_type", rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub credentials: Option<String>,
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

fn default_auth_type() -> String {
    "Bearer".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

/// `queue_config`, with Prometheus' names. `min_shards` is the number of parallel requests
/// (split by series); `capacity` and `max_shards` are accepted so pasted configs load.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub capacity: usize,
    pub max_shards: usize,
    pub min_shards: usize,
    pub max_samples_per_send: usize,
    pub batch_send_deadline: PromDuration,
    pub min_backoff: PromDuration,
    pub max_backoff: PromDuration,
    pub retry_on_http_429: bool,
    /// A batch the receiver keeps refusing with 5xx/429 for longer than this is dropped and
    /// counted (connection errors and timeouts never drop: that is an outage). 0 = never.
    pub sample_age_limit: PromDuration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_shards: 50,
            min_shards: 1,
            max_samples_per_send: 2_000,
            batch_send_deadline: PromDuration(Duration::from_secs(5)),
            min_backoff: PromDuration(Duration::from_millis(30)),
            max_backoff: PromDuration(Duration::from_secs(5)),
            retry_on_http_429: true,
            sample_age_limit: PromDuration(Duration::from_secs(3600)),
        }
    }
}

/// `write_relabel_configs` entry: hostlens implements `keep`, `drop` (on the values of
/// `source_labels` joined with `separator`, fully anchored regex), `labeldrop` and `labelkeep`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default = "default_source_labels")]
    pub source_labels: Vec<String>,
    #[serde(default = "default_separator")]
    pub separator: String,
    #[serde(default = "default_regex")]
    pub regex: AnchoredRegex,
    #[serde(default)]
    pub action: RelabelAction,
}

impl PartialEq for RelabelConfig {
    fn eq(&self, o: &Self) -> bool {
        self.source_labels == o.source_labels
            && self.separator == o.separator
            && self.regex.0.as_str() == o.regex.0.as_str()
            && self.action == o.action
    }
}

fn default_source_labels() -> Vec<String> {
    vec!["__name__".into()]
}
fn default_separator() -> String {
    ";".into()
}
fn default_regex() -> AnchoredRegex {
    AnchoredRegex::new("(.*)").unwrap_or_else(|_| unreachable!("constant regex"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelabelAction {
    #[default]
    Keep,
    Drop,
    Labeldrop,
    Labelkeep,
}

/// A regex matched against the whole string, as Prometheus relabelling does.
#[derive(Debug, Clone)]
pub struct AnchoredRegex(pub regex::Regex);

impl AnchoredRegex {
    pub fn new(re: &str) -> Result<Self, regex::Error> {
        regex::Regex::new(&format!("^(?:{re})$")).map(AnchoredRegex)
    }
    pub fn is_match(&self, s: &str) -> bool {
        self.0.is_match(s)
    }
}

impl<'de> Deserialize<'de> for AnchoredRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AnchoredRegex::new(&s).map_err(|e| de::Error::custom(format!("invalid regex {s:?}: {e}")))
    }
}

/// `remote_write_options:` (hostlens' own): how often the registry is gathered, the labels
/// added to every series, and the disk queue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteOptions {
    pub interval: PromDuration,
    /// Default `instance` = the host name, `job` = `hostlens`.
    pub external_labels: Option<BTreeMap<String, String>>,
    /// Each endpoint keeps its queue in a subdirectory named after it.
    pub queue_dir: PathBuf,
    /// Disk bound of each endpoint's queue; when full the oldest samples are dropped.
    pub queue_max_size: ByteSize,
}

impl Default for RemoteWriteOptions {
    fn default() -> Self {
        Self {
            interval: PromDuration(Duration::from_secs(15)),
            external_labels: None,
            queue_dir: PathBuf::from("/var/lib/hostlens/remote_write"),
            queue_max_size: ByteSize(512 << 20),
        }
    }
}

impl RemoteWriteOptions {
    pub fn external_labels(&self) -> BTreeMap<String, String> {
        match &self.external_labels {
            Some(l) => l.clone(),
            None => BTreeMap::from([
                ("instance".to_string(), hostname()),
                ("job".to_string(), "hostlens".to_string()),
            ]),
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A duration in Prometheus' notation: `1h30m`, `15s`, `500ms`, `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PromDuration(pub Duration);

impl PromDuration {
    pub fn parse(s: &str) -> Result<Duration, String> {
        let bad = || format!("invalid duration {s:?} (expected e.g. 30s, 1m30s, 500ms)");
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut ms: u128 = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let mult: u128 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 7 * 86_400_000,
                "y" => 365 * 86_400_000,
                _ => return Err(bad()),
            };
            ms = ms
                .checked_add(n.checked_mul(mult).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            rest = &rest[unit_len..];
        }
        u64::try_from(ms)
            .map(Duration::from_millis)
            .map_err(|_| bad())
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PromDuration::parse(&s)
            .map(PromDuration)
            .map_err(de::Error::custom)
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

/// A size in bytes: a plain integer or with a unit (`512MiB`, `1GiB`, `100MB`, `64KiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let n: u64 = t[..split]
            .parse()
            .map_err(|_| format!("invalid size {s:?} (expected e.g. 512MiB)"))?;
        let mult: u64 = match t[split..].trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            u => {
                return Err(format!(
                    "invalid size unit {u:?} in {s:?} (B, KB, MB, GB, KiB, MiB, GiB)"
                ));
            }
        };
        n.checked_mul(mult)
            .ok_or_else(|| format!("size {s:?} too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map(ByteSize).map_err(de::Error::custom),
        }
    }
}

impl RemoteWriteConfig {
    /// The endpoint's name: `name` if set, else `host:port` of the URL.
    pub fn endpoint_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match self.url.parse::<hyper::Uri>() {
            Ok(u) => format!(
                "{}{}",
                u.host().unwrap_or("unknown"),
                u.port_u16().map(|p| format!(":{p}")).unwrap_or_default()
            ),
            Err(_) => self.url.clone(),
        }
    }

    /// Checks what serde cannot: URL, files that must be readable, value ranges. Errors are
    /// `(key below remote_write[i], message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        match self.url.parse::<hyper::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            Ok(_) => {
                return err(
                    "url",
                    format!(
                        "{:?}: need an http:// or https:// URL with a host",
                        self.url
                    ),
                );
            }
            Err(e) => return err("url", format!("{:?}: {e}", self.url)),
        }
        if let Some(p) = &self.proxy_url {
            match p.parse::<hyper::Uri>() {
                Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => {}
                _ => {
                    return err(
                        "proxy_url",
                        format!("{p:?}: need an http:// proxy URL with a host"),
                    );
                }
            }
        }
        if self.remote_timeout.0.is_zero() {
            return err("remote_timeout", "must be greater than 0".into());
        }
        let readable = |k: &str, p: &Path| match std::fs::read(p) {
            Ok(_) => Ok(()),
            Err(e) => Err((k.to_string(), format!("{}: {e}", p.display()))),
        };
        if let Some(b) = &self.basic_auth {
            if b.password.is_some() && b.password_file.is_some() {
                return err(
                    "basic_auth",
                    "at most one of password and password_file".into(),
                );
            }
            if let Some(p) = &b.password_file {
                readable("basic_auth.password_file", p)?;
            }
        }
        if let Some(a) = &self.authorization {
            if self.basic_auth.is_some() {
                return err(
                    "authorization",
                    "at most one of basic_auth and authorization".into(),
                );
            }
            if a.credentials.is_some() && a.credentials_file.is_some() {
                return err(
                    "authorization",
                    "at most one of credentials and credentials_file".into(),
                );
            }
            if let Some(p) = &a.credentials_file {
                readable("authorization.credentials_file", p)?;
            }
            if a.kind.eq_ignore_ascii_case("basic") {
                return err("authorization.type", "use basic_auth for Basic".into());
            }
        }
        for (k, v) in &self.headers {
            if PROTOCOL_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(k)) {
                return err(
                    &format!("headers.{k}"),
                    "is set by the remote-write protocol and cannot be overridden".into(),
                );
            }
            if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || hyper::header::HeaderValue::from_str(v).is_err()
            {
                return err(&format!("headers.{k}"), "not a valid HTTP header".into());
            }
        }
        let t = &self.tls_config;
        for (k, p) in [
            ("tls_config.ca_file", &t.ca_file),
            ("tls_config.cert_file", &t.cert_file),
            ("tls_config.key_file", &t.key_file),
        ] {
            if let Some(p) = p {
                readable(k, p)?;
            }
        }
        if t.cert_file.is_some() != t.key_file.is_some() {
            return err("tls_config", "cert_file and key_file go together".into());
        }
        let q = &self.queue_config;
        if q.max_samples_per_send == 0 || q.max_samples_per_send > MAX_SAMPLES_PER_SEND {
            return err(
                "queue_config.max_samples_per_send",
                format!(
                    "{} is out of range: 1 to {MAX_SAMPLES_PER_SEND}",
                    q.max_samples_per_send
                ),
            );
        }
        if q.min_shards > MAX_SHARDS {
            return err(
                "queue_config.min_shards",
                format!("{} is out of range: 1 to {MAX_SHARDS}", q.min_shards),
            );
        }
        if q.min_backoff.0 > q.max_backoff.0 {
            return err(
                "queue_config.min_backoff",
                "must not exceed max_backoff".into(),
            );
        }
        Ok(())
    }
}

/// Bounds of `queue_config`: what one request and one window of parallel requests may hold
/// (a window is `min_shards × max_samples_per_send` samples in memory at once).
pub const MAX_SAMPLES_PER_SEND: usize = 1_000_000;
pub const MAX_SHARDS: usize = 256;

/// Headers the protocol sets; `headers:` may not override them (Prometheus rejects them too).
pub const PROTOCOL_HEADERS: &[&str] = &[
    "Authorization",
    "Host",
    "Content-Encoding",
    "Content-Type",
    "Content-Length",
    "X-Prometheus-Remote-Write-Version",
    "User-Agent",
    "Connection",
    "Keep-Alive",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Www-Authenticate",
    "Transfer-Encoding",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(PromDuration::parse("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(PromDuration::parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(PromDuration::parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(PromDuration::parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(PromDuration::parse("0"), Ok(Duration::ZERO));
        for bad in ["", "15", "s", "1.5s", "10x", "-1s"] {
            assert!(PromDuration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("512MiB"), Ok(512 << 20));
        assert_eq!(ByteSize::parse("100MB"), Ok(100_000_000));
        assert_eq!(ByteSize::parse("4096"), Ok(4096));
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("MiB").is_err());
    }

    #[test]
    fn relabel_regex_is_anchored() {
        let r = AnchoredRegex::new("node_.*").unwrap();
        assert!(r.is_match("node_load1"));
        assert!(!r.is_match("xnode_load1"));
        let r = AnchoredRegex::new("a|b").unwrap();
        assert!(r.is_match("a") && !r.is_match("ab"));
    }
}
