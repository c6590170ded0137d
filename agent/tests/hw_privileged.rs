//! Privileged tests of the hardware collectors on real kernel objects this test creates:
//! a btrfs filesystem on a loop device, compared with the real node_exporter 1.5 (whose
//! btrfs collector asks the kernel through ioctls for per-device statistics). Skips with a
//! printed reason when not root, fails instead under HOSTLENS_REQUIRE_PRIVILEGED (CI).
mod common;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Agent, Exposition, http_get, privileged, run_ok};

/// A btrfs filesystem in a sparse file on a loop device, mounted under a temporary
/// directory; unmounted and detached on drop.
struct LoopBtrfs {
    dir: PathBuf,
    loopdev: String,
    mnt: PathBuf,
}

impl LoopBtrfs {
    fn create(size_mib: u64) -> LoopBtrfs {
        let dir = std::env::temp_dir().join(format!("hostlens-btrfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let img = dir.join("img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(size_mib << 20).unwrap();
        drop(f);
        run_ok(
            Command::new("mkfs.btrfs")
                .args(["-q", "-f", "-L", "hostlens-test"])
                .arg(&img),
        );
        let loopdev = run_ok(Command::new("losetup").args(["--find", "--show"]).arg(&img))
            .trim()
            .to_string();
        let fs = LoopBtrfs { dir, loopdev, mnt };
        run_ok(Command::new("mount").arg(&fs.loopdev).arg(&fs.mnt));
        fs
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(args: &[&str]) -> NodeExporter {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter must be installed by cargo xtask setup");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(port, "/metrics", &[]).is_err() {
            assert!(Instant::now() < deadline, "node_exporter did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        NodeExporter { child, port }
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `node_btrfs_*` families: name -> (HELP, TYPE), and series -> value.
fn btrfs(text: &str) -> (BTreeMap<String, (String, String)>, BTreeMap<String, f64>) {
    let mut fams: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        for (prefix, slot) in [("# HELP ", 0), ("# TYPE ", 1)] {
            if let Some(rest) = line.strip_prefix(prefix)
                && rest.starts_with("node_btrfs_")
            {
                let (n, v) = rest.split_once(' ').unwrap_or((rest, ""));
                let e = fams.entry(n.to_string()).or_default();
                if slot == 0 {
                    e.0 = v.to_string();
                } else {
                    e.1 = v.to_string();
                }
            }
        }
    }
    let samples = Exposition::parse(text)
        .samples
        .into_iter()
        .filter(|(k, _)| k.starts_with("node_btrfs_"))
        .collect();
    (fams, samples)
}

#[test]
fn btrfs_on_a_loop_device_matches_node_exporter() {
    if !privileged("btrfs_on_a_loop_device_matches_node_exporter") {
        return;
    }
    let fs = LoopBtrfs::create(200);
    std::fs::write(fs.mnt.join("data"), vec![7u8; 1 << 20]).unwrap();
    run_ok(&mut Command::new("sync"));
    let args = ["--collector.disable-defaults", "--collector.btrfs"];
    let agent = Agent::start(&[args[0], args[1], "--probe.disable-defaults"]);
    let ne = NodeExporter::start(&args);
    let (ours_f, ours) = btrfs(&agent.get("/metrics").text());
    let (theirs_f, theirs) = btrfs(&http_get(ne.port, "/metrics", &[]).unwrap().text());
    assert_eq!(ours_f, theirs_f);
    assert_eq!(ours, theirs);
    // The loop device, seen through the ioctls: its exact size and zero errors.
    let dev = Path::new(&fs.loopdev)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let size: Vec<f64> = ours
        .iter()
        .filter(|(k, _)| {
            k.starts_with("node_btrfs_device_size_bytes{")
                && k.contains(&format!("device=\"{dev}\""))
                && k.contains("btrfs_dev_uuid=")
        })
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(size, [200.0 * 1024.0 * 1024.0]);
    let errors = ours
        .keys()
        .filter(|k| {
            k.starts_with("node_btrfs_device_errors_total{")
                && k.contains(&format!("device=\"{dev}\""))
        })
        .count();
    assert_eq!(errors, 5, "write, read, flush, corruption, generation");
    assert!(
        ours.keys()
            .any(|k| k.starts_with("node_btrfs_info{label=\"hostlens-test\"")),
        "{ours:?}"
    );
}
