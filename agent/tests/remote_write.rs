//! Remote write end to end, unprivileged: the real `hostlens` binary (fixture procfs, no eBPF)
//! pushing to
//! - real receivers started here on 127.0.0.1: Prometheus 2.42 (`--web.enable-remote-write-receiver`)
//!   and VictoriaMetrics 1.79, queried through their HTTP APIs;
//! - a fault-injecting receiver written below (std threads, snappy + protobuf decoding), which
//!   answers 500/503/429 with Retry-After, goes away (connection refused), hangs, answers 400
//!   for one batch, 415 to Remote-Write 2.0, garbage, huge bodies, closes mid-response.
//!
//! Timing parameters are short (interval 1 s, remote_timeout 1 s, outages of 3 s) so the
//! whole file runs in about a minute; every assertion is about content and counts.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use common::{Agent, http_get, repo_root};
use hostlens::remote_write::{codec, proto};
use prost::Message as _;

type Labels = BTreeMap<String, String>;

const EXTERNAL: &[(&str, &str)] = &[("instance", "test-host"), ("job", "hostlens")];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A scratch directory removed on drop, also when the test fails.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!(
        "hostlens-rw-{name}-{}-{}",
        std::process::id(),
        now_ms()
    ));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes an agent config with one endpoint; `endpoint_extra` is indented YAML added to the
/// endpoint, `options_extra` to `remote_write_options`.
fn write_config(dir: &Path, url: &str, endpoint_extra: &str, options_extra: &str) -> PathBuf {
    let text = format!(
        "remote_write:\n  - url: {url}\n    name: test\n    remote_timeout: 1s\n    queue_config:\n      max_samples_per_send: 50\n      batch_send_deadline: 100ms\n      min_backoff: 50ms\n      max_backoff: 500ms\n{endpoint_extra}remote_write_options:\n  interval: 1s\n  queue_dir: {}\n  external_labels: {{instance: test-host, job: hostlens}}\n{options_extra}",
        dir.join("queue").display()
    );
    let p = dir.join("hostlens.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn start_agent(config: &Path) -> Agent {
    let procfs = repo_root().join("tests/fixtures/basic/proc");
    // Every root at the fixture, so that the series are the fixture's and not this machine's.
    let p = procfs.to_str().unwrap();
    Agent::start(&[
        "--config.file",
        config.to_str().unwrap(),
        "--path.procfs",
        p,
        "--path.sysfs",
        p,
        "--path.rootfs",
        p,
        "--probe.disable-defaults",
    ])
}

/// Parses `name{a="x",b="y"}` (text 0.0.4 escapes) into labels with `__name__`.
fn parse_series(s: &str) -> Labels {
    let mut out = Labels::new();
    let (name, rest) = match s.find('{') {
        Some(i) => (&s[..i], &s[i + 1..s.len() - 1]),
        None => (s, ""),
    };
    out.insert("__name__".into(), name.into());
    let mut chars = rest.chars().peekable();
    loop {
        let mut k = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            k.push(c);
        }
        if k.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "{s}");
        let mut v = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => v.push('\n'),
                    Some(o) => v.push(o),
                    None => {}
                },
                '"' => break,
                c => v.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').to_string(), v);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

fn with_external(mut l: Labels) -> Labels {
    // An empty label value is the same as no label (Prometheus' data model); the sender
    // leaves such labels out (e.g. node_network_info{duplex=""} from netclass).
    l.retain(|_, v| !v.is_empty());
    for (k, v) in EXTERNAL {
        l.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    l
}

fn to_labels(ls: &[proto::Label]) -> Labels {
    ls.iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

/// The agent's `/metrics` as series (labels incl. `__name__`) -> value.
fn scrape(agent: &Agent) -> BTreeMap<Labels, f64> {
    agent
        .scrape()
        .samples
        .iter()
        .map(|(k, v)| (parse_series(k), *v))
        .collect()
}

fn metric(agent: &Agent, series: &str) -> f64 {
    agent.scrape().get(series).unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// The fault-injecting receiver.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Listener closed and open connections cut: connection refused.
    Refuse,
    /// Requests are read and never answered.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Got {
    at: Instant,
    status: u16,
    v2: bool,
    headers: BTreeMap<String, String>,
    series: Vec<proto::TimeSeries>,
    meta: Vec<Option<(i32, String, String)>>,
    /// 2.0 created timestamps per series (empty for 1.0).
    created: Vec<i64>,
}

/// Decides the answer: (status, extra headers, body). Raw bytes instead of an HTTP answer
/// when status is 0.
type Policy = Box<dyn FnMut(usize, &Got) -> (u16, Vec<(String, String)>, Vec<u8>) + Send>;

struct Inner {
    port: u16,
    tls: Option<Arc<rustls::ServerConfig>>,
    mode: Mutex<Mode>,
    got: Mutex<Vec<Got>>,
    policy: Mutex<Policy>,
    stop: AtomicBool,
    /// Each answer is delayed this long (outside any lock), to see parallel requests.
    delay_ms: AtomicU64,
    active: AtomicU64,
    max_active: AtomicU64,
}

struct Receiver {
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn ok_policy() -> Policy {
    Box::new(|_, _| (204, vec![], vec![]))
}

impl Receiver {
    fn start(port: u16, mode: Mode, policy: Policy) -> Receiver {
        Self::start_tls(port, mode, policy, None)
    }

    fn start_tls(
        port: u16,
        mode: Mode,
        policy: Policy,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Receiver {
        let inner = Arc::new(Inner {
            port,
            tls,
            mode: Mutex::new(mode),
            got: Mutex::new(Vec::new()),
            policy: Mutex::new(policy),
            stop: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            active: AtomicU64::new(0),
            max_active: AtomicU64::new(0),
        });
        let i2 = Arc::clone(&inner);
        let thread = std::thread::spawn(move || accept_loop(i2));
        let r = Receiver {
            inner,
            thread: Some(thread),
        };
        if mode != Mode::Refuse {
            wait_until("receiver listening", Duration::from_secs(5), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.inner.port)
    }

    fn set_mode(&self, m: Mode) {
        *self.inner.mode.lock().unwrap() = m;
        if m == Mode::Refuse {
            wait_until("listener closed", Duration::from_secs(5), || {
                TcpStream::connect(("127.0.0.1", self.inner.port)).is_err()
            });
        } else {
            wait_until("listener open", Duration::from_secs(5), || {
                TcpStream::connect(("127.0.0.1", self.inner.port)).is_ok()
            });
        }
    }

    fn set_policy(&self, p: Policy) {
        *self.inner.policy.lock().unwrap() = p;
    }

    fn got(&self) -> Vec<Got> {
        self.inner.got.lock().unwrap().clone()
    }

    /// Accepted samples per series, in arrival order: (timestamp, value).
    fn accepted(&self) -> BTreeMap<Labels, Vec<(i64, f64)>> {
        let mut out: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        for g in self.got().iter().filter(|g| (200..300).contains(&g.status)) {
            for s in &g.series {
                let e = out.entry(to_labels(&s.labels)).or_default();
                e.extend(s.samples.iter().map(|x| (x.timestamp, x.value)));
            }
        }
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(inner: Arc<Inner>) {
    let mut listener: Option<TcpListener> = None;
    while !inner.stop.load(Ordering::SeqCst) {
        let mode = *inner.mode.lock().unwrap();
        if mode == Mode::Refuse {
            listener = None;
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        if listener.is_none() {
            match TcpListener::bind(("127.0.0.1", inner.port)) {
                Ok(l) => {
                    l.set_nonblocking(true).unwrap();
                    listener = Some(l);
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        match listener.as_ref().unwrap().accept() {
            Ok((s, _)) => {
                let i2 = Arc::clone(&inner);
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                match inner.tls.clone() {
                    None => {
                        std::thread::spawn(move || serve_conn(i2, s));
                    }
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg).unwrap();
                        std::thread::spawn(move || {
                            serve_conn(i2, rustls::StreamOwned::new(conn, s))
                        });
                    }
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Reads one request; None when the connection closed or the receiver stops.
fn read_request(inner: &Inner, s: &mut impl Read) -> Option<(BTreeMap<String, String>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if inner.stop.load(Ordering::SeqCst) || *inner.mode.lock().unwrap() == Mode::Refuse {
            return None;
        }
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut headers = BTreeMap::new();
    for l in head.split("\r\n").skip(1) {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        if inner.stop.load(Ordering::SeqCst) {
            return None;
        }
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    Some((headers, body))
}

fn serve_conn(inner: Arc<Inner>, mut s: impl Read + Write) {
    while let Some((headers, body)) = read_request(&inner, &mut s) {
        let mode = *inner.mode.lock().unwrap();
        match mode {
            Mode::Refuse => return,
            Mode::Hang => {
                while *inner.mode.lock().unwrap() == Mode::Hang
                    && !inner.stop.load(Ordering::SeqCst)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Mode::Normal => {}
        }
        let now_active = inner.active.fetch_add(1, Ordering::SeqCst) + 1;
        inner.max_active.fetch_max(now_active, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(inner.delay_ms.load(Ordering::SeqCst)));
        inner.active.fetch_sub(1, Ordering::SeqCst);
        let v2 = headers
            .get("content-type")
            .is_some_and(|c| c.contains("io.prometheus.write.v2.Request"));
        let (series, meta, created) = if v2 {
            let d = codec::decode_v2(&body).expect("a valid 2.0 body");
            (d.series, d.meta, d.created)
        } else {
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&body)
                .expect("snappy block format");
            let req = proto::WriteRequest::decode(raw.as_slice()).expect("a WriteRequest");
            let n = req.timeseries.len();
            (req.timeseries, vec![None; n], vec![])
        };
        let mut got = Got {
            at: Instant::now(),
            status: 0,
            v2,
            headers,
            series,
            meta,
            created,
        };
        let idx = inner.got.lock().unwrap().len();
        let (status, extra, rbody) = (inner.policy.lock().unwrap())(idx, &got);
        got.status = status;
        inner.got.lock().unwrap().push(got);
        if status == 0 {
            // Raw bytes: garbage or a cut answer, then close.
            let _ = s.write_all(&rbody);
            return;
        }
        let mut resp = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", rbody.len());
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        if s.write_all(resp.as_bytes()).is_err() || s.write_all(&rbody).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checks shared by the tests.

/// Per series: timestamps strictly increasing in arrival order (order kept, no duplicates).
fn assert_order(acc: &BTreeMap<Labels, Vec<(i64, f64)>>) {
    for (l, v) in acc {
        for w in v.windows(2) {
            assert!(
                w[0].0 < w[1].0,
                "series {l:?}: timestamps out of order or repeated: {v:?}"
            );
        }
    }
}

/// The endpoint's sample accounting in one scrape: (in, sent, dropped, queued), asserting that
/// every sample handed to the queue is sent, dropped or still queued.
fn flow(stats: &BTreeMap<Labels, f64>, endpoint: &str) -> (f64, f64, f64, f64) {
    let get = |s: String| {
        *stats
            .get(&parse_series(&s))
            .unwrap_or_else(|| panic!("{s} not exported"))
    };
    let outcome = |o: &str| {
        get(format!(
            "hostlens_remote_write_samples_total{{endpoint=\"{endpoint}\",outcome=\"{o}\"}}"
        ))
    };
    let input = get(format!(
        "hostlens_remote_write_samples_in_total{{endpoint=\"{endpoint}\"}}"
    ));
    let (sent, dropped) = (outcome("sent"), outcome("dropped"));
    let queued = get(format!(
        "hostlens_remote_write_queue_samples{{endpoint=\"{endpoint}\"}}"
    ));
    assert_eq!(
        input,
        sent + dropped + queued,
        "samples handed in ({input}) against sent {sent} + dropped {dropped} + queued {queued}"
    );
    assert!(input > 0.0, "no sample handed to endpoint {endpoint}");
    (input, sent, dropped, queued)
}

/// Gather timestamps of a series present in every gather (node_load1 from the fixture).
fn load1_times(acc: &BTreeMap<Labels, Vec<(i64, f64)>>) -> Vec<i64> {
    let key = with_external(parse_series("node_load1"));
    acc.get(&key)
        .map(|v| v.iter().map(|x| x.0).collect())
        .unwrap_or_default()
}

/// Consecutive gathers (interval 1 s) are never further apart than this: a larger gap means
/// gathers were lost.
const MAX_GAP_MS: i64 = 1900;

fn assert_no_gap(times: &[i64], what: &str) {
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] <= MAX_GAP_MS,
            "{what}: gap of {} ms between gathers in {times:?}",
            w[1] - w[0]
        );
    }
}

// ---------------------------------------------------------------------------------------
// 1. Real receivers.

/// A peer process; killed on drop, then its directory removed.
struct Peer {
    child: Child,
    _dir: TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get_json(port: u16, path: &str) -> serde_json::Value {
    let r = http_get(port, path, &[]).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.text()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn parse_value(v: &serde_json::Value) -> f64 {
    match v {
        serde_json::Value::String(s) => s.parse().unwrap_or_else(|_| panic!("value {s}")),
        serde_json::Value::Number(n) => n.as_f64().unwrap(),
        o => panic!("value {o}"),
    }
}

/// What a receiver stored for job="hostlens": series -> [(ts ms, value)].
type Stored = BTreeMap<Labels, Vec<(i64, f64)>>;

fn prometheus_stored(port: u16) -> Stored {
    let q = urlencode("{job=\"hostlens\"}[10m]");
    let v = get_json(port, &format!("/api/v1/query?query={q}"));
    let mut out = Stored::new();
    for r in v["data"]["result"].as_array().unwrap() {
        let l: Labels = serde_json::from_value(r["metric"].clone()).unwrap();
        let vals = r["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                    parse_value(&p[1]),
                )
            })
            .collect();
        out.insert(l, vals);
    }
    out
}

fn victoria_stored(port: u16) -> Stored {
    let q = urlencode("{job=\"hostlens\"}");
    let r = http_get(port, &format!("/api/v1/export?match[]={q}"), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let mut out = Stored::new();
    for line in r.text().lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let l: Labels = serde_json::from_value(v["metric"].clone()).unwrap();
        let ts = v["timestamps"].as_array().unwrap();
        let vals = v["values"].as_array().unwrap();
        let mut s: Vec<(i64, f64)> = ts
            .iter()
            .zip(vals)
            .map(|(t, x)| (t.as_i64().unwrap(), parse_value(x)))
            .collect();
        s.sort_by_key(|x| x.0);
        out.entry(l).or_default().extend(s);
    }
    out
}

/// Runs the agent against a real receiver and compares what it stored with `/metrics`.
fn check_real_receiver(write_url: &str, stored: impl Fn() -> Stored) {
    let dir = tempdir("real");
    let agent = start_agent(&write_config(&dir, write_url, "", ""));
    std::thread::sleep(Duration::from_secs(3));
    let t1 = now_ms();
    let s1 = scrape(&agent);
    std::thread::sleep(Duration::from_millis(2500));
    let s2 = scrape(&agent);
    let t2 = now_ms();
    // Every series /metrics showed must be stored, with the same labels plus the external ones.
    let mut got = Stored::new();
    wait_until("receiver has every series", Duration::from_secs(20), || {
        got = stored();
        s1.keys()
            .all(|l| got.contains_key(&with_external(l.clone())))
            && got.values().any(|v| v.iter().any(|x| x.0 > t2))
    });
    let families: BTreeSet<&str> = s1.keys().map(|l| l["__name__"].as_str()).collect();
    assert!(
        families.contains("node_load1") && families.contains("hostlens_remote_write_samples_total"),
        "{families:?}"
    );
    // Nothing stored that /metrics does not show (labels differ only by external labels).
    let shown: BTreeSet<Labels> = s1
        .keys()
        .chain(s2.keys())
        .map(|l| with_external(l.clone()))
        .collect();
    for l in got.keys() {
        assert!(shown.contains(l), "stored series not in /metrics: {l:?}");
    }
    // Values: every series whose value did not change between the two scrapes has exactly
    // that value in every sample stored between them.
    let mut compared = 0;
    for (l, v) in &s1 {
        // The agent's own gauges move with its own work between the scrapes and can come back
        // to the same value: process_open_fds counts the scrape's own connection, the memory
        // gauges see the sender's buffers and the queue's fsync thread come and go; a
        // collector's duration can repeat by chance while differing in between.
        if s2.get(l) != Some(v)
            || matches!(
                l["__name__"].as_str(),
                "process_open_fds"
                    | "process_virtual_memory_bytes"
                    | "process_resident_memory_bytes"
                    | "node_scrape_collector_duration_seconds"
            )
        {
            continue;
        }
        let samples = &got[&with_external(l.clone())];
        let between: Vec<_> = samples.iter().filter(|x| x.0 >= t1 && x.0 <= t2).collect();
        assert!(
            !between.is_empty(),
            "{l:?}: no sample between the scrapes: {samples:?}"
        );
        for x in between {
            assert_eq!(
                x.1, *v,
                "{l:?} at {}: stored {} but /metrics showed {v}",
                x.0, x.1
            );
        }
        compared += 1;
    }
    assert!(compared >= 40, "only {compared} stable series compared");
    // Timestamps strictly increasing per series, and gathers every interval without gaps.
    for (l, v) in &got {
        assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "{l:?}: {v:?}");
    }
    let load1 = &got[&with_external(parse_series("node_load1"))];
    assert!(load1.len() >= 5, "{load1:?}");
    assert_no_gap(&load1.iter().map(|x| x.0).collect::<Vec<_>>(), "node_load1");
    // The agent saw every batch accepted, and every sample gathered is sent or queued.
    let (_, sent, dropped, _) = flow(&scrape(&agent), "test");
    assert_eq!(dropped, 0.0, "{}", agent.log());
    assert!(sent > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prometheus_receiver_stores_every_family_with_values_and_order() {
    let port = free_port();
    let dir = tempdir("prom");
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package `prometheus`) must be installed: cargo xtask setup");
    let _peer = Peer { child, _dir: dir };
    wait_until("prometheus ready", Duration::from_secs(60), || {
        http_get(port, "/-/ready", &[]).is_ok_and(|r| r.status == 200)
    });
    check_real_receiver(&format!("http://127.0.0.1:{port}/api/v1/write"), || {
        prometheus_stored(port)
    });
}

#[test]
fn victoriametrics_receiver_stores_every_family_with_values_and_order() {
    let port = free_port();
    let dir = tempdir("vm");
    let child = Command::new("victoria-metrics")
        .arg(format!("-storageDataPath={}", dir.join("data").display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("victoria-metrics (Debian package `victoria-metrics`) must be installed: cargo xtask setup");
    let _peer = Peer { child, _dir: dir };
    wait_until("victoria-metrics ready", Duration::from_secs(60), || {
        http_get(port, "/health", &[]).is_ok_and(|r| r.status == 200)
    });
    check_real_receiver(&format!("http://127.0.0.1:{port}/api/v1/write"), || {
        victoria_stored(port)
    });
}

// ---------------------------------------------------------------------------------------
// 2. Faults: random 500/503/429 (Retry-After), an outage (refused, then hanging), one 400.

#[test]
fn faults_lose_nothing_but_the_rejected_batch() {
    // Parameters: interval 1 s, remote_timeout 1 s, backoff 50 ms..500 ms, 50 samples per
    // request (about 80 series per gather, so each gather spans two requests); 4 s of random
    // answers (30 % of requests 500/503/429, 429 with Retry-After: 1), the 6th request
    // answered 400; then 3 s refused, 3 s hanging; then all accepted until the queue is empty.
    let port = free_port();
    let mut rng = fastrand::Rng::with_seed(4);
    let answers: Arc<Mutex<BTreeMap<u16, u32>>> = Arc::default();
    let a2 = Arc::clone(&answers);
    let rx = Receiver::start(
        port,
        Mode::Normal,
        Box::new(move |i, _| {
            let (code, extra) = if i == 5 {
                (400, vec![])
            } else {
                match rng.u32(0..10) {
                    0 => (500, vec![]),
                    1 => (503, vec![]),
                    2 => (429, vec![("Retry-After".to_string(), "1".to_string())]),
                    _ => (204, vec![]),
                }
            };
            *a2.lock().unwrap().entry(code).or_default() += 1;
            let body = if code == 400 {
                b"out of bounds: bad sample for test".to_vec()
            } else {
                b"try later".to_vec()
            };
            (code, extra, if code == 204 { vec![] } else { body })
        }),
    );
    let dir = tempdir("faults");
    let mut agent = start_agent(&write_config(&dir, &rx.url(), "", ""));
    let started = now_ms();
    std::thread::sleep(Duration::from_secs(4));
    eprintln!("faults: outage (refused)");
    rx.set_mode(Mode::Refuse);
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("faults: outage (hanging)");
    rx.set_mode(Mode::Hang);
    std::thread::sleep(Duration::from_secs(3));
    rx.set_policy(Box::new({
        let a = Arc::clone(&answers);
        move |_, _| {
            *a.lock().unwrap().entry(204).or_default() += 1;
            (204, vec![], vec![])
        }
    }));
    rx.set_mode(Mode::Normal);
    eprintln!("faults: recovered");
    let recovered = now_ms();
    std::thread::sleep(Duration::from_secs(2));
    wait_until("queue drained", Duration::from_secs(30), || {
        metric(
            &agent,
            "hostlens_remote_write_queue_samples{endpoint=\"test\"}",
        ) == 0.0
    });
    // Freeze the receiver's answers (refused connections never reach the policy), then read
    // the agent's counters.
    rx.set_mode(Mode::Refuse);
    std::thread::sleep(Duration::from_millis(300));
    let stats = scrape(&agent);
    agent.terminate(Duration::from_secs(10));
    let log = agent.log();

    let got = rx.got();
    let rejected: Vec<&Got> = got.iter().filter(|g| g.status == 400).collect();
    assert_eq!(rejected.len(), 1, "exactly one request answered 400");
    let bad: BTreeSet<(Labels, i64)> = rejected[0]
        .series
        .iter()
        .flat_map(|s| {
            s.samples
                .iter()
                .map(move |x| (to_labels(&s.labels), x.timestamp))
        })
        .collect();
    // The 400'd batch was never sent again.
    for g in got.iter().filter(|g| g.status != 400) {
        for s in &g.series {
            for x in &s.samples {
                assert!(
                    !bad.contains(&(to_labels(&s.labels), x.timestamp)),
                    "400'd sample sent again: {:?}",
                    s.labels
                );
            }
        }
    }
    // Order per series, no duplicates among accepted samples.
    let acc = rx.accepted();
    assert_order(&acc);
    // Nothing lost: node_load1 (in every gather) has a sample for every gather from start to
    // after recovery, except where it was in the 400'd batch.
    let mut times = load1_times(&acc);
    let load1 = with_external(parse_series("node_load1"));
    times.extend(bad.iter().filter(|(l, _)| *l == load1).map(|(_, t)| *t));
    times.sort_unstable();
    assert!(
        times[0] - started <= 1500,
        "first gather {} ms after start",
        times[0] - started
    );
    assert!(
        *times.last().unwrap() > recovered,
        "no gather after recovery"
    );
    assert_no_gap(&times, "node_load1 over the outage");
    // Every series present in a gather has that gather's sample: all (series, t) pairs of the
    // stable fixture families are there for every gather time.
    let stable: Vec<&Labels> = acc
        .keys()
        .filter(|l| l["__name__"].starts_with("node_memory_"))
        .collect();
    assert!(stable.len() >= 40);
    for l in &stable {
        let mut t: Vec<i64> = acc[*l].iter().map(|x| x.0).collect();
        t.extend(bad.iter().filter(|(b, _)| b == *l).map(|(_, t)| *t));
        t.sort_unstable();
        assert_eq!(t, times, "{l:?}");
    }
    // The agent's counters agree with what the receiver answered, and account for every
    // sample gathered.
    flow(&stats, "test");
    let answered = answers.lock().unwrap().clone();
    let req = |code: &str| {
        stats
            .get(&parse_series(&format!(
                "hostlens_remote_write_requests_total{{code=\"{code}\",endpoint=\"test\"}}"
            )))
            .copied()
            .unwrap_or(0.0)
    };
    for (code, n) in &answered {
        assert_eq!(
            req(&code.to_string()),
            *n as f64,
            "requests with code {code}; receiver answered {answered:?}"
        );
    }
    assert!(
        req("error") >= 2.0,
        "connection refused and hanging must count as errors"
    );
    let outcome = |o: &str| {
        stats[&parse_series(&format!(
            "hostlens_remote_write_samples_total{{endpoint=\"test\",outcome=\"{o}\"}}"
        ))]
    };
    assert_eq!(outcome("dropped"), bad.len() as f64);
    assert!(outcome("retried") > 0.0);
    let accepted_samples: usize = got
        .iter()
        .filter(|g| g.status == 204)
        .map(|g| g.series.iter().map(|s| s.samples.len()).sum::<usize>())
        .sum();
    assert_eq!(outcome("sent"), accepted_samples as f64);
    // Retry-After: 1 honoured: the request after a 429 came at least ~1 s later.
    for w in got.windows(2) {
        if w[0].status == 429 {
            let gap = w[1].at - w[0].at;
            assert!(
                gap >= Duration::from_millis(900),
                "retry {gap:?} after a 429 with Retry-After: 1"
            );
        }
    }
    // The 400 is logged with the endpoint and the receiver's message.
    assert!(
        log.lines().any(|l| l.contains("endpoint=test")
            && l.contains("bad sample for test")
            && l.contains("400")),
        "{log}"
    );
    // Protocol headers of every request.
    for g in &got {
        assert_eq!(
            g.headers.get("content-encoding").map(String::as_str),
            Some("snappy")
        );
        assert_eq!(
            g.headers.get("content-type").map(String::as_str),
            Some("application/x-protobuf")
        );
        assert_eq!(
            g.headers
                .get("x-prometheus-remote-write-version")
                .map(String::as_str),
            Some("0.1.0")
        );
        assert!(
            g.headers
                .get("user-agent")
                .is_some_and(|u| u.starts_with("hostlens/"))
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// 3. SIGKILL during an outage, restart: the queued samples are delivered.

#[test]
fn sigkill_during_outage_then_restart_delivers_the_queue() {
    let port = free_port();
    let dir = tempdir("kill");
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let cfg = write_config(&dir, &url, "", "");
    let mut agent = start_agent(&cfg);
    let started = now_ms();
    wait_until("samples queued", Duration::from_secs(20), || {
        metric(
            &agent,
            "hostlens_remote_write_queue_samples{endpoint=\"test\"}",
        ) >= 300.0
    });
    let queued = metric(
        &agent,
        "hostlens_remote_write_queue_samples{endpoint=\"test\"}",
    );
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let killed = now_ms();
    let rx = Receiver::start(port, Mode::Normal, ok_policy());
    let agent2 = start_agent(&cfg);
    wait_until(
        "queue drained after restart",
        Duration::from_secs(30),
        || {
            metric(
                &agent2,
                "hostlens_remote_write_queue_samples{endpoint=\"test\"}",
            ) == 0.0
                && load1_times(&rx.accepted())
                    .last()
                    .is_some_and(|t| *t > killed)
        },
    );
    let acc = rx.accepted();
    assert_order(&acc);
    let before: usize = acc
        .values()
        .map(|v| v.iter().filter(|x| x.0 < killed).count())
        .sum();
    assert!(
        before as f64 >= queued,
        "{before} samples from before the kill delivered, {queued} were queued"
    );
    let times = load1_times(&acc);
    let pre: Vec<i64> = times.iter().copied().filter(|t| *t < killed).collect();
    assert!(pre[0] - started <= 1500, "first gather lost");
    assert_no_gap(&pre, "gathers before the kill");
    assert!(
        agent2.log().contains("queued before the restart"),
        "{}",
        agent2.log()
    );
    drop(agent2);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// 4. Disk buffer full: the oldest are dropped and counted; memory stays flat.

#[test]
fn full_disk_queue_drops_oldest_counts_and_memory_stays_flat() {
    // 64 KiB queue (16 KiB segments), gathers every 200 ms, receiver absent for ~12 s.
    let port = free_port();
    let dir = tempdir("full");
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let cfg = write_config(&dir, &url, "", "  queue_max_size: 64KiB\n");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("interval: 1s", "interval: 200ms");
    std::fs::write(&cfg, text).unwrap();
    let agent = start_agent(&cfg);
    let started = now_ms();
    let dropped = |a: &Agent| {
        metric(
            a,
            "hostlens_remote_write_samples_total{endpoint=\"test\",outcome=\"dropped\"}",
        )
    };
    wait_until("queue full and dropping", Duration::from_secs(30), || {
        dropped(&agent) > 0.0
    });
    let rss = |a: &Agent| metric(a, "process_resident_memory_bytes");
    let rss1 = rss(&agent);
    let d1 = dropped(&agent);
    std::thread::sleep(Duration::from_secs(6));
    let rss2 = rss(&agent);
    let d2 = dropped(&agent);
    let bytes = metric(
        &agent,
        "hostlens_remote_write_queue_bytes{endpoint=\"test\"}",
    );
    assert!(d2 > d1, "still dropping while full: {d1} -> {d2}");
    assert!(bytes <= 65536.0 && bytes > 30000.0, "queue bytes {bytes}");
    let max = metric(
        &agent,
        "hostlens_remote_write_queue_max_bytes{endpoint=\"test\"}",
    );
    assert_eq!(
        max, 65536.0,
        "queue bound gauge against queue_max_size: 64KiB"
    );
    let on_disk: u64 = std::fs::read_dir(dir.join("queue/test"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 65536, "segment files {on_disk} bytes");
    assert!(
        rss2 - rss1 < 2.0 * 1024.0 * 1024.0,
        "RSS grew from {rss1} to {rss2} while the full queue kept dropping"
    );
    // Receiver back: what is delivered is the newest, contiguous, ending now.
    let before_recovery = now_ms();
    let rx = Receiver::start(port, Mode::Normal, ok_policy());
    wait_until("queue drained", Duration::from_secs(30), || {
        metric(
            &agent,
            "hostlens_remote_write_queue_samples{endpoint=\"test\"}",
        ) == 0.0
            && load1_times(&rx.accepted())
                .last()
                .is_some_and(|t| *t > before_recovery)
    });
    // Freeze the receiver, then compare the agent's count with what arrived.
    rx.set_mode(Mode::Refuse);
    std::thread::sleep(Duration::from_millis(300));
    let stats = scrape(&agent);
    let acc = rx.accepted();
    assert_order(&acc);
    // The batch that was in flight when the outage began (the first gather's first request)
    // stays in the sender's hands and is delivered; the queue behind it lost its oldest.
    let got = rx.got();
    let in_flight: BTreeSet<Labels> = got[0].series.iter().map(|s| to_labels(&s.labels)).collect();
    assert!(
        got[0]
            .series
            .iter()
            .all(|s| s.samples[0].timestamp - started < 1500)
    );
    let mut times: Vec<i64> = got[1..]
        .iter()
        .flat_map(|g| g.series.iter())
        .filter(|s| to_labels(&s.labels) == with_external(parse_series("node_load1")))
        .map(|s| s.samples[0].timestamp)
        .collect();
    if !in_flight.contains(&with_external(parse_series("node_load1"))) {
        // node_load1 of the first gather was in the queue, not in flight: dropped too.
        assert!(load1_times(&acc)[0] - started > 3000);
    }
    times.sort_unstable();
    // Nothing was lost unaccounted: every sample gathered is sent, dropped or still queued
    // (read in one scrape), and what was sent is what the receiver accepted.
    let (_, sent, dropped, _) = flow(&stats, "test");
    let accepted: usize = acc.values().map(Vec::len).sum();
    assert_eq!(sent, accepted as f64);
    assert!(dropped > 0.0);
    // The oldest gathers (the first seconds) were dropped, not the newest.
    assert!(
        times[0] - started > 3000,
        "the gathers of the first 3 s should have been dropped; oldest kept is {} ms after start",
        times[0] - started
    );
    // Gaps between the kept samples are not checked: one gather running late on a loaded
    // machine leaves one too, and the accounting above already tells whether any was lost.
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// 5. Remote-Write 2.0, and the 415 fallback to 1.0.

#[test]
fn remote_write_2_with_metadata() {
    let rx = Receiver::start(free_port(), Mode::Normal, ok_policy());
    let dir = tempdir("v2");
    let agent = start_agent(&write_config(
        &dir,
        &rx.url(),
        "    protobuf_message: io.prometheus.write.v2.Request\n",
        "",
    ));
    wait_until("2.0 requests", Duration::from_secs(20), || {
        rx.got().len() >= 4
    });
    let text = agent.scrape().text;
    drop(agent);
    let got = rx.got();
    assert!(got.iter().all(|g| g.v2), "every request 2.0");
    for g in &got {
        assert_eq!(
            g.headers
                .get("x-prometheus-remote-write-version")
                .map(String::as_str),
            Some("2.0.0")
        );
        assert_eq!(
            g.headers.get("content-type").map(String::as_str),
            Some("application/x-protobuf;proto=io.prometheus.write.v2.Request")
        );
    }
    // Metadata: type and help of each family as /metrics declares them.
    let mut help = HashMap::new();
    let mut kind = HashMap::new();
    for l in text.lines() {
        if let Some(r) = l.strip_prefix("# HELP ") {
            let (n, h) = r.split_once(' ').unwrap();
            help.insert(n.to_string(), h.to_string());
        } else if let Some(r) = l.strip_prefix("# TYPE ") {
            let (n, t) = r.split_once(' ').unwrap();
            kind.insert(n.to_string(), t.to_string());
        }
    }
    let mut checked = 0;
    for g in &got {
        for (s, m) in g.series.iter().zip(&g.meta) {
            let name = &to_labels(&s.labels)["__name__"];
            let Some((t, h, _unit)) = m else { continue };
            let want = match kind.get(name.as_str()).map(String::as_str) {
                Some("counter") => 1,
                Some("gauge") => 2,
                Some("untyped") | None => continue,
                Some(o) => panic!("{o}"),
            };
            assert_eq!(*t, want, "{name}");
            assert_eq!(Some(h), help.get(name.as_str()), "{name}");
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
    assert_order(&rx.accepted());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn remote_write_2_created_timestamps_for_counters_only() {
    let rx = Receiver::start(free_port(), Mode::Normal, ok_policy());
    let dir = tempdir("v2-created");
    let agent = start_agent(&write_config(
        &dir,
        &rx.url(),
        "    protobuf_message: io.prometheus.write.v2.Request\n",
        "",
    ));
    // Per series: its created timestamps and sample timestamps over several gathers.
    let collect = |rx: &Receiver| {
        let mut per: BTreeMap<Labels, (i32, BTreeSet<i64>, Vec<i64>)> = BTreeMap::new();
        for g in rx.got() {
            for ((s, m), c) in g.series.iter().zip(&g.meta).zip(&g.created) {
                // Stale markers carry no metadata (and no created timestamp).
                let Some((t, _, _)) = m else {
                    assert_eq!(*c, 0, "a stale marker with a created timestamp");
                    continue;
                };
                let e = per.entry(to_labels(&s.labels)).or_default();
                e.0 = *t;
                e.1.insert(*c);
                e.2.extend(s.samples.iter().map(|x| x.timestamp));
            }
        }
        per
    };
    wait_until(
        "five counter series in three gathers",
        Duration::from_secs(30),
        || {
            collect(&rx)
                .values()
                .filter(|(t, _, ts)| *t == 1 && ts.iter().collect::<BTreeSet<_>>().len() >= 3)
                .count()
                >= 5
        },
    );
    drop(agent);
    let per = collect(&rx);
    let (mut counters, mut gauges, mut repeated) = (0, 0, 0);
    for (labels, (t, created, ts)) in &per {
        let first = *ts.iter().min().unwrap();
        match *t {
            // counter, histogram, summary: one non-zero created timestamp, at or before the
            // first sample, the same in every request.
            1 | 3 | 5 => {
                assert_eq!(
                    created.len(),
                    1,
                    "{labels:?}: created timestamps {created:?}"
                );
                let c = *created.first().unwrap();
                assert!(c > 0, "{labels:?}: created timestamp 0");
                assert!(
                    c <= first,
                    "{labels:?}: created {c} after the first sample {first}"
                );
                counters += 1;
                if ts.iter().collect::<BTreeSet<_>>().len() >= 2 {
                    repeated += 1;
                }
            }
            2 => {
                assert_eq!(
                    created,
                    &BTreeSet::from([0]),
                    "{labels:?}: a gauge with a created timestamp"
                );
                gauges += 1;
            }
            _ => {}
        }
    }
    assert!(
        counters >= 5 && gauges >= 20 && repeated >= 5,
        "{counters} counters ({repeated} in several requests), {gauges} gauges"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn remote_write_2_falls_back_to_1_on_415_and_remembers() {
    let rx = Receiver::start(
        free_port(),
        Mode::Normal,
        Box::new(|_, g| {
            if g.v2 {
                (415, vec![], b"unsupported proto".to_vec())
            } else {
                (204, vec![], vec![])
            }
        }),
    );
    let dir = tempdir("415");
    let agent = start_agent(&write_config(
        &dir,
        &rx.url(),
        "    protobuf_message: io.prometheus.write.v2.Request\n",
        "",
    ));
    let started = now_ms();
    wait_until(
        "1.0 requests after the fallback",
        Duration::from_secs(20),
        || rx.got().iter().filter(|g| !g.v2).count() >= 4,
    );
    let log = agent.log();
    let stats = scrape(&agent);
    drop(agent);
    let got = rx.got();
    assert!(got[0].v2, "first request is 2.0");
    assert_eq!(
        got.iter().filter(|g| g.v2).count(),
        1,
        "2.0 tried once, then 1.0 for good"
    );
    // The batch answered 415 was not lost: resent as 1.0.
    let first: BTreeSet<(Labels, i64)> = got[0]
        .series
        .iter()
        .map(|s| (to_labels(&s.labels), s.samples[0].timestamp))
        .collect();
    let resent: BTreeSet<(Labels, i64)> = got[1]
        .series
        .iter()
        .map(|s| (to_labels(&s.labels), s.samples[0].timestamp))
        .collect();
    assert_eq!(first, resent);
    assert_eq!(
        stats[&parse_series(
            "hostlens_remote_write_samples_total{endpoint=\"test\",outcome=\"dropped\"}"
        )],
        0.0
    );
    assert!(log.contains("falling back to 1.0"), "{log}");
    assert!(load1_times(&rx.accepted())[0] - started <= 1500);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Bad receiver answers and bad configuration.

#[test]
fn bad_answers_are_logged_counted_and_retried_without_loss() {
    // In turn: garbage instead of HTTP, a 10 MiB error body, an answer cut mid-body, 401,
    // 404, 413; then normal.
    let huge = vec![b'e'; 10 << 20];
    let rx = Receiver::start(
        free_port(),
        Mode::Normal,
        Box::new(move |i, _| match i {
            0 => (0, vec![], b"SSH-2.0-OpenSSH garbage\r\n\r\n".to_vec()),
            1 => (500, vec![], huge.clone()),
            2 => (0, vec![], b"HTTP/1.1 200 OK\r\nContent-Len".to_vec()),
            3 => (401, vec![], b"who are you".to_vec()),
            4 => (404, vec![], b"no such path".to_vec()),
            5 => (413, vec![], b"too large".to_vec()),
            _ => (204, vec![], vec![]),
        }),
    );
    let dir = tempdir("bad");
    let agent = start_agent(&write_config(&dir, &rx.url(), "", ""));
    wait_until("normal sending", Duration::from_secs(30), || {
        rx.got().len() >= 10
    });
    let stats = scrape(&agent);
    let log = agent.log();
    drop(agent);
    let got = rx.got();
    // 0-2 failed without a usable answer or with 500: the same batch is retried each time.
    let key = |g: &Got| {
        g.series
            .iter()
            .map(|s| (to_labels(&s.labels), s.samples[0].timestamp))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(key(&got[0]), key(&got[1]));
    assert_eq!(key(&got[1]), key(&got[2]));
    assert_eq!(key(&got[2]), key(&got[3]));
    // 401/404/413 drop their batch each: 3 different batches.
    assert_ne!(key(&got[3]), key(&got[4]));
    assert_ne!(key(&got[4]), key(&got[5]));
    let dropped: usize = got[3..6].iter().map(|g| g.series.len()).sum();
    let outcome = |o: &str| {
        stats[&parse_series(&format!(
            "hostlens_remote_write_samples_total{{endpoint=\"test\",outcome=\"{o}\"}}"
        ))]
    };
    assert_eq!(outcome("dropped"), dropped as f64);
    let req = |c: &str| {
        stats
            .get(&parse_series(&format!(
                "hostlens_remote_write_requests_total{{code=\"{c}\",endpoint=\"test\"}}"
            )))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(
        (req("error"), req("500"), req("401"), req("404"), req("413")),
        (2.0, 1.0, 1.0, 1.0, 1.0)
    );
    for needle in ["who are you", "no such path", "too large", "(truncated)"] {
        assert!(
            log.lines()
                .any(|l| l.contains(needle) && l.contains("endpoint=test")),
            "{needle} not logged:\n{log}"
        );
    }
    // The huge body was not logged whole.
    assert!(log.len() < 64 * 1024, "log is {} bytes", log.len());
    assert_order(&rx.accepted());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A receiver answering 503 with `Retry-After: 0`, or with a date in the past, asks for a
/// retry "now": the sender falls back to its backoff (50 ms .. 500 ms here) instead of
/// hammering the receiver, and the refused batches are delivered once it accepts.
#[test]
fn retry_after_zero_or_past_uses_the_backoff() {
    let refuse_for = Duration::from_secs(3);
    let started = Instant::now();
    let rx = Receiver::start(
        free_port(),
        Mode::Normal,
        Box::new(move |i, _| {
            if started.elapsed() >= refuse_for {
                return (204, vec![], vec![]);
            }
            let when = if i % 2 == 0 {
                "0"
            } else {
                "Wed, 21 Oct 2015 07:28:00 GMT"
            };
            (
                503,
                vec![("Retry-After".to_string(), when.to_string())],
                b"busy".to_vec(),
            )
        }),
    );
    let dir = tempdir("retry0");
    let agent = start_agent(&write_config(&dir, &rx.url(), "", ""));
    wait_until(
        "accepted after the refusals",
        Duration::from_secs(30),
        || rx.got().iter().filter(|g| g.status == 204).count() >= 3,
    );
    let stats = scrape(&agent);
    drop(agent);
    let got = rx.got();
    let refused: Vec<&Got> = got.iter().filter(|g| g.status == 503).collect();
    // Backoff from 50 ms doubling to 500 ms (each wait jittered between half and all of it)
    // allows about a dozen requests in 3 s; a busy loop would send thousands.
    assert!(
        (3..=30).contains(&refused.len()),
        "{} refused requests in {refuse_for:?}",
        refused.len()
    );
    for w in refused.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(20), "retry after {gap:?}");
    }
    let dropped = stats[&parse_series(
        "hostlens_remote_write_samples_total{endpoint=\"test\",outcome=\"dropped\"}",
    )];
    assert_eq!(dropped, 0.0);
    let acc = rx.accepted();
    for s in &refused[0].series {
        let t = s.samples[0].timestamp;
        assert!(
            acc.get(&to_labels(&s.labels))
                .is_some_and(|v| v.iter().any(|(ts, _)| *ts == t)),
            "a refused sample was not delivered later: {:?} @ {t}",
            to_labels(&s.labels)
        );
    }
    assert_order(&acc);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sender that panics (a bug met by a batch; `HOSTLENS_FAIL_PANIC` injects one, once, with
/// the first batch in hand) is started again from its queue: nothing is lost or repeated and
/// the gathers keep their order.
#[test]
fn a_panicking_sender_restarts_from_its_queue() {
    let rx = Receiver::start(free_port(), Mode::Normal, ok_policy());
    let dir = tempdir("senderpanic");
    let cfg = write_config(&dir, &rx.url(), "", "");
    let procfs = repo_root().join("tests/fixtures/basic/proc");
    let p = procfs.to_str().unwrap();
    let agent = Agent::spawn(
        &common::bin(),
        &[
            "--config.file",
            cfg.to_str().unwrap(),
            "--path.procfs",
            p,
            "--path.sysfs",
            p,
            "--path.rootfs",
            p,
            "--probe.disable-defaults",
        ],
        None,
        &[("HOSTLENS_FAIL_PANIC", "remote_write:test")],
    );
    agent.wait_ready();
    let started = now_ms();
    // The panic comes with the first batch; the restart waits 1 s; then 4 more gathers.
    wait_until("gathers after the restart", Duration::from_secs(30), || {
        load1_times(&rx.accepted())
            .iter()
            .filter(|t| **t > started + 3000)
            .count()
            >= 3
    });
    let stats = scrape(&agent);
    let log = agent.log();
    assert_eq!(
        log.matches("remote write sender panicked").count(),
        1,
        "{log}"
    );
    assert!(log.contains("injected panic at remote_write:test"), "{log}");
    let (_, _, dropped, _) = flow(&stats, "test");
    assert_eq!(dropped, 0.0);
    let acc = rx.accepted();
    assert_order(&acc);
    let times = load1_times(&acc);
    assert!(times.len() >= 4, "{times:?}");
    // The first request came after the restart (the panic precedes it, the restart waits
    // 1 s); the first gather, queued before the panic, is in it — it was taken about a
    // second before that request, the next gather only ~0.1 s — and none after it is missing.
    let (t0_ms, t0) = (now_ms(), Instant::now());
    let first_request = rx.got()[0].at;
    let first_request_ms = t0_ms - i64::try_from((t0 - first_request).as_millis()).unwrap();
    assert!(
        times[0] + 800 <= first_request_ms,
        "the first gather ({}) is not older than the restart (first request {first_request_ms}): lost?",
        times[0]
    );
    assert_no_gap(&times, "after a sender panic");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dns_failure_and_bad_tls_are_logged_with_the_endpoint() {
    // A name that cannot resolve (.invalid is reserved) and TLS to a plain-HTTP receiver.
    let rx = Receiver::start(free_port(), Mode::Normal, ok_policy());
    let dir = tempdir("dns");
    let tls_url = rx.url().replace("http://", "https://");
    let text = format!(
        "remote_write:\n  - url: http://no-such-host.invalid:9/api/v1/write\n    name: nodns\n    remote_timeout: 2s\n  - url: {tls_url}\n    name: badtls\n    remote_timeout: 2s\nremote_write_options:\n  interval: 1s\n  queue_dir: {}\n",
        dir.join("queue").display()
    );
    let cfg = dir.join("hostlens.yaml");
    std::fs::write(&cfg, text).unwrap();
    let agent = start_agent(&cfg);
    wait_until("both failures logged", Duration::from_secs(20), || {
        let log = agent.log();
        log.lines()
            .any(|l| l.contains("endpoint=nodns") && l.contains("dns error"))
            && log
                .lines()
                .any(|l| l.contains("endpoint=badtls") && l.contains("will retry"))
    });
    assert!(
        metric(
            &agent,
            "hostlens_remote_write_requests_total{code=\"error\",endpoint=\"nodns\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &agent,
            "hostlens_remote_write_requests_total{code=\"error\",endpoint=\"badtls\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &agent,
            "hostlens_remote_write_queue_samples{endpoint=\"nodns\"}"
        ) > 0.0
    );
    assert_eq!(
        metric(
            &agent,
            "hostlens_remote_write_samples_total{endpoint=\"nodns\",outcome=\"dropped\"}"
        ),
        0.0
    );
    assert!(agent.get("/healthz").status == 200);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_remote_write_config_exits_64_naming_the_key() {
    let dir = tempdir("badcfg");
    for (yaml, key) in [
        (
            "remote_write:\n  - url: \"::not a url\"\n",
            "remote_write[0].url",
        ),
        (
            "remote_write:\n  - url: http://127.0.0.1:9/w\n    authorization:\n      credentials_file: /nonexistent/token\n",
            "remote_write[0].authorization.credentials_file",
        ),
        (
            "remote_write:\n  - url: http://127.0.0.1:9/w\n    sigv4: {}\n",
            "sigv4",
        ),
    ] {
        let p = dir.join("c.yaml");
        std::fs::write(&p, yaml).unwrap();
        let out = Command::new(common::bin())
            .args(["--config.file", p.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{yaml}: {err}");
        assert!(err.contains(key), "{yaml}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// TLS (rustls on both sides, certificates made by openssl here), client certificates,
// bearer token file re-read, extra headers.

fn tls_server_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .unwrap();
    let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

#[test]
fn tls_with_client_certificate_token_file_and_headers() {
    let dir = tempdir("tls");
    common::make_test_certs(&dir);
    let rx = Receiver::start_tls(
        free_port(),
        Mode::Normal,
        ok_policy(),
        Some(tls_server_config(&dir)),
    );
    let token = dir.join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let url = rx.url().replace("http://", "https://");
    let d = dir.display();
    let good = format!(
        "    headers:\n      X-Scope-OrgID: team-a\n    authorization:\n      credentials_file: {d}/token\n    tls_config:\n      ca_file: {d}/ca.pem\n      cert_file: {d}/client.pem\n      key_file: {d}/client.key\n"
    );
    let agent = start_agent(&write_config(&dir, &url, &good, ""));
    wait_until("requests over TLS", Duration::from_secs(20), || {
        rx.got().len() >= 2
    });
    std::fs::write(&token, "second-token-longer\n").unwrap();
    let n = rx.got().len();
    wait_until(
        "requests with the new token",
        Duration::from_secs(20),
        || {
            rx.got()[n..].iter().any(|g| {
                g.headers.get("authorization").map(String::as_str)
                    == Some("Bearer second-token-longer")
            })
        },
    );
    drop(agent);
    let got = rx.got();
    assert_eq!(
        got[0].headers.get("authorization").map(String::as_str),
        Some("Bearer first-token")
    );
    assert!(
        got.iter()
            .all(|g| g.headers.get("x-scope-orgid").map(String::as_str) == Some("team-a"))
    );
    assert_order(&rx.accepted());

    // Without the CA the server's certificate is refused, clearly; insecure_skip_verify
    // accepts it (the client certificate is still presented).
    let q2 = tempdir("tls-noca");
    let no_ca = format!(
        "    tls_config:\n      cert_file: {d}/client.pem\n      key_file: {d}/client.key\n"
    );
    let agent = start_agent(&write_config(&q2, &url, &no_ca, ""));
    wait_until("certificate error logged", Duration::from_secs(20), || {
        agent
            .log()
            .lines()
            .any(|l| l.contains("endpoint=test") && l.contains("UnknownIssuer"))
    });
    drop(agent);
    let before = rx.got().len();
    let q3 = tempdir("tls-insecure");
    let insecure = format!(
        "    tls_config:\n      insecure_skip_verify: true\n      cert_file: {d}/client.pem\n      key_file: {d}/client.key\n"
    );
    let agent = start_agent(&write_config(&q3, &url, &insecure, ""));
    wait_until(
        "requests with insecure_skip_verify",
        Duration::from_secs(20),
        || rx.got().len() > before,
    );
    drop(agent);
    for d in [dir, q2, q3] {
        let _ = std::fs::remove_dir_all(d);
    }
}

// ---------------------------------------------------------------------------------------
// proxy_url: an HTTP CONNECT proxy written here relays the requests.

/// Accepts CONNECT requests, records their targets and relays bytes both ways.
fn connect_proxy(seen: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                c.set_nonblocking(false).unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if c.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                assert!(head.starts_with("CONNECT "), "{head}");
                seen.lock().unwrap().push(target.clone());
                let Ok(up) = TcpStream::connect(&target) else {
                    let _ = c.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    return;
                };
                c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                let (mut c, mut up) = (c, up);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut up2);
                    let _ = up2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut up, &mut c);
            });
        }
    });
    port
}

#[test]
fn proxy_url_tunnels_through_connect() {
    let rx = Receiver::start(free_port(), Mode::Normal, ok_policy());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let proxy = connect_proxy(Arc::clone(&seen), Arc::clone(&stop));
    let dir = tempdir("proxy");
    let extra = format!("    proxy_url: http://127.0.0.1:{proxy}\n");
    let agent = start_agent(&write_config(&dir, &rx.url(), &extra, ""));
    wait_until(
        "requests through the proxy",
        Duration::from_secs(20),
        || rx.got().len() >= 2,
    );
    drop(agent);
    stop.store(true, Ordering::SeqCst);
    let targets = seen.lock().unwrap().clone();
    assert!(!targets.is_empty());
    assert!(
        targets
            .iter()
            .all(|t| *t == rx.url()[7..].split('/').next().unwrap()),
        "{targets:?}"
    );
    assert_order(&rx.accepted());
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// batch_send_deadline holds a partial batch; SIGTERM flushes what is queued.

#[test]
fn partial_batch_waits_for_deadline_and_sigterm_flushes() {
    let rx = Receiver::start(free_port(), Mode::Normal, ok_policy());
    let dir = tempdir("flush");
    let text = format!(
        "remote_write:\n  - url: {}\n    name: test\n    queue_config:\n      max_samples_per_send: 10000\n      batch_send_deadline: 10m\nremote_write_options:\n  interval: 1s\n  queue_dir: {}\n  external_labels: {{instance: test-host, job: hostlens}}\n",
        rx.url(),
        dir.join("queue").display()
    );
    let cfg = dir.join("hostlens.yaml");
    std::fs::write(&cfg, text).unwrap();
    let mut agent = start_agent(&cfg);
    // One gather queues one sample per series that /metrics shows.
    let per_gather = scrape(&agent).len() as f64;
    wait_until("three gathers queued", Duration::from_secs(20), || {
        metric(
            &agent,
            "hostlens_remote_write_queue_samples{endpoint=\"test\"}",
        ) >= 3.0 * per_gather
    });
    // Less than max_samples_per_send queued and the deadline far: nothing sent yet.
    assert!(
        rx.got().is_empty(),
        "a partial batch was sent before batch_send_deadline"
    );
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let times = load1_times(&rx.accepted());
    assert!(
        times.len() >= 3,
        "queued gathers not flushed on SIGTERM: {times:?}"
    );
    assert_no_gap(&times, "flushed gathers");
    assert_order(&rx.accepted());
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// min_shards: parallel requests, per-series order kept, nothing lost under 503s.

#[test]
fn parallel_shards_keep_per_series_order() {
    let mut rng = fastrand::Rng::with_seed(7);
    let rx = Receiver::start(
        free_port(),
        Mode::Normal,
        Box::new(move |_, _| {
            if rng.u32(0..4) == 0 {
                (503, vec![], b"busy".to_vec())
            } else {
                (204, vec![], vec![])
            }
        }),
    );
    rx.inner.delay_ms.store(150, Ordering::SeqCst);
    let dir = tempdir("shards");
    let cfg = write_config(&dir, &rx.url(), "", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "      max_samples_per_send: 50\n",
        // Four shards of 50-sample requests, each held 150 ms by the receiver and a quarter
        // refused: ~1,000 samples/s against the ~180 a scrape of the fixture adds per second,
        // so the queue empties between scrapes even on a loaded machine (with 20 per request
        // the margin was ~2x, and parallel tests could keep it from ever draining).
        "      max_samples_per_send: 50\n      min_shards: 4\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let agent = start_agent(&cfg);
    let started = now_ms();
    std::thread::sleep(Duration::from_secs(5));
    wait_until("queue drained", Duration::from_secs(30), || {
        metric(
            &agent,
            "hostlens_remote_write_queue_samples{endpoint=\"test\"}",
        ) == 0.0
    });
    // The shards' outcomes are counted once per window, with the queue.
    let (_, sent, dropped, _) = flow(&scrape(&agent), "test");
    assert_eq!(dropped, 0.0);
    drop(agent);
    let accepted: usize = rx.accepted().values().map(Vec::len).sum();
    assert!(
        sent > 0.0 && sent <= accepted as f64,
        "sent {sent}, accepted {accepted}"
    );
    assert!(
        rx.inner.max_active.load(Ordering::SeqCst) >= 2,
        "requests were never in flight together"
    );
    let acc = rx.accepted();
    assert_order(&acc);
    let times = load1_times(&acc);
    assert!(times[0] - started <= 1500);
    assert_no_gap(&times, "node_load1 with 4 shards");
    for (l, v) in acc
        .iter()
        .filter(|(l, _)| l["__name__"].starts_with("node_memory_"))
    {
        let t: Vec<i64> = v.iter().map(|x| x.0).take(times.len()).collect();
        assert_eq!(t, times[..t.len()], "{l:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// SIGHUP (systemctl reload) replaces the remote-write endpoints; a broken file keeps them.

#[test]
fn sighup_switches_remote_write_endpoints_and_rejects_a_broken_file() {
    let a = Receiver::start(free_port(), Mode::Normal, ok_policy());
    let b = Receiver::start(free_port(), Mode::Normal, ok_policy());
    let dir = tempdir("reload");
    let cfg = write_config(&dir, &a.url(), "", "");
    let agent = start_agent(&cfg);
    wait_until(
        "pushes to the first receiver",
        Duration::from_secs(20),
        || !a.got().is_empty(),
    );
    let hup = |agent: &Agent| {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
    };
    write_config(&dir, &b.url(), "", "");
    hup(&agent);
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.got().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no push to the second receiver after SIGHUP:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The first endpoint was shut down before the second started: it gets nothing more.
    let a_count = a.got().len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(a.got().len(), a_count, "the old endpoint still receives");
    assert!(
        agent.log().contains("remote write reloaded"),
        "{}",
        agent.log()
    );
    // A broken file is rejected as a whole; the second endpoint keeps receiving.
    std::fs::write(&cfg, "remote_write:\n  - url: \"not a url\"\n").unwrap();
    hup(&agent);
    wait_until("the rejection logged", Duration::from_secs(10), || {
        agent.log().contains("configuration reload rejected")
    });
    let b_count = b.got().len();
    wait_until("pushes continue", Duration::from_secs(10), || {
        b.got().len() > b_count
    });
    assert_eq!(a.got().len(), a_count);
    assert_order(&b.accepted());
}
