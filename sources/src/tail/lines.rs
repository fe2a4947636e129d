//! From bytes of a file to log records: line framing (with long lines cut) and the assembly
//! of records from lines (CRI partial lines, docker json-file pieces, multiline groups).
//!
//! Both steps keep only the state that a checkpoint can carry: a reader that resumes at a
//! committed offset starts with no half-built record, because a checkpoint is only ever taken
//! where no record is half built (see [`Assembler::safe_offset`]). The one state that crosses
//! a checkpoint is "discard until the end of the current line / record", after a cut.

use chrono::DateTime;
use regex::Regex;
use serde::Deserialize;

/// How the lines of a file are written.
#[derive(Debug, Clone)]
pub enum Format {
    /// One record per line, or per group of lines when `multiline_start` is set.
    Plain {
        /// A line matching this starts a record; the lines that do not are appended to it.
        multiline_start: Option<Regex>,
        /// Parse a leading RFC 3339 / `YYYY-MM-DD HH:MM:SS[.f]` timestamp as the record's time.
        parse_timestamp: bool,
    },
    /// Container logs: CRI or docker json-file, whichever the first line of the file is.
    Container,
}

/// The output stream of a container line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    /// The `log.iostream` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// Parses `stdout` / `stderr`.
    pub fn parse(s: &str) -> Option<Stream> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// One log record read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The time the line carries, unix nanoseconds.
    pub time: Option<i64>,
    /// Container output stream.
    pub stream: Option<Stream>,
    /// The message (invalid UTF-8 replaced).
    pub body: String,
    /// Cut at `max_line_bytes`.
    pub truncated: bool,
    /// A piece of a longer line whose other pieces are in other records (a container wrote
    /// pieces of lines to stdout and stderr interleaved).
    pub partial: bool,
    /// Why the line did not parse in the file's format (kept as the raw line).
    pub parse_error: Option<&'static str>,
}

/// Splits bytes into lines. A line longer than `max` is cut: its first `max` bytes are
/// delivered (flagged), the rest up to the next newline is discarded, across reads.
#[derive(Debug, Clone)]
pub struct Framer {
    max: usize,
    /// Discarding the rest of a line that was cut.
    pub skipping: bool,
}

/// One framed line: its bytes (no newline) and the file offsets it spans.
#[derive(Debug)]
pub struct Line<'a> {
    /// The bytes, without the trailing `\n` (and `\r`).
    pub bytes: &'a [u8],
    /// Offset of its first byte.
    pub start: u64,
    /// Offset after its newline.
    pub end: u64,
    /// Cut at the limit (the rest of the line is discarded).
    pub cut: bool,
}

impl Framer {
    /// A framer cutting lines at `max` bytes, resuming in the given skip state.
    pub fn new(max: usize, skipping: bool) -> Framer {
        Framer { max, skipping }
    }

    /// Frames `buf`, which starts at file offset `at`: calls `f` for each complete line and
    /// returns how many bytes were consumed (the rest is an unterminated line shorter than
    /// the limit, to be read again with more bytes). `eof_final` delivers an unterminated
    /// rest as a line too (a file that will not grow any more).
    pub fn frame(
        &mut self,
        buf: &[u8],
        at: u64,
        eof_final: bool,
        mut f: impl FnMut(Line<'_>),
    ) -> usize {
        let mut pos = 0usize;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let nl = memchr(rest);
            if self.skipping {
                match nl {
                    Some(i) => {
                        self.skipping = false;
                        pos += i + 1;
                        continue;
                    }
                    None => return buf.len(),
                }
            }
            match nl {
                Some(i) if i <= self.max => {
                    let mut line = &rest[..i];
                    if line.last() == Some(&b'\r') {
                        line = &line[..line.len() - 1];
                    }
                    f(Line {
                        bytes: line,
                        start: at + pos as u64,
                        end: at + (pos + i + 1) as u64,
                        cut: false,
                    });
                    pos += i + 1;
                }
                _ if rest.len() > self.max => {
                    // Longer than the limit: deliver the first part, discard the rest.
                    f(Line {
                        bytes: &rest[..self.max],
                        start: at + pos as u64,
                        end: at + (pos + self.max) as u64,
                        cut: true,
                    });
                    self.skipping = true;
                    pos += self.max;
                }
                _ if eof_final => {
                    f(Line {
                        bytes: rest,
                        start: at + pos as u64,
                        end: at + buf.len() as u64,
                        cut: false,
                    });
                    return buf.len();
                }
                _ => return pos,
            }
        }
        pos
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detected {
    Cri,
    Docker,
}

/// A record being built from several lines.
#[derive(Debug)]
struct Pending {
    /// Offset of its first line: where a reader resumes if it is not finished.
    start: u64,
    time: Option<i64>,
    stream: Option<Stream>,
    body: Vec<u8>,
    truncated: bool,
}

/// Builds records from lines.
#[derive(Debug)]
pub struct Assembler {
    format: Format,
    detected: Option<Detected>,
    max: usize,
    pending: Option<Pending>,
    /// Discarding the rest of a record that was cut: CRI `P` pieces up to the `F` one, docker
    /// pieces up to the one ending in a newline (of `skip_stream` only, when set), or, for
    /// multiline groups, lines up to the next start line.
    pub skipping: bool,
    /// The stream whose pieces are discarded (containers).
    pub skip_stream: Option<Stream>,
}

impl Assembler {
    /// An assembler cutting records at `max` bytes, resuming in the given skip state.
    pub fn new(
        format: Format,
        max: usize,
        skipping: bool,
        skip_stream: Option<Stream>,
    ) -> Assembler {
        Assembler {
            format,
            detected: None,
            max,
            pending: None,
            skipping,
            skip_stream,
        }
    }

    /// The format detected from the first line (containers), to keep for the file.
    pub fn detected_docker(&self) -> Option<bool> {
        self.detected.map(|d| d == Detected::Docker)
    }

    /// Starts with the format detected earlier in the same file.
    pub fn with_detected(mut self, docker: Option<bool>) -> Assembler {
        self.detected = docker.map(|d| if d { Detected::Docker } else { Detected::Cri });
        self
    }

    /// Emits the record being built cut, and discards the rest of it: a record whose pieces
    /// span more bytes than a reader may hold back.
    pub fn cut_pending(&mut self, out: &mut impl FnMut(Record)) {
        if let Some(p) = self.pending.take() {
            self.skipping = true;
            self.skip_stream = p.stream;
            out(finish(p, Some(true)));
        }
    }

    /// Where a reader must resume to rebuild what is not emitted yet: the first line of the
    /// record being built, or `framed` (the end of the last framed line) when none is.
    pub fn safe_offset(&self, framed: u64) -> u64 {
        self.pending.as_ref().map_or(framed, |p| p.start)
    }

    /// Whether a record is being built.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Emits the record being built, as it is (the file stopped growing).
    pub fn flush(&mut self, out: &mut impl FnMut(Record)) {
        if let Some(p) = self.pending.take() {
            out(finish(p, None));
        }
    }

    /// Feeds one framed line.
    pub fn feed(&mut self, line: &Line<'_>, out: &mut impl FnMut(Record)) {
        match &self.format {
            Format::Plain { .. } => {
                // Borrowed out and back: the regex keeps its match cache across lines.
                let format = std::mem::replace(&mut self.format, Format::Container);
                if let Format::Plain {
                    multiline_start,
                    parse_timestamp,
                } = &format
                {
                    self.feed_plain(line, multiline_start.as_ref(), *parse_timestamp, out);
                }
                self.format = format;
            }
            Format::Container => {
                let detected = *self
                    .detected
                    .get_or_insert(if line.bytes.first() == Some(&b'{') {
                        Detected::Docker
                    } else {
                        Detected::Cri
                    });
                match detected {
                    Detected::Cri => self.feed_cri(line, out),
                    Detected::Docker => self.feed_docker(line, out),
                }
            }
        }
    }

    fn feed_plain(
        &mut self,
        line: &Line<'_>,
        start: Option<&Regex>,
        parse_ts: bool,
        out: &mut impl FnMut(Record),
    ) {
        let text = String::from_utf8_lossy(line.bytes);
        let Some(start) = start else {
            out(Record {
                time: parse_ts.then(|| leading_timestamp(&text)).flatten(),
                stream: None,
                body: text.into_owned(),
                truncated: line.cut,
                partial: false,
                parse_error: None,
            });
            return;
        };
        let begins = start.is_match(&text);
        if self.skipping {
            // The rest of a group that was emitted cut: up to the next start line.
            if !begins {
                return;
            }
            self.skipping = false;
        }
        match &mut self.pending {
            Some(p) if !begins => {
                let room = self.max.saturating_sub(p.body.len() + 1);
                let take = line.bytes.len().min(room);
                if take > 0 {
                    p.body.push(b'\n');
                    p.body.extend_from_slice(&line.bytes[..take]);
                }
                if take < line.bytes.len() || line.cut {
                    // Full: emit it cut now, and discard its other lines.
                    self.cut_pending(out);
                }
            }
            _ => {
                if let Some(p) = self.pending.take() {
                    out(finish(p, None));
                }
                self.pending = Some(Pending {
                    start: line.start,
                    time: parse_ts.then(|| leading_timestamp(&text)).flatten(),
                    stream: None,
                    body: line.bytes.to_vec(),
                    truncated: false,
                });
                if line.cut {
                    self.cut_pending(out);
                }
            }
        }
    }

    /// `<RFC3339Nano> <stdout|stderr> <P|F>[:more tags] <message>`.
    fn feed_cri(&mut self, line: &Line<'_>, out: &mut impl FnMut(Record)) {
        let parsed = parse_cri(line.bytes);
        let Some((time, stream, partial, msg)) = parsed else {
            // Not CRI: keep the raw line, do not lose it.
            self.raw(line, "not a CRI log line", out);
            return;
        };
        // A piece cut by the framer is emitted cut; the framer discards the rest of its line,
        // and the record's later pieces are skipped if its tag said more follow.
        self.piece(line.start, time, Some(stream), msg, partial, line.cut, out);
    }

    /// `{"log":"...","stream":"stdout","time":"..."}`; a `log` not ending in a newline is a
    /// piece of a longer line (docker splits lines at 16 KiB).
    fn feed_docker(&mut self, line: &Line<'_>, out: &mut impl FnMut(Record)) {
        #[derive(Deserialize)]
        struct DockerLine<'a> {
            #[serde(borrow)]
            log: std::borrow::Cow<'a, str>,
            #[serde(default)]
            stream: Option<&'a str>,
            #[serde(default)]
            time: Option<&'a str>,
        }
        let parsed = if line.cut {
            None
        } else {
            serde_json::from_slice::<DockerLine<'_>>(line.bytes).ok()
        };
        let Some(d) = parsed else {
            // Not docker json, or an over-long line that cannot be parsed: keep it raw.
            let why = if line.cut {
                "docker json line longer than max_line_bytes"
            } else {
                "not a docker json-file line"
            };
            self.raw(line, why, out);
            return;
        };
        let time = d
            .time
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| t.timestamp_nanos_opt());
        let stream = d.stream.and_then(Stream::parse);
        let (msg, partial) = match d.log.strip_suffix('\n') {
            Some(m) => (m.strip_suffix('\r').unwrap_or(m), false),
            None => (&*d.log, true),
        };
        self.piece(
            line.start,
            time,
            stream,
            msg.as_bytes(),
            partial,
            false,
            out,
        );
    }

    /// Emits a line that is not in the file's format as it is (after the record being built).
    fn raw(&mut self, line: &Line<'_>, why: &'static str, out: &mut impl FnMut(Record)) {
        if let Some(p) = self.pending.take() {
            out(finish(p, None));
        }
        out(Record {
            time: None,
            stream: None,
            body: String::from_utf8_lossy(line.bytes).into_owned(),
            truncated: line.cut,
            partial: false,
            parse_error: Some(why),
        });
    }

    /// Adds one piece of a container line; `partial` pieces wait for the rest.
    #[allow(clippy::too_many_arguments)]
    fn piece(
        &mut self,
        start: u64,
        time: Option<i64>,
        stream: Option<Stream>,
        msg: &[u8],
        partial: bool,
        cut: bool,
        out: &mut impl FnMut(Record),
    ) {
        if self.skipping && (self.skip_stream.is_none() || self.skip_stream == stream) {
            // The rest of a record already emitted cut: its last piece ends the skip.
            if !partial {
                self.skipping = false;
                self.skip_stream = None;
            }
            return;
        }
        if self.pending.as_ref().is_some_and(|p| p.stream != stream) {
            // The other stream's pieces interleave with this one's: a record never mixes
            // the two, so the unfinished one is emitted as it is, marked partial.
            if let Some(p) = self.pending.take() {
                let mut r = finish(p, None);
                r.partial = true;
                out(r);
            }
        }
        let p = self.pending.get_or_insert_with(|| Pending {
            start,
            time,
            stream,
            body: Vec::new(),
            truncated: false,
        });
        let room = self.max.saturating_sub(p.body.len());
        let take = msg.len().min(room);
        p.body.extend_from_slice(&msg[..take]);
        let over = take < msg.len() || cut;
        if over {
            // Full: emit it cut, and discard the rest of the record if more pieces follow.
            if let Some(p) = self.pending.take() {
                out(finish(p, Some(true)));
            }
            self.skipping = partial;
            self.skip_stream = if partial { stream } else { None };
            return;
        }
        if !partial {
            if let Some(p) = self.pending.take() {
                out(finish(p, None));
            }
        }
    }
}

fn finish(p: Pending, truncated: Option<bool>) -> Record {
    Record {
        time: p.time,
        stream: p.stream,
        body: match String::from_utf8(p.body) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        },
        truncated: truncated.unwrap_or(p.truncated),
        partial: false,
        parse_error: None,
    }
}

/// Splits a CRI line into time, stream, whether it is partial, and the message.
fn parse_cri(b: &[u8]) -> Option<(Option<i64>, Stream, bool, &[u8])> {
    let mut parts = b.splitn(4, |&c| c == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = Stream::parse(std::str::from_utf8(parts.next()?).ok()?)?;
    let tags = parts.next()?;
    let msg = parts.next().unwrap_or(&[]);
    let partial = match tags.split(|&c| c == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let time = DateTime::parse_from_rfc3339(ts)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt());
    time?;
    Some((time, stream, partial, msg))
}

/// A timestamp at the start of a line: RFC 3339 (`2024-05-01T10:00:00.123Z`) or
/// `2024-05-01 10:00:00[.123]` (read as UTC).
pub fn leading_timestamp(line: &str) -> Option<i64> {
    let first = line.split([' ', '\t']).next()?;
    if let Ok(t) = DateTime::parse_from_rfc3339(first.trim_end_matches([',', ':'])) {
        return t.timestamp_nanos_opt();
    }
    let two: String = line.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ");
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(two.trim_end_matches([',', ':']), fmt)
        {
            return t.and_utc().timestamp_nanos_opt();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: Format, max: usize, input: &[u8]) -> (Vec<Record>, u64) {
        let mut framer = Framer::new(max, false);
        let mut asm = Assembler::new(format, max, false, None);
        let mut out = Vec::new();
        let mut framed = 0;
        let used = framer.frame(input, 0, false, |l| {
            framed = l.end;
            asm.feed(&l, &mut |r| out.push(r));
        });
        assert_eq!(used as u64, framed.max(used as u64));
        (out, asm.safe_offset(framed))
    }

    const TS: &str = "2024-05-01T10:00:00.123456789Z";

    #[test]
    fn cri_partial_lines_merge_and_the_time_comes_from_the_line() {
        let input = format!(
            "{TS} stdout P hello \n{TS} stdout P big \n{TS} stdout F world\n{TS} stderr F oops\n{TS} stdout P unfinished\n"
        );
        let (out, safe) = run(Format::Container, 1 << 10, input.as_bytes());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].body, "hello big world");
        assert_eq!(out[0].stream, Some(Stream::Stdout));
        assert_eq!(out[0].time, Some(1_714_557_600_123_456_789));
        assert_eq!(out[1].body, "oops");
        assert_eq!(out[1].stream, Some(Stream::Stderr));
        // The unfinished record is read again from its first piece.
        let unfinished = input.find(&format!("{TS} stdout P unfinished")).unwrap();
        assert_eq!(safe, unfinished as u64);
    }

    #[test]
    fn cri_record_over_the_cap_is_cut_and_its_rest_skipped() {
        let input = format!(
            "{TS} stdout P aaaaaaaaaa\n{TS} stdout P bbbbbbbbbb\n{TS} stdout P cccccccccc\n{TS} stdout F dddd\n{TS} stdout F next\n"
        );
        let mut framer = Framer::new(1 << 10, false);
        let mut asm = Assembler::new(Format::Container, 15, false, None);
        let mut out = Vec::new();
        framer.frame(input.as_bytes(), 0, false, |l| {
            asm.feed(&l, &mut |r| out.push(r))
        });
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].body, "aaaaaaaaaabbbbb");
        assert!(out[0].truncated);
        assert_eq!(out[1].body, "next");
        assert!(!out[1].truncated);
        assert!(!asm.skipping);
    }

    #[test]
    fn docker_json_pieces_merge() {
        let input = concat!(
            r#"{"log":"first half ","stream":"stdout","time":"2024-05-01T10:00:00.5Z"}"#,
            "\n",
            r#"{"log":"second half\n","stream":"stdout","time":"2024-05-01T10:00:00.6Z"}"#,
            "\n",
            r#"{"log":"err line\n","stream":"stderr","time":"2024-05-01T10:00:01Z"}"#,
            "\n"
        );
        let (out, safe) = run(Format::Container, 1 << 10, input.as_bytes());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].body, "first half second half");
        assert_eq!(out[0].time, Some(1_714_557_600_500_000_000));
        assert_eq!(out[1].stream, Some(Stream::Stderr));
        assert_eq!(safe, input.len() as u64);
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_skipped_across_reads() {
        let mut framer = Framer::new(8, false);
        let mut lines = Vec::new();
        let used = framer.frame(b"0123456789abcdef", 0, false, |l| {
            lines.push((l.bytes.to_vec(), l.cut))
        });
        assert_eq!(used, 16);
        assert!(framer.skipping);
        // The next read continues the skip up to the newline.
        let used = framer.frame(b"ghij\nok\npart", 16, false, |l| {
            lines.push((l.bytes.to_vec(), l.cut))
        });
        assert_eq!(used, 8, "the unterminated `part` is left for the next read");
        assert_eq!(
            lines,
            vec![(b"01234567".to_vec(), true), (b"ok".to_vec(), false)]
        );
    }

    #[test]
    fn multiline_groups_by_start_pattern() {
        let format = Format::Plain {
            multiline_start: Some(Regex::new(r"^\d{4}-").unwrap()),
            parse_timestamp: true,
        };
        let input =
            "2024-05-01 10:00:00 first\n  at a\n  at b\n2024-05-01 10:00:01 second\n  at c\n";
        let (out, safe) = run(format, 1 << 10, input.as_bytes());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].body, "2024-05-01 10:00:00 first\n  at a\n  at b");
        assert_eq!(out[0].time, Some(1_714_557_600_000_000_000));
        assert_eq!(safe, input.find("2024-05-01 10:00:01").unwrap() as u64);
    }

    #[test]
    fn pieces_of_stdout_and_stderr_never_mix() {
        let input = format!(
            "{TS} stdout P aaa\n{TS} stderr F oops\n{TS} stdout P bbb\n{TS} stdout F ccc\n"
        );
        let (out, safe) = run(Format::Container, 1 << 10, input.as_bytes());
        let got: Vec<_> = out
            .iter()
            .map(|r| (r.body.as_str(), r.stream, r.partial))
            .collect();
        assert_eq!(
            got,
            vec![
                ("aaa", Some(Stream::Stdout), true),
                ("oops", Some(Stream::Stderr), false),
                ("bbbccc", Some(Stream::Stdout), false),
            ]
        );
        assert_eq!(safe, input.len() as u64);
    }

    #[test]
    fn a_full_multiline_group_is_emitted_cut_and_its_rest_skipped() {
        let format = Format::Plain {
            multiline_start: Some(Regex::new(r"^START").unwrap()),
            parse_timestamp: false,
        };
        let input = "START one\n  aaaaaaaaaa\n  bbbbbbbbbb\n  cccccccccc\nSTART two\n";
        let (out, safe) = run(format, 20, input.as_bytes());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].body, "START one\n  aaaaaaaa");
        assert!(out[0].truncated);
        // `START two` is pending: read again from it.
        assert_eq!(safe, input.find("START two").unwrap() as u64);
    }

    #[test]
    fn garbage_in_a_cri_file_is_kept_raw() {
        let input = format!("{TS} stdout F ok\nnot cri at all\n");
        let (out, _) = run(Format::Container, 1 << 10, input.as_bytes());
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].body, "not cri at all");
        assert_eq!(out[1].parse_error, Some("not a CRI log line"));
    }
}
