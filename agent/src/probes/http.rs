//! `http` probe, user half: HTTP/1.x RED metrics of every process, from the kernel.
//!
//! Hooks (`http.hook`): the socket tracepoints `sock:sock_send_length`/`sock_recv_length` plus
//! `sock:inet_sock_set_state` as `tp_btf` (Linux 6.4+), else syscall exits — `tp_btf/sys_exit`,
//! the `syscalls:sys_exit_*` tracepoints, `raw_tracepoint/sys_exit`. Either way the bytes of
//! `read`, `readv`, `recvfrom`, `recvmsg`, `write`, `writev`, `sendto`, `sendmsg` and
//! `sendfile` are captured; the syscall exits also follow `accept`, `accept4`, `connect` and
//! `close` (see `agent-ebpf/src/http.rs`). A thread of its own drains the per-CPU ring buffers
//! (`HTTP_EVENTS_<n>`) in timestamp order ([`Rings`]), decodes each connection
//! ([`decode`]), names routes ([`route`]) and records
//! - `http_server_request_duration_seconds{http_request_method,http_response_status_code,
//!   http_route,server_port,process_name}`: first request byte read → last response byte
//!   written;
//! - `http_client_request_duration_seconds{http_request_method,http_response_status_code,
//!   server_address,server_port,process_name}`: first request byte written → last response
//!   byte read;
//! - `hostlens_probe_events_lost_total{probe="http"}`, `hostlens_series_dropped_total{family}`,
//!   `hostlens_http_decode_errors_total{reason}`, `hostlens_http_records_total`,
//!   `hostlens_http_connections`.
//!
//! With the syscall-exit hooks only connections accepted or connected while the probe runs
//! are seen (the socket hooks also pick up older ones at their next request); a response whose
//! end is not framed (no Content-Length, not chunked, or framing lost in uncopied bytes) ends at
//! its last byte seen before the next request or the close.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_common::http::{
    BATCH_MAX, CONNS_MAP, ConnInfo, DIR_IN, EV_ACCEPT, EV_CLOSE, EV_CONNECT, EV_DATA, EV_SERVER,
    EVENTS_MAPS, EventHeader, FILTER_EXCLUDE, FILTER_INCLUDE, FILTER_NONE, FLUSH_PROGRAM,
    HEADER_BYTES, LOST_MAP, MAX_CAPTURE, MAX_PORTS, MAX_SKIPPED, PORT_EXCLUDE, PORT_INCLUDE,
    PORTS_MAP, RDONLY_CAST_PLACEHOLDER, RINGS, ROLE_CLIENT, SKIP_GEN_MAP, SKIP_MAP,
};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
};
use serde::Deserialize;

use super::{ProbeCollector, ProbeError, kbtf};
use crate::emit::{Kind, Out};

pub mod decode;
pub mod procname;
pub mod rings;
pub mod route;
pub mod series;

use decode::{Anomaly, Conn, Dir, Output, Role, Target};
use rings::{Flush, Rings};
use series::{Series, Slot};

/// Hash map with a fast, seeded hasher for the per-event lookups of the drain task.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// OpenTelemetry's default buckets for `http.*.request.duration` (seconds).
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

pub const SERVER_FAMILY: &str = "http_server_request_duration_seconds";
pub const CLIENT_FAMILY: &str = "http_client_request_duration_seconds";

/// `http.hook`: which kernel hook runs the capture program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpHook {
    /// The first the kernel takes of `sock`, `tp_btf`, `tracepoint`, `raw_tracepoint`.
    #[default]
    Auto,
    /// `tp_btf/sock_send_length`, `sock_recv_length` and `inet_sock_set_state` (Linux 6.4+):
    /// the program runs only on socket I/O, and per-socket state lives in socket-local
    /// storage (no hash lookup, freed with the socket).
    Sock,
    /// `tp_btf/sys_exit`: every syscall's exit, arguments read with plain loads.
    TpBtf,
    /// The thirteen `syscalls:sys_exit_*` tracepoints: only the traced syscalls, but each
    /// event goes through perf's tracepoint path, and the registers are found with the
    /// `bpf_task_pt_regs` helper (5.15+).
    Tracepoint,
    /// `raw_tracepoint/sys_exit`: every syscall's exit, registers read with a helper (kernels
    /// without BTF).
    RawTracepoint,
}

/// `http:` section of the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Kernel hook of the capture program.
    pub hook: HttpHook,
    /// Bytes of each read/write copied from the kernel (64..=4096): enough for the heads.
    pub capture_bytes: u32,
    /// Process names (`/proc/<pid>/comm`) to trace; empty = every process.
    pub include_processes: Vec<String>,
    pub exclude_processes: Vec<String>,
    /// Ports to trace (server: the listening port; client: the peer's port); empty = all.
    pub include_ports: Vec<u16>,
    pub exclude_ports: Vec<u16>,
    /// Route templates, `{name}` matching one path segment, e.g. `/api/v1/users/{id}`.
    pub route_templates: Vec<String>,
    /// Distinct values one path segment position may take before it collapses to `*`.
    pub route_segment_max_values: usize,
    /// Series per family; observations for further series are dropped and counted.
    pub max_series_per_family: usize,
    /// Distinct `process_name` values; further names are reported as `other`.
    pub max_process_names: usize,
    /// Seconds after the last process of a name exited before its series are removed.
    pub process_grace_period_seconds: u64,
    /// Connections followed at once, in the kernel (LRU) and in the decoder; the least
    /// recently active one is dropped beyond this.
    pub max_connections: usize,
    /// Size of the kernel-to-agent ring buffers together (one per CPU, up to eight): a power
    /// of two, 64 KiB ..= 256 MiB.
    pub ring_buffer_bytes: u32,
    /// Seconds without traffic after which a connection's unfinished exchanges are given up
    /// and its buffers freed ([`decode::Conn::expire`]); the connection keeps its labels.
    pub connection_idle_timeout_seconds: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            hook: HttpHook::Auto,
            capture_bytes: 1024,
            include_processes: Vec::new(),
            exclude_processes: Vec::new(),
            include_ports: Vec::new(),
            exclude_ports: Vec::new(),
            route_templates: Vec::new(),
            route_segment_max_values: 50,
            max_series_per_family: 2000,
            max_process_names: 50,
            process_grace_period_seconds: 300,
            max_connections: 16384,
            ring_buffer_bytes: DEFAULT_RING_BYTES,
            connection_idle_timeout_seconds: 300,
        }
    }
}

impl HttpConfig {
    /// Checks values serde cannot; the error names the key (below `http.`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !(64..=MAX_CAPTURE as u32).contains(&self.capture_bytes) {
            return Err((
                "http.capture_bytes".into(),
                format!("{} is outside 64..={MAX_CAPTURE}", self.capture_bytes),
            ));
        }
        if !self.ring_buffer_bytes.is_power_of_two()
            || !(64 << 10..=256 << 20).contains(&self.ring_buffer_bytes)
        {
            return Err((
                "http.ring_buffer_bytes".into(),
                format!(
                    "{} is not a power of two between 65536 and 268435456",
                    self.ring_buffer_bytes
                ),
            ));
        }
        if self.max_connections > MAX_KERNEL_CONNS {
            return Err((
                "http.max_connections".into(),
                format!("{} is above {MAX_KERNEL_CONNS}", self.max_connections),
            ));
        }
        for (i, t) in self.route_templates.iter().enumerate() {
            if !t.starts_with('/') {
                return Err((
                    format!("http.route_templates[{i}]"),
                    format!("{t:?} must start with '/'"),
                ));
            }
        }
        for (key, v) in [
            (
                "http.route_segment_max_values",
                self.route_segment_max_values,
            ),
            ("http.max_series_per_family", self.max_series_per_family),
            ("http.max_connections", self.max_connections),
            ("http.max_process_names", self.max_process_names),
        ] {
            if v == 0 {
                return Err((key.into(), "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

/// 4 MiB: at ~30k requests/s with both sides traced (four records of ~300 bytes each per
/// request) it holds about 110 ms of events; a quarter of a CPU's ring wakes the agent. A
/// single 2 MiB ring lost events in one of ten rounds of the wrk benchmark on this (shared,
/// 2-core) machine.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;
/// Largest kernel connection table accepted (about 100 bytes per entry).
const MAX_KERNEL_CONNS: usize = 1 << 20;
/// Heap bytes the decoder's connections may buffer together (partial heads, long targets of
/// waiting requests): 64 MiB, whatever `max_connections` is.
pub const DECODER_HEAP_BUDGET: usize = 64 << 20;

/// Kernel map sizes from the configuration: the ring buffers and the followed-connection LRU
/// of the syscall-exit hooks (one entry when the socket hooks will be used: the kernel BTF
/// has their tracepoint).
pub fn max_entries(ctx: &super::ProbeContext) -> Vec<(&'static str, u32)> {
    let c = settings().http;
    let conns = if sized_for_sock(c.hook, ctx) {
        1
    } else {
        c.max_connections.min(MAX_KERNEL_CONNS) as u32
    };
    let (used, bytes) = ring_sizes(c.ring_buffer_bytes, possible_cpus());
    let mut v: Vec<(&'static str, u32)> = EVENTS_MAPS
        .iter()
        .enumerate()
        .map(|(i, name)| (*name, if i < used { bytes } else { UNUSED_RING_BYTES }))
        .collect();
    v.push((CONNS_MAP, conns));
    v
}

/// Size of a ring no CPU writes (the kernel's smallest: one page).
const UNUSED_RING_BYTES: u32 = 4096;
/// Smallest ring a CPU writes.
const MIN_RING_BYTES: u32 = 16 << 10;

/// Number of CPUs the kernel may run programs on (`/sys/devices/system/cpu/possible`).
fn possible_cpus() -> usize {
    aya::util::nr_cpus().unwrap_or(64).max(1)
}

/// How many rings the CPUs write (CPU `c` writes ring `c % RINGS`) and the size of each:
/// `total` shared between them, rounded down to a power of two, but at least
/// [`MIN_RING_BYTES`] (so a small total on many CPUs is exceeded: 64 KiB on 8 CPUs gives
/// 8 × 16 KiB).
fn ring_sizes(total: u32, cpus: usize) -> (usize, u32) {
    let used = cpus.clamp(1, RINGS);
    let share = total / used as u32;
    let pow2 = if share.is_power_of_two() {
        share
    } else {
        share.next_power_of_two() / 2
    };
    (used, pow2.max(MIN_RING_BYTES))
}

/// Whether [`max_entries`] gave the syscall-exit hooks' table one entry, expecting the
/// socket hooks to attach.
fn sized_for_sock(hook: HttpHook, ctx: &super::ProbeContext) -> bool {
    matches!(hook, HttpHook::Auto | HttpHook::Sock)
        && sock_hooks_exist(ctx)
        && !SOCK_REFUSED.load(Ordering::Relaxed)
}

/// Set when `auto` found the socket hooks refused: the object is then loaded again with the
/// syscall-exit hooks' table sized from `http.max_connections`, and `auto` skips them.
static SOCK_REFUSED: AtomicBool = AtomicBool::new(false);

/// Set when the kernel refused the socket hooks with the user registers read through the
/// kfunc `bpf_rdonly_cast`: the object is loaded again with `bpf_task_pt_regs` alone.
static KFUNC_REFUSED: AtomicBool = AtomicBool::new(false);

/// The kernel BTF facts for reading the user registers through `bpf_rdonly_cast`, found once;
/// None (with the reason logged) when the kernel's BTF lacks them.
fn regs_layout() -> Option<kbtf::RegsLayout> {
    static LAYOUT: OnceLock<Option<kbtf::RegsLayout>> = OnceLock::new();
    *LAYOUT.get_or_init(|| {
        let found = std::fs::read("/sys/kernel/btf/vmlinux")
            .map_err(|e| format!("reading /sys/kernel/btf/vmlinux: {e}"))
            .and_then(|d| kbtf::regs_layout(&d).map_err(|e| format!("/sys/kernel/btf/vmlinux: {e}")));
        found
            .inspect_err(|e| {
                tracing::info!(reason = %e, "http probe: user registers read with bpf_task_pt_regs");
            })
            .ok()
    })
}

/// The BTF facts when the socket hooks read the user registers through `bpf_rdonly_cast` with
/// `http.hook` set to `hook` (the kernel has not refused the kfunc); None otherwise.
fn kfunc_regs(hook: HttpHook) -> Option<kbtf::RegsLayout> {
    if matches!(hook, HttpHook::Auto | HttpHook::Sock) && !KFUNC_REFUSED.load(Ordering::Relaxed) {
        regs_layout()
    } else {
        None
    }
}

/// Whether the kernel has the `sock_send_length` tracepoint (its BTF names the tracepoint's
/// function type `btf_trace_sock_send_length`).
fn sock_hooks_exist(ctx: &super::ProbeContext) -> bool {
    ctx.btf.is_some_and(|b| {
        b.id_by_type_name_kind("btf_trace_sock_send_length", aya_obj::btf::BtfKind::Typedef)
            .is_ok()
    })
}

/// What the probe needs from the agent's configuration, set before the probes load.
#[derive(Debug, Clone)]
struct Settings {
    http: HttpConfig,
    procfs: PathBuf,
}

static SETTINGS: Mutex<Option<Settings>> = Mutex::new(None);

/// Hands the configuration to the probe (called by `app.rs` before [`super::Probes::load`]).
pub fn configure(http: HttpConfig, procfs: PathBuf) {
    *SETTINGS.lock().unwrap_or_else(|e| e.into_inner()) = Some(Settings { http, procfs });
}

fn settings() -> Settings {
    SETTINGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| Settings {
            http: HttpConfig::default(),
            procfs: PathBuf::from("/proc"),
        })
}

/// Values for the kernel globals (`agent_common::http::GLOBAL_*`).
#[derive(Debug, Clone, Copy)]
pub struct LoaderGlobals {
    /// The agent's own tgid, never traced.
    pub self_tgid: u32,
    pub capture: u32,
    /// Fill level of a ring that wakes the agent: a quarter of the ring.
    pub wake_bytes: u32,
    /// Bytes one CPU writes between two fill-level checks: a sixteenth of the wake level
    /// shared by the CPUs writing one ring (at least one page).
    pub check_bytes: u32,
    /// Bytes a CPU gathers before writing them to its ring: [`BATCH_MAX`], or 0 (every record
    /// at once) where the agent cannot run the flush on a given CPU (kernels before 5.10, or
    /// the flush refused).
    pub batch_bytes: u32,
    /// How the kernel filters by port (`agent_common::http::FILTER_*`, [`port_marks`]).
    pub port_filter: u32,
    /// For the socket hooks' read of the user registers through `bpf_rdonly_cast`
    /// (`agent_common::http::GLOBAL_TASK_STACK`), or None.
    pub regs: Option<kbtf::RegsLayout>,
    /// The kernel globals from `regs` (0 without).
    pub task_stack: u32,
    pub pt_regs_type: u32,
}

pub fn loader_globals() -> LoaderGlobals {
    let c = settings().http;
    let cpus = possible_cpus();
    let (used, ring_bytes) = ring_sizes(c.ring_buffer_bytes, cpus);
    let wake_bytes = ring_bytes / 4;
    // CPUs writing one ring (more than one beyond RINGS CPUs).
    let sharing = cpus.div_ceil(used).max(1) as u32;
    let regs = kfunc_regs(c.hook);
    LoaderGlobals {
        self_tgid: std::process::id(),
        capture: c.capture_bytes,
        wake_bytes,
        check_bytes: (wake_bytes / 16 / sharing).max(4096),
        batch_bytes: if batches() { BATCH_MAX as u32 } else { 0 },
        port_filter: port_marks(&c).map_or(FILTER_NONE, |(f, _)| f),
        regs,
        task_stack: regs.map_or(0, |r| r.task_stack),
        pt_regs_type: regs.map_or(0, |r| r.pt_regs),
    }
}

/// The `http` object's bytes as loaded with globals `g`: with the kfunc read of the user
/// registers, each placeholder call rewritten into a call of `bpf_rdonly_cast` (with
/// `HOSTLENS_FORCE=http_kfunc_refused`, of a type that is no function, which the kernel
/// refuses: the fallback's test).
pub fn object_bytes(bytes: &'static [u8], g: &LoaderGlobals) -> std::borrow::Cow<'static, [u8]> {
    let Some(regs) = g.regs else {
        return bytes.into();
    };
    let func = if crate::faults::forced("http_kfunc_refused") {
        regs.pt_regs
    } else {
        regs.rdonly_cast
    };
    let mut patched = bytes.to_vec();
    let n = kbtf::patch_kfunc_calls(&mut patched, RDONLY_CAST_PLACEHOLDER, func);
    tracing::debug!(calls = n, "http probe: bpf_rdonly_cast calls linked");
    patched.into()
}

/// The kernel's port filter for `cfg` (socket hooks): the filter mode and each named port's
/// mark (an excluded port stays excluded when also included, as in the decoder's filter).
/// None when there is nothing to filter or the lists do not fit [`MAX_PORTS`] (the decoder
/// then filters alone).
fn port_marks(cfg: &HttpConfig) -> Option<(u32, BTreeMap<u16, u8>)> {
    let mut marks = BTreeMap::new();
    for p in &cfg.include_ports {
        marks.insert(*p, PORT_INCLUDE);
    }
    for p in &cfg.exclude_ports {
        marks.insert(*p, PORT_EXCLUDE);
    }
    if marks.is_empty() || marks.len() > MAX_PORTS as usize {
        return None;
    }
    let filter = if cfg.include_ports.is_empty() {
        FILTER_EXCLUDE
    } else {
        FILTER_INCLUDE
    };
    Some((filter, marks))
}

/// Writes the port lists to the kernel's table before the programs attach: connections the
/// configuration filters out by port are then never copied.
fn write_port_marks(ebpf: &mut Ebpf, cfg: &HttpConfig) -> Result<(), ProbeError> {
    let Some((_, marks)) = port_marks(cfg) else {
        return Ok(());
    };
    let map = ebpf
        .map_mut(PORTS_MAP)
        .ok_or(ProbeError::MissingMap(PORTS_MAP))?;
    let mut ports: BpfHashMap<&mut MapData, u16, u8> =
        BpfHashMap::try_from(map).map_err(super::map_err(PORTS_MAP))?;
    for (port, mark) in marks {
        ports
            .insert(port, mark, 0)
            .map_err(super::map_err(PORTS_MAP))?;
    }
    Ok(())
}

/// The programs, best first: the socket tracepoints (three programs), `tp_btf/sys_exit`, the
/// per-syscall exit tracepoints, and `raw_tracepoint/sys_exit`.
const SOCK_PROGRAMS: [(&str, &str); 3] = [
    ("http_sock_send", "sock_send_length"),
    ("http_sock_recv", "sock_recv_length"),
    ("http_sock_state", "inet_sock_set_state"),
];
const PROGRAM_BTF: &str = "http_sys_exit_btf";
const PROGRAM_TP: &str = "http_sys_exit_tp";
const PROGRAM_RAW: &str = "http_sys_exit";

/// The `syscalls` exit events the tracepoint program runs on (`agent-ebpf/src/http.rs`).
const EXIT_EVENTS: [&str; 13] = [
    "sys_exit_read",
    "sys_exit_readv",
    "sys_exit_recvfrom",
    "sys_exit_recvmsg",
    "sys_exit_write",
    "sys_exit_writev",
    "sys_exit_sendto",
    "sys_exit_sendmsg",
    "sys_exit_sendfile64",
    "sys_exit_accept",
    "sys_exit_accept4",
    "sys_exit_connect",
    "sys_exit_close",
];

/// The socket tracepoint programs, all or none.
fn attach_sock(ebpf: &mut Ebpf, ctx: &super::ProbeContext) -> Result<(), ProbeError> {
    for (i, (name, tp)) in SOCK_PROGRAMS.iter().enumerate() {
        if let Err(e) = super::attach_btf_tracepoint(ebpf, ctx, name, tp) {
            for (done, _) in &SOCK_PROGRAMS[..i] {
                if let Ok(p) = super::program_of::<aya::programs::BtfTracePoint>(ebpf, done) {
                    let _ = p.unload();
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Attaches the programs of `hook`, or with `auto` the first hook the kernel takes. Returns
/// the hook attached.
fn attach_hook(
    ebpf: &mut Ebpf,
    ctx: &super::ProbeContext,
    hook: HttpHook,
) -> Result<&'static str, ProbeError> {
    let wanted = |h: HttpHook| hook == HttpHook::Auto || hook == h;
    let mut last = None;
    if wanted(HttpHook::Sock) && !SOCK_REFUSED.load(Ordering::Relaxed) {
        match attach_sock(ebpf, ctx) {
            Ok(()) => return Ok(SOCK_HOOK),
            Err(e) => {
                if kfunc_regs(hook).is_some() {
                    // Maybe the kfunc read of the user registers alone: without it, once more.
                    KFUNC_REFUSED.store(true, Ordering::Relaxed);
                    return Err(ProbeError::Reload(format!(
                        "the socket tracepoints were refused with the kfunc bpf_rdonly_cast \
                         ({}); trying bpf_task_pt_regs",
                        super::error_chain(&e)
                    )));
                }
                tracing::warn!(error = %e, "http probe: socket tracepoints unavailable");
                if hook == HttpHook::Auto && sized_for_sock(hook, ctx) {
                    // The syscall-exit hooks' table was sized for the socket hooks (one
                    // entry): the fallbacks need the object loaded again with its full size.
                    SOCK_REFUSED.store(true, Ordering::Relaxed);
                    return Err(ProbeError::Reload(format!(
                        "the socket tracepoints were refused ({}) and the fallback's connection \
                         table was sized for them",
                        super::error_chain(&e)
                    )));
                }
                last = Some(e);
            }
        }
    }
    if wanted(HttpHook::TpBtf) {
        match super::attach_btf_tracepoint(ebpf, ctx, PROGRAM_BTF, "sys_exit") {
            Ok(()) => return Ok("tp_btf/sys_exit"),
            Err(e) => {
                tracing::warn!(error = %e, "http probe: tp_btf/sys_exit unavailable");
                last = Some(e);
            }
        }
    }
    if wanted(HttpHook::Tracepoint) {
        match super::attach_tracepoints(ebpf, PROGRAM_TP, "syscalls", &EXIT_EVENTS) {
            Ok(()) => return Ok("tracepoint/syscalls/sys_exit_*"),
            Err(e) => {
                tracing::warn!(error = %e, "http probe: syscall exit tracepoints unavailable");
                last = Some(e);
            }
        }
    }
    if wanted(HttpHook::RawTracepoint) {
        return super::attach_raw_tracepoint(ebpf, PROGRAM_RAW, "sys_exit")
            .map(|()| "raw_tracepoint/sys_exit");
    }
    Err(last.unwrap_or(ProbeError::MissingProgram(PROGRAM_RAW)))
}

pub fn attach(
    ebpf: &mut Ebpf,
    ctx: &super::ProbeContext,
) -> Result<Box<dyn ProbeCollector>, ProbeError> {
    let settings = settings();
    write_port_marks(ebpf, &settings.http)?;
    let hook = attach_hook(ebpf, ctx, settings.http.hook)?;
    let (used, ring_bytes) = ring_sizes(settings.http.ring_buffer_bytes, possible_cpus());
    let user_regs = if hook == SOCK_HOOK && kfunc_regs(settings.http.hook).is_some() {
        "bpf_rdonly_cast"
    } else {
        "bpf_task_pt_regs"
    };
    tracing::info!(
        hook,
        user_regs,
        rings = used,
        ring_bytes,
        "http probe: capture program attached"
    );
    let flush = if batches() {
        Some(flush_program(ebpf)?)
    } else {
        None
    };
    let rings = Rings::new(
        EVENTS_MAPS[..used]
            .iter()
            .map(|name| super::take_map(ebpf, name))
            .collect::<Result<Vec<RingBuf<MapData>>, ProbeError>>()?,
        if crate::faults::forced("http_shared_rings") {
            usize::MAX
        } else {
            possible_cpus()
        },
        used * ring_bytes as usize,
        flush,
    )
    .map_err(|e| ProbeError::Load(format!("http probe: polling the ring buffers: {e}")))?;
    let lost = super::take_map(ebpf, LOST_MAP)?;
    let kernel = if hook == SOCK_HOOK {
        Kernel::Skip(SkipTable {
            table: super::take_map(ebpf, SKIP_MAP)?,
            gen_map: super::take_map(ebpf, SKIP_GEN_MAP)?,
            generation: 0,
        })
    } else {
        Kernel::Conns(super::take_map(ebpf, CONNS_MAP)?)
    };
    let shared = Arc::new(Mutex::new(Store::new(&settings.http)));
    let decoder = Decoder::new(settings, Arc::clone(&shared), kernel);
    // Probes attach before the async runtime exists (main.rs drops capabilities while the
    // process has one thread); the drain task starts in `start_pending`.
    *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = Some((rings, decoder));
    Ok(Box::new(HttpProbe { lost, shared }))
}

/// Loads the kernel's `http_flush` (never attached) and checks that it runs on a CPU. When
/// it cannot, the object is loaded again without batches (every record its own ring record).
fn flush_program(ebpf: &mut Ebpf) -> Result<Flush, ProbeError> {
    flush_program_once(ebpf).map_err(|e| {
        FLUSH_REFUSED.store(true, Ordering::Relaxed);
        ProbeError::Reload(format!(
            "the per-CPU batches cannot be written out ({}); records go to the rings one by one",
            super::error_chain(&e)
        ))
    })
}

fn flush_program_once(ebpf: &mut Ebpf) -> Result<Flush, ProbeError> {
    use std::os::fd::AsFd as _;
    let program: &mut aya::programs::RawTracePoint = super::program_of(ebpf, FLUSH_PROGRAM)?;
    program.load().map_err(super::prog_err(FLUSH_PROGRAM))?;
    super::refused_for_test(FLUSH_PROGRAM)?;
    let fd = program
        .fd()
        .map_err(super::prog_err(FLUSH_PROGRAM))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| ProbeError::Load(format!("{FLUSH_PROGRAM}: {e}")))?;
    let flush = Flush::new(fd);
    flush.run_on(0).map_err(|e| {
        ProbeError::Load(format!(
            "running {FLUSH_PROGRAM} on CPU 0 (BPF_PROG_TEST_RUN): {e}"
        ))
    })?;
    Ok(flush)
}

/// Set when the batch flush could not run: the object is then loaded with batches off.
static FLUSH_REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether CPUs gather records in batches: the agent can run the flush on a given CPU
/// (Linux 5.10+) and it was not refused.
fn batches() -> bool {
    crate::caps::kernel_version() >= (5, 10) && !FLUSH_REFUSED.load(Ordering::Relaxed)
}

/// The socket hooks, as logged and on the status page.
const SOCK_HOOK: &str = "tp_btf/sock_send_length, sock_recv_length, inet_sock_set_state";

/// The attached probe's ring buffers and decoder, until the drain thread takes them.
static PENDING: Mutex<Option<(Rings, Decoder)>> = Mutex::new(None);

/// Starts draining the ring buffers of an attached probe, on a thread of its own; call after
/// [`super::Probes::load`] once the process may have threads (main.rs drops capabilities
/// while it has one). Does nothing when the probe is not attached.
pub fn start_pending() -> Result<(), String> {
    let Some((rings, decoder)) = PENDING.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Ok(());
    };
    std::thread::Builder::new()
        .name("hostlens-http".into())
        .spawn(move || drain(rings, decoder))
        .map_err(|e| format!("http probe: starting the drain thread: {e}"))?;
    Ok(())
}

/// Records younger than this (at the flush before a drain) wait for the next drain: a
/// record's timestamp is taken just before it is appended, so one CPU's older record may
/// still be on its way while another CPU's newer one is read. Holding the last moments back
/// keeps each connection's records in order across CPUs.
const HOLD_BACK_NS: u64 = 2_000_000;

/// Drain period when the kernel does not wake the agent (it does when a ring is a quarter
/// full). Every wake-up has a fixed cost (two context switches, cold caches: ~100 µs here), so
/// the agent wakes rarely and takes many records at once; metrics are scraped every few
/// seconds, so 100 ms of delay is not seen.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// Records handled per lock of the shared store, and between two yields of the drain thread:
/// a wake-up may find tens of thousands, and handling them in one go keeps an application
/// thread sharing the CPU off it for milliseconds (wrk's p99 against nginx: 1.45x with 4096
/// per batch, 1.21x with 512; 1.22x with the old 10 ms timer).
const BATCH: usize = 512;

/// Records taken from the rings and handed to the decoder (`hostlens_http_records_total`).
static RECORDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records of ring batches that did not parse (added to the lost count).
static MALFORMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether [`drain`] is running: scrapes report `hostlens_probe_scrape_success{probe="http"}`
/// 0 once it has stopped (its series would no longer move).
static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Clears [`DRAINING`] however [`drain`] ends, a panic included.
struct Draining;

impl Draining {
    fn start() -> Draining {
        DRAINING.store(true, std::sync::atomic::Ordering::Relaxed);
        Draining
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        DRAINING.store(false, std::sync::atomic::Ordering::Relaxed);
        // The runtime drops the task at shutdown, after the programs are detached: not news.
        if !STOPPING.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::error!("http probe: the ring buffer is no longer drained; its metrics stop");
        }
    }
}

/// Set once the agent is shutting down (see [`stopping`]).
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The agent is shutting down: the drain task ending from now on is expected.
pub fn stopping() {
    STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Handles up to [`BATCH`] records of the rings, oldest first; returns how many. A panic in
/// the decoder (a bug met by some input) costs the connections' state, not the drain: it is
/// logged, the decoder forgets every connection, and draining goes on.
fn drain_batch(decoder: &mut Decoder, rings: &mut Rings, horizon: u64) -> usize {
    let mut n = 0usize;
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decoder.batch(|handle| {
            rings.merge(horizon, BATCH, |rec| {
                handle(rec);
                n += 1;
                if n == 1 {
                    crate::faults::panic_once_at("http_drain", "");
                }
            });
        });
    }));
    if run.is_err() {
        tracing::error!(
            records = n,
            "http probe: the decoder panicked; every connection's state is dropped"
        );
        decoder.forget_connections();
    }
    RECORDS.fetch_add(n as u64, Ordering::Relaxed);
    n
}

/// Drains in a row that keep the horizon back while a CPU's batch stays in use (about a
/// second at one drain per [`DRAIN_EVERY`]); then it moves on, and that CPU's older records
/// come after younger ones of other CPUs.
const STUCK_DRAINS: u32 = 10;

/// How far a drain hands records out.
#[derive(Debug, Default)]
struct Horizon {
    /// The horizon of the last drain that found every CPU's batch written out.
    last: u64,
    /// Drains since then.
    stuck: u32,
}

impl Horizon {
    /// The horizon for a drain at `now` (hold-back applied): `now` when every CPU's batch was
    /// written out (`flushed`); otherwise the last such horizon, since the batch still in use
    /// may hold any record younger than that, for up to [`STUCK_DRAINS`] drains in a row.
    fn next(&mut self, now: u64, flushed: bool) -> u64 {
        if flushed || self.stuck >= STUCK_DRAINS {
            if !flushed {
                tracing::debug!(
                    "http probe: a CPU's batch stayed in use; records may be reordered"
                );
            }
            self.last = now;
            self.stuck = 0;
        } else {
            self.stuck += 1;
        }
        self.last
    }
}

/// Reads the ring buffers until the agent stops or polling fails; sweeps idle state on a
/// timer. Runs on its own thread: a wake-up is one return from `epoll_wait`, not a runtime's
/// timer, task and worker hand-offs.
fn drain(mut rings: Rings, mut decoder: Decoder) {
    let _running = Draining::start();
    let sweep_every = decoder.sweep_every();
    let mut next_sweep = Instant::now() + sweep_every;
    let mut horizon = Horizon::default();
    while !STOPPING.load(std::sync::atomic::Ordering::Relaxed) {
        let wait = DRAIN_EVERY.min(next_sweep.saturating_duration_since(Instant::now()));
        // Wake-ups are taken before the rings are read: one coming later is seen.
        if let Err(e) = rings.wait(wait) {
            tracing::warn!(error = %e, "http probe: ring buffer poll failed; stopped");
            return;
        }
        // Every record older than the horizon is in a ring once the CPUs' batches are out.
        let now = crate::clock::monotonic_ns().saturating_sub(HOLD_BACK_NS);
        let horizon = horizon.next(now, rings.flush());
        while drain_batch(&mut decoder, &mut rings, horizon) == BATCH {
            // More waiting: let scrapes take the lock, and threads sharing the CPU run.
            std::thread::yield_now();
        }
        decoder.caught_up_ns = rings.reached();
        MALFORMED.store(rings.malformed(), Ordering::Relaxed);
        if Instant::now() >= next_sweep {
            decoder.sweep();
            next_sweep = Instant::now() + sweep_every;
        }
    }
}

/// Label values of one server series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    method: &'static str,
    status: u16,
    route: Arc<str>,
    port: u16,
    process: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    method: &'static str,
    status: u16,
    address: Arc<str>,
    port: u16,
    process: Arc<str>,
}

/// The metric state shared between the drain task and scrapes.
#[derive(Debug)]
struct Store {
    server: Series<ServerKey>,
    client: Series<ClientKey>,
    anomalies: HashMap<Anomaly, u64>,
    connections: usize,
}

impl Store {
    fn new(cfg: &HttpConfig) -> Self {
        Store {
            server: Series::new(cfg.max_series_per_family),
            client: Series::new(cfg.max_series_per_family),
            anomalies: HashMap::new(),
            connections: 0,
        }
    }

    /// Removes the series of process names whose processes are all gone.
    fn forget_processes(&mut self, names: &[String]) {
        self.server
            .retain(|k| !names.iter().any(|n| **n == *k.process));
        self.client
            .retain(|k| !names.iter().any(|n| **n == *k.process));
    }
}

/// A connection being decoded, with its labels resolved at its start.
#[derive(Debug)]
struct Tracked {
    conn: Conn,
    /// None: filtered out by the configuration.
    labels: Option<Arc<ConnLabels>>,
    /// Kernel timestamp (`CLOCK_MONOTONIC`) of its last record: idle expiry and the eviction
    /// order.
    last_ns: u64,
    /// The series of its last exchange.
    last: Option<LastSeries>,
    /// `conn.heap_bytes()` as last counted in [`Decoder::heap`].
    heap: usize,
}

impl Tracked {
    fn new(role: Role, labels: Option<Arc<ConnLabels>>, ts_ns: u64) -> Self {
        Tracked {
            conn: Conn::new(role),
            labels,
            last_ns: ts_ns,
            last: None,
            heap: 0,
        }
    }
}

/// What a connection's last exchange was observed under: the next exchange with the same
/// method, status and target (server side) goes to the same slot, with no label hashing.
#[derive(Debug)]
struct LastSeries {
    method: &'static str,
    status: u16,
    target: Target,
    /// The router's generation the route was found under (server side).
    routes: u64,
    slot: Slot,
}

#[derive(Debug, Clone)]
struct ConnLabels {
    process: Arc<str>,
    address: Arc<str>,
    port: u16,
}

#[derive(Debug)]
struct ProcInfo {
    name: String,
    /// When a sweep first found the process gone (kernel monotonic ns): it is forgotten, with
    /// its connections, only once every record older than that has been handled, so records
    /// still queued behind its exit are decoded under its connections and name.
    gone_at: Option<u64>,
}

/// Decoder state owned by the drain task.
struct Decoder {
    cfg: HttpConfig,
    procfs: PathBuf,
    shared: Arc<Mutex<Store>>,
    conns: FastMap<(u32, u64), Tracked>,
    procs: HashMap<u32, ProcInfo>,
    listen_ports: HashMap<(u32, u32), Option<u16>>,
    /// Process name -> last time a process of that name was alive.
    names_alive: HashMap<String, Instant>,
    router: route::Router,
    names: procname::ProcNames,
    /// Where the kernel learns of filtered-out connections, so their bytes stay in the kernel.
    kernel: Kernel,
    /// Processes in the kernel's skip table (socket hooks), with the name they were filtered
    /// out under.
    skipped: HashMap<u32, String>,
    /// What the record being handled produced (kept to reuse its allocations).
    out: Output,
    /// Heap bytes all connections buffer (the sum of their `heap`), kept under
    /// `heap_budget`.
    heap: usize,
    /// [`DECODER_HEAP_BUDGET`] (smaller in tests).
    heap_budget: usize,
    /// Every record older than this (kernel monotonic ns) has been handled (set by the drain).
    caught_up_ns: u64,
}

/// What the decoder can tell the kernel about connections the configuration filters out.
enum Kernel {
    /// Unit tests: nothing.
    #[cfg(test)]
    None,
    /// Syscall-exit hooks: the table of followed `(tgid, fd)`; a filtered-out connection is
    /// removed from it.
    Conns(BpfHashMap<MapData, u64, ConnInfo>),
    /// Socket hooks: the processes whose connections the kernel marks as not HTTP (the agent
    /// cannot address socket storage).
    Skip(SkipTable),
}

/// The kernel's table of filtered-out processes (socket hooks) and its generation.
struct SkipTable {
    table: BpfHashMap<MapData, u32, u8>,
    gen_map: Array<MapData, u32>,
    generation: u32,
}

impl SkipTable {
    /// Puts process `tgid` in the table, then moves the generation on: the kernel looks the
    /// process of each HTTP connection up again at its next bytes, so a connection it opened
    /// before its first record reached the agent stops being copied (and ends with a close
    /// record). False when the table refused it (full).
    fn insert(&mut self, tgid: u32) -> bool {
        if self.table.insert(tgid, 1, 0).is_err() {
            return false;
        }
        self.generation = self.generation.wrapping_add(1);
        if let Err(e) = self.gen_map.set(0, self.generation, 0) {
            tracing::debug!(error = %e, "http probe: writing the skip table's generation");
        }
        true
    }

    fn remove(&mut self, tgid: &u32) {
        let _ = self.table.remove(tgid);
    }
}

impl Decoder {
    fn new(settings: Settings, shared: Arc<Mutex<Store>>, kernel: Kernel) -> Self {
        let cfg = settings.http;
        Decoder {
            router: route::Router::new(&cfg.route_templates, cfg.route_segment_max_values),
            names: procname::ProcNames::new(cfg.max_process_names),
            procfs: settings.procfs,
            shared,
            conns: FastMap::default(),
            procs: HashMap::new(),
            listen_ports: HashMap::new(),
            names_alive: HashMap::new(),
            kernel,
            skipped: HashMap::new(),
            out: Output::default(),
            heap: 0,
            heap_budget: DECODER_HEAP_BUDGET,
            caught_up_ns: 0,
            cfg,
        }
    }

    fn sweep_every(&self) -> Duration {
        Duration::from_secs((self.cfg.process_grace_period_seconds / 2).clamp(1, 5))
    }

    /// Handles every record `source` yields under one lock of the shared store.
    fn batch(&mut self, source: impl FnOnce(&mut dyn FnMut(&[u8]))) {
        let shared = Arc::clone(&self.shared);
        let mut store = shared.lock().unwrap_or_else(|e| e.into_inner());
        source(&mut |rec: &[u8]| self.record(rec, &mut store));
        store.connections = self.conns.len();
    }

    fn record(&mut self, rec: &[u8], store: &mut Store) {
        if rec.len() < HEADER_BYTES {
            return;
        }
        // SAFETY: `rec` holds at least HEADER_BYTES bytes; EventHeader is plain integers.
        let h: EventHeader = unsafe { std::ptr::read_unaligned(rec.as_ptr().cast()) };
        let payload = &rec[HEADER_BYTES..];
        let payload = &payload[..(h.captured as usize).min(payload.len())];
        let key = (h.tgid, h.conn_id);
        let role = if h.role == ROLE_CLIENT {
            Role::Client
        } else {
            Role::Server
        };
        match h.kind {
            EV_ACCEPT | EV_CONNECT | EV_SERVER => {
                // A connection id is new; one left over under the same key is replaced.
                self.make_room();
                let labels = self.labels_for(&h, payload);
                if labels.is_none() {
                    self.unfollow(&h);
                }
                if let Some(old) = self.conns.insert(key, Tracked::new(role, labels, h.ts_ns)) {
                    self.heap = self.heap.saturating_sub(old.heap);
                }
            }
            EV_DATA => {
                let dir = if h.direction == DIR_IN {
                    Dir::In
                } else {
                    Dir::Out
                };
                // One lookup on the common path.
                let Decoder {
                    conns,
                    router,
                    out,
                    heap,
                    heap_budget,
                    ..
                } = self;
                if let Some(t) = conns.get_mut(&key) {
                    feed_data(t, router, role, dir, &h, payload, out, store);
                    account((heap, *heap_budget), t, router, role, out, store);
                    return;
                }
                // The connection's start record was lost (ring buffer full): it is followed
                // from here, without its port.
                self.make_room();
                let labels = self.labels_for(&h, &[]);
                let Decoder {
                    conns,
                    router,
                    out,
                    heap,
                    heap_budget,
                    ..
                } = self;
                let t = conns
                    .entry(key)
                    .or_insert(Tracked::new(role, labels, h.ts_ns));
                feed_data(t, router, role, dir, &h, payload, out, store);
                account((heap, *heap_budget), t, router, role, out, store);
            }
            EV_CLOSE => {
                if let Some(mut t) = self.conns.remove(&key) {
                    self.heap = self.heap.saturating_sub(t.heap);
                    t.conn.close(&mut self.out);
                    report(&mut self.router, role, &mut t, &mut self.out, store);
                }
            }
            _ => {}
        }
    }

    /// Stops the kernel following a filtered-out connection (if the fd still is that one).
    fn unfollow(&mut self, h: &EventHeader) {
        let Kernel::Conns(kconns) = &mut self.kernel else {
            return;
        };
        let key = (u64::from(h.tgid) << 32) | u64::from(h.fd);
        if kconns.get(&key, 0).is_ok_and(|c| c.id == h.conn_id) {
            let _ = kconns.remove(&key);
        }
    }

    /// Labels of a new connection, or None when the configuration filters it out.
    fn labels_for(&mut self, h: &EventHeader, payload: &[u8]) -> Option<Arc<ConnLabels>> {
        let name = self.process_name(h);
        if !process_wanted(&self.cfg, &name) {
            if let Kernel::Skip(skip) = &mut self.kernel
                && !self.skipped.contains_key(&h.tgid)
                && self.skipped.len() < MAX_SKIPPED as usize
                && skip.insert(h.tgid)
            {
                self.skipped.insert(h.tgid, name);
            }
            return None;
        }
        let (address, port) = if h.kind == EV_CONNECT {
            parse_sockaddr(payload).map_or((String::new(), 0), |(a, p)| (a.to_string(), p))
        } else if h.kind == EV_SERVER {
            (String::new(), h.aux as u16)
        } else if h.kind == EV_ACCEPT {
            let port = *self
                .listen_ports
                .entry((h.tgid, h.aux))
                .or_insert_with(|| listen_port(&self.procfs, h.tgid, h.aux));
            (String::new(), port.unwrap_or(0))
        } else {
            // A data record of a connection whose start is not held (dropped from a full
            // table, or its start record lost): the socket hooks name the endpoint in it.
            data_endpoint(h).unwrap_or((String::new(), 0))
        };
        if (!self.cfg.include_ports.is_empty() && !self.cfg.include_ports.contains(&port))
            || self.cfg.exclude_ports.contains(&port)
        {
            return None;
        }
        self.names_alive.insert(name.clone(), Instant::now());
        Some(Arc::new(ConnLabels {
            process: Arc::from(self.names.label(&name)),
            address: Arc::from(address),
            port,
        }))
    }

    /// Takes processes off the kernel's skip table once they are gone or renamed (a reused
    /// tgid, an exec) to a name the filters keep.
    fn sweep_skipped(&mut self) {
        let Kernel::Skip(skip) = &mut self.kernel else {
            return;
        };
        let procfs = &self.procfs;
        let cfg = &self.cfg;
        self.skipped.retain(|tgid, name| {
            let now = std::fs::read_to_string(procfs.join(tgid.to_string()).join("comm"))
                .map(|s| s.trim_end().to_string());
            let keep = now.is_ok_and(|n| &n == name || !process_wanted(cfg, &n));
            if !keep {
                skip.remove(tgid);
            }
            keep
        });
    }

    /// `/proc/<tgid>/comm` (the process, not the thread), cached; the event's thread name when
    /// the process is already gone.
    fn process_name(&mut self, h: &EventHeader) -> String {
        if let Some(p) = self.procs.get(&h.tgid) {
            return p.name.clone();
        }
        let path = self.procfs.join(h.tgid.to_string()).join("comm");
        let name = std::fs::read_to_string(&path)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| {
                // Only start records carry the thread name (a data record may carry a peer
                // address in the same bytes).
                if h.kind == EV_DATA {
                    return String::new();
                }
                let end = h.comm.iter().position(|b| *b == 0).unwrap_or(h.comm.len());
                String::from_utf8_lossy(&h.comm[..end]).into_owned()
            });
        self.procs.insert(
            h.tgid,
            ProcInfo {
                name: name.clone(),
                gone_at: None,
            },
        );
        name
    }

    /// Drops every connection's decoding state (after a decoder panic: what it held may be
    /// inconsistent). Their waiting requests are not counted.
    fn forget_connections(&mut self) {
        self.conns.clear();
        self.heap = 0;
        self.out = Output::default();
    }

    /// Keeps the connection table within `max_connections`: when it is full, the least
    /// recently active 1/64 (at least one) are dropped at once, so a full table costs one
    /// pass per that many new connections, not one per connection.
    fn make_room(&mut self) {
        if self.conns.len() < self.cfg.max_connections {
            return;
        }
        let mut by_age: Vec<(u64, (u32, u64))> =
            self.conns.iter().map(|(k, t)| (t.last_ns, *k)).collect();
        let n = (by_age.len() / 64).max(1).min(by_age.len());
        if n < by_age.len() {
            by_age.select_nth_unstable(n - 1);
        }
        for (_, k) in &by_age[..n] {
            if let Some(t) = self.conns.remove(k) {
                self.heap = self.heap.saturating_sub(t.heap);
            }
        }
    }

    /// Gives up what idle connections left unfinished, forgets exited processes (and their
    /// connections) and, after the grace period, their series.
    ///
    /// An idle connection is kept, with its labels: a keep-alive connection may be silent for
    /// long, and the start of a connection (its port, its peer) is seen only once. Closed
    /// connections leave at their close, those of exited processes here, and the least
    /// recently active when `max_connections` are followed.
    fn sweep(&mut self) {
        self.sweep_skipped();
        let now = Instant::now();
        // Records carry CLOCK_MONOTONIC (bpf_ktime_get_ns).
        let now_ns = crate::clock::monotonic_ns();
        let idle_ns = self
            .cfg
            .connection_idle_timeout_seconds
            .saturating_mul(1_000_000_000);
        let shared = Arc::clone(&self.shared);
        let mut store = shared.lock().unwrap_or_else(|e| e.into_inner());
        let Decoder {
            conns, router, out, ..
        } = self;
        for t in conns.values_mut() {
            if now_ns.saturating_sub(t.last_ns) > idle_ns && t.conn.expire(out) {
                let role = t.conn.role();
                report(router, role, t, out, &mut store);
                t.heap = t.conn.heap_bytes();
            }
        }
        // One stat per known process; its connections and listeners go with it once the
        // records from before its exit are handled (the drain may be behind).
        let procfs = self.procfs.clone();
        let caught_up = self.caught_up_ns;
        self.procs.retain(|tgid, p| {
            if procfs.join(tgid.to_string()).exists() {
                p.gone_at = None;
                return true;
            }
            let gone_at = *p.gone_at.get_or_insert(now_ns);
            caught_up < gone_at
        });
        let procs = &self.procs;
        self.listen_ports
            .retain(|(tgid, _), _| procs.contains_key(tgid));
        self.conns.retain(|(tgid, _), _| procs.contains_key(tgid));
        // Recounted whole once per sweep: removals above and any drift are settled here.
        self.heap = self.conns.values().map(|t| t.heap).sum();
        for p in self.procs.values() {
            self.names_alive.insert(p.name.clone(), now);
        }
        let grace = Duration::from_secs(self.cfg.process_grace_period_seconds);
        let gone: Vec<String> = self
            .names_alive
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > grace)
            .map(|(n, _)| n.clone())
            .collect();
        if !gone.is_empty() {
            for n in &gone {
                self.names_alive.remove(n);
                self.names.forget(n);
            }
            store.forget_processes(&gone);
        }
        store.connections = self.conns.len();
    }
}

/// Feeds data record `h` (its captured bytes `payload`) to connection `t` and counts what it
/// produced; nothing for a connection the configuration filters out.
#[expect(
    clippy::too_many_arguments,
    reason = "the decoder's parts, borrowed apart"
)]
fn feed_data(
    t: &mut Tracked,
    router: &mut route::Router,
    role: Role,
    dir: Dir,
    h: &EventHeader,
    payload: &[u8],
    out: &mut Output,
    store: &mut Store,
) {
    t.last_ns = h.ts_ns;
    if t.labels.is_none() {
        return;
    }
    t.conn.feed(dir, h.ts_ns, payload, h.bytes, out);
    if !out.is_empty() {
        report(router, role, t, out, store);
    }
}

/// Brings connection `t`'s share of the decoder's heap (`total`) up to date after a feed; when
/// the total passes `budget`, the connection that grew sheds its buffers (its
/// waiting requests are abandoned and counted as `memory_budget`). So the total never stays
/// above the budget after a record.
fn account(
    (total, budget): (&mut usize, usize),
    t: &mut Tracked,
    router: &mut route::Router,
    role: Role,
    out: &mut Output,
    store: &mut Store,
) {
    recount(total, t);
    if *total > budget {
        t.conn.shed(out);
        report(router, role, t, out, store);
        recount(total, t);
    }
}

/// Replaces connection `t`'s last counted share of `total` with what it holds now.
fn recount(total: &mut usize, t: &mut Tracked) {
    let now = t.conn.heap_bytes();
    *total = total.saturating_sub(t.heap) + now;
    t.heap = now;
}

/// Counts what one record of connection `t` produced (`out`, left empty): its anomalies, and
/// each completed exchange in its series (none for a connection the configuration filters
/// out).
fn report(
    router: &mut route::Router,
    role: Role,
    t: &mut Tracked,
    out: &mut Output,
    s: &mut Store,
) {
    for a in out.anomalies.drain(..) {
        *s.anomalies.entry(a).or_default() += 1;
    }
    let Some(l) = t.labels.as_deref() else {
        out.exchanges.clear();
        return;
    };
    for e in out.exchanges.drain(..) {
        let secs = e.end_ns.saturating_sub(e.start_ns) as f64 / 1e9;
        // The same series as the connection's last exchange: straight to its slot.
        if let Some(last) = &t.last
            && last.method == e.method
            && last.status == e.status
            && match role {
                Role::Server => {
                    last.routes == router.generation()
                        && last.target == e.target
                        && s.server.observe_slot(last.slot, secs)
                }
                Role::Client => s.client.observe_slot(last.slot, secs),
            }
        {
            continue;
        }
        let slot = match role {
            Role::Server => s.server.observe(
                ServerKey {
                    method: e.method,
                    status: e.status,
                    route: router.route(&e.target),
                    port: l.port,
                    process: Arc::clone(&l.process),
                },
                secs,
            ),
            Role::Client => s.client.observe(
                ClientKey {
                    method: e.method,
                    status: e.status,
                    address: Arc::clone(&l.address),
                    port: l.port,
                    process: Arc::clone(&l.process),
                },
                secs,
            ),
        };
        t.last = slot.map(|slot| LastSeries {
            method: e.method,
            status: e.status,
            routes: router.generation(),
            target: e.target,
            slot,
        });
    }
}

/// Whether the process filters (`include_processes`, `exclude_processes`) keep `name`.
fn process_wanted(cfg: &HttpConfig, name: &String) -> bool {
    (cfg.include_processes.is_empty() || cfg.include_processes.contains(name))
        && !cfg.exclude_processes.contains(name)
}

/// Peer of a `connect`: `struct sockaddr_in` / `sockaddr_in6` (family in host order, port in
/// network order).
fn parse_sockaddr(b: &[u8]) -> Option<(IpAddr, u16)> {
    if b.len() < 8 {
        return None;
    }
    let family = u16::from_ne_bytes([b[0], b[1]]);
    let port = u16::from_be_bytes([b[2], b[3]]);
    match family {
        2 => Some((IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])), port)),
        10 if b.len() >= 24 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            let v6 = Ipv6Addr::from(a);
            Some((v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4), port))
        }
        _ => None,
    }
}

/// The endpoint a data record from the socket hooks names: the server side's local port, or
/// the client side's peer address and port. None from the syscall-exit hooks (no family).
fn data_endpoint(h: &EventHeader) -> Option<(String, u16)> {
    if h.kind != EV_DATA || h.family == 0 {
        return None;
    }
    let port = h.aux as u16;
    if h.role != ROLE_CLIENT {
        return Some((String::new(), port));
    }
    // As a sockaddr_in / sockaddr_in6, for the one parser of peer addresses.
    let mut sa = [0u8; 28];
    sa[0..2].copy_from_slice(&h.family.to_ne_bytes());
    sa[2..4].copy_from_slice(&port.to_be_bytes());
    if h.family == agent_common::tcp::AF_INET {
        sa[4..8].copy_from_slice(&h.comm[..4]);
    } else {
        sa[8..24].copy_from_slice(&h.comm);
    }
    parse_sockaddr(&sa).map(|(a, p)| (a.to_string(), p))
}

/// Local port of a listening socket: `/proc/<tgid>/fd/<fd>` names its inode, found in
/// `/proc/<tgid>/net/tcp{,6}`.
fn listen_port(procfs: &Path, tgid: u32, fd: u32) -> Option<u16> {
    let link = std::fs::read_link(procfs.join(format!("{tgid}/fd/{fd}"))).ok()?;
    let link = link.to_string_lossy();
    let inode = link.strip_prefix("socket:[")?.strip_suffix(']')?;
    for table in ["tcp", "tcp6"] {
        let Ok(f) = std::fs::File::open(procfs.join(format!("{tgid}/net/{table}"))) else {
            continue;
        };
        if let Some(p) = port_of_inode(std::io::BufReader::new(f), inode) {
            return Some(p);
        }
    }
    None
}

/// Reads `/proc/net/tcp` text: the local port of the listening socket with `inode`. The
/// kernel lists listening sockets first, so the read stops at the first socket in another
/// state: on a host with a million connections only the listeners are read.
fn port_of_inode(text: impl std::io::BufRead, inode: &str) -> Option<u16> {
    for l in text.lines().skip(1) {
        let l = l.ok()?;
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(3) != Some(&"0A") {
            return None;
        }
        if f.get(9) != Some(&inode) {
            continue;
        }
        let local = f.get(1)?;
        let port = local.rsplit(':').next()?;
        return u16::from_str_radix(port, 16).ok();
    }
    None
}

pub struct HttpProbe {
    lost: PerCpuArray<MapData, u64>,
    shared: Arc<Mutex<Store>>,
}

impl std::fmt::Debug for HttpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpProbe")
    }
}

impl ProbeCollector for HttpProbe {
    /// Records the ring buffer had no room for (`hostlens_probe_events_lost_total`).
    fn events_lost(&self) -> Result<u64, ProbeError> {
        Ok(self
            .lost
            .get(&0, 0)
            .map_err(super::map_err(LOST_MAP))?
            .iter()
            .sum::<u64>()
            + MALFORMED.load(Ordering::Relaxed))
    }

    fn collect(&self, out: &mut Out<'_, '_>) -> Result<(), ProbeError> {
        let store = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut fam = out.family(
            "hostlens_series_dropped_total",
            "Observations dropped because their family reached its series cap.",
            Kind::Counter,
        )?;
        fam.sample(&[("family", SERVER_FAMILY)], store.server.dropped as f64)?;
        fam.sample(&[("family", CLIENT_FAMILY)], store.client.dropped as f64)?;
        drop(fam);
        let mut fam = out.family(
            "hostlens_http_decode_errors_total",
            "HTTP bytes the decoder could not use, by reason (never counted as requests).",
            Kind::Counter,
        )?;
        for a in Anomaly::ALL {
            let n = store.anomalies.get(&a).copied().unwrap_or(0);
            fam.sample(&[("reason", a.as_str())], n as f64)?;
        }
        drop(fam);
        out.counter(
            "hostlens_http_records_total",
            "Records the HTTP probe took from the kernel: a syscall's bytes on a followed connection (a static file's body joins its head's), a connection's start or end.",
            RECORDS.load(Ordering::Relaxed) as f64,
        )?;
        out.gauge(
            "hostlens_http_connections",
            "Connections the HTTP decoder holds state for.",
            store.connections as f64,
        )?;
        encode_family(
            out,
            SERVER_FAMILY,
            "Duration of HTTP server requests: first request byte read to last response byte \
             written.",
            &store.server,
        )?;
        encode_family(
            out,
            CLIENT_FAMILY,
            "Duration of HTTP client requests: first request byte written to last response \
             byte read.",
            &store.client,
        )?;
        if !DRAINING.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ProbeError::Stopped(
                "the ring buffer is no longer drained (see the log)",
            ));
        }
        Ok(())
    }
}

fn buckets(h: &series::Hist) -> Vec<(f64, u64)> {
    BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(h.buckets.iter().copied())
        .collect()
}

/// A histogram series key: its label values in exposition order.
trait SeriesKey {
    fn label_values(&self) -> [(&'static str, std::borrow::Cow<'_, str>); 5];
}

impl SeriesKey for ServerKey {
    fn label_values(&self) -> [(&'static str, std::borrow::Cow<'_, str>); 5] {
        [
            ("http_request_method", self.method.into()),
            ("http_response_status_code", self.status.to_string().into()),
            ("http_route", (&*self.route).into()),
            ("server_port", self.port.to_string().into()),
            ("process_name", (&*self.process).into()),
        ]
    }
}

impl SeriesKey for ClientKey {
    fn label_values(&self) -> [(&'static str, std::borrow::Cow<'_, str>); 5] {
        [
            ("http_request_method", self.method.into()),
            ("http_response_status_code", self.status.to_string().into()),
            ("server_address", (&*self.address).into()),
            ("server_port", self.port.to_string().into()),
            ("process_name", (&*self.process).into()),
        ]
    }
}

fn encode_family<K: SeriesKey>(
    out: &mut Out<'_, '_>,
    name: &str,
    help: &str,
    series: &Series<K>,
) -> Result<(), std::fmt::Error> {
    let mut fam = out.family(name, help, Kind::Histogram)?;
    for (k, h) in series.iter() {
        let values = k.label_values();
        let labels = values.each_ref().map(|(n, v)| (*n, v.as_ref()));
        fam.histogram(&labels, h.sum, h.count, &buckets(h))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_waits_for_a_cpu_whose_batch_stayed_in_use_then_moves_on() {
        let mut h = Horizon::default();
        assert_eq!(h.next(100, true), 100);
        // Not flushed: records younger than 100 may still sit in a CPU's batch.
        for now in 1..=STUCK_DRAINS as u64 {
            assert_eq!(h.next(100 + now, false), 100, "drain {now}");
        }
        // Stuck too long: it moves on.
        assert_eq!(h.next(200, false), 200);
        assert_eq!(h.next(210, false), 200);
        // A flush that completes brings it up to date at once.
        assert_eq!(h.next(300, true), 300);
        assert_eq!(h.stuck, 0);
    }

    #[test]
    fn ring_sizes_share_the_total_between_the_cpus_rings() {
        // (CPUs, total) -> (rings written, bytes each).
        assert_eq!(ring_sizes(4 << 20, 1), (1, 4 << 20));
        assert_eq!(ring_sizes(4 << 20, 2), (2, 2 << 20));
        assert_eq!(ring_sizes(4 << 20, 3), (3, 1 << 20));
        assert_eq!(ring_sizes(4 << 20, 8), (8, 512 << 10));
        assert_eq!(ring_sizes(4 << 20, 96), (8, 512 << 10));
        // Never below 16 KiB a ring.
        assert_eq!(ring_sizes(64 << 10, 8), (8, 16 << 10));
        for cpus in 1..=200 {
            let (used, bytes) = ring_sizes(4 << 20, cpus);
            assert!(bytes.is_power_of_two() && used as u32 * bytes <= 4 << 20);
        }
    }

    #[test]
    fn sockaddr_v4_v6() {
        let mut v4 = vec![2u8, 0, 0x1f, 0x90, 127, 0, 0, 1];
        v4.resize(28, 0);
        assert_eq!(
            parse_sockaddr(&v4),
            Some((IpAddr::V4(Ipv4Addr::LOCALHOST), 8080))
        );
        let mut v6 = vec![10u8, 0, 0, 80, 0, 0, 0, 0];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0; 4]);
        assert_eq!(
            parse_sockaddr(&v6),
            Some((IpAddr::V6(Ipv6Addr::LOCALHOST), 80))
        );
        assert_eq!(parse_sockaddr(&[1, 0, 0]), None);
    }

    #[test]
    fn inode_to_port() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(port_of_inode(text.as_bytes(), "4242"), Some(8080));
        assert_eq!(port_of_inode(text.as_bytes(), "1"), None);
        // Only the leading listeners are read: an inode after an established socket is not
        // a listener's.
        let later = format!(
            "{text}   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 5151 1\n   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6161 1\n"
        );
        assert_eq!(port_of_inode(later.as_bytes(), "4242"), Some(8080));
        assert_eq!(port_of_inode(later.as_bytes(), "6161"), None);
    }

    #[test]
    fn methods_and_histogram() {
        assert_eq!(decode::method_label(b"GET"), "GET");
        assert_eq!(decode::method_label(b"BREW"), "_OTHER");
        let mut h = series::Hist::default();
        h.observe(0.005);
        h.observe(0.2);
        h.observe(100.0);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[6], 1);
        assert_eq!(h.buckets[14], 1);
        assert_eq!(h.count, 3);
    }

    #[test]
    fn series_cap_counts_drops() {
        let cfg = HttpConfig {
            max_series_per_family: 2,
            ..HttpConfig::default()
        };
        let mut s = Store::new(&cfg);
        for i in 0..5 {
            s.server.observe(
                ServerKey {
                    method: "GET",
                    status: 200,
                    route: format!("/r{i}").into(),
                    port: 80,
                    process: "p".into(),
                },
                0.1,
            );
        }
        assert_eq!(s.server.len(), 2);
        assert_eq!(s.server.dropped, 3);
    }

    /// One ring-buffer record as the kernel writes it.
    #[expect(clippy::too_many_arguments, reason = "mirrors the record's fields")]
    fn record(
        kind: u8,
        tgid: u32,
        fd: u32,
        conn_id: u64,
        direction: u8,
        role: u8,
        ts_ns: u64,
        aux: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let h = EventHeader {
            ts_ns,
            conn_id,
            bytes: payload.len() as u64,
            tgid,
            fd,
            aux,
            captured: payload.len() as u16,
            kind,
            direction,
            role,
            syscall: 0,
            family: 0,
            len: (HEADER_BYTES + payload.len()) as u32,
            comm: [0; 16],
        };
        let mut v = vec![0u8; HEADER_BYTES + payload.len()];
        // SAFETY: `v` holds HEADER_BYTES bytes for the header.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<EventHeader>(), h) };
        v[HEADER_BYTES..].copy_from_slice(payload);
        v
    }

    /// A fixture /proc: pid 100 "nginx" listening on fd 6 (port 8080), pid 200 "curl".
    fn fixture_procfs(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hostlens-http-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("100/fd")).unwrap();
        std::fs::create_dir_all(d.join("100/net")).unwrap();
        std::fs::create_dir_all(d.join("200")).unwrap();
        std::fs::write(d.join("100/comm"), "nginx\n").unwrap();
        std::fs::write(d.join("200/comm"), "curl\n").unwrap();
        std::os::unix::fs::symlink("socket:[777]", d.join("100/fd/6")).unwrap();
        std::fs::write(
            d.join("100/net/tcp"),
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1\n",
        )
        .unwrap();
        d
    }

    /// The key of the fixture nginx's (pid 100) `GET` series with `status`, `route` and `port`.
    fn nginx_get(status: u16, route: &str, port: u16) -> ServerKey {
        ServerKey {
            method: "GET",
            status,
            route: route.into(),
            port,
            process: "nginx".into(),
        }
    }

    /// The client series of curl's `GET`s answered with 200 by `address`:`port`.
    fn curl_get(address: &str, port: u16) -> ClientKey {
        ClientKey {
            method: "GET",
            status: 200,
            address: address.into(),
            port,
            process: "curl".into(),
        }
    }

    /// A decoder with `cfg` over the fixture /proc `procfs`, and the store it reports to.
    fn decoder(cfg: HttpConfig, procfs: &Path) -> (Decoder, Arc<Mutex<Store>>) {
        let shared = Arc::new(Mutex::new(Store::new(&cfg)));
        let settings = Settings {
            http: cfg,
            procfs: procfs.to_path_buf(),
        };
        let mut d = Decoder::new(settings, Arc::clone(&shared), Kernel::None);
        // Every record is handled as it is fed.
        d.caught_up_ns = u64::MAX;
        (d, shared)
    }

    fn feed(d: &mut Decoder, recs: &[Vec<u8>]) {
        d.batch(|handle| {
            for r in recs {
                handle(r);
            }
        });
    }

    fn exchange(d: &mut Decoder) {
        let mut sa = vec![2u8, 0, 0x1f, 0x90, 127, 0, 0, 1];
        sa.resize(28, 0);
        let (s, c) = (agent_common::http::ROLE_SERVER, ROLE_CLIENT);
        let out = agent_common::http::DIR_OUT;
        feed(
            d,
            &[
                record(EV_ACCEPT, 100, 7, 1, 0, s, 0, 6, b""),
                record(EV_CONNECT, 200, 3, 2, 0, c, 0, 0, &sa),
                record(
                    EV_DATA,
                    200,
                    3,
                    2,
                    out,
                    c,
                    500_000,
                    0,
                    b"GET /users/42?x=1 HTTP/1.1\r\n\r\n",
                ),
                record(
                    EV_DATA,
                    100,
                    7,
                    1,
                    DIR_IN,
                    s,
                    1_000_000,
                    0,
                    b"GET /users/42?x=1 HTTP/1.1\r\n\r\n",
                ),
                record(
                    EV_DATA,
                    100,
                    7,
                    1,
                    out,
                    s,
                    6_000_000,
                    0,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                ),
                record(
                    EV_DATA,
                    200,
                    3,
                    2,
                    DIR_IN,
                    c,
                    6_500_000,
                    0,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                ),
                record(EV_CLOSE, 100, 7, 1, 0, s, 7_000_000, 0, b""),
                record(EV_CLOSE, 200, 3, 2, 0, c, 7_000_000, 0, b""),
            ],
        );
    }

    #[test]
    fn records_become_labelled_observations() {
        let procfs = fixture_procfs("records");
        let cfg = HttpConfig {
            process_grace_period_seconds: 0,
            ..HttpConfig::default()
        };
        let (mut d, shared) = decoder(cfg, &procfs);
        exchange(&mut d);
        {
            let store = shared.lock().unwrap();
            let h = store
                .server
                .get(&nginx_get(200, "/users/*", 8080))
                .expect("server series");
            assert_eq!(h.count, 1);
            assert!((h.sum - 0.005).abs() < 1e-12);
            let key = curl_get("127.0.0.1", 8080);
            let h = store.client.get(&key).expect("client series");
            assert!((h.sum - 0.006).abs() < 1e-12);
            assert_eq!(store.connections, 0, "closed connections are dropped");
        }
        // curl exits: after the (zero) grace period its series go, nginx's stay.
        std::fs::remove_dir_all(procfs.join("200")).unwrap();
        d.sweep();
        std::thread::sleep(Duration::from_millis(20));
        d.sweep();
        let store = shared.lock().unwrap();
        assert!(store.client.is_empty());
        assert_eq!(store.server.len(), 1);
        drop(store);
        let _ = std::fs::remove_dir_all(&procfs);
    }

    /// A process that exited while its last records were still queued (the drain behind):
    /// they are decoded under its connection and name; it is forgotten once the drain has
    /// caught up past the sweep that found it gone.
    #[test]
    fn records_queued_behind_a_process_exit_keep_its_connection() {
        let procfs = fixture_procfs("exitlag");
        let (mut d, shared) = decoder(HttpConfig::default(), &procfs);
        d.caught_up_ns = 0;
        let mut sa = vec![2u8, 0, 0x1f, 0x90, 127, 0, 0, 1];
        sa.resize(28, 0);
        let c = ROLE_CLIENT;
        let out = agent_common::http::DIR_OUT;
        // Recent kernel times (older ones would be expired as idle by the sweep).
        let t0 = crate::clock::monotonic_ns();
        feed(
            &mut d,
            &[
                record(EV_CONNECT, 200, 3, 2, 0, c, t0, 0, &sa),
                record(EV_DATA, 200, 3, 2, out, c, t0 + 1_000, 0, GET_A),
            ],
        );
        std::fs::remove_dir_all(procfs.join("200")).unwrap();
        d.sweep();
        assert!(
            d.conns.contains_key(&(200, 2)),
            "dropped while records were queued"
        );
        feed(
            &mut d,
            &[record(
                EV_DATA,
                200,
                3,
                2,
                DIR_IN,
                c,
                t0 + 2_000,
                0,
                OK_EMPTY,
            )],
        );
        let key = curl_get("127.0.0.1", 8080);
        let store = shared.lock().unwrap();
        let keys: Vec<_> = store
            .client
            .iter()
            .map(|(k, h)| (k.clone(), h.count))
            .collect();
        assert_eq!(store.client.get(&key).map(|h| h.count), Some(1), "{keys:?}");
        drop(store);
        // The drain is past the moment the process was found gone.
        d.caught_up_ns = crate::clock::monotonic_ns();
        d.sweep();
        assert!(!d.conns.contains_key(&(200, 2)));
        assert!(!d.procs.contains_key(&200));
        let _ = std::fs::remove_dir_all(&procfs);
    }

    /// A request head and an empty 200 response (the idle, table and endpoint tests).
    const GET_A: &[u8] = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    const OK_EMPTY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

    /// An idle connection gives up its unfinished exchange but keeps its labels: its next
    /// exchange, after the idle timeout, is counted under its own port, not as a connection
    /// of unknown port.
    #[test]
    fn idle_connections_keep_their_labels() {
        let procfs = fixture_procfs("idle");
        let cfg = HttpConfig {
            connection_idle_timeout_seconds: 0,
            ..HttpConfig::default()
        };
        let (mut d, shared) = decoder(cfg, &procfs);
        let s = agent_common::http::ROLE_SERVER;
        let out = agent_common::http::DIR_OUT;
        let (req, resp) = (GET_A, OK_EMPTY);
        feed(
            &mut d,
            &[
                record(EV_ACCEPT, 100, 7, 1, 0, s, 0, 6, b""),
                record(EV_DATA, 100, 7, 1, DIR_IN, s, 1_000, 0, req),
                record(EV_DATA, 100, 7, 1, out, s, 2_000, 0, resp),
                // A second request and half a head of a third; then silence.
                record(EV_DATA, 100, 7, 1, DIR_IN, s, 3_000, 0, req),
                record(EV_DATA, 100, 7, 1, DIR_IN, s, 4_000, 0, b"GET /a HT"),
            ],
        );
        std::thread::sleep(Duration::from_millis(5));
        d.sweep();
        {
            let store = shared.lock().unwrap();
            assert_eq!(
                store.connections, 1,
                "the idle connection is still followed"
            );
            assert_eq!(store.anomalies.get(&Anomaly::Unanswered), Some(&1));
            assert_eq!(
                store.server.get(&nginx_get(200, "/a", 8080)).unwrap().count,
                1
            );
        }
        assert_eq!(d.heap, 0, "the partial head is freed");
        // A clean idle connection: nothing to give up, nothing counted.
        d.sweep();
        assert_eq!(
            shared.lock().unwrap().anomalies.get(&Anomaly::Unanswered),
            Some(&1)
        );
        // Traffic again: a new message start decodes under the connection's own labels.
        feed(
            &mut d,
            &[
                record(EV_DATA, 100, 7, 1, DIR_IN, s, 10_000, 0, req),
                record(EV_DATA, 100, 7, 1, out, s, 11_000, 0, resp),
            ],
        );
        let store = shared.lock().unwrap();
        assert_eq!(
            store.server.get(&nginx_get(200, "/a", 8080)).unwrap().count,
            2
        );
        assert!(store.server.get(&nginx_get(200, "/a", 0)).is_none());
        drop(store);
        let _ = std::fs::remove_dir_all(&procfs);
    }

    /// A full connection table drops its least recently active 1/64 at once (by the records'
    /// kernel timestamps, also within one batch); the others, and the one that was just
    /// active, keep their labels.
    #[test]
    fn full_table_drops_the_least_recently_active() {
        let procfs = fixture_procfs("full");
        let cfg = HttpConfig {
            max_connections: 128,
            ..HttpConfig::default()
        };
        let (mut d, shared) = decoder(cfg, &procfs);
        let s = agent_common::http::ROLE_SERVER;
        let out = agent_common::http::DIR_OUT;
        let (req, resp) = (GET_A, OK_EMPTY);
        // In one batch (the order is the records' kernel timestamps), connection 1 first.
        let mut recs: Vec<Vec<u8>> = (1..=128u64)
            .map(|id| record(EV_ACCEPT, 100, id as u32, id, 0, s, id * 10, 6, b""))
            .collect();
        // Connection 1 becomes the most recently active; 2 and 3 are now the oldest.
        recs.push(record(EV_DATA, 100, 1, 1, DIR_IN, s, 10_000, 0, req));
        recs.push(record(EV_ACCEPT, 100, 200, 200, 0, s, 20_000, 6, b""));
        feed(&mut d, &recs);
        assert_eq!(shared.lock().unwrap().connections, 127, "128 - 128/64 + 1");
        // 1 answers under its own port; 2 was dropped, so its bytes come as a connection of
        // unknown port (its start was not kept).
        feed(
            &mut d,
            &[
                record(EV_DATA, 100, 1, 1, out, s, 30_000, 0, resp),
                record(EV_DATA, 100, 2, 2, DIR_IN, s, 31_000, 0, req),
                record(EV_DATA, 100, 2, 2, out, s, 32_000, 0, resp),
                record(EV_DATA, 100, 4, 4, DIR_IN, s, 33_000, 0, req),
                record(EV_DATA, 100, 4, 4, out, s, 34_000, 0, resp),
            ],
        );
        let store = shared.lock().unwrap();
        assert_eq!(
            store.server.get(&nginx_get(200, "/a", 8080)).unwrap().count,
            2
        );
        assert_eq!(store.server.get(&nginx_get(200, "/a", 0)).unwrap().count, 1);
        drop(store);
        let _ = std::fs::remove_dir_all(&procfs);
    }

    /// `record` as the socket hooks write a data record: with the endpoint (`family`, the
    /// port in `aux`, a client's peer address in `comm`).
    fn sock_record(mut rec: Vec<u8>, family: u16, port: u16, peer: &[u8]) -> Vec<u8> {
        // SAFETY: `rec` starts with a whole header.
        let mut h: EventHeader = unsafe { std::ptr::read_unaligned(rec.as_ptr().cast()) };
        h.family = family;
        h.aux = u32::from(port);
        h.comm[..peer.len()].copy_from_slice(peer);
        // SAFETY: as above.
        unsafe { std::ptr::write_unaligned(rec.as_mut_ptr().cast::<EventHeader>(), h) };
        rec
    }

    /// Data records of connections whose start the decoder does not hold are labelled from
    /// the endpoint the socket hooks put in them (server: the local port; client: the peer).
    #[test]
    fn data_records_name_their_endpoint() {
        let procfs = fixture_procfs("endpoint");
        let (mut d, shared) = decoder(HttpConfig::default(), &procfs);
        let (s, c) = (agent_common::http::ROLE_SERVER, ROLE_CLIENT);
        let out = agent_common::http::DIR_OUT;
        let v4 = agent_common::tcp::AF_INET;
        let (req, resp) = (GET_A, OK_EMPTY);
        let peer = [10, 1, 2, 3];
        feed(
            &mut d,
            &[
                sock_record(
                    record(EV_DATA, 100, 7, 1, DIR_IN, s, 1_000, 0, req),
                    v4,
                    8080,
                    &[],
                ),
                sock_record(
                    record(EV_DATA, 100, 7, 1, out, s, 2_000, 0, resp),
                    v4,
                    8080,
                    &[],
                ),
                sock_record(
                    record(EV_DATA, 200, 3, 2, out, c, 1_000, 0, req),
                    v4,
                    9090,
                    &peer,
                ),
                sock_record(
                    record(EV_DATA, 200, 3, 2, DIR_IN, c, 2_000, 0, resp),
                    v4,
                    9090,
                    &peer,
                ),
            ],
        );
        let store = shared.lock().unwrap();
        assert_eq!(
            store.server.get(&nginx_get(200, "/a", 8080)).unwrap().count,
            1
        );
        let key = curl_get("10.1.2.3", 9090);
        assert_eq!(store.client.get(&key).unwrap().count, 1);
        drop(store);
        // IPv6, and an IPv4-mapped IPv6 peer shown as IPv4 (as from a sockaddr).
        let v6 = agent_common::tcp::AF_INET6;
        let mut h = EventHeader {
            kind: EV_DATA,
            role: ROLE_CLIENT,
            family: v6,
            aux: 443,
            // SAFETY: plain integers and byte arrays: all zeroes is a valid header.
            ..unsafe { std::mem::zeroed() }
        };
        h.comm = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets();
        assert_eq!(data_endpoint(&h), Some(("2001:db8::1".to_string(), 443)));
        h.comm = std::net::Ipv4Addr::new(192, 0, 2, 7)
            .to_ipv6_mapped()
            .octets();
        assert_eq!(data_endpoint(&h), Some(("192.0.2.7".to_string(), 443)));
        h.family = 0;
        assert_eq!(
            data_endpoint(&h),
            None,
            "syscall-exit hooks name no endpoint"
        );
        // A gone process (no /proc entry): a data record's address bytes are no name.
        h.tgid = 999;
        h.comm = *b"nameless\0\0\0\0\0\0\0\0";
        assert_eq!(d.process_name(&h), "");
        h.kind = EV_CONNECT;
        h.tgid = 998;
        assert_eq!(d.process_name(&h), "nameless");
        let _ = std::fs::remove_dir_all(&procfs);
    }

    /// Keep-alive connections reuse their last series' slot: every exchange still lands in
    /// the series of its own method, status and route, also after a route position collapses.
    #[test]
    fn keep_alive_exchanges_each_find_their_series() {
        let procfs = fixture_procfs("slots");
        let cfg = HttpConfig {
            route_segment_max_values: 2,
            ..HttpConfig::default()
        };
        let (mut d, shared) = decoder(cfg, &procfs);
        let s = agent_common::http::ROLE_SERVER;
        let out = agent_common::http::DIR_OUT;
        let mut ts = 1_000_000u64;
        // (connection, target, status)
        let steps: &[(u64, &str, u16)] = &[
            (1, "/p/x", 200),
            (1, "/p/x", 200),
            (1, "/p/x?q=1", 200),
            (1, "/p/x", 404),
            (1, "/p/x", 404),
            (2, "/p/y", 200),
            // A third value under /p collapses the position: /p/* from now on.
            (2, "/p/z", 200),
            (1, "/p/x", 404),
            (1, "/p/x", 200),
        ];
        let mut recs = vec![
            record(EV_ACCEPT, 100, 7, 1, 0, s, 0, 6, b""),
            record(EV_ACCEPT, 100, 8, 2, 0, s, 0, 6, b""),
        ];
        for (conn, target, status) in steps {
            let req = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            let fd = 6 + *conn as u32;
            recs.push(record(
                EV_DATA,
                100,
                fd,
                *conn,
                DIR_IN,
                s,
                ts,
                0,
                req.as_bytes(),
            ));
            recs.push(record(
                EV_DATA,
                100,
                fd,
                *conn,
                out,
                s,
                ts + 1000,
                0,
                resp.as_bytes(),
            ));
            ts += 10_000;
        }
        feed(&mut d, &recs);
        let store = shared.lock().unwrap();
        let count = |route: &str, status: u16| {
            let key = nginx_get(status, route, 8080);
            store.server.get(&key).map_or(0, |h| h.count)
        };
        assert_eq!(count("/p/x", 200), 3);
        assert_eq!(count("/p/x", 404), 2);
        assert_eq!(count("/p/y", 200), 1);
        assert_eq!(count("/p/*", 200), 2);
        assert_eq!(count("/p/*", 404), 1);
        assert_eq!(store.server.len(), 5);
        drop(store);
        let _ = std::fs::remove_dir_all(&procfs);
    }

    /// Heads split across reads are buffered per connection; past the decoder's heap budget
    /// the connection that grew sheds its buffer (counted as `memory_budget`), the total stays
    /// within the budget and matches the connections' own counts, and nothing shed is ever
    /// counted as a request.
    #[test]
    fn decoder_heap_stays_within_its_budget() {
        let procfs = fixture_procfs("budget");
        let (mut d, shared) = decoder(HttpConfig::default(), &procfs);
        d.heap_budget = 16 * 1024;
        let s = agent_common::http::ROLE_SERVER;
        let out = agent_common::http::DIR_OUT;
        let pad = format!("GET /p HTTP/1.1\r\nX-Pad: {}", "a".repeat(3000));
        let mut ts = 1_000u64;
        for fd in 10..20u32 {
            let id = u64::from(fd);
            ts += 1_000;
            feed(&mut d, &[record(EV_ACCEPT, 100, fd, id, 0, s, ts, 6, b"")]);
            ts += 1_000;
            feed(
                &mut d,
                &[record(
                    EV_DATA,
                    100,
                    fd,
                    id,
                    DIR_IN,
                    s,
                    ts,
                    0,
                    pad.as_bytes(),
                )],
            );
            assert!(d.heap <= d.heap_budget, "{} > {}", d.heap, d.heap_budget);
            let counted: usize = d.conns.values().map(|t| t.conn.heap_bytes()).sum();
            assert_eq!(d.heap, counted);
        }
        let shed = shared.lock().unwrap().anomalies[&Anomaly::MemoryBudget];
        assert!((1..10).contains(&shed), "{shed} connections shed");
        // Each head completes and is answered: the connections that kept their head count a
        // request each; the shed ones lost theirs (the answer is unpaired), none is invented.
        for fd in 10..20u32 {
            let id = u64::from(fd);
            ts += 1_000;
            feed(
                &mut d,
                &[
                    record(EV_DATA, 100, fd, id, DIR_IN, s, ts, 0, b"\r\n\r\n"),
                    record(
                        EV_DATA,
                        100,
                        fd,
                        id,
                        out,
                        s,
                        ts + 500,
                        0,
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                    ),
                ],
            );
        }
        let store = shared.lock().unwrap();
        let served: u64 = store.server.iter().map(|(_, h)| h.count).sum();
        assert_eq!(served, 10 - shed);
        assert_eq!(store.anomalies[&Anomaly::UnpairedResponse], shed);
        drop(store);
        // What a decoder panic leads to: every connection forgotten, nothing held.
        assert!(!d.conns.is_empty());
        d.forget_connections();
        assert!(d.conns.is_empty() && d.heap == 0);
        let _ = std::fs::remove_dir_all(&procfs);
    }

    /// A connection whose start record was lost (ring buffer full) is followed from its first
    /// data record, with port 0; a filtered-out process's is not.
    #[test]
    fn data_without_a_start_record_is_followed_without_port() {
        let procfs = fixture_procfs("nostart");
        for (cfg, counted) in [
            (HttpConfig::default(), 2),
            (
                HttpConfig {
                    exclude_processes: vec!["nginx".into()],
                    ..HttpConfig::default()
                },
                0,
            ),
        ] {
            let (mut d, shared) = decoder(cfg, &procfs);
            let s = agent_common::http::ROLE_SERVER;
            let out = agent_common::http::DIR_OUT;
            let req = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
            let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
            feed(
                &mut d,
                &[
                    record(EV_DATA, 100, 7, 9, DIR_IN, s, 1_000, 0, req),
                    record(EV_DATA, 100, 7, 9, out, s, 2_000, 0, resp),
                    record(EV_DATA, 100, 7, 9, DIR_IN, s, 3_000, 0, req),
                    record(EV_DATA, 100, 7, 9, out, s, 4_000, 0, resp),
                ],
            );
            let store = shared.lock().unwrap();
            let key = nginx_get(200, "/a", 0);
            assert_eq!(store.server.get(&key).map_or(0, |h| h.count), counted);
            assert_eq!(store.server.len(), usize::from(counted > 0));
            assert_eq!(store.connections, 1);
        }
        let _ = std::fs::remove_dir_all(&procfs);
    }

    #[test]
    fn the_kernel_port_filter_marks_ports_as_the_decoder_filters() {
        let cfg = |include: Vec<u16>, exclude: Vec<u16>| HttpConfig {
            include_ports: include,
            exclude_ports: exclude,
            ..HttpConfig::default()
        };
        assert_eq!(port_marks(&cfg(vec![], vec![])), None);
        assert_eq!(
            port_marks(&cfg(vec![], vec![9100, 9100])),
            Some((FILTER_EXCLUDE, BTreeMap::from([(9100, PORT_EXCLUDE)])))
        );
        // Excluded wins over included, as in `labels_for`.
        assert_eq!(
            port_marks(&cfg(vec![80, 8080], vec![8080])),
            Some((
                FILTER_INCLUDE,
                BTreeMap::from([(80, PORT_INCLUDE), (8080, PORT_EXCLUDE)])
            ))
        );
        // Lists the kernel's table cannot hold are left to the decoder.
        let many: Vec<u16> = (1..=MAX_PORTS as u16 + 1).collect();
        assert_eq!(port_marks(&cfg(many, vec![])), None);
        let fits: Vec<u16> = (1..=MAX_PORTS as u16).collect();
        assert_eq!(
            port_marks(&cfg(fits, vec![])).map(|(f, m)| (f, m.len())),
            Some((FILTER_INCLUDE, MAX_PORTS as usize))
        );
    }

    #[test]
    fn excluded_processes_and_ports_are_not_recorded() {
        let procfs = fixture_procfs("filters");
        for cfg in [
            HttpConfig {
                include_processes: vec!["nginx".into()],
                ..HttpConfig::default()
            },
            HttpConfig {
                exclude_ports: vec![8080],
                ..HttpConfig::default()
            },
        ] {
            let only_nginx = !cfg.include_processes.is_empty();
            let (mut d, shared) = decoder(cfg, &procfs);
            exchange(&mut d);
            let store = shared.lock().unwrap();
            assert!(store.client.is_empty());
            assert_eq!(store.server.len(), usize::from(only_nginx));
        }
        let _ = std::fs::remove_dir_all(&procfs);
    }

    #[test]
    fn config_validation_names_key() {
        let bad = HttpConfig {
            capture_bytes: 10,
            ..HttpConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "http.capture_bytes");
        let bad = HttpConfig {
            route_templates: vec!["users/{id}".into()],
            ..HttpConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "http.route_templates[0]");
        for ring in [0, 4096, 3 << 20, 512 << 20] {
            let bad = HttpConfig {
                ring_buffer_bytes: ring,
                ..HttpConfig::default()
            };
            assert_eq!(bad.validate().unwrap_err().0, "http.ring_buffer_bytes");
        }
        let bad = HttpConfig {
            max_connections: (1 << 20) + 1,
            ..HttpConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "http.max_connections");
        assert!(HttpConfig::default().validate().is_ok());
    }
}
