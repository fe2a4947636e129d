//! OTLP `AnyValue` → the strings of the lake: strings as they are, everything else as JSON.

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use serde_json::Value as Json;

use crate::columns::AttributesBuilder;

/// The lake's text of a value: strings verbatim, bytes as base64, other values as JSON.
/// An empty value is `None`.
pub fn any_value_to_string(v: &AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::BytesValue(b) => Some(base64::engine::general_purpose::STANDARD.encode(b)),
        other => Some(to_json(other).to_string()),
    }
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::StringValue(s) => Json::String(s.clone()),
        Value::BoolValue(b) => Json::Bool(*b),
        Value::IntValue(i) => Json::from(*i),
        Value::DoubleValue(d) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(d.to_string())),
        Value::BytesValue(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::ArrayValue(a) => Json::Array(
            a.values
                .iter()
                .map(|x| x.value.as_ref().map(to_json).unwrap_or(Json::Null))
                .collect(),
        ),
        Value::KvlistValue(kv) => Json::Object(
            kv.values
                .iter()
                .map(|e| {
                    let v = e
                        .value
                        .as_ref()
                        .and_then(|v| v.value.as_ref())
                        .map(to_json)
                        .unwrap_or(Json::Null);
                    (e.key.clone(), v)
                })
                .collect(),
        ),
        // A string-table index only has a meaning inside profiles; keep the number.
        Value::StringValueStrindex(i) => Json::from(*i),
    }
}

/// Appends OTLP attributes to the current row of an attribute map.
pub fn attributes_into(builder: &mut AttributesBuilder, attrs: &[KeyValue]) {
    for kv in attrs {
        let v = kv.value.as_ref().and_then(any_value_to_string);
        builder.entry(&kv.key, v.as_deref());
    }
}

/// `service.name` of a resource, if it is a string.
pub(crate) fn service_name(attrs: &[KeyValue]) -> Option<&str> {
    attrs
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn av(v: Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    #[test]
    fn values_become_strings_or_json() {
        assert_eq!(
            any_value_to_string(&av(Value::StringValue("a\"b".into()))).unwrap(),
            "a\"b"
        );
        assert_eq!(any_value_to_string(&av(Value::IntValue(-3))).unwrap(), "-3");
        assert_eq!(
            any_value_to_string(&av(Value::BoolValue(true))).unwrap(),
            "true"
        );
        assert_eq!(
            any_value_to_string(&av(Value::DoubleValue(1.5))).unwrap(),
            "1.5"
        );
        assert_eq!(
            any_value_to_string(&av(Value::BytesValue(vec![1, 2]))).unwrap(),
            "AQI="
        );
        let arr = av(Value::ArrayValue(ArrayValue {
            values: vec![av(Value::IntValue(1)), av(Value::StringValue("x".into()))],
        }));
        assert_eq!(any_value_to_string(&arr).unwrap(), r#"[1,"x"]"#);
        let kv = av(Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "k".into(),
                value: Some(av(Value::BoolValue(false))),
                ..Default::default()
            }],
        }));
        assert_eq!(any_value_to_string(&kv).unwrap(), r#"{"k":false}"#);
        assert_eq!(any_value_to_string(&AnyValue { value: None }), None);
    }
}
