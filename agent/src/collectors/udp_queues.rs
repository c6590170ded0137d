//! `udp_queues`: reads `<procfs>/net/udp` and `<procfs>/net/udp6`; produces
//! `node_udp_queues{ip="v4"|"v6",queue="rx"|"tx"}`: bytes queued in UDP sockets.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, parse_hex, read_file};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct UdpQueues {
    v4: PathBuf,
    v6: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(UdpQueues {
        v4: ctx.paths.proc("net/udp"),
        v6: ctx.paths.proc("net/udp6"),
    }))
}

/// Sums the `tx_queue:rx_queue` column (hex) over every socket line: (tx, rx).
pub fn parse(text: &str) -> Result<(f64, f64), LineError> {
    let (mut tx, mut rx) = (0u64, 0u64);
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let Some(q) = line.split_ascii_whitespace().nth(4) else {
            return Err(LineError::new(i + 1, "fewer than 5 columns"));
        };
        let Some((t, r)) = q.split_once(':') else {
            return Err(LineError::new(
                i + 1,
                format!("queue column {q:?} lacks ':'"),
            ));
        };
        // Wrapping, as node_exporter's uint64 sums (only a forged table can get there).
        tx = tx.wrapping_add(parse_hex(t, i + 1, "tx_queue")?);
        rx = rx.wrapping_add(parse_hex(r, i + 1, "rx_queue")?);
    }
    Ok((tx as f64, rx as f64))
}

impl NodeCollector for UdpQueues {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut rows = Vec::with_capacity(2);
        for (ip, path) in [("v4", &self.v4), ("v6", &self.v6)] {
            match read_file(path) {
                Ok(t) => rows.push((ip, parse(&t).map_err(|e| e.at(path))?)),
                Err(CollectorError::NoData(p)) => {
                    tracing::debug!(path = %p.display(), "no UDP table");
                }
                Err(e) => return Err(e),
            }
        }
        if rows.is_empty() {
            return Err(CollectorError::NoData(self.v4.clone()));
        }
        let mut f = out.family(
            "node_udp_queues",
            "Number of allocated memory in the kernel for UDP datagrams in bytes.",
            Kind::Gauge,
        )?;
        for (ip, (tx, rx)) in rows {
            f.sample(&[("ip", ip), ("queue", "tx")], tx)?;
            f.sample(&[("ip", ip), ("queue", "rx")], rx)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_queues() {
        let t = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  1: 00000000:0044 00000000:0000 07 00000010:00000200 00:00000000 00000000     0        0 1 2 0\n  2: 00000000:0045 00000000:0000 07 00000001:00000001 00:00000000 00000000     0        0 1 2 0\n";
        assert_eq!(parse(t).unwrap(), (17.0, 513.0));
        assert_eq!(parse("h\n 1: a b c\n").unwrap_err().line, 2);
        assert_eq!(parse("h\n 1: a b c zz:1\n").unwrap_err().line, 2);
    }
}
