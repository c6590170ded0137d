//! `pressure`: reads `<procfs>/pressure/{cpu,io,memory}` (PSI); produces
//! `node_pressure_cpu_waiting_seconds_total`, `node_pressure_{io,memory}_waiting_seconds_total`
//! (`some`) and `node_pressure_{io,memory}_stalled_seconds_total` (`full`).
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file};
use crate::emit::Out;

#[derive(Debug)]
pub struct Pressure {
    dir: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Pressure {
        dir: ctx.paths.proc("pressure"),
    }))
}

/// `total=` of the `some` and `full` lines, in seconds (the kernel writes microseconds).
pub fn parse(text: &str) -> Result<(Option<f64>, Option<f64>), LineError> {
    let (mut some, mut full) = (None, None);
    for (i, line) in text.lines().enumerate() {
        let mut p = line.split_ascii_whitespace();
        let slot = match p.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            Some(other) => return Err(LineError::new(i + 1, format!("unknown line {other:?}"))),
            None => continue,
        };
        let total = p
            .find_map(|kv| kv.strip_prefix("total="))
            .ok_or_else(|| LineError::new(i + 1, "no total= field"))?;
        *slot = Some(parse_f64(total, i + 1, "total")? / 1e6);
    }
    Ok((some, full))
}

impl NodeCollector for Pressure {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut rows = Vec::with_capacity(3);
        for res in ["cpu", "io", "memory"] {
            let path = self.dir.join(res);
            let text = read_file(&path)?;
            rows.push((res, parse(&text).map_err(|e| e.at(&path))?));
        }
        for (res, (some, full)) in rows {
            match res {
                "cpu" => {
                    if let Some(v) = some {
                        out.counter(
                            "node_pressure_cpu_waiting_seconds_total",
                            "Total time in seconds that processes have waited for CPU time",
                            v,
                        )?;
                    }
                }
                "io" => {
                    if let Some(v) = some {
                        out.counter(
                            "node_pressure_io_waiting_seconds_total",
                            "Total time in seconds that processes have waited due to IO congestion",
                            v,
                        )?;
                    }
                    if let Some(v) = full {
                        out.counter(
                            "node_pressure_io_stalled_seconds_total",
                            "Total time in seconds no process could make progress due to IO congestion",
                            v,
                        )?;
                    }
                }
                _ => {
                    if let Some(v) = some {
                        out.counter(
                            "node_pressure_memory_waiting_seconds_total",
                            "Total time in seconds that processes have waited for memory",
                            v,
                        )?;
                    }
                    if let Some(v) = full {
                        out.counter(
                            "node_pressure_memory_stalled_seconds_total",
                            "Total time in seconds no process could make progress due to memory congestion",
                            v,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_and_full() {
        let (s, f) = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=103714122\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=5\n").unwrap();
        assert_eq!(s, Some(103.714122));
        assert_eq!(f, Some(0.000005));
        assert_eq!(parse("some avg10=1\n").unwrap_err().line, 1);
        assert_eq!(parse("some total=1\nhalf total=2\n").unwrap_err().line, 2);
        assert_eq!(parse("some total=x\n").unwrap_err().line, 1);
    }
}
