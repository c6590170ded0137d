//! HTTP side of one endpoint: a hyper 1 client over rustls (ring), authentication, the
//! protocol headers, one request with a timeout, and the receiver's answer classified.
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request, StatusCode, Uri,
    body::{Bytes, Incoming},
    header::{self, HeaderMap, HeaderName, HeaderValue},
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{HttpConnector, proxy::Tunnel},
    },
    rt::TokioExecutor,
};
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};

use super::{codec::Protocol, config::RemoteWriteConfig};

/// At most this much of an error answer is read and logged.
const ERROR_BODY_LIMIT: usize = 1024;
/// A success answer's body is read up to this much (to keep the connection), else dropped.
const OK_BODY_LIMIT: usize = 64 << 10;
const USER_AGENT: &str = concat!("hostlens/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("tls_config: {0}")]
    Tls(String),
    #[error("{key}: {msg}")]
    Key { key: &'static str, msg: String },
}

/// How the receiver answered one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 2xx.
    Accepted(u16),
    /// 4xx other than 429 (and 415 when it concerns the protocol): never retried.
    Rejected { code: u16, message: String },
    /// 415 Unsupported Media Type: the receiver does not speak this protobuf message.
    Unsupported { message: String },
    /// 5xx, 429: retried, honouring Retry-After.
    RetryableStatus {
        code: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No HTTP answer: connection refused, DNS, TLS, timeout, closed mid-response.
    Transport { message: String },
}

impl Answer {
    /// The `code` label of `hostlens_remote_write_requests_total`.
    pub fn code_label(&self) -> String {
        match self {
            Answer::Accepted(c)
            | Answer::Rejected { code: c, .. }
            | Answer::RetryableStatus { code: c, .. } => c.to_string(),
            Answer::Unsupported { .. } => "415".into(),
            Answer::Transport { .. } => "error".into(),
        }
    }
}

/// A secret given inline or in a file; a file is re-read when its mtime or size changes.
#[derive(Debug)]
enum Secret {
    Inline(String),
    File {
        path: PathBuf,
        cache: Mutex<Option<(SystemTime, u64, String)>>,
    },
}

impl Secret {
    fn new(inline: Option<&String>, file: Option<&PathBuf>) -> Secret {
        match (inline, file) {
            (_, Some(p)) => Secret::File {
                path: p.clone(),
                cache: Mutex::new(None),
            },
            (Some(s), None) => Secret::Inline(s.clone()),
            (None, None) => Secret::Inline(String::new()),
        }
    }

    fn get(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File { path, cache } => {
                let meta =
                    std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let stamp = (
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                );
                let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((t, l, v)) = c.as_ref()
                    && (*t, *l) == stamp
                {
                    return Ok(v.clone());
                }
                let v = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .trim()
                    .to_string();
                *c = Some((stamp.0, stamp.1, v.clone()));
                Ok(v)
            }
        }
    }
}

#[derive(Debug)]
enum Auth {
    None,
    Basic { user: String, password: Secret },
    Token { kind: String, credentials: Secret },
}

type Body = Full<Bytes>;

enum HttpClient {
    Direct(Client<HttpsConnector<HttpConnector>, Body>),
    Proxied(Client<HttpsConnector<Tunnel<HttpConnector>>, Body>),
}

pub struct Sender {
    pub url: Uri,
    client: HttpClient,
    timeout: Duration,
    headers: HeaderMap,
    auth: Auth,
}

impl Sender {
    pub fn new(cfg: &RemoteWriteConfig) -> Result<Sender, SetupError> {
        let url: Uri = cfg.url.parse().map_err(|e| SetupError::Key {
            key: "url",
            msg: format!("{e}"),
        })?;
        let tls = tls_config(cfg)?;
        let timeout = cfg.remote_timeout.0;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let server_name = match &cfg.tls_config.server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| SetupError::Tls(format!("server_name {n:?}: {e}")))?,
            ),
            None => None,
        };
        let builder = || {
            let b = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http();
            match &server_name {
                Some(n) => b
                    .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                        n.clone(),
                    ))
                    .enable_http1(),
                None => b.enable_http1(),
            }
        };
        let client = match &cfg.proxy_url {
            None => HttpClient::Direct(
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(builder().wrap_connector(http)),
            ),
            Some(p) => {
                let proxy: Uri = p.parse().map_err(|e| SetupError::Key {
                    key: "proxy_url",
                    msg: format!("{e}"),
                })?;
                HttpClient::Proxied(
                    Client::builder(TokioExecutor::new())
                        .pool_idle_timeout(Duration::from_secs(30))
                        .build(builder().wrap_connector(Tunnel::new(proxy, http))),
                )
            }
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| SetupError::Key {
                key: "headers",
                msg: format!("{k}: {e}"),
            })?;
            let value = HeaderValue::from_str(v).map_err(|e| SetupError::Key {
                key: "headers",
                msg: format!("{k}: {e}"),
            })?;
            headers.insert(name, value);
        }
        let auth = if let Some(b) = &cfg.basic_auth {
            Auth::Basic {
                user: b.username.clone(),
                password: Secret::new(b.password.as_ref(), b.password_file.as_ref()),
            }
        } else if let Some(a) = &cfg.authorization {
            Auth::Token {
                kind: a.kind.clone(),
                credentials: Secret::new(a.credentials.as_ref(), a.credentials_file.as_ref()),
            }
        } else {
            Auth::None
        };
        Ok(Sender {
            url,
            client,
            timeout,
            headers,
            auth,
        })
    }

    fn request(&self, body: Bytes, proto: Protocol) -> Result<Request<Body>, String> {
        let mut req = Request::post(self.url.clone())
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let h = req.headers_mut();
        // Extra headers first: the protocol headers below replace any of the same name.
        for (k, v) in &self.headers {
            h.insert(k.clone(), v.clone());
        }
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(proto.content_type()),
        );
        h.insert(
            HeaderName::from_static("x-prometheus-remote-write-version"),
            HeaderValue::from_static(proto.version_header()),
        );
        h.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        match &self.auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                let pw = password.get()?;
                let v = format!("Basic {}", base64(format!("{user}:{pw}").as_bytes()));
                h.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&v).map_err(|e| e.to_string())?,
                );
            }
            Auth::Token { kind, credentials } => {
                let c = credentials.get()?;
                let v = HeaderValue::from_str(&format!("{kind} {c}"))
                    .map_err(|_| "credentials are not a valid header value".to_string())?;
                h.insert(header::AUTHORIZATION, v);
            }
        }
        Ok(req)
    }

    /// Sends one compressed body; the whole exchange (connect, TLS, answer, error body) is
    /// bounded by `remote_timeout`.
    pub async fn send(&self, body: Bytes, proto: Protocol) -> Answer {
        let req = match self.request(body, proto) {
            Ok(r) => r,
            Err(message) => return Answer::Transport { message },
        };
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(a) => a,
            Err(_) => Answer::Transport {
                message: format!("no answer within remote_timeout ({:?})", self.timeout),
            },
        }
    }

    async fn exchange(&self, req: Request<Body>) -> Answer {
        let res = match &self.client {
            HttpClient::Direct(c) => c.request(req).await,
            HttpClient::Proxied(c) => c.request(req).await,
        };
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                return Answer::Transport {
                    message: error_chain(&e),
                };
            }
        };
        let status = res.status();
        let retry_after = res
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let limit = if status.is_success() {
            OK_BODY_LIMIT
        } else {
            ERROR_BODY_LIMIT
        };
        let body = read_bounded(res.into_body(), limit).await;
        let code = status.as_u16();
        if status.is_success() {
            return Answer::Accepted(code);
        }
        let message = match body {
            Ok(b) => printable(&b),
            Err(e) => format!("(error body unreadable: {e})"),
        };
        match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Answer::Unsupported { message },
            StatusCode::TOO_MANY_REQUESTS => Answer::RetryableStatus {
                code,
                message,
                retry_after,
            },
            s if s.is_server_error() => Answer::RetryableStatus {
                code,
                message,
                retry_after,
            },
            _ => Answer::Rejected { code, message },
        }
    }
}

/// Reads at most `limit` bytes of a body; the rest is left unread (the connection is then
/// dropped rather than drained).
async fn read_bounded(mut body: Incoming, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while out.len() < limit {
        match body.frame().await {
            None => break,
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    let room = limit - out.len();
                    out.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
            Some(Err(e)) => return Err(error_chain(&e)),
        }
    }
    Ok(out)
}

/// A receiver's message as one printable line.
fn printable(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string();
    if b.len() >= ERROR_BODY_LIMIT {
        out.push_str(" …(truncated)");
    }
    if out.is_empty() {
        out = "(empty body)".into();
    }
    out
}

/// `Retry-After`: delay in seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// System CA bundle used when no `ca_file` is given (Debian's ca-certificates path).
const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Loads the TLS files of an endpoint, for config validation.
pub fn check_tls(cfg: &RemoteWriteConfig) -> Result<(), String> {
    tls_config(cfg).map(|_| ()).map_err(|e| match e {
        SetupError::Tls(m) => m,
        e => e.to_string(),
    })
}

fn tls_config(cfg: &RemoteWriteConfig) -> Result<ClientConfig, SetupError> {
    let t = &cfg.tls_config;
    let tls = |m: String| SetupError::Tls(m);
    let mut roots = rustls::RootCertStore::empty();
    let ca_path = t
        .ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CA));
    match CertificateDer::pem_file_iter(&ca_path) {
        Ok(certs) => {
            for c in certs {
                let c = c.map_err(|e| tls(format!("ca_file {}: {e}", ca_path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| tls(format!("ca_file {}: {e}", ca_path.display())))?;
            }
        }
        Err(e) if t.ca_file.is_some() => {
            return Err(tls(format!("ca_file {}: {e}", ca_path.display())));
        }
        Err(_) => {}
    }
    if t.ca_file.is_some() && roots.is_empty() {
        return Err(tls(format!(
            "ca_file {}: no certificate in it",
            ca_path.display()
        )));
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?;
    let builder = if t.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        builder.with_root_certificates(roots)
    };
    let config = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| tls(format!("cert_file {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls(format!("key_file {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// `insecure_skip_verify`: any certificate is accepted, handshake signatures still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn retry_after_seconds_and_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn token_file_is_reread_when_it_changes() {
        let p = std::env::temp_dir().join(format!("hostlens-token-{}", std::process::id()));
        std::fs::write(&p, "one\n").unwrap();
        let s = Secret::new(None, Some(&p));
        assert_eq!(s.get().unwrap(), "one");
        std::fs::write(&p, "second\n").unwrap();
        assert_eq!(s.get().unwrap(), "second");
        std::fs::remove_file(&p).unwrap();
        assert!(s.get().unwrap_err().contains(&p.display().to_string()));
    }

    #[test]
    fn printable_bounds_and_flattens() {
        assert_eq!(printable(b"bad\nsample\r\n"), "bad sample");
        assert_eq!(printable(b""), "(empty body)");
        assert!(printable(&[b'x'; ERROR_BODY_LIMIT]).ends_with("(truncated)"));
        assert_eq!(printable(&[0xff, b'a']), "\u{fffd}a");
    }
}
