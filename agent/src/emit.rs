//! Small helpers over prometheus-client's [`DescriptorEncoder`] for collectors that produce
//! their values at scrape time. Names are the full exposition names (a counter's name ends in
//! `_total`, as node_exporter writes it); the helpers hide prometheus-client's convention of
//! appending `_total` itself.
use std::fmt;

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

/// Kind of a family as node_exporter exposes it. `Untyped` is Prometheus' untyped
/// (OpenMetrics `unknown`), used by node_exporter for e.g. vmstat and netstat fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Untyped,
    /// Samples are written with [`Family::histogram`].
    Histogram,
}

impl Kind {
    fn metric_type(self) -> MetricType {
        match self {
            Kind::Gauge => MetricType::Gauge,
            Kind::Counter => MetricType::Counter,
            Kind::Untyped => MetricType::Unknown,
            Kind::Histogram => MetricType::Histogram,
        }
    }
}

/// Writes metric families for one collector during one scrape.
pub struct Out<'a, 'e> {
    enc: &'a mut DescriptorEncoder<'e>,
}

impl<'a, 'e> Out<'a, 'e> {
    pub fn new(enc: &'a mut DescriptorEncoder<'e>) -> Self {
        Self { enc }
    }

    /// Starts a family; add its series with [`Family::sample`].
    pub fn family<'s>(
        &'s mut self,
        name: &'s str,
        help: &str,
        kind: Kind,
    ) -> Result<Family<'s>, fmt::Error> {
        let registered = match kind {
            // prometheus-client appends `_total` to counters; give it the stem.
            Kind::Counter => name.strip_suffix("_total").unwrap_or(name),
            Kind::Gauge | Kind::Untyped | Kind::Histogram => name,
        };
        let enc = self
            .enc
            .encode_descriptor(registered, help, None, kind.metric_type())?;
        Ok(Family { enc, kind })
    }

    /// A family with a single unlabelled series.
    pub fn single(&mut self, name: &str, help: &str, kind: Kind, value: f64) -> fmt::Result {
        self.family(name, help, kind)?.sample(&NO_LABELS, value)
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        self.single(name, help, Kind::Gauge, value)
    }

    pub fn counter(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        self.single(name, help, Kind::Counter, value)
    }

    pub fn untyped(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        self.single(name, help, Kind::Untyped, value)
    }

    /// Raw access for families the helpers do not cover (histograms).
    pub fn encoder(&mut self) -> &mut DescriptorEncoder<'e> {
        self.enc
    }
}

type NoExemplar = [(&'static str, &'static str); 0];

/// An empty label set.
pub const NO_LABELS: [(&str, &str); 0] = [];

/// One family being written.
pub struct Family<'a> {
    enc: MetricEncoder<'a>,
    kind: Kind,
}

impl Family<'_> {
    pub fn sample(&mut self, labels: &impl EncodeLabelSet, value: f64) -> fmt::Result {
        let enc = self.enc.encode_family(labels)?;
        match self.kind {
            Kind::Counter => ConstCounter::new(value).encode(enc),
            // Untyped values travel as gauges inside prometheus-client; the exposition layer
            // moves them to the untyped field (see exposition.rs).
            Kind::Gauge | Kind::Untyped | Kind::Histogram => ConstGauge::new(value).encode(enc),
        }
    }

    /// One histogram series of a [`Kind::Histogram`] family. `buckets` are `(upper bound,
    /// count in that bucket alone)`, ascending, ending with `+Inf`; the encoders make them
    /// cumulative.
    pub fn histogram(
        &mut self,
        labels: &impl EncodeLabelSet,
        sum: f64,
        count: u64,
        buckets: &[(f64, u64)],
    ) -> fmt::Result {
        let mut enc = self.enc.encode_family(labels)?;
        enc.encode_histogram::<NoExemplar>(sum, count, buckets, None)
    }
}
