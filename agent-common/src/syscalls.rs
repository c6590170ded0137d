//! The `syscalls` probe: syscalls, failures and latency per process group, counted in the kernel.
//!
//! Kernel side: `raw_tracepoint/sys_enter` stores `(start ns, nr)` in the thread's task-local
//! storage; `raw_tracepoint/sys_exit` takes it back, adds one call (and one error when the
//! return value is negative) to the per-CPU hash entry `(comm, nr)`, and the duration to the
//! per-CPU log2 histogram of `nr`. The thread's `comm` is read once and kept in the same
//! task-local value; `tp_btf/task_rename` (exec, `prctl(PR_SET_NAME)`, writes to
//! `/proc/PID/comm`) replaces it with the new name. `exit`/`exit_group` never return, so they are
//! counted at entry. A 32-bit (ia32) syscall is counted under the slot [`MAP_IA32`] gives its
//! number. User side: sums the per-CPU copies at scrape time.

/// Per-CPU hash `(comm, nr)` -> [`SyscallStats`].
pub const MAP_STATS: &str = "SYSCALL_STATS";
/// Task-local storage -> [`SyscallTask`]: the syscall the thread is in and its cached `comm`.
/// The kernel frees a thread's value with the thread, so it needs no size.
pub const MAP_TASK: &str = "SYSCALL_TASK";
/// Per-CPU array indexed by syscall number -> [`SyscallHist`].
pub const MAP_HIST: &str = "SYSCALL_HIST";
/// Per-CPU array, one [`SyscallLost`]: events the bounded maps could not take.
pub const MAP_LOST: &str = "SYSCALL_LOST";
/// Array indexed by ia32 (32-bit) syscall number -> the table slot it is counted under
/// (filled by the agent at load; see `agent/src/probes/syscall_names.rs`).
pub const MAP_IA32: &str = "SYSCALL_IA32";

/// Default size of [`MAP_STATS`] (distinct `(comm, syscall)` pairs); `syscalls.max_series`.
pub const DEFAULT_MAX_STATS: u32 = 4096;

/// Syscall numbers are table indices; x86_64 uses fewer than 470 today. Ids at or above this
/// (and the `-1` the kernel reports for some ptrace cases) land in [`OVERFLOW_SLOT`].
pub const MAX_SYSCALLS: usize = 512;

/// Slot counting syscalls whose id does not fit in the table.
pub const OVERFLOW_SLOT: usize = MAX_SYSCALLS - 1;

/// Log2 latency buckets: bucket `i` counts durations `d` (ns) with `2^i <= d < 2^(i+1)`
/// (bucket 0 also holds 0 and 1 ns); the last bucket holds everything from `2^(N-1)` ns
/// (~34 s) on.
pub const HIST_BUCKETS: usize = 36;

/// Table slots (x86_64 numbers) of the two syscalls that never return (counted at entry).
pub const NR_EXIT: u32 = 60;
pub const NR_EXIT_GROUP: u32 = 231;

/// Key of [`MAP_STATS`]: the calling thread's `comm` (as `/proc/PID/comm`, NUL padded) and the
/// syscall number.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SyscallKey {
    pub comm: [u8; 16],
    pub nr: u32,
    pub pad: u32,
}

/// One CPU's counts for a [`SyscallKey`].
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SyscallStats {
    pub calls: u64,
    pub errors: u64,
}

/// Value of [`MAP_TASK`], one per thread.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SyscallTask {
    /// Entry time of the syscall in progress; 0 when none is (or it was already counted).
    pub start_ns: u64,
    pub nr: u32,
    /// 1 once [`SyscallTask::comm`] holds the thread's name.
    pub comm_ok: u32,
    pub comm: [u8; 16],
}

/// One CPU's latency histogram of one syscall: log2 buckets and the sum in ns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallHist {
    pub buckets: [u64; HIST_BUCKETS],
    pub sum_ns: u64,
}

/// Events the bounded maps could not take, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SyscallLost {
    /// `(comm, nr)` pairs not counted because [`MAP_STATS`] was full.
    pub stats_full: u64,
    /// Syscall entries whose start could not be stored (the kernel could not allocate the
    /// thread's task-local value, or it was busy).
    pub start_full: u64,
}

/// Log2 bucket of a duration in ns, without loops (the verifier likes straight code).
#[inline(always)]
pub fn log2_bucket(mut v: u64) -> usize {
    let mut r = 0usize;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    if r >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        r
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: each type is `repr(C)`, made only of integers, with no padding.
    unsafe impl aya::Pod for SyscallKey {}
    unsafe impl aya::Pod for SyscallStats {}
    unsafe impl aya::Pod for SyscallTask {}
    unsafe impl aya::Pod for SyscallHist {}
    unsafe impl aya::Pod for SyscallLost {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_bucket_matches_ilog2() {
        for v in [
            0u64,
            1,
            2,
            3,
            4,
            7,
            8,
            1000,
            1 << 20,
            (1 << 33) + 5,
            u64::MAX,
        ] {
            let want = if v == 0 {
                0
            } else {
                (v.ilog2() as usize).min(HIST_BUCKETS - 1)
            };
            assert_eq!(log2_bucket(v), want, "{v}");
        }
    }
}
