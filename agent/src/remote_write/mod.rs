//! Remote write: every `interval` the whole registry is gathered once, visited series by
//! series (external labels, `write_relabel_configs`, stale markers for series that went away,
//! created timestamps), encoded once and appended to each endpoint's durable disk queue
//! ([`queue`]); one sender per endpoint sends
//! the queue in order ([`sender`]), retrying network errors, 5xx and 429 with capped
//! exponential backoff and jitter (Retry-After honoured), dropping batches the receiver
//! rejects with another 4xx. Remote-Write 1.0 or 2.0 per endpoint (`protobuf_message`), 2.0
//! falling back to 1.0 for good on 415.
//!
//! Families: `hostlens_remote_write_samples_in_total{endpoint}`,
//! `hostlens_remote_write_samples_total{endpoint,outcome}`,
//! `hostlens_remote_write_requests_total{endpoint,code}`,
//! `hostlens_remote_write_queue_samples{endpoint}`, `hostlens_remote_write_queue_bytes{endpoint}`,
//! `hostlens_remote_write_queue_max_bytes{endpoint}`,
//! `hostlens_remote_write_last_send_timestamp_seconds{endpoint}`,
//! `hostlens_remote_write_backoff_seconds{endpoint}`.
pub mod codec;
pub mod config;
pub mod proto;
pub mod queue;
pub mod sender;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    hash::Hasher as _,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use prometheus_client::{
    collector::Collector, encoding::DescriptorEncoder,
    encoding::prometheus_protobuf::prometheus_data_model as pb,
};
use tokio::sync::{Notify, watch};

use crate::emit::{Kind, Out};
use codec::{Batch, Protocol};
use config::{
    ProtobufMessage, RelabelAction, RelabelConfig, RemoteWriteConfig, RemoteWriteOptions,
};
use hyper::body::Bytes;
use proto::{MetricMetadata, Sample};
use queue::{DiskQueue, RecordWriter};
use sender::{Answer, Sender};

/// How long a sender keeps sending queued samples after SIGTERM before leaving them on disk.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error("remote_write[{index}] ({endpoint}): queue directory {dir}: {source}")]
    Queue {
        index: usize,
        endpoint: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("remote_write[{index}] ({endpoint}): {source}")]
    Setup {
        index: usize,
        endpoint: String,
        #[source]
        source: sender::SetupError,
    },
    #[error("remote_write: two endpoints are named {0:?}; set `name` to tell them apart")]
    DuplicateName(String),
}

/// Where the samples handed to one endpoint went. Changed in one step together with the
/// queue (under its lock) and read in one step at scrape time, so every scrape shows
/// `input = sent + dropped + queued` (plus what the queue held at start).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Flow {
    input: u64,
    sent: u64,
    dropped: u64,
    /// [`DiskQueue::held_samples`].
    queued: u64,
}

/// Counters and gauges of one endpoint, read at scrape time.
#[derive(Default)]
struct Stats {
    flow: Mutex<Flow>,
    retried: AtomicU64,
    requests: Mutex<BTreeMap<String, u64>>,
    queue_bytes: AtomicU64,
    queue_max: AtomicU64,
    last_send_ms: AtomicU64,
    backoff_ms: AtomicU64,
}

/// One configured endpoint: its queue, sender and state.
pub struct Endpoint {
    pub name: String,
    cfg: RemoteWriteConfig,
    queue: Mutex<DiskQueue>,
    notify: Notify,
    stats: Stats,
    /// Set once a 2.0 endpoint answered 415: 1.0 from then on.
    fell_back: AtomicBool,
    external: BTreeMap<String, String>,
    /// Series of the previous gather, for stale markers and created timestamps.
    previous: Mutex<Seen>,
}

/// The series of one gather as queued: their encoded label fields, by label hash.
#[derive(Default)]
struct Seen {
    labels: Vec<u8>,
    index: HashMap<u64, SeenSeries>,
}

#[derive(Debug, Clone, Copy)]
struct SeenSeries {
    start: u32,
    len: u32,
    /// When this endpoint first queued the series (ms): its created timestamp when it counts.
    first_ms: i64,
}

impl Seen {
    fn labels_of(&self, s: &SeenSeries) -> &[u8] {
        &self.labels[s.start as usize..(s.start + s.len) as usize]
    }
}

/// What appending one gather's records did.
#[derive(Default)]
struct Appended {
    dropped_full: u64,
    failed: u64,
    error: Option<std::io::Error>,
}

impl Endpoint {
    fn protocol(&self) -> Protocol {
        match self.cfg.protobuf_message {
            ProtobufMessage::V2 if !self.fell_back.load(Ordering::Relaxed) => Protocol::V2,
            _ => Protocol::V1,
        }
    }

    /// Counts samples handed in (`input`), acknowledged (`sent`) and lost (`dropped`) by a
    /// change of `q` just made, and takes the queue's gauges; the caller holds `q`'s lock, so
    /// the counts and the queue move in one step.
    fn account(&self, q: &DiskQueue, input: u64, sent: u64, dropped: u64) {
        let mut f = self.stats.flow.lock().unwrap_or_else(|p| p.into_inner());
        f.input += input;
        f.sent += sent;
        f.dropped += dropped;
        f.queued = q.held_samples();
        drop(f);
        self.stats.queue_bytes.store(q.bytes(), Ordering::Relaxed);
        self.stats.queue_max.store(q.max_bytes(), Ordering::Relaxed);
    }

    fn flow(&self) -> Flow {
        *self.stats.flow.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one gather for this endpoint: each series' final labels encoded once, its
    /// sample and created timestamp, then stale markers for the series of the last gather
    /// that are gone; appended as records of about [`queue::RECORD_TARGET`] bytes.
    fn enqueue(&self, families: &[pb::MetricFamily], meta: &[MetricMetadata], now_ms: i64) {
        let mut prev = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let mut cur = Seen {
            labels: Vec::with_capacity(prev.labels.len() + 4096),
            index: HashMap::with_capacity(prev.index.len()),
        };
        let mut w = RecordWriter::new(meta, now_ms);
        let mut done = Appended::default();
        let mut invalid = 0u64;
        let rules = &self.cfg.write_relabel_configs;
        codec::visit(families, now_ms, |s| {
            let mut labels: Vec<(&str, &str)> =
                Vec::with_capacity(s.labels.len() + 2 + self.external.len());
            labels.push(("__name__", s.name));
            labels.extend(s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
            labels.extend(s.extra);
            if let Err(e) = codec::finish_label_refs(&mut labels, &self.external) {
                invalid += 1;
                tracing::debug!(endpoint = %self.name, error = %e, "series not sent");
                return;
            }
            if !relabel(&mut labels, rules) {
                return;
            }
            let start = cur.labels.len();
            codec::put_labels(&labels, &mut cur.labels);
            let h = hash_bytes(&cur.labels[start..]);
            if let Some(o) = cur.index.get(&h)
                && cur.labels_of(o) == &cur.labels[start..]
            {
                // The same series twice in one gather: the first one is sent.
                invalid += 1;
                cur.labels.truncate(start);
                return;
            }
            let first_ms = prev
                .index
                .get(&h)
                .map_or(now_ms.min(s.sample.timestamp), |p| p.first_ms);
            cur.index.entry(h).or_insert(SeenSeries {
                start: start as u32,
                len: (cur.labels.len() - start) as u32,
                first_ms,
            });
            let created = if s.cumulative() {
                s.start_ms.filter(|t| *t > 0).unwrap_or(first_ms)
            } else {
                0
            };
            w.push(&cur.labels[start..], s.sample, Some(s.family), created);
            if w.full() {
                self.append(&mut w, &mut done);
            }
        });
        // Series of the last gather that are gone get a stale marker now (once: they are not
        // remembered after this).
        for (h, p) in &prev.index {
            if !cur.index.contains_key(h) {
                let stale = Sample {
                    value: codec::stale_nan(),
                    timestamp: now_ms,
                };
                w.push(prev.labels_of(p), stale, None, 0);
                if w.full() {
                    self.append(&mut w, &mut done);
                }
            }
        }
        if !w.is_empty() {
            self.append(&mut w, &mut done);
        }
        *prev = cur;
        drop(prev);
        if invalid > 0 {
            tracing::warn!(endpoint = %self.name, series = invalid, "series with invalid or duplicate labels not sent");
        }
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        // Series never queued count as handed in and dropped at once.
        self.account(&q, invalid, 0, invalid);
        let segment = q.sync_handle();
        if done.dropped_full > 0 {
            tracing::warn!(endpoint = %self.name, samples = done.dropped_full, max_bytes = q.max_bytes(), "remote write queue full: oldest samples dropped");
        }
        if let Some(e) = done.error {
            tracing::error!(endpoint = %self.name, error = %e, samples = done.failed, "cannot append to the remote write queue: samples dropped");
        }
        drop(q);
        self.notify.notify_one();
        // The gather's records go to disk (fsync) while the sender may already send them.
        if let Err(e) = segment.and_then(|f| f.map_or(Ok(()), |f| f.sync_data())) {
            tracing::warn!(endpoint = %self.name, error = %e, "cannot fsync the remote write queue");
        }
    }

    /// Cuts the writer's record and appends it to the queue.
    fn append(&self, w: &mut RecordWriter<'_>, done: &mut Appended) {
        let (raw, samples) = w.take();
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = match q.append_raw(&raw, samples) {
            Ok(n) => {
                done.dropped_full += n;
                n
            }
            Err(e) => {
                done.failed += samples;
                done.error = Some(e);
                samples
            }
        };
        self.account(&q, samples, 0, dropped);
    }
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(b);
    h.finish()
}

/// Applies `write_relabel_configs` to sorted labels; false when the series is dropped.
pub fn relabel(labels: &mut Vec<(&str, &str)>, rules: &[RelabelConfig]) -> bool {
    for r in rules {
        match r.action {
            RelabelAction::Keep | RelabelAction::Drop => {
                let value = r
                    .source_labels
                    .iter()
                    .map(|n| labels.iter().find(|l| l.0 == n).map_or("", |l| l.1))
                    .collect::<Vec<_>>()
                    .join(&r.separator);
                let m = r.regex.is_match(&value);
                if (r.action == RelabelAction::Keep) != m {
                    return false;
                }
            }
            RelabelAction::Labeldrop => labels.retain(|l| !r.regex.is_match(l.0)),
            RelabelAction::Labelkeep => labels.retain(|l| r.regex.is_match(l.0)),
        }
    }
    labels.iter().any(|l| l.0 == "__name__")
}

/// The configured endpoints, opened (queues on disk, HTTP clients) but not started.
pub struct RemoteWrite {
    endpoints: Vec<Arc<Endpoint>>,
    options: RemoteWriteOptions,
}

/// Gathers the registry; supplied by the app (the registry lives in the server's state).
pub type GatherFn = Arc<dyn Fn() -> Result<Vec<pb::MetricFamily>, String> + Send + Sync>;

impl RemoteWrite {
    /// Opens every endpoint's queue. No endpoints configured: `Ok(None)`.
    pub fn open(
        endpoints: &[RemoteWriteConfig],
        options: &RemoteWriteOptions,
    ) -> Result<Option<RemoteWrite>, RemoteWriteError> {
        if endpoints.is_empty() {
            return Ok(None);
        }
        let external = options.external_labels();
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for (index, cfg) in endpoints.iter().enumerate() {
            let name = cfg.endpoint_name();
            if !names.insert(name.clone()) {
                return Err(RemoteWriteError::DuplicateName(name));
            }
            let dir = options.queue_dir.join(dir_name(&name));
            let queue = DiskQueue::open(&dir, options.queue_max_size.0).map_err(|source| {
                RemoteWriteError::Queue {
                    index,
                    endpoint: name.clone(),
                    dir: dir.clone(),
                    source,
                }
            })?;
            let ep = Endpoint {
                name: name.clone(),
                cfg: cfg.clone(),
                queue: Mutex::new(queue),
                notify: Notify::new(),
                stats: Stats::default(),
                fell_back: AtomicBool::new(false),
                external: external.clone(),
                previous: Mutex::new(Seen::default()),
            };
            {
                let q = ep.queue.lock().unwrap_or_else(|p| p.into_inner());
                // What the queue held at start: gauges only, nothing handed in yet.
                ep.account(&q, 0, 0, 0);
                if q.pending_samples() > 0 {
                    tracing::info!(endpoint = %name, samples = q.pending_samples(), bytes = q.bytes(), "remote write: samples queued before the restart will be sent");
                }
            }
            out.push(Arc::new(ep));
        }
        Ok(Some(RemoteWrite {
            endpoints: out,
            options: options.clone(),
        }))
    }

    /// The self-metrics collector; register it in the registry before starting.
    pub fn metrics(&self) -> RemoteWriteMetrics {
        RemoteWriteMetrics(self.endpoints.clone())
    }

    /// Starts the gather loop and one sender per endpoint.
    pub fn start(self, gather: GatherFn) -> Result<Running, RemoteWriteError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for (index, ep) in self.endpoints.iter().enumerate() {
            let sender = Sender::new(&ep.cfg).map_err(|source| RemoteWriteError::Setup {
                index,
                endpoint: ep.name.clone(),
                source,
            })?;
            tracing::info!(endpoint = %ep.name, url = %sender.url, protobuf_message = ?ep.cfg.protobuf_message, interval = ?self.options.interval.0, "remote write started");
            tasks.push(tokio::spawn(supervise(
                Arc::clone(ep),
                Arc::new(sender),
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(gather_loop(
            self.endpoints.clone(),
            self.options.interval.0,
            gather,
            stop_rx,
        )));
        Ok(Running {
            stop: stop_tx,
            tasks,
        })
    }
}

/// A directory name for an endpoint: its name with anything but `[A-Za-z0-9._-]` as `_`.
fn dir_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The running loops.
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops gathering; each sender sends what is queued for at most [`FLUSH_TIMEOUT`], the
    /// rest stays on disk for the next start.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn gather_loop(
    endpoints: Vec<Arc<Endpoint>>,
    interval: Duration,
    gather: GatherFn,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let eps = endpoints.clone();
        let g = Arc::clone(&gather);
        let done = tokio::task::spawn_blocking(move || {
            let families = g()?;
            let now = now_ms();
            let meta = codec::metadata(&families);
            for ep in &eps {
                ep.enqueue(&families, &meta, now);
            }
            drop(families);
            // A gather of a large registry allocates and frees tens of MB at once; hand the
            // freed memory back so that the resident size reflects what is kept.
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
            unsafe {
                libc::malloc_trim(0);
            }
            Ok::<_, String>(())
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "remote write: gathering the registry failed"),
            Err(e) => tracing::error!(error = %e, "remote write: gather task failed"),
        }
    }
}

/// Backoff state of one batch: capped exponential with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The next wait: uniformly in [d/2, d] for the current step d (jitter keeps many agents
    /// from retrying in lockstep), then d doubles up to the maximum.
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        let half = d / 2;
        half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos().max(1) as u64))
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Retry-After longer than this is not believed (a typo must not park the sender for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Runs an endpoint's sender until shutdown. Should the sender panic (a bug met by some
/// batch), it is logged and started again a second later from the queue, which still holds
/// the unacknowledged window: sending goes on instead of stopping silently until a restart.
async fn supervise(ep: Arc<Endpoint>, sender: Arc<Sender>, stop: watch::Receiver<bool>) {
    loop {
        let run = tokio::spawn(send_loop(
            Arc::clone(&ep),
            Arc::clone(&sender),
            stop.clone(),
        ));
        match run.await {
            Err(e) if e.is_panic() && !*stop.borrow() => {
                tracing::error!(endpoint = %ep.name, "remote write sender panicked; starting it again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => return,
        }
    }
}

async fn send_loop(ep: Arc<Endpoint>, sender: Arc<Sender>, mut stop: watch::Receiver<bool>) {
    let q_cfg = ep.cfg.queue_config.clone();
    // `min_shards` parallel requests per window, each with its own series (order kept).
    let shards = q_cfg.min_shards.max(1);
    let max = q_cfg.max_samples_per_send * shards;
    let mut backoff = Backoff::new(q_cfg.min_backoff.0, q_cfg.max_backoff.0);
    let mut flush_until: Option<tokio::time::Instant> = None;
    loop {
        if flush_until.is_none() && *stop.borrow() {
            flush_until = Some(tokio::time::Instant::now() + FLUSH_TIMEOUT);
        }
        if flush_until.is_some_and(|t| tokio::time::Instant::now() >= t) {
            break;
        }
        // Disk reads (and the cursor's fsync below) run on the blocking pool: a slow or hung
        // queue disk must not stall the runtime's two workers (HTTP, the http probe's drain).
        let peeked = {
            let ep = Arc::clone(&ep);
            tokio::task::spawn_blocking(move || {
                let mut q = ep.queue.lock().unwrap_or_else(|p| p.into_inner());
                let r = q.peek(max);
                let lost = r.as_ref().map_or(0, |(_, lost)| *lost);
                ep.account(&q, 0, 0, lost);
                r
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("queue read task: {e}"))))
        };
        let peeked = match peeked {
            Ok((p, _)) => p,
            Err(e) => {
                tracing::error!(endpoint = %ep.name, error = %e, "remote write queue unreadable");
                None
            }
        };
        let Some(mut p) = peeked else {
            if flush_until.is_some() {
                break;
            }
            tokio::select! {
                _ = ep.notify.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        // A partial batch waits for more samples until batch_send_deadline after it was queued.
        if p.samples < max && flush_until.is_none() {
            let age =
                Duration::from_millis(now_ms().saturating_sub(p.oldest_queued_ms).max(0) as u64);
            if let Some(wait) = q_cfg
                .batch_send_deadline
                .0
                .checked_sub(age)
                .filter(|w| !w.is_zero())
            {
                tokio::select! {
                    _ = ep.notify.notified() => continue,
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => continue,
                }
            }
        }
        crate::faults::panic_once_at("remote_write", &ep.name);
        let outcome = if shards == 1 {
            send_batch(&ep, &sender, &p.batch, &mut backoff, &mut stop, flush_until).await
        } else {
            // Shards go out in parallel; the window is acknowledged once every shard is done.
            let mut set = tokio::task::JoinSet::new();
            for b in split_shards(std::mem::take(&mut p.batch), shards) {
                let (ep, sender, mut stop) = (Arc::clone(&ep), Arc::clone(&sender), stop.clone());
                let mut backoff = Backoff::new(q_cfg.min_backoff.0, q_cfg.max_backoff.0);
                set.spawn(async move {
                    send_batch(&ep, &sender, &b, &mut backoff, &mut stop, flush_until).await
                });
            }
            let mut all = Outcome::Done(Resolved::default());
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Outcome::Done(r)) => {
                        if let Outcome::Done(a) = &mut all {
                            a.sent += r.sent;
                            a.dropped += r.dropped;
                        }
                    }
                    // A shard's panic is the sender's: `supervise` starts it again (the
                    // window is still queued), rather than it passing for a shutdown.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    _ => all = Outcome::Stopped,
                }
            }
            all
        };
        let Outcome::Done(resolved) = outcome else {
            break;
        };
        let (ep2, end) = (Arc::clone(&ep), p.end);
        let _ = tokio::task::spawn_blocking(move || commit(&ep2, end, resolved)).await;
    }
    let q = ep.queue.lock().unwrap_or_else(|p| p.into_inner());
    if q.pending_samples() > 0 {
        tracing::info!(endpoint = %ep.name, samples = q.pending_samples(), "remote write stopped; queued samples stay on disk for the next start");
    }
}

/// Sends one batch until it is accepted, rejected or too old. Returns false when the sender
/// must stop (shutdown while waiting), leaving the batch queued.
async fn send_batch(
    ep: &Endpoint,
    sender: &Sender,
    batch: &Batch,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
    flush_until: Option<tokio::time::Instant>,
) -> Outcome {
    let n = batch.samples() as u64;
    let age_limit = ep.cfg.queue_config.sample_age_limit.0;
    let mut first_refusal: Option<Instant> = None;
    let mut body_cache: Option<(Protocol, Bytes)> = None;
    loop {
        let proto = ep.protocol();
        let body = match &body_cache {
            Some((p2, b)) if *p2 == proto => b.clone(),
            _ => {
                let b = encode(batch, proto);
                body_cache = Some((proto, b.clone()));
                b
            }
        };
        let answer = match flush_until {
            Some(t) => match tokio::time::timeout_at(t, sender.send(body, proto)).await {
                Ok(a) => a,
                Err(_) => return Outcome::Stopped,
            },
            None => sender.send(body, proto).await,
        };
        {
            let mut r = ep.stats.requests.lock().unwrap_or_else(|p| p.into_inner());
            *r.entry(answer.code_label()).or_default() += 1;
        }
        let (retry_after, message, refused) = match answer {
            Answer::Accepted(_) => {
                ep.stats
                    .last_send_ms
                    .store(now_ms() as u64, Ordering::Relaxed);
                ep.stats.backoff_ms.store(0, Ordering::Relaxed);
                backoff.reset();
                return Outcome::Done(Resolved {
                    sent: n,
                    dropped: 0,
                });
            }
            Answer::Unsupported { message } if proto == Protocol::V2 => {
                ep.fell_back.store(true, Ordering::Relaxed);
                tracing::warn!(endpoint = %ep.name, %message, "receiver answered 415 to Remote-Write 2.0: falling back to 1.0 for this endpoint");
                continue;
            }
            Answer::Unsupported { message } => {
                return reject(ep, n, 415, &message);
            }
            Answer::Rejected { code, message } => {
                return reject(ep, n, code, &message);
            }
            Answer::RetryableStatus {
                code,
                message,
                retry_after,
            } => {
                if code == 429 && !ep.cfg.queue_config.retry_on_http_429 {
                    return reject(ep, n, code, &message);
                }
                (retry_after, format!("HTTP {code}: {message}"), true)
            }
            Answer::Transport { message } => (None, message, false),
        };
        if refused {
            let since = *first_refusal.get_or_insert_with(Instant::now);
            if !age_limit.is_zero() && since.elapsed() >= age_limit {
                tracing::error!(endpoint = %ep.name, samples = n, %message, limit = ?age_limit, "receiver kept refusing a batch for longer than sample_age_limit: dropped");
                return Outcome::Done(Resolved {
                    sent: 0,
                    dropped: n,
                });
            }
        }
        ep.stats.retried.fetch_add(n, Ordering::Relaxed);
        // A Retry-After of 0 (or a date already past) falls back to the backoff, as in
        // Prometheus: a receiver answering "now" every time must not make a busy loop.
        let wait = match retry_after {
            Some(d) if !d.is_zero() => {
                backoff.step();
                d.min(MAX_RETRY_AFTER)
            }
            _ => backoff.step(),
        };
        ep.stats
            .backoff_ms
            .store(wait.as_millis() as u64, Ordering::Relaxed);
        tracing::warn!(endpoint = %ep.name, samples = n, error = %message, retry_in = ?wait, "remote write failed, will retry");
        if flush_until.is_some() {
            return Outcome::Stopped;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return Outcome::Stopped,
        }
    }
}

/// The compressed body of a batch: a 1.0 body is the batch's bytes as they are.
fn encode(batch: &Batch, proto: Protocol) -> Bytes {
    Bytes::from(match proto {
        Protocol::V1 => codec::compress(&batch.buf),
        Protocol::V2 => codec::compress(&codec::encode_v2(batch)),
    })
}

/// Acknowledges a batch in the queue and counts how it ended, in one step.
fn commit(ep: &Endpoint, end: queue::Cursor, resolved: Resolved) {
    let mut q = ep.queue.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = q.commit(end) {
        tracing::error!(endpoint = %ep.name, error = %e, "cannot record progress in the remote write queue; the batch may be sent again after a restart");
    }
    ep.account(&q, 0, resolved.sent, resolved.dropped);
}

fn reject(ep: &Endpoint, samples: u64, code: u16, message: &str) -> Outcome {
    tracing::error!(endpoint = %ep.name, code, samples, %message, "receiver rejected a batch: dropped, not retried");
    Outcome::Done(Resolved {
        sent: 0,
        dropped: samples,
    })
}

/// The samples of a finished batch: acknowledged, or dropped for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Resolved {
    sent: u64,
    dropped: u64,
}

/// How sending one batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Accepted, or dropped for good (rejected, too old): acknowledge it in the queue.
    Done(Resolved),
    /// Shutdown while retrying: leave it queued.
    Stopped,
}

/// Splits a batch into `shards` batches by series (label hash), keeping queue order within
/// each: a series is always in one shard, so sending shards in parallel keeps its order.
fn split_shards(batch: Batch, shards: usize) -> Vec<Batch> {
    let mut out = vec![Batch::default(); shards];
    for (i, s) in batch.series.iter().enumerate() {
        let e = batch.entry(i);
        let k = (codec::label_fields_hash(e) % shards as u64) as usize;
        out[k].push_entry(e, s.samples, batch.meta_of(i), s.created);
    }
    out.retain(|b| !b.is_empty());
    out
}

type Getter = fn(&Endpoint, &Flow) -> f64;

/// `hostlens_remote_write_*` families, read at scrape time.
#[derive(Clone)]
pub struct RemoteWriteMetrics(Vec<Arc<Endpoint>>);

impl fmt::Debug for RemoteWriteMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RemoteWriteMetrics")
            .field(&self.0.len())
            .finish()
    }
}

impl Collector for RemoteWriteMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut out = Out::new(&mut encoder);
        let eps = &self.0;
        // One snapshot per endpoint for every family below, so that one scrape shows
        // input = sent + dropped + queued.
        let flows: Vec<Flow> = eps.iter().map(|e| e.flow()).collect();
        {
            let mut f = out.family(
                "hostlens_remote_write_samples_in_total",
                "Samples this process handed to the endpoint's queue (each series' sample and stale marker of every gather; series with invalid labels too, counted dropped at once). Every one is sent, dropped or still queued: in = sent + dropped + queue_samples, plus the samples queued before the start.",
                Kind::Counter,
            )?;
            for (e, fl) in eps.iter().zip(&flows) {
                f.sample(&[("endpoint", e.name.as_str())], fl.input as f64)?;
            }
        }
        {
            let mut f = out.family(
                "hostlens_remote_write_samples_total",
                "Samples by outcome: sent (acknowledged by the receiver), retried (in a failed attempt that is retried), dropped (rejected by the receiver, refused for longer than sample_age_limit, invalid, or pushed out of a full queue).",
                Kind::Counter,
            )?;
            for (e, fl) in eps.iter().zip(&flows) {
                for (o, v) in [
                    ("sent", fl.sent),
                    ("retried", e.stats.retried.load(Ordering::Relaxed)),
                    ("dropped", fl.dropped),
                ] {
                    f.sample(&[("endpoint", e.name.as_str()), ("outcome", o)], v as f64)?;
                }
            }
        }
        {
            let mut f = out.family(
                "hostlens_remote_write_requests_total",
                "Remote-write requests by HTTP status code (\"error\" when no answer came: connection, TLS, timeout).",
                Kind::Counter,
            )?;
            for e in eps {
                let r = e
                    .stats
                    .requests
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                for (code, v) in r {
                    f.sample(
                        &[("code", code.as_str()), ("endpoint", e.name.as_str())],
                        v as f64,
                    )?;
                }
            }
        }
        let gauges: [(&str, &str, Getter); 5] = [
            (
                "hostlens_remote_write_queue_samples",
                "Samples in the disk queue (or in the batch being sent) not yet acknowledged by the receiver nor dropped.",
                |_, f| f.queued as f64,
            ),
            (
                "hostlens_remote_write_queue_bytes",
                "Bytes of the disk queue's segment files.",
                |e, _| e.stats.queue_bytes.load(Ordering::Relaxed) as f64,
            ),
            (
                "hostlens_remote_write_queue_max_bytes",
                "Configured bound of the disk queue (remote_write_options.queue_max_size).",
                |e, _| e.stats.queue_max.load(Ordering::Relaxed) as f64,
            ),
            (
                "hostlens_remote_write_last_send_timestamp_seconds",
                "When the receiver last acknowledged a batch (0: never since start).",
                |e, _| e.stats.last_send_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            ),
            (
                "hostlens_remote_write_backoff_seconds",
                "Current wait before the next retry (0 when the last send succeeded).",
                |e, _| e.stats.backoff_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            ),
        ];
        for (name, help, get) in gauges {
            let mut f = out.family(name, help, Kind::Gauge)?;
            for (e, fl) in eps.iter().zip(&flows) {
                f.sample(&[("endpoint", e.name.as_str())], get(e, fl))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let expect = [100, 200, 400, 800, 800, 800];
        for ms in expect {
            let d = b.step();
            let full = Duration::from_millis(ms);
            assert!(
                d >= full / 2 && d <= full,
                "{d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
        b.reset();
        assert!(b.step() <= Duration::from_millis(100));
    }

    #[test]
    fn relabel_keep_drop_labeldrop() {
        let rules: Vec<RelabelConfig> = serde_yaml::from_str(
            "- source_labels: [__name__]\n  regex: node_.*\n  action: keep\n- regex: node_load5\n  action: drop\n- regex: job\n  action: labeldrop\n",
        )
        .unwrap();
        let mut l = vec![("__name__", "node_load1"), ("job", "x")];
        assert!(relabel(&mut l, &rules));
        assert_eq!(l, vec![("__name__", "node_load1")]);
        assert!(!relabel(&mut vec![("__name__", "node_load5")], &rules));
        assert!(!relabel(
            &mut vec![("__name__", "process_open_fds")],
            &rules
        ));
    }

    fn family(name: &str, kind: pb::MetricType, t: i64) -> pb::MetricFamily {
        let value = 1.0;
        pb::MetricFamily {
            name: name.into(),
            help: format!("{name} help"),
            r#type: kind as i32,
            metric: vec![pb::Metric {
                timestamp_ms: t,
                gauge: (kind == pb::MetricType::Gauge).then_some(pb::Gauge { value }),
                counter: (kind == pb::MetricType::Counter).then(|| pb::Counter {
                    value,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// (name, timestamp, stale, created) of every queued series, in queue order.
    fn queued(ep: &Endpoint) -> Vec<(String, i64, bool, i64)> {
        let mut q = ep.queue.lock().unwrap();
        let (p, _) = q.peek(100).unwrap();
        let b = p.unwrap().batch;
        b.decode()
            .iter()
            .zip(&b.series)
            .map(|(t, s)| {
                let name = t.labels.iter().find(|l| l.name == "__name__").unwrap();
                assert!(
                    t.labels
                        .iter()
                        .any(|l| l.name == "job" && l.value == "hostlens")
                );
                (
                    name.value.clone(),
                    t.samples[0].timestamp,
                    codec::is_stale(t.samples[0].value),
                    s.created,
                )
            })
            .collect()
    }

    fn open_endpoint(name: &str) -> (RemoteWrite, PathBuf) {
        let dir = std::env::temp_dir().join(format!("hostlens-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg: RemoteWriteConfig = serde_yaml::from_str("url: http://127.0.0.1:1/w\n").unwrap();
        let opts = RemoteWriteOptions {
            queue_dir: dir.clone(),
            external_labels: Some(BTreeMap::from([("job".into(), "hostlens".into())])),
            ..RemoteWriteOptions::default()
        };
        (RemoteWrite::open(&[cfg], &opts).unwrap().unwrap(), dir)
    }

    #[test]
    fn series_that_disappear_get_one_stale_marker() {
        let (rw, dir) = open_endpoint("stale");
        let ep = &rw.endpoints[0];
        let g = |names: &[&str], t: i64| {
            let fams: Vec<_> = names
                .iter()
                .map(|n| family(n, pb::MetricType::Gauge, t))
                .collect();
            ep.enqueue(&fams, &codec::metadata(&fams), t);
        };
        g(&["a", "b"], 1000);
        g(&["a"], 2000);
        g(&["a"], 3000);
        assert_eq!(
            queued(ep),
            vec![
                ("a".into(), 1000, false, 0),
                ("b".into(), 1000, false, 0),
                ("a".into(), 2000, false, 0),
                ("b".into(), 2000, true, 0),
                ("a".into(), 3000, false, 0),
            ]
        );
        drop(rw);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn counters_carry_the_time_they_were_first_queued_gauges_none() {
        let (rw, dir) = open_endpoint("created");
        let ep = &rw.endpoints[0];
        let g = |t: i64, with_d: bool| {
            let mut fams = vec![
                family("c_total", pb::MetricType::Counter, 0),
                family("g", pb::MetricType::Gauge, 0),
            ];
            if with_d {
                fams.push(family("d_total", pb::MetricType::Counter, 0));
            }
            ep.enqueue(&fams, &codec::metadata(&fams), t);
        };
        g(1000, false);
        g(2000, true);
        g(3000, false);
        g(4000, true);
        assert_eq!(
            queued(ep),
            vec![
                ("c_total".into(), 1000, false, 1000),
                ("g".into(), 1000, false, 0),
                ("c_total".into(), 2000, false, 1000),
                ("g".into(), 2000, false, 0),
                ("d_total".into(), 2000, false, 2000),
                ("c_total".into(), 3000, false, 1000),
                ("g".into(), 3000, false, 0),
                ("d_total".into(), 3000, true, 0),
                // Gone and back: a new series from the queue's point of view.
                ("c_total".into(), 4000, false, 1000),
                ("g".into(), 4000, false, 0),
                ("d_total".into(), 4000, false, 4000),
            ]
        );
        drop(rw);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
