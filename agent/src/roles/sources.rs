//! The running sources of the data path, by name: built together at start (every socket
//! bound before any serves), replaced one by one on a configuration reload, watched so that
//! a source that fails stops the agent, and drained at shutdown.
//!
//! Each source runs under a supervisor task that owns its serving tasks. A reload stops a
//! changed source through its own token (it stops accepting, its in-flight requests finish
//! and are acknowledged), waits for it up to the drain time, then builds its replacement;
//! the supervisor of a stopped source ends with a generation that is no longer current, so
//! it is not taken for a failure.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use weir_sources::{RunningSource, SourceContext, ValidSource};

/// How a reload of the sources went.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// A new source could not be built; the old ones run again (the reload is refused).
    #[error("{0}")]
    RolledBack(String),
    /// A new source could not be built and an old one could not be started again either:
    /// the agent stops (a supervisor restarts it with the configuration on disk).
    #[error("{0}")]
    Lost(String),
}

/// One running source.
struct Current {
    generation: u64,
    stop: CancellationToken,
    done: CancellationToken,
    abort: AbortHandle,
    bound: Vec<(String, SocketAddr)>,
}

/// How a supervisor ended.
struct Ended {
    name: &'static str,
    generation: u64,
    error: Option<anyhow::Error>,
}

/// The sources of the data path.
pub struct RunningSources {
    ctx: SourceContext,
    supervisors: JoinSet<Ended>,
    current: HashMap<&'static str, Current>,
    generation: u64,
    /// How long a stopped source's in-flight requests may take on a reload.
    drain: Duration,
}

impl RunningSources {
    /// Builds every source (binding its sockets), then starts them all. `ctx.shutdown` stops
    /// them all ([`RunningSources::shutdown`]).
    pub fn start(
        sources: Vec<Box<dyn ValidSource>>,
        ctx: SourceContext,
        drain: Duration,
    ) -> anyhow::Result<RunningSources> {
        let mut running = RunningSources {
            ctx,
            supervisors: JoinSet::new(),
            current: HashMap::new(),
            generation: 0,
            drain,
        };
        let built = running.build(sources)?;
        running.spawn(built);
        Ok(running)
    }

    /// Builds sources, each with its own stop token under the shared one; all or none.
    fn build(
        &self,
        sources: Vec<Box<dyn ValidSource>>,
    ) -> anyhow::Result<Vec<(RunningSource, CancellationToken)>> {
        let mut built = Vec::with_capacity(sources.len());
        for source in sources {
            let name = source.name();
            let stop = self.ctx.shutdown.child_token();
            let ctx = SourceContext {
                shutdown: stop.clone(),
                ..self.ctx.clone()
            };
            let r = source
                .build(&ctx)
                .map_err(|e| anyhow::anyhow!("cannot start source {name}: {e}"))?;
            built.push((r, stop));
        }
        Ok(built)
    }

    fn spawn(&mut self, built: Vec<(RunningSource, CancellationToken)>) {
        for (source, stop) in built {
            self.generation += 1;
            let generation = self.generation;
            let done = CancellationToken::new();
            let name = source.name;
            let abort = self.supervisors.spawn(supervise(
                name,
                generation,
                source.tasks,
                stop.clone(),
                done.clone(),
            ));
            self.current.insert(
                name,
                Current {
                    generation,
                    stop,
                    done,
                    abort,
                    bound: source.bound,
                },
            );
        }
    }

    /// Every address the running sources listen on, by configuration key.
    pub fn bound(&self) -> BTreeMap<String, SocketAddr> {
        self.current
            .values()
            .flat_map(|c| c.bound.iter().cloned())
            .collect()
    }

    /// Resolves when a running source stops on its own (a server error, or a task that
    /// ended): the error that stops the agent. Sources stopped by a reload are not failures.
    /// Cancel-safe.
    pub async fn failed(&mut self) -> anyhow::Error {
        loop {
            let Some(res) = self.supervisors.join_next().await else {
                // No source runs (all disabled): only a signal ends the agent.
                std::future::pending::<()>().await;
                continue;
            };
            let ended = match res {
                Ok(e) => e,
                Err(e) if e.is_cancelled() => continue,
                Err(e) => return anyhow::anyhow!("a source supervisor failed: {e}"),
            };
            let current = self
                .current
                .get(ended.name)
                .is_some_and(|c| c.generation == ended.generation);
            // A source without tasks (nothing to serve) ends at once, without an error.
            if let (true, Some(e)) = (current, ended.error) {
                return e;
            }
        }
    }

    /// Stops the sources `names` that run, waiting up to the drain time for their in-flight
    /// requests (then aborting them).
    async fn stop(&mut self, names: &[&'static str]) {
        for name in names {
            let Some(c) = self.current.remove(name) else {
                continue;
            };
            c.stop.cancel();
            if tokio::time::timeout(self.drain, c.done.cancelled())
                .await
                .is_err()
            {
                warn!(
                    source = name,
                    "in-flight requests did not finish within the drain time; aborting them"
                );
                c.abort.abort();
            }
            info!(source = name, "source stopped for the reload");
        }
    }

    /// Replaces the sources `names`: the running ones stop (their requests finish), then
    /// `new` (the enabled ones of the new configuration) are built and started. When one
    /// cannot be built (its address is taken, its TLS files unreadable), `old` (the same
    /// names under the running configuration) are started again and the reload is refused.
    pub async fn replace(
        &mut self,
        names: &[&'static str],
        new: Vec<Box<dyn ValidSource>>,
        old: Vec<Box<dyn ValidSource>>,
    ) -> Result<(), ReplaceError> {
        self.stop(names).await;
        match self.build(new) {
            Ok(built) => {
                for (s, _) in &built {
                    info!(source = s.name, "source started with the new configuration");
                }
                self.spawn(built);
                Ok(())
            }
            Err(e) => match self.build(old) {
                Ok(built) => {
                    self.spawn(built);
                    Err(ReplaceError::RolledBack(format!(
                        "{e:#}; the sources run with their previous configuration"
                    )))
                }
                Err(again) => Err(ReplaceError::Lost(format!(
                    "{e:#}, and the previous configuration cannot start again: {again:#}"
                ))),
            },
        }
    }

    /// Stops every source (the shared token): they stop accepting and finish their in-flight
    /// requests within `timeout`, after which the rest are aborted.
    pub async fn shutdown(mut self, timeout: Duration) {
        self.ctx.shutdown.cancel();
        let supervisors = &mut self.supervisors;
        let drained = tokio::time::timeout(timeout, async {
            while supervisors.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("in-flight requests did not finish in time; aborting them");
            self.supervisors.abort_all();
        }
    }
}

/// Runs a source's tasks until they all end. A task that ends while the source is not being
/// stopped is a failure: the source's other tasks are stopped (their requests finish) and
/// the first error is the supervisor's.
async fn supervise(
    name: &'static str,
    generation: u64,
    tasks: Vec<weir_sources::SourceTask>,
    stop: CancellationToken,
    done: CancellationToken,
) -> Ended {
    let mut set = JoinSet::new();
    for t in tasks {
        set.spawn(t);
    }
    let mut error = None;
    while let Some(res) = set.join_next().await {
        if stop.is_cancelled() && matches!(res, Ok(Ok(()))) {
            continue;
        }
        let e = match res {
            Ok(Ok(())) => anyhow::anyhow!("source {name} stopped unexpectedly"),
            Ok(Err(e)) => anyhow::Error::from(e).context(format!("source {name} failed")),
            Err(e) => anyhow::anyhow!("a task of source {name} failed: {e}"),
        };
        if error.is_none() {
            error = Some(e);
        }
        stop.cancel();
    }
    done.cancel();
    Ended {
        name,
        generation,
        error,
    }
}
