//! `/metrics` security and service lifecycle, against the real binary and real clients (curl,
//! openssl s_client, setpriv): basic auth, TLS and mTLS with a CA made by the test, plain HTTP
//! to the TLS port, broken web configs, SIGHUP reload, sd_notify, running as a non-root user
//! with only the unit's capabilities, and the capability drop after attach. Tests that need
//! the kernel's eBPF skip through `common::privileged` (a failure under CI). Run one at a time.
mod common;

use std::{
    collections::BTreeSet,
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{Agent, Exposition, bin, http_get, privileged, repo_root, run_ok};

/// A scratch directory readable by every user, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("hostlens-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(d)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
    fn write(&self, f: &str, text: &str) -> PathBuf {
        let p = self.path(f);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The common test PKI plus a client certificate from a different, untrusted CA.
fn make_pki(dir: &Scratch) {
    common::make_test_certs(&dir.0);
    let sh = |args: &[&str]| {
        run_ok(Command::new("openssl").args(args).current_dir(&dir.0));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    // A client certificate from a different, untrusted CA.
    sh(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "rogue.key",
            "-out",
            "rogue.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rogue",
        ],
    ]
    .concat());
    std::fs::set_permissions(
        dir.path("rogue.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
}

/// `curl` with `args`; returns (HTTP status, body). Status 0 means no HTTP answer at all
/// (refused handshake).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn wait_for(what: &str, agent: &Agent, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sighup(agent: &Agent) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
}

#[test]
fn basic_auth_answers_401_without_or_with_wrong_credentials() {
    let dir = Scratch::new("auth");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.write("web.yml", &format!("basic_auth_users:\n  prom: '{hash}'\n"));
    let agent = Agent::start(&["--web.config.file", s(&web), "--probe.disable-defaults"]);
    for (what, headers) in [
        ("no credentials", vec![]),
        (
            "wrong password",
            vec![("Authorization", basic("prom", "nope"))],
        ),
        (
            "unknown user",
            vec![("Authorization", basic("grafana", "s3cret"))],
        ),
        (
            "not basic",
            vec![("Authorization", "Bearer s3cret".to_string())],
        ),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for path in ["/metrics", "/"] {
            let r = agent.try_get(path, &h).unwrap();
            assert_eq!(r.status, 401, "{what} {path}");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Basic realm=\"hostlens\""),
                "{what}"
            );
            assert!(!r.text().contains("node_load1"), "{what}: no data leaks");
        }
    }
    let auth = basic("prom", "s3cret");
    let r = agent
        .try_get("/metrics", &[("Authorization", &auth)])
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(Exposition::parse(&r.text()).get("node_load1").is_some());
    // Probes stay open for kubelet and systemd.
    assert_eq!(agent.get("/healthz").status, 200);
    assert_eq!(agent.get("/readyz").status, 200);
    // curl's own basic auth, as Prometheus sends it.
    let (code, body) = curl(&[
        "-u",
        "prom:s3cret",
        &format!("http://127.0.0.1:{}/metrics", agent.port),
    ]);
    assert_eq!(code, 200);
    assert!(body.contains("node_memory_MemTotal_bytes"));
}

fn start_tls(dir: &Scratch, web_yml: &str) -> Agent {
    let web = dir.write("web.yml", web_yml);
    let agent = Agent::spawn(
        &bin(),
        &["--web.config.file", s(&web), "--probe.disable-defaults"],
        None,
        &[],
    );
    let url = format!("https://127.0.0.1:{}/readyz", agent.port);
    let ca = dir.path("ca.pem");
    let (cert, key) = (dir.path("client.pem"), dir.path("client.key"));
    wait_for("TLS /readyz", &agent, || {
        curl(&[
            "--cacert",
            s(&ca),
            "--cert",
            s(&cert),
            "--key",
            s(&key),
            &url,
        ])
        .0 == 200
    });
    agent
}

#[test]
fn tls_serves_with_the_test_ca_and_refuses_tls11_and_plain_http() {
    let dir = Scratch::new("tls");
    make_pki(&dir);
    let agent = start_tls(
        &dir,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n",
    );
    let port = agent.port;
    let ca = dir.path("ca.pem");
    let (code, body) = curl(&[
        "--cacert",
        s(&ca),
        &format!("https://127.0.0.1:{port}/metrics"),
    ]);
    assert_eq!(code, 200);
    assert!(Exposition::parse(&body).get("node_load1").is_some());
    // The certificate is checked: without the CA curl refuses it.
    assert_eq!(curl(&[&format!("https://127.0.0.1:{port}/metrics")]).0, 0);

    // Plain HTTP to the TLS port: a clear 400, no data.
    let r = http_get(port, "/metrics", &[]).unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("HTTP request to an HTTPS server") && !r.text().contains("node_"),
        "{}",
        r.text()
    );

    let s_client = |version: &str| {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                version,
                // Let the client offer old versions, so that a refusal is the server's.
                "-cipher",
                "DEFAULT@SECLEVEL=0",
                "-CAfile",
                s(&ca),
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = s_client("-tls1_1");
    assert!(!ok, "TLS 1.1 must be refused:\n{text}");
    assert!(
        text.contains("SSL alert number") && text.contains("Cipher is (NONE)"),
        "the server refused with an alert:\n{text}"
    );
    let (ok, text) = s_client("-tls1_2");
    assert!(
        ok && text.contains("Protocol  : TLSv1.2") && text.contains("Verification: OK"),
        "{text}"
    );
    let (ok, text) = s_client("-tls1_3");
    assert!(ok && text.contains("TLSv1.3"), "{text}");
}

#[test]
fn mtls_requires_a_client_certificate_signed_by_the_client_ca() {
    let dir = Scratch::new("mtls");
    make_pki(&dir);
    let agent = start_tls(
        &dir,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS12\n",
    );
    let url = format!("https://127.0.0.1:{}/metrics", agent.port);
    let ca = dir.path("ca.pem");
    let with = |cert: &str, key: &str| {
        curl(&[
            "--cacert",
            s(&ca),
            "--cert",
            s(&dir.path(cert)),
            "--key",
            s(&dir.path(key)),
            &url,
        ])
        .0
    };
    assert_eq!(with("client.pem", "client.key"), 200);
    assert_eq!(with("rogue.pem", "rogue.key"), 0, "untrusted client CA");
    assert_eq!(
        curl(&["--cacert", s(&ca), &url]).0,
        0,
        "no client certificate"
    );
}

#[test]
fn broken_web_config_exits_64_naming_the_key() {
    let dir = Scratch::new("badweb");
    let cases = [
        (
            "basic_auth_users:\n  prom: plaintext\n",
            "basic_auth_users.prom",
        ),
        (
            "tls_server_config:\n  cert_file: /nonexistent/c.pem\n  key_file: k\n",
            "tls_server_config.cert_file",
        ),
        (
            "tls_server_config:\n  cert_file: c.pem\n",
            "tls_server_config",
        ),
        ("basic_auth_user:\n  prom: x\n", "basic_auth_user"),
        (
            "tls_server_config:\n  min_version: TLS11\n  cert_file: a\n  key_file: b\n",
            "tls_server_config",
        ),
    ];
    for (text, key) in cases {
        let web = dir.write("web.yml", text);
        let out = Command::new(bin())
            .args([
                "--web.listen-address",
                "127.0.0.1:0",
                "--web.config.file",
                s(&web),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text:?}: {err}");
        assert!(
            err.contains(key) && err.contains(s(&web)),
            "{text:?}: error must name {key} and the file: {err}"
        );
    }
    // A missing file is named too.
    let out = Command::new(bin())
        .args(["--web.config.file", "/nonexistent/web.yml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/web.yml"));
}

/// Ids of the BPF programs `pid` holds open (from its fds' fdinfo).
fn programs_of(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        if let Ok(info) = std::fs::read_to_string(fd.path()) {
            for l in info.lines() {
                if let Some(id) = l.strip_prefix("prog_id:") {
                    ids.insert(id.trim().parse().unwrap());
                }
            }
        }
    }
    ids
}

#[test]
fn sighup_reloads_collectors_and_web_config_and_keeps_the_probes() {
    if !privileged("sighup_reloads_collectors_and_web_config_and_keeps_the_probes") {
        return;
    }
    let dir = Scratch::new("reload");
    let cfg = dir.write("hostlens.yaml", "collectors:\n  loadavg: true\n");
    let agent = Agent::start(&["--config.file", s(&cfg)]);
    let pid = agent.child.id();
    let e = agent.scrape();
    assert!(e.get("node_load1").is_some());
    assert_eq!(
        e.get("hostlens_probe_attached{probe=\"syscalls\"}"),
        Some(1.0),
        "{}",
        agent.log()
    );
    let programs = programs_of(pid);
    assert!(!programs.is_empty());
    let reads = |e: &Exposition| e.sum("syscalls_total", &[("syscall", "read")]);
    let reads_before = reads(&e);

    // 1. A new collector set and basic auth take effect.
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.write("web.yml", &format!("basic_auth_users:\n  prom: '{hash}'\n"));
    // A probe setting changes too: it is bound at start, so it is named as needing a restart.
    dir.write(
        "hostlens.yaml",
        &format!(
            "web:\n  config_file: {}\ncollectors:\n  loadavg: false\nhttp:\n  capture_bytes: 512\n",
            s(&web)
        ),
    );
    sighup(&agent);
    wait_for("the reload", &agent, || {
        agent.log().contains("configuration reloaded")
    });
    assert!(
        agent
            .log()
            .lines()
            .any(|l| l.contains("applies only after a restart") && l.contains("http")),
        "{}",
        agent.log()
    );
    let auth = basic("prom", "s3cret");
    let scrape = || {
        let r = agent
            .try_get("/metrics", &[("Authorization", &auth)])
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        Exposition::parse(&r.text())
    };
    let e = scrape();
    assert_eq!(e.get("node_load1"), None, "loadavg is off now");
    assert_eq!(
        e.get("node_scrape_collector_success{collector=\"loadavg\"}"),
        None
    );
    assert_eq!(
        e.get("node_scrape_collector_success{collector=\"meminfo\"}"),
        Some(1.0)
    );
    assert_eq!(agent.get("/metrics").status, 401, "auth now required");
    // The eBPF state is untouched: same programs, counters not reset.
    assert_eq!(programs_of(pid), programs);
    assert_eq!(
        e.get("hostlens_probe_attached{probe=\"syscalls\"}"),
        Some(1.0)
    );
    assert!(reads(&e) > reads_before, "{} > {reads_before}", reads(&e));

    // 2. A broken config file is rejected and the previous one stays.
    dir.write("hostlens.yaml", "collectors:\n  lodavg: true\n");
    sighup(&agent);
    wait_for("the rejection", &agent, || {
        agent.log().contains("reload rejected") && agent.log().contains("lodavg")
    });
    let e = scrape();
    assert_eq!(e.get("node_load1"), None);
    assert_eq!(agent.get("/metrics").status, 401);

    // 3. A broken web config is rejected too, naming the key; old credentials still work.
    dir.write("web.yml", "basic_auth_users:\n  prom: plaintext\n");
    dir.write(
        "hostlens.yaml",
        &format!(
            "web:\n  config_file: {}\ncollectors:\n  loadavg: true\n",
            s(&web)
        ),
    );
    sighup(&agent);
    wait_for("the second rejection", &agent, || {
        agent.log().matches("reload rejected").count() == 2
    });
    assert!(
        agent.log().contains("basic_auth_users.prom"),
        "{}",
        agent.log()
    );
    let e = scrape();
    assert_eq!(e.get("node_load1"), None, "collectors unchanged");
    assert_eq!(programs_of(pid), programs);
    assert!(agent.child.id() == pid);
}

#[test]
fn sd_notify_ready_after_attach_reloading_and_stopping() {
    let dir = Scratch::new("notify");
    let sock_path = dir.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let cfg = dir.write("hostlens.yaml", "");
    let mut agent = Agent::spawn(
        &bin(),
        &["--config.file", s(&cfg)],
        None,
        &[("NOTIFY_SOCKET", s(&sock_path))],
    );
    let mut buf = [0u8; 256];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1");
    // READY means ready: /readyz already answers and the probes are attached.
    assert_eq!(agent.get("/readyz").status, 200);
    let e = agent.scrape();
    if common::is_root() {
        assert_eq!(
            e.get("hostlens_probe_attached{probe=\"syscalls\"}"),
            Some(1.0)
        );
    }
    sighup(&agent);
    let m = recv();
    assert!(m.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{m:?}");
    assert_eq!(recv(), "READY=1");
    let status = agent.terminate(Duration::from_secs(20));
    assert!(status.success());
    assert_eq!(recv(), "STOPPING=1");
}

/// The capabilities `systemd/hostlens.service` grants (AmbientCapabilities=), e.g. `bpf`.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(repo_root().join("systemd/hostlens.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit grants ambient capabilities");
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

fn status_caps(path: &Path) -> std::collections::BTreeMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.starts_with("Cap")
                .then(|| (k.to_string(), u64::from_str_radix(v.trim(), 16).unwrap()))
        })
        .collect()
}

/// CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19): what README says scraping keeps, plus
/// CAP_BPF (39) on kernels whose map reads need it (before 6.5, unprivileged bpf disabled).
fn kept() -> u64 {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").ok();
    let bpf = hostlens::caps::keeps_cap_bpf(&release, sysctl.as_deref());
    (1 << 2) | (1 << 19) | if bpf { 1 << 39 } else { 0 }
}

/// Every thread of `pid` holds exactly the kept capabilities, in every set but the bounding
/// set, whose expected value the caller gives.
fn assert_dropped(pid: u32, bounding: u64) {
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let caps = status_caps(&t.path().join("status"));
        let tid = t.file_name();
        assert_eq!(caps["CapEff"], kept(), "thread {tid:?} CapEff {caps:x?}");
        assert_eq!(caps["CapPrm"], kept(), "thread {tid:?} CapPrm");
        assert_eq!(caps["CapInh"], 0, "thread {tid:?} CapInh");
        assert_eq!(caps["CapAmb"], 0, "thread {tid:?} CapAmb");
        assert_eq!(caps["CapBnd"], bounding, "thread {tid:?} CapBnd");
        threads += 1;
    }
    assert!(threads >= 3, "the runtime's threads were checked too");
}

/// sysfs(2) (x86_64 number 139), obsolete: nothing else on a host calls it, unlike
/// personality(2), which other tests on a shared machine use too.
fn sysfs_total(e: &Exposition) -> f64 {
    // Summed over process_name: the node-wide count.
    e.sum("syscalls_total", &[("syscall", "sysfs")])
}

/// A child process making `n` sysfs(3) calls (number of filesystem types; changes nothing).
fn sysfs_calls(n: u32) {
    let script = format!(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nfor _ in range({n}):\n    libc.syscall(139, 3)\n"
    );
    run_ok(Command::new("python3").args(["-c", &script]));
}

/// The probes still count after the drop: a controlled workload shows up exactly.
fn assert_probes_count(agent: &Agent) {
    let e = agent.scrape();
    let attached: Vec<(&String, &f64)> = e
        .samples
        .iter()
        .filter(|(k, _)| k.starts_with("hostlens_probe_attached{"))
        .collect();
    assert!(!attached.is_empty());
    for (series, v) in &attached {
        assert_eq!(**v, 1.0, "{series} is not attached; log:\n{}", agent.log());
    }
    let before = sysfs_total(&e);
    const N: u32 = 5_000;
    sysfs_calls(N);
    let delta = sysfs_total(&agent.scrape()) - before;
    assert_eq!(delta, f64::from(N), "sysfs(2) calls counted");
}

#[test]
fn capabilities_are_dropped_after_attach() {
    if !privileged("capabilities_are_dropped_after_attach") {
        return;
    }
    let agent = Agent::start(&[]);
    assert!(
        agent
            .log()
            .contains("capabilities dropped after attaching the probes"),
        "{}",
        agent.log()
    );
    // As root the agent held CAP_SETPCAP, so the bounding set is reduced as well.
    assert_dropped(agent.child.id(), kept());
    assert_probes_count(&agent);
}

#[test]
fn non_root_user_with_only_the_unit_capabilities_attaches_every_probe() {
    if !privileged("non_root_user_with_only_the_unit_capabilities_attaches_every_probe") {
        return;
    }
    let caps = unit_capabilities();
    assert!(caps.contains(&"bpf".to_string()) && caps.contains(&"perfmon".to_string()));
    let list: String = caps.iter().map(|c| format!(",+{c}")).collect();
    let dir = Scratch::new("caps");
    let copy = dir.path("hostlens");
    std::fs::copy(bin(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let inh = format!("--inh-caps=-all{list}");
    let amb = format!("--ambient-caps=-all{list}");
    let bnd = format!("--bounding-set=-all{list}");
    let agent = Agent::start_with(
        &copy,
        &[],
        Some(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            // As the unit's NoNewPrivileges=yes.
            "--no-new-privs",
            &inh,
            &amb,
            &bnd,
        ]),
    );
    let pid = agent.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    // Bounding set as the unit's (no CAP_SETPCAP to reduce it further); the rest dropped.
    let unit_mask: u64 = caps
        .iter()
        .map(|c| match c.as_str() {
            "dac_read_search" => 1u64 << 2,
            "net_admin" => 1 << 12,
            "sys_ptrace" => 1 << 19,
            "perfmon" => 1 << 38,
            "bpf" => 1 << 39,
            other => panic!("capability {other} in the unit is not documented in this test"),
        })
        .sum();
    assert_dropped(pid, unit_mask);
    assert_probes_count(&agent);
}

#[test]
fn prometheus_scrapes_the_agent_over_tls_with_basic_auth() {
    let dir = Scratch::new("promtls");
    make_pki(&dir);
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let agent = start_tls(
        &dir,
        &format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    );
    let right = dir.write("right.password", "s3cret");
    let wrong = dir.write("wrong.password", "guess");
    let job = |name: &str, password: &Path| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password_file: {}\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
            s(&dir.path("ca.pem")),
            s(password),
            agent.port
        )
    };
    let prom = common::prom::Prometheus::start(
        "tls",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
            job("hostlens", &right),
            job("wrong-password", &wrong)
        ),
    );
    let ok = prom.scraped_targets("hostlens");
    assert_eq!(ok[0]["health"], "up", "{ok:?}");
    let bad = prom.scraped_targets("wrong-password");
    assert_eq!(bad[0]["health"], "down");
    assert!(
        bad[0]["lastError"].as_str().unwrap_or("").contains("401"),
        "{bad:?}"
    );
}

#[test]
fn min_version_tls13_refuses_tls12() {
    let dir = Scratch::new("tls13");
    make_pki(&dir);
    let agent = start_tls(
        &dir,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS13\n",
    );
    let ca = dir.path("ca.pem");
    let url = format!("https://127.0.0.1:{}/metrics", agent.port);
    assert_eq!(curl(&["--cacert", s(&ca), "--tlsv1.3", &url]).0, 200);
    assert_eq!(
        curl(&["--cacert", s(&ca), "--tlsv1.2", "--tls-max", "1.2", &url]).0,
        0,
        "TLS 1.2 must be refused"
    );
}
