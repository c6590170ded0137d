//! `--web.config.file`: TLS and basic auth for the HTTP endpoints, in the format of
//! node_exporter's exporter-toolkit (`tls_server_config`, `basic_auth_users`).
//!
//! Supported keys:
//! - `tls_server_config.cert_file` / `key_file` (PEM; relative paths are resolved against the
//!   web config file's directory, as exporter-toolkit does);
//! - `tls_server_config.min_version` / `max_version`: `TLS12` (default minimum) or `TLS13`
//!   (rustls implements neither TLS 1.0 nor 1.1, so those are rejected with the key named);
//! - `tls_server_config.client_auth_type`: `NoClientCert`, `VerifyClientCertIfGiven` or
//!   `RequireAndVerifyClientCert`, with `client_ca_file` for the latter two (mTLS);
//! - `basic_auth_users`: user name to bcrypt hash.
//!
//! Unknown keys (e.g. `cipher_suites`, which rustls chooses safely on its own) are rejected,
//! never ignored. `/healthz` and `/readyz` stay open without credentials so that kubelet and
//! systemd can probe them; they carry no data.
use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::Deserialize;
use tokio_rustls::rustls::{
    self, RootCertStore, ServerConfig, crypto::CryptoProvider, server::WebPkiClientVerifier,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: ClientAuth,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
enum ClientAuth {
    #[default]
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("web config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `key` is the dotted path of the offending key, e.g. `tls_server_config.min_version`.
    #[error("web config file {path}: key `{key}`: {msg}")]
    Invalid {
        path: PathBuf,
        key: String,
        msg: String,
    },
}

/// The security settings in force; swapped as a whole on reload.
#[derive(Default)]
pub struct WebSecurity {
    pub tls: Option<Arc<ServerConfig>>,
    users: BTreeMap<String, String>,
    /// `Authorization` header values already verified against the current users: bcrypt is
    /// deliberately slow, so a scraper's repeated credentials are checked once. Bounded.
    verified: Mutex<HashSet<String>>,
    /// Values already refused, kept apart so that a flood of wrong ones never pushes a
    /// scraper's good credentials out of `verified`. Bounded.
    refused: Mutex<HashSet<String>>,
}

const MAX_VERIFIED: usize = 256;

impl std::fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSecurity")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl WebSecurity {
    pub fn auth_required(&self) -> bool {
        !self.users.is_empty()
    }

    /// The answer for `header` when it needs no bcrypt: no users, no header, or a value
    /// checked before. None: [`WebSecurity::authorized`] must run bcrypt.
    pub fn cached(&self, header: Option<&str>) -> Option<bool> {
        if self.users.is_empty() {
            return Some(true);
        }
        let Some(header) = header else {
            return Some(false);
        };
        if parse_basic(header).is_none() {
            return Some(false);
        }
        let seen = |set: &Mutex<HashSet<String>>| set.lock().is_ok_and(|v| v.contains(header));
        if seen(&self.verified) {
            Some(true)
        } else if seen(&self.refused) {
            Some(false)
        } else {
            None
        }
    }

    /// Whether the `Authorization` header value grants access. Slow (bcrypt) on first sight of
    /// a value: call it off the async reactor.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        if let Some(ok) = self.cached(header) {
            return ok;
        }
        let Some(header) = header else { return false };
        let Some((user, pass)) = parse_basic(header) else {
            return false;
        };
        let ok = match self.users.get(&user) {
            Some(hash) => bcrypt::verify(&pass, hash).unwrap_or(false),
            None => {
                // An unknown user costs as much time as a wrong password.
                if let Some(any) = self.users.values().next() {
                    let _ = bcrypt::verify(&pass, any);
                }
                false
            }
        };
        let set = if ok { &self.verified } else { &self.refused };
        if let Ok(mut v) = set.lock() {
            if v.len() >= MAX_VERIFIED {
                v.clear();
            }
            v.insert(header.to_string());
        }
        ok
    }

    /// A short description for the log.
    pub fn summary(&self) -> String {
        format!(
            "tls={} basic_auth_users={}",
            if self.tls.is_some() { "on" } else { "off" },
            self.users.len()
        )
    }
}

fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Loads and checks a web config file: every file it names is read and every hash parsed
/// now, so a bad file fails at start (exit 64) or is rejected at reload.
pub fn load(path: &Path) -> Result<WebSecurity, WebConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<WebSecurity, WebConfigError> {
    let invalid = |key: &str, msg: String| WebConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        msg,
    };
    let file: File = if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        File::default()
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            invalid(
                if key == "." { "(top level)" } else { &key },
                e.into_inner().to_string(),
            )
        })?
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut users = BTreeMap::new();
    for (user, hash) in file.basic_auth_users.unwrap_or_default() {
        let key = format!("basic_auth_users.{user}");
        if user.contains(':') {
            return Err(invalid(&key, "a user name may not contain ':'".into()));
        }
        // Parsing the hash now turns a typo into a start-up error instead of a locked door.
        bcrypt::verify("", &hash).map_err(|e| invalid(&key, format!("not a bcrypt hash: {e}")))?;
        users.insert(user, hash);
    }
    let tls = match file.tls_server_config {
        None => None,
        Some(t) => Some(Arc::new(tls_config(&t, base, &invalid)?)),
    };
    Ok(WebSecurity {
        tls,
        users,
        verified: Mutex::new(HashSet::new()),
        refused: Mutex::new(HashSet::new()),
    })
}

fn version(
    v: Option<&str>,
    key: &str,
    default: &'static rustls::SupportedProtocolVersion,
    invalid: &dyn Fn(&str, String) -> WebConfigError,
) -> Result<&'static rustls::SupportedProtocolVersion, WebConfigError> {
    match v {
        None => Ok(default),
        Some("TLS12") => Ok(&rustls::version::TLS12),
        Some("TLS13") => Ok(&rustls::version::TLS13),
        Some(v @ ("TLS10" | "TLS11")) => Err(invalid(
            key,
            format!("{v} is not supported (obsolete; the minimum is TLS12)"),
        )),
        Some(v) => Err(invalid(
            key,
            format!("unknown TLS version {v:?}, expected TLS12 or TLS13"),
        )),
    }
}

fn tls_config(
    t: &TlsFile,
    base: &Path,
    invalid: &dyn Fn(&str, String) -> WebConfigError,
) -> Result<ServerConfig, WebConfigError> {
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let read = |key: &str, p: &Option<PathBuf>| -> Result<(PathBuf, Vec<u8>), WebConfigError> {
        let p = p
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| invalid(key, "missing (required with tls_server_config)".into()))?;
        let full = resolve(p);
        std::fs::read(&full)
            .map(|b| (full.clone(), b))
            .map_err(|e| invalid(key, format!("{}: {e}", full.display())))
    };
    let (cert_path, cert_pem) = read("tls_server_config.cert_file", &t.cert_file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            invalid(
                "tls_server_config.cert_file",
                format!("{}: {e}", cert_path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid(
            "tls_server_config.cert_file",
            format!("{}: no PEM certificate in it", cert_path.display()),
        ));
    }
    let (key_path, key_pem) = read("tls_server_config.key_file", &t.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        invalid(
            "tls_server_config.key_file",
            format!("{}: {e}", key_path.display()),
        )
    })?;

    let min = version(
        t.min_version.as_deref(),
        "tls_server_config.min_version",
        &rustls::version::TLS12,
        invalid,
    )?;
    let max = version(
        t.max_version.as_deref(),
        "tls_server_config.max_version",
        &rustls::version::TLS13,
        invalid,
    )?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                u16::from(v.version) >= u16::from(min.version)
                    && u16::from(v.version) <= u16::from(max.version)
            })
            .collect();
    if versions.is_empty() {
        return Err(invalid(
            "tls_server_config.max_version",
            "is below min_version".into(),
        ));
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| invalid("tls_server_config", e.to_string()))?;
    let builder = match t.client_auth_type {
        ClientAuth::NoClientCert => {
            if t.client_ca_file.is_some() {
                return Err(invalid(
                    "tls_server_config.client_ca_file",
                    "set, but client_auth_type is NoClientCert".into(),
                ));
            }
            builder.with_no_client_auth()
        }
        mode => {
            let verifier = client_verifier(t, mode, &provider, &resolve, invalid)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
        invalid(
            "tls_server_config.key_file",
            format!(
                "{} does not go with {}: {e}",
                key_path.display(),
                cert_path.display()
            ),
        )
    })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn client_verifier(
    t: &TlsFile,
    mode: ClientAuth,
    provider: &Arc<CryptoProvider>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    invalid: &dyn Fn(&str, String) -> WebConfigError,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, WebConfigError> {
    const KEY: &str = "tls_server_config.client_ca_file";
    let ca = t
        .client_ca_file
        .as_ref()
        .ok_or_else(|| invalid(KEY, format!("required with client_auth_type {mode:?}")))?;
    let full = resolve(ca);
    let pem = std::fs::read(&full).map_err(|e| invalid(KEY, format!("{}: {e}", full.display())))?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| invalid(KEY, format!("{}: {e}", full.display())))?;
        roots
            .add(c)
            .map_err(|e| invalid(KEY, format!("{}: {e}", full.display())))?;
    }
    if roots.is_empty() {
        return Err(invalid(
            KEY,
            format!("{}: no PEM certificate in it", full.display()),
        ));
    }
    let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let b = if mode == ClientAuth::VerifyClientCertIfGiven {
        b.allow_unauthenticated()
    } else {
        b
    };
    b.build().map_err(|e| invalid(KEY, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<WebSecurity, WebConfigError> {
        parse(text, Path::new("/nonexistent/web.yml"))
    }

    fn basic(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    #[test]
    fn empty_file_means_no_tls_no_auth() {
        let w = parse_str("# nothing\n").unwrap();
        assert!(w.tls.is_none() && !w.auth_required());
        assert!(w.authorized(None));
    }

    #[test]
    fn basic_auth_checks_bcrypt() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let w = parse_str(&format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        assert!(w.auth_required());
        assert!(!w.authorized(None));
        assert!(w.authorized(Some(&basic("alice", "s3cret"))));
        // Second time from the cache, same answer; a wrong password is remembered too.
        assert_eq!(w.cached(Some(&basic("alice", "s3cret"))), Some(true));
        assert!(w.authorized(Some(&basic("alice", "s3cret"))));
        assert_eq!(w.cached(Some(&basic("alice", "wrong"))), None);
        assert!(!w.authorized(Some(&basic("alice", "wrong"))));
        assert_eq!(w.cached(Some(&basic("alice", "wrong"))), Some(false));
        assert_eq!(w.cached(Some("Basic !!!")), Some(false));
        assert_eq!(w.cached(None), Some(false));
        assert!(!w.authorized(Some(&basic("bob", "s3cret"))));
        assert!(!w.authorized(Some("Bearer abc")));
        assert!(!w.authorized(Some("Basic !!!")));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "basic_auth_users:\n  alice: plain\n",
                "basic_auth_users.alice",
            ),
            ("tls_server_config:\n  cert_fil: x\n", "tls_server_config"),
            (
                "tls_server_config:\n  key_file: k\n",
                "tls_server_config.cert_file",
            ),
            (
                "tls_server_config:\n  cert_file: /nonexistent/c.pem\n  key_file: k\n",
                "tls_server_config.cert_file",
            ),
            (
                "tls_server_config:\n  client_auth_type: Sometimes\n",
                "client_auth_type",
            ),
            ("basic_auth_user:\n  a: b\n", "basic_auth_user"),
        ];
        for (text, key) in cases {
            let m = parse_str(text).unwrap_err().to_string();
            assert!(
                m.contains(key) && m.contains("/nonexistent/web.yml"),
                "{text:?}: {m}"
            );
        }
    }

    #[test]
    fn versions() {
        let inv = |k: &str, m: String| WebConfigError::Invalid {
            path: "w".into(),
            key: k.into(),
            msg: m,
        };
        let d = &rustls::version::TLS12;
        assert_eq!(version(None, "k", d, &inv).unwrap().version, d.version);
        assert!(version(Some("TLS13"), "k", d, &inv).is_ok());
        let m = version(Some("TLS11"), "tls_server_config.min_version", d, &inv)
            .unwrap_err()
            .to_string();
        assert!(m.contains("min_version") && m.contains("TLS11"), "{m}");
        assert!(version(Some("SSL3"), "k", d, &inv).is_err());
    }
}
