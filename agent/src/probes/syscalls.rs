//! `syscalls` probe, user half: attaches `tp_btf/task_rename` (keeps the kernel's cached
//! thread names right), then `raw_tracepoint/sys_enter` and `sys_exit`, and, at scrape time, reads the kernel's aggregates into
//! - `syscalls_total{process_name,syscall}`, `syscall_errors_total{process_name,syscall}`
//!   (from the per-CPU hash `(comm, nr)`; `process_name` bounded by [`crate::procnames`]);
//! - `syscall_duration_seconds{syscall}` (histogram from the per-CPU log2 arrays, exported with
//!   the fixed bounds [`BOUNDS_LOG2_NS`]);
//! - events the bounded maps refused, for `hostlens_probe_events_lost_total{probe="syscalls"}`.
use std::{sync::Mutex, time::Instant};

use agent_common::syscalls::{
    HIST_BUCKETS, MAP_HIST, MAP_IA32, MAP_LOST, MAP_STATS, OVERFLOW_SLOT, SyscallHist, SyscallKey,
    SyscallLost, SyscallStats,
};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap},
};

use super::{ProbeCollector, ProbeContext, ProbeError, batch, syscall_names};
use crate::{
    emit::{Kind, Out},
    procnames::{GroupCounters, Reading, comm_bytes, comm_label},
};

const PROGRAMS: [(&str, &str); 2] = [
    ("syscalls_sys_enter", "sys_enter"),
    ("syscalls_sys_exit", "sys_exit"),
];

/// Exported histogram bounds, as powers of two in ns: 2^10 ns (~1 µs) to 2^34 ns (~17 s), a
/// factor 4 apart. They coincide with bounds of the kernel's log2 buckets, so every exported
/// cumulative count is exact (a duration of exactly 2^k ns counts in the next bucket).
pub const BOUNDS_LOG2_NS: [usize; 13] = [10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34];

/// Map sizes from the configuration, applied before the object is loaded.
pub fn max_entries(ctx: &ProbeContext) -> Vec<(&'static str, u32)> {
    vec![(MAP_STATS, ctx.config.syscalls.max_series)]
}

struct State {
    stats: PerCpuHashMap<MapData, SyscallKey, SyscallStats>,
    counters: GroupCounters<u32, 2>,
}

pub struct SyscallsProbe {
    state: Mutex<State>,
    hist: PerCpuArray<MapData, SyscallHist>,
    lost: PerCpuArray<MapData, SyscallLost>,
    /// Held for the programs' life: they were relocated against its fd.
    _ia32: Array<MapData, u32>,
}

impl std::fmt::Debug for SyscallsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyscallsProbe")
    }
}

pub fn attach(ebpf: &mut Ebpf, ctx: &ProbeContext) -> Result<Box<dyn ProbeCollector>, ProbeError> {
    if let Some(n) = ctx.config.syscalls.max_threads {
        tracing::warn!(
            max_threads = n,
            "syscalls.max_threads is no longer used (per-thread state lives in task-local \
             storage, freed with each thread); remove it from the configuration"
        );
    }
    // Before the syscall hooks: an ia32 syscall must never meet an empty entry (slot 0, read).
    let mut ia32: Array<_, u32> = super::take_map(ebpf, MAP_IA32)?;
    for (nr, slot) in syscall_names::ia32_slots().into_iter().enumerate() {
        ia32.set(nr as u32, slot, 0)
            .map_err(super::map_err(MAP_IA32))?;
    }
    // First: without it, a process would keep the name its parent had before exec.
    super::attach_btf_tracepoint(ebpf, ctx, "syscalls_task_rename", "task_rename")?;
    for (name, tp) in PROGRAMS {
        super::attach_raw_tracepoint(ebpf, name, tp)?;
    }
    let stats = super::take_map(ebpf, MAP_STATS)?;
    let hist = super::take_map(ebpf, MAP_HIST)?;
    let lost = super::take_map(ebpf, MAP_LOST)?;
    Ok(Box::new(SyscallsProbe {
        state: Mutex::new(State {
            stats,
            counters: GroupCounters::new(ctx.config.process_names.limits()),
        }),
        hist,
        lost,
        _ia32: ia32,
    }))
}

/// Calls and errors of one `(comm, nr)` entry, summed over CPUs.
fn sum(per_cpu: &[SyscallStats]) -> [u64; 2] {
    per_cpu.iter().fold([0, 0], |[c, e], v| {
        [c.wrapping_add(v.calls), e.wrapping_add(v.errors)]
    })
}

/// The `syscall` label of a table slot.
fn syscall_label(nr: usize) -> std::borrow::Cow<'static, str> {
    match syscall_names::name(nr) {
        Some(n) => n.into(),
        None if nr == OVERFLOW_SLOT => "unknown".into(),
        None => format!("syscall_{nr}").into(),
    }
}

/// Folds the kernel's log2 buckets into the exported ones: `(upper bound s, count in it)`.
pub fn export_buckets(log2: &[u64; HIST_BUCKETS]) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(BOUNDS_LOG2_NS.len() + 1);
    let mut from = 0;
    for k in BOUNDS_LOG2_NS {
        let n = log2[from..k].iter().sum();
        out.push(((1u64 << k) as f64 / 1e9, n));
        from = k;
    }
    out.push((f64::INFINITY, log2[from..].iter().sum()));
    out
}

impl SyscallsProbe {
    /// Reads the per-CPU stats map into the exported counters; deletes idle entries.
    fn refresh(&self, state: &mut State) -> Result<(), ProbeError> {
        let mut readings: Vec<Reading<u32, 2>> = Vec::new();
        let entries = batch::per_cpu_entries::<_, SyscallKey, SyscallStats, _>(&state.stats)
            .map_err(|e| ProbeError::Batch {
                map: MAP_STATS,
                source: e,
            })?;
        for (key, per_cpu) in entries {
            readings.push((comm_label(&key.comm), key.nr, sum(&per_cpu)));
        }
        let now = Instant::now();
        let stale = state.counters.update(readings, now);
        for reading in stale {
            let Some(comm) = comm_bytes(&reading.0) else {
                tracing::warn!(group = %reading.0, "syscalls probe: no kernel key for an idle group; its entry stays");
                continue;
            };
            let key = SyscallKey {
                comm,
                nr: reading.1,
                pad: 0,
            };
            if let Some(per_cpu) = super::take_idle(MAP_STATS, &mut state.stats, &key) {
                state.counters.fold_late(reading, sum(&per_cpu), now);
            }
        }
        Ok(())
    }

    /// Every syscall's histogram summed over CPUs: log2 buckets, then the sum in ns.
    fn histograms(&self) -> Result<Vec<(u32, [u64; HIST_BUCKETS + 1])>, ProbeError> {
        let entries =
            batch::per_cpu_entries::<_, u32, SyscallHist, _>(&self.hist).map_err(|e| {
                ProbeError::Batch {
                    map: MAP_HIST,
                    source: e,
                }
            })?;
        let mut out = Vec::new();
        for (nr, per_cpu) in entries {
            let mut h = [0u64; HIST_BUCKETS + 1];
            for cpu in &per_cpu {
                for (t, c) in h.iter_mut().zip(cpu.buckets.iter()) {
                    *t = t.wrapping_add(*c);
                }
                h[HIST_BUCKETS] = h[HIST_BUCKETS].wrapping_add(cpu.sum_ns);
            }
            if h[..HIST_BUCKETS].iter().any(|c| *c > 0) {
                out.push((nr, h));
            }
        }
        Ok(out)
    }
}

impl ProbeCollector for SyscallsProbe {
    fn collect(&self, out: &mut Out<'_, '_>) -> Result<(), ProbeError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(&mut state)?;
        // Every map is read before any family is written: a failed read leaves this probe's
        // families out of the scrape whole (scrape_success 0), not half written.
        let histograms = self.histograms()?;
        let series = state.counters.series();
        let mut fam = out.family(
            "syscalls_total",
            "System calls made, by process group (comm) and syscall (x86_64 names).",
            Kind::Counter,
        )?;
        for ((name, nr), [calls, _]) in series {
            let label = syscall_label(*nr as usize);
            fam.sample(
                &[("process_name", name.as_str()), ("syscall", label.as_ref())],
                *calls as f64,
            )?;
        }
        drop(fam);
        let mut fam = out.family(
            "syscall_errors_total",
            "System calls that returned an error (return value < 0), by process group and syscall.",
            Kind::Counter,
        )?;
        for ((name, nr), [_, errors]) in series.iter().filter(|(_, v)| v[1] > 0) {
            let label = syscall_label(*nr as usize);
            fam.sample(
                &[("process_name", name.as_str()), ("syscall", label.as_ref())],
                *errors as f64,
            )?;
        }
        drop(fam);
        let mut fam = out.family(
            "syscall_duration_seconds",
            "Time from syscall entry to return, by syscall (kernel log2 buckets).",
            Kind::Histogram,
        )?;
        for (nr, h) in histograms {
            let mut log2 = [0u64; HIST_BUCKETS];
            log2.copy_from_slice(&h[..HIST_BUCKETS]);
            let count: u64 = log2.iter().sum();
            if count == 0 {
                continue;
            }
            let label = syscall_label(nr as usize);
            fam.histogram(
                &[("syscall", label.as_ref())],
                h[HIST_BUCKETS] as f64 / 1e9,
                count,
                &export_buckets(&log2),
            )?;
        }
        Ok(())
    }

    fn events_lost(&self) -> Result<u64, ProbeError> {
        let per_cpu = self.lost.get(&0, 0).map_err(super::map_err(MAP_LOST))?;
        Ok(per_cpu.iter().fold(0u64, |a, l| {
            a.wrapping_add(l.stats_full).wrapping_add(l.start_full)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_buckets_partition_the_log2_buckets() {
        let mut log2 = [0u64; HIST_BUCKETS];
        for (i, b) in log2.iter_mut().enumerate() {
            *b = i as u64 + 1;
        }
        let out = export_buckets(&log2);
        assert_eq!(out.len(), BOUNDS_LOG2_NS.len() + 1);
        let total: u64 = out.iter().map(|(_, n)| n).sum();
        assert_eq!(total, log2.iter().sum::<u64>());
        // le = 2^10 ns holds buckets 0..10 (durations < 1024 ns).
        assert_eq!(out[0], (1024.0 / 1e9, (1..=10).sum()));
        assert_eq!(out.last().unwrap().0, f64::INFINITY);
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_label(b"python3\0\0\0\0\0\0\0\0\0"), "python3");
        assert_eq!(comm_label(b"0123456789abcdef"), "0123456789abcdef");
    }
}
