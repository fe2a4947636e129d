//! Datadog series (`/api/v1/series` JSON, `/api/v2/series` JSON and the Agent's protobuf
//! `MetricPayload`) → the metrics lake schema, following the Collector's datadog receiver:
//! `gauge` → gauge; `count` → sum, delta, not monotonic; `rate` → sum, delta, value × interval
//! (a rate per second times the interval is the count over it). When the interval is known the
//! start time is `timestamp - interval`. A series without a type is a gauge (Datadog's
//! default). Tags `k:v` become point attributes; the host becomes the resource's `host.name`,
//! a `service:` tag also `service.name`, and v2 resources `{type, name}` resource attributes.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde::Deserialize;

use super::logs::split_tags;

/// `MetricPayload` of the Agent's v2 protobuf series.
#[derive(Clone, PartialEq, Message)]
pub struct MetricPayload {
    /// Series.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<MetricSeries>,
}

/// `MetricPayload.MetricSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricSeries {
    /// Resources (`{type: "host", name: ...}`).
    #[prost(message, repeated, tag = "1")]
    pub resources: Vec<SeriesResource>,
    /// Metric name.
    #[prost(string, tag = "2")]
    pub metric: String,
    /// Tags `k:v`.
    #[prost(string, repeated, tag = "3")]
    pub tags: Vec<String>,
    /// Points.
    #[prost(message, repeated, tag = "4")]
    pub points: Vec<MetricPoint>,
    /// 0 unspecified, 1 count, 2 rate, 3 gauge.
    #[prost(int32, tag = "5")]
    pub r#type: i32,
    /// Unit.
    #[prost(string, tag = "6")]
    pub unit: String,
    /// Source type name.
    #[prost(string, tag = "7")]
    pub source_type_name: String,
    /// Interval in seconds.
    #[prost(int64, tag = "8")]
    pub interval: i64,
}

/// `MetricPayload.Resource`.
#[derive(Clone, PartialEq, Message)]
pub struct SeriesResource {
    /// Resource type (`host`, ...).
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// Resource name.
    #[prost(string, tag = "2")]
    pub name: String,
}

/// `MetricPayload.MetricPoint`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricPoint {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix seconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Datadog metric types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Gauge.
    Gauge,
    /// Count over the interval.
    Count,
    /// Rate per second.
    Rate,
}

/// One series in a form shared by the three payloads.
#[derive(Debug)]
pub struct Series {
    /// Metric name.
    pub metric: String,
    /// Type.
    pub kind: Kind,
    /// Interval in seconds (0: unknown).
    pub interval: i64,
    /// `(unix seconds, value)` points.
    pub points: Vec<(f64, f64)>,
    /// Host.
    pub host: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Unit.
    pub unit: String,
    /// Extra resources `(type, name)`.
    pub resources: Vec<(String, String)>,
    /// Source type name.
    pub source_type: Option<String>,
}

#[derive(Deserialize)]
struct V1Payload {
    series: Vec<V1Series>,
}

#[derive(Deserialize)]
struct V1Series {
    metric: String,
    points: Vec<Vec<Option<f64>>>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    interval: Option<i64>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    source_type_name: Option<String>,
}

#[derive(Deserialize)]
struct V2Payload {
    series: Vec<V2Series>,
}

#[derive(Deserialize)]
struct V2Series {
    metric: String,
    #[serde(default, rename = "type")]
    kind: Option<i32>,
    points: Vec<V2Point>,
    #[serde(default)]
    resources: Option<Vec<V2Resource>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    interval: Option<i64>,
    #[serde(default)]
    source_type_name: Option<String>,
}

#[derive(Deserialize)]
struct V2Point {
    timestamp: i64,
    value: f64,
}

#[derive(Deserialize)]
struct V2Resource {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

/// Splits v2 resources into the host and the others.
fn split_resources(
    resources: impl IntoIterator<Item = (String, String)>,
) -> (Option<String>, Vec<(String, String)>) {
    let mut host = None;
    let mut rest = Vec::new();
    for (kind, name) in resources {
        if kind == "host" {
            host = Some(name);
        } else {
            rest.push((kind, name));
        }
    }
    (host, rest)
}

fn v2_kind(t: i32) -> Result<Kind, String> {
    match t {
        0 | 3 => Ok(Kind::Gauge),
        1 => Ok(Kind::Count),
        2 => Ok(Kind::Rate),
        other => Err(format!("unknown metric type {other} (expected 0-3)")),
    }
}

/// Parses a v1 JSON body.
pub fn parse_v1(body: &[u8]) -> Result<Vec<Series>, String> {
    let p: V1Payload = serde_json::from_slice(body)
        .map_err(|e| format!("malformed Datadog v1 series payload: {e}"))?;
    p.series
        .into_iter()
        .map(|s| {
            let kind = match s.kind.as_deref() {
                None | Some("gauge") | Some("") => Kind::Gauge,
                Some("count") => Kind::Count,
                Some("rate") => Kind::Rate,
                Some(other) => return Err(format!("series {}: unknown type {other:?}", s.metric)),
            };
            let points = s
                .points
                .iter()
                .filter_map(|p| match p.as_slice() {
                    [Some(t), Some(v)] => Some(Ok((*t, *v))),
                    [_, None] | [None, _] => None,
                    _ => Some(Err(format!(
                        "series {}: a point must be [timestamp, value]",
                        s.metric
                    ))),
                })
                .collect::<Result<_, _>>()?;
            let mut tags = s.tags.unwrap_or_default();
            if let Some(d) = s.device {
                tags.push(format!("device:{d}"));
            }
            Ok(Series {
                metric: s.metric,
                kind,
                interval: s.interval.unwrap_or(0),
                points,
                host: s.host,
                tags,
                unit: String::new(),
                resources: Vec::new(),
                source_type: s.source_type_name,
            })
        })
        .collect()
}

/// Parses a v2 JSON body.
pub fn parse_v2_json(body: &[u8]) -> Result<Vec<Series>, String> {
    let p: V2Payload = serde_json::from_slice(body)
        .map_err(|e| format!("malformed Datadog v2 series payload: {e}"))?;
    p.series
        .into_iter()
        .map(|s| {
            let (host, resources) = split_resources(
                s.resources
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| (r.kind, r.name)),
            );
            Ok(Series {
                kind: v2_kind(s.kind.unwrap_or(0))
                    .map_err(|e| format!("series {}: {e}", s.metric))?,
                metric: s.metric,
                interval: s.interval.unwrap_or(0),
                points: s
                    .points
                    .iter()
                    .map(|p| (p.timestamp as f64, p.value))
                    .collect(),
                host,
                tags: s.tags.unwrap_or_default(),
                unit: s.unit.unwrap_or_default(),
                resources,
                source_type: s.source_type_name,
            })
        })
        .collect()
}

/// Parses the Agent's v2 protobuf body.
pub fn parse_v2_protobuf(body: &[u8]) -> Result<Vec<Series>, String> {
    let p = MetricPayload::decode(body)
        .map_err(|e| format!("malformed Datadog v2 series protobuf: {e}"))?;
    p.series
        .into_iter()
        .map(|s| {
            let (host, resources) =
                split_resources(s.resources.into_iter().map(|r| (r.r#type, r.name)));
            Ok(Series {
                kind: v2_kind(s.r#type).map_err(|e| format!("series {}: {e}", s.metric))?,
                metric: s.metric,
                interval: s.interval,
                points: s
                    .points
                    .iter()
                    .map(|p| (p.timestamp as f64, p.value))
                    .collect(),
                host,
                tags: s.tags,
                unit: s.unit,
                resources,
                source_type: (!s.source_type_name.is_empty()).then_some(s.source_type_name),
            })
        })
        .collect()
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// The series as an OTLP request (then mapped to Arrow by the OTLP metrics decoder, so both
/// sources share one mapping of points to rows).
pub fn to_otlp(series: Vec<Series>) -> ExportMetricsServiceRequest {
    let resource_metrics = series
        .into_iter()
        .map(|s| {
            let pairs = split_tags(s.tags.iter().map(String::as_str));
            let mut res = Vec::new();
            if let Some(h) = &s.host {
                res.push(kv("host.name", h));
            }
            if let Some((_, svc)) = pairs.iter().find(|(k, _)| *k == "service") {
                res.push(kv("service.name", svc));
            }
            for (t, n) in &s.resources {
                res.push(kv(t, n));
            }
            if let Some(src) = &s.source_type {
                res.push(kv("source", src));
            }
            let attrs: Vec<KeyValue> = pairs.iter().map(|(k, v)| kv(k, v)).collect();
            let interval_ns = s.interval.max(0).saturating_mul(1_000_000_000) as u64;
            let points: Vec<NumberDataPoint> = s
                .points
                .iter()
                .map(|&(t, v)| {
                    let time = (t * 1e9) as u64;
                    let value = if s.kind == Kind::Rate && s.interval > 0 {
                        v * s.interval as f64
                    } else {
                        v
                    };
                    NumberDataPoint {
                        attributes: attrs.clone(),
                        start_time_unix_nano: if s.kind != Kind::Gauge && interval_ns > 0 {
                            time.saturating_sub(interval_ns)
                        } else {
                            0
                        },
                        time_unix_nano: time,
                        value: Some(number_data_point::Value::AsDouble(value)),
                        ..Default::default()
                    }
                })
                .collect();
            let data = match s.kind {
                Kind::Gauge => metric::Data::Gauge(Gauge {
                    data_points: points,
                }),
                Kind::Count | Kind::Rate => metric::Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                    is_monotonic: false,
                }),
            };
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: res,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "datadog".into(),
                        ..Default::default()
                    }),
                    metrics: vec![Metric {
                        name: s.metric,
                        unit: s.unit,
                        data: Some(data),
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_payloads_one_mapping() {
        let v1 = br#"{"series":[{"metric":"req","points":[[1700000000,2.5]],"type":"rate","interval":10,"host":"h","tags":["env:prod","service:api"]}]}"#;
        let v2 = br#"{"series":[{"metric":"req","type":2,"points":[{"timestamp":1700000000,"value":2.5}],"interval":10,"resources":[{"name":"h","type":"host"}],"tags":["env:prod","service:api"]}]}"#;
        let pb = MetricPayload {
            series: vec![MetricSeries {
                resources: vec![SeriesResource {
                    r#type: "host".into(),
                    name: "h".into(),
                }],
                metric: "req".into(),
                tags: vec!["env:prod".into(), "service:api".into()],
                points: vec![MetricPoint {
                    value: 2.5,
                    timestamp: 1_700_000_000,
                }],
                r#type: 2,
                unit: String::new(),
                source_type_name: String::new(),
                interval: 10,
            }],
        };
        let a = to_otlp(parse_v1(v1).unwrap());
        let b = to_otlp(parse_v2_json(v2).unwrap());
        let c = to_otlp(parse_v2_protobuf(&pb.encode_to_vec()).unwrap());
        assert_eq!(a, b);
        assert_eq!(b, c);
        let Some(metric::Data::Sum(sum)) = &a.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!("rate is a sum")
        };
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(25.0))
        );
        assert_eq!(
            sum.data_points[0].start_time_unix_nano,
            1_699_999_990_000_000_000
        );
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
    }

    #[test]
    fn bad_payloads() {
        assert!(parse_v1(br#"{"series":[{"metric":"x","points":[[1]]}]}"#)
            .unwrap_err()
            .contains("[timestamp, value]"));
        assert!(
            parse_v1(br#"{"series":[{"metric":"x","points":[],"type":"histogram"}]}"#)
                .unwrap_err()
                .contains("unknown type")
        );
        assert!(
            parse_v2_json(br#"{"series":[{"metric":"x","type":9,"points":[]}]}"#)
                .unwrap_err()
                .contains("unknown metric type 9")
        );
        assert!(parse_v2_protobuf(b"\xff\xff")
            .unwrap_err()
            .contains("malformed"));
    }
}
