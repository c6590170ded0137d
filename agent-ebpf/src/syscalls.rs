//! `syscalls` probe, kernel half.
//!
//! Hooks: `raw_tracepoint/sys_enter` (args `struct pt_regs *regs, long id`) and
//! `raw_tracepoint/sys_exit` (args `struct pt_regs *regs, long ret`); see
//! include/trace/events/syscalls.h. Produces, read by `agent/src/probes/syscalls.rs`:
//! - `SYSCALL_STATS`: per-CPU hash `(comm, nr)` -> calls, errors (ret < 0);
//! - `SYSCALL_HIST`: per-CPU array by nr -> log2 latency histogram (ns);
//! - `SYSCALL_LOST`: per-CPU counts of events the bounded maps refused.
//!
//! Per syscall: one LRU-hash lookup (or insert for a new thread) at entry, one LRU lookup, one
//! per-CPU-hash lookup and one array update at exit. Nothing goes to userspace per event.
use agent_common::syscalls::{
    DEFAULT_MAX_STATS, DEFAULT_MAX_THREADS, HIST_BUCKETS, MAX_SYSCALLS, NR_EXIT, NR_EXIT_GROUP,
    OVERFLOW_SLOT, SyscallHist, SyscallKey, SyscallLost, SyscallStart, SyscallStats, log2_bucket,
};
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
};
use aya_log_ebpf::debug;

// Sizes are defaults; the agent sets `syscalls.max_series` / `syscalls.max_threads` at load.
#[map(name = "SYSCALL_STATS")]
static SYSCALL_STATS: PerCpuHashMap<SyscallKey, SyscallStats> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_STATS, BPF_F_NO_PREALLOC);

#[map(name = "SYSCALL_START")]
static SYSCALL_START: LruHashMap<u32, SyscallStart> =
    LruHashMap::with_max_entries(DEFAULT_MAX_THREADS, 0);

#[map(name = "SYSCALL_HIST")]
static SYSCALL_HIST: PerCpuArray<SyscallHist> =
    PerCpuArray::with_max_entries(MAX_SYSCALLS as u32, 0);

#[map(name = "SYSCALL_LOST")]
static SYSCALL_LOST: PerCpuArray<SyscallLost> = PerCpuArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn syscalls_sys_enter(ctx: RawTracePointContext) -> i32 {
    match try_sys_enter(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn syscalls_sys_exit(ctx: RawTracePointContext) -> i32 {
    match try_sys_exit(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

/// Syscall ids outside the table (negative ids of ptrace-cancelled syscalls, future numbers)
/// share one slot so they are counted, not lost.
#[inline(always)]
fn slot(ctx: &RawTracePointContext, id: i64) -> u32 {
    if id >= 0 && (id as usize) < OVERFLOW_SLOT {
        id as u32
    } else {
        // Rare by nature; written only when the agent runs at debug level (AYA_LOG_LEVEL).
        debug!(ctx, "syscall id {} is outside the syscall table", id);
        OVERFLOW_SLOT as u32
    }
}

#[inline(always)]
fn try_sys_enter(ctx: &RawTracePointContext) -> Result<i32, i32> {
    let id: i64 = ctx.arg(1);
    let nr = slot(ctx, id);
    if nr == NR_EXIT || nr == NR_EXIT_GROUP {
        // These never reach sys_exit.
        count(nr, false);
        return Ok(0);
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let now = unsafe { bpf_ktime_get_ns() };
    match SYSCALL_START.get_ptr_mut(tid) {
        // SAFETY: the entry belongs to this thread, which is running here; only it writes.
        Some(p) => unsafe {
            (*p).start_ns = now;
            (*p).nr = nr;
        },
        None => {
            let v = SyscallStart {
                start_ns: now,
                nr,
                pad: 0,
            };
            if SYSCALL_START.insert(tid, v, 0).is_err() {
                lost(|l| l.start_full += 1);
            }
        }
    }
    Ok(0)
}

#[inline(always)]
fn try_sys_exit(ctx: &RawTracePointContext) -> Result<i32, i32> {
    let ret: i64 = ctx.arg(1);
    let tid = bpf_get_current_pid_tgid() as u32;
    // A thread already inside a syscall when the probe attached has no start: skip that one.
    let start = SYSCALL_START.get_ptr_mut(tid).ok_or(0)?;
    // SAFETY: as above, only this thread touches its entry.
    let (start_ns, nr) = unsafe { ((*start).start_ns, (*start).nr) };
    if start_ns == 0 {
        return Ok(0);
    }
    // Mark consumed so that a missed entry is never counted twice.
    unsafe { (*start).start_ns = 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    count(nr, ret < 0);
    let d = now.wrapping_sub(start_ns);
    if let Some(h) = SYSCALL_HIST.get_ptr_mut(nr) {
        let b = log2_bucket(d);
        // SAFETY: per-CPU value, only this CPU writes it during this run; b < HIST_BUCKETS.
        unsafe {
            if b < HIST_BUCKETS {
                (*h).buckets[b] += 1;
            }
            (*h).sum_ns += d;
        }
    }
    Ok(0)
}

#[inline(always)]
fn count(nr: u32, error: bool) {
    let Ok(comm) = bpf_get_current_comm() else {
        return;
    };
    let key = SyscallKey { comm, nr, pad: 0 };
    let errors = u64::from(error);
    match SYSCALL_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it during this run.
        Some(s) => unsafe {
            (*s).calls += 1;
            (*s).errors += errors;
        },
        None => {
            let v = SyscallStats { calls: 1, errors };
            // Another CPU may create the key at the same moment: then add to its entry.
            if SYSCALL_STATS.insert(key, v, BPF_NOEXIST.into()).is_err() {
                match SYSCALL_STATS.get_ptr_mut(key) {
                    // SAFETY: as above.
                    Some(s) => unsafe {
                        (*s).calls += 1;
                        (*s).errors += errors;
                    },
                    None => lost(|l| l.stats_full += 1),
                }
            }
        }
    }
}

#[inline(always)]
fn lost(f: impl FnOnce(&mut SyscallLost)) {
    if let Some(l) = SYSCALL_LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it during this run.
        unsafe { f(&mut *l) }
    }
}
