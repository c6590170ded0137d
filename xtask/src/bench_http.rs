//! `cargo xtask bench`, HTTP section: wrk against nginx on loopback with the `http` probe off
//! and on, alternating in the same run (the machine is shared, so rounds interleave).
//! Reports throughput and p99 ratios, hostlens CPU per 1,000 requests, events lost, and the
//! CPU hostlens spends at a fixed 10k req/s from a paced client (wrk2 is not packaged); then
//! what the probe adds to one request/response exchange in the process making the calls
//! (a single-thread loop, far less noisy than a throughput ratio).
use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::bench::{cpu_seconds, free_port, median, thread_cpu_ns};
use anyhow::{Context as _, Result, bail};

/// Many short rounds: on this shared machine the speed of both cores drifts (nginx alone swings
/// between 21k and 46k req/s from one run to the next), so a single off/on ratio lies anywhere
/// in about 0.5–1.3×; only the median of many closely interleaved pairs is worth quoting, with
/// its bootstrap interval.
const ROUNDS: usize = 40;
/// Every this many rounds, one also runs the syscall-exit hook (a context figure; the headline
/// rounds stay short).
const CONTEXT_EVERY: usize = 5;
/// Exchange loop: off/on pairs, and request/response exchanges per loop.
const LOOP_ROUNDS: usize = 16;
const LOOP_EXCHANGES: usize = 50_000;
const WRK_SECONDS: u32 = 2;
/// The throughput budget, on/off.
const BUDGET: f64 = 0.90;
const FIXED_RATE: u32 = 10_000;
const FIXED_SECONDS: u64 = 20;
const MARKER: &str = "## HTTP probe: nginx under wrk, probe off vs on";

struct Proc(Child);

impl Drop for Proc {
    /// SIGTERM first, so that nginx's master stops its workers (after a SIGKILL they would
    /// live on, orphaned); SIGKILL after 5 s.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {port} after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sum of a family's samples whose line contains `filter`.
fn metric_sum(body: &str, name: &str, filter: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

struct Nginx {
    port: u16,
    /// The worker process (serves every request; its CPU includes the probe's kernel work).
    worker: u32,
    dir: PathBuf,
    _proc: Proc,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_nginx() -> Result<Nginx> {
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("hostlens-bench-nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www"))?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::write(dir.join("www/index.html"), "<h1>hello from nginx</h1>\n")?;
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\nhttp {{\n access_log off;\n sendfile on;\n\
             keepalive_requests 10000000;\n client_body_temp_path {d}/tmp;\n\
             proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp;\n\
             scgi_temp_path {d}/tmp;\n server {{ listen 127.0.0.1:{port}; root {d}/www; }}\n}}\n"
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx (cargo xtask setup installs nginx-light)")?;
    let proc_ = Proc(child);
    wait_port(port)?;
    let master = proc_.0.id();
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .context("reading nginx's worker pid")?;
    let worker = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .context("nginx has no worker process")?;
    Ok(Nginx {
        port,
        worker,
        dir,
        _proc: proc_,
    })
}

/// hostlens with only the http probe on `hook` (`http.hook`), or with no probe at all (None).
fn start_hostlens(bin: &Path, hook: Option<&str>) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let cfg = std::env::temp_dir().join(format!(
        "hostlens-bench-http-{}-{}.yaml",
        std::process::id(),
        hook.unwrap_or("off")
    ));
    let yaml = match hook {
        Some(h) => format!("probes:\n  disable_defaults: true\n  http: true\nhttp:\n  hook: {h}\n"),
        None => "probes:\n  disable_defaults: true\n".to_string(),
    };
    std::fs::write(&cfg, yaml).with_context(|| format!("writing {}", cfg.display()))?;
    let cfg_arg = cfg.to_string_lossy().into_owned();
    let args = ["--web.listen-address", &addr, "--config.file", &cfg_arg];
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting hostlens")?;
    let p = Proc(child);
    let ready = super::bench::wait_ready(port, "/readyz");
    // Read at start (the bench never sends SIGHUP), so it can go now.
    let _ = std::fs::remove_file(&cfg);
    ready?;
    Ok((p, port))
}

struct Wrk {
    rps: f64,
    requests: f64,
    p99_ms: f64,
    /// nginx worker CPU seconds during the run.
    nginx_cpu_s: f64,
    /// wrk's own CPU seconds (its rusage as a reaped child).
    wrk_cpu_s: f64,
}

/// CPU seconds (user + system) of this process's reaped children so far.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn parse_duration_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1e3,
        "ms" => v,
        "s" => v * 1e3,
        "m" => v * 60e3,
        _ => return None,
    })
}

fn wrk(nginx: &Nginx) -> Result<Wrk> {
    let port = nginx.port;
    let cpu0 = cpu_seconds(nginx.worker)?;
    let wrk0 = children_cpu_seconds();
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c32",
            &format!("-d{WRK_SECONDS}s"),
            "--latency",
            &format!("http://127.0.0.1:{port}/index.html"),
        ])
        .output()
        .context("running wrk (cargo xtask setup installs it)")?;
    let nginx_cpu_s = cpu_seconds(nginx.worker)? - cpu0;
    let wrk_cpu_s = children_cpu_seconds() - wrk0;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .context("no request count in wrk output")?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| parse_duration_ms(v.trim()))
        .context("no 99% latency in wrk output")?;
    Ok(Wrk {
        rps,
        requests,
        p99_ms,
        nginx_cpu_s,
        wrk_cpu_s,
    })
}

/// Keep-alive GETs paced to `rate` per second over 4 connections for `secs`. Returns the
/// requests completed.
fn paced(port: u16, rate: u32, secs: u64) -> Result<u64> {
    let conns = 4u32;
    let per = f64::from(rate / conns);
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || -> Result<u64> {
                let s = TcpStream::connect(("127.0.0.1", port))?;
                s.set_nodelay(true)?;
                let mut r = BufReader::new(s);
                let start = Instant::now();
                let mut n = 0u64;
                let mut line = String::new();
                while start.elapsed() < Duration::from_secs(secs) {
                    let due = start + Duration::from_secs_f64(n as f64 / per);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    r.get_mut()
                        .write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")?;
                    let mut len = 0usize;
                    loop {
                        line.clear();
                        r.read_line(&mut line)?;
                        let l = line.trim_end().to_ascii_lowercase();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l.strip_prefix("content-length:") {
                            len = v.trim().parse()?;
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body)?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        total += t
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    Ok(total)
}

/// The hooks of the `http` probe (agent-ebpf/src/http.rs), for the bpftrace reference.
const HOOKED: [&str; 13] = [
    "read",
    "readv",
    "recvfrom",
    "recvmsg",
    "write",
    "writev",
    "sendto",
    "sendmsg",
    "sendfile64",
    "accept",
    "accept4",
    "connect",
    "close",
];

/// The reference point: bpftrace counting the calls of the syscall exit tracepoints
/// the probe's tracepoint hook attaches to, per probe, in a hash map.
fn start_bpftrace_reference() -> Result<Proc> {
    let probes = HOOKED
        .iter()
        .map(|s| format!("tracepoint:syscalls:sys_exit_{s}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut child = Command::new("bpftrace")
        .args(["-e", &format!("{probes} {{ @[probe] = count(); }}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bpftrace (cargo xtask setup installs it)")?;
    let out = child.stdout.take().context("bpftrace stdout")?;
    let p = Proc(child);
    // bpftrace prints "Attaching N probes..." once they are attached.
    let mut line = String::new();
    let mut r = BufReader::new(out);
    while r.read_line(&mut line)? > 0 {
        if line.starts_with("Attaching") {
            // Keep reading its output in the background so it never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
            std::thread::sleep(Duration::from_millis(500));
            return Ok(p);
        }
        line.clear();
    }
    bail!("bpftrace exited before attaching its probes")
}

struct On {
    wrk: Wrk,
    cpu_s: f64,
    lost: f64,
    counted: f64,
}

/// The kernel programs of the probe, and of the bpftrace reference (named after the event).
const HOSTLENS_PROGS: [&str; 6] = [
    "http_sock_send",
    "http_sock_recv",
    "http_sock_state",
    "http_sys_exit_btf",
    "http_sys_exit_tp",
    "http_sys_exit",
];

fn reference_progs() -> Vec<String> {
    HOOKED.iter().map(|s| format!("sys_exit_{s}")).collect()
}

/// wrk against nginx with hostlens's http probe on `hook`: throughput, hostlens's CPU, the
/// events it lost and the requests it counted on nginx's port.
fn measure_on(bin: &Path, nginx: &Nginx, hook: &str) -> Result<On> {
    let (hl, port) = start_hostlens(bin, Some(hook))?;
    let pid = hl.0.id();
    let before = get(port, "/metrics")?;
    let cpu0 = cpu_seconds(pid)?;
    let w = wrk(nginx)?;
    let cpu_s = cpu_seconds(pid)? - cpu0;
    std::thread::sleep(Duration::from_millis(500));
    let after = get(port, "/metrics")?;
    let lost_series = "hostlens_probe_events_lost_total{probe=\"http\"}";
    let filter = format!("server_port=\"{}\"", nginx.port);
    let count = "http_server_request_duration_seconds_count";
    Ok(On {
        wrk: w,
        cpu_s,
        lost: metric(&after, lost_series) - metric(&before, lost_series),
        counted: metric_sum(&after, count, &filter) - metric_sum(&before, count, &filter),
    })
}

/// Kernel program time per request (µs) of the programs `names` under one wrk run, from the
/// kernel's run-time statistics (a separate run: the statistics cost time themselves).
fn program_us_per_request(nginx: &Nginx, names: &[&str]) -> Result<f64> {
    let (w, per_prog) = super::bench::bpf_run_time(names, || wrk(nginx))?;
    let ns: f64 = per_prog.iter().map(|(_, ns, _)| ns).sum();
    Ok(ns / 1e3 / w.requests)
}

/// One round: no probe, the bpftrace reference and the probe on its default hooks (`auto`,
/// which is `sock` here); in a context round also the syscall-exit hook (`tp_btf/sys_exit`,
/// the fallback).
struct Round {
    off: Wrk,
    reference: Wrk,
    on: On,
    /// The syscall-exit hook, every [`CONTEXT_EVERY`]th round.
    on_exit: Option<On>,
}

/// What one wrk run of a round measures against.
#[derive(Clone, Copy)]
enum Setup {
    Off,
    Reference,
    On,
    OnExit,
}

/// 90 % bootstrap interval of the median of `v`: 2,000 resamples with a fixed-seed xorshift
/// generator (the same data always gives the same interval).
fn median_interval(v: &[f64]) -> (f64, f64) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut medians: Vec<f64> = (0..2000)
        .map(|_| median((0..v.len()).map(|_| v[next() as usize % v.len()]).collect()))
        .collect();
    medians.sort_by(f64::total_cmp);
    (medians[100], medians[1899])
}

/// The median of `v` with its [`median_interval`]: (median, low, high).
fn median_and_interval(v: &[f64]) -> (f64, f64, f64) {
    let (lo, hi) = median_interval(v);
    (median(v.to_vec()), lo, hi)
}

/// The budget's verdict from the 90 % interval of the on/off median: only an interval wholly
/// on one side of the budget settles it.
fn verdict(lo: f64, hi: f64) -> &'static str {
    if lo >= BUDGET {
        "met: the whole interval is above it"
    } else if hi < BUDGET {
        "not met: the whole interval is below it"
    } else {
        "not settled by this run: the interval spans it"
    }
}

/// Ratios sorted: (min, first quartile, third quartile, max), and all of them listed with two
/// decimals.
fn spread(mut v: Vec<f64>) -> ((f64, f64, f64, f64), String) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let listed = v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>();
    ((at(0.0), at(0.25), at(0.75), at(1.0)), listed.join(" "))
}

pub fn run(root: &Path, bin: &Path, write: bool) -> Result<()> {
    let nginx = start_nginx()?;
    let mut rounds = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let context = i % CONTEXT_EVERY == CONTEXT_EVERY - 1;
        // Every other round runs the setups in reverse order, so a drift of the machine's speed
        // within a round does not always favour the same setup.
        let mut steps = vec![Setup::Off, Setup::Reference, Setup::On];
        if context {
            steps.push(Setup::OnExit);
        }
        if i % 2 == 1 {
            steps.reverse();
        }
        let (mut off, mut reference, mut on, mut on_exit) = (None, None, None, None);
        for step in steps {
            match step {
                Setup::Off => {
                    let (_hl, _) = start_hostlens(bin, None)?;
                    off = Some(wrk(&nginx)?);
                }
                Setup::Reference => {
                    let _bt = start_bpftrace_reference()?;
                    reference = Some(wrk(&nginx)?);
                }
                Setup::On => on = Some(measure_on(bin, &nginx, "auto")?),
                Setup::OnExit => on_exit = Some(measure_on(bin, &nginx, "tp_btf")?),
            }
        }
        let (Some(off), Some(reference), Some(on)) = (off, reference, on) else {
            bail!("http round {}: a setup did not run", i + 1);
        };
        eprintln!(
            "http round {}/{ROUNDS}: req/s off {:.0}, ref {:.0}, on {:.0}{}",
            i + 1,
            off.rps,
            reference.rps,
            on.wrk.rps,
            on_exit.as_ref().map_or(String::new(), |o| format!(
                ", on(sys_exit) {:.0}",
                o.wrk.rps
            ))
        );
        rounds.push(Round {
            off,
            reference,
            on,
            on_exit,
        });
    }
    // Fixed rate: hostlens CPU at 10k req/s.
    let (hl, port) = start_hostlens(bin, Some("auto"))?;
    let pid = hl.0.id();
    let before = get(port, "/metrics")?;
    let cpu0 = cpu_seconds(pid)?;
    let done = paced(nginx.port, FIXED_RATE, FIXED_SECONDS)?;
    let fixed_cpu = cpu_seconds(pid)? - cpu0;
    std::thread::sleep(Duration::from_millis(500));
    let after = get(port, "/metrics")?;
    let lost_series = "hostlens_probe_events_lost_total{probe=\"http\"}";
    let fixed_lost = metric(&after, lost_series) - metric(&before, lost_series);
    drop(hl);
    // Kernel program time per request, per setup.
    let prog_ref = {
        let _bt = start_bpftrace_reference()?;
        let names = reference_progs();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        program_us_per_request(&nginx, &names)?
    };
    let prog_on = {
        let _hl = start_hostlens(bin, Some("auto"))?;
        program_us_per_request(&nginx, &HOSTLENS_PROGS)?
    };
    let prog_exit = {
        let _hl = start_hostlens(bin, Some("tp_btf"))?;
        program_us_per_request(&nginx, &HOSTLENS_PROGS)?
    };

    // Exchange loop: what the probe adds per request/response in the calling process.
    let exchange = exchange_rounds(bin)?;

    // The machine is shared: each round's setups ran back to back, so the median of the
    // per-round ratios is steadier than the ratio of means.
    let ratios = |f: &dyn Fn(&Round) -> f64| -> Vec<f64> { rounds.iter().map(f).collect() };
    let on_off = ratios(&|r| r.on.wrk.rps / r.off.rps);
    let ref_off = ratios(&|r| r.reference.rps / r.off.rps);
    let on_ref = ratios(&|r| r.on.wrk.rps / r.reference.rps);
    let (rps_ratio, ci_lo, ci_hi) = median_and_interval(&on_off);
    let verdict = verdict(ci_lo, ci_hi);
    let (ref_ratio, ref_lo, ref_hi) = median_and_interval(&ref_off);
    let (on_ref_ratio, on_ref_lo, on_ref_hi) = median_and_interval(&on_ref);
    let (quartiles, listed) = spread(on_off);
    let ctx: Vec<(&Round, &On)> = rounds
        .iter()
        .filter_map(|r| r.on_exit.as_ref().map(|o| (r, o)))
        .collect();
    let exit_ratio = median(ctx.iter().map(|(r, o)| o.wrk.rps / r.off.rps).collect());
    let p99_ratio = median(ratios(&|r| r.on.wrk.p99_ms / r.off.p99_ms));
    let sum = |f: &dyn Fn(&Round) -> f64| rounds.iter().map(f).sum::<f64>();
    let off_rps = sum(&|r| r.off.rps);
    let on_rps = sum(&|r| r.on.wrk.rps);
    // CPU-bound estimate, insensitive to other load on the machine: nginx's CPU per request
    // (the probe's kernel work runs in nginx's syscalls and is charged to it).
    let per_req =
        |cpu: &dyn Fn(&Round) -> &Wrk| sum(&|r| cpu(r).nginx_cpu_s) / sum(&|r| cpu(r).requests);
    let nginx_off = per_req(&|r| &r.off);
    let nginx_on = per_req(&|r| &r.on.wrk);
    let nginx_ref = per_req(&|r| &r.reference);
    let nginx_exit = ctx.iter().map(|(_, o)| o.wrk.nginx_cpu_s).sum::<f64>()
        / ctx.iter().map(|(_, o)| o.wrk.requests).sum::<f64>();
    let on_requests = sum(&|r| r.on.wrk.requests);
    let on_cpu = sum(&|r| r.on.cpu_s);
    // Accounted estimate, the least sensitive to the machine's other load: the CPU nginx and
    // wrk spend per request without the probe, against that plus what the probe adds per
    // request (its kernel programs from bpf_stats, hostlens's own CPU).
    let serve_off =
        (sum(&|r| r.off.nginx_cpu_s) + sum(&|r| r.off.wrk_cpu_s)) / sum(&|r| r.off.requests) * 1e6;
    let hostlens_us = on_cpu * 1e6 / on_requests;
    let accounted = serve_off / (serve_off + prog_on + hostlens_us);
    let lost = sum(&|r| r.on.lost) + ctx.iter().map(|(_, o)| o.lost).sum::<f64>();
    let counted = sum(&|r| r.on.counted);
    let date = super::bench::utc_now();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut md = String::new();
    writeln!(md, "{MARKER} ({date})\n")?;
    writeln!(
        md,
        "`cargo xtask bench` (`--only-http` for this section alone): nginx (1 worker, static \
         26-byte file, keep-alive, `sendfile on`) on 127.0.0.1, `wrk -t1 -c32 \
         -d{WRK_SECONDS}s --latency`. {ROUNDS} rounds, each running hostlens with no probe \
         (off), the reference (ref: bpftrace counting, per probe, the calls of the thirteen \
         `syscalls:sys_exit_*` tracepoints of the read/write/accept/connect/close families — \
         what merely watching these syscalls costs on this machine, the issue's reference \
         point) and hostlens with only the `http` probe on its default hooks (on: \
         `http.hook: auto`, which loads the socket tracepoints `tp_btf/sock_send_length`, \
         `sock_recv_length`, `inet_sock_set_state` here), every other round in reverse order. \
         Every {CONTEXT_EVERY}th round also runs the syscall-exit fallback (on(exit): \
         `http.hook: tp_btf`, `tp_btf/sys_exit`). Default config otherwise: every process, so \
         both nginx's server side and wrk's client side are decoded. CPU is hostlens's \
         utime+stime during the on-runs (10 ms ticks). Load average at the end: {}. {}\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        super::bench::machine_note()
    )?;
    writeln!(md, "On/off per round, sorted: {listed}.\n")?;
    writeln!(
        md,
        "| context round | off req/s | ref req/s | on req/s | on(exit) req/s | off p99 ms | on p99 ms | nginx CPU µs/req off | ref | on | on(exit) | on: hostlens CPU s | on: events lost | on: requests counted / wrk completed |"
    )?;
    writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    let us = |w: &Wrk| w.nginx_cpu_s * 1e6 / w.requests;
    for (i, r) in rounds.iter().enumerate() {
        let Some(e) = &r.on_exit else { continue };
        writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} | {:.0} / {:.0} |",
            i + 1,
            r.off.rps,
            r.reference.rps,
            r.on.wrk.rps,
            e.wrk.rps,
            r.off.p99_ms,
            r.on.wrk.p99_ms,
            us(&r.off),
            us(&r.reference),
            us(&r.on.wrk),
            us(&e.wrk),
            r.on.cpu_s,
            r.on.lost,
            r.on.counted,
            r.on.wrk.requests
        )?;
    }
    writeln!(
        md,
        "\nThroughput on/off: median of the {ROUNDS} rounds' ratios **{rps_ratio:.2}×** (90 % \
         bootstrap interval of the median {ci_lo:.2}–{ci_hi:.2}×; budget ≥ {BUDGET:.2}×, \
         {verdict}; quartiles \
         {:.2} / {:.2}, range {:.2}–{:.2}), ratio of means {:.2}×. The reference alone: \
         ref/off **{ref_ratio:.2}×** ({ref_lo:.2}–{ref_hi:.2}×; the issue's reference machine: \
         0.96×); the probe against it: on/ref **{on_ref_ratio:.2}×** \
         ({on_ref_lo:.2}–{on_ref_hi:.2}×). Over the {} context rounds, on the syscall-exit \
         hook {exit_ratio:.2}×. p99 latency on/off: median {p99_ratio:.2}×. hostlens CPU \
         **{:.2} ms per 1,000 requests**, events lost {lost:.0} (budget 0); requests counted on \
         nginx's port {counted:.0} of {on_requests:.0} wrk completed (wrk stops with requests \
         in flight). Fixed rate: {done} requests in {FIXED_SECONDS} s ({:.0} req/s, 4 paced \
         keep-alive connections) cost hostlens {fixed_cpu:.2} s CPU = **{:.1} % of one core**, \
         {:.2} ms per 1,000 requests, events lost {fixed_lost:.0}. nginx worker CPU per request \
         off/ref/on: {:.1} / {:.1} / {:.1} µs (on(exit) {:.1} µs), i.e. a CPU-bound nginx would \
         keep **{:.2}×** its throughput. Kernel program time per request (separate wrk runs \
         with `kernel.bpf_stats_enabled`; both sides of each request, nginx's and wrk's): \
         reference {prog_ref:.2} µs (which also pays perf's per-event tracepoint path, not \
         counted here), on (socket hooks) **{prog_on:.2} µs**, on(exit) {prog_exit:.2} µs. \
         Accounted: nginx and wrk spend {serve_off:.1} µs CPU per request without the probe; the \
         probe adds {prog_on:.2} µs in its kernel programs and {hostlens_us:.2} µs in hostlens, so \
         a CPU-bound setup would keep **{accounted:.2}×** its throughput.\n",
        quartiles.1,
        quartiles.2,
        quartiles.0,
        quartiles.3,
        on_rps / off_rps,
        ctx.len(),
        on_cpu * 1e3 / (on_requests / 1e3),
        done as f64 / FIXED_SECONDS as f64,
        fixed_cpu * 100.0 / FIXED_SECONDS as f64,
        fixed_cpu * 1e3 / (done as f64 / 1e3),
        nginx_off * 1e6,
        nginx_ref * 1e6,
        nginx_on * 1e6,
        nginx_exit * 1e6,
        nginx_off / nginx_on,
    )?;
    exchange.write(&mut md)?;
    print!("{md}");
    if write {
        super::bench::write_section(root, MARKER, &md)?;
    }
    Ok(())
}

/// Heading of the paired section (`--pairs N`).
const PAIRS_MARKER: &str = "## HTTP probe: throughput budget, paired runs";

/// The throughput budget alone, with more statistical power per minute than [`run`]: `pairs`
/// pairs of wrk runs, hostlens with no probe (off) and with the `http` probe on its default
/// hooks (on), back to back in alternating order, and nothing else (no reference, no context
/// hook, no fixed rate): off and on of a pair are seconds apart, so a drift of the shared
/// machine's speed moves both, and a pair takes about a third of a full round. The verdict is
/// the one [`run`] gives, on the median of the per-pair ratios.
pub fn run_pairs(root: &Path, bin: &Path, pairs: usize, write: bool) -> Result<()> {
    if pairs < 10 {
        bail!("--pairs {pairs}: at least 10 pairs are needed for an interval");
    }
    let nginx = start_nginx()?;
    let started = Instant::now();
    let mut done: Vec<(Wrk, On)> = Vec::with_capacity(pairs);
    let run_off = || -> Result<Wrk> {
        let (_hl, _) = start_hostlens(bin, None)?;
        wrk(&nginx)
    };
    for i in 0..pairs {
        let (off, on) = if i % 2 == 0 {
            let off = run_off()?;
            (off, measure_on(bin, &nginx, "auto")?)
        } else {
            let on = measure_on(bin, &nginx, "auto")?;
            (run_off()?, on)
        };
        eprintln!(
            "http pair {}/{pairs}: req/s off {:.0}, on {:.0}, on/off {:.3}",
            i + 1,
            off.rps,
            on.wrk.rps,
            on.wrk.rps / off.rps
        );
        done.push((off, on));
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let ratios: Vec<f64> = done.iter().map(|(off, on)| on.wrk.rps / off.rps).collect();
    let (ratio, lo, hi) = median_and_interval(&ratios);
    let verdict = verdict(lo, hi);
    let sum = |f: &dyn Fn(&(Wrk, On)) -> f64| done.iter().map(f).sum::<f64>();
    let of_means = sum(&|(_, on)| on.wrk.rps) / sum(&|(off, _)| off.rps);
    let lost = sum(&|(_, on)| on.lost);
    let counted = sum(&|(_, on)| on.counted);
    let completed = sum(&|(_, on)| on.wrk.requests);
    let hostlens_ms = sum(&|(_, on)| on.cpu_s) * 1e3 / (completed / 1e3);
    let ((min, q1, q3, max), listed) = spread(ratios);
    let date = super::bench::utc_now();
    let mut md = String::new();
    writeln!(md, "{PAIRS_MARKER} ({date})\n")?;
    writeln!(
        md,
        "`cargo xtask bench --only-http --pairs {pairs}`: the setup of the section above \
         (nginx, `wrk -t1 -c32 -d{WRK_SECONDS}s`, hostlens with no probe as off, with the \
         `http` probe on `http.hook: auto` as on), but only off and on, back to back in each \
         pair, every other pair in reverse order: {pairs} pairs in {minutes:.0} minutes. {}\n",
        super::bench::machine_note()
    )?;
    writeln!(
        md,
        "Throughput on/off: median of the {pairs} pairs' ratios **{ratio:.3}×** (90 % \
         bootstrap interval of the median **{lo:.3}–{hi:.3}×**; budget ≥ {BUDGET:.2}×, \
         {verdict}; quartiles {q1:.2} / {q3:.2}, range {min:.2}–{max:.2}), ratio of means \
         {of_means:.3}×. hostlens CPU {hostlens_ms:.2} ms per 1,000 requests; events lost \
         {lost:.0} (budget 0); requests counted on nginx's port {counted:.0} of {completed:.0} \
         wrk completed.\n"
    )?;
    writeln!(md, "On/off per pair, sorted: {listed}.\n")?;
    print!("{md}");
    if write {
        super::bench::write_section(root, PAIRS_MARKER, &md)?;
    }
    Ok(())
}

/// A request head and a response, each sent in one write. The "other" pair has the same
/// lengths but starts with bytes that are no HTTP method or status line.
const LOOP_REQUEST: &[u8] =
    b"GET /exchange HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: xtask\r\n\r\n";
const LOOP_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: xtask\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
const OTHER_REQUEST: &[u8] =
    b"XET /exchange HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: xtask\r\n\r\n";
const OTHER_RESPONSE: &[u8] =
    b"XTTP/1.1 200 OK\r\nServer: xtask\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

/// Reads exactly `want.len()` bytes into `buf` and checks they are `want`.
fn read_expect(s: &mut TcpStream, buf: &mut [u8], want: &[u8]) -> Result<()> {
    let b = &mut buf[..want.len()];
    s.read_exact(b)?;
    if b != want {
        bail!("exchange loop: read other bytes than were sent");
    }
    Ok(())
}

/// `n` request/response exchanges on one loopback connection, both ends in this thread: the
/// client writes `req`, the server end reads it and writes `resp`, the client reads that (four
/// messages; loopback delivers inside the write, so no read waits and nothing switches
/// context). Returns this thread's CPU per exchange (ns) and the wall-clock seconds taken.
fn exchange_loop(n: usize, req: &[u8], resp: &[u8]) -> Result<(f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
    }
    let mut buf = vec![0u8; req.len().max(resp.len())];
    let t0 = thread_cpu_ns();
    let wall = Instant::now();
    for _ in 0..n {
        client.write_all(req)?;
        read_expect(&mut server, &mut buf, req)?;
        server.write_all(resp)?;
        read_expect(&mut client, &mut buf, resp)?;
    }
    Ok((
        (thread_cpu_ns() - t0) / n as f64,
        wall.elapsed().as_secs_f64(),
    ))
}

/// The exchange loop's results: per round, ns per exchange without and with the probe, for
/// HTTP and for other bytes; and what hostlens counted of the HTTP exchanges.
struct Exchange {
    http_off: Vec<f64>,
    http_on: Vec<f64>,
    other_off: Vec<f64>,
    other_on: Vec<f64>,
    counted: f64,
    sent: f64,
    /// Wall-clock seconds of the HTTP loops with the probe on (for the request rate).
    on_secs: f64,
    /// Events the probe reported lost during the on-rounds.
    lost: f64,
}

/// [`LOOP_ROUNDS`] rounds of the exchange loop without and with hostlens's http probe (every
/// other round in reverse order).
fn exchange_rounds(bin: &Path) -> Result<Exchange> {
    let mut x = Exchange {
        http_off: Vec::new(),
        http_on: Vec::new(),
        other_off: Vec::new(),
        other_on: Vec::new(),
        counted: 0.0,
        sent: 0.0,
        on_secs: 0.0,
        lost: 0.0,
    };
    let lost_series = "hostlens_probe_events_lost_total{probe=\"http\"}";
    let count = "http_server_request_duration_seconds_count";
    let route = "http_route=\"/exchange\"";
    for i in 0..LOOP_ROUNDS {
        let mut steps = [false, true];
        if i % 2 == 1 {
            steps.reverse();
        }
        for on in steps {
            let hl = if on {
                Some(start_hostlens(bin, Some("auto"))?)
            } else {
                None
            };
            let before = match &hl {
                Some((_, port)) => get(*port, "/metrics")?,
                None => String::new(),
            };
            let (http, http_secs) = exchange_loop(LOOP_EXCHANGES, LOOP_REQUEST, LOOP_RESPONSE)?;
            let (other, _) = exchange_loop(LOOP_EXCHANGES, OTHER_REQUEST, OTHER_RESPONSE)?;
            if let Some((_, port)) = &hl {
                std::thread::sleep(Duration::from_millis(200));
                let after = get(*port, "/metrics")?;
                x.counted += metric_sum(&after, count, route) - metric_sum(&before, count, route);
                x.lost += metric(&after, lost_series) - metric(&before, lost_series);
                x.sent += LOOP_EXCHANGES as f64;
                x.on_secs += http_secs;
            }
            let (h, o) = if on {
                (&mut x.http_on, &mut x.other_on)
            } else {
                (&mut x.http_off, &mut x.other_off)
            };
            h.push(http);
            o.push(other);
        }
        eprintln!(
            "http exchange loop {}/{LOOP_ROUNDS}: ns per exchange off/on: http {:.0}/{:.0}, \
             other {:.0}/{:.0}",
            i + 1,
            x.http_off[i],
            x.http_on[i],
            x.other_off[i],
            x.other_on[i]
        );
    }
    Ok(x)
}

impl Exchange {
    fn write(&self, md: &mut String) -> Result<()> {
        let diff = |on: &[f64], off: &[f64]| -> Vec<f64> {
            on.iter().zip(off).map(|(a, b)| (a - b) / 1e3).collect()
        };
        let (http, h_lo, h_hi) = median_and_interval(&diff(&self.http_on, &self.http_off));
        let (other, o_lo, o_hi) = median_and_interval(&diff(&self.other_on, &self.other_off));
        writeln!(
            md,
            "\nExchange loop (the probe's cost where it is paid, without nginx or wrk): one \
             thread, one loopback TCP connection, {LOOP_EXCHANGES} exchanges of a {}-byte request \
             head and a {}-byte response (four messages: the client's write and read, the server \
             end's read and write), thread CPU per exchange; {LOOP_ROUNDS} rounds without and \
             with hostlens's http probe. Without: median {:.2} µs per exchange. The probe adds \
             **{:.2} µs** per HTTP exchange (90 % interval {h_lo:.2}–{h_hi:.2}), and {:.2} µs \
             ({o_lo:.2}–{o_hi:.2}) when the same bytes are no HTTP (the socket is marked \
             not-HTTP at its first message; the rest is the hooks' dispatch and one \
             socket-storage lookup). hostlens counted {:.0} of the {:.0} HTTP exchanges, \
             sent at **{:.0} requests/s** (wall clock, with the probe on; each request traced \
             on both ends, so 4 records per request), events lost {:.0}.\n",
            LOOP_REQUEST.len(),
            LOOP_RESPONSE.len(),
            median(self.http_off.clone()) / 1e3,
            http,
            other,
            self.counted,
            self.sent,
            self.sent / self.on_secs.max(f64::MIN_POSITIVE),
            self.lost,
        )?;
        Ok(())
    }
}
