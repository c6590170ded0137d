//! Privileged integration tests: the real kernel, the real eBPF programs, real processes.
//! Each test skips with a printed reason when not root, and fails instead when
//! HOSTLENS_REQUIRE_PRIVILEGED is set (CI). Run one at a time (`--test-threads=1`): they
//! share the node's syscall counters.
mod common;

use std::{
    collections::BTreeSet, os::unix::fs::PermissionsExt as _, process::Command, time::Duration,
};

use common::{Agent, Exposition, bin, privileged, run_ok};

/// x86_64 syscall number of personality(2), which almost nothing on a host calls.
const SYS_PERSONALITY: u32 = 135;

/// Node-wide personality(2) count: the sum over every `process_name`.
fn personality_total(e: &Exposition) -> f64 {
    e.sum("syscalls_total", &[("syscall", "personality")])
}

/// A child process that makes `n` personality(0xffffffff) calls (a query that changes
/// nothing) and exits.
fn run_personality_child(n: u32) {
    let script = format!(
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nq = ctypes.c_ulong(0xffffffff)\nfor _ in range({n}):\n    libc.syscall({SYS_PERSONALITY}, q)\n"
    );
    run_ok(Command::new("python3").args(["-c", &script]));
}

#[test]
fn syscalls_total_counts_a_controlled_workload() {
    if !privileged("syscalls_total_counts_a_controlled_workload") {
        return;
    }
    let agent = Agent::start(&[]);
    let e = agent.scrape();
    assert_eq!(
        e.get("hostlens_probe_attached{probe=\"syscalls\"}"),
        Some(1.0),
        "{}",
        agent.log()
    );
    assert_eq!(
        e.types.get("syscalls_total").map(String::as_str),
        Some("counter")
    );
    let before = personality_total(&e);
    const N: u32 = 20_000;
    run_personality_child(N);
    let after = personality_total(&agent.scrape());
    let delta = after - before;
    // Nothing else here calls personality(2) in bulk; a few calls from other processes
    // (e.g. a shell's exec) are tolerated.
    assert!(
        delta >= f64::from(N) && delta <= f64::from(N) + 50.0,
        "personality delta {delta}, expected {N}..={}",
        N + 50
    );
    // Counts are node-wide and always grow: read(2) is the most common syscall.
    assert!(agent.scrape().sum("syscalls_total", &[("syscall", "read")]) > 0.0);
}

/// Ids of the BPF programs `pid` holds open, from the `prog_id:` lines of its fds' fdinfo
/// (program fds and link fds both show it). Debian's bpftool lacks the pid column.
fn programs_of(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        for line in info.lines() {
            if let Some(id) = line.strip_prefix("prog_id:") {
                ids.insert(id.trim().parse().unwrap());
            }
        }
    }
    ids
}

fn all_program_ids() -> BTreeSet<u64> {
    let out = run_ok(Command::new("bpftool").args(["prog", "show", "--json"]));
    let progs: serde_json::Value = serde_json::from_str(&out).expect("bpftool JSON");
    progs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

#[test]
fn sigterm_detaches_every_program() {
    if !privileged("sigterm_detaches_every_program") {
        return;
    }
    let mut agent = Agent::start(&[]);
    let ours = programs_of(agent.child.id());
    assert!(
        !ours.is_empty(),
        "no BPF program fd open in hostlens:\n{}",
        agent.log()
    );
    // A scrape in flight when SIGTERM arrives still completes.
    let port = agent.port;
    let scrape = std::thread::spawn(move || common::http_get(port, "/metrics", &[]));
    let status = agent.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}:\n{}", agent.log());
    if let Ok(r) = scrape.join().unwrap() {
        assert_eq!(r.status, 200);
    }
    // The kernel frees a detached program after an RCU grace period, so give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let still: Vec<u64> = all_program_ids().intersection(&ours).copied().collect();
        if still.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "programs {still:?} still loaded 5 s after exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        agent.log().contains("eBPF programs detached"),
        "{}",
        agent.log()
    );
    // A clean shutdown logs no error (the http probe's drain task ends with the runtime).
    assert!(
        !agent.log().contains(" ERROR "),
        "error logged at shutdown:\n{}",
        agent.log()
    );
}

#[test]
fn promtool_accepts_the_exposition() {
    if !privileged("promtool_accepts_the_exposition") {
        return;
    }
    let agent = Agent::start(&[]);
    let text = agent.get("/metrics").text();
    common::assert_only_node_exporter_lints(&common::promtool_check(&text));
}

#[test]
fn without_bpf_permission_probes_fail_and_collectors_serve() {
    if !privileged("without_bpf_permission_probes_fail_and_collectors_serve") {
        return;
    }
    // Copy the binary where an unprivileged user can execute it.
    let dir = std::env::temp_dir().join(format!("hostlens-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("hostlens");
    std::fs::copy(bin(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = Agent::start_with(
        &copy,
        &[],
        Some(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ]),
    );
    let e = agent.scrape();
    assert_eq!(
        e.get("hostlens_probe_attached{probe=\"syscalls\"}"),
        Some(0.0)
    );
    assert!(
        e.get("node_load1").is_some(),
        "procfs collectors keep serving"
    );
    assert_eq!(
        e.get("node_scrape_collector_success{collector=\"meminfo\"}"),
        Some(1.0)
    );
    let page = agent.get("/").text();
    assert!(page.contains("class=\"failed\""), "{page}");
    assert!(
        page.contains("not running as root"),
        "the reason is shown: {page}"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kernel_log_records_reach_the_agent_log() {
    if !privileged("kernel_log_records_reach_the_agent_log") {
        return;
    }
    let agent = Agent::start(&["--log.level", "debug"]);
    // Syscall 1000 does not exist (ENOSYS); the probe counts it as "unknown" and, at debug
    // level, its kernel program writes an aya-log record the agent forwards to its log.
    run_ok(Command::new("python3").args([
        "-c",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nfor _ in range(3):\n    libc.syscall(1000)\n",
    ]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !agent
        .log()
        .contains("syscall id 1000 is outside the syscall table")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no forwarded eBPF record in the log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        agent
            .scrape()
            .sum("syscalls_total", &[("syscall", "unknown")])
            >= 3.0
    );
}
