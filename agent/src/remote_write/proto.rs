//! Remote-write wire messages, written by hand as prost derives (no protoc at build time):
//! - Remote-Write 1.0 `prometheus.WriteRequest` (prometheus/prompb/remote.proto, types.proto);
//! - Remote-Write 2.0 `io.prometheus.write.v2.Request` (prometheus/prompb/io/prometheus/write/v2);
//! - the record hostlens keeps in its disk queue ([`QueueRecord`]).
//!
//! Field numbers follow the upstream `.proto` files; fields hostlens never sends (exemplars,
//! native histograms) are left out, which protobuf allows.
use prost::Message;

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: value and timestamp in milliseconds since the epoch.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct MetricMetadata {
    /// `MetricType`: 0 unknown, 1 counter, 2 gauge, 3 histogram, 4 gaugehistogram,
    /// 5 summary, 6 info, 7 stateset.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// v1 `MetricMetadata.MetricType` values.
pub mod v1_type {
    pub const UNKNOWN: i32 = 0;
    pub const COUNTER: i32 = 1;
    pub const GAUGE: i32 = 2;
    pub const HISTOGRAM: i32 = 3;
    pub const SUMMARY: i32 = 5;
}

/// Remote-Write 2.0 messages (`io.prometheus.write.v2`).
pub mod v2 {
    use prost::Message;

    /// `io.prometheus.write.v2.Request`. Field 1-3 are reserved upstream (v1's fields).
    #[derive(Clone, PartialEq, Message)]
    pub struct Request {
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// `io.prometheus.write.v2.TimeSeries`: labels as pairs of indexes into `symbols`.
    #[derive(Clone, PartialEq, Message)]
    pub struct TimeSeries {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
        #[prost(int64, tag = "6")]
        pub created_timestamp: i64,
    }

    #[derive(Clone, Copy, PartialEq, Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// `io.prometheus.write.v2.Metadata`.
    #[derive(Clone, Copy, PartialEq, Message)]
    pub struct Metadata {
        /// 0 unspecified, 1 counter, 2 gauge, 3 histogram, 4 gaugehistogram, 5 summary,
        /// 6 info, 7 stateset.
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }
}

/// A part of one gather, as kept in the disk queue: the series (labels final: relabelled,
/// external labels added, sorted) with their one sample, and the metadata of their families.
/// Field 1 is `WriteRequest.timeseries`'s, so the series' bytes are sent as they are.
#[derive(Clone, PartialEq, Message)]
pub struct QueueRecord {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "2")]
    pub metadata: Vec<MetricMetadata>,
    /// For each series, the index of its family in `metadata`.
    #[prost(uint32, repeated, tag = "3")]
    pub family: Vec<u32>,
    /// Wall-clock time the record was queued (ms since the epoch).
    #[prost(int64, tag = "4")]
    pub queued_ms: i64,
    /// For each series, its Remote-Write 2.0 created timestamp (ms; 0: none). Absent in
    /// records of older versions.
    #[prost(int64, repeated, tag = "5")]
    pub created: Vec<i64>,
}
