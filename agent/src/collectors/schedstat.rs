//! `schedstat`: reads `<procfs>/schedstat` (`cpuN` lines, version 15); produces
//! `node_schedstat_{running_seconds,waiting_seconds,timeslices}_total{cpu}`.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Schedstat {
    path: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Schedstat {
        path: ctx.paths.proc("schedstat"),
    }))
}

/// (cpu, running seconds, waiting seconds, timeslices): columns 7, 8, 9 of each `cpuN` line
/// (Documentation/scheduler/sched-stats.rst), times in nanoseconds.
pub fn parse(text: &str) -> Result<Vec<(&str, [f64; 3])>, LineError> {
    let mut v = Vec::with_capacity(8);
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        if f.len() < 10 {
            return Err(LineError::new(
                i + 1,
                format!(
                    "cpu{}: {} columns, expected 9",
                    f.first().unwrap_or(&""),
                    f.len().saturating_sub(1)
                ),
            ));
        }
        v.push((
            f[0],
            [
                parse_f64(f[7], i + 1, "running")? / 1e9,
                parse_f64(f[8], i + 1, "waiting")? / 1e9,
                parse_f64(f[9], i + 1, "timeslices")?,
            ],
        ));
    }
    Ok(v)
}

impl NodeCollector for Schedstat {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let rows = parse(&text).map_err(|e| e.at(&self.path))?;
        for (k, (name, help)) in [
            (
                "node_schedstat_running_seconds_total",
                "Number of seconds CPU spent running a process.",
            ),
            (
                "node_schedstat_waiting_seconds_total",
                "Number of seconds spent by processing waiting for this CPU.",
            ),
            (
                "node_schedstat_timeslices_total",
                "Number of timeslices executed by CPU.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let mut f = out.family(name, help, Kind::Counter)?;
            for (cpu, r) in &rows {
                f.sample(&[("cpu", *cpu)], r[k])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lines() {
        let t = "version 15\ntimestamp 1\ncpu0 0 0 0 0 0 0 2045936778163039 343796328169361 4767485306\ndomain0 3 1 2\ncpu1 0 0 0 0 0 0 1 2 3\n";
        let r = parse(t).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, "0");
        assert_eq!(r[0].1[2], 4767485306.0);
        assert_eq!(r[1].1, [1e-9, 2e-9, 3.0]);
        assert_eq!(parse("cpu0 1 2\n").unwrap_err().line, 1);
    }
}
