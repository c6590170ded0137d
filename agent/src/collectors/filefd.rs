//! `filefd`: reads `<procfs>/sys/fs/file-nr`; produces `node_filefd_allocated` and
//! `node_filefd_maximum`.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file};
use crate::emit::Out;

#[derive(Debug)]
pub struct Filefd {
    path: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Filefd {
        path: ctx.paths.proc("sys/fs/file-nr"),
    }))
}

/// `allocated unused maximum` -> (allocated, maximum).
pub fn parse(text: &str) -> Result<(f64, f64), LineError> {
    let mut p = text.split_ascii_whitespace();
    match (p.next(), p.next(), p.next()) {
        (Some(a), Some(_), Some(m)) => {
            Ok((parse_f64(a, 1, "allocated")?, parse_f64(m, 1, "maximum")?))
        }
        _ => Err(LineError::new(
            1,
            format!("expected 3 numbers, got {text:?}"),
        )),
    }
}

impl NodeCollector for Filefd {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let (allocated, maximum) = parse(&text).map_err(|e| e.at(&self.path))?;
        out.gauge(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            allocated,
        )?;
        out.gauge(
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
            maximum,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_nr() {
        assert_eq!(parse("709\t0\t2466193\n").unwrap(), (709.0, 2466193.0));
        assert!(parse("709 0\n").is_err());
        assert!(parse("x 0 1\n").is_err());
    }
}
