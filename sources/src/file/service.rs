//! Building the source: the engine over the include patterns.

use std::path::Path;

use super::config::ValidFile;
use super::SOURCE;
use crate::contract::{BuildError, RunningSource, SourceContext, ValidSource};
use crate::tail::{self, Describe, FileMeta, Format, TailEngine};

/// Records carry the file's name; every file is read.
struct HostFiles {
    service_name: Option<String>,
}

impl Describe for HostFiles {
    fn describe(&self, path: &Path) -> Option<FileMeta> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        Some(FileMeta {
            resource: self
                .service_name
                .iter()
                .map(|s| ("service.name".to_string(), s.clone()))
                .collect(),
            attributes: name.map(|n| ("log.file.name".to_string(), n)).into_iter().collect(),
            service_name: self.service_name.clone(),
        })
    }
}

impl ValidSource for ValidFile {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn build(self: Box<Self>, ctx: &SourceContext) -> Result<RunningSource, BuildError> {
        let c = self.config;
        let engine = TailEngine::new(
            SOURCE,
            c.tenant.clone(),
            c.include.clone(),
            self.exclude,
            Format::Plain {
                multiline_start: self.multiline_start,
                parse_timestamp: c.parse_timestamp,
            },
            c.tail.clone(),
            Box::new(HostFiles {
                service_name: c.service_name.clone(),
            }),
            ctx.ingest.clone(),
        );
        let mut running = RunningSource::new(SOURCE);
        running.tasks.push(Box::pin(tail::run(
            engine,
            c.tail.poll_interval.0,
            ctx.shutdown.clone(),
        )));
        Ok(running)
    }
}
