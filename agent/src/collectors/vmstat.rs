//! `vmstat`: reads `<procfs>/vmstat`; produces `node_vmstat_<field>` (untyped) for the fields
//! matching `--collector.vmstat.fields`.
use std::path::PathBuf;

use regex::Regex;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file,
    settings_regex,
};
use crate::emit::Out;

#[derive(Debug)]
pub struct Vmstat {
    path: PathBuf,
    fields: Option<Regex>,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Vmstat {
        path: ctx.paths.proc("vmstat"),
        fields: settings_regex("vmstat.fields", &ctx.settings.vmstat.fields)?,
    }))
}

/// Parses `/proc/vmstat` (`name value` lines).
pub fn parse(text: &str) -> Result<Vec<(&str, f64)>, LineError> {
    let mut v = Vec::with_capacity(200);
    for (i, line) in text.lines().enumerate() {
        let mut p = line.split_ascii_whitespace();
        match (p.next(), p.next()) {
            (Some(k), Some(val)) => v.push((k, parse_f64(val, i + 1, k)?)),
            (None, _) => {}
            (Some(k), None) => return Err(LineError::new(i + 1, format!("{k} has no value"))),
        }
    }
    Ok(v)
}

impl NodeCollector for Vmstat {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let fields = parse(&text).map_err(|e| e.at(&self.path))?;
        let mut name = String::with_capacity(64);
        let mut help = String::with_capacity(80);
        for (k, v) in fields {
            if !self.fields.as_ref().is_none_or(|re| re.is_match(k)) {
                continue;
            }
            name.clear();
            name.push_str("node_vmstat_");
            name.push_str(k);
            help.clear();
            help.push_str("/proc/vmstat information field ");
            help.push_str(k);
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
    fn fields_and_default_filter() {
        let f = parse("nr_free_pages 100\npgfault 27855730\noom_kill 0\n").unwrap();
        assert_eq!(f[1], ("pgfault", 27855730.0));
        let re = Regex::new(crate::config::VMSTAT_FIELDS).unwrap();
        let kept: Vec<&str> = f
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| re.is_match(k))
            .collect();
        assert_eq!(kept, ["pgfault", "oom_kill"]);
        assert_eq!(parse("a 1\nb x\n").unwrap_err().line, 2);
        assert_eq!(parse("a\n").unwrap_err().line, 1);
    }
}
