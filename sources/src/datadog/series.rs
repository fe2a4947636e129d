//! Datadog series (`/api/v1/series` JSON, `/api/v2/series` JSON and the Agent's protobuf
//! `MetricPayload`) → the metrics lake schema, following the Collector's datadog receiver:
//! `gauge` → gauge; `count` → sum, delta, not monotonic; `rate` → sum, delta, value × interval
//! (a rate per second times the interval is the count over it). When the interval is known the
//! start time is `timestamp - interval`. A series without a type is a gauge (Datadog's
//! default). Tags `k:v` become point attributes; the host becomes the resource's `host.name`,
//! a `service:` tag also `service.name`, and v2 resources `{type, name}` resource attributes.

use prost::Message;
use serde::Deserialize;
use weir_pipelines::columns::AttributesBuilder;
use weir_pipelines::metricrows::{MetricFields, MetricsBuilder, Number, Point};
use weir_pipelines::otlp::shape::{Field, Shape, NOTHING};
use weir_pipelines::{DecodeBudget, OverBudget};

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

static SERIES_SHAPE: Shape = Shape {
    fields: &[
        (
            1,
            Field::Repeated(
                std::mem::size_of::<SeriesResource>() + std::mem::size_of::<(String, String)>(),
                &NOTHING,
            ),
        ),
        (3, Field::Strings(std::mem::size_of::<String>())),
        (
            4,
            Field::Repeated(
                std::mem::size_of::<MetricPoint>() + std::mem::size_of::<(f64, f64)>(),
                &NOTHING,
            ),
        ),
    ],
};
/// What [`parse_v2_protobuf`] allocates for a body ([`struct_bytes`]): prost's structs and
/// the [`Series`] they become. An empty series is two bytes on the wire.
pub static V2_PROTOBUF: Shape = Shape {
    fields: &[(
        1,
        Field::Repeated(
            std::mem::size_of::<MetricSeries>() + std::mem::size_of::<Series>(),
            &SERIES_SHAPE,
        ),
    )],
};

/// Parses the Agent's v2 protobuf body (count its structs first: [`V2_PROTOBUF`]).
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

/// Appends the series' points to a metrics batch (the same mapping as the Collector's
/// datadog receiver, see the module docs): the host, the `service:` tag, v2 resources and
/// the source type become resource attributes, every `k:v` tag a point attribute. A series'
/// tags are copied to the row of each of its points: refused as soon as the rows are over
/// `budget`.
pub fn append_series(
    series: &[Series],
    received_at: i64,
    budget: &DecodeBudget,
    b: &mut MetricsBuilder,
) -> Result<(), OverBudget> {
    for s in series {
        let pairs = split_tags(s.tags.iter().map(String::as_str));
        let service = pairs.iter().find(|(k, _)| *k == "service").map(|(_, v)| *v);
        let resource = |r: &mut AttributesBuilder| {
            if let Some(h) = &s.host {
                r.entry("host.name", Some(h));
            }
            if let Some(svc) = service {
                r.entry("service.name", Some(svc));
            }
            for (t, n) in &s.resources {
                r.entry(t, Some(n));
            }
            if let Some(src) = &s.source_type {
                r.entry("source", Some(src));
            }
        };
        let interval_ns = s.interval.max(0).saturating_mul(1_000_000_000);
        for &(t, v) in &s.points {
            let time = (t * 1e9) as i64;
            let value = if s.kind == Kind::Rate && s.interval > 0 {
                v * s.interval as f64
            } else {
                v
            };
            let start = time.saturating_sub(interval_ns);
            let fields = MetricFields {
                name: &s.metric,
                unit: (!s.unit.is_empty()).then_some(s.unit.as_str()),
                timestamp: if time > 0 { time } else { received_at },
                start_timestamp: (s.kind != Kind::Gauge && interval_ns > 0 && start > 0)
                    .then_some(start),
                service_name: service,
                scope_name: Some("datadog"),
                ..Default::default()
            };
            let point = match s.kind {
                Kind::Gauge => Point::Gauge(Number::Double(value)),
                Kind::Count | Kind::Rate => Point::Sum {
                    value: Number::Double(value),
                    monotonic: false,
                    temporality: DELTA,
                },
            };
            b.append(&fields, &point, resource, |a| {
                for (k, v) in &pairs {
                    a.entry(k, Some(v));
                }
            });
            budget.check(b.bytes())?;
        }
    }
    Ok(())
}

/// OTLP `AGGREGATION_TEMPORALITY_DELTA`.
const DELTA: i32 = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, TimestampNanosecondType};

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
        let batch = |series: Vec<Series>| {
            let mut b = MetricsBuilder::default();
            append_series(&series, 0, &DecodeBudget::unlimited(), &mut b).unwrap();
            b.finish().unwrap()
        };
        let a = batch(parse_v1(v1).unwrap());
        let b = batch(parse_v2_json(v2).unwrap());
        let c = batch(parse_v2_protobuf(&pb.encode_to_vec()).unwrap());
        assert_eq!(a, b);
        assert_eq!(b, c);
        let col = |name: &str| a.column_by_name(name).unwrap().clone();
        assert_eq!(
            col("metric_type").as_string::<i32>().value(0),
            "sum",
            "rate is a sum"
        );
        assert_eq!(col("value").as_primitive::<Float64Type>().value(0), 25.0);
        assert_eq!(
            col("start_timestamp")
                .as_primitive::<TimestampNanosecondType>()
                .value(0),
            1_699_999_990_000_000_000
        );
        assert_eq!(
            col("aggregation_temporality")
                .as_primitive::<Int32Type>()
                .value(0),
            DELTA
        );
    }

    #[test]
    fn tags_copied_to_every_point_are_over_budget() {
        let budget = DecodeBudget::new(8 << 20, "sources.datadog.max_row_bytes");
        let payload = |points: usize| MetricPayload {
            series: vec![MetricSeries {
                metric: "req".into(),
                tags: vec![format!("big:{}", "x".repeat(1 << 20))],
                points: vec![MetricPoint::default(); points],
                ..Default::default()
            }],
        };
        let series = parse_v2_protobuf(&payload(20_000).encode_to_vec()).unwrap();
        let e = append_series(&series, 0, &budget, &mut MetricsBuilder::default()).unwrap_err();
        assert_eq!((e.key, e.limit), ("sources.datadog.max_row_bytes", 8 << 20));
        let series = parse_v2_protobuf(&payload(5).encode_to_vec()).unwrap();
        let mut b = MetricsBuilder::default();
        append_series(&series, 0, &budget, &mut b).unwrap();
        assert_eq!(b.finish().unwrap().num_rows(), 5);
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

#[cfg(test)]
mod shape_tests {
    use weir_pipelines::otlp::shape::struct_bytes;

    use super::*;

    #[test]
    fn empty_series_count_what_they_become() {
        // 1000 empty series (two bytes each), one with an empty tag and an empty point.
        let mut body = [0x0au8, 0x00].repeat(1000);
        body.extend_from_slice(&[0x0a, 0x04, 0x1a, 0x00, 0x22, 0x00]);
        let series = std::mem::size_of::<MetricSeries>() + std::mem::size_of::<Series>();
        assert_eq!(
            struct_bytes(&body, &V2_PROTOBUF),
            1001 * series
                + std::mem::size_of::<String>()
                + std::mem::size_of::<MetricPoint>()
                + std::mem::size_of::<(f64, f64)>()
        );
    }
}
