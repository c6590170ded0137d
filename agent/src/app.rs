//! Start-up, serving and shutdown of the daemon.
use std::{sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use tokio::io::unix::AsyncFd;

use crate::{
    collectors::{COLLECTORS, CollectorContext, NodeCollectors},
    config::Config,
    probes::{PROBES, Probes, error_chain},
    reload::{self, ReloadFn, Swappable},
    remote_write::RemoteWrite,
    sdnotify,
    selfmetrics::SelfMetrics,
    server::{self, AppState},
    status::{State, Status},
};

/// Builds the enabled collectors; a constructor error fails only that collector.
pub fn build_collectors(cfg: &Config) -> (NodeCollectors, Vec<(&'static str, State)>) {
    let ctx = CollectorContext {
        paths: cfg.paths.paths(),
        settings: cfg.collector_settings.clone(),
        process_groups: cfg.process_groups.clone(),
    };
    let mut active = Vec::new();
    let mut states = Vec::new();
    for e in COLLECTORS {
        if !cfg.collectors.enabled(e.name) {
            states.push((e.name, State::Disabled));
            continue;
        }
        match (e.new)(&ctx) {
            Ok(c) => {
                active.push((e.name, c));
                states.push((e.name, State::Active));
            }
            Err(err) => {
                let reason = error_chain(&err);
                tracing::warn!(collector = e.name, %reason, "collector failed to start");
                states.push((e.name, State::Failed(reason)));
            }
        }
    }
    (NodeCollectors::new(active), states)
}

/// The registry with node collectors only (no probes, no self metrics): what the golden
/// end-to-end tests compare.
pub fn node_registry(cfg: &Config) -> Registry {
    let (collectors, _) = build_collectors(cfg);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collectors));
    registry
}

/// Runs the daemon until SIGTERM/SIGINT. Returns the process exit code.
pub async fn run(cfg: Config) -> u8 {
    let web = match reload::load_web(&cfg) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("{e}");
            return crate::cli::EX_USAGE;
        }
    };
    run_with(cfg, web, None, None).await
}

/// Runs the daemon with a web config already loaded, probes possibly already attached (main
/// attaches them before the runtime starts, to drop capabilities while single-threaded), and
/// how to re-read the configuration on SIGHUP.
pub async fn run_with(
    cfg: Config,
    web: crate::webconfig::WebSecurity,
    preloaded: Option<Probes>,
    reload_fn: Option<ReloadFn>,
) -> u8 {
    let mut signals = Signals::register();
    tracing::info!(web = %web.summary(), "web config");
    // Remote-write queues are opened first: a queue directory that cannot be used is fatal.
    let remote_write = match RemoteWrite::open(&cfg.remote_write, &cfg.remote_write_options) {
        Ok(rw) => rw,
        Err(e) => {
            tracing::error!("{}", error_chain(&e));
            return 1;
        }
    };
    let rw_metrics = Arc::new(RemoteWriteSlot::default());
    rw_metrics.set(remote_write.as_ref().map(|rw| rw.metrics()));
    let init_rw_metrics = Arc::clone(&rw_metrics);
    let listener = match server::bind(&cfg.web.listen_address).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let state = Arc::new(AppState::new(
        cfg.web.telemetry_path.clone(),
        cfg.web.max_requests,
    ));
    state.set_web(web);
    let node = Arc::new(Swappable::new(NodeCollectors::new(Vec::new())));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        Arc::clone(&state),
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(10),
    ));
    tracing::info!(address = %local, path = %cfg.web.telemetry_path, "listening");

    // Collectors (and the probes, unless main attached them already) start while /healthz
    // already answers; /readyz turns 200 after.
    let init_cfg = cfg.clone();
    let init_node = Arc::clone(&node);
    let init = tokio::task::spawn_blocking(move || {
        let (collectors, collector_states) = build_collectors(&init_cfg);
        init_node.set(collectors);
        crate::probes::http::configure(init_cfg.http.clone(), init_cfg.paths.procfs.clone());
        let probes = preloaded.unwrap_or_else(|| Probes::load(&init_cfg));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(init_node));
        registry.register_collector(Box::new(Arc::clone(&probes.metrics)));
        registry.register_collector(Box::new(SelfMetrics));
        registry.register_collector(Box::new(init_rw_metrics));
        let hooks = |n: &str| PROBES.iter().find(|p| p.name == n).map_or("", |p| p.hooks);
        let status = Status {
            collectors: collector_states,
            probes: probes
                .states
                .iter()
                .map(|(n, s)| (*n, hooks(n), s.clone()))
                .collect(),
        };
        (registry, status, probes)
    })
    .await;
    let mut probes = match init {
        Ok((registry, status, probes)) => {
            if let Err(e) = crate::probes::http::start_pending() {
                tracing::error!("{e}");
            }
            tracing::info!("{}", status.summary());
            state.set_ready(registry, status);
            sdnotify::ready();
            probes
        }
        Err(e) => {
            tracing::error!(error = %e, "initialisation failed");
            let _ = stop_tx.send(());
            let _ = server.await;
            return 1;
        }
    };
    let log_tasks: Vec<_> = probes.objects_mut().filter_map(forward_ebpf_logs).collect();
    let mut remote_write = match remote_write.map(|rw| start_remote_write(rw, &state)) {
        None => None,
        Some(Ok(running)) => Some(running),
        Some(Err(e)) => {
            tracing::error!("{}", error_chain(&e));
            let _ = stop_tx.send(());
            let _ = server.await;
            probes.detach();
            return 1;
        }
    };

    let mut in_force = cfg;
    let signal = loop {
        match wait_for_signal(&mut signals).await {
            "SIGHUP" => {
                sdnotify::reloading();
                match &reload_fn {
                    None => tracing::warn!("SIGHUP: no configuration source to reload from"),
                    Some(f) => match reload::apply(&in_force, f, &state, &node) {
                        Ok(c) => {
                            if c.remote_write != in_force.remote_write
                                || c.remote_write_options != in_force.remote_write_options
                            {
                                remote_write = reload_remote_write(
                                    remote_write.take(),
                                    &in_force,
                                    &c,
                                    &state,
                                    &rw_metrics,
                                )
                                .await;
                            }
                            in_force = c;
                            tracing::info!(
                                web = %state.web().summary(),
                                collectors = %node.get().names().collect::<Vec<_>>().join(","),
                                "configuration reloaded"
                            );
                        }
                        Err(e) => tracing::error!(
                            error = %e,
                            "configuration reload rejected; the previous configuration stays in force"
                        ),
                    },
                }
                sdnotify::ready();
            }
            other => break other,
        }
    };
    sdnotify::stopping();
    tracing::info!(
        signal,
        "shutting down: no new connections, finishing in-flight scrapes"
    );
    let _ = stop_tx.send(());
    let _ = server.await;
    if let Some(rw) = remote_write {
        rw.shutdown().await;
    }
    for t in log_tasks {
        t.abort();
    }
    let n = probes.detach();
    tracing::info!(programs = n, "eBPF programs detached; bye");
    0
}

/// The signals the daemon acts on, registered once at start: a SIGHUP that arrives while
/// starting is then queued for the reload loop instead of killing the process.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate())
            .map_err(
                |e| tracing::error!(error = %e, "cannot watch SIGTERM; waiting for SIGINT only"),
            )
            .ok();
        let hup = signal(SignalKind::hangup())
            .map_err(|e| tracing::error!(error = %e, "cannot watch SIGHUP; reload is unavailable"))
            .ok();
        Signals { term, hup }
    }
}

async fn wait_for_signal(signals: &mut Signals) -> &'static str {
    async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        () = next(&mut signals.term) => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = next(&mut signals.hup) => "SIGHUP",
    }
}

/// Forwards aya-log records written by the kernel programs to the agent's log.
fn forward_ebpf_logs(ebpf: &mut aya::Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "no eBPF log records to forward");
            return None;
        }
    };
    // SAFETY: the logger owns its ring buffer's fd for its whole life and always returns that
    // same fd; the AsyncFd owns the logger, so the fd stays open until the AsyncFd is dropped.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "cannot poll the eBPF log ring buffer");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            match fd.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "eBPF log forwarding stopped");
                    return;
                }
            }
        }
    }))
}

/// The remote-write self metrics of the endpoints running now; swapped when a reload
/// replaces the endpoints.
#[derive(Debug, Default)]
struct RemoteWriteSlot(std::sync::RwLock<Option<crate::remote_write::RemoteWriteMetrics>>);

impl RemoteWriteSlot {
    fn set(&self, m: Option<crate::remote_write::RemoteWriteMetrics>) {
        match self.0.write() {
            Ok(mut g) => *g = m,
            Err(p) => *p.into_inner() = m,
        }
    }
}

impl prometheus_client::collector::Collector for RemoteWriteSlot {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let g = match self.0.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match &*g {
            Some(m) => m.encode(encoder),
            None => Ok(()),
        }
    }
}

/// Starts pushing: every interval the sender gathers the served registry.
fn start_remote_write(
    rw: RemoteWrite,
    state: &Arc<AppState>,
) -> Result<crate::remote_write::Running, crate::remote_write::RemoteWriteError> {
    let st = Arc::clone(state);
    rw.start(Arc::new(move || {
        let registry = st.registry.get().ok_or("registry not ready")?;
        crate::exposition::gather(registry).map_err(|e| e.to_string())
    }))
}

/// SIGHUP with changed `remote_write` / `remote_write_options`: the running endpoints stop
/// (their queues stay on disk), the new ones open their queues and start. A new set that
/// cannot start is logged and the previous one is started again, so pushing never stops for
/// good because of a reload.
async fn reload_remote_write(
    running: Option<crate::remote_write::Running>,
    old: &Config,
    new: &Config,
    state: &Arc<AppState>,
    slot: &RemoteWriteSlot,
) -> Option<crate::remote_write::Running> {
    if let Some(r) = running {
        r.shutdown().await;
    }
    // The metrics hold the old endpoints, and with them their queue locks.
    slot.set(None);
    let open = |c: &Config| {
        RemoteWrite::open(&c.remote_write, &c.remote_write_options).and_then(|rw| {
            let metrics = rw.as_ref().map(|rw| rw.metrics());
            let running = rw.map(|rw| start_remote_write(rw, state)).transpose()?;
            Ok((running, metrics))
        })
    };
    match open(new) {
        Ok((running, metrics)) => {
            slot.set(metrics);
            tracing::info!(endpoints = new.remote_write.len(), "remote write reloaded");
            running
        }
        Err(e) => {
            tracing::error!(
                error = %error_chain(&e),
                "remote write: the new endpoints cannot start; the previous ones run again"
            );
            match open(old) {
                Ok((running, metrics)) => {
                    slot.set(metrics);
                    running
                }
                Err(e) => {
                    slot.set(None);
                    tracing::error!(error = %error_chain(&e), "remote write stopped");
                    None
                }
            }
        }
    }
}
