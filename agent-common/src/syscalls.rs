//! The `syscalls` probe: node-wide count of every syscall by number.
//!
//! Kernel side: `raw_tracepoint/sys_enter` increments slot `id` of a per-CPU array of counters.
//! User side: sums the per-CPU copies at scrape time.

/// Name of the per-CPU map holding the counters; one entry, a [`SyscallCounts`].
pub const MAP_COUNTS: &str = "SYSCALL_COUNTS";

/// Syscall numbers are table indices; x86_64 uses fewer than 470 today. Ids at or above this
/// (and the `-1` the kernel reports for some ptrace cases) land in [`OVERFLOW_SLOT`].
pub const MAX_SYSCALLS: usize = 512;

/// Slot counting syscalls whose id does not fit in the table.
pub const OVERFLOW_SLOT: usize = MAX_SYSCALLS - 1;

/// One CPU's counters, indexed by syscall number. A single array value (4 KiB per CPU) lets the
/// agent read every counter of every CPU with one `bpf(BPF_MAP_LOOKUP_ELEM)` per scrape.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallCounts {
    pub count: [u64; MAX_SYSCALLS],
}

#[cfg(feature = "user")]
// SAFETY: `SyscallCounts` is `repr(C)`, made only of `u64`s, with no padding.
unsafe impl aya::Pod for SyscallCounts {}
