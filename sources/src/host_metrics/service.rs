//! Building the source: a task that collects on the interval, off the async threads, and
//! writes each collection as one batch.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weir_pipelines::ingest::Ingest;
use weir_pipelines::metricrows::MetricsBuilder;
use weir_pipelines::{Batch, Signal};

use super::collect::{self, Scraper};
use super::config::{Collector, ValidHostMetrics};
use super::SOURCE;
use crate::contract::{BuildError, RunningSource, ServeError, SourceContext, ValidSource};

/// `USER_HZ`, the unit of `/proc/stat` times (100 on every Linux architecture but a few).
fn user_hz() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        hz => hz,
    }
}

impl ValidSource for ValidHostMetrics {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn build(self: Box<Self>, ctx: &SourceContext) -> Result<RunningSource, BuildError> {
        let c = self.config;
        let root = PathBuf::from(&c.root);
        if !root.join("proc/stat").is_file() {
            warn!(root = %c.root, "sources.host_metrics.root has no proc/stat (mount the host's / there); collections fail until it appears");
        }
        let scraper = Scraper {
            host_name: c
                .host_name
                .clone()
                .unwrap_or_else(|| collect::host_name(&root)),
            root,
            collectors: c.collectors.clone(),
            memory_utilization: c.memory_utilization,
            user_hz: user_hz(),
        };
        info!(root = %c.root, host = %scraper.host_name, interval = ?c.interval.0, "collecting host metrics");
        let mut running = RunningSource::new(SOURCE);
        running.tasks.push(Box::pin(run(
            scraper,
            ctx.ingest.clone(),
            c.tenant.clone(),
            c.interval.0,
            ctx.shutdown.clone(),
        )));
        Ok(running)
    }
}

/// What one round left behind: the collectors failing now (to log a failure once, and its
/// recovery).
#[derive(Default)]
struct Failing(HashSet<Collector>);

/// One collection and its write; blocking.
fn round(scraper: &Scraper, ingest: &Ingest, tenant: &str, failing: &mut Failing) {
    let now = crate::now_nanos();
    let mut b = MetricsBuilder::default();
    let failed = scraper.collect(now, &mut b);
    let now_failing: HashSet<Collector> = failed.iter().map(|(c, _)| *c).collect();
    for (c, e) in &failed {
        if failing.0.contains(c) {
            debug!(collector = c.name(), error = %e, "host metrics collector still failing");
        } else {
            warn!(collector = c.name(), error = %e, "host metrics collector failed; retried every interval");
        }
    }
    for c in failing.0.difference(&now_failing) {
        info!(collector = c.name(), "host metrics collector recovered");
    }
    failing.0 = now_failing;
    if b.is_empty() {
        return;
    }
    let records = match b.finish() {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "host metrics batch not built");
            return;
        }
    };
    let points = records.num_rows();
    // A dropped collection loses nothing lasting: the sums are cumulative and the next
    // collection comes one interval later.
    match ingest.write(Batch::new(tenant, Signal::Metrics, SOURCE, now, records), 0) {
        Ok(()) => debug!(points, "host metrics written"),
        Err(e) => warn!(points, error = %e, "host metrics collection dropped"),
    }
}

/// Collects every `interval` until `shutdown`.
async fn run(
    mut scraper: Scraper,
    ingest: Ingest,
    tenant: String,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = Failing::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let ingest = ingest.clone();
        let tenant = tenant.clone();
        let (s, f) = tokio::task::spawn_blocking(move || {
            round(&scraper, &ingest, &tenant, &mut failing);
            (scraper, failing)
        })
        .await
        .map_err(|e| ServeError::Server {
            what: "host metrics",
            message: format!("collection task failed: {e}"),
        })?;
        scraper = s;
        failing = f;
    }
}
