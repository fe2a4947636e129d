//! OTLP metrics → the metrics lake schema: one row per data point of any of the five types,
//! through the shared [`MetricsBuilder`].

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint};

use super::anyvalue::{attributes_into, service_name};
use super::logs::non_empty;
use super::{pick_time, DecodeError, Decoded};
use crate::budget::{DecodeBudget, OverBudget};
use crate::metricrows::{ExpBuckets, MetricFields, MetricsBuilder, Number, Point};

/// Where a metric sits: its resource and scope.
struct Context<'a> {
    metric: &'a Metric,
    resource_attrs: &'a [KeyValue],
    service: Option<&'a str>,
    scope: Option<&'a InstrumentationScope>,
    received_at: i64,
    budget: &'a DecodeBudget,
}

impl Context<'_> {
    /// The fields of a point of this metric.
    fn fields(&self, time: u64, start: u64, flags: u32) -> MetricFields<'_> {
        let m = self.metric;
        MetricFields {
            name: &m.name,
            unit: non_empty(&m.unit),
            description: non_empty(&m.description),
            timestamp: pick_time(time, 0, self.received_at),
            start_timestamp: (start != 0).then(|| i64::try_from(start).unwrap_or(i64::MAX)),
            flags,
            service_name: self.service,
            scope_name: self.scope.and_then(|s| non_empty(&s.name)),
            scope_version: self.scope.and_then(|s| non_empty(&s.version)),
        }
    }

    fn append(
        &self,
        b: &mut MetricsBuilder,
        f: &MetricFields<'_>,
        point: &Point<'_>,
        attributes: &[KeyValue],
    ) -> Result<(), OverBudget> {
        b.append(
            f,
            point,
            |r| attributes_into(r, self.resource_attrs),
            |a| attributes_into(a, attributes),
        );
        self.budget.check(b.bytes())
    }
}

fn number(p: &NumberDataPoint) -> Number {
    match p.value {
        Some(NumberValue::AsDouble(d)) => Number::Double(d),
        Some(NumberValue::AsInt(i)) => Number::Int(i),
        None => Number::None,
    }
}

fn exp_buckets(b: Option<&Buckets>) -> Option<ExpBuckets<'_>> {
    b.map(|b| ExpBuckets {
        offset: b.offset,
        counts: &b.bucket_counts,
    })
}

/// Appends every point of a metric; stops when the rows are over the budget.
fn add_metric(b: &mut MetricsBuilder, cx: &Context<'_>) -> Result<(), OverBudget> {
    let Some(data) = cx.metric.data.as_ref() else {
        return Ok(());
    };
    match data {
        Data::Gauge(g) => {
            for p in &g.data_points {
                let f = cx.fields(p.time_unix_nano, p.start_time_unix_nano, p.flags);
                cx.append(b, &f, &Point::Gauge(number(p)), &p.attributes)?;
            }
        }
        Data::Sum(s) => {
            for p in &s.data_points {
                let f = cx.fields(p.time_unix_nano, p.start_time_unix_nano, p.flags);
                let point = Point::Sum {
                    value: number(p),
                    monotonic: s.is_monotonic,
                    temporality: s.aggregation_temporality,
                };
                cx.append(b, &f, &point, &p.attributes)?;
            }
        }
        Data::Histogram(h) => {
            for p in &h.data_points {
                let f = cx.fields(p.time_unix_nano, p.start_time_unix_nano, p.flags);
                let point = Point::Histogram {
                    temporality: h.aggregation_temporality,
                    count: p.count,
                    sum: p.sum,
                    min: p.min,
                    max: p.max,
                    bucket_counts: &p.bucket_counts,
                    bounds: &p.explicit_bounds,
                };
                cx.append(b, &f, &point, &p.attributes)?;
            }
        }
        Data::ExponentialHistogram(h) => {
            for p in &h.data_points {
                let f = cx.fields(p.time_unix_nano, p.start_time_unix_nano, p.flags);
                let point = Point::Exponential {
                    temporality: h.aggregation_temporality,
                    count: p.count,
                    sum: p.sum,
                    min: p.min,
                    max: p.max,
                    scale: p.scale,
                    zero_count: p.zero_count,
                    zero_threshold: p.zero_threshold,
                    positive: exp_buckets(p.positive.as_ref()),
                    negative: exp_buckets(p.negative.as_ref()),
                };
                cx.append(b, &f, &point, &p.attributes)?;
            }
        }
        Data::Summary(s) => {
            for p in &s.data_points {
                let f = cx.fields(p.time_unix_nano, p.start_time_unix_nano, p.flags);
                let quantiles: Vec<(f64, f64)> = p
                    .quantile_values
                    .iter()
                    .map(|q| (q.quantile, q.value))
                    .collect();
                let point = Point::Summary {
                    count: p.count,
                    sum: p.sum,
                    quantiles: &quantiles,
                };
                cx.append(b, &f, &point, &p.attributes)?;
            }
        }
    }
    Ok(())
}

/// Decodes an OTLP metrics request into one record batch of the metrics schema; refused
/// whole as soon as its rows are over `budget`.
pub fn decode_metrics(
    req: &ExportMetricsServiceRequest,
    received_at: i64,
    budget: &DecodeBudget,
) -> Result<Decoded, DecodeError> {
    let mut b = MetricsBuilder::default();
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
                    budget,
                };
                add_metric(&mut b, &cx)?;
            }
        }
    }
    Ok(Decoded {
        records: b.finish()?,
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
    fn a_resource_attribute_copied_to_every_point_is_over_budget() {
        let budget = DecodeBudget::new(8 << 20, "sources.otlp.max_row_bytes");
        let big = KeyValue {
            key: "big".into(),
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        "x".repeat(1 << 20),
                    ),
                ),
            }),
            ..Default::default()
        };
        let gauge = |n: usize| {
            metric(
                "g",
                Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint::default(); n],
                }),
            )
        };
        let mut req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: vec![big],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![gauge(20_000)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        match decode_metrics(&req, 1, &budget) {
            Err(DecodeError::OverBudget(e)) => assert_eq!(e.limit, 8 << 20),
            other => panic!("expected over budget, got {other:?}"),
        }
        req.resource_metrics[0].scope_metrics[0].metrics = vec![gauge(5)];
        let d = decode_metrics(&req, 1, &budget).unwrap();
        assert_eq!(d.records.num_rows(), 5);
    }

    #[test]
    fn all_five_point_types_decode() {
        let d = decode_metrics(&all_types(), 1, &DecodeBudget::unlimited()).unwrap();
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
