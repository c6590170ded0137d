//! Privileged tests of the `http` probe: real servers (nginx, a python3 http.server, a server
//! in this file) and real clients (curl, wrk, python sockets) on 127.0.0.1 free ports, the
//! real kernel and eBPF programs. Every assertion is a delta on series filtered by the test's
//! own server port, so other traffic on the host does not disturb it. Run one at a time.
mod common;

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Agent, Exposition, bin, privileged, run_ok};

const SERVER: &str = "http_server_request_duration_seconds";
const CLIENT: &str = "http_client_request_duration_seconds";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Labels of a series key `name{a="b",…}` (values without escapes, as hostlens writes them
/// for these tests).
fn labels(series: &str) -> Option<(&str, BTreeMap<String, String>)> {
    let (name, rest) = series.split_once('{')?;
    let rest = rest.strip_suffix('}')?;
    let mut m = BTreeMap::new();
    let mut s = rest;
    while !s.is_empty() {
        let (k, v) = s.split_once("=\"")?;
        let end = v.find('"')?;
        m.insert(k.to_string(), v[..end].to_string());
        s = v[end + 1..].trim_start_matches(',');
    }
    Some((name, m))
}

/// Sum of `<family>_<suffix>` over the series matching every `want` label.
fn sum_of(e: &Exposition, family: &str, suffix: &str, want: &[(&str, &str)]) -> f64 {
    let name = format!("{family}_{suffix}");
    e.samples
        .iter()
        .filter_map(|(k, v)| {
            let (n, l) = labels(k)?;
            (n == name
                && want
                    .iter()
                    .all(|(a, b)| l.get(*a).map(String::as_str) == Some(*b)))
            .then_some(*v)
        })
        .sum()
}

fn count(e: &Exposition, family: &str, want: &[(&str, &str)]) -> f64 {
    sum_of(e, family, "count", want)
}

/// How much `count` of the matching series grew from `before` to `after`.
fn delta(after: &Exposition, before: &Exposition, family: &str, want: &[(&str, &str)]) -> f64 {
    count(after, family, want) - count(before, family, want)
}

/// Distinct label sets of `family` matching `want`.
fn series(e: &Exposition, family: &str, want: &[(&str, &str)]) -> Vec<BTreeMap<String, String>> {
    let name = format!("{family}_count");
    e.samples
        .keys()
        .filter_map(|k| {
            let (n, l) = labels(k)?;
            (n == name
                && want
                    .iter()
                    .all(|(a, b)| l.get(*a).map(String::as_str) == Some(*b)))
            .then_some(l)
        })
        .collect()
}

fn lost(e: &Exposition) -> f64 {
    e.get("hostlens_probe_events_lost_total{probe=\"http\"}")
        .expect("hostlens_probe_events_lost_total{probe=\"http\"}")
}

/// Records the probe took from the kernel so far.
fn records(e: &Exposition) -> f64 {
    e.get("hostlens_http_records_total")
        .expect("hostlens_http_records_total")
}

/// Decode errors of every reason so far.
fn decode_errors(e: &Exposition) -> f64 {
    e.sum("hostlens_http_decode_errors_total", &[])
}

/// Scrapes until `done` holds (the agent drains its ring buffers every 100 ms), then once more
/// after a pause so that late extra counts would show.
fn settle(agent: &Agent, done: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = agent.scrape();
        if done(&e) || Instant::now() > deadline {
            std::thread::sleep(Duration::from_millis(300));
            return agent.scrape();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Scrapes until the HTTP families stop moving (what earlier traffic left in the rings is
/// decoded: the agent drains every 100 ms), at most 10 s; returns the last scrape. The
/// scrapes themselves (this process as the agent's client) are left out.
fn quiet(agent: &Agent) -> Exposition {
    let scrapes = format!("server_port=\"{}\"", agent.port);
    let http = |e: &Exposition| -> Vec<(String, f64)> {
        e.samples
            .iter()
            .filter(|(k, _)| k.starts_with("http_") && !k.contains(&scrapes))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = agent.scrape();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let e = agent.scrape();
        if http(&e) == http(&last) || Instant::now() > deadline {
            return e;
        }
        last = e;
    }
}

/// Starts the agent with only the http probe and `http_yaml` as its `http:` section.
fn agent_with(dir: &Path, http_yaml: &str) -> Agent {
    agent_env(dir, http_yaml, &[])
}

/// [`agent_with`], with extra environment variables.
fn agent_env(dir: &Path, http_yaml: &str, env: &[(&str, &str)]) -> Agent {
    let cfg = dir.join("hostlens.yaml");
    std::fs::write(
        &cfg,
        format!("probes:\n  disable_defaults: true\n  http: true\nhttp:\n{http_yaml}"),
    )
    .unwrap();
    let agent = Agent::spawn(&bin(), &["--config.file", cfg.to_str().unwrap()], None, env);
    agent.wait_ready();
    let e = agent.scrape();
    assert_eq!(
        e.get("hostlens_probe_attached{probe=\"http\"}"),
        Some(1.0),
        "{}",
        agent.log()
    );
    agent
}

/// A temporary directory removed (with the nginx files in it) when the test ends, also when
/// it fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("hostlens-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// A child process killed (by its own pid) on drop.
struct Proc(Child);

impl Drop for Proc {
    /// SIGTERM first, so that nginx's master stops its workers (after a SIGKILL they would
    /// live on, orphaned); SIGKILL after 5 s.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx with a temp config: `/index.html` (static), `/big.bin` (10 MB, sendfile), `/post`
/// (200 to any method), `/error` (500); anything else 404.
struct Nginx {
    port: u16,
    _proc: Proc,
}

impl Nginx {
    fn start(dir: &Path) -> Nginx {
        let port = free_port();
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::write(www.join("index.html"), "<h1>hello</h1>\n").unwrap();
        std::fs::write(www.join("wrk.html"), "wrk\n").unwrap();
        let big: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(www.join("big.bin"), big).unwrap();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n sendfile on;\n keepalive_requests 1000000;\n\
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
             uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             server {{\n  listen 127.0.0.1:{port};\n  root {www};\n\
             location = /post {{ return 200 \"posted\\n\"; }}\n\
             location = /error {{ return 500; }}\n }}\n}}\n",
            www = www.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .args([
                "-c",
                conf_path.to_str().unwrap(),
                "-p",
                dir.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (Debian package nginx-light)");
        wait_listening(port);
        Nginx {
            port,
            _proc: Proc(child),
        }
    }
}

/// A python3 client over raw sockets: argv = port, then a JSON list of [method, path, body]
/// requests sent one after another on one keep-alive connection; prints each response's
/// status and the seconds from sending to the last byte read. ["PAUSE", seconds, ""] closes
/// the connection, sleeps, and goes on on a new one; ["SLEEP", seconds, ""] sleeps and goes on
/// on the same one.
const PY_CLIENT: &str = r#"
import json, socket, sys, time
port = int(sys.argv[1]); reqs = json.loads(sys.argv[2])
def connect():
    s = socket.create_connection(("127.0.0.1", port))
    return s, s.makefile("rb")
s, f = connect()
for method, path, body in reqs:
    if method == "PAUSE":
        s.close(); time.sleep(float(path)); s, f = connect()
        continue
    if method == "SLEEP":
        time.sleep(float(path))
        continue
    data = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    t0 = time.monotonic()
    s.sendall(data)
    status = 100
    while 100 <= status < 200:
        status = int(f.readline().split()[1])
        length = 0; chunked = False; close = False
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.strip().lower() == "connection" and "close" in v.lower():
                close = True
            if k.strip().lower() == "content-length":
                length = int(v)
            if k.strip().lower() == "transfer-encoding" and "chunked" in v:
                chunked = True
    if method != "HEAD" and status not in (204, 304):
        if chunked:
            while True:
                size = int(f.readline().split(b";")[0], 16)
                f.read(size + 2)
                if size == 0:
                    break
        else:
            f.read(length)
    print(status, time.monotonic() - t0)
    if close:
        s.close(); s, f = connect()
s.close()
"#;

fn py_client(port: u16, reqs: &[(&str, String, &str)]) -> Vec<(u16, f64)> {
    let json = format!(
        "[{}]",
        reqs.iter()
            .map(|(m, p, b)| format!("[\"{m}\",\"{p}\",\"{b}\"]"))
            .collect::<Vec<_>>()
            .join(",")
    );
    run_ok(Command::new("python3").args(["-c", PY_CLIENT, &port.to_string(), &json]))
        .lines()
        .map(|l| {
            let (s, t) = l.split_once(' ').unwrap();
            (s.parse().unwrap(), t.parse().unwrap())
        })
        .collect()
}

/// Pipelining client: argv = port, batch size, then paths; writes each batch of requests with
/// one sendall on one connection and reads all its responses before the next batch.
const PY_PIPELINE: &str = r#"
import socket, sys
port = int(sys.argv[1]); batch = int(sys.argv[2]); paths = sys.argv[3:]
if paths[0] == "--users":
    k = int(paths[1])
    paths = [f"/users/{k * 25000 + i}" for i in range(25000)]
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
statuses = []
for i in range(0, len(paths), batch):
    chunk = paths[i:i+batch]
    s.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in chunk))
    for _ in chunk:
        status = int(f.readline().split()[1]); length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        f.read(length)
        statuses.append(status)
print(" ".join(map(str, statuses)))
"#;

/// The comm of a python3 process (python3 may be a versioned binary behind a shim).
fn python_comm() -> String {
    run_ok(Command::new("python3").args(["-c", "print(open('/proc/self/comm').read().strip())"]))
        .trim()
        .to_string()
}

#[test]
fn http_exact_counts_per_method_status_route() {
    if !privileged("http_exact_counts_per_method_status_route") {
        return;
    }
    let dir = temp_dir("counts");
    let agent = agent_with(&dir, "  capture_bytes: 1024\n");
    let nginx = Nginx::start(&dir.join("nginx"));
    let port = nginx.port.to_string();
    let p = port.as_str();
    let py = python_comm();
    let before = agent.scrape();

    let mut reqs: Vec<(&str, String, &str)> = Vec::new();
    reqs.extend((0..1000).map(|_| ("GET", "/index.html".to_string(), "")));
    reqs.extend((0..100).map(|_| ("POST", "/post".to_string(), "name=value")));
    reqs.extend((0..50).map(|_| ("HEAD", "/index.html".to_string(), "")));
    reqs.extend((0..20).map(|i| ("GET", format!("/missing/{i}"), "")));
    reqs.extend((0..10).map(|_| ("GET", "/error".to_string(), "")));
    let got = py_client(nginx.port, &reqs);
    assert_eq!(got.len(), 1180);
    assert_eq!(got.iter().filter(|(s, _)| *s == 404).count(), 20);
    assert_eq!(got.iter().filter(|(s, _)| *s == 500).count(), 10);

    let expect: [(&str, &str, &str, f64); 5] = [
        ("GET", "200", "/index.html", 1000.0),
        ("POST", "200", "/post", 100.0),
        ("HEAD", "200", "/index.html", 50.0),
        ("GET", "404", "/missing/*", 20.0),
        ("GET", "500", "/error", 10.0),
    ];
    let total: f64 = expect.iter().map(|x| x.3).sum();
    let after = settle(&agent, |e| {
        delta(e, &before, SERVER, &[("server_port", p)]) >= total
    });
    for (m, s, r, n) in expect {
        let want = [
            ("server_port", p),
            ("http_request_method", m),
            ("http_response_status_code", s),
            ("http_route", r),
            ("process_name", "nginx"),
        ];
        let server_delta = delta(&after, &before, SERVER, &want);
        assert_eq!(server_delta, n, "server {m} {s} {r}\n{}", agent.log());
        // The python client's side of the same requests.
        let want = [
            ("server_port", p),
            ("server_address", "127.0.0.1"),
            ("http_request_method", m),
            ("http_response_status_code", s),
            ("process_name", py.as_str()),
        ];
        let client_delta = delta(&after, &before, CLIENT, &want);
        assert_eq!(client_delta, n, "client {m} {s}");
    }
    assert_eq!(
        delta(&after, &before, SERVER, &[("server_port", p)]),
        total,
        "no other server series for the port"
    );

    // wrk: its count of completed requests, plus at most the requests in flight on its 4
    // connections when it stopped.
    let before = agent.scrape();
    let out = run_ok(Command::new("wrk").args([
        "-t1",
        "-c4",
        "-d1s",
        &format!("http://127.0.0.1:{p}/wrk.html"),
    ]));
    let done: f64 = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .map(|(n, _)| n.trim().parse().unwrap())
        .expect("wrk summary");
    let want = [("server_port", p), ("http_route", "/wrk.html")];
    let after = settle(&agent, |e| delta(e, &before, SERVER, &want) >= done);
    let delta = delta(&after, &before, SERVER, &want);
    assert!(
        delta >= done && delta <= done + 4.0,
        "wrk completed {done}, hostlens counted {delta}"
    );
    assert_eq!(lost(&after), lost(&before), "ring buffer events lost");
    // The agent's own scrapes are never traced.
    let own = agent.port.to_string();
    assert!(series(&after, SERVER, &[("server_port", &own)]).is_empty());
    assert!(!agent.log().contains("panicked"), "{}", agent.log());
}

/// The decoder panicking (a bug met by some record; `HOSTLENS_FAIL_PANIC` injects one, once)
/// costs the connection state it held, nothing more: the drain goes on and later requests
/// are counted exactly.
#[test]
fn http_decoder_panic_costs_only_its_state() {
    if !privileged("http_decoder_panic_costs_only_its_state") {
        return;
    }
    let dir = temp_dir("drainpanic");
    let agent = agent_env(&dir, "", &[("HOSTLENS_FAIL_PANIC", "http_drain")]);
    let nginx = Nginx::start(&dir.join("nginx"));
    let port = nginx.port.to_string();
    let p = port.as_str();
    // The first records the drain reads set the panic off.
    assert_eq!(
        py_client(nginx.port, &[("GET", "/index.html".to_string(), "")]).len(),
        1
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.log().contains("the decoder panicked") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        agent.log().contains("the decoder panicked"),
        "{}",
        agent.log()
    );
    // What the first request left after the panic is decoded before the count starts.
    let before = quiet(&agent);
    let reqs: Vec<(&str, String, &str)> = (0..200)
        .map(|_| ("GET", "/index.html".to_string(), ""))
        .collect();
    assert_eq!(py_client(nginx.port, &reqs).len(), 200);
    let after = settle(&agent, |e| {
        delta(e, &before, SERVER, &[("server_port", p)]) >= 200.0
            && delta(e, &before, CLIENT, &[("server_port", p)]) >= 200.0
    });
    let server = [
        ("server_port", p),
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
        ("http_route", "/index.html"),
        ("process_name", "nginx"),
    ];
    assert_eq!(delta(&after, &before, SERVER, &server), 200.0);
    assert_eq!(delta(&after, &before, SERVER, &[]), 200.0);
    assert_eq!(delta(&after, &before, CLIENT, &[("server_port", p)]), 200.0);
    assert_eq!(lost(&after), lost(&before), "events lost");
    let log = agent.log();
    assert_eq!(log.matches("the decoder panicked").count(), 1, "{log}");
    assert!(log.contains("injected panic at http_drain"), "{log}");
}

#[test]
fn http_every_hook_counts_exactly() {
    if !privileged("http_every_hook_counts_exactly") {
        return;
    }
    let dir = temp_dir("hooks");
    let nginx = Nginx::start(&dir.join("nginx"));
    let port = nginx.port.to_string();
    let p = port.as_str();
    let py = python_comm();
    // `auto` on a kernel that refuses the socket tracepoints (simulated): its fallback must
    // follow every connection, not the one entry its table was first sized to. The socket
    // hooks without their per-CPU batches (the flush refused, simulated: the object is loaded
    // again with every record its own ring record), and reading the rings as a machine with
    // more CPUs than rings does (several CPUs' batches in a ring, merged by timestamp).
    let sock = "tp_btf/sock_send_length, sock_recv_length, inet_sock_set_state";
    for (hook, attached, env, reloaded) in [
        ("sock", sock, None, None),
        ("tp_btf", "tp_btf/sys_exit", None, None),
        ("tracepoint", "tracepoint/syscalls/sys_exit_*", None, None),
        ("raw_tracepoint", "raw_tracepoint/sys_exit", None, None),
        (
            "auto",
            "tp_btf/sys_exit",
            Some(("HOSTLENS_FAIL_ATTACH", "http_sock_recv")),
            Some("socket tracepoints were refused"),
        ),
        (
            "sock",
            sock,
            Some(("HOSTLENS_FAIL_ATTACH", "http_flush")),
            Some("records go to the rings one by one"),
        ),
        (
            "sock",
            sock,
            Some(("HOSTLENS_FORCE", "http_shared_rings")),
            None,
        ),
        // The user registers read with bpf_task_pt_regs alone, as where the kernel refuses
        // the kfunc bpf_rdonly_cast (simulated: the call linked to a type that is no function).
        (
            "sock",
            sock,
            Some(("HOSTLENS_FORCE", "http_kfunc_refused")),
            Some("refused with the kfunc bpf_rdonly_cast"),
        ),
    ] {
        let kfunc_refused = env.is_some_and(|(_, v)| v == "http_kfunc_refused");
        let env: Vec<(&str, &str)> = env.into_iter().collect();
        let agent = agent_env(&dir, &format!("  hook: {hook}\n"), &env);
        assert!(
            agent.log().contains(&format!("hook=\"{attached}\"")),
            "{hook}: {}",
            agent.log()
        );
        // The socket hooks read the user registers through the kfunc (this kernel has it:
        // 6.2 and later) unless it was refused; the syscall-exit hooks never use it.
        let regs = if attached == sock && !kfunc_refused {
            "bpf_rdonly_cast"
        } else {
            "bpf_task_pt_regs"
        };
        assert!(
            agent.log().contains(&format!("user_regs=\"{regs}\"")),
            "{hook}: {}",
            agent.log()
        );
        if let Some(why) = reloaded {
            assert!(
                agent.log().contains("loading the probe again") && agent.log().contains(why),
                "{}",
                agent.log()
            );
        }
        let hook = format!("{hook} {env:?}");
        // Several connections open at once, from two clients, on top of the counted ones.
        let _idle: Vec<std::net::TcpStream> = (0..8)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", nginx.port)).unwrap())
            .collect();
        let before = agent.scrape();
        let mut reqs: Vec<(&str, String, &str)> = Vec::new();
        reqs.extend((0..120).map(|_| ("GET", "/index.html".to_string(), "")));
        reqs.extend((0..30).map(|_| ("POST", "/post".to_string(), "a=b")));
        reqs.extend((0..15).map(|i| ("GET", format!("/missing/{i}"), "")));
        let got = py_client(nginx.port, &reqs);
        assert_eq!(got.len(), 165);
        let expect = [
            ("GET", "200", "/index.html", 120.0),
            ("POST", "200", "/post", 30.0),
            ("GET", "404", "/missing/*", 15.0),
        ];
        let after = settle(&agent, |e| {
            delta(e, &before, SERVER, &[("server_port", p)]) >= 165.0
                && delta(e, &before, CLIENT, &[("server_port", p)]) >= 165.0
        });
        for (m, st, r, n) in expect {
            let server = [
                ("server_port", p),
                ("http_request_method", m),
                ("http_response_status_code", st),
                ("http_route", r),
                ("process_name", "nginx"),
            ];
            assert_eq!(
                delta(&after, &before, SERVER, &server),
                n,
                "{hook}: server {m} {st} {r}"
            );
            let client = [
                ("server_port", p),
                ("http_request_method", m),
                ("http_response_status_code", st),
                ("process_name", py.as_str()),
            ];
            assert_eq!(
                delta(&after, &before, CLIENT, &client),
                n,
                "{hook}: client {m} {st}"
            );
        }
        assert_eq!(
            delta(&after, &before, SERVER, &[("server_port", p)]),
            165.0,
            "{hook}"
        );
        assert_eq!(lost(&after), lost(&before), "{hook}: events lost");
        if regs == "bpf_rdonly_cast" {
            // Where the user registers sit on a task's kernel stack, learned by the kernel
            // program at its first record: past the frame's 168 bytes, inside the stack.
            let at = regs_offset();
            assert!(
                at > 168 && at < 1 << 20 && at.is_multiple_of(8),
                "{hook}: HTTP_REGS_AT {at}"
            );
        }
    }
}

/// The value of the http object's one-entry array `HTTP_REGS_AT`, read with bpftool.
fn regs_offset() -> u64 {
    let out = Command::new("bpftool")
        .args(["map", "dump", "name", "HTTP_REGS_AT"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = text
        .split("value:")
        .nth(1)
        .unwrap_or_else(|| panic!("bpftool map dump: {text}"));
    let bytes: Vec<u8> = value
        .split_whitespace()
        .take(8)
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("bpftool: {text}")))
        .collect();
    u64::from_le_bytes(
        bytes
            .try_into()
            .unwrap_or_else(|_| panic!("bpftool: {text}")),
    )
}

#[test]
fn http_pipelined_requests_each_get_their_status() {
    if !privileged("http_pipelined_requests_each_get_their_status") {
        return;
    }
    let dir = temp_dir("pipeline");
    let agent = agent_with(&dir, "  capture_bytes: 1024\n");
    let nginx = Nginx::start(&dir.join("nginx"));
    let p = nginx.port.to_string();
    let p = p.as_str();
    let before = agent.scrape();
    let mut args = vec![p.to_string(), "10".to_string()];
    for i in 0..10 {
        args.push(if i % 2 == 0 {
            "/index.html".to_string()
        } else {
            format!("/nothing/{i}")
        });
    }
    let statuses = run_ok(
        Command::new("python3")
            .args(["-c", PY_PIPELINE])
            .args(&args),
    );
    assert_eq!(statuses.trim(), "200 404 200 404 200 404 200 404 200 404");
    let ok = [
        ("server_port", p),
        ("http_response_status_code", "200"),
        ("http_route", "/index.html"),
    ];
    let nf = [
        ("server_port", p),
        ("http_response_status_code", "404"),
        ("http_route", "/nothing/*"),
    ];
    let after = settle(&agent, |e| {
        delta(e, &before, SERVER, &[("server_port", p)]) >= 10.0
    });
    assert_eq!(delta(&after, &before, SERVER, &ok), 5.0);
    assert_eq!(delta(&after, &before, SERVER, &nf), 5.0);
    assert_eq!(delta(&after, &before, SERVER, &[("server_port", p)]), 10.0);

    // Deeper: 20 writes of 30 pipelined requests each; nginx answers several per writev.
    let before = after;
    let mut args = vec![p.to_string(), "30".to_string()];
    for i in 0..600 {
        args.push(if i % 3 == 0 {
            "/index.html".to_string()
        } else {
            format!("/deep/{i}")
        });
    }
    let statuses = run_ok(
        Command::new("python3")
            .args(["-c", PY_PIPELINE])
            .args(&args),
    );
    assert_eq!(
        statuses.split_whitespace().filter(|s| *s == "404").count(),
        400
    );
    let deep = [
        ("server_port", p),
        ("http_response_status_code", "404"),
        ("http_route", "/deep/*"),
    ];
    let after = settle(&agent, |e| {
        delta(e, &before, SERVER, &[("server_port", p)]) >= 600.0
    });
    assert_eq!(delta(&after, &before, SERVER, &ok), 200.0);
    assert_eq!(delta(&after, &before, SERVER, &deep), 400.0);
}

/// python3 http.server (threading, HTTP/1.1 keep-alive): `/slow` answers after 200 ms.
const PY_SERVER: &str = r#"
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body go out in two writes; without TCP_NODELAY the body waits for the
    # client's delayed ACK (~40 ms) after the server's write returned.
    disable_nagle_algorithm = True
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(0.2)
        body = b"done\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn http_latency_matches_the_clients() {
    if !privileged("http_latency_matches_the_clients") {
        return;
    }
    let dir = temp_dir("latency");
    let agent = agent_with(&dir, "  capture_bytes: 1024\n");
    let port = free_port();
    let _server = Proc(
        Command::new("python3")
            .args(["-c", PY_SERVER, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);
    let p = port.to_string();
    let p = p.as_str();
    let want = [
        ("server_port", p),
        ("http_route", "/slow"),
        ("http_response_status_code", "200"),
    ];
    let before = agent.scrape();
    let got = py_client(port, &vec![("GET", "/slow".to_string(), ""); 10]);
    let client_mean = got.iter().map(|(_, t)| t).sum::<f64>() / got.len() as f64;
    let after = settle(&agent, |e| delta(e, &before, SERVER, &want) >= 10.0);
    let n = delta(&after, &before, SERVER, &want);
    assert_eq!(n, 10.0);
    let mean = (sum_of(&after, SERVER, "sum", &want) - sum_of(&before, SERVER, "sum", &want)) / n;
    assert!(
        (mean - client_mean).abs() <= 0.10 * client_mean,
        "server-side mean {mean} s vs client-measured {client_mean} s"
    );

    // 10 MB via sendfile, read slowly by curl: the duration lies between its TTFB and total.
    let nginx = Nginx::start(&dir.join("nginx"));
    let np = nginx.port.to_string();
    let np = np.as_str();
    let want = [("server_port", np), ("http_route", "/big.bin")];
    let before = agent.scrape();
    let out = run_ok(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "--limit-rate",
        "50M",
        "-w",
        "%{http_code} %{time_starttransfer} %{time_total}",
        &format!("http://127.0.0.1:{np}/big.bin"),
    ]));
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f[0], "200");
    let (ttfb, total): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    let after = settle(&agent, |e| delta(e, &before, SERVER, &want) >= 1.0);
    assert_eq!(delta(&after, &before, SERVER, &want), 1.0);
    let d = sum_of(&after, SERVER, "sum", &want) - sum_of(&before, SERVER, "sum", &want);
    assert!(
        d >= ttfb && d <= total,
        "10 MB: duration {d} s, curl TTFB {ttfb} s, total {total} s"
    );
    let cwant = [("server_port", np), ("process_name", "curl")];
    assert_eq!(delta(&after, &before, CLIENT, &cwant), 1.0);
    let cd = sum_of(&after, CLIENT, "sum", &cwant) - sum_of(&before, CLIENT, "sum", &cwant);
    assert!(cd <= total, "client duration {cd} s > curl total {total} s");
}

/// A static file's body, sent with `sendfile` right after its head was written, joins the
/// head's record: nginx's side of a GET of a file costs as many records as a GET it answers
/// from memory with one write (one read, one write each). Without the join the file's body
/// would add a record per request. Only nginx is followed (the python client and this test's
/// scrapes are filtered out), so the records are nginx's.
#[test]
fn http_static_file_body_joins_its_head_record() {
    if !privileged("http_static_file_body_joins_its_head_record") {
        return;
    }
    let dir = temp_dir("joins");
    let agent = agent_with(&dir, "  include_processes: [nginx]\n");
    let nginx = Nginx::start(&dir.join("nginx"));
    let p = nginx.port.to_string();
    const N: usize = 1000;
    let mut per_path = Vec::new();
    for path in ["/index.html", "/post"] {
        let before = quiet(&agent);
        // A first connection makes the agent see the client process; its later sockets are
        // then filtered out from their first bytes.
        let mut reqs = vec![("GET", path.to_string(), ""), ("PAUSE", "1.0".into(), "")];
        reqs.extend((0..N).map(|_| ("GET", path.to_string(), "")));
        let got = py_client(nginx.port, &reqs);
        assert!(got.len() == N + 1 && got.iter().all(|(s, _)| *s == 200));
        let want = [("server_port", p.as_str()), ("http_route", path)];
        let after = settle(&agent, |e| {
            delta(e, &before, SERVER, &want) >= (N + 1) as f64
        });
        assert_eq!(delta(&after, &before, SERVER, &want), (N + 1) as f64);
        assert_eq!(lost(&after), lost(&before), "ring buffer events lost");
        per_path.push(records(&after) - records(&before));
    }
    let (file, memory) = (per_path[0], per_path[1]);
    eprintln!("records for {N} GETs: static file {file}, answered from memory {memory}");
    let n = N as f64;
    assert!(
        (2.0 * n..=2.0 * n + n / 20.0).contains(&memory),
        "{memory} records for {N} GETs answered from memory (one read, one write each)"
    );
    assert!(
        (file - memory).abs() <= n / 20.0,
        "{file} records for {N} GETs of a static file, {memory} answered from memory"
    );
}

/// The agent learns that a process is filtered out from its first connection's first record;
/// by then that connection is already copied. The kernel stops copying it at its next bytes
/// (and sends its close), not only the process's later connections.
#[test]
fn http_filtered_process_open_connection_stops_sending_records() {
    if !privileged("http_filtered_process_open_connection_stops_sending_records") {
        return;
    }
    let dir = temp_dir("skipopen");
    // Only nginx is traced: the python client is filtered out (and so are the scrapes).
    let agent = agent_with(&dir, "  include_processes: [nginx]\n");
    let nginx = Nginx::start(&dir.join("nginx"));
    let p = nginx.port.to_string();
    const N: usize = 1000;
    let before = quiet(&agent);
    // One connection: a first GET, a pause (the agent drains every 100 ms and puts the client
    // in the skip table), then N more GETs on the same connection.
    let mut reqs = vec![
        ("GET", "/index.html".to_string(), ""),
        ("SLEEP", "1.0".into(), ""),
    ];
    reqs.extend((0..N).map(|_| ("GET", "/index.html".to_string(), "")));
    let got = py_client(nginx.port, &reqs);
    assert!(got.len() == N + 1 && got.iter().all(|(s, _)| *s == 200));
    let want = [("server_port", p.as_str()), ("http_route", "/index.html")];
    let after = settle(&agent, |e| {
        delta(e, &before, SERVER, &want) >= (N + 1) as f64
    });
    assert_eq!(delta(&after, &before, SERVER, &want), (N + 1) as f64);
    assert!(series(&after, CLIENT, &[("server_port", p.as_str())]).is_empty());
    assert_eq!(lost(&after), lost(&before), "ring buffer events lost");
    // nginx: a read and a write per request (the file's sendfile joins the write). The
    // client's connection adds its first exchange and its close, not a read and a write per
    // request (which would make about 4 * N).
    let n = N as f64;
    let got = records(&after) - records(&before);
    eprintln!(
        "records for {} GETs from a filtered-out client: {got}",
        N + 1
    );
    assert!(
        (2.0 * n..=2.0 * n + n / 20.0).contains(&got),
        "{got} records for {} GETs on one connection of a filtered-out client",
        N + 1
    );
}

/// nginx's worker moved between the two CPUs all the time (its affinity flipped every
/// 100 µs): a static file's `sendfile` may then run on another CPU than the head's write,
/// whose batch may end with an older response of the same connection. The body joins only
/// its own head's record: every GET is counted, with no decode error.
#[test]
fn http_sendfile_after_a_cpu_move_joins_only_its_own_head() {
    if !privileged("http_sendfile_after_a_cpu_move_joins_only_its_own_head") {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test moves nginx between two CPUs; {cpus} here"
    );
    let dir = temp_dir("cpumove");
    let agent = agent_with(&dir, "  include_processes: [nginx]\n");
    let nginx = Nginx::start(&dir.join("nginx"));
    let master = nginx._proc.0.id();
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .expect("nginx master's children");
    let worker: i32 = children
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .expect("an nginx worker");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let set = |cpus: &[usize]| {
                // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
                let mut mask: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                for c in cpus {
                    unsafe { libc::CPU_SET(*c, &mut mask) };
                }
                // SAFETY: `mask` is a valid cpu_set_t of the size passed.
                unsafe {
                    libc::sched_setaffinity(worker, std::mem::size_of::<libc::cpu_set_t>(), &mask)
                }
            };
            let mut moves = 0u64;
            let mut cpu = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if set(&[cpu]) == 0 {
                    moves += 1;
                }
                cpu ^= 1;
                std::thread::sleep(Duration::from_micros(100));
            }
            set(&[0, 1]);
            moves
        })
    };
    const N: usize = 3000;
    let before = quiet(&agent);
    let got = py_client(nginx.port, &vec![("GET", "/index.html".to_string(), ""); N]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let moves = flipper.join().expect("affinity thread");
    assert!(got.len() == N && got.iter().all(|(s, _)| *s == 200));
    assert!(moves > 100, "nginx's worker moved only {moves} times");
    let p = nginx.port.to_string();
    let want = [("server_port", p.as_str()), ("http_route", "/index.html")];
    let after = settle(&agent, |e| delta(e, &before, SERVER, &want) >= N as f64);
    assert_eq!(
        decode_errors(&after),
        decode_errors(&before),
        "{}",
        after.text
    );
    assert_eq!(delta(&after, &before, SERVER, &want), N as f64);
    assert_eq!(lost(&after), lost(&before), "events lost");
}

/// With `include_ports`, the kernel marks a connection of any other port not-HTTP at its
/// first bytes: traffic to a port left out costs no record at all (not even this test's
/// scrapes), and the named port's is counted.
#[test]
fn http_ports_filtered_out_send_no_records() {
    if !privileged("http_ports_filtered_out_send_no_records") {
        return;
    }
    let dir = temp_dir("ports");
    let nginx = Nginx::start(&dir.join("nginx"));
    let p = nginx.port.to_string();
    let agent = agent_with(&dir, &format!("  include_ports: [{p}]\n"));
    let other = own_server(false);
    const N: usize = 300;
    let gets = |path: &str| vec![("GET", path.to_string(), ""); N];
    let before = quiet(&agent);
    let got = py_client(other, &gets("/left-out"));
    assert!(got.len() == N && got.iter().all(|(s, _)| *s == 200));
    std::thread::sleep(Duration::from_millis(500));
    let after = quiet(&agent);
    assert_eq!(
        records(&after) - records(&before),
        0.0,
        "records of connections to port {other}, which include_ports leaves out"
    );
    assert!(series(&after, SERVER, &[("server_port", &other.to_string())]).is_empty());
    let before = after;
    let got = py_client(nginx.port, &gets("/index.html"));
    assert!(got.len() == N && got.iter().all(|(s, _)| *s == 200));
    let want = [("server_port", p.as_str()), ("http_route", "/index.html")];
    let after = settle(&agent, |e| delta(e, &before, SERVER, &want) >= N as f64);
    assert_eq!(delta(&after, &before, SERVER, &want), N as f64);
    let client = [("server_port", p.as_str()), ("server_address", "127.0.0.1")];
    assert_eq!(delta(&after, &before, CLIENT, &client), N as f64);
    // Both ends of each exchange: at least a read and a write each.
    assert!(records(&after) - records(&before) >= 4.0 * N as f64);
}

#[test]
fn http_client_side_from_curl() {
    if !privileged("http_client_side_from_curl") {
        return;
    }
    let dir = temp_dir("client");
    // Only curl is traced: nginx's side of the same requests must not appear.
    let agent = agent_with(&dir, "  include_processes: [curl]\n");
    let nginx = Nginx::start(&dir.join("nginx"));
    let p = nginx.port.to_string();
    let p = p.as_str();
    let before = agent.scrape();
    // One curl process, one keep-alive connection, 15 + 5 requests.
    let mut args = vec!["-s".to_string()];
    for i in 0..20 {
        let path = if i < 15 {
            "/index.html".to_string()
        } else {
            format!("/gone/{i}")
        };
        args.extend([
            "-o".into(),
            "/dev/null".into(),
            format!("http://127.0.0.1:{p}{path}"),
        ]);
    }
    run_ok(Command::new("curl").args(&args));
    let ok = [
        ("server_address", "127.0.0.1"),
        ("server_port", p),
        ("process_name", "curl"),
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
    ];
    let mut nf = ok;
    nf[4] = ("http_response_status_code", "404");
    let after = settle(&agent, |e| {
        delta(e, &before, CLIENT, &ok) >= 15.0 && delta(e, &before, CLIENT, &nf) >= 5.0
    });
    assert_eq!(delta(&after, &before, CLIENT, &ok), 15.0);
    assert_eq!(delta(&after, &before, CLIENT, &nf), 5.0);
    // Socket hooks (the default here): the filtered-out nginx worker is in the kernel's skip
    // table, so its later connections are never copied.
    assert!(
        agent.log().contains("hook=\"tp_btf/sock_send_length"),
        "{}",
        agent.log()
    );
    let skipped = skip_table();
    let nginx_pids: Vec<u32> = skipped
        .iter()
        .copied()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "nginx")
        })
        .collect();
    assert!(
        !nginx_pids.is_empty(),
        "no nginx process in HTTP_SKIP: {skipped:?}"
    );
    // An IPv6 peer: its address comes from the socket (`skc_v6_daddr`).
    let v6_port = free_port();
    let _server = Proc(
        Command::new("python3")
            .args(["-m", "http.server", "-b", "::1", &v6_port.to_string()])
            .current_dir(dir.join("nginx/www"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("::1", v6_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on [::1]:{v6_port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let vp = v6_port.to_string();
    let v6 = [
        ("server_address", "::1"),
        ("server_port", vp.as_str()),
        ("process_name", "curl"),
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
    ];
    let before = agent.scrape();
    let mut args = vec!["-s".to_string()];
    for _ in 0..7 {
        args.extend([
            "-o".into(),
            "/dev/null".into(),
            format!("http://[::1]:{vp}/index.html"),
        ]);
    }
    run_ok(Command::new("curl").args(&args));
    let after = settle(&agent, |e| delta(e, &before, CLIENT, &v6) >= 7.0);
    assert_eq!(delta(&after, &before, CLIENT, &v6), 7.0);
    // Once nginx has exited, the agent's sweep (every 5 s here) takes it off the skip table.
    drop(nginx);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = skip_table();
        if !left.iter().any(|p| nginx_pids.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "exited nginx {nginx_pids:?} still in HTTP_SKIP: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The tgids in the http probe's kernel skip table (`bpftool map dump name HTTP_SKIP`).
fn skip_table() -> Vec<u32> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "name", "HTTP_SKIP"])
        .output()
        .expect("run bpftool (cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v.as_array()
        .expect("a list of entries")
        .iter()
        .map(|e| {
            // Without BTF for the map, keys are lists of hex bytes ("0x2a", ...), little-endian.
            let bytes: Vec<u8> = e["key"]
                .as_array()
                .expect("key bytes")
                .iter()
                .map(|b| {
                    u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
                })
                .collect();
            u32::from_le_bytes(bytes[..4].try_into().unwrap())
        })
        .collect()
}

#[test]
fn http_route_cardinality_is_bounded() {
    if !privileged("http_route_cardinality_is_bounded") {
        return;
    }
    let dir = temp_dir("cardinality");
    // The python client is excluded: only nginx's side is decoded (and the client's bytes
    // never leave the kernel once the agent has seen its connect). The rings are 32 MiB: the
    // agent under test is a debug build, whose decoder, sharing two CPUs with four busy
    // clients and nginx, falls behind this burst (a release build decodes a request in
    // about a microsecond); what is tested here is the route collapse, not the buffer.
    let py = python_comm();
    let agent = agent_with(
        &dir,
        &format!(
            "  capture_bytes: 1024\n  ring_buffer_bytes: 33554432\n  exclude_processes: [\"{py}\"]\n"
        ),
    );
    let nginx = Nginx::start(&dir.join("nginx"));
    let p = nginx.port.to_string();
    let p = p.as_str();
    let before = agent.scrape();
    // Four clients, 25,000 sequential keep-alive requests each, every path distinct.
    let clients: Vec<Child> = (0..4)
        .map(|k| {
            Command::new("python3")
                .args(["-c", PY_PIPELINE, p, "1", "--users", &k.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut n404 = 0;
    for c in clients {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        n404 += String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|s| *s == "404")
            .count();
    }
    assert_eq!(n404, 100_000);
    let want = [("server_port", p), ("http_route", "/users/*")];
    let after = settle(&agent, |e| delta(e, &before, SERVER, &want) >= 100_000.0);
    assert_eq!(
        delta(&after, &before, SERVER, &want),
        100_000.0,
        "lost events: {}",
        lost(&after) - lost(&before)
    );
    let s = series(&after, SERVER, &[("server_port", p)]);
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(series(&after, CLIENT, &[("server_port", p)]).is_empty());
}

/// A python3 server and client on one keep-alive connection, each thread moving to another
/// CPU between its read and its write (`sched_setaffinity`): argv = request count, CPU count.
/// The server prints its port, the client the statuses it read.
const PY_MIGRATING: &str = r#"
import os, socket, sys, threading
n = int(sys.argv[1]); cpus = int(sys.argv[2])
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
port = l.getsockname()[1]
def serve():
    c, _ = l.accept()
    for i in range(n):
        os.sched_setaffinity(0, {i % cpus})
        data = b""
        while not data.endswith(b"\r\n\r\n"):
            data += c.recv(4096)
        os.sched_setaffinity(0, {(i + 1) % cpus})
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    c.close()
t = threading.Thread(target=serve); t.start()
s = socket.create_connection(("127.0.0.1", port)); f = s.makefile("rb")
statuses = []
for i in range(n):
    os.sched_setaffinity(0, {(i + 1) % cpus})
    s.sendall(b"GET /migrating HTTP/1.1\r\nHost: x\r\n\r\n")
    os.sched_setaffinity(0, {i % cpus})
    statuses.append(f.readline().split()[1].decode())
    while f.readline() != b"\r\n":
        pass
    f.read(2)
f.close(); s.close(); t.join()
print(port, " ".join(statuses))
"#;

/// The kernel writes one ring buffer per CPU; a connection whose reads and writes happen on
/// different CPUs has its records in different rings, and the agent must put them back in
/// order: every request paired with its own response, nothing counted as unpaired.
#[test]
fn http_records_from_several_cpus_stay_in_order() {
    if !privileged("http_records_from_several_cpus_stay_in_order") {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        println!(
            "SKIPPED http_records_from_several_cpus_stay_in_order: needs two CPUs, has {cpus}"
        );
        if std::env::var_os("HOSTLENS_REQUIRE_PRIVILEGED").is_some() {
            panic!("one CPU: the per-CPU rings cannot be tested");
        }
        return;
    }
    let dir = temp_dir("cpus");
    let agent = agent_with(&dir, "");
    // The default 4 MiB is shared by one ring per CPU (at most eight), each a power of two.
    let possible: u32 = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .unwrap()
        .trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u32>().unwrap() - a.parse::<u32>().unwrap() + 1,
            None => 1,
        })
        .sum();
    let rings = possible.min(8);
    let share = (4u32 << 20) / rings;
    let each = if share.is_power_of_two() {
        share
    } else {
        share.next_power_of_two() / 2
    };
    let want_log = format!("rings={rings} ring_bytes={each}");
    assert!(
        agent.log().contains(&want_log),
        "{want_log}: {}",
        agent.log()
    );
    let py = python_comm();
    let before = agent.scrape();
    let n = 3000;
    let out = run_ok(Command::new("python3").args([
        "-c",
        PY_MIGRATING,
        &n.to_string(),
        &cpus.min(4).to_string(),
    ]));
    let mut words = out.split_whitespace();
    let port = words.next().unwrap().to_string();
    assert!(
        words.clone().count() == n && words.all(|w| w == "200"),
        "{out}"
    );
    let p = port.as_str();
    let after = settle(&agent, |e| {
        delta(e, &before, SERVER, &[("server_port", p)]) >= n as f64
            && delta(e, &before, CLIENT, &[("server_port", p)]) >= n as f64
    });
    let want = [
        ("server_port", p),
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
        ("process_name", py.as_str()),
    ];
    let server: Vec<(&str, &str)> = want
        .iter()
        .copied()
        .chain([("http_route", "/migrating")])
        .collect();
    assert_eq!(delta(&after, &before, SERVER, &server), n as f64);
    assert_eq!(
        delta(&after, &before, SERVER, &[("server_port", p)]),
        n as f64
    );
    assert_eq!(delta(&after, &before, CLIENT, &want), n as f64);
    assert_eq!(
        delta(&after, &before, CLIENT, &[("server_port", p)]),
        n as f64
    );
    assert_eq!(
        decode_errors(&after),
        decode_errors(&before),
        "{}",
        after.text
    );
    assert_eq!(lost(&after), lost(&before), "events lost");
}

/// The test's own server: per connection, requests until close. `/interim` answers a 103
/// interim response, then a chunked 200 written in three writes; anything else a 200 with
/// Content-Length. With `speak_first`, it writes a response before any request.
fn own_server(speak_first: bool) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                if speak_first {
                    let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
                }
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let Ok(n) = c.read(&mut tmp) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        // Answer only once the whole body (Content-Length) is in.
                        let body_len = String::from_utf8_lossy(&buf[..end])
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + body_len {
                            break;
                        }
                        let head: Vec<u8> = buf.drain(..end + 4 + body_len).collect();
                        let ok = if head.starts_with(b"GET /interim ") {
                            c.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
                                .and_then(|_| {
                                    c.write_all(
                                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                    )
                                })
                                .and_then(|_| c.write_all(b"5\r\nhello\r\n"))
                                .and_then(|_| c.write_all(b"0\r\n\r\n"))
                        } else {
                            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes")
                        };
                        if ok.is_err() {
                            return;
                        }
                    }
                    if buf.len() > 1 << 20 {
                        buf.clear();
                    }
                }
            });
        }
    });
    port
}

fn own_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn http_own_server_interim_chunked_and_split_heads() {
    if !privileged("http_own_server_interim_chunked_and_split_heads") {
        return;
    }
    let dir = temp_dir("own");
    // A second server whose port is excluded: neither side of its traffic may appear.
    let excluded = own_server(false);
    let agent = agent_with(
        &dir,
        &format!("  exclude_ports: [{excluded}]\n  route_templates: [\"/tpl/{{name}}/x\"]\n"),
    );
    let port = own_server(false);
    let p = port.to_string();
    let p = p.as_str();
    let me = own_comm();
    let before = agent.scrape();
    let got = py_client(
        port,
        &[
            ("GET", "/interim".into(), ""),
            ("GET", "/interim".into(), ""),
            ("GET", "/interim".into(), ""),
            ("GET", "/plain".into(), ""),
            ("GET", "/tpl/alice/x".into(), ""),
        ],
    );
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        [200, 200, 200, 200, 200]
    );
    // A head split over three writes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for part in [&b"GET /spl"[..], b"it HTTP/1.1\r\nHo", b"st: x\r\n\r\n"] {
        s.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut resp = [0u8; 64];
    let n = s.read(&mut resp).unwrap();
    assert!(resp[..n].starts_with(b"HTTP/1.1 200"));
    drop(s);
    let interim = [
        ("server_port", p),
        ("http_route", "/interim"),
        ("http_response_status_code", "200"),
    ];
    let plain = [("server_port", p), ("http_route", "/plain")];
    let split = [("server_port", p), ("http_route", "/split")];
    let tpl = [("server_port", p), ("http_route", "/tpl/{name}/x")];
    let after = settle(&agent, |e| {
        delta(e, &before, SERVER, &[("server_port", p)]) >= 6.0
    });
    assert_eq!(
        delta(&after, &before, SERVER, &tpl),
        1.0,
        "configured route template"
    );
    assert_eq!(delta(&after, &before, SERVER, &interim), 3.0);
    assert_eq!(delta(&after, &before, SERVER, &plain), 1.0);
    assert_eq!(delta(&after, &before, SERVER, &split), 1.0);
    assert_eq!(
        delta(&after, &before, SERVER, &[("server_port", p)]),
        6.0,
        "103 responses are not requests"
    );
    py_client(excluded, &[("GET", "/plain".into(), "")]);
    std::thread::sleep(Duration::from_millis(300));
    let ex = excluded.to_string();
    let e = agent.scrape();
    assert!(series(&e, SERVER, &[("server_port", &ex)]).is_empty());
    assert!(series(&e, CLIENT, &[("server_port", &ex)]).is_empty());
    let mine = series(&after, SERVER, &[("server_port", p)]);
    assert!(
        mine.iter().all(|l| l.get("process_name") == Some(&me)),
        "{mine:?} vs {me}"
    );
}

/// Sends raw bytes on a new connection, optionally resets it (SO_LINGER 0) instead of reading.
fn raw(port: u16, bytes: &[u8], reset: bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(bytes);
    if reset {
        // SO_LINGER with a zero timeout: close sends RST.
        let lg = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on our own open socket with a correctly sized linger struct.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const lg).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        return;
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

#[test]
fn http_bad_input_counts_nothing_false() {
    if !privileged("http_bad_input_counts_nothing_false") {
        return;
    }
    let dir = temp_dir("bad");
    let agent = agent_with(&dir, "  capture_bytes: 1024\n");
    let nginx = Nginx::start(&dir.join("nginx"));
    let own = own_server(false);
    let talker = own_server(true);
    let before = agent.scrape();
    let mut x: u64 = 0x2545f4914f6cdd1d;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let tls_hello: &[u8] = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x00\x01\x02\x03";
    let mut long_url = b"GET /".to_vec();
    long_url.extend(std::iter::repeat_n(b'a', 64 * 1024));
    long_url.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    for port in [nginx.port, own] {
        raw(port, &random, false);
        raw(port, tls_hello, false);
        raw(port, b"*1\r\n$4\r\nPING\r\n", false);
        raw(port, b"SSH-2.0-OpenSSH_9.2\r\n", false);
        raw(port, b"GET\r\n\r\n", false);
        raw(port, b"GET /x HTTP/9.9\r\n\r\n", false);
        raw(port, b"GET /half HTTP/1.1\r\nHost", true);
    }
    // Reset mid-body, before the server (which waits for the whole body) answered. (nginx
    // answers a static location before reading the body, so it is not used here.)
    raw(
        own,
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc",
        true,
    );
    // Requests that are real, with strange targets: counted, with bounded routes.
    raw(nginx.port, &long_url, false);
    raw(
        nginx.port,
        b"GET /caf\xe9/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    );
    // A response nobody asked for, then nothing.
    raw(talker, b"", false);
    let np = nginx.port.to_string();
    let np = np.as_str();
    let op = own.to_string();
    let tp = talker.to_string();
    let after = settle(&agent, |e| {
        delta(e, &before, SERVER, &[("server_port", np)]) >= 2.0
    });
    let per_series = |port: &str| {
        let mut d = BTreeMap::new();
        for l in series(&after, SERVER, &[("server_port", port)]) {
            let want: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let n = delta(&after, &before, SERVER, &want);
            if n != 0.0 {
                d.insert(
                    format!(
                        "{} {} {}",
                        l["http_request_method"], l["http_response_status_code"], l["http_route"]
                    ),
                    n,
                );
            }
        }
        d
    };
    let ng = per_series(np);
    assert_eq!(
        ng,
        BTreeMap::from([
            ("GET 404 /*/*".to_string(), 1.0),
            ("GET 414 /*".to_string(), 1.0)
        ]),
        "nginx: only the long-URL and non-UTF-8 requests are requests"
    );
    assert_eq!(per_series(&op), BTreeMap::new(), "own server");
    assert_eq!(per_series(&tp), BTreeMap::new(), "speak-first server");
    assert!(
        after
            .get("hostlens_http_decode_errors_total{reason=\"unpaired_response\"}")
            .unwrap()
            > before
                .get("hostlens_http_decode_errors_total{reason=\"unpaired_response\"}")
                .unwrap()
    );
    assert!(!agent.log().contains("panicked"), "{}", agent.log());
    // The state of closed connections is gone.
    let conns = after.get("hostlens_http_connections").unwrap();
    assert!(conns < 1000.0, "connections held: {conns}");
}

#[test]
fn http_series_of_exited_processes_disappear() {
    if !privileged("http_series_of_exited_processes_disappear") {
        return;
    }
    let dir = temp_dir("grace");
    let agent = agent_with(&dir, "  process_grace_period_seconds: 2\n");
    let port = free_port();
    // A uniquely named server process (PR_SET_NAME), so no other process keeps the name alive.
    let name = format!("hlgrace{}", std::process::id() % 100_000);
    let script =
        format!("import ctypes\nctypes.CDLL(None).prctl(15, b'{name}', 0, 0, 0)\n{PY_SERVER}");
    let server = Proc(
        Command::new("python3")
            .args(["-c", &script, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(port);
    let p = port.to_string();
    let p = p.as_str();
    py_client(port, &[("GET", "/x".into(), "")]);
    let want = [("server_port", p), ("process_name", name.as_str())];
    let e = settle(&agent, |e| count(e, SERVER, &want) >= 1.0);
    assert_eq!(count(&e, SERVER, &want), 1.0, "{}", e.text);
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !series(&agent.scrape(), SERVER, &want).is_empty() {
        assert!(
            Instant::now() < deadline,
            "series still there after the grace period"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A keep-alive connection that stays silent past `http.connection_idle_timeout_seconds`:
/// what it left unfinished (half a request head) is given up, and its later requests are
/// still counted under its own labels (nginx's port; the client's peer address and port),
/// not as a connection of unknown port.
#[test]
fn http_idle_connection_keeps_its_labels() {
    if !privileged("http_idle_connection_keeps_its_labels") {
        return;
    }
    let dir = temp_dir("idle");
    // Idle after 1 s; the sweep runs every second (half the grace period).
    let agent = agent_with(
        &dir,
        "  connection_idle_timeout_seconds: 1\n  process_grace_period_seconds: 2\n",
    );
    let nginx = Nginx::start(&dir.join("nginx"));
    let p = nginx.port.to_string();
    let p = p.as_str();
    let before = agent.scrape();
    let script = format!(
        "{PY_RESPONSE}{}",
        r#"
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
req = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
s.sendall(req); print(response(f))
s.sendall(req[:18]); time.sleep(3.5)
s.sendall(req[18:]); print(response(f))
s.sendall(req); print(response(f))
"#
    );
    let out = run_ok(Command::new("python3").args(["-c", &script, p]));
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["200"; 3]);
    // The first request and the last; the one whose head straddled the silence was given up.
    assert_counted_under_own_labels(&agent, &before, p, 2.0);
}

/// More connections than `http.max_connections`: the decoder drops the least recently active
/// ones, and their later requests are still counted under their own labels, from the endpoint
/// the socket hooks put in every data record (not as connections of unknown port).
#[test]
fn http_connections_beyond_the_table_keep_their_labels() {
    if !privileged("http_connections_beyond_the_table_keep_their_labels") {
        return;
    }
    let dir = temp_dir("table");
    // Each connection is followed twice (python's client side, nginx's server side).
    let agent = agent_with(&dir, "  max_connections: 2\n");
    let nginx = Nginx::start(&dir.join("nginx"));
    let p = nginx.port.to_string();
    let p = p.as_str();
    let before = agent.scrape();
    let script = format!(
        "{PY_RESPONSE}{}",
        r#"
port = int(sys.argv[1])
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
files = [c.makefile("rb") for c in conns]
for i in [0, 1, 2, 0, 1, 2, 0, 1, 2]:
    conns[i].sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    print(response(files[i]))
"#
    );
    let out = run_ok(Command::new("python3").args(["-c", &script, p]));
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["200"; 9]);
    assert_counted_under_own_labels(&agent, &before, p, 9.0);
}

/// A python3 function reading one response head and its Content-Length body from file `f`;
/// returns the status.
const PY_RESPONSE: &str = r#"
import socket, sys, time
def response(f):
    length = 0
    status = int(f.readline().split()[1])
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
    f.read(length)
    return status
"#;

/// `n` requests of a python3 client to nginx on port `p` since `before` are counted on both
/// sides, under nginx's port and the client's peer address and port, none under an unknown
/// port; nothing lost.
fn assert_counted_under_own_labels(agent: &Agent, before: &Exposition, p: &str, n: f64) {
    let py = python_comm();
    let server = [("server_port", p), ("process_name", "nginx")];
    let client = [
        ("server_address", "127.0.0.1"),
        ("server_port", p),
        ("process_name", py.as_str()),
    ];
    let e = settle(agent, |e| {
        delta(e, before, SERVER, &server) >= n && delta(e, before, CLIENT, &client) >= n
    });
    assert_eq!(delta(&e, before, SERVER, &server), n, "{}", e.text);
    assert_eq!(delta(&e, before, CLIENT, &client), n, "{}", e.text);
    for family in [SERVER, CLIENT] {
        assert!(
            series(&e, family, &[("server_port", "0")]).is_empty(),
            "{family}: a series of unknown port:\n{}",
            e.text
        );
    }
    assert_eq!(lost(&e), 0.0);
}

/// Two wrk threads opening a new connection per request (`Connection: close`), thousands of
/// new connections a second on two CPUs: every request wrk completed is counted once on the
/// client side, under its own labels, and no response is left without its request. (Until
/// connection ids carried the CPU number, two connections started in the same nanosecond on
/// two CPUs shared an id, and the second replaced the first: a request lost, a response
/// unpaired, a few times a minute at this rate.)
#[test]
fn http_connection_churn_from_two_threads_counts_exactly() {
    if !privileged("http_connection_churn_from_two_threads_counts_exactly") {
        return;
    }
    let dir = temp_dir("churn");
    // Room for the bursts the (debug-built) agent drains behind.
    let agent = agent_with(&dir, "  ring_buffer_bytes: 33554432\n");
    let nginx = Nginx::start(&dir.join("nginx"));
    let p = nginx.port.to_string();
    let p = p.as_str();
    let before = agent.scrape();
    let out = run_ok(Command::new("wrk").args([
        "-t2",
        "-c16",
        "-d10s",
        "-H",
        "Connection: close",
        &format!("http://127.0.0.1:{p}/wrk.html"),
    ]));
    let done: f64 = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .map(|(n, _)| n.trim().parse().unwrap())
        .expect("wrk summary");
    assert!(done > 10_000.0, "wrk completed only {done}:\n{out}");
    let client = [
        ("server_address", "127.0.0.1"),
        ("server_port", p),
        ("process_name", "wrk"),
    ];
    let e = settle(&agent, |e| delta(e, &before, CLIENT, &client) >= done);
    assert_eq!(
        delta(&e, &before, CLIENT, &client),
        done,
        "wrk completed {done}:\n{}",
        e.text
    );
    let unpaired = "hostlens_http_decode_errors_total{reason=\"unpaired_response\"}";
    assert_eq!(
        e.get(unpaired),
        before.get(unpaired),
        "responses without request"
    );
    // nginx answered each of them, and at most the 16 wrk stopped waiting for.
    let served = delta(&e, &before, SERVER, &[("server_port", p)]);
    assert!(
        served >= done && served <= done + 16.0,
        "nginx side {served}, wrk completed {done}"
    );
    assert_eq!(lost(&e), lost(&before), "events lost");
}
