//! Helpers shared by the sysfs/procfs hardware collectors: listing a class directory, reading
//! one attribute, parsing numbers with the file named in the error.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::{CollectorError, LineError};
use crate::emit::{Kind, Out};

/// The entry names of `dir`, sorted; a missing directory is [`CollectorError::NoData`].
pub fn list_dir(dir: &Path) -> Result<Vec<String>, CollectorError> {
    let rd = fs::read_dir(dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CollectorError::NoData(dir.to_path_buf()),
        _ => CollectorError::Io {
            path: dir.to_path_buf(),
            source,
        },
    })?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// An attribute's content without the trailing newline; `None` when the file is missing or
/// unreadable (many sysfs attributes are optional, or refuse reads with EINVAL/EIO when the
/// hardware does not support them, as node_exporter tolerates).
pub fn attr(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    Some(s.trim_end_matches(['\n', '\r', ' ']).to_string())
}

/// Parses an attribute's text as a number; the error names the file and line 1.
pub fn num(path: &Path, text: &str) -> Result<f64, CollectorError> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| LineError::new(1, format!("{:?} is not a number", text.trim())).at(path))
}

/// Reads an optional numeric attribute: `Ok(None)` when absent, an error when malformed.
pub fn num_attr(path: &Path) -> Result<Option<f64>, CollectorError> {
    match attr(path) {
        None => Ok(None),
        Some(t) => num(path, &t).map(Some),
    }
}

/// `dir/name` as a PathBuf.
pub fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Families gathered during one scrape, emitted once each, sorted by name, series sorted by
/// labels (as node_exporter's registry orders them).
#[derive(Debug, Default)]
pub struct Samples {
    families: std::collections::BTreeMap<String, FamilyBuf>,
}

#[derive(Debug)]
struct FamilyBuf {
    help: String,
    kind: Kind,
    series: Vec<(Vec<(String, String)>, f64)>,
}

impl Samples {
    /// Adds one series; the first help/kind given for a name wins. Labels are sorted by name.
    pub fn add(&mut self, name: &str, help: &str, kind: Kind, labels: &[(&str, &str)], value: f64) {
        let fam = self
            .families
            .entry(name.to_string())
            .or_insert_with(|| FamilyBuf {
                help: help.to_string(),
                kind,
                series: Vec::new(),
            });
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        fam.series.push((l, value));
    }

    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.add(name, help, Kind::Gauge, labels, value);
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// The value of `name{labels}` (labels in any order), for tests.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        self.families
            .get(name)?
            .series
            .iter()
            .find(|(l, _)| *l == want)
            .map(|(_, v)| *v)
    }

    pub fn emit(mut self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        for (name, f) in &mut self.families {
            f.series.sort_by(|a, b| a.0.cmp(&b.0));
            let mut fam = out.family(name, &f.help, f.kind)?;
            for (labels, v) in &f.series {
                fam.sample(labels, *v)?;
            }
        }
        Ok(())
    }
}
