//! A builder of metrics batches, one data point at a time, for every source that produces
//! metrics (OTLP, Datadog, and the Prometheus sources): they append points with borrowed
//! values and get one record batch in the metrics lake schema, with no intermediate OTLP
//! structs. The five point types are the OpenTelemetry data model's; docs/schemas.md lists
//! which columns each one fills.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{ArrowError, DataType};
use weir_schema::{metrics_schema, quantile_fields};

use crate::columns::{string_bytes, timestamp_builder, AttributesBuilder, ListOffsets};

/// The fields every data point has.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricFields<'a> {
    /// Metric name.
    pub name: &'a str,
    /// Unit.
    pub unit: Option<&'a str>,
    /// Description.
    pub description: Option<&'a str>,
    /// Point time, unix nanoseconds.
    pub timestamp: i64,
    /// Start of the point's interval (cumulative and delta points), unix nanoseconds.
    pub start_timestamp: Option<i64>,
    /// Data point flags.
    pub flags: u32,
    /// `service.name`.
    pub service_name: Option<&'a str>,
    /// Instrumentation scope name (for non-OTLP sources: the source).
    pub scope_name: Option<&'a str>,
    /// Instrumentation scope version.
    pub scope_version: Option<&'a str>,
}

/// The value of a gauge or sum point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// No value (OTLP allows it).
    None,
    /// A float.
    Double(f64),
    /// An integer (also written to `value` as a float).
    Int(i64),
}

/// The buckets of one side of an exponential histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpBuckets<'a> {
    /// Index of the first bucket.
    pub offset: i32,
    /// Counts, from `offset` up.
    pub counts: &'a [u64],
}

/// One data point, by type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Point<'a> {
    /// A gauge.
    Gauge(Number),
    /// A sum.
    Sum {
        /// Value.
        value: Number,
        /// Whether it only grows (a counter).
        monotonic: bool,
        /// OTLP `AggregationTemporality` (1 delta, 2 cumulative).
        temporality: i32,
    },
    /// A histogram with explicit bounds.
    Histogram {
        /// OTLP `AggregationTemporality`.
        temporality: i32,
        /// Observations.
        count: u64,
        /// Sum of observations.
        sum: Option<f64>,
        /// Smallest observation.
        min: Option<f64>,
        /// Largest observation.
        max: Option<f64>,
        /// Counts per bucket (`bounds.len() + 1` of them).
        bucket_counts: &'a [u64],
        /// Upper bounds of the buckets but the last.
        bounds: &'a [f64],
    },
    /// An exponential (native) histogram.
    Exponential {
        /// OTLP `AggregationTemporality`.
        temporality: i32,
        /// Observations.
        count: u64,
        /// Sum of observations.
        sum: Option<f64>,
        /// Smallest observation.
        min: Option<f64>,
        /// Largest observation.
        max: Option<f64>,
        /// Resolution: bucket boundaries are powers of `2^(2^-scale)`.
        scale: i32,
        /// Observations in the zero bucket.
        zero_count: u64,
        /// Width of the zero bucket.
        zero_threshold: f64,
        /// Buckets of positive observations.
        positive: Option<ExpBuckets<'a>>,
        /// Buckets of negative observations.
        negative: Option<ExpBuckets<'a>>,
    },
    /// A summary.
    Summary {
        /// Observations.
        count: u64,
        /// Sum of observations.
        sum: f64,
        /// `(quantile, value)` pairs.
        quantiles: &'a [(f64, f64)],
    },
}

/// Bytes of the fixed-width columns of one metrics row (timestamps, values, counts, the
/// exponential histogram scalars, flags).
pub const METRIC_ROW_BYTES: usize = 110;

/// Builds a metrics record batch point by point.
#[derive(Default)]
pub struct MetricsBuilder {
    name: StringBuilder,
    kind: StringBuilder,
    unit: StringBuilder,
    description: StringBuilder,
    ts: Option<TimestampNanosecondBuilder>,
    start: Option<TimestampNanosecondBuilder>,
    value: Float64Builder,
    int_value: Int64Builder,
    is_monotonic: BooleanBuilder,
    temporality: Int32Builder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: UInt64Builder,
    bucket_offsets: ListOffsets,
    bounds: Float64Builder,
    bounds_offsets: ListOffsets,
    exp_scale: Int32Builder,
    exp_zero_count: UInt64Builder,
    exp_zero_threshold: Float64Builder,
    exp_pos_offset: Int32Builder,
    exp_pos_counts: UInt64Builder,
    exp_pos_offsets: ListOffsets,
    exp_neg_offset: Int32Builder,
    exp_neg_counts: UInt64Builder,
    exp_neg_offsets: ListOffsets,
    q_quantile: Float64Builder,
    q_value: Float64Builder,
    q_offsets: ListOffsets,
    flags: UInt32Builder,
    service: StringBuilder,
    res_attrs: AttributesBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    attrs: AttributesBuilder,
    rows: usize,
}

impl MetricsBuilder {
    /// Points appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no point was appended.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes of the rows appended so far (values and offsets of every column, list items
    /// included), what a [`DecodeBudget`](crate::DecodeBudget) is checked against after each
    /// point.
    pub fn bytes(&self) -> usize {
        let strings = [
            &self.name,
            &self.kind,
            &self.unit,
            &self.description,
            &self.service,
            &self.scope_name,
            &self.scope_version,
        ];
        let lists = [
            &self.bucket_offsets,
            &self.bounds_offsets,
            &self.exp_pos_offsets,
            &self.exp_neg_offsets,
            &self.q_offsets,
        ];
        let items = self.bucket_counts.len()
            + self.bounds.len()
            + self.exp_pos_counts.len()
            + self.exp_neg_counts.len()
            + 2 * self.q_quantile.len();
        self.rows * METRIC_ROW_BYTES
            + strings.into_iter().map(string_bytes).sum::<usize>()
            + lists.into_iter().map(ListOffsets::bytes).sum::<usize>()
            + 8 * items
            + self.res_attrs.bytes()
            + self.attrs.bytes()
    }

    /// Appends one point. `resource` and `attributes` add the entries of the row's two
    /// attribute maps.
    pub fn append(
        &mut self,
        f: &MetricFields<'_>,
        point: &Point<'_>,
        resource: impl FnOnce(&mut AttributesBuilder),
        attributes: impl FnOnce(&mut AttributesBuilder),
    ) {
        self.common(f, point, resource, attributes);
        match *point {
            Point::Gauge(value) => {
                self.number(value);
                self.is_monotonic.append_null();
                self.temporality.append_null();
                self.no_distribution();
            }
            Point::Sum {
                value,
                monotonic,
                temporality,
            } => {
                self.number(value);
                self.is_monotonic.append_value(monotonic);
                self.temporality.append_value(temporality);
                self.no_distribution();
            }
            Point::Histogram {
                temporality,
                count,
                sum,
                min,
                max,
                bucket_counts,
                bounds,
            } => {
                self.distribution(Some(temporality), count, sum, min, max);
                self.bucket_counts.append_slice(bucket_counts);
                self.bucket_offsets.push(self.bucket_counts.len());
                self.bounds.append_slice(bounds);
                self.bounds_offsets.push(self.bounds.len());
                self.no_exponential();
                self.q_offsets.push_null();
            }
            Point::Exponential {
                temporality,
                count,
                sum,
                min,
                max,
                scale,
                zero_count,
                zero_threshold,
                positive,
                negative,
            } => {
                self.distribution(Some(temporality), count, sum, min, max);
                self.no_histogram();
                self.exp_scale.append_value(scale);
                self.exp_zero_count.append_value(zero_count);
                self.exp_zero_threshold.append_value(zero_threshold);
                exp_buckets(
                    &mut self.exp_pos_offset,
                    &mut self.exp_pos_counts,
                    &mut self.exp_pos_offsets,
                    positive,
                );
                exp_buckets(
                    &mut self.exp_neg_offset,
                    &mut self.exp_neg_counts,
                    &mut self.exp_neg_offsets,
                    negative,
                );
                self.q_offsets.push_null();
            }
            Point::Summary {
                count,
                sum,
                quantiles,
            } => {
                self.distribution(None, count, Some(sum), None, None);
                self.no_histogram();
                self.no_exponential();
                for &(q, v) in quantiles {
                    self.q_quantile.append_value(q);
                    self.q_value.append_value(v);
                }
                self.q_offsets.push(self.q_quantile.len());
            }
        }
        self.rows += 1;
    }

    fn common(
        &mut self,
        f: &MetricFields<'_>,
        point: &Point<'_>,
        resource: impl FnOnce(&mut AttributesBuilder),
        attributes: impl FnOnce(&mut AttributesBuilder),
    ) {
        self.name.append_value(f.name);
        self.kind.append_value(match point {
            Point::Gauge(_) => "gauge",
            Point::Sum { .. } => "sum",
            Point::Histogram { .. } => "histogram",
            Point::Exponential { .. } => "exponential_histogram",
            Point::Summary { .. } => "summary",
        });
        self.unit.append_option(f.unit);
        self.description.append_option(f.description);
        self.ts
            .get_or_insert_with(|| timestamp_builder(0))
            .append_value(f.timestamp);
        self.start
            .get_or_insert_with(|| timestamp_builder(0))
            .append_option(f.start_timestamp);
        self.flags.append_value(f.flags);
        self.service.append_option(f.service_name);
        resource(&mut self.res_attrs);
        self.res_attrs.finish_row();
        self.scope_name.append_option(f.scope_name);
        self.scope_version.append_option(f.scope_version);
        attributes(&mut self.attrs);
        self.attrs.finish_row();
    }

    fn number(&mut self, value: Number) {
        match value {
            Number::Double(d) => {
                self.value.append_value(d);
                self.int_value.append_null();
            }
            Number::Int(i) => {
                self.value.append_value(i as f64);
                self.int_value.append_value(i);
            }
            Number::None => {
                self.value.append_null();
                self.int_value.append_null();
            }
        }
    }

    /// Nulls for every column of histograms and summaries (gauges and sums).
    fn no_distribution(&mut self) {
        self.count.append_null();
        self.sum.append_null();
        self.min.append_null();
        self.max.append_null();
        self.no_histogram();
        self.no_exponential();
        self.q_offsets.push_null();
    }

    /// The columns histograms and summaries share, and nulls for the number columns.
    fn distribution(
        &mut self,
        temporality: Option<i32>,
        count: u64,
        sum: Option<f64>,
        min: Option<f64>,
        max: Option<f64>,
    ) {
        self.value.append_null();
        self.int_value.append_null();
        self.is_monotonic.append_null();
        self.temporality.append_option(temporality);
        self.count.append_value(count);
        self.sum.append_option(sum);
        self.min.append_option(min);
        self.max.append_option(max);
    }

    fn no_histogram(&mut self) {
        self.bucket_offsets.push_null();
        self.bounds_offsets.push_null();
    }

    fn no_exponential(&mut self) {
        self.exp_scale.append_null();
        self.exp_zero_count.append_null();
        self.exp_zero_threshold.append_null();
        self.exp_pos_offset.append_null();
        self.exp_pos_offsets.push_null();
        self.exp_neg_offset.append_null();
        self.exp_neg_offsets.push_null();
    }

    /// The record batch; the builder is empty again afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let quantiles = StructArray::new(
            quantile_fields(),
            vec![
                Arc::new(self.q_quantile.finish()) as ArrayRef,
                Arc::new(self.q_value.finish()),
            ],
            None,
        );
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.ts.get_or_insert_with(|| timestamp_builder(0)).finish()),
            Arc::new(
                self.start
                    .get_or_insert_with(|| timestamp_builder(0))
                    .finish(),
            ),
            Arc::new(self.value.finish()),
            Arc::new(self.int_value.finish()),
            Arc::new(self.is_monotonic.finish()),
            Arc::new(self.temporality.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            self.bucket_offsets
                .finish(DataType::UInt64, Arc::new(self.bucket_counts.finish())),
            self.bounds_offsets
                .finish(DataType::Float64, Arc::new(self.bounds.finish())),
            Arc::new(self.exp_scale.finish()),
            Arc::new(self.exp_zero_count.finish()),
            Arc::new(self.exp_zero_threshold.finish()),
            Arc::new(self.exp_pos_offset.finish()),
            self.exp_pos_offsets
                .finish(DataType::UInt64, Arc::new(self.exp_pos_counts.finish())),
            Arc::new(self.exp_neg_offset.finish()),
            self.exp_neg_offsets
                .finish(DataType::UInt64, Arc::new(self.exp_neg_counts.finish())),
            self.q_offsets
                .finish(DataType::Struct(quantile_fields()), Arc::new(quantiles)),
            Arc::new(self.flags.finish()),
            Arc::new(self.service.finish()),
            self.res_attrs.finish(),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            self.attrs.finish(),
        ];
        RecordBatch::try_new(metrics_schema(), columns)
    }
}

fn exp_buckets(
    offset: &mut Int32Builder,
    counts: &mut UInt64Builder,
    offsets: &mut ListOffsets,
    b: Option<ExpBuckets<'_>>,
) {
    match b {
        Some(b) => {
            offset.append_value(b.offset);
            counts.append_slice(b.counts);
            offsets.push(counts.len());
        }
        None => {
            offset.append_null();
            offsets.push_null();
        }
    }
}
