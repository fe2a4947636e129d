//! Pipelines: which batches go through which ordered chain of transforms, what happens when a
//! transform fails, per-transform metrics, and hot reload of module files.
//!
//! Routing: a batch goes through the first pipeline whose `sources` and `signals` match it
//! (an empty list matches everything; a source family like `otlp` matches `otlp_grpc` and
//! `otlp_http`). A batch no pipeline matches is buffered unchanged.
//!
//! Hot reload: a watcher thread checks each module file's modification time every
//! `reload_interval`; a changed file is compiled and checked like at start and swapped in
//! atomically. A batch runs wholly on the old or wholly on the new module, never both. A
//! module that fails to load is reported and the old one keeps running.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounter, IntCounterVec, Opts};
use tracing::{info, warn};
use weir_pipelines::ingest::{BatchProcessor, Overloaded};
use weir_pipelines::metrics::Metrics;
use weir_pipelines::Batch;
use weir_schema::Signal;

use crate::{Limits, Transform, TransformError, TransformHost, TransformSpec};

/// What happens to a batch when a transform fails on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Keep the original batch under the lake's `_dead_letter/` prefix with the error.
    #[default]
    DeadLetter,
    /// Drop the batch (counted).
    Drop,
    /// Continue with the batch as it was before this transform.
    Pass,
}

/// One step of a pipeline, as configured.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// Transform name (metrics label).
    pub name: String,
    /// Module file (`.wasm`, or `.wat` text).
    pub module: PathBuf,
    /// JSON config for `weir_init`.
    pub config: String,
    /// Limits.
    pub limits: Limits,
    /// Failure policy.
    pub on_error: OnError,
}

/// One pipeline, as configured.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// Name.
    pub name: String,
    /// Source names or families (empty: every source).
    pub sources: Vec<String>,
    /// Signals (empty: every signal).
    pub signals: Vec<Signal>,
    /// The ordered transforms.
    pub steps: Vec<StepSpec>,
}

/// Errors building pipelines.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A module file could not be read.
    #[error("pipeline {pipeline}, transform {transform}: cannot read {path}: {error}")]
    Read {
        /// Pipeline.
        pipeline: String,
        /// Transform.
        transform: String,
        /// Module path.
        path: String,
        /// The I/O error.
        error: String,
    },
    /// A module could not be loaded.
    #[error("pipeline {pipeline}: {error}")]
    Load {
        /// Pipeline.
        pipeline: String,
        /// The load error.
        error: TransformError,
    },
    /// A metric could not be registered.
    #[error("cannot register transform metrics: {0}")]
    Metrics(String),
}

struct Step {
    spec: StepSpec,
    transform: RwLock<Arc<Transform>>,
    modified: RwLock<Option<SystemTime>>,
    counters: StepCounters,
}

/// One step's counters, resolved once when the step is loaded.
struct StepCounters {
    batches: IntCounter,
    records_in: IntCounter,
    records_out: IntCounter,
    micros: IntCounter,
}

impl StepCounters {
    fn new(m: &StepMetrics, name: &str) -> StepCounters {
        StepCounters {
            batches: m.batches.with_label_values(&[name]),
            records_in: m.records_in.with_label_values(&[name]),
            records_out: m.records_out.with_label_values(&[name]),
            micros: m.micros.with_label_values(&[name]),
        }
    }
}

struct Pipeline {
    name: String,
    sources: Vec<String>,
    signals: Vec<Signal>,
    steps: Vec<Step>,
}

impl Pipeline {
    fn matches(&self, b: &Batch) -> bool {
        (self.signals.is_empty() || self.signals.contains(&b.signal))
            && (self.sources.is_empty()
                || self.sources.iter().any(|s| {
                    b.source == *s
                        || b.source
                            .strip_prefix(s.as_str())
                            .is_some_and(|r| r.starts_with('_'))
                }))
    }
}

/// The transforms' metrics (`weir_transform_*`), registered once per process and shared by
/// every [`Pipelines`] built on it (a configuration reload builds new pipelines).
#[derive(Clone)]
pub struct StepMetrics {
    batches: IntCounterVec,
    records_in: IntCounterVec,
    records_out: IntCounterVec,
    errors: IntCounterVec,
    micros: IntCounterVec,
    reloads: IntCounterVec,
}

impl StepMetrics {
    /// Registers the metrics in `m`; a second call on the same registry fails.
    pub fn new(m: &Metrics) -> Result<StepMetrics, PipelineError> {
        let c = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, PipelineError> {
            let v = IntCounterVec::new(Opts::new(name, help), labels)
                .map_err(|e| PipelineError::Metrics(e.to_string()))?;
            m.register(Box::new(v.clone()))
                .map_err(|e| PipelineError::Metrics(e.to_string()))?;
            Ok(v)
        };
        Ok(StepMetrics {
            batches: c(
                "transform_batches_total",
                "Batches a transform ran on",
                &["transform"],
            )?,
            records_in: c(
                "transform_records_in_total",
                "Records into a transform",
                &["transform"],
            )?,
            records_out: c(
                "transform_records_out_total",
                "Records out of a transform",
                &["transform"],
            )?,
            errors: c(
                "transform_errors_total",
                "Transform failures by kind and policy",
                &["transform", "kind", "on_error"],
            )?,
            micros: c(
                "transform_time_microseconds_total",
                "Time spent in a transform",
                &["transform"],
            )?,
            reloads: c(
                "transform_reloads_total",
                "Module reloads by result",
                &["transform", "result"],
            )?,
        })
    }
}

struct Inner {
    host: TransformHost,
    pipelines: Vec<Pipeline>,
    metrics: StepMetrics,
}

/// The configured pipelines; the agent's [`BatchProcessor`].
pub struct Pipelines {
    inner: Arc<Inner>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

fn load_step(
    host: &TransformHost,
    pipeline: &str,
    spec: &StepSpec,
) -> Result<(Transform, Option<SystemTime>), PipelineError> {
    let read_err = |e: std::io::Error| PipelineError::Read {
        pipeline: pipeline.to_string(),
        transform: spec.name.clone(),
        path: spec.module.display().to_string(),
        error: e.to_string(),
    };
    let modified = std::fs::metadata(&spec.module)
        .and_then(|m| m.modified())
        .ok();
    let bytes = std::fs::read(&spec.module).map_err(read_err)?;
    let t = host
        .load(TransformSpec {
            name: spec.name.clone(),
            module: bytes,
            config: spec.config.clone(),
            limits: spec.limits.clone(),
        })
        .map_err(|error| PipelineError::Load {
            pipeline: pipeline.to_string(),
            error,
        })?;
    Ok((t, modified))
}

impl Pipelines {
    /// Loads every module (failing on the first that cannot be loaded) and starts the reload
    /// watcher.
    pub fn new(
        specs: Vec<PipelineSpec>,
        metrics: &Metrics,
        reload_interval: Duration,
    ) -> Result<Pipelines, PipelineError> {
        Pipelines::with_metrics(specs, StepMetrics::new(metrics)?, reload_interval)
    }

    /// Like [`Pipelines::new`], counting into metrics registered earlier.
    pub fn with_metrics(
        specs: Vec<PipelineSpec>,
        step_metrics: StepMetrics,
        reload_interval: Duration,
    ) -> Result<Pipelines, PipelineError> {
        let host = TransformHost::new().map_err(|error| PipelineError::Load {
            pipeline: "host".into(),
            error,
        })?;
        let mut pipelines = Vec::new();
        for p in specs {
            let mut steps = Vec::new();
            for spec in p.steps {
                let (t, modified) = load_step(&host, &p.name, &spec)?;
                info!(pipeline = %p.name, transform = %spec.name, module = %spec.module.display(), "transform loaded");
                steps.push(Step {
                    counters: StepCounters::new(&step_metrics, &spec.name),
                    spec,
                    transform: RwLock::new(Arc::new(t)),
                    modified: RwLock::new(modified),
                });
            }
            pipelines.push(Pipeline {
                name: p.name,
                sources: p.sources,
                signals: p.signals,
                steps,
            });
        }
        let inner = Arc::new(Inner {
            host,
            pipelines,
            metrics: step_metrics,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (i2, s2) = (inner.clone(), stop.clone());
        let watcher = std::thread::Builder::new()
            .name("weir-transform-reload".into())
            .spawn(move || {
                // Parked rather than asleep, so a drop (a configuration reload replacing
                // these pipelines) wakes it at once instead of waiting out the interval.
                let deadline = || std::time::Instant::now() + reload_interval;
                let mut next = deadline();
                while !s2.load(Ordering::Acquire) {
                    let left = next.saturating_duration_since(std::time::Instant::now());
                    if !left.is_zero() {
                        std::thread::park_timeout(left);
                        continue;
                    }
                    i2.reload_changed();
                    next = deadline();
                }
            })
            .ok();
        Ok(Pipelines {
            inner,
            stop,
            watcher,
        })
    }
}

impl Drop for Pipelines {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(w) = self.watcher.take() {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

impl Inner {
    fn reload_changed(&self) {
        for p in &self.pipelines {
            for step in &p.steps {
                let now = std::fs::metadata(&step.spec.module)
                    .and_then(|m| m.modified())
                    .ok();
                let before = step.modified.read().map(|m| *m).unwrap_or(None);
                if now.is_none() || now == before {
                    continue;
                }
                if let Ok(mut m) = step.modified.write() {
                    *m = now;
                }
                match load_step(&self.host, &p.name, &step.spec) {
                    Ok((t, _)) => {
                        if let Ok(mut cur) = step.transform.write() {
                            *cur = Arc::new(t);
                        }
                        self.metrics
                            .reloads
                            .with_label_values(&[&step.spec.name, "ok"])
                            .inc();
                        info!(pipeline = %p.name, transform = %step.spec.name, "transform reloaded");
                    }
                    Err(e) => {
                        self.metrics
                            .reloads
                            .with_label_values(&[&step.spec.name, "failed"])
                            .inc();
                        warn!(pipeline = %p.name, transform = %step.spec.name, error = %e, "reload failed; the previous module keeps running");
                    }
                }
            }
        }
    }
}

impl BatchProcessor for Pipelines {
    fn process(&self, mut batch: Batch) -> Result<Vec<Batch>, Overloaded> {
        let Some(p) = self.inner.pipelines.iter().find(|p| p.matches(&batch)) else {
            return Ok(vec![batch]);
        };
        let m = &self.inner.metrics;
        for step in &p.steps {
            let Ok(t) = step.transform.read().map(|t| t.clone()) else {
                continue;
            };
            let name = step.spec.name.as_str();
            let started = Instant::now();
            let result = t.run(batch.signal, &batch.records);
            let c = &step.counters;
            c.batches.inc();
            c.records_in.inc_by(batch.num_rows() as u64);
            c.micros.inc_by(started.elapsed().as_micros() as u64);
            match result {
                Ok(out) => {
                    c.records_out.inc_by(out.num_rows() as u64);
                    batch.records = out;
                    if batch.num_rows() == 0 {
                        return Ok(Vec::new());
                    }
                }
                // No instance in time is a matter of capacity, not of the batch: refuse it as
                // retryable instead of applying on_error (which could pass it on untransformed).
                Err(e @ TransformError::Busy { .. }) => {
                    m.errors.with_label_values(&[name, e.kind(), "retry"]).inc();
                    warn!(pipeline = %p.name, transform = name, error = %e, rows = batch.num_rows(), "transform busy; the batch is refused as retryable");
                    return Err(Overloaded(format!("pipeline {}: {e}", p.name)));
                }
                Err(e) => {
                    let policy = match step.spec.on_error {
                        OnError::DeadLetter => "dead_letter",
                        OnError::Drop => "drop",
                        OnError::Pass => "pass",
                    };
                    m.errors.with_label_values(&[name, e.kind(), policy]).inc();
                    warn!(pipeline = %p.name, transform = name, error = %e, on_error = policy, rows = batch.num_rows(), "transform failed");
                    match step.spec.on_error {
                        OnError::Pass => continue,
                        OnError::Drop => return Ok(Vec::new()),
                        OnError::DeadLetter => {
                            batch.dead_letter = Some(format!("pipeline {}: {e}", p.name));
                            return Ok(vec![batch]);
                        }
                    }
                }
            }
        }
        Ok(vec![batch])
    }
}
