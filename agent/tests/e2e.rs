//! End-to-end tests of the `hostlens` binary without eBPF: fixture procfs trees against golden
//! expositions, HTTP behaviour, and every start-up error path.
mod common;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{Agent, Exposition, bin, repo_root};
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pb_model;
use prost::Message as _;

/// Families whose values change from scrape to scrape or build to build.
const VOLATILE: &[&str] = &[
    "node_scrape_collector_duration_seconds",
    // The clock and adjtimex(2) are not read from the roots.
    "node_time_seconds",
    "node_time_zone_offset_seconds",
    "node_timex_",
    "hostlens_build_info",
    "process_",
];

fn stable_lines(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        if VOLATILE.iter().any(|v| name.starts_with(v)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hostlens-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every root at `procfs`, so that nothing of the live machine leaks into the output.
fn procfs_args(procfs: &Path) -> Vec<String> {
    let p = procfs.to_str().unwrap();
    vec![
        "--path.procfs".into(),
        p.into(),
        "--path.sysfs".into(),
        p.into(),
        "--path.rootfs".into(),
        p.into(),
        "--path.udev.data".into(),
        p.into(),
        "--probe.disable-defaults".into(),
    ]
}

fn start(args: &[String]) -> Agent {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(&a)
}

#[test]
fn fixture_tree_matches_golden_exposition() {
    let agent = start(&procfs_args(&fixture("basic/proc")));
    let text = agent.get("/metrics").text();
    common::assert_golden("basic.prom", &stable_lines(&text));
    // Values straight from the fixture files.
    let e = Exposition::parse(&text);
    let meminfo = std::fs::read_to_string(fixture("basic/proc/meminfo")).unwrap();
    let kb = |key: &str| -> f64 {
        let line = meminfo.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(
        e.get("node_memory_MemTotal_bytes"),
        Some(kb("MemTotal:") * 1024.0)
    );
    assert_eq!(
        e.get("node_memory_Active_anon_bytes"),
        Some(kb("Active(anon):") * 1024.0)
    );
    for c in ["loadavg", "meminfo", "uname"] {
        assert_eq!(
            e.get(&format!(
                "node_scrape_collector_success{{collector=\"{c}\"}}"
            )),
            Some(1.0),
            "{c}"
        );
    }
    assert_eq!(e.types["node_load1"], "gauge");
    // Probes disabled on purpose have no series (HostlensProbeDown is for failed ones).
    assert_eq!(e.get("hostlens_probe_attached{probe=\"syscalls\"}"), None);
}

#[test]
fn empty_root_is_no_data_not_failure() {
    let empty = tempdir("empty");
    let agent = start(&procfs_args(&empty));
    let e = agent.scrape();
    for c in ["loadavg", "meminfo", "uname"] {
        assert_eq!(
            e.get(&format!(
                "node_scrape_collector_success{{collector=\"{c}\"}}"
            )),
            Some(1.0),
            "{c}"
        );
    }
    assert!(!e.samples.keys().any(|k| k.starts_with("node_load")
        || k.starts_with("node_memory_")
        || k.starts_with("node_uname")));
}

#[test]
fn malformed_file_fails_only_its_collector_and_names_file_and_line() {
    let root = tempdir("bad");
    std::fs::write(root.join("loadavg"), "0.1 zero 0.3 1/2 3\n").unwrap();
    std::fs::write(root.join("meminfo"), "MemTotal: 1024 kB\nMemFree: 12 kB\n").unwrap();
    let agent = start(&procfs_args(&root));
    let e = agent.scrape();
    assert_eq!(
        e.get("node_scrape_collector_success{collector=\"loadavg\"}"),
        Some(0.0)
    );
    assert_eq!(
        e.get("node_scrape_collector_success{collector=\"meminfo\"}"),
        Some(1.0)
    );
    assert_eq!(e.get("node_memory_MemTotal_bytes"), Some(1024.0 * 1024.0));
    assert_eq!(e.get("node_load1"), None);
    std::thread::sleep(Duration::from_millis(100));
    let log = agent.log();
    let want = format!("{}:1: load5", root.join("loadavg").display());
    assert!(log.contains(&want), "log should name {want}:\n{log}");
}

/// A collector that panics (a bug met at run time; `HOSTLENS_FAIL_PANIC` injects one in every
/// call of `loadavg`) fails only itself, at every scrape; the agent and the other collectors
/// go on.
#[test]
fn a_panicking_collector_fails_only_itself() {
    let mut args = procfs_args(&fixture("basic/proc"));
    args.extend(
        [
            "--collector.disable-defaults",
            "--collector.loadavg",
            "--collector.meminfo",
        ]
        .map(String::from),
    );
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::spawn(
        &common::bin(),
        &a,
        None,
        &[("HOSTLENS_FAIL_PANIC", "collector:loadavg")],
    );
    agent.wait_ready();
    for _ in 0..3 {
        let e = agent.scrape();
        assert_eq!(
            e.get("node_scrape_collector_success{collector=\"loadavg\"}"),
            Some(0.0)
        );
        assert_eq!(
            e.get("node_scrape_collector_success{collector=\"meminfo\"}"),
            Some(1.0)
        );
        assert_eq!(e.get("node_load1"), None);
        assert_eq!(
            e.get("node_memory_MemTotal_bytes"),
            Some(24684096.0 * 1024.0)
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while agent.log().matches("collector panicked").count() < 3
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = agent.log();
    assert_eq!(log.matches("collector panicked").count(), 3, "{log}");
    assert!(log.contains("injected panic at collector:loadavg"), "{log}");
}

#[test]
fn endpoints_and_negotiation() {
    let agent = start(&procfs_args(&fixture("basic/proc")));
    assert_eq!(agent.get("/healthz").status, 200);
    assert_eq!(agent.get("/readyz").status, 200);
    let page = agent.get("/");
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(
        html.contains("<td>meminfo</td><td class=\"active\">active</td>"),
        "{html}"
    );
    assert!(
        html.contains("<td>syscalls</td>") && html.contains("class=\"disabled\""),
        "{html}"
    );
    assert_eq!(agent.get("/nope").status, 404);

    let plain = agent.get("/metrics");
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = plain.text();
    assert!(
        text.contains("# TYPE node_load1 gauge\nnode_load1 "),
        "{text}"
    );
    assert!(!text.contains("# EOF"));

    let om = agent
        .try_get(
            "/metrics",
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
        )
        .unwrap();
    assert!(
        om.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.text().ends_with("# EOF\n"));

    let gz = agent
        .try_get("/metrics", &[("Accept-Encoding", "gzip")])
        .unwrap();
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(stable_lines(&unzipped), stable_lines(&text));

    let pb = agent
        .try_get(
            "/metrics",
            &[("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")],
        )
        .unwrap();
    assert!(
        pb.header("content-type")
            .unwrap()
            .starts_with("application/vnd.google.protobuf")
    );
    // Same families, and untyped/counter/gauge values where Prometheus reads them.
    let mut buf = &pb.body[..];
    let mut names = std::collections::BTreeSet::new();
    while !buf.is_empty() {
        let f = pb_model::MetricFamily::decode_length_delimited(&mut buf).expect("delimited");
        if f.name == "node_memory_MemTotal_bytes" {
            assert_eq!(f.r#type, pb_model::MetricType::Gauge as i32);
            let v = f.metric[0].gauge.as_ref().unwrap().value;
            assert_eq!(
                Some(v),
                Exposition::parse(&text).get("node_memory_MemTotal_bytes")
            );
        }
        names.insert(f.name);
    }
    let text_names: std::collections::BTreeSet<String> =
        Exposition::parse(&text).types.into_keys().collect();
    assert_eq!(names, text_names);
}

fn run_bin(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_and_config_exit_64_naming_what_and_where() {
    let (code, err) = run_bin(&["--collector.nosuch"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--collector.nosuch"), "{err}");

    let (code, err) = run_bin(&["--web.max-requests", "lots"]);
    assert_eq!(code, Some(64), "{err}");

    let dir = tempdir("cfg");
    let f = dir.join("bad.yaml");
    std::fs::write(
        &f,
        "web:\n  listen_address: \":0\"\ncollectors:\n  meminfo: true\n  memnifo: false\n",
    )
    .unwrap();
    let (code, err) = run_bin(&["--config.file", f.to_str().unwrap()]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains(f.to_str().unwrap()), "names the file: {err}");
    assert!(err.contains("memnifo"), "names the key: {err}");
    assert!(err.contains("line 5"), "names the line: {err}");

    std::fs::write(&f, "log:\n  level: 3\n").unwrap();
    let (code, err) = run_bin(&["--config.file", f.to_str().unwrap()]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("log.level") && err.contains("line 2"), "{err}");

    let (code, err) = run_bin(&["--config.file", "/nonexistent/hostlens.yaml"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("/nonexistent/hostlens.yaml"), "{err}");

    let (code, out) = run_bin(&["--help"]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn port_in_use_is_a_clear_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let out = Command::new(bin())
        .args(["--web.listen-address", &addr, "--probe.disable-defaults"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("already in use") && err.contains(&addr),
        "{err}"
    );
}

#[test]
fn config_file_and_flags_combine() {
    let dir = tempdir("combine");
    let f = dir.join("c.yaml");
    std::fs::write(
        &f,
        format!(
            "paths:\n  procfs: {}\ncollectors:\n  loadavg: false\n  uname: false\nprobes:\n  syscalls: false\n",
            fixture("basic/proc").display()
        ),
    )
    .unwrap();
    // The file disables loadavg and uname; the flag re-enables uname.
    let agent = Agent::start(&["--config.file", f.to_str().unwrap(), "--collector.uname"]);
    let e = agent.scrape();
    assert_eq!(e.get("node_load1"), None);
    assert!(e.samples.keys().any(|k| k.starts_with("node_uname_info{")));
    assert!(e.get("node_memory_MemTotal_bytes").is_some());
}

/// `--collector.<name>` for every collector in the table, on top of disabled defaults.
fn all_collectors() -> Vec<String> {
    let mut v = vec!["--collector.disable-defaults".to_string()];
    for c in hostlens::collectors::COLLECTORS {
        v.push(format!("--collector.{}", c.name));
    }
    v
}

fn node_fixture_args(root: &Path) -> Vec<String> {
    let mut a = all_collectors();
    for (flag, sub) in [
        ("--path.procfs", "proc"),
        ("--path.sysfs", "sys"),
        ("--path.rootfs", "rootfs"),
        ("--path.udev.data", "udev/data"),
    ] {
        a.push(flag.into());
        a.push(root.join(sub).to_str().unwrap().into());
    }
    a.push("--collector.cpu.info".into());
    a.push("--collector.cpu.info.flags-include=^(aes|avx2|fpu)$".into());
    a.push("--collector.cpu.info.bugs-include=^spectre".into());
    a.push("--collector.stat.softirq".into());
    a.push("--probe.disable-defaults".into());
    a
}

/// Series that do not come from the fixture files: sock_diag, the clock, adjtimex(2), the
/// local time zone, and statfs of the fixture directory's own filesystem.
const NOT_FROM_FIXTURE: &[&str] = &[
    // tcpstat asks the kernel over sock_diag netlink (as node_exporter does).
    "node_tcp_connection_states",
    "node_time_seconds",
    "node_time_zone_offset_seconds",
    "node_timex_",
    "node_filesystem_size_bytes",
    "node_filesystem_free_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_files",
];

#[test]
fn node_fixture_tree_matches_golden_exposition() {
    let root = fixture("node");
    let agent = start(&node_fixture_args(&root));
    let text = agent.get("/metrics").text();
    let stable: String = stable_lines(&text)
        .lines()
        .filter(|l| {
            let name = l
                .strip_prefix("# HELP ")
                .or_else(|| l.strip_prefix("# TYPE "))
                .unwrap_or(l);
            !NOT_FROM_FIXTURE.iter().any(|p| name.starts_with(p))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    common::assert_golden("node.prom", &stable);
    let e = Exposition::parse(&text);
    for c in hostlens::collectors::COLLECTORS {
        assert_eq!(
            e.get(&format!(
                "node_scrape_collector_success{{collector=\"{}\"}}",
                c.name
            )),
            Some(1.0),
            "{}",
            c.name
        );
    }
    // Hand-written hardware and edge cases of the fixture, straight from its files.
    assert_eq!(
        e.get("node_disk_info{device=\"sda\",major=\"8\",minor=\"0\",path=\"pci-0000:00:1f.2-ata-1\",wwn=\"0x50014ee2b5a1b2c3\",model=\"WDC_WD10EZEX-00BN5A0\",serial=\"WD-WCC3F1234567\",revision=\"01.01A01\"}"),
        Some(1.0)
    );
    assert_eq!(
        e.get("node_disk_read_bytes_total{device=\"sda\"}"),
        Some(1003346126.0 * 512.0)
    );
    assert_eq!(
        e.get("node_disk_reads_completed_total{device=\"sda1\"}"),
        None
    );
    assert_eq!(
        e.get("node_disk_ata_rotation_rate_rpm{device=\"sda\"}"),
        Some(7200.0)
    );
    assert_eq!(
        e.get("node_filesystem_device_error{device=\"server:/export\",fstype=\"nfs4\",mountpoint=\"/mnt/nfs\"}"),
        Some(1.0)
    );
    assert_eq!(
        e.get("node_filesystem_readonly{device=\"/dev/vdb\",fstype=\"ext4\",mountpoint=\"/srv/ro data\"}"),
        Some(1.0)
    );
    assert_eq!(e.get("node_arp_entries{device=\"eth0\"}"), Some(2.0));
    assert_eq!(
        e.get("node_processes_threads_state{thread_state=\"D\"}"),
        Some(1.0)
    );
    assert_eq!(e.get("node_processes_threads"), Some(3.0));
    // cpu0..cpu3 share package 0 (cores 0 and 1, hyperthreads); cpu4 has no throttle files.
    assert_eq!(
        e.get("node_cpu_core_throttles_total{core=\"1\",package=\"0\"}"),
        Some(8.0)
    );
    assert_eq!(
        e.get("node_cpu_package_throttles_total{package=\"0\"}"),
        Some(17.0)
    );
    assert_eq!(
        e.get("node_cpu_package_throttles_total{package=\"1\"}"),
        None
    );
    assert_eq!(e.get("node_cpu_flag_info{flag=\"fpu\"}"), Some(1.0));
    assert_eq!(
        e.get("node_schedstat_timeslices_total{cpu=\"1\"}"),
        Some(4236223213.0)
    );
}

#[test]
fn every_collector_on_an_empty_root_is_no_data() {
    let empty = tempdir("empty-all");
    let mut a = all_collectors();
    for flag in [
        "--path.procfs",
        "--path.sysfs",
        "--path.rootfs",
        "--path.udev.data",
    ] {
        a.push(flag.into());
        a.push(empty.to_str().unwrap().into());
    }
    a.push("--probe.disable-defaults".into());
    let agent = start(&a);
    let e = agent.scrape();
    for c in hostlens::collectors::COLLECTORS {
        assert_eq!(
            e.get(&format!(
                "node_scrape_collector_success{{collector=\"{}\"}}",
                c.name
            )),
            Some(1.0),
            "{}",
            c.name
        );
    }
    // Only the clock and adjtimex(2) do not read files (tcpstat's netlink dump is gated on
    // <procfs>/net/tcp); as node_exporter, textfile always reports its error flag (0: no
    // directory configured) and selinux reports "not enabled" when it finds no selinuxfs.
    let from_files: Vec<&String> = e
        .samples
        .keys()
        .filter(|k| k.starts_with("node_") && !k.starts_with("node_scrape_collector_"))
        .filter(|k| !k.starts_with("node_time_") && !k.starts_with("node_timex_"))
        .filter(|k| *k != "node_textfile_scrape_error" && *k != "node_selinux_enabled")
        .collect();
    assert_eq!(e.get("node_textfile_scrape_error"), Some(0.0));
    assert_eq!(e.get("node_selinux_enabled"), Some(0.0));
    assert!(
        from_files.is_empty(),
        "data from an empty root: {from_files:?}"
    );
}

#[test]
fn malformed_sources_fail_their_collector_naming_file_and_line() {
    let root = tempdir("bad-node");
    let proc = root.join("proc");
    std::fs::create_dir_all(proc.join("net")).unwrap();
    std::fs::create_dir_all(proc.join("1")).unwrap();
    let cases: &[(&str, &str, &str, &str)] = &[
        // (collector, file, content, expected "<file>:<line>")
        (
            "cpu",
            "stat",
            "cpu 1 2 3 4\ncpu0 1 2 x 4\nctxt 5\n",
            "stat:2",
        ),
        (
            "diskstats",
            "diskstats",
            "8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n8 1 sda1 1 2\n",
            "diskstats:2",
        ),
        ("netdev", "net/dev", "h1\nh2\n  eth0: 1 2 3\n", "net/dev:3"),
        (
            "vmstat",
            "vmstat",
            "pgfault 1\npgmajfault lots\n",
            "vmstat:2",
        ),
        (
            "sockstat",
            "net/sockstat",
            "sockets: used 1\nTCP: inuse\n",
            "net/sockstat:2",
        ),
        (
            "filesystem",
            "1/mounts",
            "/dev/vda / ext4 rw 0 0\nbroken\n",
            "1/mounts:2",
        ),
        (
            "softnet",
            "net/softnet_stat",
            "0000000g 0 0\n",
            "net/softnet_stat:1",
        ),
        ("udp_queues", "net/udp", "h\n 1: a b c 1:zz\n", "net/udp:2"),
    ];
    for (_, file, content, _) in cases {
        std::fs::write(proc.join(file), content).unwrap();
    }
    let mut a = vec![
        "--collector.disable-defaults".to_string(),
        "--path.procfs".into(),
        proc.to_str().unwrap().into(),
        "--probe.disable-defaults".into(),
    ];
    for (c, ..) in cases {
        a.push(format!("--collector.{c}"));
    }
    // stat reads the same file: its lines are fine, so it still succeeds.
    a.push("--collector.stat".into());
    let agent = start(&a);
    let e = agent.scrape();
    for (c, ..) in cases {
        assert_eq!(
            e.get(&format!(
                "node_scrape_collector_success{{collector=\"{c}\"}}"
            )),
            Some(0.0),
            "{c}"
        );
    }
    assert_eq!(
        e.get("node_scrape_collector_success{collector=\"stat\"}"),
        Some(1.0)
    );
    assert_eq!(e.get("node_context_switches_total"), Some(5.0));
    std::thread::sleep(Duration::from_millis(100));
    let log = agent.log();
    for (c, _, _, at) in cases {
        let (file, line) = at.rsplit_once(':').unwrap();
        let want = format!("{}:{line}:", proc.join(file).display());
        assert!(log.contains(&want), "{c}: log should name {want}:\n{log}");
    }
}

#[test]
fn collector_settings_from_flags_and_file_select_what_is_exported() {
    let root = fixture("node");
    let dir = tempdir("settings");
    let f = dir.join("c.yaml");
    std::fs::write(
        &f,
        "collector_settings:\n  netdev:\n    device_exclude: '^lo$'\n  vmstat:\n    fields: '^pgfault$'\n  filesystem:\n    fs_types_exclude: '^nfs4$'\n",
    )
    .unwrap();
    let mut a = node_fixture_args(&root);
    a.extend([
        "--config.file".to_string(),
        f.to_str().unwrap().into(),
        // Flags override the file's settings and add to them.
        "--collector.vmstat.fields=^(pgfault|oom_kill)$".into(),
        "--collector.diskstats.device-include=^sd[a-z]$".into(),
        "--no-collector.cpu.guest".into(),
    ]);
    let agent = start(&a);
    let e = agent.scrape();
    let families = |prefix: &str| -> Vec<&String> {
        e.samples.keys().filter(|k| k.starts_with(prefix)).collect()
    };
    assert!(
        e.get("node_network_receive_bytes_total{device=\"lo\"}")
            .is_none()
    );
    assert!(
        e.get("node_network_receive_bytes_total{device=\"eth0\"}")
            .is_some()
    );
    assert_eq!(
        families("node_vmstat_"),
        ["node_vmstat_oom_kill", "node_vmstat_pgfault"]
    );
    assert_eq!(
        families("node_disk_reads_completed_total"),
        ["node_disk_reads_completed_total{device=\"sda\"}"]
    );
    assert!(
        families("node_filesystem_device_error")
            .iter()
            .all(|k| !k.contains("nfs4"))
    );
    assert!(families("node_cpu_guest_seconds_total").is_empty());
    assert!(!families("node_cpu_seconds_total").is_empty());
}

/// At most 512 connections are served at once: with 512 idle ones open, the next is closed
/// at once (a scrape too, by design), the log says so; when they close, scrapes work again.
#[test]
fn connections_beyond_the_limit_are_closed_and_logged() {
    let agent = Agent::start(&["--collector.disable-defaults", "--collector.loadavg"]);
    let open: Vec<std::net::TcpStream> = (0..512)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", agent.port)).unwrap())
        .collect();
    // The agent has accepted them all once a 513th is refused; retry while it catches up.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut extra = std::net::TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut b = [0u8; 1];
        // Closed by the agent: end of stream (or a reset), not a timeout.
        match extra.read(&mut b) {
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "the 513th connection was not closed: {other:?}"
            ),
        }
    }
    // The log line comes through the agent's stderr pipe, a moment after the close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !agent.log().contains("too many open connections") {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(open);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match agent.try_get("/metrics", &[]) {
            Ok(r) if r.status == 200 => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "scrapes did not come back: {:?}",
                other.map(|r| r.status)
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
