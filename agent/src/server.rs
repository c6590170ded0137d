//! The HTTP endpoints: `/metrics` (configurable path), `/healthz`, `/readyz` and `/`.
use std::{
    convert::Infallible,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
    service::service_fn,
};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{exposition::Format, status::Status, webconfig::WebSecurity};

/// Where a listen address may point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenHost {
    /// `:port`: every interface (IPv6 dual-stack, else IPv4).
    Any,
    Ip(IpAddr),
    Name(String),
}

/// Parses `host:port`, `:port` or `[v6]:port` (node_exporter's `--web.listen-address`).
pub fn parse_listen_address(s: &str) -> Result<(ListenHost, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port or :port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: port {port:?} is not a number from 0 to 65535"))?;
    let host = if host.is_empty() {
        ListenHost::Any
    } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        ListenHost::Ip(IpAddr::V6(
            v6.parse()
                .map_err(|_| format!("{s:?}: {v6:?} is not an IPv6 address"))?,
        ))
    } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
        ListenHost::Ip(IpAddr::V4(ip))
    } else if host.contains(':') {
        return Err(format!(
            "{s:?}: write IPv6 addresses in brackets, [::1]:9100"
        ));
    } else if host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        ListenHost::Name(host.to_string())
    } else {
        return Err(format!("{s:?}: {host:?} is not a host name or address"));
    };
    Ok((host, port))
}

/// Binds the listen address; the error names the address and the cause (e.g. in use).
pub async fn bind(address: &str) -> Result<TcpListener, String> {
    let (host, port) = parse_listen_address(address)?;
    let candidates: Vec<SocketAddr> = match host {
        ListenHost::Any => vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ],
        ListenHost::Ip(ip) => vec![SocketAddr::new(ip, port)],
        ListenHost::Name(name) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|e| format!("listen address {address}: resolving {name}: {e}"))?
            .collect(),
    };
    let mut last = None;
    for addr in candidates {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            // Address in use is final; only "no IPv6 here" falls through to IPv4.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(format!(
                    "listen address {address}: port {port} is already in use ({addr})"
                ));
            }
            Err(e) => last = Some(format!("listen address {address}: binding {addr}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| format!("listen address {address}: no address to bind")))
}

/// What the handlers share. The registry appears once initialisation is done; until then
/// `/metrics` answers 503 and `/readyz` is not ready.
pub struct AppState {
    pub telemetry_path: String,
    pub registry: OnceLock<Registry>,
    pub status: RwLock<Status>,
    pub ready: AtomicBool,
    /// `web.max_requests` permits; a scrape holds one until its collection has finished,
    /// also when its client went away meanwhile.
    scrapes: Option<Arc<Semaphore>>,
    max_requests: usize,
    /// TLS and basic auth in force (`--web.config.file`); replaced on SIGHUP.
    web: RwLock<Arc<WebSecurity>>,
}

impl AppState {
    pub fn new(telemetry_path: String, max_requests: usize) -> Self {
        Self {
            telemetry_path,
            registry: OnceLock::new(),
            status: RwLock::new(Status::default()),
            ready: AtomicBool::new(false),
            scrapes: (max_requests > 0).then(|| Arc::new(Semaphore::new(max_requests))),
            max_requests,
            web: RwLock::new(Arc::new(WebSecurity::default())),
        }
    }

    pub fn set_web(&self, web: WebSecurity) {
        match self.web.write() {
            Ok(mut g) => *g = Arc::new(web),
            Err(p) => *p.into_inner() = Arc::new(web),
        }
    }

    pub fn web(&self) -> Arc<WebSecurity> {
        match self.web.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    pub fn set_ready(&self, registry: Registry, status: Status) {
        if let Ok(mut s) = self.status.write() {
            *s = status;
        }
        let _ = self.registry.set(registry);
        self.ready.store(true, Ordering::Release);
    }
}

type Resp = Response<Full<Bytes>>;

fn text(code: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let path = req.uri().path();
    // Probes stay open (they carry no data) so that kubelet and systemd can use them.
    if path != "/healthz" && path != "/readyz" && !authorized(&state, &req).await {
        let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hostlens\""),
        );
        return Ok(r);
    }
    let resp = if path == state.telemetry_path {
        metrics(&state, &req).await
    } else {
        match path {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if state.ready.load(Ordering::Acquire) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                }
            }
            "/" => {
                let html = state
                    .status
                    .read()
                    .map(|s| s.html(&state.telemetry_path, state.ready.load(Ordering::Acquire)))
                    .unwrap_or_default();
                let mut r = text(StatusCode::OK, html);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    };
    Ok(resp)
}

async fn authorized(state: &AppState, req: &Request<Incoming>) -> bool {
    let web = state.web();
    if !web.auth_required() {
        return true;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(ok) = web.cached(header.as_deref()) {
        return ok;
    }
    // bcrypt is slow on purpose: off the reactor, and one at a time, so that clients sending
    // new credentials (a password-guessing flood) get one core at most; credentials seen
    // before are answered above without waiting here.
    static BCRYPT: Semaphore = Semaphore::const_new(1);
    let Ok(_turn) = BCRYPT.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || web.authorized(header.as_deref()))
        .await
        .unwrap_or(false)
}

fn accepts_gzip(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q0 = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !q0
        })
}

async fn metrics(state: &Arc<AppState>, req: &Request<Incoming>) -> Resp {
    if state.registry.get().is_none() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "starting\n");
    }
    // As node_exporter (promhttp's MaxRequestsInFlight): a scrape beyond the limit is answered
    // 503 at once rather than queued behind collections that may be stuck.
    let permit = match &state.scrapes {
        Some(s) => match Arc::clone(s).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "Limit of concurrent requests reached ({}), try again later.\n",
                        state.max_requests
                    ),
                );
            }
            Err(tokio::sync::TryAcquireError::Closed) => {
                return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
            }
        },
        None => None,
    };
    let format = Format::negotiate(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let gzip = accepts_gzip(req);
    let st = Arc::clone(state);
    // Collectors read procfs/sysfs and eBPF maps synchronously: keep that off the reactor.
    let body = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        // Held by the collection itself: a client that disconnects does not free its slot
        // while the collectors still run.
        let _permit = permit;
        let registry = st.registry.get().ok_or("not initialised")?;
        let body = crate::exposition::encode(registry, format).map_err(|e| e.to_string())?;
        if !gzip {
            return Ok(body);
        }
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        gz.write_all(&body).map_err(|e| e.to_string())?;
        gz.finish().map_err(|e| e.to_string())
    })
    .await;
    match body {
        Ok(Ok(body)) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            if gzip {
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r.headers_mut().insert(
                header::VARY,
                HeaderValue::from_static("Accept, Accept-Encoding"),
            );
            r
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "encoding metrics failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics: {e}\n"),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "scrape task failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n")
        }
    }
}

/// Completes the TLS handshake (bounded in time). Plain HTTP sent to the TLS port gets a
/// 400 in clear text, as Go's servers answer, and the connection is closed.
/// Connections served at once (node_exporter has no such bound; Prometheus needs one per
/// scraper).
const MAX_CONNECTIONS: usize = 512;

/// How long a response may wait for its client to take more bytes.
const WRITE_STALL: Duration = Duration::from_secs(60);

/// A connection whose writes fail once the peer has taken nothing for [`WRITE_STALL`]: a client
/// that asks and never reads would otherwise hold its response (and a connection slot)
/// forever. Reads are untouched (hyper's header timeout covers a silent client).
struct StallGuard<S> {
    inner: S,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S) -> Self {
        Self::with_limit(inner, WRITE_STALL)
    }

    fn with_limit(inner: S, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> StallGuard<S> {
    /// Runs one write-side poll: progress clears the stall timer, Pending starts it (or
    /// reports the timeout once it has run out).
    fn guard<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: impl FnOnce(
            std::pin::Pin<&mut S>,
            &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::{future::Future as _, task::Poll};
        match poll(std::pin::Pin::new(&mut self.inner), cx) {
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("client took no bytes of the response for {limit:?}"),
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.guard(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.guard(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.guard(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.guard(cx, |s, cx| s.poll_shutdown(cx))
    }
}

async fn tls_handshake(
    stream: tokio::net::TcpStream,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::AsyncWriteExt as _;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(Duration::from_secs(10), stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    // 0x16 starts a TLS handshake record; anything else is not TLS.
    if first[0] != 0x16 {
        let mut stream = stream;
        let _ = stream
            .write_all(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
            .await;
        let _ = stream.shutdown().await;
        return None;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting and waits up to `grace` for
/// in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refused = 0u64;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new());
    // A client that sends nothing does not hold a connection slot forever.
    builder.header_read_timeout(Duration::from_secs(30));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let (stream, _peer) = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Beyond MAX_CONNECTIONS open at once, a new connection is closed at once
                // (logged at 1, 2, 4, 8, ... refusals): file descriptors and memory stay
                // bounded, and the collectors keep the descriptors they need.
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(refused, limit = MAX_CONNECTIONS, "too many open connections: new ones are closed");
                    }
                    drop(stream);
                    continue;
                };
                let st = Arc::clone(&state);
                let svc = service_fn(move |req| handle(Arc::clone(&st), req));
                let Some(tls) = state.web().tls.clone() else {
                    let conn = builder.serve_connection(TokioIo::new(StallGuard::new(stream)), svc);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _slot = slot;
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                    continue;
                };
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = slot;
                    let Some(stream) = tls_handshake(stream, tls).await else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(StallGuard::new(stream)), svc);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("in-flight requests finished"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "in-flight requests still running at shutdown"),
    }
}

#[cfg(test)]
mod stall_tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::StallGuard;

    /// A peer that takes nothing: the write fails after the limit. A peer that keeps taking
    /// bytes, however slowly, is never cut off.
    #[tokio::test]
    async fn stalled_writes_fail_and_slow_readers_do_not() {
        let (a, _b) = tokio::io::duplex(16);
        let mut w = StallGuard::with_limit(a, Duration::from_millis(200));
        let t = Instant::now();
        let e = w.write_all(&[7u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );

        let (a, mut b) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 16];
            while got < 1024 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                got += b.read(&mut buf).await.unwrap();
            }
            got
        });
        // 64 reads of 16 bytes, 20 ms apart: 1.3 s in all, far past the 200 ms limit.
        let mut w = StallGuard::with_limit(a, Duration::from_millis(200));
        w.write_all(&[7u8; 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_address(":9100").unwrap(),
            (ListenHost::Any, 9100)
        );
        assert_eq!(
            parse_listen_address("127.0.0.1:80").unwrap(),
            (ListenHost::Ip("127.0.0.1".parse().unwrap()), 80)
        );
        assert_eq!(
            parse_listen_address("[::1]:9100").unwrap(),
            (ListenHost::Ip("::1".parse().unwrap()), 9100)
        );
        assert_eq!(
            parse_listen_address("localhost:9100").unwrap(),
            (ListenHost::Name("localhost".into()), 9100)
        );
        for bad in ["9100", ":99999", "::1:9100", "a b:1", "host:", "[zz]:1"] {
            assert!(parse_listen_address(bad).is_err(), "{bad}");
        }
    }
}
