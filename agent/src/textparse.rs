//! Parser for the Prometheus text exposition format 0.0.4 (what node_exporter's textfile
//! collector reads from `*.prom` files, and what exporters answer a scrape with).
//!
//! The rules follow Prometheus' own `expfmt` text parser: `# HELP name text` (escapes `\\` and
//! `\n`), `# TYPE name counter|gauge|histogram|summary|untyped` before the family's samples,
//! other `#` lines are comments; a sample is `name{label="value",...} value [timestamp_ms]`
//! with label values escaping `\\`, `\"` and `\n`. `<name>_bucket`, `<name>_sum` and
//! `<name>_count` belong to the histogram (summary) `<name>` once its TYPE line was seen.
//! Every error names its 1-based line; input is never trusted (no panics, bounded output).
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricType {
    fn from_token(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Untyped,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        }
    }
}

/// One sample line, with its full name (`h_bucket` for a histogram bucket).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
    /// 1-based line of the sample.
    pub line: usize,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A family: its HELP (if given), TYPE (untyped if not given) and samples in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    pub name: String,
    pub help: Option<String>,
    pub kind: MetricType,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        msg: msg.into(),
    })
}

/// Bounds on what one input may produce.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Samples in the whole input; one more is an error.
    pub max_samples: usize,
    /// Labels of one sample; one more is an error (also bounds the duplicate-name check).
    pub max_labels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_samples: 100_000,
            max_labels: 128,
        }
    }
}

struct FamilyState {
    family: MetricFamily,
    typed: bool,
}

/// Parses `text` into families in order of first appearance.
pub fn parse(text: &str, limits: Limits) -> Result<Vec<MetricFamily>, ParseError> {
    let mut families: Vec<FamilyState> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut nsamples = 0usize;
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let l = raw
            .strip_suffix('\r')
            .unwrap_or(raw)
            .trim_start_matches([' ', '\t']);
        if l.trim_end_matches([' ', '\t']).is_empty() {
            continue;
        }
        if let Some(comment) = l.strip_prefix('#') {
            meta_line(comment, line, &mut families, &mut index)?;
            continue;
        }
        nsamples += 1;
        if nsamples > limits.max_samples {
            return err(
                line,
                format!("more than {} samples (limit)", limits.max_samples),
            );
        }
        let sample = sample_line(l, line, limits.max_labels)?;
        let idx = family_of(&sample.name, &index, &families);
        let idx = match idx {
            Some(i) => i,
            None => {
                families.push(FamilyState {
                    family: MetricFamily {
                        name: sample.name.clone(),
                        help: None,
                        kind: MetricType::Untyped,
                        samples: Vec::new(),
                    },
                    typed: false,
                });
                index.insert(sample.name.clone(), families.len() - 1);
                families.len() - 1
            }
        };
        let fam = &mut families[idx].family;
        check_member(fam, &sample)?;
        fam.samples.push(sample);
    }
    Ok(families.into_iter().map(|s| s.family).collect())
}

/// The family a sample name belongs to: `<h>_bucket|_sum|_count` of a histogram or summary
/// `<h>`, else the family of the same name.
fn family_of(
    name: &str,
    index: &HashMap<String, usize>,
    families: &[FamilyState],
) -> Option<usize> {
    for (suffix, kinds) in [
        ("_bucket", &[MetricType::Histogram][..]),
        ("_sum", &[MetricType::Histogram, MetricType::Summary][..]),
        ("_count", &[MetricType::Histogram, MetricType::Summary][..]),
    ] {
        if let Some(stem) = name.strip_suffix(suffix)
            && let Some(&i) = index.get(stem)
            && kinds.contains(&families[i].family.kind)
        {
            return Some(i);
        }
    }
    index.get(name).copied()
}

fn check_member(fam: &MetricFamily, s: &Sample) -> Result<(), ParseError> {
    let line = s.line;
    match fam.kind {
        MetricType::Histogram => {
            if s.name == fam.name {
                return err(
                    line,
                    format!(
                        "sample {} of histogram {} must be {0}_bucket, {0}_sum or {0}_count",
                        s.name, fam.name
                    ),
                );
            }
            if s.name.ends_with("_bucket") {
                match s.label("le") {
                    None => return err(line, format!("{}: bucket without label le", s.name)),
                    Some(le) => {
                        parse_value(le).ok_or_else(|| ParseError {
                            line,
                            msg: format!("{}: le={le:?} is not a number", s.name),
                        })?;
                    }
                }
            }
        }
        MetricType::Summary => {
            if s.name == fam.name {
                match s.label("quantile") {
                    None => {
                        return err(
                            line,
                            format!("{}: summary sample without label quantile", s.name),
                        );
                    }
                    Some(q) => {
                        parse_value(q).ok_or_else(|| ParseError {
                            line,
                            msg: format!("{}: quantile={q:?} is not a number", s.name),
                        })?;
                    }
                }
            }
        }
        MetricType::Counter | MetricType::Gauge | MetricType::Untyped => {}
    }
    Ok(())
}

fn meta_line(
    comment: &str,
    line: usize,
    families: &mut Vec<FamilyState>,
    index: &mut HashMap<String, usize>,
) -> Result<(), ParseError> {
    let rest = comment.trim_start_matches([' ', '\t']);
    let (keyword, rest) = split_token(rest);
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(()); // an ordinary comment
    }
    let (name, rest) = split_token(rest.trim_start_matches([' ', '\t']));
    if name.is_empty() {
        return err(line, format!("{keyword} line without a metric name"));
    }
    if !valid_metric_name(name) {
        return err(
            line,
            format!("{keyword} line: invalid metric name {name:?}"),
        );
    }
    let arg = rest.trim_start_matches([' ', '\t']);
    let idx = match index.get(name) {
        Some(&i) => i,
        None => {
            families.push(FamilyState {
                family: MetricFamily {
                    name: name.to_string(),
                    help: None,
                    kind: MetricType::Untyped,
                    samples: Vec::new(),
                },
                typed: false,
            });
            index.insert(name.to_string(), families.len() - 1);
            families.len() - 1
        }
    };
    let st = &mut families[idx];
    if keyword == "HELP" {
        if st.family.help.is_some() {
            return err(line, format!("second HELP line for metric name {name:?}"));
        }
        st.family.help = Some(unescape(arg, false, line)?);
    } else {
        let token = arg.trim_end_matches([' ', '\t']);
        let Some(kind) = MetricType::from_token(token) else {
            return err(line, format!("unknown metric type {token:?} for {name}"));
        };
        if st.typed || !st.family.samples.is_empty() {
            return err(
                line,
                format!("second TYPE line for metric name {name:?}, or TYPE after its samples"),
            );
        }
        st.typed = true;
        st.family.kind = kind;
    }
    Ok(())
}

/// Splits at the first blank: (token, rest starting at the blank).
fn split_token(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Undoes `\\` and `\n` (and `\"` in label values); any other escape is an error.
fn unescape(s: &str, quote: bool, line: usize) -> Result<String, ParseError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quote => out.push('"'),
            Some(other) => return err(line, format!("invalid escape sequence \\{other}")),
            None => return err(line, "escape sequence at end of line"),
        }
    }
    Ok(out)
}

/// Parses a sample value the way Go's `strconv.ParseFloat` reads them (`NaN`, `+Inf`, `-Inf`).
pub fn parse_value(s: &str) -> Option<f64> {
    if s.is_empty() || s.contains('_') {
        return None;
    }
    s.parse::<f64>().ok()
}

fn sample_line(l: &str, line: usize, max_labels: usize) -> Result<Sample, ParseError> {
    let name_end = l
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(l.len());
    let name = &l[..name_end];
    if !valid_metric_name(name) {
        let shown: String = l.chars().take(40).collect();
        return err(line, format!("invalid metric name in {shown:?}"));
    }
    let mut rest = l[name_end..].trim_start_matches([' ', '\t']);
    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, line, max_labels, &mut labels)?;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let (value_tok, rest) = split_token(rest);
    if value_tok.is_empty() {
        return err(line, format!("{name}: missing value"));
    }
    let value = parse_value(value_tok).ok_or_else(|| ParseError {
        line,
        msg: format!("{name}: expected float as value, got {value_tok:?}"),
    })?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let (ts_tok, rest) = split_token(rest);
    let timestamp_ms = if ts_tok.is_empty() {
        None
    } else {
        Some(ts_tok.parse::<i64>().map_err(|_| ParseError {
            line,
            msg: format!("{name}: expected integer as timestamp, got {ts_tok:?}"),
        })?)
    };
    if !rest.trim_matches([' ', '\t']).is_empty() {
        return err(line, format!("{name}: unexpected text after the value"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
        line,
    })
}

/// Parses `name="value",...}`; returns what follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    line: usize,
    max_labels: usize,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, ParseError> {
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        if labels.len() >= max_labels {
            return err(line, format!("more than {max_labels} labels (limit)"));
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let lname = &s[..end];
        if !valid_label_name(lname) {
            let shown: String = s.chars().take(20).collect();
            return err(line, format!("invalid label name at {shown:?}"));
        }
        if labels.iter().any(|(k, _)| k == lname) {
            return err(line, format!("duplicate label name {lname:?}"));
        }
        s = s[end..].trim_start_matches([' ', '\t']);
        s = s.strip_prefix('=').ok_or_else(|| ParseError {
            line,
            msg: format!("expected '=' after label name {lname:?}"),
        })?;
        s = s.trim_start_matches([' ', '\t']);
        s = s.strip_prefix('"').ok_or_else(|| ParseError {
            line,
            msg: format!("expected '\"' to start the value of label {lname:?}"),
        })?;
        // The value ends at the first quote not escaped by a backslash.
        let mut close = None;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(close) = close else {
            return err(line, format!("unterminated value of label {lname:?}"));
        };
        let value = unescape(&s[..close], true, line)?;
        labels.push((lname.to_string(), value));
        s = s[close + 1..].trim_start_matches([' ', '\t']);
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return err(line, format!("expected ',' or '}}' after label {lname:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<MetricFamily>, ParseError> {
        parse(text, Limits::default())
    }

    #[test]
    fn parses_families_with_help_type_and_labels() {
        let f = p(concat!(
            "# HELP foo Foo with \\\\ and \\n in it\n",
            "# TYPE foo gauge\n",
            "foo{a=\"x\\\"y\\\\z\\nw\",b=\"\",} 1.5\n",
            "  foo 2 1700000000000\n",
            "# just a comment\n",
            "bar +Inf\n",
            "\n",
            "baz NaN\r\n",
        ))
        .unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].name, "foo");
        assert_eq!(f[0].help.as_deref(), Some("Foo with \\ and \n in it"));
        assert_eq!(f[0].kind, MetricType::Gauge);
        assert_eq!(
            f[0].samples[0].labels,
            vec![
                ("a".to_string(), "x\"y\\z\nw".to_string()),
                ("b".to_string(), String::new())
            ]
        );
        assert_eq!(f[0].samples[1].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(f[1].kind, MetricType::Untyped);
        assert_eq!(f[1].samples[0].value, f64::INFINITY);
        assert!(f[2].samples[0].value.is_nan());
    }

    #[test]
    fn groups_histogram_and_summary_parts() {
        let f = p(concat!(
            "# TYPE h histogram\n",
            "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
            "# TYPE s summary\n",
            "s{quantile=\"0.5\"} 1\ns_sum 3\ns_count 2\n",
            "x_count 1\n",
        ))
        .unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].samples.len(), 4);
        assert_eq!(f[1].samples.len(), 3);
        assert_eq!(f[2].name, "x_count");
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, needle) in [
            ("ok 1\nbad line here {\n", 2, "expected float"),
            ("a{b=\"c\"} x\n", 1, "expected float"),
            ("a{b=\"c} 1\n", 1, "unterminated"),
            ("a{b=\"c\",b=\"d\"} 1\n", 1, "duplicate label"),
            ("a{1b=\"c\"} 1\n", 1, "invalid label name"),
            ("a 1\n# TYPE a gauge\n", 2, "TYPE"),
            ("# TYPE a gauge\n# TYPE a counter\n", 2, "TYPE"),
            ("# HELP a x\n# HELP a y\n", 2, "HELP"),
            ("# TYPE a thing\n", 1, "unknown metric type"),
            ("# TYPE h histogram\nh_bucket 1\n", 2, "le"),
            ("# TYPE h histogram\nh_bucket{le=\"x\"} 1\n", 2, "le"),
            ("# TYPE h histogram\nh 1\n", 2, "_bucket"),
            ("# TYPE s summary\ns 1\n", 2, "quantile"),
            ("a{b=\"\\x\"} 1\n", 1, "escape"),
            ("a 1 2 3\n", 1, "unexpected text"),
            ("a 1 1.5\n", 1, "timestamp"),
            ("9a 1\n", 1, "invalid metric name"),
            ("a{b=\"c\" d=\"e\"} 1\n", 1, "','"),
            ("a\n", 1, "missing value"),
        ] {
            let e = p(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.msg.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn sample_limit_is_enforced() {
        let e = parse(
            "a 1\nb 2\nc 3\n",
            Limits {
                max_samples: 2,
                ..Limits::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.msg.contains("limit"), "{e}");
        let few = Limits {
            max_labels: 2,
            ..Limits::default()
        };
        assert!(parse("a{x=\"1\",y=\"2\"} 1\n", few).is_ok());
        let e = parse("a 1\na{x=\"1\",y=\"2\",z=\"3\"} 1\n", few).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("more than 2 labels"), "{e}");
    }
}
