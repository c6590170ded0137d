//! `processes` (off by default): reads `<procfs>/<pid>/stat`, `<procfs>/<pid>/task/<tid>/stat`,
//! `<procfs>/sys/kernel/{pid_max,threads-max}`; produces `node_processes_pids`,
//! `node_processes_threads`, `node_processes_state{state}`,
//! `node_processes_threads_state{thread_state}`, `node_processes_max_processes`,
//! `node_processes_max_threads`.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::{CollectorContext, CollectorError, LineError, NodeCollector, read_number};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Processes {
    proc: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Processes {
        proc: ctx.paths.procfs.clone(),
    }))
}

/// State letter and thread count of a `/proc/<pid>/stat` line.
pub fn parse_stat(text: &str) -> Result<(char, f64), LineError> {
    // comm may contain spaces and parentheses: the fields start after the last ')'.
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| LineError::new(1, "no ')' after comm"))?;
    let mut f = rest.split_ascii_whitespace();
    let state = f
        .next()
        .and_then(|s| s.chars().next())
        .ok_or_else(|| LineError::new(1, "no state field"))?;
    // state is field 3; num_threads is field 20.
    let threads = f
        .nth(16)
        .ok_or_else(|| LineError::new(1, "no num_threads field"))?;
    let threads = threads
        .parse::<f64>()
        .map_err(|_| LineError::new(1, format!("num_threads {threads:?} is not a number")))?;
    Ok((state, threads))
}

/// Reads a stat file; a vanished process (the usual race) is `None`.
fn read_stat(path: &Path) -> Result<Option<(char, f64)>, CollectorError> {
    match super::read_text(path) {
        Ok(t) => parse_stat(&t).map(Some).map_err(|e| e.at(path)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput
            ) || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            Ok(None)
        }
        Err(source) => Err(CollectorError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn numeric_entries(dir: &Path) -> std::io::Result<Vec<std::ffi::OsString>> {
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.as_encoded_bytes().iter().all(u8::is_ascii_digit))
        .collect())
}

impl NodeCollector for Processes {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let pids = match numeric_entries(&self.proc) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CollectorError::NoData(self.proc.clone()));
            }
            Err(source) => {
                return Err(CollectorError::Io {
                    path: self.proc.clone(),
                    source,
                });
            }
        };
        let mut n_pids = 0.0;
        let mut threads = 0.0;
        let mut states: BTreeMap<char, f64> = BTreeMap::new();
        let mut thread_states: BTreeMap<char, f64> = BTreeMap::new();
        let mut path = self.proc.clone();
        for pid in &pids {
            path.push(pid);
            path.push("stat");
            let stat = read_stat(&path)?;
            path.pop();
            let Some((state, nthreads)) = stat else {
                path.pop();
                continue;
            };
            n_pids += 1.0;
            threads += nthreads;
            *states.entry(state).or_default() += 1.0;
            path.push("task");
            let tids = numeric_entries(&path).unwrap_or_default();
            for tid in &tids {
                path.push(tid);
                path.push("stat");
                if let Some((s, _)) = read_stat(&path)? {
                    *thread_states.entry(s).or_default() += 1.0;
                }
                path.pop();
                path.pop();
            }
            path.pop();
            path.pop();
        }
        let pid_max = read_number(&self.proc.join("sys/kernel/pid_max"))?;
        let threads_max = read_number(&self.proc.join("sys/kernel/threads-max"))?;
        out.gauge(
            "node_processes_max_processes",
            "Number of max PIDs limit",
            pid_max,
        )?;
        out.gauge(
            "node_processes_max_threads",
            "Limit of threads in the system",
            threads_max,
        )?;
        out.gauge("node_processes_pids", "Number of PIDs", n_pids)?;
        let mut f = out.family(
            "node_processes_state",
            "Number of processes in each state.",
            Kind::Gauge,
        )?;
        let mut buf = [0u8; 4];
        for (s, n) in &states {
            f.sample(&[("state", &*s.encode_utf8(&mut buf))], *n)?;
        }
        drop(f);
        out.gauge(
            "node_processes_threads",
            "Allocated threads in system",
            threads,
        )?;
        let mut f = out.family(
            "node_processes_threads_state",
            "Number of threads in each state.",
            Kind::Gauge,
        )?;
        for (s, n) in &thread_states {
            f.sample(&[("thread_state", &*s.encode_utf8(&mut buf))], *n)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_odd_comm() {
        let t = "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 7 0 100 1000 50 18446744073709551615\n";
        assert_eq!(parse_stat(t).unwrap(), ('S', 7.0));
        assert!(parse_stat("1 (x) S 1 2\n").is_err());
        assert!(parse_stat("no paren").is_err());
    }
}
