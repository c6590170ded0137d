//! The `tcp` probe: TCP connections, failures, resets, retransmits, RTT and bytes per process
//! group, counted in the kernel from tracepoints.
//!
//! Events in process context are attributed to the current thread's `comm`. Events raised in
//! softirq context (handshake completion, retransmits, received resets, RTT samples) are
//! attributed through `TCP_SOCKS`, a bounded socket -> owner map filled at connect (process
//! context), at accept (the owner of the listening port, recorded at listen()), or when a
//! socket older than the agent is first seen sending or receiving; entries go at TCP_CLOSE.

/// Hash socket address -> [`SockOwner`].
pub const MAP_SOCKS: &str = "TCP_SOCKS";
/// Hash local port -> `comm` of the process that called listen() on it.
pub const MAP_LISTENERS: &str = "TCP_LISTENERS";
/// Hash `sk -> 1` of accepted sockets whose owner is not known yet ([`F_PENDING_OWNER`]):
/// the path that deletes the entry (first use or close) is the one that counts the
/// connection opened, so two CPUs never both count it.
pub const MAP_PENDING: &str = "TCP_PENDING";
/// Per-CPU hash `comm` -> [`TcpStats`].
pub const MAP_STATS: &str = "TCP_STATS";
/// Per-CPU array of two [`TcpHist`]: [`HIST_RTT`] and [`HIST_DURATION`].
pub const MAP_HIST: &str = "TCP_HIST";
/// Per-CPU array, one [`TcpLost`].
pub const MAP_LOST: &str = "TCP_LOST";

pub const DEFAULT_MAX_SOCKETS: u32 = 16384;
pub const DEFAULT_MAX_LISTENERS: u32 = 1024;
pub const DEFAULT_MAX_SERIES: u32 = 1024;

/// Index in [`MAP_HIST`]: smoothed RTT samples from `tcp:tcp_probe`, in µs.
pub const HIST_RTT: u32 = 0;
/// Index in [`MAP_HIST`]: connection lifetimes from established to close, in µs.
pub const HIST_DURATION: u32 = 1;
/// Log2 buckets of µs: bucket `i` holds `2^i <= v < 2^(i+1)` (0 and 1 in bucket 0); the last
/// one everything from 2^35 µs (~9.5 h) on.
pub const HIST_BUCKETS: usize = crate::syscalls::HIST_BUCKETS;

/// Indices into [`TcpStats::v`].
pub const OPEN_IN: usize = 0;
pub const OPEN_OUT: usize = 1;
pub const CLOSE_IN: usize = 2;
pub const CLOSE_OUT: usize = 3;
pub const CONNECT_FAIL: usize = 4;
pub const RETRANS: usize = 5;
pub const RST_SENT: usize = 6;
pub const RST_RECV: usize = 7;
pub const TX_BYTES: usize = 8;
pub const RX_BYTES: usize = 9;
pub const NSTATS: usize = 10;

/// [`SockOwner::flags`] bits.
pub const F_INBOUND: u32 = 1;
pub const F_OUTBOUND: u32 = 2;
/// Established while the probe ran (so its close is counted, with its duration).
pub const F_ESTABLISHED: u32 = 4;
/// Accepted on a port whose listener is unknown: the owner and the open are settled when the
/// socket is first used in process context.
pub const F_PENDING_OWNER: u32 = 8;

/// Key of [`MAP_STATS`]: a process group (`comm`, NUL padded). All zero for events whose
/// socket has no known owner.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CommKey {
    pub comm: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct TcpStats {
    pub v: [u64; NSTATS],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockOwner {
    pub comm: [u8; 16],
    /// ns (bpf_ktime_get_ns) when established, 0 before.
    pub established_ns: u64,
    pub flags: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct TcpHist {
    pub buckets: [u64; HIST_BUCKETS],
    /// Sum of the samples, in µs.
    pub sum_us: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct TcpLost {
    /// Sockets not tracked because [`MAP_SOCKS`] was full.
    pub socks_full: u64,
    /// Events not counted because [`MAP_STATS`] was full.
    pub stats_full: u64,
    /// Listening ports not recorded because [`MAP_LISTENERS`] was full.
    pub listeners_full: u64,
}

/// TCP states (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_SENT: i32 = 2;
pub const TCP_SYN_RECV: i32 = 3;
pub const TCP_CLOSE: i32 = 7;
pub const TCP_LISTEN: i32 = 10;

pub const IPPROTO_TCP: u16 = 6;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const MSG_PEEK: i32 = 2;

/// Field offsets of the tracepoint records used, from
/// /sys/kernel/tracing/events/{sock,tcp}/*/format (stable since 5.x for these fields).
pub mod off {
    pub const SET_STATE_SKADDR: usize = 8;
    pub const SET_STATE_OLD: usize = 16;
    pub const SET_STATE_NEW: usize = 20;
    pub const SET_STATE_SPORT: usize = 24;
    pub const SET_STATE_PROTOCOL: usize = 30;
    pub const RETRANSMIT_SKADDR: usize = 16;
    pub const SEND_RESET_SKADDR: usize = 16;
    pub const RECEIVE_RESET_SKADDR: usize = 8;
    pub const PROBE_SRTT: usize = 100;
    pub const PROBE_SKADDR: usize = 128;
    pub const LENGTH_SK: usize = 8;
    pub const LENGTH_FAMILY: usize = 16;
    pub const LENGTH_PROTOCOL: usize = 18;
    pub const LENGTH_RET: usize = 20;
    pub const LENGTH_FLAGS: usize = 24;
}

pub use crate::syscalls::log2_bucket;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: each type is `repr(C)`, made only of integers, with no padding.
    unsafe impl aya::Pod for CommKey {}
    unsafe impl aya::Pod for TcpStats {}
    unsafe impl aya::Pod for SockOwner {}
    unsafe impl aya::Pod for TcpHist {}
    unsafe impl aya::Pod for TcpLost {}
}
