//! `netstat`: reads `<procfs>/net/netstat`, `<procfs>/net/snmp` and `<procfs>/net/snmp6`;
//! produces `node_netstat_<Proto>_<Field>` (untyped) for the fields matching
//! `--collector.netstat.fields`.
use std::path::PathBuf;

use regex::Regex;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file,
    settings_regex,
};
use crate::emit::Out;

#[derive(Debug)]
pub struct Netstat {
    netstat: PathBuf,
    snmp: PathBuf,
    snmp6: PathBuf,
    fields: Option<Regex>,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Netstat {
        netstat: ctx.paths.proc("net/netstat"),
        snmp: ctx.paths.proc("net/snmp"),
        snmp6: ctx.paths.proc("net/snmp6"),
        fields: settings_regex("netstat.fields", &ctx.settings.netstat.fields)?,
    }))
}

/// (protocol, field, value).
pub type Stat<'a> = (&'a str, &'a str, f64);

/// Parses `/proc/net/netstat` or `/proc/net/snmp`: pairs of `Proto: names` / `Proto: values`.
pub fn parse_pairs<'a>(text: &'a str, out: &mut Vec<Stat<'a>>) -> Result<(), LineError> {
    let mut lines = text.lines().enumerate();
    while let Some((i, names)) = lines.next() {
        if names.trim().is_empty() {
            continue;
        }
        let Some((j, values)) = lines.next() else {
            return Err(LineError::new(i + 1, "header line without a value line"));
        };
        let (Some((proto, names)), Some((proto2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            return Err(LineError::new(j + 1, "no 'Proto:' prefix"));
        };
        if proto != proto2 {
            return Err(LineError::new(
                j + 1,
                format!("values of {proto2} follow the names of {proto}"),
            ));
        }
        let (mut n, mut v) = (
            names.split_ascii_whitespace(),
            values.split_ascii_whitespace(),
        );
        loop {
            match (n.next(), v.next()) {
                (Some(name), Some(value)) => {
                    out.push((proto, name, parse_f64(value, j + 1, name)?))
                }
                (None, None) => break,
                _ => {
                    return Err(LineError::new(
                        j + 1,
                        format!("{proto}: number of names and values differ"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Parses `/proc/net/snmp6`: `Ip6InReceives 123` lines; the protocol is the name up to its
/// first '6' (`Icmp6`, `Udp6`, `UdpLite6`).
pub fn parse_snmp6<'a>(text: &'a str, out: &mut Vec<Stat<'a>>) -> Result<(), LineError> {
    for (i, line) in text.lines().enumerate() {
        let mut p = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (p.next(), p.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(LineError::new(i + 1, format!("no value in {line:?}")));
        };
        let Some(six) = key.find('6') else {
            return Err(LineError::new(i + 1, format!("{key:?} has no protocol")));
        };
        out.push((&key[..=six], &key[six + 1..], parse_f64(value, i + 1, key)?));
    }
    Ok(())
}

impl NodeCollector for Netstat {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let netstat = read_file(&self.netstat)?;
        let snmp = read_file(&self.snmp)?;
        let snmp6 = match read_file(&self.snmp6) {
            Ok(t) => t,
            Err(CollectorError::NoData(_)) => String::new(), // IPv6 disabled
            Err(e) => return Err(e),
        };
        let mut stats = Vec::with_capacity(512);
        parse_pairs(&netstat, &mut stats).map_err(|e| e.at(&self.netstat))?;
        parse_pairs(&snmp, &mut stats).map_err(|e| e.at(&self.snmp))?;
        parse_snmp6(&snmp6, &mut stats).map_err(|e| e.at(&self.snmp6))?;
        let mut key = String::with_capacity(64);
        let mut name = String::with_capacity(80);
        let mut help = String::with_capacity(80);
        let mut seen = std::collections::HashSet::new();
        for (proto, field, v) in stats {
            key.clear();
            key.push_str(proto);
            key.push('_');
            key.push_str(field);
            if !self.fields.as_ref().is_none_or(|re| re.is_match(&key)) {
                continue;
            }
            if !seen.insert((proto, field)) {
                continue; // a family is written once per scrape
            }
            name.clear();
            name.push_str("node_netstat_");
            name.push_str(&key);
            help.clear();
            help.push_str("Statistic ");
            help.push_str(proto);
            help.push_str(field);
            help.push('.');
            out.untyped(&name, &help, v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_snmp6() {
        let mut s = Vec::new();
        parse_pairs(
            "TcpExt: SyncookiesSent ListenDrops\nTcpExt: 0 7\nIp: Forwarding InReceives\nIp: 2 -1\n",
            &mut s,
        )
        .unwrap();
        parse_snmp6("Ip6InReceives  12\nUdpLite6InErrors 3\n", &mut s).unwrap();
        assert_eq!(
            s,
            vec![
                ("TcpExt", "SyncookiesSent", 0.0),
                ("TcpExt", "ListenDrops", 7.0),
                ("Ip", "Forwarding", 2.0),
                ("Ip", "InReceives", -1.0),
                ("Ip6", "InReceives", 12.0),
                ("UdpLite6", "InErrors", 3.0),
            ]
        );
    }

    #[test]
    fn names_the_bad_line() {
        let mut s = Vec::new();
        assert_eq!(
            parse_pairs("Tcp: A B\nTcp: 1\n", &mut s).unwrap_err().line,
            2
        );
        assert_eq!(parse_pairs("Tcp: A\nUdp: 1\n", &mut s).unwrap_err().line, 2);
        assert_eq!(parse_pairs("Tcp: A\n", &mut s).unwrap_err().line, 1);
        assert_eq!(parse_snmp6("Ip6X 1\nIp6Y\n", &mut s).unwrap_err().line, 2);
    }

    #[test]
    fn default_fields() {
        let re = Regex::new(crate::config::NETSTAT_FIELDS).unwrap();
        for k in [
            "Tcp_InErrs",
            "Ip_Forwarding",
            "TcpExt_ListenDrops",
            "Udp6_NoPorts",
            "Icmp6_InMsgs",
            "IpExt_InOctets",
        ] {
            assert!(re.is_match(k), "{k}");
        }
        for k in ["Tcp_MaxConn", "TcpExt_TCPPureAcks", "Ip_InReceives"] {
            assert!(!re.is_match(k), "{k}");
        }
    }
}
