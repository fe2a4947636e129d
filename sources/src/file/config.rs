//! `[sources.file]`.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::contract::{tenant_valid, SourceConfig, ValidSource};
use crate::tail::TailSettings;

/// Host log files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Whether the source runs.
    pub enabled: bool,
    /// Absolute glob patterns of the files to read (`/var/log/*.log`, `/var/log/app/**/*.log`).
    pub include: Vec<String>,
    /// Glob patterns of files not to read, even if included.
    pub exclude: Vec<String>,
    /// A regular expression: a line matching it starts a record, the lines that do not are
    /// appended to the record before (stack traces). Unset: one record per line.
    pub multiline_start: Option<String>,
    /// Read a timestamp at the start of each line (RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f]` as
    /// UTC) as the record's time; otherwise the time it was read.
    pub parse_timestamp: bool,
    /// `service.name` of every record.
    pub service_name: Option<String>,
    /// Tenant of every record.
    pub tenant: String,
    /// How files are read (`[sources.file.tail]`).
    pub tail: TailSettings,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            enabled: false,
            include: Vec::new(),
            exclude: Vec::new(),
            multiline_start: None,
            parse_timestamp: false,
            service_name: None,
            tenant: "default".into(),
            tail: TailSettings::default(),
        }
    }
}

/// A validated `[sources.file]`.
#[derive(Debug, Clone)]
pub struct ValidFile {
    /// The values.
    pub config: FileConfig,
    /// The compiled exclude patterns.
    pub exclude: Vec<glob::Pattern>,
    /// The compiled multiline start pattern.
    pub multiline_start: Option<Regex>,
}

impl SourceConfig for FileConfig {
    const BATCH_SOURCES: &'static [&'static str] = &[super::SOURCE];

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn validate(&self) -> Result<Box<dyn ValidSource>, Vec<String>> {
        let mut problems = Vec::new();
        if self.include.is_empty() {
            problems.push("sources.file.include is empty: name the files to read, like [\"/var/log/*.log\"]".into());
        }
        for p in &self.include {
            if !p.starts_with('/') {
                problems.push(format!("sources.file.include: {p:?} must be an absolute path"));
            } else if let Err(e) = glob::Pattern::new(p) {
                problems.push(format!("sources.file.include: {p:?} is not a glob pattern: {e}"));
            }
        }
        let mut exclude = Vec::new();
        for p in &self.exclude {
            match glob::Pattern::new(p) {
                Ok(g) => exclude.push(g),
                Err(e) => problems.push(format!("sources.file.exclude: {p:?} is not a glob pattern: {e}")),
            }
        }
        let multiline_start = match self.multiline_start.as_deref().map(Regex::new) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                problems.push(format!(
                    "sources.file.multiline_start is not a regular expression: {e}"
                ));
                None
            }
        };
        tenant_valid(&mut problems, "sources.file.tenant", &self.tenant);
        self.tail.check("sources.file.tail", &mut problems);
        if problems.is_empty() {
            Ok(Box::new(ValidFile {
                config: self.clone(),
                exclude,
                multiline_start,
            }))
        } else {
            Err(problems)
        }
    }
}
