//! SIGHUP: re-read the configuration (file and flags) and apply what can change without
//! touching the eBPF programs: the web config (TLS, basic auth) and the node collectors (set
//! and paths). A new configuration that does not load is rejected as a whole with a log line,
//! and the old one stays in force. Settings bound at start (listen address, telemetry path,
//! scrape limit, log level, probe set and the probes' settings: `http`, `syscalls`, `tcp`,
//! `process_names`) are kept, with a warning when the file changes them.
use std::{
    fmt,
    sync::{Arc, RwLock},
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use crate::{
    app::build_collectors, collectors::NodeCollectors, config::Config, server::AppState, webconfig,
};

/// Re-reads the configuration exactly as at start (same flags, same file).
pub type ReloadFn = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// A collector whose inner value is replaced on reload; scrapes in flight keep the old one.
pub struct Swappable<T>(RwLock<Arc<T>>);

impl<T> Swappable<T> {
    pub fn new(v: T) -> Self {
        Self(RwLock::new(Arc::new(v)))
    }
    pub fn get(&self) -> Arc<T> {
        match self.0.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }
    pub fn set(&self, v: T) {
        match self.0.write() {
            Ok(mut g) => *g = Arc::new(v),
            Err(p) => *p.into_inner() = Arc::new(v),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Swappable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl<T: Collector> Collector for Swappable<T> {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.get().encode(encoder)
    }
}

/// Loads the web config named by `cfg` (none: plain HTTP, no auth).
pub fn load_web(cfg: &Config) -> Result<webconfig::WebSecurity, String> {
    match &cfg.web.config_file {
        Some(p) => webconfig::load(p).map_err(|e| e.to_string()),
        None => Ok(webconfig::WebSecurity::default()),
    }
}

/// Applies a reload; returns the configuration now in force (the old one on error).
pub fn apply(
    old: &Config,
    reload: &ReloadFn,
    state: &AppState,
    collectors: &Swappable<NodeCollectors>,
) -> Result<Config, String> {
    let new = reload()?;
    let web = load_web(&new)?;
    for (what, changed) in [
        (
            "web.listen_address",
            old.web.listen_address != new.web.listen_address,
        ),
        (
            "web.telemetry_path",
            old.web.telemetry_path != new.web.telemetry_path,
        ),
        (
            "web.max_requests",
            old.web.max_requests != new.web.max_requests,
        ),
        ("log.level", old.log.level != new.log.level),
        ("probes", old.probes != new.probes),
        // The probes' settings size kernel maps and decoder tables when they attach.
        ("http", old.http != new.http),
        ("syscalls", old.syscalls != new.syscalls),
        ("tcp", old.tcp != new.tcp),
        ("process_names", old.process_names != new.process_names),
    ] {
        if changed {
            tracing::warn!(
                key = what,
                "changed in the new configuration; applies only after a restart"
            );
        }
    }
    // Remote-write endpoints are swapped by app.rs (their shutdown is async) once this
    // function has accepted the whole new configuration.
    let (built, states) = build_collectors(&new);
    collectors.set(built);
    state.set_web(web);
    if let Ok(mut s) = state.status.write() {
        s.collectors = states;
    }
    // Keep what was not reloaded as it was, so that the next comparison is against what runs.
    let mut in_force = new;
    in_force.web.listen_address = old.web.listen_address.clone();
    in_force.web.telemetry_path = old.web.telemetry_path.clone();
    in_force.web.max_requests = old.web.max_requests;
    in_force.log.level = old.log.level;
    in_force.probes = old.probes.clone();
    in_force.http = old.http.clone();
    in_force.syscalls = old.syscalls.clone();
    in_force.tcp = old.tcp.clone();
    in_force.process_names = old.process_names.clone();
    Ok(in_force)
}
