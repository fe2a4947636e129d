//! OTLP metrics → the metrics lake schema: one row per data point of any of the five types.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{ArrowError, DataType};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use weir_schema::{metrics_schema, quantile_fields};

use super::anyvalue::{attributes_into, service_name};
use super::logs::non_empty;
use super::{pick_time, Decoded};
use crate::columns::{timestamp_builder, AttributesBuilder, ListOffsets};

/// The fields every data point shares.
struct Common<'a> {
    attributes: &'a [KeyValue],
    start: u64,
    time: u64,
    flags: u32,
}

#[derive(Default)]
struct Columns {
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
}

struct Context<'a> {
    metric: &'a Metric,
    resource_attrs: &'a [KeyValue],
    service: Option<&'a str>,
    scope: Option<&'a InstrumentationScope>,
    received_at: i64,
}

impl Columns {
    /// Appends the columns shared by every point type, and nulls for the type-specific
    /// columns the caller does not set itself.
    fn common(&mut self, cx: &Context<'_>, kind: &str, p: &Common<'_>) {
        let m = cx.metric;
        self.name.append_value(&m.name);
        self.kind.append_value(kind);
        self.unit.append_option(non_empty(&m.unit));
        self.description.append_option(non_empty(&m.description));
        let t = pick_time(p.time, 0, cx.received_at);
        self.ts
            .get_or_insert_with(|| timestamp_builder(0))
            .append_value(t);
        let start = self.start.get_or_insert_with(|| timestamp_builder(0));
        if p.start == 0 {
            start.append_null();
        } else {
            start.append_value(i64::try_from(p.start).unwrap_or(i64::MAX));
        }
        self.flags.append_value(p.flags);
        self.service.append_option(cx.service);
        attributes_into(&mut self.res_attrs, cx.resource_attrs);
        self.res_attrs.finish_row();
        self.scope_name
            .append_option(cx.scope.and_then(|s| non_empty(&s.name)));
        self.scope_version
            .append_option(cx.scope.and_then(|s| non_empty(&s.version)));
        attributes_into(&mut self.attrs, p.attributes);
        self.attrs.finish_row();
    }

    fn no_number(&mut self) {
        self.value.append_null();
        self.int_value.append_null();
    }

    fn no_sum_fields(&mut self) {
        self.is_monotonic.append_null();
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

    fn no_stats(&mut self) {
        self.count.append_null();
        self.sum.append_null();
        self.min.append_null();
        self.max.append_null();
    }

    fn buckets(
        offset: &mut Int32Builder,
        counts: &mut UInt64Builder,
        offsets: &mut ListOffsets,
        b: Option<&Buckets>,
    ) {
        match b {
            Some(b) => {
                offset.append_value(b.offset);
                counts.append_slice(&b.bucket_counts);
                offsets.push(counts.len());
            }
            None => {
                offset.append_null();
                offsets.push_null();
            }
        }
    }

    fn add_metric(&mut self, cx: &Context<'_>) {
        let Some(data) = cx.metric.data.as_ref() else {
            return;
        };
        match data {
            Data::Gauge(g) => {
                for p in &g.data_points {
                    self.number(cx, "gauge", p, None);
                }
            }
            Data::Sum(s) => {
                for p in &s.data_points {
                    self.number(
                        cx,
                        "sum",
                        p,
                        Some((s.is_monotonic, s.aggregation_temporality)),
                    );
                }
            }
            Data::Histogram(h) => {
                for p in &h.data_points {
                    let c = Common {
                        attributes: &p.attributes,
                        start: p.start_time_unix_nano,
                        time: p.time_unix_nano,
                        flags: p.flags,
                    };
                    self.common(cx, "histogram", &c);
                    self.no_number();
                    self.no_sum_fields();
                    self.temporality.append_value(h.aggregation_temporality);
                    self.count.append_value(p.count);
                    self.sum.append_option(p.sum);
                    self.min.append_option(p.min);
                    self.max.append_option(p.max);
                    self.bucket_counts.append_slice(&p.bucket_counts);
                    self.bucket_offsets.push(self.bucket_counts.len());
                    self.bounds.append_slice(&p.explicit_bounds);
                    self.bounds_offsets.push(self.bounds.len());
                    self.no_exponential();
                    self.q_offsets.push_null();
                }
            }
            Data::ExponentialHistogram(h) => {
                for p in &h.data_points {
                    let c = Common {
                        attributes: &p.attributes,
                        start: p.start_time_unix_nano,
                        time: p.time_unix_nano,
                        flags: p.flags,
                    };
                    self.common(cx, "exponential_histogram", &c);
                    self.no_number();
                    self.no_sum_fields();
                    self.temporality.append_value(h.aggregation_temporality);
                    self.count.append_value(p.count);
                    self.sum.append_option(p.sum);
                    self.min.append_option(p.min);
                    self.max.append_option(p.max);
                    self.no_histogram();
                    self.exp_scale.append_value(p.scale);
                    self.exp_zero_count.append_value(p.zero_count);
                    self.exp_zero_threshold.append_value(p.zero_threshold);
                    Self::buckets(
                        &mut self.exp_pos_offset,
                        &mut self.exp_pos_counts,
                        &mut self.exp_pos_offsets,
                        p.positive.as_ref(),
                    );
                    Self::buckets(
                        &mut self.exp_neg_offset,
                        &mut self.exp_neg_counts,
                        &mut self.exp_neg_offsets,
                        p.negative.as_ref(),
                    );
                    self.q_offsets.push_null();
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    let c = Common {
                        attributes: &p.attributes,
                        start: p.start_time_unix_nano,
                        time: p.time_unix_nano,
                        flags: p.flags,
                    };
                    self.common(cx, "summary", &c);
                    self.no_number();
                    self.no_sum_fields();
                    self.temporality.append_null();
                    self.count.append_value(p.count);
                    self.sum.append_value(p.sum);
                    self.min.append_null();
                    self.max.append_null();
                    self.no_histogram();
                    self.no_exponential();
                    for q in &p.quantile_values {
                        self.q_quantile.append_value(q.quantile);
                        self.q_value.append_value(q.value);
                    }
                    self.q_offsets.push(self.q_quantile.len());
                }
            }
        }
    }

    fn number(
        &mut self,
        cx: &Context<'_>,
        kind: &str,
        p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint,
        sum: Option<(bool, i32)>,
    ) {
        let c = Common {
            attributes: &p.attributes,
            start: p.start_time_unix_nano,
            time: p.time_unix_nano,
            flags: p.flags,
        };
        self.common(cx, kind, &c);
        match p.value {
            Some(NumberValue::AsDouble(d)) => {
                self.value.append_value(d);
                self.int_value.append_null();
            }
            Some(NumberValue::AsInt(i)) => {
                self.value.append_value(i as f64);
                self.int_value.append_value(i);
            }
            None => self.no_number(),
        }
        match sum {
            Some((mono, temporality)) => {
                self.is_monotonic.append_value(mono);
                self.temporality.append_value(temporality);
            }
            None => {
                self.is_monotonic.append_null();
                self.temporality.append_null();
            }
        }
        self.no_stats();
        self.no_histogram();
        self.no_exponential();
        self.q_offsets.push_null();
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
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

/// Decodes an OTLP metrics request into one record batch of the metrics schema.
pub fn decode_metrics(
    req: &ExportMetricsServiceRequest,
    received_at: i64,
) -> Result<Decoded, ArrowError> {
    let mut cols = Columns::default();
    for rm in &req.resource_metrics {
        let resource_attrs: &[KeyValue] = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let service = service_name(resource_attrs);
        for sm in &rm.scope_metrics {
            for metric in &sm.metrics {
                let cx = Context {
                    metric,
                    resource_attrs,
                    service,
                    scope: sm.scope.as_ref(),
                    received_at,
                };
                cols.add_metric(&cx);
            }
        }
    }
    Ok(Decoded {
        records: cols.finish()?,
        rejected: 0,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, UInt64Type};
    use arrow_array::Array;
    use opentelemetry_proto::tonic::metrics::v1::{
        summary_data_point::ValueAtQuantile, ExponentialHistogram, ExponentialHistogramDataPoint,
        Gauge, Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        Summary, SummaryDataPoint,
    };

    fn metric(name: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            unit: "1".into(),
            data: Some(data),
            ..Default::default()
        }
    }

    pub(crate) fn all_types() -> ExportMetricsServiceRequest {
        let t = 1_700_000_000_000_000_000;
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(
                            "g",
                            Data::Gauge(Gauge {
                                data_points: vec![NumberDataPoint {
                                    time_unix_nano: t,
                                    value: Some(NumberValue::AsDouble(2.5)),
                                    ..Default::default()
                                }],
                            }),
                        ),
                        metric(
                            "s",
                            Data::Sum(Sum {
                                data_points: vec![NumberDataPoint {
                                    time_unix_nano: t,
                                    start_time_unix_nano: t - 10,
                                    value: Some(NumberValue::AsInt(7)),
                                    ..Default::default()
                                }],
                                aggregation_temporality: 2,
                                is_monotonic: true,
                            }),
                        ),
                        metric(
                            "h",
                            Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    time_unix_nano: t,
                                    count: 3,
                                    sum: Some(6.0),
                                    bucket_counts: vec![1, 2, 0],
                                    explicit_bounds: vec![1.0, 5.0],
                                    min: Some(1.0),
                                    max: Some(3.0),
                                    ..Default::default()
                                }],
                                aggregation_temporality: 1,
                            }),
                        ),
                        metric(
                            "e",
                            Data::ExponentialHistogram(ExponentialHistogram {
                                data_points: vec![ExponentialHistogramDataPoint {
                                    time_unix_nano: t,
                                    count: 4,
                                    scale: 2,
                                    zero_count: 1,
                                    positive: Some(Buckets {
                                        offset: -1,
                                        bucket_counts: vec![1, 2],
                                    }),
                                    ..Default::default()
                                }],
                                aggregation_temporality: 2,
                            }),
                        ),
                        metric(
                            "q",
                            Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    time_unix_nano: t,
                                    count: 5,
                                    sum: 10.0,
                                    quantile_values: vec![
                                        ValueAtQuantile {
                                            quantile: 0.5,
                                            value: 2.0,
                                        },
                                        ValueAtQuantile {
                                            quantile: 0.99,
                                            value: 4.0,
                                        },
                                    ],
                                    ..Default::default()
                                }],
                            }),
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn all_five_point_types_decode() {
        let d = decode_metrics(&all_types(), 1).unwrap();
        let b = &d.records;
        assert_eq!(b.num_rows(), 5);
        let value = b
            .column_by_name("value")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(value.value(0), 2.5);
        assert_eq!(value.value(1), 7.0);
        assert!(value.is_null(2));
        let buckets = b.column_by_name("bucket_counts").unwrap().as_list::<i32>();
        assert!(buckets.is_null(0));
        assert_eq!(
            buckets
                .value(2)
                .as_primitive::<UInt64Type>()
                .values()
                .as_ref(),
            &[1, 2, 0]
        );
        let pos = b
            .column_by_name("exp_positive_bucket_counts")
            .unwrap()
            .as_list::<i32>();
        assert_eq!(
            pos.value(3).as_primitive::<UInt64Type>().values().as_ref(),
            &[1, 2]
        );
        let neg = b
            .column_by_name("exp_negative_bucket_counts")
            .unwrap()
            .as_list::<i32>();
        assert!(neg.is_null(3));
        let q = b.column_by_name("quantiles").unwrap().as_list::<i32>();
        assert_eq!(q.value(4).len(), 2);
        let count = b
            .column_by_name("count")
            .unwrap()
            .as_primitive::<UInt64Type>();
        assert_eq!(count.value(4), 5);
    }
}
