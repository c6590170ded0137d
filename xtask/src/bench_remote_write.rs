//! `cargo xtask bench`, remote-write part: runs `agent/examples/remote_write_bench.rs` in
//! release mode and writes its table to its own section of BENCHMARKS.md.
use std::{path::Path, process::Command};

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
    let table = String::from_utf8_lossy(&out.stdout);
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let md = format!(
        "{MARKER} ({date})\n\n`cargo xtask bench` (`agent/examples/remote_write_bench.rs`, release build, one \
         core): 20,000 series shaped like a node's (cpu×mode counters, filesystem gauges, HTTP \
         histogram buckets by method/status/route, with `instance` and `job`), encoded in \
         batches of 2,000 (Prometheus' default `max_samples_per_send`) and compressed with \
         snappy (block format), repeated for at least 1.5 s. Bytes per sample are of the \
         request body as sent. The 2.0 figures include per-series metadata (type, help).\n\n{table}\n"
    );
    print!("{md}");
    if write {
        let path = root.join("BENCHMARKS.md");
        let mut doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
        if let Some(start) = doc.find(MARKER) {
            let end = doc[start + MARKER.len()..]
                .find("\n## ")
                .map_or(doc.len(), |e| start + MARKER.len() + e + 1);
            doc.replace_range(start..end, &md);
        } else {
            if !doc.ends_with("\n\n") {
                doc.push('\n');
            }
            doc.push_str(&md);
        }
        std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("==> BENCHMARKS.md updated (remote write)");
    }
    Ok(())
}
