//! From the registry's families to remote-write series, and from queued series to request
//! bodies (protobuf, then snappy block format).
//!
//! Series are encoded once, when they are queued: a series is kept, on disk and in a batch,
//! as the bytes of a `WriteRequest.timeseries` field (tag 1, length, `TimeSeries`). The
//! queue record has the same field, so a batch of series is a byte copy out of the record and
//! a Remote-Write 1.0 body is the batch's bytes as they are, compressed. No label string is
//! allocated per sample on the way.
use std::{
    collections::{BTreeMap, HashMap},
    hash::Hasher as _,
};

use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pb;
use prost::{
    Message as _,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len},
};

use super::proto::{self, Label, MetricMetadata, Sample, TimeSeries, v1_type, v2};

/// Prometheus' staleness marker: a NaN with this exact bit pattern (model/value/value.go).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One series of a gather as [`visit`] hands it out, borrowed from the families.
#[derive(Debug, Clone, Copy)]
pub struct SeriesRef<'a> {
    /// `__name__`: the family name with its suffix (`_bucket`, `_sum`, `_count`).
    pub name: &'a str,
    pub labels: &'a [pb::LabelPair],
    /// `le` of a bucket, `quantile` of a summary quantile.
    pub extra: Option<(&'static str, &'a str)>,
    pub sample: Sample,
    /// Index of the family's metadata in [`metadata`]'s list.
    pub family: u32,
    /// v1 metric type of the family ([`v1_type`]).
    pub kind: i32,
    /// The metric's own start time (ms), when the registry records one.
    pub start_ms: Option<i64>,
}

impl SeriesRef<'_> {
    /// Counters, histograms and summaries: series that count from a start.
    pub fn cumulative(&self) -> bool {
        matches!(
            self.kind,
            v1_type::COUNTER | v1_type::HISTOGRAM | v1_type::SUMMARY
        )
    }
}

fn v1_kind(f: &pb::MetricFamily) -> i32 {
    match pb::MetricType::try_from(f.r#type) {
        Ok(pb::MetricType::Counter) => v1_type::COUNTER,
        Ok(pb::MetricType::Gauge) => v1_type::GAUGE,
        Ok(pb::MetricType::Histogram) => v1_type::HISTOGRAM,
        Ok(pb::MetricType::Summary) => v1_type::SUMMARY,
        _ => v1_type::UNKNOWN,
    }
}

/// Metadata of the gathered families that have series, in [`visit`]'s family order.
pub fn metadata(families: &[pb::MetricFamily]) -> Vec<MetricMetadata> {
    families
        .iter()
        .filter(|f| !f.metric.is_empty())
        .map(|f| MetricMetadata {
            r#type: v1_kind(f),
            metric_family_name: f.name.clone(),
            help: f.help.clone(),
            unit: f.unit.clone(),
        })
        .collect()
}

/// Calls `f` for every series of the gathered families: counters, gauges and untyped as one
/// series each, histograms as `_bucket{le}` (with `+Inf`), `_sum` and `_count`, summaries as
/// `{quantile}`, `_sum`, `_count`. `now_ms` stamps samples that carry no timestamp.
pub fn visit(families: &[pb::MetricFamily], now_ms: i64, mut f: impl FnMut(&SeriesRef<'_>)) {
    let mut name = String::new();
    let mut extra = String::new();
    for (fam, fm) in families.iter().filter(|f| !f.metric.is_empty()).enumerate() {
        let kind = v1_kind(fm);
        for m in &fm.metric {
            let sample = |value: f64| Sample {
                value,
                timestamp: if m.timestamp_ms != 0 {
                    m.timestamp_ms
                } else {
                    now_ms
                },
            };
            let mut emit = |suffix: &str, ex: Option<(&'static str, f64)>, value: f64, start_ms| {
                name.clear();
                name.push_str(&fm.name);
                name.push_str(suffix);
                let ex = ex.map(|(k, v)| {
                    extra.clear();
                    let _ = crate::exposition::format_value(&mut extra, v);
                    (k, extra.as_str())
                });
                f(&SeriesRef {
                    name: &name,
                    labels: &m.label,
                    extra: ex,
                    sample: sample(value),
                    family: fam as u32,
                    kind,
                    start_ms,
                });
            };
            if let Some(h) = &m.histogram {
                let start = h
                    .start_timestamp
                    .as_ref()
                    .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
                let mut saw_inf = false;
                for b in &h.bucket {
                    saw_inf |= b.upper_bound == f64::INFINITY;
                    emit(
                        "_bucket",
                        Some(("le", b.upper_bound)),
                        b.cumulative_count as f64,
                        start,
                    );
                }
                if !saw_inf {
                    emit(
                        "_bucket",
                        Some(("le", f64::INFINITY)),
                        h.sample_count as f64,
                        start,
                    );
                }
                emit("_sum", None, h.sample_sum, start);
                emit("_count", None, h.sample_count as f64, start);
            } else if let Some(s) = &m.summary {
                let start = s
                    .start_timestamp
                    .as_ref()
                    .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
                for q in &s.quantile {
                    emit("", Some(("quantile", q.quantile)), q.value, start);
                }
                emit("_sum", None, s.sample_sum, start);
                emit("_count", None, s.sample_count as f64, start);
            } else if let Some(c) = &m.counter {
                let start = c
                    .start_timestamp
                    .as_ref()
                    .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
                emit("", None, c.value, start);
            } else {
                let v = m
                    .gauge
                    .as_ref()
                    .map(|g| g.value)
                    .or(m.untyped.as_ref().map(|u| u.value))
                    .unwrap_or(f64::NAN);
                emit("", None, v, None);
            }
        }
    }
}

/// One flattened series with owned labels (tests and diagnostics; the queue path uses
/// [`visit`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FlatSeries {
    pub labels: Vec<Label>,
    pub sample: Sample,
    pub family: u32,
}

/// [`visit`] collected into owned series, with the families' metadata.
pub fn flatten(
    families: &[pb::MetricFamily],
    now_ms: i64,
) -> (Vec<FlatSeries>, Vec<MetricMetadata>) {
    let mut out = Vec::new();
    visit(families, now_ms, |s| {
        let mut labels = vec![Label {
            name: "__name__".into(),
            value: s.name.into(),
        }];
        labels.extend(s.labels.iter().map(|l| Label {
            name: l.name.clone(),
            value: l.value.clone(),
        }));
        if let Some((k, v)) = s.extra {
            labels.push(Label {
                name: k.into(),
                value: v.into(),
            });
        }
        out.push(FlatSeries {
            labels,
            sample: s.sample,
            family: s.family,
        });
    });
    (out, metadata(families))
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
pub fn finish_label_refs<'a>(
    labels: &mut Vec<(&'a str, &'a str)>,
    external: &'a BTreeMap<String, String>,
) -> Result<(), LabelError> {
    let own = labels.len();
    for (k, v) in external {
        if !labels[..own].iter().any(|l| l.0 == k) {
            labels.push((k, v));
        }
    }
    labels.retain(|l| !l.1.is_empty());
    labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for w in labels.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(LabelError::Duplicate(w[0].0.to_string()));
        }
    }
    if labels.first().is_some_and(|l| l.0.is_empty()) {
        return Err(LabelError::EmptyName);
    }
    if !labels.iter().any(|l| l.0 == "__name__") {
        return Err(LabelError::NoName);
    }
    Ok(())
}

/// [`finish_label_refs`] over owned labels.
pub fn finish_labels(
    labels: Vec<Label>,
    external: &BTreeMap<String, String>,
) -> Result<Vec<Label>, LabelError> {
    let mut refs: Vec<(&str, &str)> = labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    finish_label_refs(&mut refs, external)?;
    Ok(refs
        .into_iter()
        .map(|(n, v)| Label {
            name: n.into(),
            value: v.into(),
        })
        .collect())
}

// Protobuf wire helpers. Strings are written as prost writes them (an empty string is left
// out), so the bytes are those prost makes of the same message.

fn str_field_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn put_str_field(tag: u32, s: &str, out: &mut Vec<u8>) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(s.len() as u64, out);
        out.extend_from_slice(s.as_bytes());
    }
}

/// Appends the `TimeSeries.labels` fields (tag 1, `Label` messages) of sorted labels.
pub fn put_labels(labels: &[(&str, &str)], out: &mut Vec<u8>) {
    for (n, v) in labels {
        let len = str_field_len(1, n) + str_field_len(2, v);
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        put_str_field(1, n, out);
        put_str_field(2, v, out);
    }
}

/// Appends one `WriteRequest.timeseries` field: a `TimeSeries` of the given encoded label
/// fields (from [`put_labels`]) and one sample.
pub fn put_series(label_fields: &[u8], sample: Sample, out: &mut Vec<u8>) {
    let len = label_fields.len() + prost::encoding::message::encoded_len(2, &sample);
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    out.extend_from_slice(label_fields);
    prost::encoding::message::encode(2, &sample, out);
}

/// A field of a protobuf message as [`next_field`] reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub tag: u32,
    /// Offset of the field's key.
    pub start: usize,
    /// Offset just past the field.
    pub end: usize,
    pub val: Val<'a>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    Varint(u64),
    Fixed64,
    Fixed32,
    Bytes(&'a [u8]),
}

/// Reads the field at `*pos` of `buf` and moves past it; `None` at the end.
pub(crate) fn next_field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<Field<'a>>, String> {
    if *pos >= buf.len() {
        return Ok(None);
    }
    let start = *pos;
    let mut rest = &buf[start..];
    let key = prost::encoding::decode_varint(&mut rest).map_err(|e| e.to_string())?;
    let tag = u32::try_from(key >> 3).map_err(|_| "field tag out of range")?;
    let val = match key & 7 {
        0 => Val::Varint(prost::encoding::decode_varint(&mut rest).map_err(|e| e.to_string())?),
        1 => {
            rest = rest.get(8..).ok_or("truncated fixed64")?;
            Val::Fixed64
        }
        2 => {
            let n = prost::encoding::decode_varint(&mut rest).map_err(|e| e.to_string())? as usize;
            if rest.len() < n {
                return Err("truncated length-delimited field".into());
            }
            let (v, r) = rest.split_at(n);
            rest = r;
            Val::Bytes(v)
        }
        5 => {
            rest = rest.get(4..).ok_or("truncated fixed32")?;
            Val::Fixed32
        }
        w => return Err(format!("unsupported wire type {w}")),
    };
    *pos = buf.len() - rest.len();
    Ok(Some(Field {
        tag,
        start,
        end: *pos,
        val,
    }))
}

/// The `TimeSeries` message inside one `WriteRequest.timeseries` field.
fn series_message(entry: &[u8]) -> Result<&[u8], String> {
    let mut pos = 0;
    match next_field(entry, &mut pos)? {
        Some(Field {
            tag: 1,
            val: Val::Bytes(b),
            ..
        }) => Ok(b),
        _ => Err("not a timeseries field".into()),
    }
}

/// Number of samples of an encoded `TimeSeries` message.
pub(crate) fn count_samples(ts: &[u8]) -> Result<u32, String> {
    let mut pos = 0;
    let mut n = 0;
    while let Some(f) = next_field(ts, &mut pos)? {
        n += u32::from(f.tag == 2);
    }
    Ok(n)
}

/// Labels (borrowed) and samples of a series.
#[cfg(test)]
pub(crate) type SeriesParts<'a> = (Vec<(&'a str, &'a str)>, Vec<Sample>);

/// Labels (borrowed) and samples of one `WriteRequest.timeseries` field.
#[cfg(test)]
pub(crate) fn series_parts(entry: &[u8]) -> Result<SeriesParts<'_>, String> {
    let ts = series_message(entry)?;
    let mut labels = Vec::new();
    let mut samples = Vec::new();
    let mut pos = 0;
    while let Some(f) = next_field(ts, &mut pos)? {
        match (f.tag, f.val) {
            (1, Val::Bytes(b)) => {
                let (mut n, mut v) = ("", "");
                let mut p = 0;
                while let Some(lf) = next_field(b, &mut p)? {
                    let s = match lf.val {
                        Val::Bytes(s) => std::str::from_utf8(s).map_err(|e| e.to_string())?,
                        _ => continue,
                    };
                    match lf.tag {
                        1 => n = s,
                        2 => v = s,
                        _ => {}
                    }
                }
                labels.push((n, v));
            }
            (2, Val::Bytes(b)) => {
                samples.push(Sample::decode(b).map_err(|e| e.to_string())?);
            }
            _ => {}
        }
    }
    Ok((labels, samples))
}

/// A hash of a series' label fields: equal label sets, equal hashes, across runs.
pub(crate) fn label_fields_hash(entry: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Ok(ts) = series_message(entry) {
        let mut pos = 0;
        while let Ok(Some(f)) = next_field(ts, &mut pos) {
            if f.tag == 1 {
                h.write(&ts[f.start..f.end]);
            }
        }
    }
    h.finish()
}

/// One series of a [`Batch`]: where its `WriteRequest.timeseries` field is in the batch's
/// bytes, and what else the 2.0 message needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSeries {
    pub start: u32,
    pub end: u32,
    pub samples: u32,
    /// Index in [`Batch::metadata`]; `None` for stale markers.
    pub meta: Option<u32>,
    /// Remote-Write 2.0 created timestamp (ms; 0: none).
    pub created: i64,
}

/// A batch ready to send: series in queue order, as the bytes of a 1.0 `WriteRequest`.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// `WriteRequest.timeseries` fields, one per series: a whole 1.0 request body.
    pub buf: Vec<u8>,
    pub series: Vec<BatchSeries>,
    pub metadata: Vec<MetricMetadata>,
}

impl Batch {
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples as usize).sum()
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The bytes of series `i`'s `WriteRequest.timeseries` field.
    pub fn entry(&self, i: usize) -> &[u8] {
        let s = self.series[i];
        &self.buf[s.start as usize..s.end as usize]
    }

    /// Appends a series given as its encoded field.
    pub fn push_entry(
        &mut self,
        entry: &[u8],
        samples: u32,
        meta: Option<&MetricMetadata>,
        created: i64,
    ) {
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(entry);
        let meta = meta.map(|m| match self.metadata.iter().position(|x| x == m) {
            Some(i) => i as u32,
            None => {
                self.metadata.push(m.clone());
                (self.metadata.len() - 1) as u32
            }
        });
        self.series.push(BatchSeries {
            start,
            end: self.buf.len() as u32,
            samples,
            meta,
            created,
        });
    }

    /// A batch of owned series (tests, benchmarks).
    pub fn from_series(series: &[TimeSeries], meta: &[Option<MetricMetadata>]) -> Batch {
        let mut b = Batch::default();
        let mut entry = Vec::new();
        for (i, s) in series.iter().enumerate() {
            entry.clear();
            prost::encoding::message::encode(1, s, &mut entry);
            let m = meta.get(i).and_then(Option::as_ref);
            b.push_entry(&entry, s.samples.len() as u32, m, 0);
        }
        b
    }

    /// The series decoded into owned messages (tests, diagnostics).
    pub fn decode(&self) -> Vec<TimeSeries> {
        (0..self.len())
            .map(|i| {
                series_message(self.entry(i))
                    .and_then(|m| TimeSeries::decode(m).map_err(|e| e.to_string()))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The metadata of series `i`.
    pub fn meta_of(&self, i: usize) -> Option<&MetricMetadata> {
        self.series[i]
            .meta
            .and_then(|m| self.metadata.get(m as usize))
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

/// Encodes a Remote-Write 1.0 `WriteRequest` (series only; metadata is a 2.0 feature here):
/// the batch's bytes are that request already.
pub fn encode_v1(batch: &Batch) -> Vec<u8> {
    batch.buf.clone()
}

/// Encodes a Remote-Write 2.0 `Request`: label names and values interned in `symbols`
/// (whose first entry is the empty string, as the spec requires), metadata and created
/// timestamp per series. Written straight from the batch's bytes: the labels become symbol
/// references, the sample fields (the same message in 1.0 and 2.0) are copied; the bytes are
/// those prost makes of the same `v2::Request`.
pub fn encode_v2(batch: &Batch) -> Vec<u8> {
    let mut symbols = Symbols::default();
    symbols.get(b"");
    let mut series = Vec::with_capacity(batch.buf.len() / 2);
    let mut refs: Vec<u32> = Vec::new();
    let mut samples = Vec::new();
    let mut tail = Vec::new();
    for (i, s) in batch.series.iter().enumerate() {
        refs.clear();
        samples.clear();
        tail.clear();
        // Series that do not parse cannot happen for bytes this agent wrote (CRC-checked on
        // the way back); they are left out.
        if v2_parts(batch.entry(i), &mut symbols, &mut refs, &mut samples).is_err() {
            continue;
        }
        if let Some(m) = batch.meta_of(i) {
            let meta = v2::Metadata {
                r#type: m.r#type,
                help_ref: symbols.get(m.help.as_bytes()),
                unit_ref: symbols.get(m.unit.as_bytes()),
            };
            prost::encoding::message::encode(5, &meta, &mut tail);
        }
        if s.created != 0 {
            prost::encoding::int64::encode(6, &s.created, &mut tail);
        }
        let refs_len: usize = refs.iter().map(|r| encoded_len_varint(u64::from(*r))).sum();
        let refs_field = if refs.is_empty() {
            0
        } else {
            key_len(1) + encoded_len_varint(refs_len as u64) + refs_len
        };
        encode_key(5, WireType::LengthDelimited, &mut series);
        encode_varint(
            (refs_field + samples.len() + tail.len()) as u64,
            &mut series,
        );
        if !refs.is_empty() {
            encode_key(1, WireType::LengthDelimited, &mut series);
            encode_varint(refs_len as u64, &mut series);
            for r in &refs {
                encode_varint(u64::from(*r), &mut series);
            }
        }
        series.extend_from_slice(&samples);
        series.extend_from_slice(&tail);
    }
    let sym_len: usize = symbols
        .list
        .iter()
        .map(|s| key_len(4) + encoded_len_varint(s.len() as u64) + s.len())
        .sum();
    let mut out = Vec::with_capacity(sym_len + series.len());
    for s in &symbols.list {
        encode_key(4, WireType::LengthDelimited, &mut out);
        encode_varint(s.len() as u64, &mut out);
        out.extend_from_slice(s);
    }
    out.extend_from_slice(&series);
    out
}

/// A series' label pairs as symbol references, and its sample fields as they are.
fn v2_parts<'a>(
    entry: &'a [u8],
    symbols: &mut Symbols<'a>,
    refs: &mut Vec<u32>,
    samples: &mut Vec<u8>,
) -> Result<(), String> {
    let ts = series_message(entry)?;
    let mut pos = 0;
    while let Some(f) = next_field(ts, &mut pos)? {
        match (f.tag, f.val) {
            (1, Val::Bytes(b)) => {
                let (mut n, mut v): (&[u8], &[u8]) = (b"", b"");
                let mut p = 0;
                while let Some(lf) = next_field(b, &mut p)? {
                    match (lf.tag, lf.val) {
                        (1, Val::Bytes(s)) => n = s,
                        (2, Val::Bytes(s)) => v = s,
                        _ => {}
                    }
                }
                refs.push(symbols.get(n));
                refs.push(symbols.get(v));
            }
            (2, Val::Bytes(_)) => samples.extend_from_slice(&ts[f.start..f.end]),
            _ => {}
        }
    }
    Ok(())
}

/// The 2.0 symbols table being built: each distinct string once, in first-use order.
#[derive(Default)]
struct Symbols<'a> {
    list: Vec<&'a [u8]>,
    index: HashMap<&'a [u8], u32>,
}

impl<'a> Symbols<'a> {
    fn get(&mut self, s: &'a [u8]) -> u32 {
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
    out.shrink_to_fit();
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

/// A decoded 2.0 request in 1.0 shapes.
#[derive(Debug, Clone, Default)]
pub struct DecodedV2 {
    pub series: Vec<TimeSeries>,
    /// Per series: type, help, unit.
    pub meta: Vec<Option<(i32, String, String)>>,
    /// Per series: the created timestamp (ms; 0 when not sent).
    pub created: Vec<i64>,
}

/// Decodes a 2.0 body back into 1.0-shaped series plus metadata and created timestamps.
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
    let mut out = DecodedV2::default();
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
        out.series.push(TimeSeries {
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
        out.meta.push(match &t.metadata {
            Some(m) => Some((m.r#type, sym(m.help_ref)?, sym(m.unit_ref)?)),
            None => None,
        });
        out.created.push(t.created_timestamp);
    }
    Ok(out)
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

    fn owned() -> (Vec<TimeSeries>, Vec<Option<MetricMetadata>>) {
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
        (
            vec![
                mk("a_total", 1.0, 10),
                mk("b", 2.5, 10),
                mk("a_total", stale_nan(), 20),
            ],
            vec![
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
        )
    }

    #[test]
    fn v1_round_trip_through_snappy_keeps_stale_nan_bits() {
        let (series, meta) = owned();
        let b = Batch::from_series(&series, &meta);
        let body = compress(&encode_v1(&b));
        let req = decode_v1(&body).unwrap();
        assert_eq!(req.timeseries.len(), 3);
        // (NaN is not equal to itself: the stale marker is compared by labels and bits.)
        assert_eq!(req.timeseries[..2], series[..2]);
        assert_eq!(b.decode()[..2], series[..2]);
        assert_eq!(req.timeseries[2].labels, series[2].labels);
        assert_eq!(req.timeseries[2].samples[0].value.to_bits(), STALE_NAN_BITS);
        // The bytes are exactly what prost makes of a WriteRequest of the same series.
        let same = proto::WriteRequest {
            timeseries: series.clone(),
            metadata: vec![],
        };
        assert_eq!(encode_v1(&b), same.encode_to_vec());
        // Snappy block format, not framed: no stream identifier chunk.
        assert_ne!(&body[..4], b"\xff\x06\x00\x00");
    }

    #[test]
    fn hand_encoded_series_are_the_bytes_prost_makes() {
        let labels = [("__name__", "x_total"), ("a", "é1"), ("job", "j")];
        let sample = Sample {
            value: 0.0,
            timestamp: -5,
        };
        let mut fields = Vec::new();
        put_labels(&labels, &mut fields);
        let mut ours = Vec::new();
        put_series(&fields, sample, &mut ours);
        let ts = TimeSeries {
            labels: labels.iter().map(|(n, v)| l(n, v)).collect(),
            samples: vec![sample],
        };
        let mut theirs = Vec::new();
        prost::encoding::message::encode(1, &ts, &mut theirs);
        assert_eq!(ours, theirs);
        let (ls, ss) = series_parts(&ours).unwrap();
        assert_eq!(ls, labels);
        assert_eq!(ss, vec![sample]);
        assert_eq!(count_samples(series_message(&ours).unwrap()).unwrap(), 1);
        // The label hash does not depend on the sample.
        let mut other = Vec::new();
        put_series(
            &fields,
            Sample {
                value: 9.0,
                timestamp: 7,
            },
            &mut other,
        );
        assert_eq!(label_fields_hash(&ours), label_fields_hash(&other));
    }

    #[test]
    fn v2_symbols_interned_once_and_round_trip() {
        let (series, meta) = owned();
        let mut b = Batch::from_series(&series, &meta);
        b.series[0].created = 7;
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
        // Byte for byte what prost makes of the same request.
        let mut syms: Vec<String> = vec![String::new()];
        let mut sym = |x: &str| match syms.iter().position(|y| y == x) {
            Some(i) => i as u32,
            None => {
                syms.push(x.to_string());
                (syms.len() - 1) as u32
            }
        };
        let mut want = v2::Request::default();
        for (i, (ts, m)) in series.iter().zip(&meta).enumerate() {
            let mut labels_refs = vec![];
            for lb in &ts.labels {
                labels_refs.push(sym(&lb.name));
                labels_refs.push(sym(&lb.value));
            }
            want.timeseries.push(v2::TimeSeries {
                labels_refs,
                samples: ts
                    .samples
                    .iter()
                    .map(|x| v2::Sample {
                        value: x.value,
                        timestamp: x.timestamp,
                    })
                    .collect(),
                metadata: m.as_ref().map(|m| v2::Metadata {
                    r#type: m.r#type,
                    help_ref: sym(&m.help),
                    unit_ref: sym(&m.unit),
                }),
                created_timestamp: if i == 0 { 7 } else { 0 },
            });
        }
        want.symbols = syms;
        assert_eq!(raw, want.encode_to_vec());
        let d = decode_v2(&compress(&raw)).unwrap();
        assert_eq!(d.series[..2], series[..2]);
        assert_eq!(d.series[2].labels, series[2].labels);
        assert_eq!(
            d.meta[0],
            Some((v1_type::COUNTER, "A.".into(), String::new()))
        );
        assert_eq!(
            d.meta[1],
            Some((v1_type::GAUGE, "B.".into(), "bytes".into()))
        );
        assert_eq!(d.meta[2], None);
        assert_eq!(d.created, vec![7, 0, 0]);
        assert!(d.series[2].samples[0].value.to_bits() == STALE_NAN_BITS);
    }

    #[test]
    fn garbage_bodies_are_errors_not_panics() {
        assert!(decode_v1(b"not snappy at all").is_err());
        assert!(decode_v2(&compress(b"\x22\xff\xff\xff")).is_err());
    }
}
