//! `os`: reads `<rootfs>/etc/os-release` (else `<rootfs>/usr/lib/os-release`); produces
//! `node_os_info{build_id,id,id_like,image_id,image_version,name,pretty_name,variant,
//! variant_id,version,version_codename,version_id} 1` and `node_os_version{id,id_like,name}`
//! (the major.minor part of `VERSION_ID`).
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, read_file};
use crate::emit::{Kind, Out};

/// os-release keys exported as `node_os_info` labels (label = lower-case key).
const INFO_KEYS: [&str; 12] = [
    "BUILD_ID",
    "ID",
    "ID_LIKE",
    "IMAGE_ID",
    "IMAGE_VERSION",
    "NAME",
    "PRETTY_NAME",
    "VARIANT",
    "VARIANT_ID",
    "VERSION",
    "VERSION_CODENAME",
    "VERSION_ID",
];

#[derive(Debug)]
pub struct Os {
    paths: [PathBuf; 2],
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Os {
        paths: [
            ctx.paths.root("etc/os-release"),
            ctx.paths.root("usr/lib/os-release"),
        ],
    }))
}

/// Unquotes one os-release value (shell-like: "double", 'single' or bare, with `\` escapes).
fn unquote(v: &str, line: usize) -> Result<String, LineError> {
    let v = v.trim();
    let (body, quote) = match v.chars().next() {
        Some(q @ ('"' | '\'')) => {
            if v.len() < 2 || !v.ends_with(q) {
                return Err(LineError::new(line, format!("unterminated quote in {v:?}")));
            }
            (&v[1..v.len() - 1], Some(q))
        }
        _ => (v, None),
    };
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && quote != Some('\'') {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Parses os-release into (KEY, value) pairs.
pub fn parse(text: &str) -> Result<Vec<(&str, String)>, LineError> {
    let mut v = Vec::with_capacity(16);
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((k, val)) = l.split_once('=') else {
            return Err(LineError::new(i + 1, format!("no '=' in {l:?}")));
        };
        v.push((k.trim(), unquote(val, i + 1)?));
    }
    Ok(v)
}

/// The leading `major[.minor]` of VERSION_ID as a number (0 when there is none).
pub fn version_number(id: &str) -> f64 {
    let mut end = 0;
    let mut dot = false;
    for (i, c) in id.char_indices() {
        if c.is_ascii_digit() {
            end = i + 1;
        } else if c == '.' && !dot && end == i && i > 0 {
            dot = true;
        } else {
            break;
        }
    }
    id[..end].parse().unwrap_or(0.0)
}

impl NodeCollector for Os {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let (path, text) = match read_file(&self.paths[0]) {
            Ok(t) => (&self.paths[0], t),
            Err(CollectorError::NoData(_)) => (&self.paths[1], read_file(&self.paths[1])?),
            Err(e) => return Err(e),
        };
        let kv = parse(&text).map_err(|e| e.at(path))?;
        let get = |k: &str| {
            kv.iter()
                .rev()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let labels: Vec<(String, &str)> = INFO_KEYS
            .iter()
            .map(|k| (k.to_ascii_lowercase(), get(k)))
            .collect();
        out.family(
            "node_os_info",
            "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
            Kind::Gauge,
        )?
        .sample(&labels, 1.0)?;
        out.family(
            "node_os_version",
            "Metric containing the major.minor part of the OS version.",
            Kind::Gauge,
        )?
        .sample(
            &[
                ("id", get("ID")),
                ("id_like", get("ID_LIKE")),
                ("name", get("NAME")),
            ],
            version_number(get("VERSION_ID")),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_and_versions() {
        let kv = parse("# c\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nNAME='Ubuntu \\ x'\nX=\"a\\\"b\"\n").unwrap();
        assert_eq!(
            kv[0],
            ("PRETTY_NAME", "Debian GNU/Linux 12 (bookworm)".into())
        );
        assert_eq!(kv[1], ("ID", "debian".into()));
        assert_eq!(kv[2].1, "Ubuntu \\ x");
        assert_eq!(kv[3].1, "a\"b");
        assert_eq!(parse("ID=x\nbroken\n").unwrap_err().line, 2);
        assert_eq!(parse("ID=\"x\n").unwrap_err().line, 1);
        assert_eq!(version_number("12"), 12.0);
        assert_eq!(version_number("22.04"), 22.04);
        assert_eq!(version_number("3.18.4"), 3.18);
        assert_eq!(version_number("rolling"), 0.0);
    }
}
