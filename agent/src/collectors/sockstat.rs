//! `sockstat`: reads `<procfs>/net/sockstat` and `<procfs>/net/sockstat6`; produces
//! `node_sockstat_sockets_used` and `node_sockstat_<PROTO>_<field>` (`TCP_inuse`, `TCP_tw`,
//! `UDP6_inuse`, …) plus `node_sockstat_<PROTO>_mem_bytes` (pages × page size).
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file};
use crate::emit::Out;

#[derive(Debug)]
pub struct Sockstat {
    v4: PathBuf,
    v6: PathBuf,
    page_size: f64,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(Box::new(Sockstat {
        v4: ctx.paths.proc("net/sockstat"),
        v6: ctx.paths.proc("net/sockstat6"),
        page_size: if page > 0 { page as f64 } else { 4096.0 },
    }))
}

/// (protocol, field, value) for every `PROTO: field value field value` pair.
pub fn parse(text: &str) -> Result<Vec<(&str, &str, f64)>, LineError> {
    let mut v = Vec::with_capacity(24);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((proto, rest)) = line.split_once(':') else {
            return Err(LineError::new(i + 1, format!("no ':' in {line:?}")));
        };
        let mut p = rest.split_ascii_whitespace();
        while let Some(field) = p.next() {
            let value = p
                .next()
                .ok_or_else(|| LineError::new(i + 1, format!("{proto} {field} has no value")))?;
            v.push((proto, field, parse_f64(value, i + 1, field)?));
        }
    }
    Ok(v)
}

impl NodeCollector for Sockstat {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let v4 = read_file(&self.v4)?;
        let v6 = match read_file(&self.v6) {
            Ok(t) => t,
            Err(CollectorError::NoData(_)) => String::new(),
            Err(e) => return Err(e),
        };
        let mut stats = parse(&v4).map_err(|e| e.at(&self.v4))?;
        stats.extend(parse(&v6).map_err(|e| e.at(&self.v6))?);
        let mut name = String::with_capacity(48);
        let mut help = String::with_capacity(64);
        for (proto, field, v) in stats {
            if proto == "sockets" && field == "used" {
                out.gauge(
                    "node_sockstat_sockets_used",
                    "Number of IPv4 sockets in use.",
                    v,
                )?;
                continue;
            }
            let mut emit = |field: &str, v: f64| {
                name.clear();
                name.push_str("node_sockstat_");
                name.push_str(proto);
                name.push('_');
                name.push_str(field);
                help.clear();
                help.push_str("Number of ");
                help.push_str(proto);
                help.push_str(" sockets in state ");
                help.push_str(field);
                help.push('.');
                out.gauge(&name, &help, v)
            };
            emit(field, v)?;
            if field == "mem" {
                emit("mem_bytes", v * self.page_size)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        let s = parse("sockets: used 21\nTCP: inuse 1 orphan 0 tw 4 alloc 1 mem 352\nFRAG: inuse 0 memory 0\n").unwrap();
        assert_eq!(s[0], ("sockets", "used", 21.0));
        assert_eq!(s[5], ("TCP", "mem", 352.0));
        assert_eq!(s.len(), 8);
        assert_eq!(parse("TCP: inuse 1\nUDP: inuse\n").unwrap_err().line, 2);
        assert_eq!(parse("TCP inuse 1\n").unwrap_err().line, 1);
    }
}
