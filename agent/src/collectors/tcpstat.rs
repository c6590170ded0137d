//! `tcpstat` (off by default): asks the kernel over sock_diag netlink (`NETLINK_SOCK_DIAG`,
//! `SOCK_DIAG_BY_FAMILY` dumps of IPv4 and, when `<procfs>/net/tcp6` exists, IPv6 TCP
//! sockets), as node_exporter 1.5 does; produces `node_tcp_connection_states{state}`: sockets
//! per TCP state, plus `rx_queued_bytes` / `tx_queued_bytes` (the diag messages' receive and
//! send queues; for a listening socket these are the accept queue and its limit).
//! `<procfs>/net/tcp` gates the collector: without it, "no data".
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector};
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

/// include/uapi/linux/sock_diag.h
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// Every state from ESTABLISHED to CLOSING (bits 1..11), as node_exporter asks.
const ALL_STATES: u32 = 0xfff;
/// Size of `struct inet_diag_sockid`.
const SOCKID_LEN: usize = 48;
/// Offsets in `struct inet_diag_msg`: family, state, timer, retrans, id, expires, rqueue,
/// wqueue, uid, inode.
const MSG_STATE: usize = 1;
const MSG_RQUEUE: usize = 4 + SOCKID_LEN + 4;
const MSG_WQUEUE: usize = MSG_RQUEUE + 4;
const MSG_LEN: usize = MSG_WQUEUE + 12;

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

/// Per-state socket counts and the queue sums (rx, tx).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub states: [f64; 12],
    pub rx: f64,
    pub tx: f64,
}

/// Adds the `inet_diag_msg`s of one netlink datagram to `stats`. Returns true when the dump
/// is complete (NLMSG_DONE). `msg` numbers the datagram's messages in errors.
pub fn parse_datagram(buf: &[u8], stats: &mut Stats) -> Result<bool, LineError> {
    let mut off = 0;
    let mut n = 0;
    while off + 16 <= buf.len() {
        n += 1;
        let u32_at = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let len = u32_at(off) as usize;
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < 16 || off + len > buf.len() {
            return Err(LineError::new(
                n,
                format!("netlink message length {len} out of range"),
            ));
        }
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = if len >= 20 {
                    -(u32_at(off + 16) as i32)
                } else {
                    0
                };
                return Err(LineError::new(
                    n,
                    format!("sock_diag: {}", std::io::Error::from_raw_os_error(errno)),
                ));
            }
            SOCK_DIAG_BY_FAMILY => {
                let m = &buf[off + 16..off + len];
                if m.len() < MSG_LEN {
                    return Err(LineError::new(
                        n,
                        format!("inet_diag_msg of {} bytes", m.len()),
                    ));
                }
                let st = m[MSG_STATE] as usize;
                if st == 0 || st >= STATES.len() {
                    return Err(LineError::new(n, format!("unknown TCP state {st}")));
                }
                let q = |o: usize| u32::from_ne_bytes([m[o], m[o + 1], m[o + 2], m[o + 3]]);
                stats.states[st] += 1.0;
                stats.rx += f64::from(q(MSG_RQUEUE));
                stats.tx += f64::from(q(MSG_WQUEUE));
            }
            _ => {}
        }
        // Messages are 4-byte aligned.
        off += (len + 3) & !3;
    }
    Ok(false)
}

/// Dumps every TCP socket of `family` (AF_INET / AF_INET6) into `stats`.
fn dump(family: u8, stats: &mut Stats) -> Result<(), CollectorError> {
    let fail = |what: &str| {
        CollectorError::Other(format!(
            "sock_diag {what}: {}",
            std::io::Error::last_os_error()
        ))
    };
    // SAFETY: plain socket(2) call; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(fail("socket"));
    }
    // SAFETY: fd is a fresh socket we own; OwnedFd closes it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // nlmsghdr (16) + inet_diag_req_v2 (8 + sockid 48).
    let mut req = [0u8; 16 + 8 + SOCKID_LEN];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = family;
    req[17] = libc::IPPROTO_TCP as u8;
    req[20..24].copy_from_slice(&ALL_STATES.to_ne_bytes());
    // SAFETY: zeroed sockaddr_nl addresses the kernel (pid 0).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: req and addr are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            raw,
            req.as_ptr().cast(),
            req.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(fail("send"));
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(fail("recv"));
        }
        if n == 0 {
            return Ok(());
        }
        let done = parse_datagram(&buf[..n as usize], stats).map_err(|e| {
            CollectorError::Other(format!("sock_diag message {}: {}", e.line, e.msg))
        })?;
        if done {
            return Ok(());
        }
    }
}

impl NodeCollector for Tcpstat {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        if !self.v4.exists() {
            return Err(CollectorError::NoData(self.v4.clone()));
        }
        let mut stats = Stats::default();
        dump(libc::AF_INET as u8, &mut stats)?;
        if self.v6.exists() {
            dump(libc::AF_INET6 as u8, &mut stats)?;
        }
        let mut f = out.family(
            "node_tcp_connection_states",
            "Number of connection states.",
            Kind::Gauge,
        )?;
        for (st, n) in STATES.iter().zip(stats.states).skip(1) {
            if n > 0.0 {
                f.sample(&[("state", *st)], n)?;
            }
        }
        f.sample(&[("state", "rx_queued_bytes")], stats.rx)?;
        f.sample(&[("state", "tx_queued_bytes")], stats.tx)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn diag(state: u8, rq: u32, wq: u32) -> Vec<u8> {
        let mut d = vec![0u8; MSG_LEN];
        d[0] = libc::AF_INET as u8;
        d[MSG_STATE] = state;
        d[MSG_RQUEUE..MSG_RQUEUE + 4].copy_from_slice(&rq.to_ne_bytes());
        d[MSG_WQUEUE..MSG_WQUEUE + 4].copy_from_slice(&wq.to_ne_bytes());
        msg(SOCK_DIAG_BY_FAMILY, &d)
    }

    #[test]
    fn counts_states_and_queues() {
        let mut buf = diag(10, 0, 4096);
        buf.extend(diag(1, 3, 16));
        buf.extend(diag(1, 0, 0));
        let mut s = Stats::default();
        assert!(!parse_datagram(&buf, &mut s).unwrap());
        assert_eq!(s.states[10], 1.0);
        assert_eq!(s.states[1], 2.0);
        assert_eq!((s.rx, s.tx), (3.0, 4112.0));
        assert!(parse_datagram(&msg(NLMSG_DONE, &[0; 4]), &mut s).unwrap());
    }

    #[test]
    fn bad_messages_are_errors() {
        let mut s = Stats::default();
        assert!(parse_datagram(&diag(13, 0, 0), &mut s).is_err());
        assert!(parse_datagram(&msg(SOCK_DIAG_BY_FAMILY, &[1, 2, 3]), &mut s).is_err());
        let mut trunc = diag(1, 0, 0);
        trunc[0] = 200;
        assert!(parse_datagram(&trunc, &mut s).is_err());
        let err = msg(NLMSG_ERROR, &(-(libc::EPERM)).to_ne_bytes());
        assert!(parse_datagram(&err, &mut s).is_err());
    }

    #[test]
    fn live_dump_sees_a_listening_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = Stats::default();
        dump(libc::AF_INET as u8, &mut s).unwrap();
        assert!(s.states[10] >= 1.0, "{s:?}");
        drop(l);
    }
}
