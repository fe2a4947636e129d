//! `[sources.<file source>.tail]`: how files are read, the same for every file source.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_pipelines::units::{ByteSize, HumanDuration};

use crate::contract::at_least;

/// Where reading starts in a file seen for the first time (one without a checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// From its first byte.
    #[default]
    Beginning,
    /// From its end, for files present when the agent starts; files that appear later are
    /// always read from their beginning.
    End,
}

/// How files are found and read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TailSettings {
    /// Where reading starts in a file without a checkpoint: `beginning` or `end`.
    pub start_at: StartAt,
    /// Files without a checkpoint last modified longer ago than this are not read (what they
    /// hold now is skipped; lines appended later are read). Unset: no limit.
    pub ignore_older: Option<HumanDuration>,
    /// How often the include patterns are expanded again to find new and rotated files.
    pub rescan_interval: HumanDuration,
    /// How often known files are checked for new lines.
    pub poll_interval: HumanDuration,
    /// Files kept open at once. Open files are what lets a rotated or deleted file be read to
    /// its end; past the cap, files are opened for each read and closed again.
    pub max_open_files: usize,
    /// Bytes read from one file per round before the others get their turn.
    pub max_read_bytes: ByteSize,
    /// Longest record: a longer line (or merged partial line, or multiline group) is cut here
    /// and carries `log.record.truncated = "true"`; the rest of it is discarded.
    pub max_line_bytes: ByteSize,
    /// Rows per batch written to the buffer (one buffer write and fsync per batch).
    pub max_batch_bytes: ByteSize,
    /// After a file was renamed or deleted, how long it is still read once it stops growing
    /// (a writer may still hold it open), before it is closed.
    pub rotate_wait: HumanDuration,
    /// How long an unfinished record (CRI/docker partial line, multiline group) waits at the
    /// end of a file that stopped growing before it is emitted as it is.
    pub merge_timeout: HumanDuration,
    /// Checkpoints of files that are gone are removed after this long.
    pub checkpoint_grace: HumanDuration,
}

impl Default for TailSettings {
    fn default() -> Self {
        TailSettings {
            start_at: StartAt::Beginning,
            ignore_older: None,
            rescan_interval: HumanDuration(Duration::from_secs(1)),
            poll_interval: HumanDuration(Duration::from_millis(250)),
            max_open_files: 1024,
            max_read_bytes: ByteSize(256 << 10),
            max_line_bytes: ByteSize(256 << 10),
            max_batch_bytes: ByteSize(4 << 20),
            rotate_wait: HumanDuration(Duration::from_secs(5)),
            merge_timeout: HumanDuration(Duration::from_secs(1)),
            checkpoint_grace: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

impl TailSettings {
    /// Problems of the values, under `key` (`sources.file.tail`).
    pub fn check(&self, key: &str, problems: &mut Vec<String>) {
        at_least(
            problems,
            &format!("{key}.max_line_bytes"),
            self.max_line_bytes.0,
            64,
            "64 B",
        );
        at_least(
            problems,
            &format!("{key}.max_read_bytes"),
            self.max_read_bytes.0,
            4 << 10,
            "4 KiB",
        );
        if self.max_batch_bytes.0 < self.max_line_bytes.0 {
            problems.push(format!(
                "{key}.max_batch_bytes = {} is below max_line_bytes = {}",
                self.max_batch_bytes, self.max_line_bytes
            ));
        }
        if self.max_open_files == 0 {
            problems.push(format!("{key}.max_open_files = 0 must be at least 1"));
        }
        for (name, d) in [
            ("rescan_interval", self.rescan_interval),
            ("poll_interval", self.poll_interval),
        ] {
            if d.0 < Duration::from_millis(10) {
                problems.push(format!(
                    "{key}.{name} = {} is below 10ms",
                    humantime::format_duration(d.0)
                ));
            }
        }
    }
}
