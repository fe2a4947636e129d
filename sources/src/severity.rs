//! Severity names that log shippers put in labels or record keys, mapped to OTel numbers.

/// Keys that carry a level in Loki labels, Loki metadata and Fluent records.
pub const LEVEL_KEYS: [&str; 4] = ["level", "detected_level", "severity", "log_level"];

/// OTel severity number of a level name (0 when unknown): trace 1, debug 5, info/notice 9,
/// warn 13, error 17, critical 18, fatal/panic/alert/emergency 21.
pub fn severity_number(level: &str) -> i32 {
    match level.to_ascii_lowercase().as_str() {
        "trace" => 1,
        "debug" | "dbug" => 5,
        "info" | "information" | "notice" => 9,
        "warn" | "warning" => 13,
        "error" | "err" | "eror" => 17,
        "critical" | "crit" => 18,
        "fatal" | "panic" | "emerg" | "emergency" | "alert" => 21,
        _ => 0,
    }
}
