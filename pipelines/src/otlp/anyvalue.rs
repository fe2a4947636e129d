//! OTLP `AnyValue` → the strings of the lake: strings as they are, everything else as JSON.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

use super::common_wire::{any_text, Any};

use crate::columns::AttributesBuilder;

/// The lake's text of a value: strings verbatim, bytes as base64, other values as JSON.
/// An empty value is `None`. The same text as the wire decoder's ([`any_text`]).
pub fn any_value_to_string(v: &AnyValue) -> Option<String> {
    any_text(&borrowed(v)).map(Cow::into_owned)
}

/// A prost `AnyValue` as the wire decoder's borrowed [`Any`].
fn borrowed(v: &AnyValue) -> Any<'_> {
    match &v.value {
        None => Any::Empty,
        Some(Value::StringValue(s)) => Any::Str(s),
        Some(Value::BoolValue(b)) => Any::Bool(*b),
        Some(Value::IntValue(i)) => Any::Int(*i),
        Some(Value::DoubleValue(d)) => Any::Double(*d),
        Some(Value::BytesValue(b)) => Any::Bytes(b),
        Some(Value::ArrayValue(a)) => Any::Array(a.values.iter().map(borrowed).collect()),
        Some(Value::KvlistValue(kv)) => Any::Kvlist(
            kv.values
                .iter()
                .map(|e| {
                    let v = e.value.as_ref().map(borrowed).unwrap_or_default();
                    (e.key.as_str(), v)
                })
                .collect(),
        ),
        Some(Value::StringValueStrindex(i)) => Any::Strindex(*i),
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
