//! `cargo xtask bench`, remote-write part: runs `agent/examples/remote_write_bench.rs` in
//! release mode and writes its table to its own section of BENCHMARKS.md.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::bench::free_port;
use anyhow::{Context as _, Result, bail};

use crate::setup::BuildEnv;

const MARKER: &str = "## Remote-write encoding";

pub fn run(root: &Path, env: &BuildEnv, write: bool) -> Result<()> {
    eprintln!("==> cargo run --release -p agent --example remote_write_bench");
    let mut cmd = Command::new("cargo");
    cmd.args([
        "run",
        "--release",
        "-q",
        "-p",
        "agent",
        "--example",
        "remote_write_bench",
    ])
    .current_dir(root);
    env.apply(&mut cmd);
    let out = cmd.output().context("running the remote-write benchmark")?;
    if !out.status.success() {
        bail!(
            "remote_write_bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let load = load_vs_vmagent(root, env)?;
    let date = super::bench::utc_now();
    let md = format!(
        "{MARKER} ({date})\n\n`cargo xtask bench` (`agent/examples/remote_write_bench.rs`, release build, one \
         core): 20,000 series shaped like a node's (cpu×mode counters, filesystem gauges, HTTP \
         histogram buckets by method/status/route, with `instance` and `job`), encoded in \
         batches of 2,000 (Prometheus' default `max_samples_per_send`) and compressed with \
         snappy (block format), repeated for at least 1.5 s. Encoding is what hostlens does per \
         series: its labels (borrowed strings) and sample to protobuf bytes once, when it is \
         queued (a 1.0 body is then those bytes as they are); for 2.0 also the request with its \
         symbols table built from those bytes. Bytes per sample are of the \
         request body as sent. The 2.0 figures include per-series metadata (type, help).\n\n{table}\n{load}"
    );
    print!("{md}");
    if write {
        super::bench::write_section(root, MARKER, &md)?;
    }
    Ok(())
}

const SERIES: usize = 100_000;
/// The figures: 100,000 series every 15 s, memory during a 10-minute outage.
const INTERVAL_MS: u64 = 15_000;
const INTERVALS: u32 = 4;
const OUTAGE_INTERVALS: u32 = 40;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_http(port: u16, path: &str) -> Result<()> {
    use std::io::{Read as _, Write as _};
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut b = String::new();
            let _ = s.read_to_string(&mut b);
            if b.starts_with("HTTP/1.1 200") || b.starts_with("HTTP/1.0 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("port {port}{path} not ready")
}

/// (CPU seconds, RSS MB) of a process from /proc.
fn proc_stat(pid: u32) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &text[text.rfind(')').context("stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| -> Result<f64> { Ok(f.get(i - 3).context("stat field")?.parse::<f64>()?) };
    Ok(((n(14)? + n(15)?) / 100.0, n(24)? * 4096.0 / 1e6))
}

/// Starts the hostlens load example with `args` (push: `--url`, `--queue`; or `--baseline`).
fn hostlens_spawn(bin: &Path, args: &[&str], intervals: u32) -> Result<Child> {
    Command::new(bin)
        .args(args)
        .args([
            "--series",
            &SERIES.to_string(),
            "--interval-ms",
            &INTERVAL_MS.to_string(),
            "--intervals",
            &intervals.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running remote_write_load")
}

/// Waits for a load example; returns its one result line.
fn hostlens_result(child: Child) -> Result<String> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "remote_write_load: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn hostlens_load(bin: &Path, args: &[&str], intervals: u32) -> Result<String> {
    hostlens_result(hostlens_spawn(bin, args, intervals)?)
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// vmagent scraping the same series (text file served by python3) and pushing them; returns
/// (CPU ms per interval, RSS MB at the start, RSS MB at the end).
fn vmagent_load(
    dir: &Path,
    target_port: u16,
    url: &str,
    intervals: u32,
) -> Result<(f64, f64, f64)> {
    let cfg = dir.join("vmagent.yml");
    std::fs::write(
        &cfg,
        format!(
            "scrape_configs:\n  - job_name: load\n    scrape_interval: {}ms\n    metrics_path: /metrics.txt\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
            INTERVAL_MS
        ),
    )?;
    let tmp = dir.join(format!("vmagent-data-{intervals}"));
    let port = free_port()?;
    let child = Kill(
        Command::new("vmagent")
            .arg(format!("-promscrape.config={}", cfg.display()))
            .arg(format!("-remoteWrite.url={url}"))
            .arg(format!("-remoteWrite.tmpDataPath={}", tmp.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting vmagent (Debian package victoria-metrics)")?,
    );
    wait_http(port, "/health")?;
    let interval = Duration::from_millis(INTERVAL_MS);
    std::thread::sleep(interval + interval / 2);
    let (c0, r0) = proc_stat(child.0.id())?;
    std::thread::sleep(interval * intervals);
    let (c1, r1) = proc_stat(child.0.id())?;
    Ok(((c1 - c0) * 1000.0 / intervals as f64, r0, r1))
}

fn load_vs_vmagent(root: &Path, env: &BuildEnv) -> Result<String> {
    let mut cmd = Command::new("cargo");
    cmd.args([
        "build",
        "--release",
        "-q",
        "-p",
        "agent",
        "--example",
        "remote_write_load",
    ])
    .current_dir(root);
    env.apply(&mut cmd);
    if !cmd.status()?.success() {
        bail!("building remote_write_load failed");
    }
    let bin = root.join("target/release/examples/remote_write_load");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("hostlens-rw-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let st = Command::new(&bin)
        .arg("--dump-text")
        .arg(dir.join("metrics.txt"))
        .args(["--series", &SERIES.to_string()])
        .status()?;
    if !st.success() {
        bail!("remote_write_load --dump-text failed");
    }
    let vm_port = free_port()?;
    let _vm = Kill(
        Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", dir.join("vm").display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting victoria-metrics")?,
    );
    wait_http(vm_port, "/health")?;
    let http_port = free_port()?;
    let _http = Kill(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &http_port.to_string(),
            ])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting python3 http.server")?,
    );
    wait_http(http_port, "/metrics.txt")?;
    let url = format!("http://127.0.0.1:{vm_port}/api/v1/write");
    let closed = format!("http://127.0.0.1:{}/api/v1/write", free_port()?);
    let q = |name: &str| dir.join(name).display().to_string();
    let iv = INTERVAL_MS as f64 / 1000.0;
    eprintln!("==> remote write load: hostlens, {SERIES} series every {iv} s");
    let hl = hostlens_load(&bin, &["--url", &url, "--queue", &q("q1")], INTERVALS)?;
    eprintln!("==> remote write load: vmagent");
    let (vm_cpu, vm_r0, vm_r1) = vmagent_load(&dir, http_port, &url, INTERVALS)?;
    eprintln!("==> remote write load: the load registry alone, then gathered (no remote write)");
    let reg = hostlens_load(&bin, &["--baseline", "registry"], INTERVALS)?;
    let gat = hostlens_load(&bin, &["--baseline", "gather"], INTERVALS)?;
    // Only memory is reported for the outage, so both agents sit through it at once.
    eprintln!(
        "==> remote write outage ({:.0} s): hostlens and vmagent side by side",
        OUTAGE_INTERVALS as f64 * iv
    );
    let hl_child = hostlens_spawn(
        &bin,
        &["--url", &closed, "--queue", &q("q2")],
        OUTAGE_INTERVALS,
    )?;
    let (_, vo_r0, vo_r1) = vmagent_load(&dir, http_port, &closed, OUTAGE_INTERVALS)?;
    let hl_out = hostlens_result(hl_child)?;
    let _ = std::fs::remove_dir_all(&dir);
    let hl_cpu = field(&hl, "cpu_ms_per_interval");
    let gat_cpu = field(&gat, "cpu_ms_per_interval");
    Ok(format!(
        "Pushing {SERIES} series every {iv} s to VictoriaMetrics 1.79 (measured over {INTERVALS} intervals after one warm-up \
         interval), and during an outage of {OUTAGE_INTERVALS} intervals ({:.0} s; receiver port closed; both agents \
         run through the outage at the same time, only their memory is reported). hostlens: \
         `agent/examples/remote_write_load.rs`, a registry of {SERIES} gauges through the real path (gather, disk queue, \
         encode, snappy, HTTP), the process's CPU and RSS. Peer: vmagent 1.79 (Debian `victoria-metrics`) scraping the \
         same series as a text file from `python3 -m http.server` and pushing them (its own disk-backed queue).\n\n\
         | agent | CPU ms per interval | RSS MB while pushing (start → end) | RSS MB during outage (start → end) | queue on disk after outage MB |\n\
         |---|---|---|---|---|\n\
         | hostlens | {hl_cpu:.0} | {:.1} → {:.1} | {:.1} → {:.1} | {:.1} |\n\
         | vmagent 1.79 | {vm_cpu:.0} | {vm_r0:.1} → {vm_r1:.1} | {vo_r0:.1} → {vo_r1:.1} | |\n\n\
         Ratio hostlens / vmagent: CPU per interval **{:.2}×**, RSS while pushing **{:.2}×**, RSS at the end of the outage **{:.2}×**.\n\n\
         What of hostlens' figures is the load example's own registry (same process, same schedule, no remote write):\n\n\
         | hostlens process | CPU ms per interval | RSS MB (start → end) |\n\
         |---|---|---|\n\
         | the {SERIES}-gauge registry alone | {:.0} | {:.1} → {:.1} |\n\
         | the registry gathered every interval (`prometheus_client` protobuf encode) | {gat_cpu:.0} | {:.1} → {:.1} |\n\
         | gathered and pushed (above) | {hl_cpu:.0} | {:.1} → {:.1} |\n\n\
         The remote-write path's own cost (pushed minus gathered): **{:.0} ms CPU per interval, {:.1} MB RSS**.\n\n",
        OUTAGE_INTERVALS as f64 * iv,
        field(&hl, "rss_first_mb"),
        field(&hl, "rss_last_mb"),
        field(&hl_out, "rss_first_mb"),
        field(&hl_out, "rss_last_mb"),
        field(&hl_out, "queue_mb"),
        hl_cpu / vm_cpu,
        field(&hl, "rss_last_mb") / vm_r1,
        field(&hl_out, "rss_last_mb") / vo_r1,
        field(&reg, "cpu_ms_per_interval"),
        field(&reg, "rss_first_mb"),
        field(&reg, "rss_last_mb"),
        field(&gat, "rss_first_mb"),
        field(&gat, "rss_last_mb"),
        field(&hl, "rss_first_mb"),
        field(&hl, "rss_last_mb"),
        hl_cpu - gat_cpu,
        field(&hl, "rss_last_mb") - field(&gat, "rss_last_mb"),
    ))
}
