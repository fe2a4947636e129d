//! Running the source: one task keeps the set of targets (static, from files, from pods)
//! and one loop per target scrapes it on the interval, each scrape under the timeout and a
//! shared limit on scrapes in flight; parsing and the buffer write run off the async threads.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weir_pipelines::ingest::Ingest;
use weir_pipelines::metricrows::MetricsBuilder;
use weir_pipelines::{Batch, Signal};

use super::config::{PrometheusScrapeConfig, ValidPrometheusScrape, KEY};
use super::exposition::{self, Shape};
use super::text::{Bounds, PageError};
use super::targets::Target;
use super::{discover, SOURCE};
use crate::http::body::error_chain;
use crate::contract::{BuildError, RunningSource, ServeError, SourceContext, ValidSource};

/// What a scrape asks for: OpenMetrics first, then the text format, as Prometheus does.
const ACCEPT_FORMATS: &str = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1";

impl ValidSource for ValidPrometheusScrape {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn build(self: Box<Self>, ctx: &SourceContext) -> Result<RunningSource, BuildError> {
        let c = self.config;
        let client = reqwest::Client::builder()
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(c.insecure_skip_verify)
            .redirect(reqwest::redirect::Policy::limited(5))
            .connect_timeout(c.timeout.0)
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| BuildError::Setup(format!("{KEY}: cannot build the HTTP client: {e}")))?;
        let scraper = Arc::new(Scraper {
            client,
            permits: Arc::new(Semaphore::new(c.max_concurrent_scrapes)),
            ingest: ctx.ingest.clone(),
            config: c.clone(),
        });
        let mut running = RunningSource::new(SOURCE);
        let (files_tx, files_rx) = watch::channel(Vec::new());
        if !c.files.is_empty() {
            running.tasks.push(Box::pin(discover::watch_files(
                c.files.clone(),
                c.job.clone(),
                c.files_refresh.0,
                files_tx,
                ctx.shutdown.clone(),
            )));
        }
        let (pods_tx, pods_rx) = watch::channel(Vec::new());
        let node = c
            .kubernetes
            .node_name
            .clone()
            .or_else(|| std::env::var("K8S_NODE_NAME").ok().filter(|v| !v.is_empty()));
        if c.kubernetes.enabled && node.is_none() {
            warn!("{KEY}.kubernetes: no node name (set K8S_NODE_NAME from spec.nodeName, or kubernetes.node_name); no pod targets");
        }
        if let Some(node) = node.filter(|_| c.kubernetes.enabled) {
            running.tasks.push(Box::pin(discover::watch_pods(
                node,
                c.kubernetes.annotation_prefix.clone(),
                c.job.clone(),
                pods_tx,
                ctx.shutdown.clone(),
            )));
        }
        info!(
            targets = self.targets.len(),
            files = c.files.len(),
            pods = c.kubernetes.enabled,
            interval = ?c.interval.0,
            "scraping Prometheus targets"
        );
        running.tasks.push(Box::pin(manage(
            scraper,
            self.targets,
            files_rx,
            pods_rx,
            ctx.shutdown.clone(),
        )));
        Ok(running)
    }
}

/// What every target loop shares.
struct Scraper {
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    ingest: Ingest,
    config: PrometheusScrapeConfig,
}

/// Keeps one loop per target of the union of the static, file and pod targets, until
/// `shutdown`.
async fn manage(
    scraper: Arc<Scraper>,
    fixed: Vec<Target>,
    mut files: watch::Receiver<Vec<Target>>,
    mut pods: watch::Receiver<Vec<Target>>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mut running: HashMap<Target, CancellationToken> = HashMap::new();
    let mut loops = JoinSet::new();
    let mut files_open = true;
    let mut pods_open = true;
    let mut over_limit_said = false;
    loop {
        // Static targets first, so that discovered ones never push them out.
        let mut wanted: Vec<Target> = fixed.clone();
        wanted.extend(files.borrow_and_update().iter().cloned());
        wanted.extend(pods.borrow_and_update().iter().cloned());
        let mut seen = HashSet::new();
        wanted.retain(|t| seen.insert(t.clone()));
        let max = scraper.config.max_targets;
        if wanted.len() > max {
            if !over_limit_said {
                warn!(
                    targets = wanted.len(),
                    max, "more targets than {KEY}.max_targets; the rest are not scraped"
                );
                over_limit_said = true;
            }
            wanted.truncate(max);
        } else {
            over_limit_said = false;
        }
        running.retain(|t, stop| {
            let keep = wanted.contains(t);
            if !keep {
                debug!(url = %t.url, "target gone");
                stop.cancel();
            }
            keep
        });
        for t in wanted {
            if running.contains_key(&t) {
                continue;
            }
            debug!(url = %t.url, "new target");
            let stop = shutdown.child_token();
            running.insert(t.clone(), stop.clone());
            loops.spawn(target_loop(scraper.clone(), t, stop));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = files.changed(), if files_open => files_open = r.is_ok(),
            r = pods.changed(), if pods_open => pods_open = r.is_ok(),
            Some(_) = loops.join_next(), if !loops.is_empty() => {}
        }
    }
    for stop in running.values() {
        stop.cancel();
    }
    while loops.join_next().await.is_some() {}
    Ok(())
}

/// Where in the interval a target is scraped: spread by its identity, stable across restarts.
fn offset(t: &Target, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % ms)
}

/// Scrapes `t` every interval until `stop`.
async fn target_loop(scraper: Arc<Scraper>, t: Target, stop: CancellationToken) {
    let interval = scraper.config.interval.0;
    let start = tokio::time::Instant::now() + offset(&t, interval);
    let mut tick = tokio::time::interval_at(start, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let outcome = match scraper.scrape(&t, &stop).await {
            Some(o) => o,
            None => return,
        };
        match (outcome, &failing) {
            (Ok(()), Some(_)) => {
                info!(url = %t.url, "target scraped again");
                failing = None;
            }
            (Ok(()), None) => {}
            (Err(e), Some(before)) if *before == e => {
                debug!(url = %t.url, error = %e, "target still failing")
            }
            (Err(e), _) => {
                warn!(url = %t.url, error = %e, "scrape failed; retried every interval");
                failing = Some(e);
            }
        }
    }
}

/// A fetched page.
struct Fetched {
    body: Vec<u8>,
    openmetrics: bool,
}

impl Scraper {
    /// One scrape of `t` and its write: the page's rows and the report series, or the report
    /// alone (`up` = 0) when the page could not be fetched or read. The error says why;
    /// `None` when `stop` came during the fetch (nothing is written then). The scrape holds a
    /// slot of `max_concurrent_scrapes` from the fetch to the end of its write, and its
    /// time and `timeout` count from when it got the slot.
    async fn scrape(&self, t: &Target, stop: &CancellationToken) -> Option<Result<(), String>> {
        let permit = tokio::select! {
            _ = stop.cancelled() => return None,
            p = self.permits.clone().acquire_owned() => p.ok()?,
        };
        let scraped_at = crate::now_nanos();
        let began = Instant::now();
        let fetched = tokio::select! {
            _ = stop.cancelled() => return None,
            r = tokio::time::timeout(self.config.timeout.0, self.fetch(t)) => match r {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "no complete answer within {KEY}.timeout ({:?})",
                    self.config.timeout.0
                )),
            },
        };
        let config = self.config.clone();
        let labels = t.labels.clone();
        let ingest = self.ingest.clone();
        // Parsing and writing are bounded by the page's limits and always run to their end:
        // a write is never abandoned half-way, even at shutdown.
        let done = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut b = MetricsBuilder::default();
            let mut samples = 0;
            let page = fetched.and_then(|f| {
                let body = std::str::from_utf8(&f.body)
                    .map_err(|e| format!("the page is not UTF-8: {e}"))?;
                let shape = Shape {
                    target: &labels,
                    honor_labels: config.honor_labels,
                    honor_timestamps: config.honor_timestamps,
                    scraped_at,
                    bounds: Bounds {
                        max_samples: config.max_samples,
                        max_labels_per_series: config.max_labels_per_series,
                        max_label_bytes_per_series: config.max_label_bytes_per_series.0 as usize,
                    },
                    max_row_bytes: (config.max_body_bytes.0 as usize).saturating_mul(16),
                };
                match exposition::append_page(body, f.openmetrics, &shape, &mut b) {
                    Ok(s) => {
                        samples = s.samples;
                        Ok(s)
                    }
                    Err(e) => {
                        if matches!(e, PageError::TooManySamples { .. }) {
                            samples = exposition::count_sample_lines(body);
                        }
                        Err(e.to_string())
                    }
                }
            });
            if page.is_err() {
                // Rows of a page that failed half-way are not kept.
                b = MetricsBuilder::default();
            }
            let took = began.elapsed().as_secs_f64();
            exposition::append_report(&labels, scraped_at, page.is_ok(), took, samples, &mut b);
            write(&ingest, &config.tenant, scraped_at, b)?;
            match page {
                Ok(s) if s.out_of_bounds > 0 => Err(format!(
                    "{} samples dropped: their timestamps are more than an hour before or ten minutes after the scrape",
                    s.out_of_bounds
                )),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await;
        Some(done.unwrap_or_else(|e| Err(format!("the scrape's task failed: {e}"))))
    }

    /// The page of `t`, within the body limit.
    async fn fetch(&self, t: &Target) -> Result<Fetched, String> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_FORMATS));
        if let Ok(v) = HeaderValue::from_str(&format!("{}", self.config.timeout.0.as_secs_f64()))
        {
            headers.insert("x-prometheus-scrape-timeout-seconds", v);
        }
        if let Some(path) = self.config.bearer_token_file.as_ref().filter(|_| t.credentials) {
            let token = tokio::fs::read_to_string(PathBuf::from(path))
                .await
                .map_err(|e| format!("{KEY}.bearer_token_file {path:?}: {e}"))?;
            let v = HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                format!("{KEY}.bearer_token_file {path:?} holds characters a header cannot")
            })?;
            headers.insert(AUTHORIZATION, v);
        }
        let mut resp = self
            .client
            .get(&t.url)
            .headers(headers)
            .send()
            .await
            .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("the target answered HTTP {status}"));
        }
        let max = self.config.max_body_bytes.0;
        if let Some(len) = resp.content_length().filter(|l| *l > max) {
            return Err(format!(
                "the page is {len} bytes, over {KEY}.max_body_bytes ({max})"
            ));
        }
        let openmetrics = exposition::is_openmetrics(
            resp.headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the page failed: {}", error_chain(&e)))?
        {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(format!(
                    "the page is over {KEY}.max_body_bytes ({max} bytes)"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body, openmetrics })
    }
}

/// Writes one scrape's rows as one batch; blocking. A refused write loses one scrape: the
/// next comes an interval later, and sums are cumulative.
fn write(ingest: &Ingest, tenant: &str, at: i64, mut b: MetricsBuilder) -> Result<(), String> {
    let records = b
        .finish()
        .map_err(|e| format!("the scrape's rows could not be built: {e}"))?;
    let points = records.num_rows();
    ingest
        .write(Batch::new(tenant, Signal::Metrics, SOURCE, at, records), 0)
        .map_err(|e| format!("{points} points not written: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_stay_inside_the_interval_and_differ() {
        let i = Duration::from_secs(30);
        let a = Target::from_url("http://a:1/metrics", "j", &Default::default()).unwrap();
        let b = Target::from_url("http://b:1/metrics", "j", &Default::default()).unwrap();
        assert!(offset(&a, i) < i);
        assert_eq!(offset(&a, i), offset(&a, i));
        assert_ne!(offset(&a, i), offset(&b, i));
    }

    #[test]
    fn target_labels_do_not_keep_meta_labels() {
        let t = Target::from_address(
            "10.1.2.3:8080",
            &std::collections::BTreeMap::from([(
                "__metrics_path__".to_string(),
                "/m".to_string(),
            )]),
            "j",
        )
        .unwrap();
        assert!(t.labels.iter().all(|(k, _)| !k.starts_with("__")));
    }
}
