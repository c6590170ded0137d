//! `cargo xtask bench`, TCP probe section: loopback connection rate with the `tcp` probe off
//! and on (same run), the agent's CPU while it watches that rate, and its memory (RSS + BPF
//! maps) with many live sockets.
use std::{
    fmt::Write as _,
    io::Read as _,
    net::{TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;

const RUN: Duration = Duration::from_secs(3);
const LIVE_SOCKETS: usize = 5_000;

/// Client threads for the maximum-rate runs (two cores: the accept loop takes the rest).
const CLIENTS: usize = 2;
/// The fixed rate at which the agent's CPU is measured.
const FIXED_RATE: f64 = 10_000.0;
const FIXED_RUN: Duration = Duration::from_secs(5);

/// Connections per second `clients` threads complete (connect, the server accepts and closes,
/// the client reads EOF) against a local accept loop for `run`; each thread paced to
/// `rate / clients` when `rate` is given, else as fast as it can. While it runs, `during`
/// is called about once a second (e.g. to scrape the agent).
fn connection_rate(
    clients: usize,
    rate: Option<f64>,
    run: Duration,
    mut during: impl FnMut(),
) -> Result<f64> {
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
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || -> Result<u64> {
                let per = rate.map(|r| r / clients as f64);
                let mut n = 0u64;
                let mut buf = [0u8; 16];
                while start.elapsed() < run {
                    if let Some(per) = per {
                        let due = start + Duration::from_secs_f64(n as f64 / per);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let mut c = TcpStream::connect(addr)?;
                    let _ = c.read(&mut buf);
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    while start.elapsed() + Duration::from_secs(1) < run {
        std::thread::sleep(Duration::from_secs(1));
        during();
    }
    let mut n = 0;
    for t in threads {
        n += t
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
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

/// `cargo xtask bench --only-tcp`: this section alone, written into BENCHMARKS.md.
pub fn run_alone(root: &Path, bin: &Path, write: bool) -> Result<()> {
    let date = super::bench::utc_now();
    let md = run(bin, &date)?;
    print!("{md}");
    if write {
        super::bench::write_section(root, "## TCP probe: connection rate and cost", &md)?;
    }
    Ok(())
}

/// Runs the measurement and returns the BENCHMARKS.md section.
pub fn run(bin: &Path, date: &str) -> Result<String> {
    raise_nofile(2 * LIVE_SOCKETS as u64 + 256);
    let off1 = connection_rate(CLIENTS, None, RUN, || {})?;
    let agent = super::bench::start_probe_only(bin, "tcp")?;
    let pid = agent.child.id();
    let cpu0 = super::bench::cpu_seconds(pid)?;
    let t0 = Instant::now();
    let on = connection_rate(CLIENTS, None, RUN, || {})?;
    let cpu_pct = (super::bench::cpu_seconds(pid)? - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    // A fixed 10k connections/s, scraped every second as Prometheus would (more often than
    // its usual 15 s): the agent's CPU is the kernel-side aggregation read back plus scrapes.
    let cpu0 = super::bench::cpu_seconds(pid)?;
    let t0 = Instant::now();
    let scrape_port = agent.port;
    let mut scrapes = 0u32;
    let fixed = connection_rate(4, Some(FIXED_RATE), FIXED_RUN, || {
        if super::bench::scrape_once(scrape_port).is_ok() {
            scrapes += 1;
        }
    })?;
    let fixed_cpu_pct =
        (super::bench::cpu_seconds(pid)? - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
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
    let off2 = connection_rate(CLIENTS, None, RUN, || {})?;
    let off = (off1 + off2) / 2.0;
    let mut md = String::new();
    writeln!(md, "## TCP probe: connection rate and cost ({date})\n")?;
    writeln!(
        md,
        "`cargo xtask bench`: {CLIENTS} client threads connect to a local accept loop on \
         127.0.0.1 and read to EOF, as fast as they can for {} s, with hostlens stopped, then \
         running only its `tcp` probe, then stopped again. With the probe on, 4 threads then \
         pace {FIXED_RATE:.0} connections/s for {} s while /metrics is scraped every second. \
         hostlens CPU is its utime+stime (10 ms ticks); memory is taken with {LIVE_SOCKETS} \
         connections ({} sockets) open.\n",
        RUN.as_secs(),
        FIXED_RUN.as_secs(),
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
         it watched {on:.0} connections/s (no scrapes): {cpu_pct:.1} % of one core (the kernel \
         aggregates; userspace only reads at scrape time). At a paced {fixed:.0} \
         connections/s with {scrapes} scrapes: **{fixed_cpu_pct:.1} %** of one core. With {} \
         live sockets: RSS {rss:.1} MB, BPF maps {maps:.2} MB.\n",
        on / off,
        2 * LIVE_SOCKETS
    )?;
    Ok(md)
}
