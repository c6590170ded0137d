//! From the registry's families to remote-write series, and from queued series to request
//! bodies (protobuf, then snappy block format).
use std::collections::{BTreeMap, HashMap};

use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pb;
use prost::Message as _;

use super::proto::{self, Label, MetricMetadata, Sample, TimeSeries, v1_type, v2};

/// Prometheus' staleness marker: a NaN with this exact bit pattern (model/value/value.go).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One flattened series: its labels (including `__name__`, not yet sorted), one sample, and
/// the index of its family's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatSeries {
    pub labels: Vec<Label>,
    pub sample: Sample,
    pub family: u32,
}

/// Flattens gathered families into series: counters, gauges and untyped as one series each,
/// histograms as `_bucket{le}` (with `+Inf`), `_sum` and `_count`, summaries as
/// `{quantile}`, `_sum`, `_count`. `now_ms` stamps samples that carry no timestamp.
pub fn flatten(
    families: &[pb::MetricFamily],
    now_ms: i64,
) -> (Vec<FlatSeries>, Vec<MetricMetadata>) {
    let mut out = Vec::new();
    let mut meta = Vec::with_capacity(families.len());
    for f in families.iter().filter(|f| !f.metric.is_empty()) {
        let ty = match pb::MetricType::try_from(f.r#type) {
            Ok(pb::MetricType::Counter) => v1_type::COUNTER,
            Ok(pb::MetricType::Gauge) => v1_type::GAUGE,
            Ok(pb::MetricType::Histogram) => v1_type::HISTOGRAM,
            Ok(pb::MetricType::Summary) => v1_type::SUMMARY,
            _ => v1_type::UNKNOWN,
        };
        let fam = meta.len() as u32;
        meta.push(MetricMetadata {
            r#type: ty,
            metric_family_name: f.name.clone(),
            help: f.help.clone(),
            unit: f.unit.clone(),
        });
        for m in &f.metric {
            let ts = if m.timestamp_ms != 0 {
                m.timestamp_ms
            } else {
                now_ms
            };
            let mut push = |suffix: &str, extra: Option<(&str, f64)>, value: f64| {
                let mut labels = Vec::with_capacity(m.label.len() + 2);
                labels.push(Label {
                    name: "__name__".into(),
                    value: format!("{}{suffix}", f.name),
                });
                for l in &m.label {
                    labels.push(Label {
                        name: l.name.clone(),
                        value: l.value.clone(),
                    });
                }
                if let Some((k, v)) = extra {
                    let mut s = String::new();
                    let _ = crate::exposition::format_value(&mut s, v);
                    labels.push(Label {
                        name: k.into(),
                        value: s,
                    });
                }
                out.push(FlatSeries {
                    labels,
                    sample: Sample {
                        value,
                        timestamp: ts,
                    },
                    family: fam,
                });
            };
            if let Some(h) = &m.histogram {
                let mut saw_inf = false;
                for b in &h.bucket {
                    saw_inf |= b.upper_bound == f64::INFINITY;
                    push(
                        "_bucket",
                        Some(("le", b.upper_bound)),
                        b.cumulative_count as f64,
                    );
                }
                if !saw_inf {
                    push(
                        "_bucket",
                        Some(("le", f64::INFINITY)),
                        h.sample_count as f64,
                    );
                }
                push("_sum", None, h.sample_sum);
                push("_count", None, h.sample_count as f64);
            } else if let Some(s) = &m.summary {
                for q in &s.quantile {
                    push("", Some(("quantile", q.quantile)), q.value);
                }
                push("_sum", None, s.sample_sum);
                push("_count", None, s.sample_count as f64);
            } else {
                let v = m
                    .counter
                    .as_ref()
                    .map(|c| c.value)
                    .or(m.gauge.as_ref().map(|g| g.value))
                    .or(m.untyped.as_ref().map(|u| u.value))
                    .unwrap_or(f64::NAN);
                push("", None, v);
            }
        }
    }
    (out, meta)
}

/// Why a series was refused before queueing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("series has no __name__")]
    NoName,
    #[error("empty label name")]
    EmptyName,
    #[error("duplicate label name {0:?}")]
    Duplicate(String),
}

/// Makes a label set valid for remote write: external labels added where the series has no
/// label of that name (Prometheus' rule), labels with empty values removed (an empty value
/// means "no label"), sorted by name; empty or duplicate names and a missing `__name__` are
/// refused.
pub fn finish_labels(
    mut labels: Vec<Label>,
    external: &BTreeMap<String, String>,
) -> Result<Vec<Label>, LabelError> {
    for (k, v) in external {
        if !labels.iter().any(|l| &l.name == k) {
            labels.push(Label {
                name: k.clone(),
                value: v.clone(),
            });
        }
    }
    labels.retain(|l| !l.value.is_empty());
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    for w in labels.windows(2) {
        if w[0].name == w[1].name {
            return Err(LabelError::Duplicate(w[0].name.clone()));
        }
    }
    if labels.iter().any(|l| l.name.is_empty()) {
        return Err(LabelError::EmptyName);
    }
    if !labels.iter().any(|l| l.name == "__name__") {
        return Err(LabelError::NoName);
    }
    Ok(labels)
}

/// A batch ready to encode: series in queue order with the metadata of each.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub series: Vec<TimeSeries>,
    pub meta: Vec<Option<MetricMetadata>>,
}

impl Batch {
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

/// The protobuf message of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `prometheus.WriteRequest`
    V1,
    /// `io.prometheus.write.v2.Request`
    V2,
}

impl Protocol {
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::V1 => "application/x-protobuf",
            Protocol::V2 => "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        }
    }
    pub fn version_header(self) -> &'static str {
        match self {
            Protocol::V1 => "0.1.0",
            Protocol::V2 => "2.0.0",
        }
    }
}

/// Encodes a Remote-Write 1.0 `WriteRequest` (series only; metadata is a 2.0 feature here).
pub fn encode_v1(batch: &Batch) -> Vec<u8> {
    // Borrowing encoder: avoid cloning every label by encoding the series directly.
    let mut len = 0;
    for s in &batch.series {
        len += prost::encoding::message::encoded_len(1, s);
    }
    let mut buf = Vec::with_capacity(len);
    for s in &batch.series {
        prost::encoding::message::encode(1, s, &mut buf);
    }
    buf
}

/// Encodes a Remote-Write 2.0 `Request`: label names and values interned in `symbols`
/// (whose first entry is the empty string, as the spec requires), metadata per series.
pub fn encode_v2(batch: &Batch) -> Vec<u8> {
    let mut symbols = Symbols::default();
    symbols.get("");
    let mut req = v2::Request::default();
    req.timeseries.reserve(batch.series.len());
    for (s, m) in batch.series.iter().zip(&batch.meta) {
        let mut refs = Vec::with_capacity(s.labels.len() * 2);
        for l in &s.labels {
            refs.push(symbols.get(&l.name));
            refs.push(symbols.get(&l.value));
        }
        let metadata = m.as_ref().map(|m| v2::Metadata {
            r#type: m.r#type,
            help_ref: symbols.get(&m.help),
            unit_ref: symbols.get(&m.unit),
        });
        req.timeseries.push(v2::TimeSeries {
            labels_refs: refs,
            samples: s
                .samples
                .iter()
                .map(|x| v2::Sample {
                    value: x.value,
                    timestamp: x.timestamp,
                })
                .collect(),
            metadata,
            created_timestamp: 0,
        });
    }
    req.symbols = symbols.list.into_iter().map(str::to_string).collect();
    req.encode_to_vec()
}

/// The 2.0 symbols table being built: each distinct string once, in first-use order.
#[derive(Default)]
struct Symbols<'a> {
    list: Vec<&'a str>,
    index: HashMap<&'a str, u32>,
}

impl<'a> Symbols<'a> {
    fn get(&mut self, s: &'a str) -> u32 {
        *self.index.entry(s).or_insert_with(|| {
            self.list.push(s);
            (self.list.len() - 1) as u32
        })
    }
}

/// Snappy block format (not the framed format), as the remote-write spec requires.
pub fn compress(raw: &[u8]) -> Vec<u8> {
    // A buffer sized by max_compress_len cannot be too small, so this cannot fail.
    let mut out = vec![0; snap::raw::max_compress_len(raw.len())];
    let n = snap::raw::Encoder::new()
        .compress(raw, &mut out)
        .unwrap_or(0);
    out.truncate(n);
    out
}

pub fn decompress(body: &[u8]) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Decoder::new().decompress_vec(body)
}

/// Decodes a 1.0 body (snappy + protobuf); used by tests and diagnostics.
pub fn decode_v1(body: &[u8]) -> Result<proto::WriteRequest, String> {
    let raw = decompress(body).map_err(|e| format!("snappy: {e}"))?;
    proto::WriteRequest::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))
}

/// Series of a decoded 2.0 request and, per series, its metadata (type, help, unit).
pub type DecodedV2 = (Vec<TimeSeries>, Vec<Option<(i32, String, String)>>);

/// Decodes a 2.0 body back into 1.0-shaped series plus metadata (type, help, unit).
pub fn decode_v2(body: &[u8]) -> Result<DecodedV2, String> {
    let raw = decompress(body).map_err(|e| format!("snappy: {e}"))?;
    let req = v2::Request::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))?;
    let sym = |i: u32| -> Result<String, String> {
        req.symbols
            .get(i as usize)
            .cloned()
            .ok_or_else(|| format!("symbol {i} out of range"))
    };
    if req.symbols.first().is_some_and(|s| !s.is_empty()) {
        return Err("symbols[0] must be the empty string".into());
    }
    let mut series = Vec::new();
    let mut meta = Vec::new();
    for t in &req.timeseries {
        if t.labels_refs.len() % 2 != 0 {
            return Err("odd number of label refs".into());
        }
        let mut labels = Vec::new();
        for p in t.labels_refs.chunks(2) {
            labels.push(Label {
                name: sym(p[0])?,
                value: sym(p[1])?,
            });
        }
        series.push(TimeSeries {
            labels,
            samples: t
                .samples
                .iter()
                .map(|s| Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                })
                .collect(),
        });
        meta.push(match &t.metadata {
            Some(m) => Some((m.r#type, sym(m.help_ref)?, sym(m.unit_ref)?)),
            None => None,
        });
    }
    Ok((series, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(n: &str, v: &str) -> Label {
        Label {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn labels_sorted_external_added_not_overriding() {
        let ext = BTreeMap::from([
            ("instance".to_string(), "h1".to_string()),
            ("job".to_string(), "hostlens".to_string()),
        ]);
        let got = finish_labels(
            vec![
                l("__name__", "up"),
                l("job", "mine"),
                l("a", "1"),
                l("empty", ""),
            ],
            &ext,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                l("__name__", "up"),
                l("a", "1"),
                l("instance", "h1"),
                l("job", "mine")
            ]
        );
        assert_eq!(
            finish_labels(vec![l("a", "1")], &ext),
            Err(LabelError::NoName)
        );
        assert_eq!(
            finish_labels(vec![l("__name__", "x"), l("a", "1"), l("a", "2")], &ext),
            Err(LabelError::Duplicate("a".into()))
        );
        assert_eq!(
            finish_labels(vec![l("__name__", "x"), l("", "1")], &ext),
            Err(LabelError::EmptyName)
        );
    }

    fn registry_with_histogram() -> Vec<pb::MetricFamily> {
        use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
        let mut r = prometheus_client::registry::Registry::default();
        let h = Histogram::new([0.5, 1.0]);
        h.observe(0.2);
        h.observe(0.7);
        h.observe(3.0);
        r.register("lat_seconds", "latency", h);
        let c: Family<Vec<(String, String)>, Counter> = Family::default();
        c.get_or_create(&vec![("code".into(), "200".into())])
            .inc_by(5);
        r.register("reqs", "requests", c);
        crate::exposition::gather(&r).unwrap()
    }

    #[test]
    fn histograms_flatten_to_bucket_sum_count() {
        let fams = registry_with_histogram();
        let (flat, meta) = flatten(&fams, 1234);
        let mut got: Vec<(String, f64)> = flat
            .iter()
            .map(|s| {
                let name = s
                    .labels
                    .iter()
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect::<Vec<_>>()
                    .join(",");
                assert_eq!(s.sample.timestamp, 1234);
                (name, s.sample.value)
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("__name__=lat_seconds_bucket,le=+Inf".into(), 3.0),
                ("__name__=lat_seconds_bucket,le=0.5".into(), 1.0),
                ("__name__=lat_seconds_bucket,le=1".into(), 2.0),
                ("__name__=lat_seconds_count".into(), 3.0),
                ("__name__=lat_seconds_sum".into(), 3.9),
                ("__name__=reqs_total,code=200".into(), 5.0),
            ]
        );
        let types: BTreeMap<_, _> = meta
            .iter()
            .map(|m| (m.metric_family_name.clone(), m.r#type))
            .collect();
        assert_eq!(types.get("lat_seconds"), Some(&v1_type::HISTOGRAM));
        assert_eq!(
            types.values().filter(|t| **t == v1_type::COUNTER).count(),
            1
        );
    }

    fn batch() -> Batch {
        let mk = |name: &str, v: f64, t: i64| TimeSeries {
            labels: vec![
                l("__name__", name),
                l("instance", "h"),
                l("job", "hostlens"),
            ],
            samples: vec![Sample {
                value: v,
                timestamp: t,
            }],
        };
        Batch {
            series: vec![
                mk("a_total", 1.0, 10),
                mk("b", 2.5, 10),
                mk("a_total", stale_nan(), 20),
            ],
            meta: vec![
                Some(MetricMetadata {
                    r#type: v1_type::COUNTER,
                    metric_family_name: "a_total".into(),
                    help: "A.".into(),
                    unit: String::new(),
                }),
                Some(MetricMetadata {
                    r#type: v1_type::GAUGE,
                    metric_family_name: "b".into(),
                    help: "B.".into(),
                    unit: "bytes".into(),
                }),
                None,
            ],
        }
    }

    #[test]
    fn v1_round_trip_through_snappy_keeps_stale_nan_bits() {
        let b = batch();
        let body = compress(&encode_v1(&b));
        let req = decode_v1(&body).unwrap();
        assert_eq!(req.timeseries.len(), 3);
        assert_eq!(req.timeseries[0], b.series[0]);
        assert_eq!(req.timeseries[2].samples[0].value.to_bits(), STALE_NAN_BITS);
        // The bytes are exactly what prost makes of a WriteRequest of the same series.
        let same = proto::WriteRequest {
            timeseries: b.series.clone(),
            metadata: vec![],
        };
        assert_eq!(encode_v1(&b), same.encode_to_vec());
        // Snappy block format, not framed: no stream identifier chunk.
        assert_ne!(&body[..4], b"\xff\x06\x00\x00");
    }

    #[test]
    fn v2_symbols_interned_once_and_round_trip() {
        let b = batch();
        let raw = encode_v2(&b);
        let req = v2::Request::decode(raw.as_slice()).unwrap();
        assert_eq!(req.symbols[0], "");
        let mut uniq = req.symbols.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(
            uniq.len(),
            req.symbols.len(),
            "a symbol repeated: {:?}",
            req.symbols
        );
        let (series, meta) = decode_v2(&compress(&raw)).unwrap();
        assert_eq!(series[..2], b.series[..2]);
        assert_eq!(series[2].labels, b.series[2].labels);
        assert_eq!(
            meta[0],
            Some((v1_type::COUNTER, "A.".into(), String::new()))
        );
        assert_eq!(meta[1], Some((v1_type::GAUGE, "B.".into(), "bytes".into())));
        assert_eq!(meta[2], None);
        assert!(series[2].samples[0].value.to_bits() == STALE_NAN_BITS);
    }

    #[test]
    fn garbage_bodies_are_errors_not_panics() {
        assert!(decode_v1(b"not snappy at all").is_err());
        assert!(decode_v2(&compress(b"\x22\xff\xff\xff")).is_err());
    }
}
