//! Helpers shared by the integration tests: start the real `hostlens` binary, talk HTTP to
//! it, parse its text exposition.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod prom;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hostlens"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A running agent; killed on drop. Its stderr is collected in `log`.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<String>>,
}

impl Agent {
    /// Starts `program` (normally the hostlens binary) with `args` plus a listen address on a
    /// free loopback port, and waits until `/readyz` answers 200.
    pub fn start_with(program: &Path, args: &[&str], wrap: Option<&[&str]>) -> Agent {
        let agent = Self::spawn(program, args, wrap, &[]);
        agent.wait_ready();
        agent
    }

    /// Starts the agent with extra environment variables and returns once it has reported its
    /// address, without waiting for readiness (e.g. when it serves TLS only).
    pub fn spawn(
        program: &Path,
        args: &[&str],
        wrap: Option<&[&str]>,
        env: &[(&str, &str)],
    ) -> Agent {
        let mut cmd = match wrap {
            Some(w) => {
                let mut c = Command::new(w[0]);
                c.args(&w[1..]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(["--web.listen-address", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start hostlens");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(addr) = line.split("address=").nth(1) {
                    let port = addr
                        .split_whitespace()
                        .next()
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| p.parse::<u16>().ok());
                    if let Some(p) = port {
                        let _ = tx.send(p);
                        sent = true;
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "hostlens did not report its address; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Agent { child, port, log }
    }

    /// Waits until `/readyz` answers 200 over plain HTTP (at most 30 s).
    pub fn wait_ready(&self) {
        let agent = self;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = agent.try_get("/readyz", &[])
                && r.status == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "hostlens not ready after 30 s; log:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn start(args: &[&str]) -> Agent {
        Self::start_with(&bin(), args, None)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn try_get(&self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
        http_get(self.port, path, headers)
    }

    pub fn get(&self, path: &str) -> Response {
        self.try_get(path, &[]).expect("GET")
    }

    /// `/metrics` in text 0.0.4, parsed.
    pub fn scrape(&self) -> Exposition {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.text());
        Exposition::parse(&r.text())
    }

    /// Sends SIGTERM and waits for the exit (at most `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "hostlens did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close`, enough for the agent's endpoints.
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..eol])
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// A parsed text 0.0.4 exposition: family types and every sample keyed by its series.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    /// `name{sorted labels}` -> value
    pub samples: BTreeMap<String, f64>,
    pub text: String,
}

impl Exposition {
    pub fn parse(text: &str) -> Exposition {
        let mut e = Exposition {
            text: text.to_string(),
            ..Default::default()
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (n, t) = rest.split_once(' ').unwrap();
                e.types.insert(n.to_string(), t.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            e.samples.insert(series.to_string(), value);
        }
        e
    }

    /// Value of a series written exactly as exposed, e.g. `syscalls_total{syscall="getpid"}`.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// Sum of every series of `family` carrying all of `labels` (other labels free).
    pub fn sum(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(family, labels).map(|(_, v)| v).sum()
    }

    /// Series of `family` carrying all of `labels`.
    pub fn matching<'a>(
        &'a self,
        family: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.samples.iter().filter_map(move |(k, v)| {
            let rest = k.strip_prefix(family)?;
            if !(rest.is_empty() || rest.starts_with('{')) {
                return None;
            }
            labels
                .iter()
                .all(|(n, val)| rest.contains(&format!("{n}=\"{val}\"")))
                .then_some((k.as_str(), *v))
        })
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Skips a privileged test with a printed reason, unless HOSTLENS_REQUIRE_PRIVILEGED is set
/// (CI), where a skip is a failure. Returns true when the test may run.
pub fn privileged(test: &str) -> bool {
    let reason = if !is_root() {
        Some("not running as root")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no BTF at /sys/kernel/btf/vmlinux")
    } else {
        None
    };
    match reason {
        None => true,
        Some(r) => {
            if std::env::var_os("HOSTLENS_REQUIRE_PRIVILEGED").is_some_and(|v| v != "0") {
                panic!("{test}: cannot run ({r}) and HOSTLENS_REQUIRE_PRIVILEGED is set");
            }
            eprintln!("SKIPPED {test}: {r}");
            false
        }
    }
}

/// Runs `cmd`, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compares `actual` with `tests/golden/<name>`; HOSTLENS_UPDATE_GOLDEN=1 rewrites the file
/// instead.
pub fn assert_golden(name: &str, actual: &str) {
    let path = repo_root().join("tests/golden").join(name);
    if std::env::var_os("HOSTLENS_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with HOSTLENS_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
        let diff: Vec<String> = (0..e.len().max(a.len()))
            .filter(|i| e.get(*i) != a.get(*i))
            .take(10)
            .map(|i| {
                format!(
                    "line {}:\n  golden: {}\n  actual: {}",
                    i + 1,
                    e.get(i).unwrap_or(&"(none)"),
                    a.get(i).unwrap_or(&"(none)")
                )
            })
            .collect();
        panic!(
            "{} differs from the output ({} vs {} lines):\n{}\n(HOSTLENS_UPDATE_GOLDEN=1 regenerates)",
            path.display(),
            e.len(),
            a.len(),
            diff.join("\n")
        );
    }
}

/// `promtool check metrics` (Debian package prometheus) over `text`. Panics when promtool
/// cannot parse it (exit 1); returns its lint remarks (exit 3), empty when it has none.
pub fn promtool_check(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed by cargo xtask setup");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "promtool could not parse:\n{report}"
    );
    report
}

/// Panics on any promtool remark but those node_exporter's own names draw, which
/// compatibility requires: mixed-case families (meminfo, netstat, sockstat, vmstat) and the
/// entropy families counted in bits.
pub fn assert_only_node_exporter_lints(report: &str) {
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        let camel = [
            "node_memory_",
            "node_netstat_",
            "node_sockstat_",
            "node_vmstat_",
        ]
        .iter()
        .any(|p| line.starts_with(p))
            && line.ends_with("metric names should be written in 'snake_case' not 'camelCase'");
        let bits = line.starts_with("node_entropy_")
            && line.ends_with("use base unit \"bytes\" instead of \"bits\"");
        assert!(
            camel || bits,
            "promtool objects: {line}\nfull report:\n{report}"
        );
    }
}

/// A test CA (`ca.pem`, `ca.key`), a server certificate for 127.0.0.1/localhost
/// (`server.pem`, `server.key`) and a client certificate (`client.pem`, `client.key`), made
/// with openssl in `dir`; the keys are readable by every user (agents run as nobody too).
pub fn make_test_certs(dir: &Path) {
    let sh = |args: &[&str]| {
        run_ok(Command::new("openssl").args(args).current_dir(dir));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    sh(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=hostlens test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for (who, cn) in [("server", "/CN=127.0.0.1"), ("client", "/CN=scraper")] {
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let pem = format!("{who}.pem");
        let ext = format!("{who}.ext");
        sh(&[
            &["req"][..],
            &ec,
            &["-keyout", &key, "-out", &csr, "-subj", cn],
        ]
        .concat());
        sh(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    for f in ["server.key", "client.key", "ca.key"] {
        std::fs::set_permissions(
            dir.join(f),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
    }
}
