//! `tcp` probe, kernel half.
//!
//! Hooks (tracepoints; record layouts in /sys/kernel/tracing/events/{sock,tcp}/*/format):
//! `sock:inet_sock_set_state` (connect, accept, listen, close, failures),
//! `tcp:tcp_retransmit_skb`, `tcp:tcp_send_reset`, `tcp:tcp_receive_reset`, `tcp:tcp_probe`
//! (smoothed RTT of every incoming segment on an established socket),
//! `sock:sock_send_length` / `sock:sock_recv_length` (bytes returned by sendmsg/recvmsg).
//! Produces, read by `agent/src/probes/tcp.rs`: `TCP_STATS` (per-CPU hash comm -> counters),
//! `TCP_HIST` (RTT and connection-duration log2 histograms), `TCP_LOST`. `TCP_SOCKS` and
//! `TCP_LISTENERS` attribute softirq-context events to the owning process group.
use agent_common::tcp::{
    AF_INET, AF_INET6, CLOSE_IN, CLOSE_OUT, CONNECT_FAIL, CommKey, DEFAULT_MAX_LISTENERS,
    DEFAULT_MAX_SERIES, DEFAULT_MAX_SOCKETS, F_ESTABLISHED, F_INBOUND, F_OUTBOUND, F_PENDING_OWNER,
    HIST_BUCKETS, HIST_DURATION, HIST_RTT, IPPROTO_TCP, MSG_PEEK, OPEN_IN, OPEN_OUT, RETRANS,
    RST_RECV, RST_SENT, RX_BYTES, SockOwner, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, TCP_SYN_RECV,
    TCP_SYN_SENT, TX_BYTES, TcpHist, TcpLost, TcpStats, log2_bucket, off,
};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::{RawTracePointContext, TracePointContext},
};

#[map(name = "TCP_SOCKS")]
static TCP_SOCKS: HashMap<u64, SockOwner> =
    HashMap::with_max_entries(DEFAULT_MAX_SOCKETS, BPF_F_NO_PREALLOC);

/// `agent_common::tcp::MAP_PENDING`: deleting an entry is atomic, so exactly one of a
/// socket's first use and its close finds it and counts the connection opened.
#[map(name = "TCP_PENDING")]
static TCP_PENDING: HashMap<u64, u8> =
    HashMap::with_max_entries(DEFAULT_MAX_SOCKETS, BPF_F_NO_PREALLOC);

#[map(name = "TCP_LISTENERS")]
static TCP_LISTENERS: HashMap<u32, CommKey> =
    HashMap::with_max_entries(DEFAULT_MAX_LISTENERS, BPF_F_NO_PREALLOC);

#[map(name = "TCP_STATS")]
static TCP_STATS: PerCpuHashMap<CommKey, TcpStats> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_SERIES, BPF_F_NO_PREALLOC);

#[map(name = "TCP_HIST")]
static TCP_HIST: PerCpuArray<TcpHist> = PerCpuArray::with_max_entries(2, 0);

#[map(name = "TCP_LOST")]
static TCP_LOST: PerCpuArray<TcpLost> = PerCpuArray::with_max_entries(1, 0);

const UNKNOWN: CommKey = CommKey { comm: [0; 16] };

/// Reads a field of the tracepoint record. Direct context loads are what the verifier allows
/// for tracepoints (bounded by the record size), and cheaper than bpf_probe_read.
#[inline(always)]
fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: offsets come from the tracepoint formats (agent_common::tcp::off), inside the
    // record; the verifier checks every context access.
    unsafe { *(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

#[inline(always)]
fn current() -> CommKey {
    match bpf_get_current_comm() {
        Ok(comm) => CommKey { comm },
        Err(_) => UNKNOWN,
    }
}

#[inline(always)]
fn lost(f: impl FnOnce(&mut TcpLost)) {
    if let Some(l) = TCP_LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it during this run.
        unsafe { f(&mut *l) }
    }
}

#[inline(always)]
fn stat(key: &CommKey, idx: usize, n: u64) {
    if idx >= agent_common::tcp::NSTATS {
        return;
    }
    if let Some(s) = TCP_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it during this run; idx < NSTATS.
        unsafe { (*s).v[idx] += n };
        return;
    }
    let mut v = TcpStats::default();
    v.v[idx] = n;
    if TCP_STATS.insert(key, v, BPF_NOEXIST.into()).is_err() {
        // Another CPU created it meanwhile: add to that entry.
        match TCP_STATS.get_ptr_mut(key) {
            // SAFETY: as above.
            Some(s) => unsafe { (*s).v[idx] += n },
            None => lost(|l| l.stats_full += 1),
        }
    }
}

#[inline(always)]
fn hist(index: u32, v_us: u64) {
    if let Some(h) = TCP_HIST.get_ptr_mut(index) {
        let b = log2_bucket(v_us);
        // SAFETY: per-CPU value, only this CPU writes it during this run; b < HIST_BUCKETS.
        unsafe {
            if b < HIST_BUCKETS {
                (*h).buckets[b] += 1;
            }
            (*h).sum_us += v_us;
        }
    }
}

#[inline(always)]
fn owner_of(sk: u64) -> CommKey {
    match TCP_SOCKS.get_ptr(sk) {
        // SAFETY: a map value, read once.
        Some(o) => CommKey {
            comm: unsafe { (*o).comm },
        },
        None => UNKNOWN,
    }
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn tcp_on_set_state(ctx: TracePointContext) -> u32 {
    match try_set_state(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_set_state(ctx: &TracePointContext) -> Result<u32, u32> {
    if field::<u16>(ctx, off::SET_STATE_PROTOCOL) != IPPROTO_TCP {
        return Ok(0);
    }
    let sk: u64 = field(ctx, off::SET_STATE_SKADDR);
    let old: i32 = field(ctx, off::SET_STATE_OLD);
    let new: i32 = field(ctx, off::SET_STATE_NEW);
    let sport = u32::from(field::<u16>(ctx, off::SET_STATE_SPORT));
    match (old, new) {
        // listen(2), in the listening process.
        (_, TCP_LISTEN) => {
            if TCP_LISTENERS.insert(sport, current(), 0).is_err() {
                lost(|l| l.listeners_full += 1);
            }
        }
        (TCP_LISTEN, _) => {
            let _ = TCP_LISTENERS.remove(sport);
        }
        // connect(2), in the connecting process.
        (TCP_CLOSE, TCP_SYN_SENT) => {
            let o = SockOwner {
                comm: current().comm,
                established_ns: 0,
                flags: F_OUTBOUND,
                pad: 0,
            };
            if TCP_SOCKS.insert(sk, o, 0).is_err() {
                lost(|l| l.socks_full += 1);
            }
        }
        // SYN-ACK received (softirq): the outbound connection is open.
        (TCP_SYN_SENT, TCP_ESTABLISHED) => match TCP_SOCKS.get_ptr_mut(sk) {
            // SAFETY: a map value; the socket lock serialises its state changes.
            Some(o) => unsafe {
                (*o).flags |= F_ESTABLISHED;
                (*o).established_ns = bpf_ktime_get_ns();
                stat(&CommKey { comm: (*o).comm }, OPEN_OUT, 1);
            },
            None => stat(&UNKNOWN, OPEN_OUT, 1),
        },
        // Refused, timed out or reset before established.
        (TCP_SYN_SENT, TCP_CLOSE) => {
            stat(&owner_of(sk), CONNECT_FAIL, 1);
            let _ = TCP_SOCKS.remove(sk);
        }
        // Handshake completed on a listener's child socket (softirq): accepted.
        (TCP_SYN_RECV, TCP_ESTABLISHED) => {
            let now = unsafe { bpf_ktime_get_ns() };
            let o = match TCP_LISTENERS.get_ptr(sport) {
                Some(l) => {
                    // SAFETY: a map value, read once.
                    let comm = unsafe { (*l).comm };
                    stat(&CommKey { comm }, OPEN_IN, 1);
                    SockOwner {
                        comm,
                        established_ns: now,
                        flags: F_INBOUND | F_ESTABLISHED,
                        pad: 0,
                    }
                }
                // Listener older than the probe: settled at first use in process context
                // (or at the close), whichever takes the TCP_PENDING entry. Without room
                // there it is counted now, owner unknown.
                None => {
                    let pending = TCP_PENDING.insert(sk, 1, 0).is_ok();
                    if !pending {
                        stat(&UNKNOWN, OPEN_IN, 1);
                    }
                    SockOwner {
                        comm: [0; 16],
                        established_ns: now,
                        flags: F_INBOUND
                            | F_ESTABLISHED
                            | if pending { F_PENDING_OWNER } else { 0 },
                        pad: 0,
                    }
                }
            };
            if TCP_SOCKS.insert(sk, o, 0).is_err() {
                lost(|l| l.socks_full += 1);
                if o.flags & F_PENDING_OWNER != 0 && TCP_PENDING.remove(sk).is_ok() {
                    stat(&UNKNOWN, OPEN_IN, 1);
                }
            }
        }
        (_, TCP_CLOSE) => {
            if let Some(o) = TCP_SOCKS.get_ptr(sk) {
                // SAFETY: a map value, copied before the entry is removed.
                let o = unsafe { *o };
                let _ = TCP_SOCKS.remove(sk);
                if o.flags & F_ESTABLISHED != 0 {
                    let key = CommKey { comm: o.comm };
                    // Not counted yet unless a first use on another CPU took the entry.
                    if o.flags & F_PENDING_OWNER != 0 && TCP_PENDING.remove(sk).is_ok() {
                        stat(&key, OPEN_IN, 1);
                    }
                    let idx = if o.flags & F_INBOUND != 0 {
                        CLOSE_IN
                    } else {
                        CLOSE_OUT
                    };
                    stat(&key, idx, 1);
                    let now = unsafe { bpf_ktime_get_ns() };
                    hist(HIST_DURATION, now.saturating_sub(o.established_ns) / 1000);
                }
            }
        }
        _ => {}
    }
    Ok(0)
}

// Retransmits and resets arrive in softirq context, often interrupting another tracing
// program on the same CPU. A classic tracepoint program is skipped then (the kernel's
// per-CPU bpf_prog_active guard, counted only in its recursion_misses); a raw tracepoint is
// guarded per program, so these are raw tracepoints. They only need the socket pointer, which
// is the first TP_PROTO argument of each (include/trace/events/tcp.h).

/// Kernels whose `tcp_retransmit_skb` carries a third argument, `err`, fire it for every
/// attempt, also one that sent nothing (e.g. -EBUSY: the original is still in the host's
/// queue, which the kernel does not count in `TcpRetransSegs`): only `err == 0` is a
/// retransmission. The agent attaches this program first; the kernel refuses it (context
/// access past the tracepoint's arguments) where there is no third argument.
#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_on_retransmit_err(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let err: u64 = ctx.arg(2);
    if err as i32 == 0 {
        stat(&owner_of(sk), RETRANS, 1);
    }
    0
}

/// Older kernels: the tracepoint fires only for a retransmission that was sent.
#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_on_retransmit(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    stat(&owner_of(sk), RETRANS, 1);
    0
}

#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn tcp_on_send_reset(ctx: RawTracePointContext) -> i32 {
    // No socket: the kernel answers a segment for which no socket exists.
    let sk: u64 = ctx.arg(0);
    let key = if sk == 0 { UNKNOWN } else { owner_of(sk) };
    stat(&key, RST_SENT, 1);
    0
}

#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn tcp_on_receive_reset(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    stat(&owner_of(sk), RST_RECV, 1);
    0
}

#[tracepoint(category = "tcp", name = "tcp_probe")]
pub fn tcp_on_probe(ctx: TracePointContext) -> u32 {
    // srtt is kept in µs << 3 (tp->srtt_us, net/ipv4/tcp_input.c).
    let srtt: u32 = field(&ctx, off::PROBE_SRTT);
    if srtt != 0 {
        hist(HIST_RTT, u64::from(srtt >> 3));
    }
    0
}

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn tcp_on_send_length(ctx: TracePointContext) -> u32 {
    on_length(&ctx, TX_BYTES);
    0
}

#[tracepoint(category = "sock", name = "sock_recv_length")]
pub fn tcp_on_recv_length(ctx: TracePointContext) -> u32 {
    on_length(&ctx, RX_BYTES);
    0
}

/// sendmsg/recvmsg returned on a TCP socket, in the calling process.
#[inline(always)]
fn on_length(ctx: &TracePointContext, idx: usize) {
    if field::<u16>(ctx, off::LENGTH_PROTOCOL) != IPPROTO_TCP {
        return;
    }
    let family: u16 = field(ctx, off::LENGTH_FAMILY);
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    let ret: i32 = field(ctx, off::LENGTH_RET);
    // A peek returns bytes a later read returns again.
    if ret <= 0 || (idx == RX_BYTES && field::<i32>(ctx, off::LENGTH_FLAGS) & MSG_PEEK != 0) {
        return;
    }
    let me = current();
    stat(&me, idx, ret as u64);
    let sk: u64 = field(ctx, off::LENGTH_SK);
    match TCP_SOCKS.get_ptr_mut(sk) {
        Some(o) => {
            // SAFETY: a map value; flags of one socket change under its lock or here. Of
            // two first uses on two CPUs, or a first use and the close, only the one that
            // deletes the TCP_PENDING entry counts the connection opened.
            unsafe {
                if (*o).flags & F_PENDING_OWNER != 0 {
                    if TCP_PENDING.remove(sk).is_ok() {
                        (*o).comm = me.comm;
                        stat(&me, OPEN_IN, 1);
                    }
                    (*o).flags &= !F_PENDING_OWNER;
                }
            }
        }
        // A socket older than the probe: its owner is whoever uses it.
        None => {
            let o = SockOwner {
                comm: me.comm,
                established_ns: 0,
                flags: 0,
                pad: 0,
            };
            // EEXIST: another CPU recorded it first, which is as good.
            if let Err(e) = TCP_SOCKS.insert(sk, o, BPF_NOEXIST.into())
                && e != -17
            {
                lost(|l| l.socks_full += 1);
            }
        }
    }
}
