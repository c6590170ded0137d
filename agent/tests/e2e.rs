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

/// Families whose values change from scrape to scrape or build to build.
const VOLATILE: &[&str] = &[
    "node_scrape_collector_duration_seconds",
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

/// Compares with `tests/golden/<name>`; HOSTLENS_UPDATE_GOLDEN=1 rewrites the file instead.
fn assert_golden(name: &str, actual: &str) {
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
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  golden: {e}\n  actual: {a}", i + 1))
            .collect();
        panic!(
            "{} differs from the output ({} vs {} lines):\n{}\n(HOSTLENS_UPDATE_GOLDEN=1 regenerates)",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

fn procfs_args(procfs: &Path) -> Vec<String> {
    vec![
        "--path.procfs".into(),
        procfs.to_str().unwrap().into(),
        // A sysfs root next to the procfs one (absent for these trees): the sysfs collectors
        // must not read this machine's /sys in a golden test.
        "--path.sysfs".into(),
        procfs.with_file_name("sys").to_str().unwrap().into(),
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
    assert_golden("basic.prom", &stable_lines(&text));
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
    assert_eq!(
        e.get("hostlens_probe_attached{probe=\"syscalls\"}"),
        Some(0.0)
    );
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
    assert!(!pb.body.is_empty());
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
