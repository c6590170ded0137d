//! `textfile`: reads every `*.prom` file in `--collector.textfile.directory` (a directory or a
//! glob of directories; empty = none, node_exporter 1.5's default) and exports their families,
//! plus `node_textfile_mtime_seconds{file}` for each file read and `node_textfile_scrape_error`.
//!
//! node_exporter 1.5's rules: files are read in name order; a file that cannot be read or
//! parsed, or that carries client-side timestamps, is skipped with a log naming the file and
//! line and sets `node_textfile_scrape_error 1`, the other files are still exported. A family
//! without HELP gets "Metric read from <files>". A family found in several files is merged;
//! a file whose family conflicts with the first one seen (other TYPE or HELP) loses that
//! family, and a series already seen is dropped, both with an error log: they never break
//! the scrape. Labels missing from some series of a family are filled with "" as
//! node_exporter does.
//!
//! Bounded: at most [`MAX_FILE_BYTES`] bytes, [`MAX_SAMPLES_PER_FILE`] samples,
//! [`MAX_LABELS_PER_SAMPLE`] labels per sample and [`MAX_LABEL_PAIRS_PER_FILE`] label pairs
//! (after the filling above) per file — more is a parse error for that file —,
//! [`MAX_LABEL_PAIRS_PER_SCRAPE`] over all files (later files are skipped) and
//! [`MAX_GLOB_DIRS`] directories.
//!
//! Known difference: prometheus-client (our encoder) has no summary type and always writes
//! counters with a `_total` suffix, so a summary from a file is exported as untyped series
//! (`<name>{quantile}`, `<name>_sum`, `<name>_count`) and a counter whose name lacks `_total`
//! as untyped.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use prometheus_client::{encoding::NoLabelSet, metrics::MetricType as PcType};

use super::{CollectorContext, CollectorError, NodeCollector};
use crate::{
    emit::{Kind, Out},
    textparse::{self, Limits, MetricFamily, MetricType, ParseError},
};

pub const MAX_FILE_BYTES: u64 = 8 << 20;
pub const MAX_SAMPLES_PER_FILE: usize = 100_000;
pub const MAX_GLOB_DIRS: usize = 256;
/// Labels of one sample.
pub const MAX_LABELS_PER_SAMPLE: usize = 128;
/// Label pairs of one file once every series carries its family's union of label names (what
/// the merged families hold in memory): samples × distinct label names, summed over families.
pub const MAX_LABEL_PAIRS_PER_FILE: usize = 500_000;
/// Label pairs of all files of one scrape; the files beyond it are skipped. A pair costs a
/// few hundred bytes at the scrape's peak (parsed, merged, encoded), so this bounds the
/// textfile collector to a few hundred MB whatever the directory holds.
pub const MAX_LABEL_PAIRS_PER_SCRAPE: usize = 500_000;

const OWN_FAMILIES: [&str; 2] = ["node_textfile_mtime_seconds", "node_textfile_scrape_error"];

#[derive(Debug)]
pub struct Textfile {
    pattern: String,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Textfile {
        pattern: ctx.settings.textfile.directory.clone(),
    }))
}

/// A series' value after the parts of histograms and summaries were put together.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(f64),
    /// `buckets` are (upper bound, cumulative count) in increasing bound order.
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
    Summary {
        sum: f64,
        count: f64,
        quantiles: Vec<(f64, f64)>,
    },
}

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Sorted by label name.
    pub labels: Vec<(String, String)>,
    pub value: Value,
}

/// A family as exported: merged over every file it appeared in.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: MetricType,
    pub series: Vec<Series>,
}

/// Parses one file as node_exporter does: the text format, and no client-side timestamps.
pub fn parse_file(text: &str) -> Result<Vec<MetricFamily>, ParseError> {
    parse_counted(text).map(|(families, _)| families)
}

/// [`parse_file`], with the file's label pairs (see [`label_pairs`]) beside its families.
fn parse_counted(text: &str) -> Result<(Vec<MetricFamily>, usize), ParseError> {
    let families = textparse::parse(
        text,
        Limits {
            max_samples: MAX_SAMPLES_PER_FILE,
            max_labels: MAX_LABELS_PER_SAMPLE,
        },
    )?;
    let mut pairs = 0usize;
    for f in &families {
        pairs = pairs.saturating_add(label_pairs(f));
        if pairs > MAX_LABEL_PAIRS_PER_FILE {
            return Err(ParseError {
                line: f.samples.last().map_or(0, |s| s.line),
                msg: format!(
                    "family {}: more than {MAX_LABEL_PAIRS_PER_FILE} label pairs in the file \
                     once each series has its family's {} label names (limit)",
                    f.name,
                    label_names(f).len()
                ),
            });
        }
    }
    for f in &families {
        if let Some(s) = f.samples.iter().find(|s| s.timestamp_ms.is_some()) {
            return Err(ParseError {
                line: s.line,
                msg: "contains unsupported client-side timestamps, skipping entire file".into(),
            });
        }
    }
    Ok((families, pairs))
}

/// The distinct label names of a family's samples.
fn label_names(f: &MetricFamily) -> HashSet<&str> {
    f.samples
        .iter()
        .flat_map(|s| s.labels.iter().map(|(k, _)| k.as_str()))
        .collect()
}

/// Label pairs the family holds once every sample carries all its label names.
fn label_pairs(f: &MetricFamily) -> usize {
    f.samples.len().saturating_mul(label_names(f).len().max(1))
}

/// Turns one file's family into series: histogram and summary parts grouped per label set,
/// labels missing from some series filled with "".
fn convert(f: &MetricFamily) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    match f.kind {
        MetricType::Counter | MetricType::Gauge | MetricType::Untyped => {
            for s in &f.samples {
                out.push(Series {
                    labels: s.labels.clone(),
                    value: Value::Simple(s.value),
                });
            }
        }
        MetricType::Histogram | MetricType::Summary => {
            let special = if f.kind == MetricType::Histogram {
                "le"
            } else {
                "quantile"
            };
            let mut groups: Vec<(Vec<(String, String)>, Value)> = Vec::new();
            let mut group_of: HashMap<Vec<(String, String)>, usize> = HashMap::new();
            for s in &f.samples {
                let mut key: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k != special)
                    .cloned()
                    .collect();
                key.sort();
                let i = match group_of.get(&key) {
                    Some(&i) => i,
                    None => {
                        let empty = if f.kind == MetricType::Histogram {
                            Value::Histogram {
                                sum: 0.0,
                                count: 0,
                                buckets: Vec::new(),
                            }
                        } else {
                            Value::Summary {
                                sum: 0.0,
                                count: 0.0,
                                quantiles: Vec::new(),
                            }
                        };
                        group_of.insert(key.clone(), groups.len());
                        groups.push((key, empty));
                        groups.len() - 1
                    }
                };
                let bound = s.label(special).and_then(textparse::parse_value);
                let suffix = &s.name[f.name.len().min(s.name.len())..];
                match &mut groups[i].1 {
                    Value::Histogram {
                        sum,
                        count,
                        buckets,
                    } => match suffix {
                        "_sum" => *sum = s.value,
                        "_count" => *count = float_count(s.value),
                        _ => {
                            if let Some(b) = bound {
                                buckets.push((b, float_count(s.value)));
                            }
                        }
                    },
                    Value::Summary {
                        sum,
                        count,
                        quantiles,
                    } => match suffix {
                        "_sum" => *sum = s.value,
                        "_count" => *count = s.value,
                        _ => {
                            if let Some(q) = bound {
                                quantiles.push((q, s.value));
                            }
                        }
                    },
                    Value::Simple(_) => {}
                }
            }
            for (labels, mut value) in groups {
                match &mut value {
                    Value::Histogram { buckets, .. } => {
                        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                    }
                    Value::Summary { quantiles, .. } => {
                        quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                    }
                    Value::Simple(_) => {}
                }
                out.push(Series { labels, value });
            }
        }
    }
    // node_exporter gives every series of a family the union of the family's label names.
    let mut names: Vec<&str> = out
        .iter()
        .flat_map(|s| s.labels.iter().map(|(k, _)| k.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let names: Vec<String> = names.into_iter().map(String::from).collect();
    for s in &mut out {
        for n in &names {
            if !s.labels.iter().any(|(k, _)| k == n) {
                s.labels.push((n.clone(), String::new()));
            }
        }
        s.labels.sort();
    }
    out
}

fn float_count(v: f64) -> u64 {
    // Saturating: NaN and negatives become 0, huge values u64::MAX.
    v as u64
}

/// Merges the families of the files read successfully (in read order). Returns the families
/// sorted by name with their series sorted by labels, and one message per dropped conflict.
pub fn merge(files: &[(String, Vec<MetricFamily>)]) -> (Vec<Family>, Vec<String>) {
    let mut files_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for (path, fams) in files {
        for f in fams {
            files_of.entry(&f.name).or_default().push(path);
        }
    }
    let mut merged: BTreeMap<String, (Family, HashSet<Labels>)> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (path, fams) in files {
        for f in fams {
            if f.samples.is_empty() {
                continue;
            }
            if OWN_FAMILIES.contains(&f.name.as_str()) {
                conflicts.push(format!(
                    "{path}: family {} is the collector's own, dropped",
                    f.name
                ));
                continue;
            }
            let help = f.help.clone().unwrap_or_else(|| {
                format!(
                    "Metric read from {}",
                    files_of
                        .get(f.name.as_str())
                        .map_or(String::new(), |v| v.join(", "))
                )
            });
            let (family, seen) = merged.entry(f.name.clone()).or_insert_with(|| {
                (
                    Family {
                        name: f.name.clone(),
                        help: help.clone(),
                        kind: f.kind,
                        series: Vec::new(),
                    },
                    HashSet::new(),
                )
            });
            if family.kind != f.kind || family.help != help {
                conflicts.push(format!(
                    "{path}: family {} ({}, help {:?}) conflicts with the one read before ({}, help {:?}); dropped",
                    f.name,
                    f.kind.as_str(),
                    help,
                    family.kind.as_str(),
                    family.help
                ));
                continue;
            }
            for s in convert(f) {
                if !seen.insert(s.labels.clone()) {
                    conflicts.push(format!(
                        "{path}: series {}{{{}}} was already read; dropped",
                        f.name,
                        s.labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v:?}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    ));
                    continue;
                }
                family.series.push(s);
            }
        }
    }
    let families = merged
        .into_values()
        .map(|(mut f, _)| {
            f.series.sort_by(|a, b| a.labels.cmp(&b.labels));
            f
        })
        .collect();
    (families, conflicts)
}

/// Matches `name` against a shell pattern as Go's `filepath.Match`: `*`, `?`, `[a-z]`,
/// `[^x]`, `\` escapes. Linear backtracking on the last `*` (no exponential blow-up).
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                '?' => Some(pi + 1),
                '[' => class_match(&p, pi, s[si]),
                '\\' if pi + 1 < p.len() => (p[pi + 1] == s[si]).then_some(pi + 2),
                c => (c == s[si]).then_some(pi + 1),
            }
        } else {
            None
        };
        match step {
            Some(next) => {
                pi = next;
                si += 1;
            }
            None => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`; the index after it if so.
fn class_match(p: &[char], start: usize, c: char) -> Option<usize> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if lo == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            lo
        };
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
            hi = p[i + 1];
            i += 2;
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    (matched != negate).then_some(i)
}

/// The directories a `--collector.textfile.directory` value names: the glob's matches in
/// order, or the value itself when it is no glob or matches nothing (as node_exporter).
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    if !pattern.contains(['*', '?', '[']) {
        return vec![PathBuf::from(pattern)];
    }
    let mut current: Vec<PathBuf> = vec![if pattern.starts_with('/') {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    }];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for base in &current {
            if !comp.contains(['*', '?', '[']) {
                let p = base.join(comp);
                if p.exists() {
                    next.push(p);
                }
                continue;
            }
            let dir = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base.as_path()
            };
            let Ok(rd) = fs::read_dir(dir) else { continue };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| wildcard_match(comp, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| base.join(n)));
        }
        if next.len() > MAX_GLOB_DIRS {
            tracing::warn!(
                collector = "textfile",
                pattern,
                limit = MAX_GLOB_DIRS,
                "textfile directory glob matches too many paths; the rest are ignored"
            );
            next.truncate(MAX_GLOB_DIRS);
        }
        current = next;
    }
    if current.is_empty() {
        vec![PathBuf::from(pattern)]
    } else {
        current
    }
}

#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("larger than {MAX_FILE_BYTES} bytes (limit)")]
    TooLarge,
    #[error("not a regular file")]
    NotAFile,
    #[error("not UTF-8 at line {0}")]
    Utf8(usize),
    #[error("text format parsing error in {0}")]
    Parse(ParseError),
}

/// A file's mtime, families and label pairs.
fn read_one(path: &Path) -> Result<(f64, Vec<MetricFamily>, usize), FileError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Non-blocking open: a FIFO named `x.prom` would otherwise wait for a writer forever;
    // it, a directory or a device is then refused by its type.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(FileError::Io)?;
    let meta = f.metadata().map_err(FileError::Io)?;
    if !meta.is_file() {
        return Err(FileError::NotAFile);
    }
    let mut buf = Vec::new();
    (&mut f)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(FileError::Io)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::TooLarge);
    }
    let text = String::from_utf8(buf).map_err(|e| {
        let upto = e.utf8_error().valid_up_to();
        FileError::Utf8(1 + e.as_bytes()[..upto].iter().filter(|b| **b == b'\n').count())
    })?;
    let (families, pairs) = parse_counted(&text).map_err(FileError::Parse)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs() as f64);
    Ok((mtime, families, pairs))
}

impl NodeCollector for Textfile {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut errored = false;
        let mut files = Vec::new();
        let mut pairs = 0usize;
        let mut mtimes: Vec<(String, f64)> = Vec::new();
        for dir in expand(&self.pattern) {
            let entries = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) => {
                    if !self.pattern.is_empty() {
                        errored = true;
                        tracing::error!(collector = "textfile", path = %dir.display(), error = %e,
                            "failed to read textfile collector directory");
                    }
                    continue;
                }
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".prom"))
                .collect();
            names.sort();
            for name in names {
                let path = dir.join(&name);
                let shown = path.display().to_string();
                match read_one(&path) {
                    Ok((_, _, n)) if pairs.saturating_add(n) > MAX_LABEL_PAIRS_PER_SCRAPE => {
                        errored = true;
                        tracing::error!(collector = "textfile", file = %shown,
                            "the files before it already hold {pairs} label pairs; with this \
                             one the scrape would pass {MAX_LABEL_PAIRS_PER_SCRAPE} (limit), \
                             file skipped");
                    }
                    Ok((mtime, families, n)) => {
                        pairs += n;
                        mtimes.push((shown.clone(), mtime));
                        files.push((shown, families));
                    }
                    Err(e) => {
                        errored = true;
                        tracing::error!(collector = "textfile", file = %shown, error = %e,
                            "failed to collect textfile data, file skipped");
                    }
                }
            }
        }
        let (families, conflicts) = merge(&files);
        for c in &conflicts {
            tracing::error!(collector = "textfile", "{c}");
        }
        for f in &families {
            emit_family(out, f)?;
        }
        if !mtimes.is_empty() {
            mtimes.sort_by(|a, b| a.0.cmp(&b.0));
            let mut fam = out.family(
                "node_textfile_mtime_seconds",
                "Unixtime mtime of textfiles successfully read.",
                Kind::Gauge,
            )?;
            for (file, t) in &mtimes {
                fam.sample(&[("file", file.as_str())], *t)?;
            }
        }
        out.gauge(
            "node_textfile_scrape_error",
            "1 if there was an error opening or reading a file, 0 otherwise",
            if errored { 1.0 } else { 0.0 },
        )?;
        Ok(())
    }
}

fn emit_family(out: &mut Out<'_, '_>, f: &Family) -> Result<(), CollectorError> {
    match f.kind {
        MetricType::Histogram => {
            let mut enc =
                out.encoder()
                    .encode_descriptor(&f.name, &f.help, None, PcType::Histogram)?;
            for s in &f.series {
                if let Value::Histogram {
                    sum,
                    count,
                    buckets,
                } = &s.value
                {
                    // prometheus-client wants per-bucket counts; the file has cumulative ones.
                    let mut prev = 0u64;
                    let per: Vec<(f64, u64)> = buckets
                        .iter()
                        .map(|(le, c)| {
                            let d = c.saturating_sub(prev);
                            prev = prev.max(*c);
                            (*le, d)
                        })
                        .collect();
                    enc.encode_family(&s.labels)?
                        .encode_histogram::<NoLabelSet>(*sum, *count, &per, None)?;
                }
            }
        }
        MetricType::Summary => {
            let mut fam = out.family(&f.name, &f.help, Kind::Untyped)?;
            for s in &f.series {
                if let Value::Summary { quantiles, .. } = &s.value {
                    for (q, v) in quantiles {
                        let mut labels = s.labels.clone();
                        labels.push(("quantile".into(), format!("{q}")));
                        fam.sample(&labels, *v)?;
                    }
                }
            }
            drop(fam);
            for (suffix, pick) in [("_sum", 0), ("_count", 1)] {
                let name = format!("{}{suffix}", f.name);
                let mut fam = out.family(&name, &f.help, Kind::Untyped)?;
                for s in &f.series {
                    if let Value::Summary { sum, count, .. } = &s.value {
                        fam.sample(&s.labels, if pick == 0 { *sum } else { *count })?;
                    }
                }
            }
        }
        MetricType::Counter | MetricType::Gauge | MetricType::Untyped => {
            let kind = match f.kind {
                MetricType::Counter if f.name.ends_with("_total") => Kind::Counter,
                MetricType::Gauge => Kind::Gauge,
                _ => Kind::Untyped,
            };
            let mut fam = out.family(&f.name, &f.help, kind)?;
            for s in &f.series {
                if let Value::Simple(v) = s.value {
                    fam.sample(&s.labels, v)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> (String, Vec<MetricFamily>) {
        (path.to_string(), parse_file(text).unwrap())
    }

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn merges_across_files_and_drops_conflicts() {
        let files = vec![
            file(
                "/t/a.prom",
                "# HELP foo Foo\n# TYPE foo gauge\nfoo{a=\"1\"} 1\nfoo{b=\"2\"} 2\nbar 3\ndup{x=\"1\"} 1\n",
            ),
            file(
                "/t/b.prom",
                "# HELP foo Other\n# TYPE foo gauge\nfoo{c=\"3\"} 3\nbar{z=\"1\"} 4\ndup{x=\"1\"} 2\n",
            ),
        ];
        let (fams, conflicts) = merge(&files);
        let names: Vec<&str> = fams.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["bar", "dup", "foo"]);
        assert_eq!(fams[0].help, "Metric read from /t/a.prom, /t/b.prom");
        assert_eq!(fams[0].series.len(), 2);
        assert_eq!(fams[1].series.len(), 1);
        assert_eq!(
            fams[1].series[0].value,
            Value::Simple(1.0),
            "first file wins"
        );
        // foo from b.prom has another HELP: dropped; a.prom's labels are filled with "".
        assert_eq!(
            fams[2]
                .series
                .iter()
                .map(|s| s.labels.clone())
                .collect::<Vec<_>>(),
            vec![l(&[("a", ""), ("b", "2")]), l(&[("a", "1"), ("b", "")])]
        );
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        assert!(
            conflicts
                .iter()
                .any(|c| c.contains("/t/b.prom") && c.contains("foo"))
        );
        assert!(conflicts.iter().any(|c| c.contains("dup")));
    }

    #[test]
    fn type_conflict_and_own_names_are_dropped() {
        let files = vec![
            file(
                "/a.prom",
                "# TYPE m_total counter\nm_total 1\n# TYPE m2 gauge\nm2 1\n",
            ),
            file(
                "/b.prom",
                "# TYPE m2 counter\nm2 2\nnode_textfile_scrape_error 0\n",
            ),
        ];
        let (fams, conflicts) = merge(&files);
        let kinds: Vec<(&str, MetricType)> =
            fams.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            kinds,
            [("m2", MetricType::Gauge), ("m_total", MetricType::Counter)]
        );
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
    }

    #[test]
    fn histograms_and_summaries_are_assembled() {
        let files = vec![file(
            "/h.prom",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\",x=\"a\"} 5\nh_bucket{le=\"1\",x=\"a\"} 2\nh_sum{x=\"a\"} 7.5\nh_count{x=\"a\"} 5\n# TYPE s summary\ns{quantile=\"0.9\"} 4\ns_sum 10\ns_count 3\n",
        )];
        let (fams, _) = merge(&files);
        assert_eq!(
            fams[0].series[0],
            Series {
                labels: l(&[("x", "a")]),
                value: Value::Histogram {
                    sum: 7.5,
                    count: 5,
                    buckets: vec![(1.0, 2), (f64::INFINITY, 5)]
                }
            }
        );
        assert_eq!(
            fams[1].series[0].value,
            Value::Summary {
                sum: 10.0,
                count: 3.0,
                quantiles: vec![(0.9, 4.0)]
            }
        );
    }

    #[test]
    fn timestamps_reject_the_file() {
        let e = parse_file("a 1\nb 2 1000\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("timestamps"));
    }

    #[test]
    fn wildcard_matches_like_filepath_match() {
        for (p, n, ok) in [
            ("*", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abd", false),
            ("a?c", "abc", true),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[^a-c]x", "dx", true),
            ("\\*", "*", true),
            ("*.prom", "x.prom", true),
            ("*.prom", "x.prom.tmp", false),
            ("[", "[", false),
            ("a*b*c*d", "aXbYcZd", true),
        ] {
            assert_eq!(wildcard_match(p, n), ok, "{p} vs {n}");
        }
    }

    #[test]
    fn oversized_and_overfull_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("hostlens-tf-big-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.prom");
        fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let e = read_one(&big).unwrap_err().to_string();
        assert!(e.contains("larger than") && e.contains("limit"), "{e}");
        let many = dir.join("many.prom");
        let text: String = (0..=MAX_SAMPLES_PER_FILE)
            .map(|i| format!("m{{i=\"{i}\"}} 1\n"))
            .collect();
        fs::write(&many, text).unwrap();
        let e = read_one(&many).unwrap_err().to_string();
        assert!(
            e.contains(&format!("line {}", MAX_SAMPLES_PER_FILE + 1)) && e.contains("limit"),
            "{e}"
        );
        // A FIFO (no writer) and a directory with the suffix: refused at once, not waited on.
        let fifo = dir.join("fifo.prom");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read_one(&fifo).unwrap_err().to_string(),
            "not a regular file"
        );
        fs::create_dir(dir.join("d.prom")).unwrap();
        assert_eq!(
            read_one(&dir.join("d.prom")).unwrap_err().to_string(),
            "not a regular file"
        );
        let bin = dir.join("bin.prom");
        fs::write(&bin, b"a 1\nb\xff 2\n").unwrap();
        assert_eq!(
            read_one(&bin).unwrap_err().to_string(),
            "not UTF-8 at line 2"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expand_globs_directories_in_order() {
        let root = std::env::temp_dir().join(format!("hostlens-tf-glob-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for d in ["d2", "d1", "x"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let pat = format!("{}/d*", root.display());
        assert_eq!(expand(&pat), vec![root.join("d1"), root.join("d2")]);
        let none = format!("{}/q*", root.display());
        assert_eq!(expand(&none), vec![PathBuf::from(&none)]);
        fs::remove_dir_all(&root).unwrap();
    }
}
