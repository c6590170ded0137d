//! `meminfo`: reads `<procfs>/meminfo`; produces `node_memory_<Field>_bytes` for fields in kB
//! and `node_memory_<Field>` for unitless ones (`HugePages_Total`), as node_exporter does:
//! `Active(anon)` becomes `Active_anon`.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file};
use crate::emit::Out;

#[derive(Debug)]
pub struct Meminfo {
    path: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Meminfo {
        path: ctx.paths.proc("meminfo"),
    }))
}

/// Parses `/proc/meminfo` into (metric name, value in bytes or plain count).
pub fn parse(text: &str) -> Result<Vec<(String, f64)>, LineError> {
    let mut fields = Vec::with_capacity(64);
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let mut parts = line.split_ascii_whitespace();
        let Some(key) = parts.next() else { continue };
        let key = key
            .strip_suffix(':')
            .ok_or_else(|| LineError::new(lineno, format!("field {key:?} lacks ':'")))?;
        let value = parts
            .next()
            .ok_or_else(|| LineError::new(lineno, format!("field {key} has no value")))?;
        let mut value = parse_f64(value, lineno, key)?;
        let mut name = String::with_capacity(key.len() + 20);
        name.push_str("node_memory_");
        // "Active(anon)" -> "Active_anon"
        for c in key.chars() {
            match c {
                '(' => name.push('_'),
                ')' => {}
                c => name.push(c),
            }
        }
        match (parts.next(), parts.next()) {
            (None, _) => {}
            (Some("kB"), None) => {
                value *= 1024.0;
                name.push_str("_bytes");
            }
            (Some(unit), _) => {
                return Err(LineError::new(
                    lineno,
                    format!("field {key}: unexpected unit or trailing text {unit:?}"),
                ));
            }
        }
        fields.push((name, value));
    }
    Ok(fields)
}

impl NodeCollector for Meminfo {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let fields = parse(&text).map_err(|e| e.at(&self.path))?;
        for (name, value) in fields {
            let field = &name["node_memory_".len()..];
            out.gauge(&name, &format!("Memory information field {field}."), value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_kb_and_renames_parentheses() {
        let f =
            parse("MemTotal:       24684096 kB\nActive(anon):  10 kB\nHugePages_Total:       0\n")
                .unwrap();
        assert_eq!(
            f,
            vec![
                (
                    "node_memory_MemTotal_bytes".to_string(),
                    24684096.0 * 1024.0
                ),
                ("node_memory_Active_anon_bytes".to_string(), 10240.0),
                ("node_memory_HugePages_Total".to_string(), 0.0),
            ]
        );
    }

    #[test]
    fn names_the_bad_line() {
        let e = parse("MemTotal: 1 kB\nMemFree: lots kB\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("MemFree"), "{}", e.msg);
        assert_eq!(parse("MemTotal 1 kB").unwrap_err().line, 1);
        assert!(parse("MemTotal: 1 MB").is_err());
    }
}
