//! `cargo xtask bench`, TCP probe section: loopback connection rate with the `tcp` probe off
//! and on (same run), the agent's CPU while it watches that rate, and its memory (RSS + BPF
//! maps) with many live sockets.
use std::{
    fmt::Write as _,
    io::Read as _,
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

const RUN: Duration = Duration::from_secs(3);
const LIVE_SOCKETS: usize = 5_000;

/// Connections per second a client thread completes (connect, server accepts and closes,
/// client reads EOF) against a local accept loop, for [`RUN`].
fn connection_rate() -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        for s in listener.incoming() {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            drop(s);
        }
    });
    let start = Instant::now();
    let mut n = 0u64;
    let mut buf = [0u8; 16];
    while start.elapsed() < RUN {
        let mut c = TcpStream::connect(addr)?;
        let _ = c.read(&mut buf);
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(addr);
    let _ = server.join();
    Ok(rate)
}

/// Lifts the soft open-file limit (up to the hard one) for the live-socket measurement.
fn raise_nofile(want: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn cpu_ticks(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok((f[11].parse::<u64>()? + f[12].parse::<u64>()?) as f64)
}

/// Runs the measurement and returns the BENCHMARKS.md section.
pub fn run(bin: &Path, date: &str) -> Result<String> {
    raise_nofile(2 * LIVE_SOCKETS as u64 + 256);
    let off1 = connection_rate()?;
    let port = super::bench::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "--web.listen-address",
            &addr,
            "--collector.disable-defaults",
            "--probe.disable-defaults",
            "--probe.tcp",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting hostlens")?;
    let agent = super::bench::Proc {
        name: "hostlens",
        child,
        port,
    };
    super::bench::wait_ready(agent.port, "/readyz")?;
    let pid = agent.child.id();
    let cpu0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    let on = connection_rate()?;
    let cpu_pct = (cpu_ticks(pid)? - cpu0) / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
    // Many live connections at once: their owners sit in the socket map.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let laddr = listener.local_addr()?;
    let mut held = Vec::with_capacity(2 * LIVE_SOCKETS);
    for _ in 0..LIVE_SOCKETS {
        held.push(TcpStream::connect(laddr)?);
        held.push(listener.accept()?.0);
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss = super::bench::rss_bytes(pid)? / 1e6;
    let maps = super::bench::bpf_map_bytes(pid) / 1e6;
    drop(held);
    drop(agent);
    std::thread::sleep(Duration::from_millis(300));
    let off2 = connection_rate()?;
    let off = (off1 + off2) / 2.0;
    let mut md = String::new();
    writeln!(md, "## TCP probe: connection rate and cost ({date})\n")?;
    writeln!(
        md,
        "`cargo xtask bench`: one client thread connects to a local accept loop on 127.0.0.1 \
         and reads to EOF, as fast as it can for {} s, with hostlens stopped, then running \
         only its `tcp` probe, then stopped again. hostlens CPU is its utime+stime during the \
         \"on\" run; memory is taken with {LIVE_SOCKETS} connections ({} sockets) open.\n",
        RUN.as_secs(),
        2 * LIVE_SOCKETS
    )?;
    writeln!(md, "| setup | connections/s |")?;
    writeln!(md, "|---|---|")?;
    writeln!(md, "| no probe (before) | {off1:.0} |")?;
    writeln!(md, "| `tcp` probe on | {on:.0} |")?;
    writeln!(md, "| no probe (after) | {off2:.0} |")?;
    writeln!(
        md,
        "\nConnection rate with the probe on: **{:.2}×** the rate without. hostlens CPU while \
         it watched {on:.0} connections/s: **{cpu_pct:.1} %** of one core (the kernel \
         aggregates; userspace only reads at scrape time). With {} live sockets: RSS \
         {rss:.1} MB, BPF maps {maps:.2} MB.\n",
        on / off,
        2 * LIVE_SOCKETS
    )?;
    Ok(md)
}
