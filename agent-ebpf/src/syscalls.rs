//! `syscalls` probe, kernel half.
//!
//! Hooks: `raw_tracepoint/sys_enter` (args `struct pt_regs *regs, long id`) and
//! `raw_tracepoint/sys_exit` (args `struct pt_regs *regs, long ret`); see
//! include/trace/events/syscalls.h. `tp_btf/task_rename` (args `struct task_struct *task,
//! const char *comm`, include/trace/events/task.h) keeps the cached name right. Produces, read
//! by `agent/src/probes/syscalls.rs`:
//! - `SYSCALL_STATS`: per-CPU hash `(comm, nr)` -> calls, errors (ret < 0);
//! - `SYSCALL_HIST`: per-CPU array by nr -> log2 latency histogram (ns);
//! - `SYSCALL_LOST`: per-CPU counts of events the bounded maps refused.
//!
//! A 32-bit (ia32) syscall — `TS_COMPAT` in the thread's `thread_info.status` — is numbered by
//! the ia32 table: `SYSCALL_IA32` (filled by the agent) gives the slot it is counted under.
//!
//! Per syscall: one load of the thread's status, one task-local storage lookup and one clock
//! read at entry; the same lookup, one clock read, one per-CPU-hash lookup and one array update
//! at exit. The thread's `comm` comes from its task-local value (read with
//! `bpf_get_current_comm` once per thread, replaced at every rename), not from a helper call
//! per syscall. Nothing goes to userspace per event.
use agent_common::syscalls::{
    DEFAULT_MAX_STATS, HIST_BUCKETS, MAX_SYSCALLS, NR_EXIT, NR_EXIT_GROUP, OVERFLOW_SLOT,
    SyscallHist, SyscallKey, SyscallLost, SyscallStats, SyscallTask, log2_bucket,
};
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, task_struct},
    helpers::{
        bpf_get_current_comm, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes,
        generated::bpf_get_current_task_btf,
    },
    macros::{btf_map, btf_tracepoint, map, raw_tracepoint},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use aya_log_ebpf::debug;

use crate::local_storage::TaskStorage;

// Size is a default; the agent sets `syscalls.max_series` at load.
#[map(name = "SYSCALL_STATS")]
static SYSCALL_STATS: PerCpuHashMap<SyscallKey, SyscallStats> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_STATS, BPF_F_NO_PREALLOC);

#[btf_map(name = "SYSCALL_TASK")]
static SYSCALL_TASK: TaskStorage<SyscallTask> = TaskStorage::new();

#[map(name = "SYSCALL_HIST")]
static SYSCALL_HIST: PerCpuArray<SyscallHist> =
    PerCpuArray::with_max_entries(MAX_SYSCALLS as u32, 0);

#[map(name = "SYSCALL_LOST")]
static SYSCALL_LOST: PerCpuArray<SyscallLost> = PerCpuArray::with_max_entries(1, 0);

/// ia32 syscall number -> slot (the agent fills every entry before attaching).
#[map(name = "SYSCALL_IA32")]
static SYSCALL_IA32: Array<u32> = Array::with_max_entries(MAX_SYSCALLS as u32, 0);

/// `TS_COMPAT` in x86's `thread_info.status` (arch/x86/include/asm/thread_info.h): set from a
/// 32-bit syscall's entry to its return to user mode.
const TS_COMPAT: u32 = 0x0002;
/// Offset of `thread_info.status` in `struct task_struct` (x86: `thread_info` comes first,
/// then `flags` and `syscall_work`, 8 bytes each; checked against the kernel's BTF by the
/// verifier).
const TASK_TI_STATUS: usize = 16;

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

/// A thread is renamed (exec, `prctl(PR_SET_NAME)`, a write to `/proc/PID/comm`): its cached
/// name becomes the new one. The tracepoint fires before the kernel copies the name, so the
/// name is taken from the argument, not from the task.
#[btf_tracepoint(function = "task_rename")]
pub fn syscalls_task_rename(ctx: BtfTracePointContext) -> i32 {
    let task: *mut task_struct = ctx.arg(0);
    let comm: *const u8 = ctx.arg(1);
    let Some(t) = SYSCALL_TASK.of(task) else {
        // Not seen yet: its first syscall reads the name.
        return 0;
    };
    let mut name = [0u8; 16];
    // SAFETY: reads at most 16 bytes of a kernel string; the helper checks the address.
    if unsafe { bpf_probe_read_kernel_str_bytes(comm, &mut name) }.is_ok() {
        // SAFETY: the value lives as long as the task, which the tracepoint holds.
        unsafe {
            (*t).comm = name;
            (*t).comm_ok = 1;
        }
    } else {
        // Read again at the thread's next syscall exit.
        // SAFETY: as above.
        unsafe { (*t).comm_ok = 0 };
    }
    0
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

/// Whether `task` (the current one) is in a 32-bit syscall.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
fn in_ia32_syscall(task: *mut task_struct) -> bool {
    // SAFETY: `task` is the BTF-typed current task; a plain load the verifier checks against
    // `struct task_struct`.
    let status =
        unsafe { core::ptr::read_volatile(task.cast::<u8>().add(TASK_TI_STATUS).cast::<u32>()) };
    status & TS_COMPAT != 0
}

/// Only x86 has the ia32 ABI.
#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
fn in_ia32_syscall(_task: *mut task_struct) -> bool {
    false
}

/// The slot of ia32 syscall `id`.
#[inline(always)]
fn ia32_slot(id: i64) -> u32 {
    if id < 0 || id >= MAX_SYSCALLS as i64 {
        return OVERFLOW_SLOT as u32;
    }
    SYSCALL_IA32
        .get(id as u32)
        .copied()
        .filter(|s| (*s as usize) < MAX_SYSCALLS)
        .unwrap_or(OVERFLOW_SLOT as u32)
}

#[inline(always)]
fn try_sys_enter(ctx: &RawTracePointContext) -> Result<i32, i32> {
    let id: i64 = ctx.arg(1);
    // SAFETY: no arguments; returns the running task.
    let task = unsafe { bpf_get_current_task_btf() };
    let nr = if in_ia32_syscall(task) {
        ia32_slot(id)
    } else {
        slot(ctx, id)
    };
    let Some(t) = SYSCALL_TASK.of_or_zeroed(task) else {
        lost(|l| l.start_full += 1);
        return Ok(0);
    };
    if nr == NR_EXIT || nr == NR_EXIT_GROUP {
        // These never reach sys_exit.
        count(t, nr, false);
        return Ok(0);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the value belongs to this thread, which is running here; only it writes the
    // start (task_rename writes the name fields only).
    unsafe {
        (*t).start_ns = now;
        (*t).nr = nr;
    }
    Ok(0)
}

#[inline(always)]
fn try_sys_exit(ctx: &RawTracePointContext) -> Result<i32, i32> {
    let ret: i64 = ctx.arg(1);
    // A thread already inside a syscall when the probe attached has no start: skip that one.
    let t = SYSCALL_TASK.current().ok_or(0)?;
    // SAFETY: as above.
    let (start_ns, nr) = unsafe { ((*t).start_ns, (*t).nr) };
    if start_ns == 0 {
        return Ok(0);
    }
    // Mark consumed so that a missed entry is never counted twice.
    unsafe { (*t).start_ns = 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    count(t, nr, ret < 0);
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
fn count(t: *mut SyscallTask, nr: u32, error: bool) {
    // SAFETY: `t` is this thread's own value (see try_sys_enter).
    let comm = unsafe {
        if (*t).comm_ok == 0 {
            let Ok(comm) = bpf_get_current_comm() else {
                return;
            };
            (*t).comm = comm;
            (*t).comm_ok = 1;
        }
        (*t).comm
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
