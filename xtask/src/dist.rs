//! `cargo xtask dist`: release build, then under `target/dist/`
//! - `hostlens-<version>-linux-<arch>.tar.gz`: the binary, the systemd unit, the default
//!   config and the README in one directory;
//! - `hostlens_<version>_<arch>.deb`: a Debian package written by hand (control file,
//!   conffiles, maintainer scripts) and built with `dpkg-deb --root-owner-group`.
//!
//! Both are then checked with the tools that consume them (`tar -tzf`, `dpkg-deb --info`,
//! `--contents`, and the packaged binary run from the extracted package).
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{setup, sh};

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct Artifacts {
    pub tarball: PathBuf,
    pub deb: PathBuf,
}

/// Builds the artifacts from the release binary, or — `release = false`, what `xtask test`
/// uses to check the packaging without a second full build — from the debug binary.
pub fn run(root: &Path, env: &setup::BuildEnv, release: bool) -> Result<Artifacts> {
    let bin = if release {
        sh(root, env, "cargo", &["build", "--release", "-p", "agent"])?;
        root.join("target/release/hostlens")
    } else {
        // `xtask test` calls this right after `cargo test` built target/debug/hostlens for the
        // integration tests; `cargo build -p agent` would build it again with other features.
        let bin = root.join("target/debug/hostlens");
        if !bin.exists() {
            sh(root, env, "cargo", &["build", "-p", "agent"])?;
        }
        bin
    };
    let arch = output("dpkg", &["--print-architecture"])?
        .trim()
        .to_string();
    let out = root.join("target/dist");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;

    // Tarball.
    let name = format!("hostlens-{VERSION}-linux-{arch}");
    let stage = out.join(&name);
    install(&bin, &stage.join("hostlens"), 0o755)?;
    install(
        &root.join("systemd/hostlens.service"),
        &stage.join("hostlens.service"),
        0o644,
    )?;
    install(
        &root.join("config/hostlens.yaml"),
        &stage.join("hostlens.yaml"),
        0o644,
    )?;
    install(&root.join("README.md"), &stage.join("README.md"), 0o644)?;
    let tarball = out.join(format!("{name}.tar.gz"));
    run_cmd(
        Command::new("tar")
            .args([
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--sort=name",
                "-czf",
            ])
            .arg(&tarball)
            .arg("-C")
            .arg(&out)
            .arg(&name),
    )?;

    // Debian package.
    let pkg = out.join(format!("hostlens_{VERSION}_{arch}"));
    install(&bin, &pkg.join("usr/bin/hostlens"), 0o755)?;
    install(
        &root.join("systemd/hostlens.service"),
        &pkg.join("lib/systemd/system/hostlens.service"),
        0o644,
    )?;
    install(
        &root.join("config/hostlens.yaml"),
        &pkg.join("etc/hostlens/hostlens.yaml"),
        0o644,
    )?;
    install(
        &root.join("README.md"),
        &pkg.join("usr/share/doc/hostlens/README.md"),
        0o644,
    )?;
    let debian = pkg.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let size_kib = dir_size(&pkg)?.div_ceil(1024);
    let control = format!(
        "Package: hostlens\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: hostlens developers <hostlens@example.invalid>\n\
         Installed-Size: {size_kib}\n\
         Depends: {}\n\
         Section: net\n\
         Priority: optional\n\
         Homepage: https://example.invalid/hostlens\n\
         Description: eBPF host and process agent with node_exporter-compatible metrics\n \
         hostlens serves node_exporter's metrics plus per-process HTTP, syscall and TCP\n \
         metrics captured with eBPF, on /metrics and through Prometheus remote write.\n \
         Runs as a hardened systemd service (hostlens.service).\n",
        depends(&bin)?
    );
    write(&debian.join("control"), &control, 0o644)?;
    write(
        &debian.join("conffiles"),
        "/etc/hostlens/hostlens.yaml\n",
        0o644,
    )?;
    write(
        &debian.join("postinst"),
        // First install ($2 empty): enable and start. Upgrade: restart only if running, so
        // a service the administrator disabled stays disabled.
        "#!/bin/sh\nset -e\n\
         if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then\n\
         \tsystemctl daemon-reload\n\
         \tif [ -z \"$2\" ]; then\n\
         \t\tsystemctl enable hostlens.service\n\
         \t\tsystemctl start hostlens.service || true\n\
         \telse\n\
         \t\tsystemctl try-restart hostlens.service || true\n\
         \tfi\n\
         fi\n",
        0o755,
    )?;
    write(
        &debian.join("prerm"),
        "#!/bin/sh\nset -e\n\
         if [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then\n\
         \tsystemctl disable --now hostlens.service || true\n\
         fi\n",
        0o755,
    )?;
    write(
        &debian.join("postrm"),
        // Purge also removes the remote-write queue (DynamicUser keeps it under
        // /var/lib/private, with /var/lib/hostlens a link to it).
        "#!/bin/sh\nset -e\n\
         if [ -d /run/systemd/system ]; then\n\
         \tsystemctl daemon-reload || true\n\
         fi\n\
         if [ \"$1\" = purge ]; then\n\
         \trm -rf /var/lib/private/hostlens /var/lib/hostlens\n\
         fi\n",
        0o755,
    )?;
    let deb = out.join(format!("hostlens_{VERSION}_{arch}.deb"));
    run_cmd(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&pkg)
            .arg(&deb),
    )?;
    eprintln!("==> {}\n==> {}", tarball.display(), deb.display());
    Ok(Artifacts { tarball, deb })
}

/// Checks the artifacts with the tools that consume them. Fails naming what is wrong.
pub fn check(a: &Artifacts) -> Result<()> {
    let arch = output("dpkg", &["--print-architecture"])?
        .trim()
        .to_string();
    let listing = output("tar", &["-tzvf", path_str(&a.tarball)?])?;
    let top = format!("hostlens-{VERSION}-linux-{arch}");
    for (file, mode) in [
        ("hostlens", "-rwxr-xr-x"),
        ("hostlens.service", "-rw-r--r--"),
        ("hostlens.yaml", "-rw-r--r--"),
        ("README.md", "-rw-r--r--"),
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" {top}/{file}")))
            .with_context(|| format!("tarball lacks {top}/{file}:\n{listing}"))?;
        ensure!(
            line.starts_with(mode) && line.contains(" 0/0 "),
            "tarball: {file} is not {mode} 0/0: {line}"
        );
    }

    let info = output("dpkg-deb", &["--info", path_str(&a.deb)?])?;
    for field in [
        "Package: hostlens".to_string(),
        format!("Version: {VERSION}"),
        format!("Architecture: {arch}"),
        "Depends: libc6 (>= ".to_string(),
    ] {
        ensure!(
            info.contains(&field),
            "dpkg-deb --info lacks {field:?}:\n{info}"
        );
    }
    for script in ["postinst", "prerm", "postrm", "conffiles"] {
        ensure!(info.contains(script), "the package lacks {script}:\n{info}");
    }
    // The maintainer scripts parse as POSIX shell.
    let control = a.deb.with_extension("control");
    let _ = fs::remove_dir_all(&control);
    run_cmd(Command::new("dpkg-deb").arg("-e").arg(&a.deb).arg(&control))?;
    for script in ["postinst", "prerm", "postrm"] {
        run_cmd(Command::new("sh").arg("-n").arg(control.join(script)))
            .with_context(|| format!("{script} is not valid sh"))?;
    }
    let _ = fs::remove_dir_all(&control);
    let contents = output("dpkg-deb", &["--contents", path_str(&a.deb)?])?;
    for (file, mode) in [
        ("./usr/bin/hostlens", "-rwxr-xr-x"),
        ("./lib/systemd/system/hostlens.service", "-rw-r--r--"),
        ("./etc/hostlens/hostlens.yaml", "-rw-r--r--"),
        ("./usr/share/doc/hostlens/README.md", "-rw-r--r--"),
    ] {
        let line = contents
            .lines()
            .find(|l| l.ends_with(&format!(" {file}")))
            .with_context(|| format!("dpkg-deb --contents lacks {file}:\n{contents}"))?;
        ensure!(
            line.starts_with(mode) && line.contains("root/root"),
            "package: {file} is not {mode} root/root: {line}"
        );
    }
    // The packaged binary runs and is this version; the packaged config is valid for it.
    let x = a.deb.with_extension("extracted");
    let _ = fs::remove_dir_all(&x);
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(&a.deb).arg(&x))?;
    let hostlens = x.join("usr/bin/hostlens");
    let version = output(path_str(&hostlens)?, &["--version"])?;
    ensure!(
        version.contains(VERSION),
        "packaged binary says {version:?}"
    );
    let help = output(path_str(&hostlens)?, &["--help"])?;
    ensure!(
        help.contains("--web.config.file"),
        "packaged binary lacks --web.config.file"
    );
    let _ = fs::remove_dir_all(&x);
    eprintln!("==> dist artifacts checked (tar, dpkg-deb --info/--contents, packaged binary)");
    Ok(())
}

/// `libc6 (>= x.y)` from the highest GLIBC_ symbol version the binary needs.
fn depends(bin: &Path) -> Result<String> {
    let dump = output("objdump", &["-T", path_str(bin)?])?;
    let mut max = (2u32, 17u32);
    for v in dump.split("GLIBC_").skip(1) {
        let num: String = v
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut it = num.split('.').filter_map(|p| p.parse::<u32>().ok());
        if let (Some(a), Some(b)) = (it.next(), it.next()) {
            max = max.max((a, b));
        }
    }
    Ok(format!("libc6 (>= {}.{}), libgcc-s1", max.0, max.1))
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(to.parent().context("no parent")?)?;
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("starting {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
