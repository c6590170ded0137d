//! Builds the eBPF programs (`agent-ebpf`, target bpfel-unknown-none) with aya-build and
//! records build metadata for `hostlens_build_info`.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .ok_or_else(|| anyhow!("agent/ has no parent directory"))?;

    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HOSTLENS_REVISION={revision}");
    for p in [".git/HEAD", ".git/refs/heads"] {
        let p = root.join(p);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(&rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HOSTLENS_RUSTC={rustc_version}");

    let ebpf_dir = root.join("agent-ebpf");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("agent-common").display()
    );
    println!("cargo:rerun-if-env-changed=HOSTLENS_EBPF_TOOLCHAIN");
    let toolchain =
        std::env::var("HOSTLENS_EBPF_TOOLCHAIN").unwrap_or_else(|_| default_toolchain());
    let ebpf_dir_str = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: ebpf_dir_str,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .with_context(|| {
        format!(
            "building the eBPF programs with toolchain {toolchain:?} (run `cargo xtask setup`, \
             or set AYA_BUILD_SKIP=1 for a build without eBPF)"
        )
    })?;

    // With AYA_BUILD_SKIP=1 aya-build produces nothing; an empty object makes the agent
    // report every probe as failed instead of failing to compile.
    for object in ["agent-ebpf", "agent-ebpf-syscalls", "agent-ebpf-http"] {
        let out = PathBuf::from(std::env::var("OUT_DIR")?).join(object);
        if !out.exists() {
            std::fs::write(&out, b"").with_context(|| format!("writing {}", out.display()))?;
        }
    }
    Ok(())
}

/// The toolchain `cargo xtask setup` prepared: the linked Debian toolchain `debian-bpf` when it
/// exists, else `nightly` (which then needs rust-src for -Z build-std).
fn default_toolchain() -> String {
    let listed = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    if listed.lines().any(|l| l.starts_with("debian-bpf")) {
        "debian-bpf".into()
    } else {
        "nightly".into()
    }
}
