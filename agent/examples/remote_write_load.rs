//! Remote-write load benchmark, run by `cargo xtask bench`: a registry of N synthetic series
//! pushed through hostlens' real remote-write path (gather, flatten, disk queue, encode,
//! snappy, HTTP) to `--url` every `--interval-ms`, for `--intervals` intervals. Prints
//! `cpu_ms_per_interval=<f> rss_first_mb=<f> rss_last_mb=<f> queue_mb=<f> sent=<n>`.
//! `--dump-text FILE` writes the same series as text 0.0.4 (what vmagent scrapes) and exits.
//! `--baseline registry` measures the registry alone (no remote write), `--baseline gather`
//! the registry gathered every interval and the result dropped (what any consumer of the
//! registry pays), so that the remote-write path's own cost is the difference.
use std::{sync::Arc, time::Duration};

use hostlens::{
    exposition,
    remote_write::{
        RemoteWrite,
        config::{RemoteWriteConfig, RemoteWriteOptions},
    },
    selfmetrics::parse_stat,
};
use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn registry(n: usize) -> Registry {
    let mut r = Registry::default();
    let fam: Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>> =
        Family::default();
    for i in 0..n {
        fam.get_or_create(&vec![
            ("device".to_string(), format!("dev{}", i % 1000)),
            ("series".to_string(), i.to_string()),
        ])
        .set(i as f64 * 0.5);
    }
    r.register(
        "load_test_value",
        "Synthetic series for the remote-write benchmark.",
        fam,
    );
    r
}

fn self_stat() -> (f64, f64) {
    let st = parse_stat(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (
        (st.utime_ticks + st.stime_ticks) as f64 / tck,
        st.rss_pages as f64 * 4096.0 / 1e6,
    )
}

fn main() {
    let n: usize = arg("--series").map_or(100_000, |s| s.parse().unwrap());
    if let Some(path) = arg("--dump-text") {
        let text = exposition::encode(&registry(n), exposition::Format::Text004).unwrap();
        std::fs::write(path, text).unwrap();
        return;
    }
    let interval = Duration::from_millis(arg("--interval-ms").map_or(5000, |s| s.parse().unwrap()));
    let intervals: u32 = arg("--intervals").map_or(4, |s| s.parse().unwrap());
    if let Some(mode) = arg("--baseline") {
        baseline(n, &mode, interval, intervals);
        return;
    }
    let url = arg("--url").expect("--url");
    let queue = arg("--queue").expect("--queue");
    let cfg: RemoteWriteConfig =
        serde_yaml::from_str(&format!("url: {url}\nname: bench\n")).unwrap();
    let opts = RemoteWriteOptions {
        interval: hostlens::remote_write::config::PromDuration(interval),
        queue_dir: queue.into(),
        ..RemoteWriteOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let reg = Arc::new(registry(n));
    rt.block_on(async move {
        let rw = RemoteWrite::open(&[cfg], &opts).unwrap().unwrap();
        let metrics = rw.metrics();
        let r2 = Arc::clone(&reg);
        let running = rw
            .start(Arc::new(move || exposition::gather(&r2).map_err(|e| e.to_string())))
            .unwrap();
        // The first interval warms up (first gather, connection); measure the following ones.
        tokio::time::sleep(interval + interval / 2).await;
        let (cpu0, rss_first) = self_stat();
        tokio::time::sleep(interval * intervals).await;
        let (cpu1, rss_last) = self_stat();
        let mut reg2 = Registry::default();
        reg2.register_collector(Box::new(metrics));
        let text = String::from_utf8(exposition::encode(&reg2, exposition::Format::Text004).unwrap()).unwrap();
        let get = |k: &str| {
            text.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        println!(
            "cpu_ms_per_interval={:.1} rss_first_mb={rss_first:.1} rss_last_mb={rss_last:.1} queue_mb={:.1} sent={}",
            (cpu1 - cpu0) * 1000.0 / intervals as f64,
            get("hostlens_remote_write_queue_bytes{") / 1e6,
            get("hostlens_remote_write_samples_total{endpoint=\"bench\",outcome=\"sent\"}"),
        );
        running.shutdown().await;
    });
}

/// The registry without remote write: idle, or gathered every interval.
fn baseline(n: usize, mode: &str, interval: Duration, intervals: u32) {
    let gather = match mode {
        "registry" => false,
        "gather" => true,
        m => panic!("--baseline {m}: registry or gather"),
    };
    let reg = registry(n);
    let work = || {
        if gather {
            drop(exposition::gather(&reg).unwrap());
            // As the remote-write loop does after each gather.
            // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    };
    // The same schedule as the push mode: work at 0, 1, 2, … intervals; measured from 1.5
    // intervals on, over `intervals` intervals.
    work();
    std::thread::sleep(interval);
    work();
    std::thread::sleep(interval / 2);
    let (cpu0, rss_first) = self_stat();
    for _ in 0..intervals {
        std::thread::sleep(interval / 2);
        work();
        std::thread::sleep(interval / 2);
    }
    let (cpu1, rss_last) = self_stat();
    println!(
        "cpu_ms_per_interval={:.1} rss_first_mb={rss_first:.1} rss_last_mb={rss_last:.1} queue_mb=0 sent=0",
        (cpu1 - cpu0) * 1000.0 / intervals as f64,
    );
}
