//! eBPF probes: each a kernel half in `agent-ebpf/src/<name>.rs` and a user half here.
//!
//! [`PROBES`] is the registration table (flags `--probe.<name>` / `--no-probe.<name>`, YAML
//! `probes.<name>`). Each eBPF object ([`Object`]: the main one, and the `syscalls` probe's) is
//! loaded once; then each probe loads and attaches its own programs, so a program or object the
//! kernel refuses fails only its probes
//! (`hostlens_probe_attached{probe}=0`, reason on the status page and in the log).
use std::{
    fmt,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

use aya::{Ebpf, EbpfLoader};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use crate::{
    config::{Config, LogLevel},
    emit::{Kind, Out},
    status::State,
};

pub mod batch;
pub mod http;
pub mod kbtf;
pub mod syscall_names;
pub mod syscalls;
pub mod tcp;

/// The compiled kernel programs, built by `agent/build.rs`: the main object (`tcp`), the
/// `syscalls` probe's own (its task-local storage map needs Linux 5.11+, and a map the kernel
/// cannot create fails its whole object) and the `http` probe's (socket-local storage, which
/// needs kernel BTF). Empty when the build skipped the eBPF step
/// (`AYA_BUILD_SKIP=1`, used for quick `cargo check`/`clippy`).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));
static SYSCALLS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf-syscalls"));
static HTTP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf-http"));

/// Which compiled object holds a probe's programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Main,
    Syscalls,
    Http,
}

impl Object {
    fn bytes(self) -> &'static [u8] {
        match self {
            Object::Main => EBPF_OBJECT,
            Object::Syscalls => SYSCALLS_OBJECT,
            Object::Http => HTTP_OBJECT,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Object::Main => "agent-ebpf",
            Object::Syscalls => "agent-ebpf-syscalls",
            Object::Http => "agent-ebpf-http",
        }
    }
}

/// The user half of an attached probe: reads its maps at scrape time.
pub trait ProbeCollector: fmt::Debug + Send + Sync {
    fn collect(&self, out: &mut Out<'_, '_>) -> Result<(), ProbeError>;

    /// Events the probe's bounded kernel maps could not take so far
    /// (`hostlens_probe_events_lost_total{probe}`).
    fn events_lost(&self) -> Result<u64, ProbeError> {
        Ok(0)
    }
}

/// What a probe is attached with: the configuration (name limits, map sizes) and the kernel's
/// BTF, parsed once for every `tp_btf` attach (None when `/sys/kernel/btf/vmlinux` cannot be
/// read).
#[derive(Debug, Clone, Copy)]
pub struct ProbeContext<'a> {
    pub config: &'a Config,
    pub btf: Option<&'a aya::Btf>,
}

type Attach = fn(&mut Ebpf, &ProbeContext) -> Result<Box<dyn ProbeCollector>, ProbeError>;

pub struct ProbeEntry {
    /// snake_case name: flag `--probe.<name>`, YAML `probes.<name>`, label `probe`.
    pub name: &'static str,
    pub default_enabled: bool,
    /// The kernel hooks it uses, for the status page and the docs.
    pub hooks: &'static str,
    pub object: Object,
    pub attach: Attach,
}

/// The registration table. Adding a probe adds one line here.
pub static PROBES: &[ProbeEntry] = &[
    ProbeEntry {
        name: "syscalls",
        default_enabled: true,
        hooks: "raw_tracepoint/sys_enter, raw_tracepoint/sys_exit, tp_btf/task_rename",
        object: Object::Syscalls,
        attach: syscalls::attach,
    },
    ProbeEntry {
        name: "tcp",
        default_enabled: true,
        hooks: "tracepoint/sock:inet_sock_set_state, tcp:tcp_probe, sock:sock_send_length, \
            sock:sock_recv_length; raw_tracepoint/tcp_retransmit_skb, tcp_send_reset, \
            tcp_receive_reset",
        object: Object::Main,
        attach: tcp::attach,
    },
    ProbeEntry {
        name: "http",
        default_enabled: true,
        hooks: "tp_btf/sock_send_length, sock_recv_length, inet_sock_set_state (http.hook: auto falls back to tp_btf/sys_exit, then tracepoint/syscalls/sys_exit_* of read, readv, recvfrom, recvmsg, write, writev, sendto, sendmsg, sendfile64, accept, accept4, connect, close, then raw_tracepoint/sys_exit)",
        object: Object::Http,
        attach: http::attach,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("program {0} is not in the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {0} is not in the eBPF object")]
    MissingMap(&'static str),
    #[error("program {0}: the kernel's BTF (/sys/kernel/btf/vmlinux) could not be read")]
    NoKernelBtf(&'static str),
    #[error("program {program}: {source}{}", verifier_tail(.source))]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {map}: batch lookup: {source}")]
    Batch {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding metrics: {0}")]
    Encode(#[from] fmt::Error),
    /// The probe's userspace side stopped after it attached.
    #[error("stopped: {0}")]
    Stopped(&'static str),
    /// The probe cannot attach with the map sizes its object was loaded with, but can after
    /// a new load (the sizes are asked of the probe again; it has recorded why).
    #[error("needs its eBPF object loaded again: {0}")]
    Reload(String),
    /// Loading an eBPF object failed.
    #[error("{0}")]
    Load(String),
}

/// The last lines of a verifier log, which say why a program was refused.
fn verifier_tail(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { verifier_log, .. } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
            if tail.is_empty() {
                String::new()
            } else {
                format!(" (verifier: {tail})")
            }
        }
        _ => String::new(),
    }
}

/// The error of program `name`.
pub(crate) fn prog_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> ProbeError {
    move |source| ProbeError::Program {
        program: name,
        source,
    }
}

/// Program `name` of the object as the program type `P`.
pub(crate) fn program_of<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut P, ProbeError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(prog_err(name))
}

/// Loads program `name` of the object and attaches it to raw tracepoint `tp`.
pub fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    tp: &str,
) -> Result<(), ProbeError> {
    let program: &mut aya::programs::RawTracePoint = program_of(ebpf, name)?;
    program.load().map_err(prog_err(name))?;
    refused_for_test(name)?;
    program.attach(tp).map_err(prog_err(name))?;
    Ok(())
}

/// Loads program `name` of the object as a BTF-typed tracepoint (`tp_btf`) of `tp` and
/// attaches it. Its arguments carry their kernel types, so e.g. a `task_struct *` argument can
/// key task-local storage.
pub fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    ctx: &ProbeContext,
    name: &'static str,
    tp: &str,
) -> Result<(), ProbeError> {
    let btf = ctx.btf.ok_or(ProbeError::NoKernelBtf(name))?;
    let program: &mut aya::programs::BtfTracePoint = program_of(ebpf, name)?;
    program.load(tp, btf).map_err(prog_err(name))?;
    refused_for_test(name)?;
    program.attach().map_err(prog_err(name))?;
    Ok(())
}

/// Names of the object's programs that are loaded in the kernel.
fn loaded_programs(ebpf: &Ebpf) -> std::collections::BTreeSet<String> {
    ebpf.programs()
        .filter(|(_, p)| p.fd().is_ok())
        .map(|(n, _)| n.to_string())
        .collect()
}

/// Unloads (detaching their links) the programs loaded since `before`: what a probe that
/// failed half-way had attached. Returns their names.
fn unload_programs_since(
    ebpf: &mut Ebpf,
    before: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    use aya::programs::Program;
    let mut gone = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        if before.contains(name) || program.fd().is_err() {
            continue;
        }
        let r = match program {
            Program::TracePoint(p) => p.unload(),
            Program::RawTracePoint(p) => p.unload(),
            Program::BtfTracePoint(p) => p.unload(),
            _ => continue,
        };
        match r {
            Ok(()) => gone.push(name.to_string()),
            Err(e) => {
                tracing::warn!(program = name, error = %e, "unloading a failed probe's program failed")
            }
        }
    }
    gone
}

/// Test hook for the fallbacks, which a kernel that has every hook never takes: the programs
/// named in `HOSTLENS_FAIL_ATTACH` (see [`crate::faults`]) fail to attach as if the kernel
/// refused them (`EOPNOTSUPP`).
pub(crate) fn refused_for_test(name: &'static str) -> Result<(), ProbeError> {
    if !crate::faults::attach_refused(name) {
        return Ok(());
    }
    tracing::warn!(program = name, "HOSTLENS_FAIL_ATTACH: refusing the attach");
    Err(prog_err(name)(aya::programs::ProgramError::SyscallError(
        aya::sys::SyscallError {
            call: "bpf_raw_tracepoint_open",
            io_error: std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        },
    )))
}

/// Loads program `name` of the object and attaches it to tracepoint `category:tp`.
pub fn attach_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &str,
    tp: &str,
) -> Result<(), ProbeError> {
    attach_tracepoints(ebpf, name, category, &[tp])
}

/// Loads program `name` of the object and attaches it to each tracepoint `category:tp` of
/// `tps`. All or none: when one attach fails, the links made before it are detached.
pub fn attach_tracepoints(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &str,
    tps: &[&str],
) -> Result<(), ProbeError> {
    let prog_err = prog_err(name);
    let program: &mut aya::programs::TracePoint = program_of(ebpf, name)?;
    program.load().map_err(&prog_err)?;
    refused_for_test(name)?;
    let mut links = Vec::with_capacity(tps.len());
    for tp in tps {
        match program.attach(category, tp) {
            Ok(link) => links.push(link),
            Err(source) => {
                for link in links {
                    let _ = program.detach(link);
                }
                return Err(prog_err(source));
            }
        }
    }
    Ok(())
}

/// Turns a map error into the probe error naming the map.
pub fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |source| ProbeError::Map { map, source }
}

/// Takes map `name` out of the object and converts it to the typed map `M`.
pub fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, ProbeError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    M::try_from(map).map_err(map_err(name))
}

/// Error chain as one line, for the status page and logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

/// The probes after start-up: the loaded objects (dropping one detaches its programs), the
/// attached probes' collectors and each probe's state.
pub struct Probes {
    objects: Vec<Ebpf>,
    pub states: Vec<(&'static str, State)>,
    pub metrics: Arc<ProbeMetrics>,
}

impl Probes {
    /// Loads the eBPF object and attaches every enabled probe, each on its own.
    pub fn load(config: &Config) -> Probes {
        let toggles = &config.probes;
        let enabled: Vec<&ProbeEntry> = PROBES.iter().filter(|p| toggles.enabled(p.name)).collect();
        // Parsed once (several MB), for the probes' tp_btf attaches; dropped after start-up.
        let btf = if enabled.is_empty() {
            None
        } else {
            aya::Btf::from_sys_fs()
                .inspect_err(|e| tracing::warn!(error = %e, "kernel BTF unavailable"))
                .ok()
        };
        let ctx = ProbeContext {
            config,
            btf: btf.as_ref(),
        };
        // One loader (it parses the kernel's BTF itself, once) for every object.
        let level = log_level(config.log.level);
        let globals = http::loader_globals();
        let sizes = max_entries(&ctx);
        let mut loader = object_loader(&level, &globals, &sizes);
        let mut states: Vec<(&'static str, State)> = PROBES
            .iter()
            .filter(|p| !toggles.enabled(p.name))
            .map(|p| (p.name, State::Disabled))
            .collect();
        let mut active = Vec::new();
        let mut objects = Vec::new();
        for object in [Object::Main, Object::Syscalls, Object::Http] {
            let these: Vec<&&ProbeEntry> = enabled.iter().filter(|p| p.object == object).collect();
            if these.is_empty() {
                continue;
            }
            match load_object(&mut loader, object, &globals) {
                Ok(mut obj) => {
                    for p in these {
                        let loaded_before = loaded_programs(&obj);
                        let mut attached = (p.attach)(&mut obj, &ctx);
                        // Only a probe alone in its object may have it loaded again (the new
                        // load replaces the old one); twice at most (the http probe: without
                        // the kfunc, then with the fallback hooks' table).
                        for _ in 0..2 {
                            let Err(ProbeError::Reload(why)) = &attached else {
                                break;
                            };
                            tracing::warn!(probe = p.name, reason = %why, "loading the probe again");
                            attached = reload(&mut obj, object, &level, &ctx)
                                .and_then(|()| (p.attach)(&mut obj, &ctx));
                        }
                        match attached {
                            Ok(c) => {
                                tracing::info!(probe = p.name, hooks = p.hooks, "probe attached");
                                states.push((p.name, State::Active));
                                active.push((p.name, c));
                            }
                            Err(e) => {
                                let reason = error_chain(&e);
                                // What it attached before failing must not keep running
                                // (and costing) for a probe reported failed.
                                let left = unload_programs_since(&mut obj, &loaded_before);
                                tracing::warn!(probe = p.name, %reason, unloaded = ?left, "probe failed");
                                states.push((p.name, State::Failed(reason)));
                            }
                        }
                    }
                    objects.push(obj);
                }
                Err(reason) => {
                    tracing::warn!(
                        object = object.name(),
                        %reason,
                        "eBPF object unavailable; its probes are reported failed"
                    );
                    for p in these {
                        states.push((p.name, State::Failed(reason.clone())));
                    }
                }
            }
        }
        states.sort_by_key(|(n, _)| PROBES.iter().position(|p| p.name == *n));
        // Only enabled probes have a series: a probe turned off on purpose is not "down".
        let attached = states
            .iter()
            .filter(|(_, s)| !matches!(s, State::Disabled))
            .map(|(n, s)| (*n, matches!(s, State::Active)))
            .collect();
        Probes {
            objects,
            states,
            metrics: Arc::new(ProbeMetrics { active, attached }),
        }
    }

    /// The loaded objects, e.g. for forwarding aya-log records.
    pub fn objects_mut(&mut self) -> impl Iterator<Item = &mut Ebpf> {
        self.objects.iter_mut()
    }

    /// Detaches and unloads every program now (also happens on drop).
    pub fn detach(&mut self) -> usize {
        http::stopping();
        let n = self.objects.iter().map(|o| o.programs().count()).sum();
        self.objects.clear();
        n
    }
}

/// Map sizes the configuration sets, per probe.
fn max_entries(ctx: &ProbeContext) -> Vec<(&'static str, u32)> {
    let mut v = syscalls::max_entries(ctx);
    v.extend(tcp::max_entries(ctx));
    v.extend(http::max_entries(ctx));
    v
}

/// aya-log-ebpf's level filter: records below the agent's log level are never written.
fn log_level(level: LogLevel) -> u8 {
    match level {
        LogLevel::Error => 1,
        LogLevel::Warn => 2,
        LogLevel::Info => 3,
        LogLevel::Debug => 4,
    }
}

/// The loader of every object: the kernel globals (each object has those of its own probes)
/// and the configured map sizes.
fn object_loader<'a>(
    level: &'a u8,
    g: &'a http::LoaderGlobals,
    sizes: &[(&'static str, u32)],
) -> EbpfLoader<'a> {
    let mut loader = EbpfLoader::new();
    // Task-local storage (the syscalls probe's per-thread state) has no user-space wrapper in
    // aya; the map is created all the same and only the kernel programs use it.
    loader.allow_unsupported_maps();
    loader.override_global(aya_log::LEVEL, level, false);
    loader.override_global(agent_common::http::GLOBAL_SELF_TGID, &g.self_tgid, false);
    loader.override_global(agent_common::http::GLOBAL_CAPTURE, &g.capture, false);
    loader.override_global(agent_common::http::GLOBAL_WAKE_BYTES, &g.wake_bytes, false);
    loader.override_global(
        agent_common::http::GLOBAL_CHECK_BYTES,
        &g.check_bytes,
        false,
    );
    loader.override_global(
        agent_common::http::GLOBAL_BATCH_BYTES,
        &g.batch_bytes,
        false,
    );
    loader.override_global(
        agent_common::http::GLOBAL_PORT_FILTER,
        &g.port_filter,
        false,
    );
    loader.override_global(agent_common::http::GLOBAL_TASK_STACK, &g.task_stack, false);
    loader.override_global(
        agent_common::http::GLOBAL_PT_REGS_TYPE,
        &g.pt_regs_type,
        false,
    );
    for (map, n) in sizes {
        loader.map_max_entries(map, *n);
    }
    loader
}

/// Loads `object` again over `obj`, with the map sizes the probes give now (for a probe that
/// asked with [`ProbeError::Reload`]; see [`Probes::load`]).
fn reload(
    obj: &mut Ebpf,
    object: Object,
    level: &u8,
    ctx: &ProbeContext,
) -> Result<(), ProbeError> {
    if PROBES.iter().filter(|p| p.object == object).count() != 1 {
        return Err(ProbeError::Load(format!(
            "{} holds several probes and cannot be loaded again for one",
            object.name()
        )));
    }
    let sizes = max_entries(ctx);
    // The globals as they are now (a probe asking for the reload may have changed them).
    let globals = http::loader_globals();
    let mut loader = object_loader(level, &globals, &sizes);
    *obj = load_object(&mut loader, object, &globals).map_err(ProbeError::Load)?;
    Ok(())
}

fn load_object(
    loader: &mut EbpfLoader<'_>,
    object: Object,
    g: &http::LoaderGlobals,
) -> Result<Ebpf, String> {
    let bytes = match object {
        Object::Http => http::object_bytes(object.bytes(), g),
        _ => object.bytes().into(),
    };
    if bytes.is_empty() {
        return Err(
            "this hostlens binary was built without its eBPF programs (AYA_BUILD_SKIP)".into(),
        );
    }
    loader.load(&bytes).map_err(|e| {
        let mut reason = format!(
            "loading the eBPF object {}: {}",
            object.name(),
            error_chain(&e)
        );
        if !is_root() {
            reason
                .push_str(" (not running as root: eBPF needs CAP_BPF and CAP_PERFMON, see README)");
        }
        reason
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Checks the result of deleting an idle entry from kernel map `map`: already gone is fine
/// (that is what was wanted); any other failure is logged, as the entry then stays.
pub fn removed(map: &'static str, r: Result<(), aya::maps::MapError>) {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(map, error = %e, "deleting an idle map entry failed; it stays"),
    }
}

/// Deletes an idle per-CPU hash entry, returning the values it held when deleted
/// ([`batch::take_per_cpu`]). On kernels without lookup-and-delete for per-CPU hashes (before
/// 5.14) it is a plain delete, which returns nothing.
pub fn take_idle<K: aya::Pod, V: aya::Pod>(
    name: &'static str,
    map: &mut aya::maps::PerCpuHashMap<aya::maps::MapData, K, V>,
    key: &K,
) -> Option<Vec<V>> {
    match batch::take_per_cpu::<_, K, V, _>(map, key) {
        Ok(values) => values,
        Err(e) => {
            tracing::debug!(map = name, error = %e, "lookup-and-delete refused; deleting without reading");
            removed(name, map.remove(key));
            None
        }
    }
}

/// Scrape-time output of every attached probe plus `hostlens_probe_attached{probe}`.
#[derive(Debug)]
pub struct ProbeMetrics {
    active: Vec<(&'static str, Box<dyn ProbeCollector>)>,
    attached: Vec<(&'static str, bool)>,
}

impl Collector for ProbeMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut out = Out::new(&mut encoder);
        let mut fam = out.family(
            "hostlens_probe_events_lost_total",
            "Events an eBPF probe could not record: a bounded kernel map or its ring buffer was full.",
            Kind::Counter,
        )?;
        let mut ok: Vec<(&'static str, bool)> = Vec::with_capacity(self.active.len());
        for (name, probe) in &self.active {
            match catch_unwind(AssertUnwindSafe(|| probe.events_lost())) {
                Ok(Ok(n)) => {
                    fam.sample(&[("probe", *name)], n as f64)?;
                    ok.push((*name, true));
                }
                Ok(Err(e)) => {
                    tracing::warn!(probe = name, error = %error_chain(&e), "reading lost events failed");
                    ok.push((*name, false));
                }
                Err(_) => {
                    tracing::error!(probe = name, "reading lost events panicked");
                    ok.push((*name, false));
                }
            }
        }
        drop(fam);
        let mut fam = out.family(
            "hostlens_probe_attached",
            "Whether the eBPF probe is loaded and attached (1) or not (0).",
            Kind::Gauge,
        )?;
        for (name, ok) in &self.attached {
            fam.sample(&[("probe", *name)], if *ok { 1.0 } else { 0.0 })?;
        }
        drop(fam);
        // One probe failing (a map read error, a panic) costs only its own families.
        for ((name, probe), (_, fine)) in self.active.iter().zip(ok.iter_mut()) {
            match catch_unwind(AssertUnwindSafe(|| {
                crate::faults::panic_at("probe", name);
                probe.collect(&mut out)
            })) {
                Ok(Ok(())) => {}
                Ok(Err(ProbeError::Encode(e))) => return Err(e),
                Ok(Err(e)) => {
                    tracing::warn!(probe = name, error = %error_chain(&e), "reading probe maps failed");
                    *fine = false;
                }
                Err(_) => {
                    tracing::error!(
                        probe = name,
                        "probe collection panicked; reported as failed"
                    );
                    *fine = false;
                }
            }
        }
        let mut fam = out.family(
            "hostlens_probe_scrape_success",
            "Whether the probe's maps were read for this scrape (1) or not (0).",
            Kind::Gauge,
        )?;
        for (name, fine) in &ok {
            fam.sample(&[("probe", *name)], if *fine { 1.0 } else { 0.0 })?;
        }
        Ok(())
    }
}
