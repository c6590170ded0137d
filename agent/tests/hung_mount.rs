//! Privileged: a hung mount must not hang the scrape. A real FUSE mount whose server never
//! answers (not even the INIT handshake, so every statfs on it blocks in the kernel) is made
//! in a private mount namespace that only the agent lives in; the filesystem collector must
//! report it with `node_filesystem_device_error 1` after the mount timeout, keep serving the
//! other mounts, and not try the stuck mount again on later scrapes.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{Agent, bin, privileged};

/// Runs inside `unshare --mount --propagation private`: opens /dev/fuse, mounts it on argv[1]
/// and execs the agent (argv[2..]) with the FUSE device inherited and never read. The
/// namespace and the mount end with the agent.
const MOUNT_AND_EXEC: &str = r#"
import ctypes, os, sys
mnt, prog = sys.argv[1], sys.argv[2]
fd = os.open("/dev/fuse", os.O_RDWR)
os.set_inheritable(fd, True)
libc = ctypes.CDLL(None, use_errno=True)
opts = ("fd=%d,rootmode=40000,user_id=0,group_id=0" % fd).encode()
if libc.mount(b"hung", mnt.encode(), b"fuse.hung", 0, opts) != 0:
    sys.exit("mount fuse on %s: %s" % (mnt, os.strerror(ctypes.get_errno())))
os.execv(prog, [prog] + sys.argv[3:])
"#;

/// The command that runs the agent in a mount namespace of its own, with a hung FUSE mount
/// on `mnt` (see [`MOUNT_AND_EXEC`]).
fn in_hung_mount_ns(mnt: &str) -> [&str; 8] {
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "python3",
        "-c",
        MOUNT_AND_EXEC,
        mnt,
    ]
}

#[test]
fn hung_fuse_mount_does_not_hang_the_scrape() {
    if !privileged("hung_fuse_mount_does_not_hang_the_scrape") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hostlens-hung-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(dir.join("proc/1")).unwrap();
    let mnt_s = mnt.to_str().unwrap();
    std::fs::write(
        dir.join("proc/1/mounts"),
        format!("/dev/root / ext4 rw,relatime 0 0\nhung {mnt_s} fuse.hung rw,nosuid,nodev 0 0\n"),
    )
    .unwrap();
    let procfs = dir.join("proc");
    let wrap = in_hung_mount_ns(mnt_s);
    let agent = Agent::start_with(
        &bin(),
        &[
            "--collector.disable-defaults",
            "--collector.filesystem",
            "--collector.filesystem.mount-timeout=300ms",
            "--path.procfs",
            procfs.to_str().unwrap(),
            "--probe.disable-defaults",
        ],
        Some(&wrap),
    );
    let hung = format!("{{device=\"hung\",fstype=\"fuse.hung\",mountpoint=\"{mnt_s}\"}}");
    let root = "{device=\"/dev/root\",fstype=\"ext4\",mountpoint=\"/\"}";
    for scrape in 1..=3 {
        let e = agent.scrape();
        assert_eq!(
            e.get(&format!("node_filesystem_device_error{hung}")),
            Some(1.0),
            "scrape {scrape}"
        );
        assert_eq!(e.get(&format!("node_filesystem_size_bytes{hung}")), None);
        assert_eq!(
            e.get(&format!("node_filesystem_device_error{root}")),
            Some(0.0)
        );
        assert!(e.get(&format!("node_filesystem_size_bytes{root}")).unwrap() > 0.0);
        assert_eq!(
            e.get("node_scrape_collector_success{collector=\"filesystem\"}"),
            Some(1.0)
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    let log = agent.log();
    assert_eq!(
        log.matches("statfs timed out").count(),
        1,
        "the stuck mount is statted once, then skipped while stuck:\n{log}"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An agent whose textfile directory is the mount point of a hung FUSE mount (in a mount
/// namespace of its own): reading that directory never returns. Returns it and the scratch
/// directory.
fn agent_over_hung_textfile_dir(tag: &str, extra: &[&str]) -> (Agent, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("hostlens-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt_s = mnt.to_str().unwrap();
    let wrap = in_hung_mount_ns(mnt_s);
    let mut args = vec![
        "--collector.disable-defaults",
        "--collector.textfile",
        "--collector.loadavg",
        "--collector.textfile.directory",
        mnt_s,
        "--probe.disable-defaults",
    ];
    args.extend_from_slice(extra);
    (Agent::start_with(&bin(), &args, Some(&wrap)), dir)
}

/// Starts a scrape that will hang, waits 2 s for an answer that does not come, and hangs up
/// (the agent's collection goes on).
fn scrape_that_hangs(agent: &Agent) {
    let mut stuck = TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
    stuck
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    stuck
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 64];
    let r = stuck.read(&mut buf);
    assert!(
        r.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "the scrape over the hung mount should hang, got {r:?}"
    );
}

/// A scrape whose collector is stuck keeps its `--web.max-requests` slot after its client
/// gave up, and a scrape beyond the limit is answered 503 at once, as node_exporter does,
/// instead of queueing behind it; `/healthz` still answers.
#[test]
fn scrape_beyond_max_requests_gets_503_while_one_is_stuck() {
    if !privileged("scrape_beyond_max_requests_gets_503_while_one_is_stuck") {
        return;
    }
    let (agent, dir) = agent_over_hung_textfile_dir("hung503", &["--web.max-requests", "1"]);
    scrape_that_hangs(&agent);
    std::thread::sleep(Duration::from_millis(200));
    for attempt in 1..=2 {
        let t = Instant::now();
        let r = agent.get("/metrics");
        assert_eq!(r.status, 503, "attempt {attempt}: {}", r.text());
        assert!(
            r.text()
                .contains("Limit of concurrent requests reached (1)"),
            "{}",
            r.text()
        );
        assert!(t.elapsed() < Duration::from_secs(5), "answered at once");
    }
    assert_eq!(agent.get("/healthz").status, 200);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Once a collector's call has been running for 10 s, later scrapes skip that collector
/// (reported failed, logged once) and answer with the others' families; one hung source
/// costs one scrape.
#[test]
fn stuck_collector_is_skipped_by_later_scrapes() {
    if !privileged("stuck_collector_is_skipped_by_later_scrapes") {
        return;
    }
    let (agent, dir) = agent_over_hung_textfile_dir("hungskip", &[]);
    let started = Instant::now();
    scrape_that_hangs(&agent);
    std::thread::sleep(Duration::from_secs(11).saturating_sub(started.elapsed()));
    for scrape in 1..=2 {
        let t = Instant::now();
        let e = agent.scrape();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "scrape {scrape} answered at once"
        );
        assert_eq!(
            e.get("node_scrape_collector_success{collector=\"textfile\"}"),
            Some(0.0),
            "scrape {scrape}"
        );
        assert_eq!(
            e.get("node_scrape_collector_success{collector=\"loadavg\"}"),
            Some(1.0)
        );
        assert!(e.get("node_load1").is_some());
    }
    // Logged once for the episode (the line comes through the stderr pipe).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.log().contains("collector stuck in a call") {
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        agent.log().matches("collector stuck in a call").count(),
        1,
        "{}",
        agent.log()
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
