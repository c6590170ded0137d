//! `tcpstat` (off by default): reads `<procfs>/net/tcp` and `<procfs>/net/tcp6`; produces
//! `node_tcp_connection_states{state}`: sockets per TCP state, plus `rx_queued_bytes` and
//! `tx_queued_bytes` summed over the sockets.
//!
//! node_exporter 1.5 asks the kernel over sock_diag netlink instead; the state counts are the
//! same, but for listening sockets sock_diag reports the accept backlog limit as the send
//! queue, which /proc/net/tcp does not show (it reports 0), so `tx_queued_bytes` here counts
//! only bytes really queued.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, parse_hex, read_file};
use crate::emit::{Kind, Out};

/// TCP states by their kernel number (include/net/tcp_states.h), node_exporter's names.
const STATES: [&str; 12] = [
    "",
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
];

#[derive(Debug)]
pub struct Tcpstat {
    v4: PathBuf,
    v6: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Tcpstat {
        v4: ctx.paths.proc("net/tcp"),
        v6: ctx.paths.proc("net/tcp6"),
    }))
}

/// Adds one table's sockets to `counts` (by state number) and the queue sums (tx, rx).
pub fn parse(text: &str, counts: &mut [f64; 12], queues: &mut (f64, f64)) -> Result<(), LineError> {
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.split_ascii_whitespace();
        let (Some(st), Some(q)) = (f.nth(3), f.next()) else {
            return Err(LineError::new(i + 1, "fewer than 5 columns"));
        };
        let st = parse_hex(st, i + 1, "st")? as usize;
        if st == 0 || st >= STATES.len() {
            return Err(LineError::new(i + 1, format!("unknown TCP state {st}")));
        }
        let Some((tx, rx)) = q.split_once(':') else {
            return Err(LineError::new(
                i + 1,
                format!("queue column {q:?} lacks ':'"),
            ));
        };
        counts[st] += 1.0;
        queues.0 += parse_hex(tx, i + 1, "tx_queue")? as f64;
        queues.1 += parse_hex(rx, i + 1, "rx_queue")? as f64;
    }
    Ok(())
}

impl NodeCollector for Tcpstat {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut counts = [0.0; 12];
        let mut queues = (0.0, 0.0);
        let v4 = read_file(&self.v4)?;
        parse(&v4, &mut counts, &mut queues).map_err(|e| e.at(&self.v4))?;
        match read_file(&self.v6) {
            Ok(t) => parse(&t, &mut counts, &mut queues).map_err(|e| e.at(&self.v6))?,
            Err(CollectorError::NoData(_)) => {}
            Err(e) => return Err(e),
        }
        let mut f = out.family(
            "node_tcp_connection_states",
            "Number of connection states.",
            Kind::Gauge,
        )?;
        for (st, n) in STATES.iter().zip(counts).skip(1) {
            if n > 0.0 {
                f.sample(&[("state", *st)], n)?;
            }
        }
        f.sample(&[("state", "rx_queued_bytes")], queues.1)?;
        f.sample(&[("state", "tx_queued_bytes")], queues.0)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_queues() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:0016 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1\n   1: 0100007F:0016 0100007F:D2F2 01 00000010:00000000 00:00000000 00000000     0        0 2\n";
        let mut c = [0.0; 12];
        let mut q = (0.0, 0.0);
        parse(t, &mut c, &mut q).unwrap();
        assert_eq!(c[10], 1.0);
        assert_eq!(c[1], 1.0);
        assert_eq!(q, (16.0, 3.0));
        assert_eq!(
            parse("h\n 0: a b 0F 0:0\n", &mut c, &mut q)
                .unwrap_err()
                .line,
            2
        );
        assert_eq!(parse("h\n 0: a b\n", &mut c, &mut q).unwrap_err().line, 2);
    }
}
