//! `loadavg`: reads `<procfs>/loadavg`; produces `node_load1`, `node_load5`, `node_load15`.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file};
use crate::emit::Out;

#[derive(Debug)]
pub struct Loadavg {
    path: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Loadavg {
        path: ctx.paths.proc("loadavg"),
    }))
}

/// Parses `/proc/loadavg` ("0.50 0.47 0.20 1/79 4454") into the 1, 5 and 15 minute averages.
pub fn parse(text: &str) -> Result<[f64; 3], LineError> {
    let mut fields = text.split_ascii_whitespace();
    let mut loads = [0.0; 3];
    for (i, what) in ["load1", "load5", "load15"].iter().enumerate() {
        let field = fields
            .next()
            .ok_or_else(|| LineError::new(1, format!("missing field {what}")))?;
        loads[i] = parse_f64(field, 1, what)?;
    }
    Ok(loads)
}

impl NodeCollector for Loadavg {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let [l1, l5, l15] = parse(&text).map_err(|e| e.at(&self.path))?;
        out.gauge("node_load1", "1m load average.", l1)?;
        out.gauge("node_load5", "5m load average.", l5)?;
        out.gauge("node_load15", "15m load average.", l15)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_averages() {
        assert_eq!(
            parse("0.50 0.47 0.20 1/79 4454\n").unwrap(),
            [0.50, 0.47, 0.20]
        );
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        assert_eq!(parse("0.5 0.4").unwrap_err().msg, "missing field load15");
        let e = parse("0.5 x 0.1").unwrap_err();
        assert!(e.msg.contains("load5"), "{}", e.msg);
        assert!(parse("").is_err());
    }
}
