//! `cargo xtask bench`: hostlens against the real node_exporter (Debian
//! `prometheus-node-exporter`), same collector set, same machine, same run. Results go to
//! BENCHMARKS.md as ratios; nothing here is a pass/fail assertion.
use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::setup::BuildEnv;

/// node_exporter flags that set Debian's changed defaults back to upstream's, so that both
/// agents do the same work.
const NE_UPSTREAM_DEFAULTS: &[&str] = &[
    "--no-collector.systemd",
    "--collector.textfile.directory=",
    "--collector.netdev.device-exclude=^$",
    "--collector.filesystem.mount-points-exclude=^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)",
];
const WARMUP: usize = 50;
const SCRAPES: usize = 500;
/// Concurrent keep-alive scrapers and how long they run, for the throughput figure.
const SCRAPERS: usize = 8;
const THROUGHPUT_SECS: u64 = 20;

pub(crate) struct Proc {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// hostlens with no collector and only the probe `probe` (`--probe.<probe>`), once ready.
pub(crate) fn start_probe_only(bin: &Path, probe: &str) -> Result<Proc> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "--web.listen-address",
            &addr,
            "--collector.disable-defaults",
            "--probe.disable-defaults",
            &format!("--probe.{probe}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting hostlens")?;
    let agent = Proc {
        name: "hostlens",
        child,
        port,
    };
    wait_ready(agent.port, "/readyz")?;
    Ok(agent)
}

/// CPU time of the calling thread, ns (time the machine spends on other work is not counted).
pub(crate) fn thread_cpu_ns() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// Median of `v` (the mean of the two middle values when their number is even).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn wait_ready(port: u16, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("port {port} not ready after 30 s")
}

/// One GET of /metrics on a fresh connection; the body's size.
pub(crate) fn scrape_once(port: u16) -> Result<usize> {
    Client::connect(port)?.get("/metrics")
}

/// One keep-alive connection issuing GETs; handles Content-Length and chunked bodies.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Result<Client> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(s),
        })
    }

    /// Returns the body size.
    fn get(&mut self, path: &str) -> Result<usize> {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n\r\n"
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.starts_with("HTTP/1.1 200") {
            bail!("unexpected status line {line:?}");
        }
        let (mut len, mut chunked) = (None, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = Some(v.trim().parse::<usize>()?);
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut total = 0;
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)?;
                let mut buf = vec![0; size + 2];
                self.reader.read_exact(&mut buf)?;
                total += size;
                if size == 0 {
                    break;
                }
            }
        } else {
            let n = len.context("response without length")?;
            let mut buf = vec![0; n];
            self.reader.read_exact(&mut buf)?;
            total = n;
        }
        Ok(total)
    }
}

/// utime + stime of `pid` (all its threads, also exited ones), in seconds (10 ms ticks).
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// Resident memory of `pid` without its mappings of BPF maps (the ring buffers the agent
/// reads): those pages are the maps' own kernel memory, counted by [`bpf_map_bytes`], and a
/// ring buffer is even mapped twice. Counting them here too would count them two or three
/// times.
pub(crate) fn rss_bytes(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches(" kB")
        .parse()?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_map = false;
    let mut map_kb = 0.0;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_map = line.ends_with("anon_inode:bpf-map");
        } else if in_map && first == "Rss:" {
            map_kb += f.next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        }
    }
    Ok((kb - map_kb) * 1024.0)
}

/// Kernel memory charged to the BPF maps `pid` holds (`memlock:` in each map fd's fdinfo).
pub(crate) fn bpf_map_bytes(pid: u32) -> f64 {
    let mut total = 0.0;
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0.0;
    };
    for fd in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        if info.contains("map_type:")
            && let Some(m) = info.lines().find_map(|l| l.strip_prefix("memlock:"))
        {
            total += m.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    total
}

struct Result1 {
    name: &'static str,
    cpu_ms_per_scrape: f64,
    median_ms: f64,
    p99_ms: f64,
    rss_mb: f64,
    bpf_maps_mb: f64,
    body_bytes: usize,
}

fn measure(p: &Proc) -> Result<Result1> {
    let pid = p.child.id();
    let mut c = Client::connect(p.port)?;
    for _ in 0..WARMUP {
        c.get("/metrics")?;
    }
    let cpu0 = cpu_seconds(pid)?;
    let mut lat = Vec::with_capacity(SCRAPES);
    let mut body = 0;
    for _ in 0..SCRAPES {
        let t = Instant::now();
        body = c.get("/metrics")?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cpu = cpu_seconds(pid)? - cpu0;
    lat.sort_by(f64::total_cmp);
    Ok(Result1 {
        name: p.name,
        cpu_ms_per_scrape: cpu * 1e3 / SCRAPES as f64,
        median_ms: lat[lat.len() / 2],
        p99_ms: lat[lat.len() * 99 / 100],
        rss_mb: rss_bytes(pid)? / 1e6,
        bpf_maps_mb: bpf_map_bytes(pid) / 1e6,
        body_bytes: body,
    })
}

/// Scrapes per second that [`SCRAPERS`] keep-alive clients get for [`THROUGHPUT_SECS`].
fn throughput(p: &Proc) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(THROUGHPUT_SECS);
    let port = p.port;
    let workers: Vec<_> = (0..SCRAPERS)
        .map(|_| {
            std::thread::spawn(move || -> Result<u64> {
                let mut c = Client::connect(port)?;
                let mut n = 0;
                while Instant::now() < deadline {
                    c.get("/metrics")?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w
            .join()
            .map_err(|_| anyhow::anyhow!("scraper thread panicked"))??;
    }
    Ok(total as f64 / THROUGHPUT_SECS as f64)
}

fn spawn_hostlens(bin: &Path, name: &'static str, extra: &[&str]) -> Result<Proc> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    Ok(Proc {
        name,
        child: Command::new(bin)
            .args(["--web.listen-address", &addr])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting hostlens")?,
        port,
    })
}

const SCRAPE_MARKER: &str = "## Scrape cost and memory: hostlens vs node_exporter";

pub fn run(root: &Path, env: &BuildEnv, write: bool) -> Result<()> {
    crate::sh(root, env, "cargo", &["build", "--release", "-p", "agent"])?;
    let bin = root.join("target/release/hostlens");
    let date = utc_now();
    let md = scrape_section(&bin, &date)?;
    let sys_md = crate::bench_syscalls::run(&bin, &date)?;
    print!("{sys_md}");
    let tcp_md = crate::bench_tcp::run(&bin, &date)?;
    print!("{tcp_md}");
    if write {
        update_doc(
            root,
            &[
                (SCRAPE_MARKER, &md),
                ("## Syscall probe cost per syscall", &sys_md),
                ("## TCP probe: connection rate and cost", &tcp_md),
            ],
        )?;
    }
    crate::bench_http::run(root, &bin, write)
}

/// `cargo xtask bench --only-scrape`: the scrape section alone, written into BENCHMARKS.md.
pub fn run_scrape_alone(root: &Path, env: &BuildEnv, write: bool) -> Result<()> {
    crate::sh(root, env, "cargo", &["build", "--release", "-p", "agent"])?;
    let md = scrape_section(&root.join("target/release/hostlens"), &utc_now())?;
    if write {
        update_doc(root, &[(SCRAPE_MARKER, &md)])?;
    }
    Ok(())
}

/// Replaces (or appends) the given sections of BENCHMARKS.md: `(marker, section)`.
fn update_doc(root: &Path, sections: &[(&str, &str)]) -> Result<()> {
    let path = root.join("BENCHMARKS.md");
    let mut doc = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nMeasured with `cargo xtask bench`; each section is one run, newest \
         first. Figures are ratios against the real peer measured in the same run.\n\n"
            .to_string()
    });
    for (marker, md) in sections {
        replace_section(&mut doc, marker, md);
    }
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("==> BENCHMARKS.md updated");
    Ok(())
}

/// The scrape section: hostlens (without and with its probes) against node_exporter; every
/// process it starts is stopped when it returns.
fn scrape_section(bin: &Path, date: &str) -> Result<String> {
    // Both with their default collectors (hostlens' defaults are node_exporter 1.5.0's
    // upstream ones); hostlens once without probes (the same work as node_exporter) and once
    // with its default eBPF probes.
    let hostlens = spawn_hostlens(
        bin,
        "hostlens, collectors only",
        &["--probe.disable-defaults"],
    )?;
    let hostlens_probes = spawn_hostlens(bin, "hostlens + default eBPF probes", &[])?;
    let ne_port = free_port()?;
    let ne_addr = format!("127.0.0.1:{ne_port}");
    let mut ne_args = vec!["--web.listen-address", &ne_addr];
    ne_args.extend_from_slice(NE_UPSTREAM_DEFAULTS);
    let node_exporter = Proc {
        name: "node_exporter 1.5.0",
        child: Command::new("prometheus-node-exporter")
            .args(&ne_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus-node-exporter (cargo xtask setup installs it)")?,
        port: ne_port,
    };
    wait_ready(hostlens_probes.port, "/readyz")?;
    wait_ready(hostlens.port, "/readyz")?;
    wait_ready(node_exporter.port, "/metrics")?;
    // Let both settle (Go's runtime grows its heap over the first scrapes).
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_bytes(hostlens.child.id())? / 1e6;
    let idle_rss_probes = rss_bytes(hostlens_probes.child.id())? / 1e6;
    let idle_rss_ne = rss_bytes(node_exporter.child.id())? / 1e6;
    let ne = measure(&node_exporter)?;
    let hl = measure(&hostlens)?;
    let hlp = measure(&hostlens_probes)?;
    let tput_ne = throughput(&node_exporter)?;
    let tput_hl = throughput(&hostlens)?;

    let mut md = String::new();
    writeln!(
        md,
        "## Scrape cost and memory: hostlens vs node_exporter ({date})\n"
    )?;
    writeln!(
        md,
        "`cargo xtask bench` (`--only-scrape` for this section alone) on this project's \
         2-core machine. Both agents run their default \
         collectors: node_exporter 1.5.0 with Debian's changed defaults set back to upstream's \
         (`{}`), hostlens with its defaults (node_exporter's upstream set), once without eBPF \
         probes (`--probe.disable-defaults`: the same work) and once with its default probes \
         (`syscalls`, `tcp`, `http`). {WARMUP} warm-up scrapes, then {SCRAPES} sequential \
         keep-alive scrapes with `Accept-Encoding: gzip`; then {SCRAPERS} concurrent keep-alive \
         scrapers for {THROUGHPUT_SECS} s. CPU is the process's utime+stime over the \
         {SCRAPES} scrapes (10 ms tick resolution); memory is VmRSS after warm-up (without \
         the agent's mappings of its BPF ring buffers, which are map memory), plus the kernel \
         memory of the agent's BPF maps (fdinfo `memlock`).\n",
        NE_UPSTREAM_DEFAULTS.join(" ")
    )?;
    writeln!(
        md,
        "| agent | CPU ms/scrape | median ms | p99 ms | scrapes/s ({SCRAPERS} scrapers) | idle RSS MB | RSS after scrapes MB | BPF maps MB | body bytes (gzip) |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    for (r, idle, tput) in [
        (&hl, idle_rss, Some(tput_hl)),
        (&hlp, idle_rss_probes, None),
        (&ne, idle_rss_ne, Some(tput_ne)),
    ] {
        let tput = tput.map_or("–".to_string(), |t| format!("{t:.0}"));
        writeln!(
            md,
            "| {} | {:.3} | {:.3} | {:.3} | {tput} | {:.1} | {:.1} | {:.2} | {} |",
            r.name,
            r.cpu_ms_per_scrape,
            r.median_ms,
            r.p99_ms,
            idle,
            r.rss_mb,
            r.bpf_maps_mb,
            r.body_bytes
        )?;
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    writeln!(
        md,
        "\nRatios hostlens (collectors only) / node_exporter: CPU per scrape **{:.2}×** \
         (budget ≤ 0.5×), median latency {:.2}×, p99 latency {:.2}×, throughput {:.2}×, \
         resident memory **{:.2}×** (budget ≤ 1×). With its default eBPF probes: CPU per scrape \
         {:.2}×, resident memory incl. BPF maps {:.2}×.\n",
        ratio(hl.cpu_ms_per_scrape, ne.cpu_ms_per_scrape),
        ratio(hl.median_ms, ne.median_ms),
        ratio(hl.p99_ms, ne.p99_ms),
        ratio(tput_hl, tput_ne),
        ratio(hl.rss_mb + hl.bpf_maps_mb, ne.rss_mb),
        ratio(hlp.cpu_ms_per_scrape, ne.cpu_ms_per_scrape),
        ratio(hlp.rss_mb + hlp.bpf_maps_mb, ne.rss_mb),
    )?;
    print!("{md}");
    // The syscall section needs the machine without any probe attached for its "off" rounds:
    // the agents stop here (dropped).
    Ok(md)
}

/// One program's share of [`bpf_run_time`]: name, ns it ran, runs.
pub(crate) type ProgRunTime = (String, f64, f64);

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `(run_time_ns, run_cnt)` of each loaded program whose name is in `names` (`bpftool prog
/// show` prints both while `kernel.bpf_stats_enabled` is 1).
fn bpf_prog_stats(names: &[&str]) -> Result<Vec<ProgRunTime>> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .context("running bpftool (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let field = |k: &str| {
            w.iter()
                .position(|x| *x == k)
                .and_then(|i| w.get(i + 1))
                .map(|v| v.to_string())
        };
        let (Some(name), Some(t), Some(c)) =
            (field("name"), field("run_time_ns"), field("run_cnt"))
        else {
            continue;
        };
        // bpftool prints the full name when the program has BTF, else the kernel's 15 bytes.
        let wanted = names
            .iter()
            .find(|n| **n == name || (name.len() == 15 && n.starts_with(name.as_str())));
        if let Some(n) = wanted {
            found.push((
                n.to_string(),
                t.parse().unwrap_or(0.0),
                c.parse().unwrap_or(0.0),
            ));
        }
    }
    Ok(found)
}

/// Runs `f` with the kernel's BPF run-time statistics switched on and returns, for each
/// loaded program named in `names`, the ns it ran and its runs during `f`
/// (`(name, ns, runs)`, summed over programs of the same name).
pub(crate) fn bpf_run_time<T>(
    names: &[&str],
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, Vec<ProgRunTime>)> {
    let before_flag = std::fs::read_to_string(BPF_STATS_SYSCTL).unwrap_or_default();
    std::fs::write(BPF_STATS_SYSCTL, "1").with_context(|| format!("writing {BPF_STATS_SYSCTL}"))?;
    let before = bpf_prog_stats(names);
    let out = f();
    let after = bpf_prog_stats(names);
    let restore = match before_flag.trim() {
        "" => "0",
        v => v,
    };
    let _ = std::fs::write(BPF_STATS_SYSCTL, restore);
    let (out, before, after) = (out?, before?, after?);
    anyhow::ensure!(!after.is_empty(), "programs {names:?} not found by bpftool");
    let mut per_name: Vec<ProgRunTime> = Vec::new();
    for (name, t1, c1) in &after {
        let (t0, c0) = before
            .iter()
            .find(|(n, ..)| n == name)
            .map_or((0.0, 0.0), |(_, t, c)| (*t, *c));
        match per_name.iter_mut().find(|(n, ..)| n == name) {
            Some(e) => {
                e.1 += t1 - t0;
                e.2 += c1 - c0;
            }
            None => per_name.push((name.clone(), t1 - t0, c1 - c0)),
        }
    }
    Ok((out, per_name))
}

/// The kernel and the mitigations that make every kernel call and return dearer on this
/// machine, as the kernel reports them: what absolute per-event figures depend on.
pub(crate) fn machine_note() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    let vuln = |name: &str| {
        format!(
            "`{name}`: {}",
            read(&format!("/sys/devices/system/cpu/vulnerabilities/{name}"))
        )
    };
    format!(
        "Machine: {} CPUs, Linux {}; {}; {}; {}.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        read("/proc/sys/kernel/osrelease"),
        vuln("spectre_v2"),
        vuln("retbleed"),
        vuln("spec_rstack_overflow"),
    )
}

/// The run's time for section headings, e.g. `2026-11-29 09:50 UTC`.
pub(crate) fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Keeps one section per benchmark: replaces the previous run's, or appends.
pub(crate) fn replace_section(doc: &mut String, marker: &str, md: &str) {
    if let Some(start) = doc.find(marker) {
        let end = doc[start + marker.len()..]
            .find("\n## ")
            .map_or(doc.len(), |e| start + marker.len() + e + 1);
        doc.replace_range(start..end, md);
    } else {
        if !doc.is_empty() && !doc.ends_with("\n\n") {
            doc.push('\n');
        }
        doc.push_str(md);
    }
}

/// Replaces (or appends) the section starting with `marker` in BENCHMARKS.md.
pub(crate) fn write_section(root: &Path, marker: &str, md: &str) -> Result<()> {
    let path = root.join("BENCHMARKS.md");
    let mut doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    replace_section(&mut doc, marker, md);
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "==> BENCHMARKS.md updated ({})",
        marker.trim_start_matches("## ")
    );
    Ok(())
}
