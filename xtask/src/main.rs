//! `cargo xtask <task>`: toolchain setup and orchestration for hostlens.
//!
//! - `setup`: idempotent installation of what building and testing need on a fresh machine.
//! - `run`:   setup, release build, then `hostlens --config.file config/hostlens.yaml` (root).
//! - `test`:  setup, fmt, clippy (host and eBPF crates), unit tests, end-to-end and
//!   privileged integration tests.
//! - `dist`:  release tarball and Debian package under target/dist, checked with tar and
//!   dpkg-deb (also run by `test`).
//! - `bench`: performance figures against the real peers, written to BENCHMARKS.md.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod bench_http;
mod bench_remote_write;
mod bench_syscalls;
mod bench_tcp;
mod dist;
mod setup;

#[derive(Parser)]
#[command(name = "xtask", about = "hostlens developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain, test peers and kernel mounts (idempotent).
    Setup,
    /// Build in release mode and run the agent in the foreground with config/hostlens.yaml.
    Run {
        /// Extra flags for hostlens, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every test tier (CI runs exactly this).
    Test,
    /// Build the release tarball and the Debian package under target/dist, and check them.
    Dist,
    /// Measure performance against the real peers and update BENCHMARKS.md.
    Bench {
        /// Print the results without rewriting BENCHMARKS.md.
        #[arg(long)]
        no_write: bool,
        /// Only the HTTP probe section (nginx under wrk, probe off vs on).
        #[arg(long)]
        only_http: bool,
        /// With --only-http: only the throughput budget, as N back-to-back off/on pairs.
        #[arg(long, value_name = "N", requires = "only_http")]
        pairs: Option<usize>,
        /// Only the TCP probe section (connection rate off vs on, CPU at 10k/s, memory).
        #[arg(long)]
        only_tcp: bool,
        /// Only the syscall probe section (getppid loop: no probe, bpftrace peers, hostlens).
        #[arg(long)]
        only_syscalls: bool,
        /// Only the scrape section (CPU, latency and memory per scrape vs node_exporter).
        #[arg(long)]
        only_scrape: bool,
        /// Only the remote-write section (encoding, and the 100k-series load vs vmagent).
        #[arg(long, conflicts_with = "only_http")]
        only_remote_write: bool,
        /// Everything but the remote-write section (which takes about 17 minutes).
        #[arg(long, conflicts_with = "only_remote_write")]
        skip_remote_write: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.task {
        Task::Setup => setup::run().map(|_| ()),
        Task::Run { args } => run(&root, &args),
        Task::Test => test(&root),
        Task::Dist => {
            let env = setup::run()?;
            let a = dist::run(&root, &env, true)?;
            dist::check(&a)
        }
        Task::Bench {
            no_write,
            only_http,
            pairs,
            only_tcp,
            only_syscalls,
            only_scrape,
            only_remote_write,
            skip_remote_write,
        } => {
            let env = setup::run()?;
            if only_remote_write {
                return bench_remote_write::run(&root, &env, !no_write);
            }
            if only_http {
                sh(&root, &env, "cargo", &["build", "--release", "-p", "agent"])?;
                let bin = root.join("target/release/hostlens");
                if let Some(n) = pairs {
                    return bench_http::run_pairs(&root, &bin, n, !no_write);
                }
                return bench_http::run(&root, &bin, !no_write);
            }
            if only_syscalls {
                sh(&root, &env, "cargo", &["build", "--release", "-p", "agent"])?;
                return bench_syscalls::run_alone(
                    &root,
                    &root.join("target/release/hostlens"),
                    !no_write,
                );
            }
            if only_scrape {
                return bench::run_scrape_alone(&root, &env, !no_write);
            }
            if only_tcp {
                sh(&root, &env, "cargo", &["build", "--release", "-p", "agent"])?;
                return bench_tcp::run_alone(
                    &root,
                    &root.join("target/release/hostlens"),
                    !no_write,
                );
            }
            bench::run(&root, &env, !no_write)?;
            if skip_remote_write {
                return Ok(());
            }
            bench_remote_write::run(&root, &env, !no_write)
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    Ok(dir
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

/// Runs a command in the workspace, echoing it; fails with the command line on error.
pub fn sh(root: &Path, env: &setup::BuildEnv, program: &str, args: &[&str]) -> Result<()> {
    sh_env(root, env, program, args, &[])
}

pub fn sh_env(
    root: &Path,
    env: &setup::BuildEnv,
    program: &str,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> Result<()> {
    eprintln!("==> {program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(root);
    env.apply(&mut cmd);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed: {status}", args.join(" "));
    }
    Ok(())
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|s| s.trim() == "0")
}

fn run(root: &Path, args: &[String]) -> Result<()> {
    let env = setup::run()?;
    sh(root, &env, "cargo", &["build", "--release", "-p", "agent"])?;
    if !is_root() {
        eprintln!(
            "warning: not running as root: the eBPF probes need root (or CAP_BPF, CAP_PERFMON, \
             CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE) and will be reported failed; the procfs \
             collectors still work"
        );
    }
    let bin = root.join("target/release/hostlens");
    let config = root.join("config/hostlens.yaml");
    eprintln!(
        "==> {} --config.file {} {}",
        bin.display(),
        config.display(),
        args.join(" ")
    );
    let status = Command::new(&bin)
        .arg("--config.file")
        .arg(&config)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    if !status.success() {
        bail!("hostlens exited with {status}");
    }
    Ok(())
}

fn test(root: &Path) -> Result<()> {
    let env = setup::run()?;
    sh(root, &env, "cargo", &["fmt", "--all", "--", "--check"])?;
    // Host crates; the eBPF object is not needed to lint them.
    sh_env(
        root,
        &env,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "agent-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[("AYA_BUILD_SKIP", "1")],
    )?;
    setup::clippy_ebpf(root, &env)?;
    // Unit tests of every host crate, and the end-to-end golden tests.
    sh(
        root,
        &env,
        "cargo",
        &[
            "test",
            "--workspace",
            "--exclude",
            "agent-ebpf",
            "--lib",
            "--bins",
            "--test",
            "e2e",
            // Side by side with node_exporter 1.5.0 (unprivileged).
            "--test",
            "node_exporter_peer",
            "--test",
            "hw_collectors",
            "--test",
            "fuzz_parsers",
            "--test",
            "remote_write",
        ],
    )?;
    // Privileged integration tests: real kernel, real programs, one at a time.
    if !is_root() {
        eprintln!("warning: not root: the privileged tests will skip (and fail under CI)");
    }
    sh(
        root,
        &env,
        "cargo",
        &[
            "test",
            "-p",
            "agent",
            "--test",
            "privileged",
            "--test",
            "secure",
            "--test",
            "deploy",
            "--test",
            "hung_mount",
            "--test",
            "hw_privileged",
            "--test",
            "privileged_process",
            "--",
            "--test-threads=1",
        ],
    )?;
    // The http probe against real servers and clients (nginx, python3, curl, wrk).
    sh(
        root,
        &env,
        "cargo",
        &[
            "test",
            "-p",
            "agent",
            "--test",
            "http_privileged",
            "--",
            "--test-threads=1",
        ],
    )?;
    // The tarball and Debian package, inspected with tar and dpkg-deb (built from the debug
    // binary the tests used: `cargo xtask dist` builds them from the release one).
    let artifacts = dist::run(root, &env, false)?;
    dist::check(&artifacts)?;
    eprintln!("==> all test tiers passed");
    Ok(())
}
