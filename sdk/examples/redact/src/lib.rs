//! `redact`: masks personal data in log bodies and string attributes, without regexes.
//!
//! Config (all optional): `{"emails": true, "cards": true, "ips": true, "mask": "[REDACTED]",
//! "patterns": ["literal", ...]}`. Card numbers are 13-19 digits (spaces or dashes allowed
//! between them) that pass the Luhn check, so order ids and timestamps stay readable.

use serde::Deserialize;
use weir_sdk::{export, Error, Logs, Transform};

/// The transform's configuration.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Mask email addresses.
    pub emails: bool,
    /// Mask payment card numbers (Luhn-checked).
    pub cards: bool,
    /// Mask IPv4 addresses.
    pub ips: bool,
    /// What replaces a match.
    pub mask: String,
    /// Literal strings to mask wherever they appear.
    pub patterns: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            emails: true,
            cards: true,
            ips: true,
            mask: "[REDACTED]".into(),
            patterns: Vec::new(),
        }
    }
}

/// The transform.
pub struct Redact {
    cfg: Config,
}

fn is_email_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// Byte ranges of email addresses in `s`.
fn emails(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    for (at, _) in s.match_indices('@') {
        let mut start = at;
        while start > 0 && is_email_char(b[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'.' || b[end] == b'-')
        {
            end += 1;
        }
        while end > at + 1 && b[end - 1] == b'.' {
            end -= 1;
        }
        let domain = &s[at + 1..end];
        let tld_ok = domain.rsplit_once('.').is_some_and(|(host, tld)| {
            !host.is_empty() && tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic())
        });
        if start < at && tld_ok {
            out.push((start, end));
        }
    }
    out
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = (*d - b'0') as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Byte ranges of Luhn-valid card numbers in `s`.
fn cards(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && b[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let start = i;
        let mut digits = Vec::new();
        let mut end = i;
        while end < b.len()
            && (b[end].is_ascii_digit()
                || ((b[end] == b' ' || b[end] == b'-')
                    && end + 1 < b.len()
                    && b[end + 1].is_ascii_digit()))
        {
            if b[end].is_ascii_digit() {
                digits.push(b[end]);
            }
            end += 1;
        }
        let bounded = end == b.len() || !b[end].is_ascii_alphanumeric();
        if bounded && (13..=19).contains(&digits.len()) && luhn(&digits) {
            out.push((start, end));
        }
        i = end.max(i + 1);
    }
    out
}

/// Byte ranges of IPv4 addresses in `s`.
fn ipv4s(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit()
            || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
        {
            i += 1;
            continue;
        }
        let start = i;
        let mut parts = 0;
        let mut j = i;
        loop {
            let p = j;
            while j < b.len() && b[j].is_ascii_digit() && j - p < 3 {
                j += 1;
            }
            let ok = j > p && s[p..j].parse::<u16>().is_ok_and(|v| v <= 255);
            if !ok {
                break;
            }
            parts += 1;
            if parts == 4 || j >= b.len() || b[j] != b'.' {
                break;
            }
            j += 1;
        }
        let bounded = j == b.len() || !(b[j].is_ascii_alphanumeric() || b[j] == b'.');
        if parts == 4 && bounded {
            out.push((start, j));
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

impl Redact {
    /// The text with every match masked; `None` when nothing matched.
    pub fn redact(&self, s: &str) -> Option<String> {
        let mut ranges = Vec::new();
        if self.cfg.emails {
            ranges.extend(emails(s));
        }
        if self.cfg.cards {
            ranges.extend(cards(s));
        }
        if self.cfg.ips {
            ranges.extend(ipv4s(s));
        }
        for p in self.cfg.patterns.iter().filter(|p| !p.is_empty()) {
            ranges.extend(s.match_indices(p.as_str()).map(|(i, m)| (i, i + m.len())));
        }
        if ranges.is_empty() {
            return None;
        }
        ranges.sort();
        let mut out = String::with_capacity(s.len());
        let mut pos = 0;
        for (a, b) in ranges {
            if b <= pos {
                continue;
            }
            out.push_str(&s[pos..a.max(pos)]);
            out.push_str(&self.cfg.mask);
            pos = b;
        }
        out.push_str(&s[pos..]);
        Some(out)
    }
}

impl Transform for Redact {
    type Config = Config;

    fn new(cfg: Config) -> Result<Self, Error> {
        Ok(Redact { cfg })
    }

    fn logs(&mut self, logs: &mut Logs) -> Result<(), Error> {
        logs.update_body(|r| r.body().and_then(|b| self.redact(b)))?;
        logs.update_attributes(|_, attrs| {
            for (_, v) in attrs.iter_mut() {
                if let Some(new) = v.as_deref().and_then(|s| self.redact(s)) {
                    *v = Some(new);
                }
            }
        })
    }
}

export!(Redact);

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cfg: &str) -> Redact {
        weir_sdk::abi::init::<Redact>(cfg.as_bytes()).unwrap()
    }

    #[test]
    fn finds_what_it_should_and_nothing_else() {
        let t = r("{}");
        assert_eq!(
            t.redact("mail jane.doe+x@example.co.uk now").unwrap(),
            "mail [REDACTED] now"
        );
        assert_eq!(
            t.redact("card 4111 1111 1111 1111 ok").unwrap(),
            "card [REDACTED] ok"
        );
        assert_eq!(
            t.redact("card 4111-1111-1111-1111").unwrap(),
            "card [REDACTED]"
        );
        assert_eq!(
            t.redact("from 10.0.12.255:443").unwrap(),
            "from [REDACTED]:443"
        );
        // Not Luhn-valid, not an address, not an email.
        assert_eq!(
            t.redact("order 4111111111111112 at 1700000000000 v1.2.3.4.5 a@b"),
            None
        );
        assert_eq!(t.redact("version 1.2.3 and 300.1.1.1"), None);
        let t = r(r#"{"patterns": ["secret-token"], "mask": "*", "ips": false}"#);
        assert_eq!(
            t.redact("x secret-token y 1.2.3.4").unwrap(),
            "x * y 1.2.3.4"
        );
    }

    #[test]
    fn config_errors_are_reported() {
        assert!(weir_sdk::abi::init::<Redact>(br#"{"emails": "yes"}"#).is_err());
    }
}
