//! `softnet`: reads `<procfs>/net/softnet_stat` (one hex row per CPU); produces
//! `node_softnet_{processed,dropped,times_squeezed}_total{cpu}`.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, parse_hex, read_file};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Softnet {
    path: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Softnet {
        path: ctx.paths.proc("net/softnet_stat"),
    }))
}

/// (processed, dropped, time_squeeze) per row.
pub fn parse(text: &str) -> Result<Vec<[f64; 3]>, LineError> {
    let mut rows = Vec::with_capacity(8);
    for (i, line) in text.lines().enumerate() {
        let mut p = line.split_ascii_whitespace();
        let (Some(a), Some(b), Some(c)) = (p.next(), p.next(), p.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(LineError::new(i + 1, "fewer than 3 columns"));
        };
        rows.push([
            parse_hex(a, i + 1, "processed")? as f64,
            parse_hex(b, i + 1, "dropped")? as f64,
            parse_hex(c, i + 1, "time_squeeze")? as f64,
        ]);
    }
    Ok(rows)
}

impl NodeCollector for Softnet {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let rows = parse(&text).map_err(|e| e.at(&self.path))?;
        let cpus: Vec<String> = (0..rows.len()).map(|i| i.to_string()).collect();
        for (k, (name, help)) in [
            (
                "node_softnet_processed_total",
                "Number of processed packets",
            ),
            ("node_softnet_dropped_total", "Number of dropped packets"),
            (
                "node_softnet_times_squeezed_total",
                "Number of times processing packets ran out of quota",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let mut f = out.family(name, help, Kind::Counter)?;
            for (cpu, r) in cpus.iter().zip(&rows) {
                f.sample(&[("cpu", cpu.as_str())], r[k])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_rows() {
        let r = parse("00000f80 00000000 00000001 0 0 0 0 0 0 0 0 00000000 00000000\n00002e41 00000002 00000000 0 0 0 0 0 0 0 0 00000000 00000001\n").unwrap();
        assert_eq!(r, vec![[3968.0, 0.0, 1.0], [11841.0, 2.0, 0.0]]);
        assert_eq!(parse("1 2 3\n1 2 g\n").unwrap_err().line, 2);
        assert_eq!(parse("1 2\n").unwrap_err().line, 1);
    }
}
