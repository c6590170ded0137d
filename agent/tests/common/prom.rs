//! A real Prometheus (Debian's 2.42) started by a test on a free loopback port, with the
//! test's configuration; killed and its data removed on drop.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML text) written next to its data directory.
    pub fn start(name: &str, config: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("hostlens-prom-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` on Prometheus's API, parsed as JSON.
    pub fn api(&self, path: &str) -> Option<serde_json::Value> {
        let r = super::http_get(self.port, path, &[]).ok()?;
        serde_json::from_slice(&r.body).ok()
    }

    /// Waits (at most 30 s) until every active target of `job` has been scraped, and returns
    /// the targets' JSON objects.
    pub fn scraped_targets(&self, job: &str) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = self.api("/api/v1/targets?state=active") {
                let targets: Vec<serde_json::Value> = v["data"]["activeTargets"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| t["labels"]["job"] == job)
                    .collect();
                if !targets.is_empty() && targets.iter().all(|t| t["health"] != "unknown") {
                    return targets;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not scrape job {job} in 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
