//! Privileged integration tests of the per-process answers: syscalls per process group and the
//! bound on `process_name`. Real kernel, real eBPF programs, real child processes with unique
//! names (a copy of python3 under a unique file name, so its `comm` is unique). Run one at a
//! time (`--test-threads=1`).
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{Agent, Exposition, privileged, run_ok};

/// x86_64 syscall numbers the child uses.
const SYS_GETPPID: u32 = 110;
const SYS_KILL: u32 = 62;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("hostlens-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of python3 named `name` (≤ 15 bytes, so it is the whole `comm`).
fn python_named(dir: &Path, name: &str) -> PathBuf {
    assert!(name.len() <= 15, "{name} would be truncated in comm");
    // Debian's interpreter itself (a pyenv shim on PATH would be a script).
    let real = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let copy = dir.join(name);
    std::fs::copy(real, &copy).unwrap();
    copy
}

fn config(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("hostlens.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100_000)
}

fn series(e: &Exposition, family: &str, name: &str, syscall: &str) -> f64 {
    e.sum(family, &[("process_name", name), ("syscall", syscall)])
}

#[test]
fn syscalls_and_errors_per_process_are_exact() {
    if !privileged("syscalls_and_errors_per_process_are_exact") {
        return;
    }
    let dir = TempDir::new("sys");
    // Room for every process group of a busy machine, so the test process gets its own name.
    let cfg = config(&dir.0, "process_names:\n  top_k: 100000\n");
    let agent = Agent::start(&[
        "--config.file",
        cfg.to_str().unwrap(),
        "--collector.disable-defaults",
        "--probe.disable-defaults",
        "--probe.syscalls",
    ]);
    let e = agent.scrape();
    assert_eq!(
        e.get("hostlens_probe_attached{probe=\"syscalls\"}"),
        Some(1.0),
        "{}",
        agent.log()
    );
    let name = unique("hlsys");
    let py = python_named(&dir.0, &name);
    const N: u32 = 50_000;
    const M: u32 = 3_000;
    // getppid N times (always succeeds); kill(2) of a pid that cannot exist M times (ESRCH).
    let script = format!(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nf = libc.syscall\n\
         for _ in range({N}):\n    f({SYS_GETPPID})\n\
         for _ in range({M}):\n    assert f({SYS_KILL}, 0x3fffffff, 0) == -1\n"
    );
    run_ok(Command::new(&py).args(["-c", &script]));
    let e = agent.scrape();
    assert_eq!(
        series(&e, "syscalls_total", &name, "getppid"),
        f64::from(N),
        "getppid of {name}"
    );
    assert_eq!(
        series(&e, "syscall_errors_total", &name, "getppid"),
        0.0,
        "getppid never fails"
    );
    assert_eq!(
        series(&e, "syscalls_total", &name, "kill"),
        f64::from(M),
        "kill of {name}"
    );
    assert_eq!(
        series(&e, "syscall_errors_total", &name, "kill"),
        f64::from(M),
        "failed kill of {name}"
    );
    // exit_group never returns but is counted (at entry).
    assert_eq!(series(&e, "syscalls_total", &name, "exit_group"), 1.0);
    // The latency histogram saw at least these calls, and is a proper histogram.
    assert_eq!(
        e.types.get("syscall_duration_seconds").map(String::as_str),
        Some("histogram")
    );
    let count = e
        .get("syscall_duration_seconds_count{syscall=\"getppid\"}")
        .unwrap();
    let inf = e
        .get("syscall_duration_seconds_bucket{syscall=\"getppid\",le=\"+Inf\"}")
        .unwrap();
    assert!(count >= f64::from(N), "{count}");
    assert_eq!(count, inf);
    assert_eq!(
        e.get("hostlens_probe_events_lost_total{probe=\"syscalls\"}"),
        Some(0.0)
    );
}

#[test]
fn process_name_is_bounded_to_top_k_plus_other() {
    if !privileged("process_name_is_bounded_to_top_k_plus_other") {
        return;
    }
    let dir = TempDir::new("topk");
    let cfg = config(&dir.0, "process_names:\n  top_k: 3\n");
    let agent = Agent::start(&[
        "--config.file",
        cfg.to_str().unwrap(),
        "--collector.disable-defaults",
        "--probe.disable-defaults",
        "--probe.syscalls",
    ]);
    // Twenty distinct process names, each making a few syscalls.
    let py = python_named(&dir.0, "python3");
    for i in 0..20 {
        let exe = dir.0.join(format!("hlk{i}"));
        std::fs::hard_link(&py, &exe).unwrap();
        run_ok(Command::new(&exe).args(["-c", "pass"]));
    }
    let e = agent.scrape();
    let names: std::collections::BTreeSet<String> = e
        .matching("syscalls_total", &[])
        .map(|(k, _)| {
            k.split("process_name=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(names.contains("other"), "{names:?}");
    assert!(names.len() <= 4, "at most K=3 names plus other: {names:?}");
    // Nothing is lost by the bound: the 20 children's exit_group calls are all counted.
    assert!(e.sum("syscalls_total", &[("syscall", "exit_group")]) >= 20.0);
}
