//! RFC 5424 and RFC 3164 syslog parsing.
//!
//! A line that has no valid header is not dropped: the caller keeps it as the raw body with
//! a `syslog.parse_error` attribute.

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Utc};

/// Which header a message had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`).
    Rfc5424,
    /// RFC 3164 / BSD (`<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`).
    Rfc3164,
}

/// A parsed syslog message borrowing from its line.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<'a> {
    /// Header format.
    pub format: Format,
    /// Facility (0-23).
    pub facility: u8,
    /// Severity (0-7).
    pub severity: u8,
    /// Timestamp, unix nanoseconds, if the message had one.
    pub timestamp: Option<i64>,
    /// HOSTNAME.
    pub hostname: Option<&'a str>,
    /// APP-NAME (RFC 3164: the TAG).
    pub app_name: Option<&'a str>,
    /// PROCID (RFC 3164: the PID in brackets).
    pub proc_id: Option<&'a str>,
    /// MSGID (RFC 5424 only).
    pub msg_id: Option<&'a str>,
    /// Structured data: (SD-ID, [(PARAM-NAME, PARAM-VALUE)]), values unescaped.
    pub structured_data: Vec<(&'a str, Vec<(&'a str, String)>)>,
    /// MSG.
    pub message: &'a str,
}

/// Why a line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No `<PRI>` at the start.
    #[error("no <PRI> at the start of the message")]
    NoPriority,
    /// `<PRI>` out of range.
    #[error("priority {0} is above 191")]
    BadPriority(u32),
    /// A header field is malformed.
    #[error("{0}")]
    Header(String),
}

/// Severity names of RFC 5424, by severity code.
pub const SEVERITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// OTel severity numbers by syslog severity code (OTel logs data model mapping).
pub const OTEL_SEVERITY: [i32; 8] = [22, 21, 18, 17, 13, 10, 9, 5];

/// Facility names by facility code.
pub const FACILITY_NAMES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

fn nil(s: &str) -> Option<&str> {
    if s == "-" || s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// Splits off the `<PRI>` prefix: (facility, severity, rest).
pub fn priority(line: &str) -> Result<(u8, u8, &str), ParseError> {
    let rest = line.strip_prefix('<').ok_or(ParseError::NoPriority)?;
    let end = rest
        .find('>')
        .filter(|&e| (1..=3).contains(&e))
        .ok_or(ParseError::NoPriority)?;
    let pri: u32 = rest[..end].parse().map_err(|_| ParseError::NoPriority)?;
    if pri > 191 {
        return Err(ParseError::BadPriority(pri));
    }
    Ok(((pri / 8) as u8, (pri % 8) as u8, &rest[end + 1..]))
}

/// Parses one message. `now` dates RFC 3164 timestamps, which have no year.
pub fn parse(line: &str, now: DateTime<Utc>) -> Result<Message<'_>, ParseError> {
    let (facility, severity, rest) = priority(line)?;
    if let Some(after) = rest.strip_prefix("1 ") {
        return parse_5424(facility, severity, after);
    }
    parse_3164(facility, severity, rest, now)
}

fn field<'a>(rest: &mut &'a str, name: &str) -> Result<&'a str, ParseError> {
    let r = *rest;
    let (f, tail) = match r.find(' ') {
        Some(i) => (&r[..i], &r[i + 1..]),
        None => (r, ""),
    };
    if f.is_empty() {
        return Err(ParseError::Header(format!("missing {name}")));
    }
    *rest = tail;
    Ok(f)
}

fn parse_5424(facility: u8, severity: u8, mut rest: &str) -> Result<Message<'_>, ParseError> {
    let ts = field(&mut rest, "TIMESTAMP")?;
    let timestamp = match ts {
        "-" => None,
        t => Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|e| ParseError::Header(format!("TIMESTAMP {t:?} is not RFC 3339: {e}")))?
                .timestamp_nanos_opt()
                .ok_or_else(|| ParseError::Header(format!("TIMESTAMP {t:?} is out of range")))?,
        ),
    };
    let hostname = nil(field(&mut rest, "HOSTNAME")?);
    let app_name = nil(field(&mut rest, "APP-NAME")?);
    let proc_id = nil(field(&mut rest, "PROCID")?);
    let msg_id = nil(field(&mut rest, "MSGID")?);
    let (structured_data, msg) = structured(rest)?;
    let message = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    Ok(Message {
        format: Format::Rfc5424,
        facility,
        severity,
        timestamp,
        hostname,
        app_name,
        proc_id,
        msg_id,
        structured_data,
        message,
    })
}

type Sd<'a> = Vec<(&'a str, Vec<(&'a str, String)>)>;

fn structured(s: &str) -> Result<(Sd<'_>, &str), ParseError> {
    if let Some(rest) = s.strip_prefix('-') {
        return Ok((Vec::new(), rest.strip_prefix(' ').unwrap_or(rest)));
    }
    let bad = |m: &str| ParseError::Header(format!("STRUCTURED-DATA: {m}"));
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(r) = rest.strip_prefix('[') {
        let id_end = r
            .find([' ', ']'])
            .ok_or_else(|| bad("unterminated element"))?;
        let id = &r[..id_end];
        if id.is_empty() {
            return Err(bad("empty SD-ID"));
        }
        let mut r = &r[id_end..];
        let mut params = Vec::new();
        loop {
            r = r.trim_start_matches(' ');
            if let Some(after) = r.strip_prefix(']') {
                r = after;
                break;
            }
            let eq = r.find('=').ok_or_else(|| bad("parameter without ="))?;
            let name = &r[..eq];
            let after = r[eq + 1..]
                .strip_prefix('"')
                .ok_or_else(|| bad("parameter value not quoted"))?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e @ ('"' | '\\' | ']'))) => value.push(e),
                        Some((_, e)) => {
                            value.push('\\');
                            value.push(e);
                        }
                        None => break,
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| bad("unterminated parameter value"))?;
            params.push((name, value));
            r = &after[end + 1..];
        }
        out.push((id, params));
        rest = r;
    }
    if out.is_empty() {
        return Err(bad("expected - or ["));
    }
    Ok((out, rest.strip_prefix(' ').unwrap_or(rest)))
}

fn parse_3164<'a>(
    facility: u8,
    severity: u8,
    rest: &'a str,
    now: DateTime<Utc>,
) -> Result<Message<'a>, ParseError> {
    // "Mmm dd hh:mm:ss " (day padded with a space or a zero).
    let head = rest.get(..15).ok_or_else(|| {
        ParseError::Header("no RFC 5424 or RFC 3164 header after the priority".into())
    })?;
    let naive = NaiveDateTime::parse_from_str(
        &format!("{} {}", now.year(), head.replace("  ", " ")),
        "%Y %b %d %H:%M:%S",
    )
    .map_err(|_| ParseError::Header("no RFC 5424 or RFC 3164 header after the priority".into()))?;
    let mut ts = Utc.from_utc_datetime(&naive);
    // No year on the wire: a date more than a day ahead is from last year.
    if ts > now + chrono::Duration::days(1) {
        if let Some(prev) = naive.with_year(now.year() - 1) {
            ts = Utc.from_utc_datetime(&prev);
        }
    }
    let mut body = rest[15..].strip_prefix(' ').unwrap_or(&rest[15..]);
    // HOSTNAME, unless the next word is already the TAG (ends with ':' or has '[').
    let mut hostname = None;
    if let Some(sp) = body.find(' ') {
        let word = &body[..sp];
        if !word.ends_with(':') && !word.contains('[') {
            hostname = Some(word);
            body = &body[sp + 1..];
        }
    }
    let (mut app_name, mut proc_id, mut message) = (None, None, body);
    let tag_end = body.find([':', '[', ' ']).unwrap_or(0);
    if tag_end > 0 && tag_end <= 48 {
        let tag = &body[..tag_end];
        let mut after = &body[tag_end..];
        if let Some(p) = after.strip_prefix('[') {
            if let Some(close) = p.find(']') {
                proc_id = Some(&p[..close]);
                after = &p[close + 1..];
            }
        }
        if let Some(m) = after.strip_prefix(':') {
            app_name = Some(tag);
            message = m.strip_prefix(' ').unwrap_or(m);
        } else {
            proc_id = None;
        }
    }
    Ok(Message {
        format: Format::Rfc3164,
        facility,
        severity,
        timestamp: ts.timestamp_nanos_opt(),
        hostname,
        app_name,
        proc_id,
        msg_id: None,
        structured_data: Vec::new(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    #[test]
    fn rfc5424_with_structured_data() {
        let line = r#"<165>1 2026-11-22T10:00:00.123456Z host1 app 42 ID47 [exampleSDID@32473 iut="3" eventSource="Appl\"ication"][x@1 a="]"] hello world"#;
        let m = parse(line, now()).unwrap();
        assert_eq!((m.facility, m.severity), (20, 5));
        assert_eq!(m.timestamp, Some(1_795_341_600_123_456_000));
        assert_eq!(
            (m.hostname, m.app_name, m.proc_id, m.msg_id),
            (Some("host1"), Some("app"), Some("42"), Some("ID47"))
        );
        assert_eq!(m.structured_data[0].0, "exampleSDID@32473");
        assert_eq!(
            m.structured_data[0].1,
            vec![("iut", "3".into()), ("eventSource", "Appl\"ication".into())]
        );
        assert_eq!(m.structured_data[1].1, vec![("a", "]".into())]);
        assert_eq!(m.message, "hello world");
    }

    #[test]
    fn rfc5424_nil_values_and_bom() {
        let m = parse("<13>1 - - - - - - \u{feff}msg", now()).unwrap();
        assert_eq!((m.timestamp, m.hostname, m.app_name), (None, None, None));
        assert_eq!(m.message, "msg");
        let m = parse("<13>1 2026-11-22T10:00:00+02:00 h a - - -", now()).unwrap();
        assert_eq!(m.message, "");
        assert_eq!(m.timestamp, Some(1_795_334_400_000_000_000));
    }

    #[test]
    fn rfc3164_variants() {
        let m = parse("<13>Nov 22 05:55:12 myhost root[123]: hello there", now()).unwrap();
        assert_eq!(m.format, Format::Rfc3164);
        assert_eq!(
            (m.hostname, m.app_name, m.proc_id),
            (Some("myhost"), Some("root"), Some("123"))
        );
        assert_eq!(m.message, "hello there");
        assert_eq!(
            m.timestamp,
            Some(
                Utc.with_ymd_and_hms(2026, 11, 22, 5, 55, 12)
                    .unwrap()
                    .timestamp_nanos_opt()
                    .unwrap()
            )
        );
        let m = parse("<34>Oct  1 22:14:15 mymachine su: 'su root' failed", now()).unwrap();
        assert_eq!(
            (m.hostname, m.app_name, m.proc_id),
            (Some("mymachine"), Some("su"), None)
        );
        assert_eq!(m.message, "'su root' failed");
        // December seen in January is last year.
        let jan = Utc.with_ymd_and_hms(2027, 1, 1, 0, 10, 0).unwrap();
        let m = parse("<13>Dec 31 23:59:00 h t: x", jan).unwrap();
        assert_eq!(
            m.timestamp,
            Some(
                Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 0)
                    .unwrap()
                    .timestamp_nanos_opt()
                    .unwrap()
            )
        );
        // No hostname: the first word is the tag.
        let m = parse("<13>Nov 22 05:55:12 cron[9]: job", now()).unwrap();
        assert_eq!(
            (m.hostname, m.app_name, m.proc_id, m.message),
            (None, Some("cron"), Some("9"), "job")
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(parse("hello", now()), Err(ParseError::NoPriority));
        assert_eq!(parse("<999>x", now()), Err(ParseError::BadPriority(999)));
        assert_eq!(parse("<1234>x", now()), Err(ParseError::NoPriority));
        assert_eq!(parse("<200>x", now()), Err(ParseError::BadPriority(200)));
        assert!(parse("<13>just a message", now())
            .unwrap_err()
            .to_string()
            .contains("no RFC 5424 or RFC 3164 header"));
        assert!(parse("<13>1 yesterday h a - - - m", now())
            .unwrap_err()
            .to_string()
            .contains("not RFC 3339"));
        assert!(parse("<13>1 - h a - - [unterminated m", now())
            .unwrap_err()
            .to_string()
            .contains("STRUCTURED-DATA"));
    }
}
