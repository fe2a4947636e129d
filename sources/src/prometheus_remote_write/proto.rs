//! The remote write messages, written from the published protos: `prometheus.WriteRequest`
//! (prompb/remote.proto and prompb/types.proto, remote write 1.0) and
//! `io.prometheus.write.v2.Request` (prompb/io/prometheus/write/v2/types.proto, 2.0).
//!
//! `Sample`, `Histogram` and `BucketSpan` have the same field numbers and types in both
//! versions, so one struct serves both.

use prost::Message;

/// `prometheus.WriteRequest` (1.0).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// Series with their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric family metadata (Prometheus sends it in requests of its own).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries` (1.0).
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Labels, `__name__` among them, sorted by name.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native histogram samples.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Exemplar` (1.0).
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    /// Labels (`trace_id`, ...).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata` (1.0).
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    /// `MetricType`: 0 unknown, 1 counter, 2 gauge, 3 histogram, 4 gauge histogram,
    /// 5 summary, 6 info, 7 stateset (the same numbers as 2.0's `Metadata.MetricType`).
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// The family name (`http_requests`, without `_total` or `_bucket`).
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// Help text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `Sample` (both versions).
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Sample {
    /// Value; the stale marker is the NaN with bits `0x7ff0000000000002`.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `Histogram.count` (a oneof).
#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum Count {
    /// Integer histogram.
    #[prost(uint64, tag = "1")]
    Int(u64),
    /// Float histogram.
    #[prost(double, tag = "2")]
    Float(f64),
}

/// `Histogram.zero_count` (a oneof).
#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum ZeroCount {
    /// Integer histogram.
    #[prost(uint64, tag = "6")]
    Int(u64),
    /// Float histogram.
    #[prost(double, tag = "7")]
    Float(f64),
}

/// A native histogram sample (both versions).
#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    /// Observations.
    #[prost(oneof = "Count", tags = "1, 2")]
    pub count: Option<Count>,
    /// Sum of observations.
    #[prost(double, tag = "3")]
    pub sum: f64,
    /// Bucket schema: -4..=8 exponential, -53 custom bounds (`custom_values`).
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    /// Width of the zero bucket.
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    #[prost(oneof = "ZeroCount", tags = "6, 7")]
    pub zero_count: Option<ZeroCount>,
    /// Spans of negative buckets.
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    /// Negative bucket counts as deltas (integer histograms).
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    /// Negative bucket counts (float histograms).
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    /// Spans of positive buckets.
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    /// Positive bucket counts as deltas (integer histograms).
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// Positive bucket counts (float histograms).
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    /// `ResetHint`: 0 unknown, 1 yes, 2 no, 3 gauge.
    #[prost(int32, tag = "14")]
    pub reset_hint: i32,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    /// Upper bounds of custom buckets (schema -53).
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
}

/// `BucketSpan`: `length` buckets from `offset` (absolute for the first span, a gap after
/// the previous span for the others).
#[derive(Clone, Copy, PartialEq, Message)]
pub struct BucketSpan {
    /// Start or gap.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Buckets in the span.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// `io.prometheus.write.v2.Request` (2.0).
#[derive(Clone, PartialEq, Message)]
pub struct RequestV2 {
    /// The symbol table: every string of the request, referenced by index.
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    /// Series.
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeriesV2>,
}

/// `io.prometheus.write.v2.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeriesV2 {
    /// Label name and value references into the symbol table, in pairs.
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Native histogram samples.
    #[prost(message, repeated, tag = "3")]
    pub histograms: Vec<Histogram>,
    /// Exemplars.
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<ExemplarV2>,
    /// Type, help and unit of the series.
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<MetadataV2>,
    /// When the counter or histogram started, milliseconds (0: unknown).
    #[prost(int64, tag = "6")]
    pub created_timestamp: i64,
}

/// `io.prometheus.write.v2.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct ExemplarV2 {
    /// Label references, in pairs.
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    /// Value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `io.prometheus.write.v2.Metadata`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct MetadataV2 {
    /// `MetricType` (numbers as in [`MetricMetadata::type`]).
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Help text reference.
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    /// Unit reference.
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}
