//! Human-readable sizes and durations of the configuration (`"64MiB"`, `"4Gi"`, `"60s"`).
//!
//! Both accept the forms Kubernetes users write: sizes in SI (`1G`, `10MB`) and binary units
//! (`4Gi`, `512MiB`) or a plain number of bytes; durations with a unit (`500ms`, `30s`, `5m`,
//! `1h 30m`) or a plain number of seconds (`30`, `"30"`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes, written as `123`, `"64KiB"`, `"16MiB"`, `"4Gi"`, `"1GiB"`, `"10MB"`, `"1G"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a human-readable size.
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (like 512Mi, 16MiB, 4Gi, 1GB)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "ki" | "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mi" | "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gi" | "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "ti" | "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?} (use B, Ki, Mi, Gi, Ti, KiB, MiB, GiB, K, M, G, KB, MB, GB)"
                ))
            }
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if v >= m && v.is_multiple_of(m) {
                return write!(f, "{}{unit}", v / m);
            }
        }
        write!(f, "{v}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size such as 512Mi, 16MiB, 4Gi or 1GB, or a number of bytes")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
        u64::try_from(n)
            .map(ByteSize)
            .map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<ByteSize, E> {
        if n.is_finite() && n >= 0.0 && n.fract() == 0.0 {
            Ok(ByteSize(n as u64))
        } else {
            Err(E::invalid_value(Unexpected::Float(n), &self))
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
        ByteSize::parse(s).map_err(E::custom)
    }
}

/// A duration, written as `"500ms"`, `"60s"`, `"5m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl HumanDuration {
    /// Parses a duration: a number with units (`500ms`, `30s`, `5m`, `1h 30m`) or a plain
    /// number of seconds (`30`).
    pub fn parse(s: &str) -> Result<HumanDuration, String> {
        let t = s.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t
                .parse::<u64>()
                .map(|n| HumanDuration(Duration::from_secs(n)))
                .map_err(|e| format!("{s:?} is not a duration: {e}"));
        }
        humantime::parse_duration(t)
            .map(HumanDuration)
            .map_err(|e| {
                format!("{s:?} is not a duration (like 500ms, 30s, 5m, or 30 for seconds): {e}")
            })
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = HumanDuration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as 500ms, 30s or 5m, or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<HumanDuration, E> {
        Ok(HumanDuration(Duration::from_secs(n)))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumanDuration, E> {
        u64::try_from(n)
            .map(|n| HumanDuration(Duration::from_secs(n)))
            .map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<HumanDuration, E> {
        Duration::try_from_secs_f64(n)
            .map(HumanDuration)
            .map_err(|_| E::invalid_value(Unexpected::Float(n), &self))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
        HumanDuration::parse(s).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(ByteSize::parse("16MiB").unwrap(), ByteSize(16 << 20));
        assert_eq!(ByteSize::parse("1.5 KiB").unwrap(), ByteSize(1536));
        assert_eq!(ByteSize::parse("10MB").unwrap(), ByteSize(10_000_000));
        assert_eq!(ByteSize::parse("42").unwrap(), ByteSize(42));
        assert!(ByteSize::parse("12 parsecs")
            .unwrap_err()
            .contains("unknown size unit"));
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }

    /// The forms Kubernetes resource quantities use.
    #[test]
    fn kubernetes_quantities() {
        assert_eq!(ByteSize::parse("4Gi").unwrap(), ByteSize(4 << 30));
        assert_eq!(ByteSize::parse("512Mi").unwrap(), ByteSize(512 << 20));
        assert_eq!(ByteSize::parse("64Ki").unwrap(), ByteSize(64 << 10));
        assert_eq!(ByteSize::parse("1Ti").unwrap(), ByteSize(1 << 40));
        assert_eq!(ByteSize::parse("1G").unwrap(), ByteSize(1_000_000_000));
        assert_eq!(ByteSize::parse("500M").unwrap(), ByteSize(500_000_000));
        assert!(ByteSize::parse("-1Gi").is_err());
        assert!(ByteSize::parse("Gi").is_err());
    }

    #[test]
    fn durations_take_units_or_seconds() {
        let secs = |s: &str| HumanDuration::parse(s).map(|d| d.0);
        assert_eq!(secs("30"), Ok(Duration::from_secs(30)));
        assert_eq!(secs(" 30 "), Ok(Duration::from_secs(30)));
        assert_eq!(secs("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(secs("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(secs("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(secs("soon").unwrap_err().contains("is not a duration"));
        assert!(secs("").is_err());
        assert!(secs("-5").is_err());
    }

    /// Numbers and strings both deserialize, and a wrong type says what was expected.
    #[test]
    fn deserialize_numbers_and_strings() {
        use serde::de::value::{Error, StrDeserializer, U64Deserializer};
        use serde::de::IntoDeserializer;
        let n: U64Deserializer<Error> = 30u64.into_deserializer();
        assert_eq!(
            HumanDuration::deserialize(n).unwrap().0,
            Duration::from_secs(30)
        );
        let n: U64Deserializer<Error> = 4096u64.into_deserializer();
        assert_eq!(ByteSize::deserialize(n).unwrap(), ByteSize(4096));
        let s: StrDeserializer<Error> = "4Gi".into_deserializer();
        assert_eq!(ByteSize::deserialize(s).unwrap(), ByteSize(4 << 30));
        let s: StrDeserializer<Error> = "2m".into_deserializer();
        assert_eq!(
            HumanDuration::deserialize(s).unwrap().0,
            Duration::from_secs(120)
        );
        let b: serde::de::value::BoolDeserializer<Error> = true.into_deserializer();
        let err = ByteSize::deserialize(b).unwrap_err().to_string();
        assert!(err.contains("expected a size such as 512Mi"), "{err}");
        let b: serde::de::value::BoolDeserializer<Error> = true.into_deserializer();
        let err = HumanDuration::deserialize(b).unwrap_err().to_string();
        assert!(err.contains("expected a duration such as 500ms"), "{err}");
    }
}
