//! Exposition formats for `/metrics`, all over the one prometheus-client registry:
//! - Prometheus text 0.0.4 (the default, what node_exporter answers a plain `curl`): written
//!   here from prometheus-client's `io.prometheus.client` data model, since prometheus-client
//!   has no encoder for it;
//! - OpenMetrics text 1.0.0 (prometheus-client's own encoder) when the Accept header asks;
//! - Prometheus delimited protobuf when the Accept header asks.
use std::fmt::{self, Write as _};

use prometheus_client::{
    encoding::prometheus_protobuf::{self, prometheus_data_model as pb},
    registry::Registry,
};
use prost::Message as _;

pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text004,
    OpenMetrics,
    Protobuf,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text004 => TEXT_004,
            Format::OpenMetrics => OPENMETRICS,
            Format::Protobuf => PROTOBUF,
        }
    }

    /// Chooses the format from an `Accept` header: the supported media type with the highest
    /// q value (earliest wins ties); text 0.0.4 when nothing supported is asked for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text004;
        };
        let mut best: Option<(f32, Format)> = None;
        for range in accept.split(',') {
            let mut params = range.split(';').map(str::trim);
            let media = params.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            let mut proto_ok = false;
            for p in params {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "proto" => proto_ok = v.trim() == "io.prometheus.client.MetricFamily",
                    _ => {}
                }
            }
            let format = match media.as_str() {
                "application/openmetrics-text" => Format::OpenMetrics,
                "application/vnd.google.protobuf" if proto_ok => Format::Protobuf,
                "text/plain" | "text/*" | "*/*" => Format::Text004,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, format));
            }
        }
        best.map_or(Format::Text004, |(_, f)| f)
    }
}

/// Encodes the registry in `format`.
pub fn encode(registry: &Registry, format: Format) -> Result<Vec<u8>, fmt::Error> {
    match format {
        Format::OpenMetrics => {
            let mut s = String::with_capacity(64 * 1024);
            prometheus_client::encoding::text::encode(&mut s, registry)?;
            Ok(s.into_bytes())
        }
        Format::Text004 => {
            let families = gather(registry)?;
            let mut s = String::with_capacity(64 * 1024);
            write_text004(&mut s, &families)?;
            Ok(s.into_bytes())
        }
        Format::Protobuf => {
            let families = gather(registry)?;
            let mut out = Vec::with_capacity(64 * 1024);
            for f in families.iter().filter(|f| !f.metric.is_empty()) {
                f.encode_length_delimited(&mut out)
                    .map_err(|_| fmt::Error)?;
            }
            Ok(out)
        }
    }
}

/// Gathers the registry into Prometheus' data model, with untyped values moved to the field
/// Prometheus reads for untyped families (prometheus-client stores them as gauges).
pub fn gather(registry: &Registry) -> Result<Vec<pb::MetricFamily>, fmt::Error> {
    let mut families = prometheus_protobuf::encode(registry)?;
    for f in &mut families {
        if f.r#type == pb::MetricType::Untyped as i32 {
            for m in &mut f.metric {
                if let Some(g) = m.gauge.take() {
                    m.untyped = Some(pb::Untyped { value: g.value });
                }
            }
        }
    }
    Ok(merge_duplicate_families(families))
}

/// A family name may come twice when a textfile `*.prom` file defines a family a collector
/// also produces. Like node_exporter's registry, keep one family per name: the first one,
/// plus the other's series it lacks when TYPE and HELP agree; anything else is dropped with
/// a warning, never written twice.
pub fn merge_duplicate_families(families: Vec<pb::MetricFamily>) -> Vec<pb::MetricFamily> {
    fn key(m: &pb::Metric) -> Vec<(String, String)> {
        let mut k: Vec<(String, String)> = m
            .label
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        k.sort_unstable();
        k
    }
    let mut out: Vec<pb::MetricFamily> = Vec::with_capacity(families.len());
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for f in families {
        let Some(&i) = index.get(&f.name) else {
            index.insert(f.name.clone(), out.len());
            out.push(f);
            continue;
        };
        let first = &mut out[i];
        if first.r#type != f.r#type || first.help != f.help {
            tracing::warn!(family = %f.name, "family produced twice with another TYPE or HELP; the second one is dropped");
            continue;
        }
        // One hash set per merge: linear in the series, however many there are.
        let mut seen: std::collections::HashSet<Vec<(String, String)>> =
            first.metric.iter().map(key).collect();
        let mut dropped = 0usize;
        for m in f.metric {
            if seen.insert(key(&m)) {
                first.metric.push(m);
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::warn!(family = %f.name, dropped, "series produced twice; the second ones are dropped");
        }
    }
    out
}

/// Writes families in the Prometheus text format 0.0.4. Families without samples are left
/// out, as the Go client does.
pub fn write_text004(out: &mut String, families: &[pb::MetricFamily]) -> fmt::Result {
    for f in families.iter().filter(|f| !f.metric.is_empty()) {
        let kind = match pb::MetricType::try_from(f.r#type) {
            Ok(pb::MetricType::Counter) => "counter",
            Ok(pb::MetricType::Gauge) => "gauge",
            Ok(pb::MetricType::Histogram) => "histogram",
            Ok(pb::MetricType::Summary) => "summary",
            _ => "untyped",
        };
        out.push_str("# HELP ");
        out.push_str(&f.name);
        out.push(' ');
        escape_help(out, &f.help);
        out.push_str("\n# TYPE ");
        out.push_str(&f.name);
        out.push(' ');
        out.push_str(kind);
        out.push('\n');
        for m in &f.metric {
            if let Some(h) = &m.histogram {
                let mut saw_inf = false;
                for b in &h.bucket {
                    saw_inf |= b.upper_bound == f64::INFINITY;
                    sample(out, &f.name, "_bucket", &m.label, Some(b.upper_bound))?;
                    write_u64(out, b.cumulative_count);
                }
                if !saw_inf {
                    sample(out, &f.name, "_bucket", &m.label, Some(f64::INFINITY))?;
                    write_u64(out, h.sample_count);
                }
                sample(out, &f.name, "_sum", &m.label, None)?;
                write_value(out, h.sample_sum)?;
                sample(out, &f.name, "_count", &m.label, None)?;
                write_u64(out, h.sample_count);
            } else if let Some(s) = &m.summary {
                for q in &s.quantile {
                    sample_with(out, &f.name, "", &m.label, Some(("quantile", q.quantile)))?;
                    write_value(out, q.value)?;
                }
                sample(out, &f.name, "_sum", &m.label, None)?;
                write_value(out, s.sample_sum)?;
                sample(out, &f.name, "_count", &m.label, None)?;
                write_u64(out, s.sample_count);
            } else {
                let v = m
                    .counter
                    .as_ref()
                    .map(|c| c.value)
                    .or(m.gauge.as_ref().map(|g| g.value))
                    .or(m.untyped.as_ref().map(|u| u.value))
                    .unwrap_or(f64::NAN);
                sample(out, &f.name, "", &m.label, None)?;
                write_value(out, v)?;
            }
        }
    }
    Ok(())
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[pb::LabelPair],
    le: Option<f64>,
) -> fmt::Result {
    sample_with(out, name, suffix, labels, le.map(|le| ("le", le)))
}

/// Writes `name{labels} ` (with a trailing space), `extra` being `le` or `quantile`.
fn sample_with(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[pb::LabelPair],
    extra: Option<(&str, f64)>,
) -> fmt::Result {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        let mut first = true;
        for l in labels {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&l.name);
            out.push_str("=\"");
            escape_label_value(out, &l.value);
            out.push('"');
        }
        if let Some((k, v)) = extra {
            if !first {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            // The bound inside the label: no newline (write_value ends the line).
            format_value(out, v)?;
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    Ok(())
}

fn write_u64(out: &mut String, v: u64) {
    let _ = writeln!(out, "{v}");
}

/// Formats a sample value as Prometheus parses it (Go's ParseFloat): integers without a
/// fraction, `+Inf`/`-Inf`/`NaN`, large and tiny magnitudes in exponent form.
pub fn format_value(out: &mut String, v: f64) -> fmt::Result {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v == v.trunc() && v.abs() < 1e15 {
        write!(out, "{}", v as i64)?;
    } else if v == 0.0 || (1e-4..1e15).contains(&v.abs()) {
        write!(out, "{v}")?;
    } else {
        write!(out, "{v:e}")?;
    }
    Ok(())
}

fn write_value(out: &mut String, v: f64) -> fmt::Result {
    format_value(out, v)?;
    out.push('\n');
    Ok(())
}

/// In text 0.0.4 HELP, `\` and newline are escaped.
fn escape_help(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// In label values, `\`, `"` and newline are escaped.
fn escape_label_value(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_prometheus_and_curl() {
        assert_eq!(Format::negotiate(None), Format::Text004);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text004);
        // Prometheus 2.42's scrape Accept header.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        let proto = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3";
        assert_eq!(Format::negotiate(Some(proto)), Format::Protobuf);
        assert_eq!(
            Format::negotiate(Some("application/json, text/plain;q=0.2")),
            Format::Text004
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text004
        );
    }

    #[test]
    fn duplicate_families_are_merged_once() {
        let fam = |help: &str, t: pb::MetricType, labels: &[&str]| pb::MetricFamily {
            name: "x".into(),
            help: help.into(),
            r#type: t as i32,
            metric: labels
                .iter()
                .map(|v| pb::Metric {
                    label: vec![pb::LabelPair {
                        name: "l".into(),
                        value: v.to_string(),
                    }],
                    gauge: Some(pb::Gauge { value: 1.0 }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let g = pb::MetricType::Gauge;
        let merged = merge_duplicate_families(vec![
            fam("h", g, &["a"]),
            fam("h", g, &["a", "b"]),
            fam("other", g, &["c"]),
            fam("h", pb::MetricType::Counter, &["d"]),
        ]);
        assert_eq!(merged.len(), 1);
        let vals: Vec<&str> = merged[0]
            .metric
            .iter()
            .map(|m| m.label[0].value.as_str())
            .collect();
        assert_eq!(vals, ["a", "b"]);
    }

    #[test]
    fn formats_values_as_go_parses_them() {
        let f = |v: f64| {
            let mut s = String::new();
            format_value(&mut s, v).unwrap();
            s
        };
        assert_eq!(f(1.0), "1");
        assert_eq!(f(-3.0), "-3");
        assert_eq!(f(0.47), "0.47");
        assert_eq!(f(25275234304.0), "25275234304");
        assert_eq!(f(1e21), "1e21");
        assert_eq!(f(1.5e-7), "1.5e-7");
        assert_eq!(f(f64::INFINITY), "+Inf");
        assert_eq!(f(f64::NEG_INFINITY), "-Inf");
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(f(0.0), "0");
        for v in [0.47, 1e21, 1.5e-7, 123456789.125, 1e-300] {
            assert_eq!(f(v).parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn text004_escapes_and_orders_like_node_exporter() {
        let fam = pb::MetricFamily {
            name: "x_total".into(),
            help: "a \\ b\nc".into(),
            r#type: pb::MetricType::Counter as i32,
            metric: vec![pb::Metric {
                label: vec![pb::LabelPair {
                    name: "l".into(),
                    value: "q\"\\\n".into(),
                }],
                counter: Some(pb::Counter {
                    value: 2.0,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let empty = pb::MetricFamily {
            name: "empty".into(),
            r#type: pb::MetricType::Gauge as i32,
            ..Default::default()
        };
        let mut s = String::new();
        write_text004(&mut s, &[fam, empty]).unwrap();
        assert_eq!(
            s,
            "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\nx_total{l=\"q\\\"\\\\\\n\"} 2\n"
        );
    }
}
