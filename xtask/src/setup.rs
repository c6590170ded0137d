//! `cargo xtask setup`: what a fresh machine of this kind needs, installed idempotently.
//!
//! The eBPF crate needs a Rust compiler that can target bpfel-unknown-none and `bpf-linker`:
//! - a rustup nightly with rust-src, where one exists (`-Z build-std=core`), or
//! - Debian's `rustc-web` 1.96 (LLVM 22) with `libstd-rust-web-dev-bpf`, a prebuilt core for
//!   bpfel-unknown-none, linked into rustup as the toolchain `debian-bpf` whose cargo wrapper
//!   sets `RUSTC_BOOTSTRAP=aya_ebpf` (aya-ebpf needs `asm_experimental_arch` on bpf).
//!
//! `bpf-linker` 0.13.0 is built from crates.io against Debian's LLVM 22. The test peers
//! (promtool, node_exporter, …) come from Debian packages. bpffs and tracefs are mounted when
//! absent. Every step checks first, so a re-run does nothing.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";
const DEBIAN_TOOLCHAIN: &str = "debian-bpf";
const DEBIAN_TOOLCHAIN_DIR: &str = "/opt/rust-debian-bpf";

/// Packages for the Debian eBPF toolchain.
const TOOLCHAIN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "rust-web-clippy",
    "llvm-22-dev",
];

/// Packages the tests and benchmarks use: real peers and real clients.
const PEER_PACKAGES: &[&str] = &[
    // mkfs.btrfs: the btrfs collector's privileged test (agent/tests/hw_privileged.rs).
    "btrfs-progs",
    "bpftool",
    // syscall-probe bench peer; process-group and TCP tests
    "bpftrace",
    "ethtool",
    "iproute2",
    "nftables",
    "curl",
    "nginx-light",
    "prometheus",
    "prometheus-node-exporter",
    "python3",
    // Deploy and secure (issue 5): systemd-analyze, openssl s_client, setpriv, the venv for
    // kubernetes-validate, dpkg-deb and objdump for `xtask dist`.
    "systemd",
    "openssl",
    "util-linux",
    "python3-venv",
    "dpkg",
    "binutils",
    "wrk",
    // A test program making 32-bit (ia32) syscalls (agent/tests/privileged_process.rs).
    "gcc",
    "libc6-dev",
    // Remote-write receiver for agent/tests/remote_write.rs (Prometheus is the other).
    "victoria-metrics",
];

/// kubernetes-validate (PyPI), in a virtualenv under target/tools/kv.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// How to build the eBPF crate, as found or prepared by setup.
#[derive(Debug, Clone)]
pub struct BuildEnv {
    /// rustup toolchain name for the eBPF build.
    pub toolchain: String,
    /// Whether that toolchain needs `-Z build-std=core` (a nightly with rust-src).
    pub build_std: bool,
    /// Directory holding `bpf-linker`, put first on PATH.
    pub cargo_bin: PathBuf,
}

impl BuildEnv {
    pub fn apply(&self, cmd: &mut Command) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.cargo_bin.clone()];
        paths.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env("PATH", joined);
        }
        cmd.env("HOSTLENS_EBPF_TOOLCHAIN", &self.toolchain);
    }
}

fn step(msg: &str) {
    eprintln!("==> setup: {msg}");
}

fn output(cmd: &mut Command) -> Option<String> {
    let o = cmd.output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "missing Debian packages {}: run `cargo xtask setup` as root once",
            missing.join(" ")
        );
    }
    step(&format!("apt-get install {}", missing.join(" ")));
    let ok = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("running apt-get update")?
        .success();
    if !ok {
        eprintln!("warning: apt-get update reported errors; trying the install anyway");
    }
    let status = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "-o",
            "DPkg::Lock::Timeout=600",
        ])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        // Debian's packages start their services on install; the tests start their own.
        .env("RUNLEVEL", "1")
        .status()
        .context("running apt-get install")?;
    if !status.success() {
        bail!("apt-get install {} failed: {status}", missing.join(" "));
    }
    // The prometheus and node-exporter packages enable services; this machine's tests start
    // them on chosen ports, so stop any that a service manager started.
    for svc in ["prometheus", "prometheus-node-exporter"] {
        let _ = Command::new("systemctl")
            .args(["stop", svc])
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status();
    }
    Ok(())
}

/// A rustup nightly that has rust-src (so `-Z build-std=core` works).
fn nightly_with_rust_src() -> bool {
    let Some(sysroot) =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
    else {
        return false;
    };
    Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
}

fn ensure_bpf_linker(cargo_bin: &Path) -> Result<()> {
    let linker = cargo_bin.join("bpf-linker");
    let current = output(Command::new(&linker).arg("--version")).unwrap_or_default();
    if current.contains(&format!("bpf-linker {BPF_LINKER_VERSION}")) {
        return Ok(());
    }
    step(&format!(
        "cargo install bpf-linker {BPF_LINKER_VERSION} (llvm-{LLVM_MAJOR})"
    ));
    let prefix = format!("/usr/lib/llvm-{LLVM_MAJOR}");
    // llvm-sys reads LLVM_SYS_221_PREFIX, bpf-linker's build.rs reads LLVM_PREFIX; without the
    // latter it finds Debian's default LLVM 14 and fails with "-lLLVM".
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
            &format!("llvm-{LLVM_MAJOR}"),
        ])
        .env("LLVM_SYS_221_PREFIX", &prefix)
        .env("LLVM_PREFIX", &prefix)
        .status()
        .context("running cargo install bpf-linker")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed: {status}");
    }
    Ok(())
}

/// Links Debian's rustc into rustup as `debian-bpf`, with a cargo wrapper that lets aya-ebpf
/// use its one unstable feature.
fn ensure_debian_toolchain() -> Result<()> {
    let dir = Path::new(DEBIAN_TOOLCHAIN_DIR);
    let bin = dir.join("bin");
    let wrapper = bin.join("cargo");
    let script = "#!/bin/sh\n\
# Debian cargo-web for the hostlens eBPF crate (written by cargo xtask setup).\n\
: \"${RUSTC_BOOTSTRAP:=aya_ebpf}\"\n\
export RUSTC_BOOTSTRAP\n\
case \"$1\" in\n\
  build|check|clippy|test|run|doc|rustc)\n\
    sub=$1; shift; exec /usr/bin/cargo \"$sub\" --ignore-rust-version \"$@\";;\n\
esac\n\
exec /usr/bin/cargo \"$@\"\n";
    let linked = output(Command::new("rustup").args(["toolchain", "list"]))
        .is_some_and(|l| l.lines().any(|l| l.starts_with(DEBIAN_TOOLCHAIN)));
    let up_to_date = std::fs::read_to_string(&wrapper).is_ok_and(|s| s == script)
        && bin.join("rustc").exists()
        && bin.join("clippy-driver").exists();
    if linked && up_to_date {
        return Ok(());
    }
    step(&format!(
        "rustup toolchain link {DEBIAN_TOOLCHAIN} {DEBIAN_TOOLCHAIN_DIR}"
    ));
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    std::fs::create_dir_all(dir.join("lib"))?;
    for tool in ["rustc", "rustdoc", "cargo-clippy", "clippy-driver"] {
        let link = bin.join(tool);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(Path::new("/usr/bin").join(tool), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    std::fs::write(&wrapper, script).with_context(|| format!("writing {}", wrapper.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    let status = Command::new("rustup")
        .args(["toolchain", "link", DEBIAN_TOOLCHAIN, DEBIAN_TOOLCHAIN_DIR])
        .status()
        .context("running rustup toolchain link")?;
    if !status.success() {
        bail!("rustup toolchain link failed: {status}");
    }
    Ok(())
}

fn ensure_mount(target: &str, fstype: &str) {
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(target)));
    if mounted || !crate::is_root() {
        return;
    }
    step(&format!("mount -t {fstype} {fstype} {target}"));
    let ok = Command::new("mount")
        .args(["-t", fstype, fstype, target])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("warning: could not mount {fstype} at {target}");
    }
}

/// Runs every setup step; returns how to build the eBPF crate.
pub fn run() -> Result<BuildEnv> {
    let cargo_bin = cargo_home().join("bin");
    let use_nightly = nightly_with_rust_src();
    let mut pkgs: Vec<&str> = vec!["llvm-22-dev"];
    if !use_nightly {
        pkgs.extend_from_slice(TOOLCHAIN_PACKAGES);
    }
    pkgs.extend_from_slice(PEER_PACKAGES);
    apt_install(&pkgs)?;
    ensure_bpf_linker(&cargo_bin)?;
    let env = if use_nightly {
        BuildEnv {
            toolchain: "nightly".into(),
            build_std: true,
            cargo_bin,
        }
    } else {
        ensure_debian_toolchain()?;
        BuildEnv {
            toolchain: DEBIAN_TOOLCHAIN.into(),
            build_std: false,
            cargo_bin,
        }
    };
    ensure_kubernetes_validate()?;
    ensure_mount("/sys/fs/bpf", "bpf");
    ensure_mount("/sys/kernel/tracing", "tracefs");
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!("warning: no /sys/kernel/btf/vmlinux: tp_btf programs will not load");
    }
    step(&format!(
        "eBPF toolchain {}{}, bpf-linker {BPF_LINKER_VERSION}",
        env.toolchain,
        if env.build_std {
            " (-Z build-std=core)"
        } else {
            ""
        }
    ));
    Ok(env)
}

/// `cargo clippy -D warnings` for the eBPF crate, on its real target.
pub fn clippy_ebpf(root: &Path, env: &BuildEnv) -> Result<()> {
    let mut args = vec![
        "run",
        env.toolchain.as_str(),
        "cargo",
        "clippy",
        "-p",
        "agent-ebpf",
        "--target",
        "bpfel-unknown-none",
        "--release",
        "--target-dir",
        "target/ebpf-clippy",
    ];
    if env.build_std {
        args.extend_from_slice(&["-Z", "build-std=core"]);
    }
    args.extend_from_slice(&["--", "-D", "warnings"]);
    crate::sh_env(
        root,
        env,
        "rustup",
        &args,
        &[(
            "CARGO_ENCODED_RUSTFLAGS",
            "--cfg=bpf_target_arch=\"x86_64\"",
        )],
    )
}

/// Installs kubernetes-validate into `target/tools/kv` (a virtualenv of Debian's python3),
/// unless the pinned version is there already.
fn ensure_kubernetes_validate() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    let venv = root.join("target/tools/kv");
    let bin = venv.join("bin/kubernetes-validate");
    let want = KUBERNETES_VALIDATE.split("==").nth(1).unwrap_or_default();
    let have = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if have.as_deref() == Some(want) {
        return Ok(());
    }
    step(&format!(
        "pip install {KUBERNETES_VALIDATE} into {}",
        venv.display()
    ));
    let ok = Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("creating the kubernetes-validate virtualenv")?
        .success();
    if !ok {
        bail!("python3 -m venv {} failed", venv.display());
    }
    let ok = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", KUBERNETES_VALIDATE])
        .status()
        .context("running pip")?
        .success();
    if !ok {
        bail!("pip install {KUBERNETES_VALIDATE} failed");
    }
    Ok(())
}
