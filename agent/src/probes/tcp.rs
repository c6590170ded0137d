//! `tcp` probe, user half: attaches the tracepoints `sock:inet_sock_set_state`,
//! `tcp:tcp_retransmit_skb`, `tcp:tcp_send_reset`, `tcp:tcp_receive_reset`, `tcp:tcp_probe`,
//! `sock:sock_send_length`, `sock:sock_recv_length` and, at scrape time, reads the kernel's
//! per-process-group counters into
//! `tcp_connections_opened_total{process_name,direction}`,
//! `tcp_connections_closed_total{process_name,direction}`, `tcp_connect_failures_total`,
//! `tcp_retransmits_total`, `tcp_resets_total{process_name,direction}`,
//! `process_network_{transmit,receive}_bytes_total{process_name}`, and the histograms
//! `tcp_rtt_seconds` and `tcp_connection_duration_seconds`.
use std::{sync::Mutex, time::Instant};

use agent_common::tcp::{
    CLOSE_IN, CLOSE_OUT, CONNECT_FAIL, CommKey, HIST_BUCKETS, HIST_DURATION, HIST_RTT, MAP_HIST,
    MAP_LISTENERS, MAP_LOST, MAP_PENDING, MAP_SOCKS, MAP_STATS, NSTATS, OPEN_IN, OPEN_OUT, RETRANS,
    RST_RECV, RST_SENT, RX_BYTES, TX_BYTES, TcpHist, TcpLost, TcpStats,
};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuHashMap},
};

use super::{ProbeCollector, ProbeContext, ProbeError, batch};
use crate::procnames::{comm_bytes, comm_label};
use crate::{
    emit::{Kind, Out},
    procnames::{GroupCounters, Reading},
};

/// (program, category, tracepoint): classic tracepoints.
const TRACEPOINTS: [(&str, &str, &str); 4] = [
    ("tcp_on_set_state", "sock", "inet_sock_set_state"),
    ("tcp_on_probe", "tcp", "tcp_probe"),
    ("tcp_on_send_length", "sock", "sock_send_length"),
    ("tcp_on_recv_length", "sock", "sock_recv_length"),
];

/// (program, tracepoint): raw tracepoints (softirq-context events, see the kernel half).
/// `tcp_retransmit_skb` is attached separately ([`attach_retransmit`]).
const RAW_TRACEPOINTS: [(&str, &str); 2] = [
    ("tcp_on_send_reset", "tcp_send_reset"),
    ("tcp_on_receive_reset", "tcp_receive_reset"),
];

/// A counter family: name, help, and its series as (`direction` label, stats index).
type CounterFamily = (
    &'static str,
    &'static str,
    &'static [(Option<&'static str>, usize)],
);

/// `process_name` of events whose socket had no known owner (e.g. a reset the kernel sends
/// for a port nobody listens on).
pub const UNKNOWN_NAME: &str = "unknown";

/// Exported bounds (powers of two µs): RTT 16 µs .. ~4.2 s; durations ~1 ms .. ~4.8 h.
const RTT_BOUNDS_LOG2_US: [usize; 10] = [4, 6, 8, 10, 12, 14, 16, 18, 20, 22];
const DURATION_BOUNDS_LOG2_US: [usize; 13] = [10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34];

pub fn max_entries(ctx: &ProbeContext) -> Vec<(&'static str, u32)> {
    let c = &ctx.config.tcp;
    vec![
        (MAP_SOCKS, c.max_sockets),
        (MAP_PENDING, c.max_sockets),
        (MAP_LISTENERS, c.max_listeners),
        (MAP_STATS, c.max_series),
    ]
}

struct State {
    stats: PerCpuHashMap<MapData, CommKey, TcpStats>,
    counters: GroupCounters<(), NSTATS>,
}

pub struct TcpProbe {
    state: Mutex<State>,
    hist: PerCpuArray<MapData, TcpHist>,
    lost: PerCpuArray<MapData, TcpLost>,
}

impl std::fmt::Debug for TcpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TcpProbe")
    }
}

/// `tcp_retransmit_skb`: the program that reads the tracepoint's `err` argument where the
/// kernel has it (it fires for failed attempts too), else the one that counts every hit.
fn attach_retransmit(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    const TP: &str = "tcp_retransmit_skb";
    match super::attach_raw_tracepoint(ebpf, "tcp_on_retransmit_err", TP) {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::debug!(
                error = %super::error_chain(&e),
                "tcp probe: tcp_retransmit_skb has no err argument; counting every hit"
            );
            super::attach_raw_tracepoint(ebpf, "tcp_on_retransmit", TP)
        }
    }
}

pub fn attach(ebpf: &mut Ebpf, ctx: &ProbeContext) -> Result<Box<dyn ProbeCollector>, ProbeError> {
    for (name, category, tp) in TRACEPOINTS {
        super::attach_tracepoint(ebpf, name, category, tp)?;
    }
    for (name, tp) in RAW_TRACEPOINTS {
        super::attach_raw_tracepoint(ebpf, name, tp)?;
    }
    attach_retransmit(ebpf)?;
    let stats = super::take_map(ebpf, MAP_STATS)?;
    let hist = super::take_map(ebpf, MAP_HIST)?;
    let lost = super::take_map(ebpf, MAP_LOST)?;
    Ok(Box::new(TcpProbe {
        state: Mutex::new(State {
            stats,
            counters: GroupCounters::new(ctx.config.process_names.limits()),
        }),
        hist,
        lost,
    }))
}

/// The group of a key: the all-zero key (owner not known) is [`UNKNOWN_NAME`]; a process
/// really named so is told apart by [`comm_label`].
fn group_name(comm: &[u8; 16]) -> String {
    if comm[0] == 0 {
        UNKNOWN_NAME.to_string()
    } else {
        comm_label(comm)
    }
}

/// One process group's counters, summed over CPUs.
fn sum(per_cpu: &[TcpStats]) -> [u64; NSTATS] {
    let mut v = [0u64; NSTATS];
    for cpu in per_cpu {
        for (t, c) in v.iter_mut().zip(cpu.v.iter()) {
            *t = t.wrapping_add(*c);
        }
    }
    v
}

/// Folds log2 µs buckets into the exported bounds: `(upper bound s, count in it)`.
fn export_buckets(log2: &[u64], bounds: &[usize]) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut from = 0;
    for &k in bounds {
        out.push(((1u64 << k) as f64 / 1e6, log2[from..k].iter().sum()));
        from = k;
    }
    out.push((f64::INFINITY, log2[from..].iter().sum()));
    out
}

impl TcpProbe {
    fn refresh(state: &mut State) -> Result<(), ProbeError> {
        let entries =
            batch::per_cpu_entries::<_, CommKey, TcpStats, _>(&state.stats).map_err(|e| {
                ProbeError::Batch {
                    map: MAP_STATS,
                    source: e,
                }
            })?;
        let mut readings: Vec<Reading<(), NSTATS>> = Vec::with_capacity(entries.len());
        for (key, per_cpu) in entries {
            readings.push((group_name(&key.comm), (), sum(&per_cpu)));
        }
        let now = Instant::now();
        let stale = state.counters.update(readings, now);
        for reading in stale {
            let comm = if reading.0 == UNKNOWN_NAME {
                Some([0; 16])
            } else {
                comm_bytes(&reading.0)
            };
            let Some(comm) = comm else {
                tracing::warn!(group = %reading.0, "tcp probe: no kernel key for an idle group; its entry stays");
                continue;
            };
            if let Some(per_cpu) = super::take_idle(MAP_STATS, &mut state.stats, &CommKey { comm })
            {
                state.counters.fold_late(reading, sum(&per_cpu), now);
            }
        }
        Ok(())
    }

    fn histogram(&self, index: u32) -> Result<([u64; HIST_BUCKETS], u64), ProbeError> {
        let per_cpu = self.hist.get(&index, 0).map_err(super::map_err(MAP_HIST))?;
        let mut b = [0u64; HIST_BUCKETS];
        let mut sum = 0u64;
        for cpu in per_cpu.iter() {
            for (t, c) in b.iter_mut().zip(cpu.buckets.iter()) {
                *t = t.wrapping_add(*c);
            }
            sum = sum.wrapping_add(cpu.sum_us);
        }
        Ok((b, sum))
    }
}

impl ProbeCollector for TcpProbe {
    fn collect(&self, out: &mut Out<'_, '_>) -> Result<(), ProbeError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Self::refresh(&mut state)?;
        // Every map is read before any family is written: a failed read leaves this probe's
        // families out of the scrape whole (scrape_success 0), not half written.
        let rtt = self.histogram(HIST_RTT)?;
        let duration = self.histogram(HIST_DURATION)?;
        let series = state.counters.series();
        // (family, help, [(direction label, stats index)])
        let families: [CounterFamily; 7] = [
            (
                "tcp_connections_opened_total",
                "TCP connections established: inbound = accepted, outbound = connected.",
                &[(Some("inbound"), OPEN_IN), (Some("outbound"), OPEN_OUT)],
            ),
            (
                "tcp_connections_closed_total",
                "TCP connections closed that were established while the probe ran.",
                &[(Some("inbound"), CLOSE_IN), (Some("outbound"), CLOSE_OUT)],
            ),
            (
                "tcp_connect_failures_total",
                "Outbound TCP connections that closed before being established.",
                &[(None, CONNECT_FAIL)],
            ),
            (
                "tcp_retransmits_total",
                "TCP segments retransmitted (tcp:tcp_retransmit_skb), by socket owner.",
                &[(None, RETRANS)],
            ),
            (
                "tcp_resets_total",
                "TCP resets sent and received, by socket owner.",
                &[(Some("sent"), RST_SENT), (Some("received"), RST_RECV)],
            ),
            (
                "process_network_transmit_bytes_total",
                "Bytes sent on TCP sockets (sendmsg return values), by sending process group.",
                &[(None, TX_BYTES)],
            ),
            (
                "process_network_receive_bytes_total",
                "Bytes received on TCP sockets (recvmsg return values), by receiving process group.",
                &[(None, RX_BYTES)],
            ),
        ];
        for (name, help, parts) in families {
            let mut fam = out.family(name, help, Kind::Counter)?;
            for ((pname, ()), v) in series {
                for (direction, idx) in parts {
                    // Omit series that never counted anything, as the kernel map does.
                    if v[*idx] == 0 {
                        continue;
                    }
                    match direction {
                        Some(d) => fam.sample(
                            &[("process_name", pname.as_str()), ("direction", d)],
                            v[*idx] as f64,
                        )?,
                        None => fam.sample(&[("process_name", pname.as_str())], v[*idx] as f64)?,
                    }
                }
            }
        }
        for (name, help, (b, sum), bounds) in [
            (
                "tcp_rtt_seconds",
                "Smoothed round-trip time of TCP sockets, sampled at every incoming segment \
                 (tcp:tcp_probe).",
                rtt,
                &RTT_BOUNDS_LOG2_US[..],
            ),
            (
                "tcp_connection_duration_seconds",
                "Lifetime of TCP connections from established to closed.",
                duration,
                &DURATION_BOUNDS_LOG2_US[..],
            ),
        ] {
            let count: u64 = b.iter().sum();
            let mut fam = out.family(name, help, Kind::Histogram)?;
            fam.histogram(
                &crate::emit::NO_LABELS,
                sum as f64 / 1e6,
                count,
                &export_buckets(&b, bounds),
            )?;
        }
        Ok(())
    }

    fn events_lost(&self) -> Result<u64, ProbeError> {
        let per_cpu = self.lost.get(&0, 0).map_err(super::map_err(MAP_LOST))?;
        Ok(per_cpu.iter().fold(0u64, |a, l| {
            a.wrapping_add(l.socks_full)
                .wrapping_add(l.stats_full)
                .wrapping_add(l.listeners_full)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_partition_every_bucket() {
        let log2: Vec<u64> = (0..HIST_BUCKETS as u64).collect();
        for bounds in [&RTT_BOUNDS_LOG2_US[..], &DURATION_BOUNDS_LOG2_US[..]] {
            let out = export_buckets(&log2, bounds);
            assert_eq!(
                out.iter().map(|(_, n)| n).sum::<u64>(),
                log2.iter().sum::<u64>()
            );
            assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }

    #[test]
    fn empty_comm_is_unknown() {
        assert_eq!(group_name(&[0; 16]), "unknown");
        // A process really named "unknown" is another group.
        let mut c = [0u8; 16];
        c[..7].copy_from_slice(b"unknown");
        assert_eq!(group_name(&c), "\\unknown");
    }
}
