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
    /// Aborts the source's tasks (after the drain time), then `done` follows.
    kill: CancellationToken,
    done: CancellationToken,
    abort: AbortHandle,
    bound: Vec<(String, SocketAddr)>,
}

/// Sources built for a reload (their sockets bound), not serving yet.
pub struct Prepared(Vec<(RunningSource, CancellationToken)>);

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
            let kill = CancellationToken::new();
            let name = source.name;
            let abort = self.supervisors.spawn(supervise(
                name,
                generation,
                source.tasks,
                Tokens {
                    stop: stop.clone(),
                    kill: kill.clone(),
                    done: done.clone(),
                },
            ));
            self.current.insert(
                name,
                Current {
                    generation,
                    stop,
                    kill,
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
            match (current, ended.error) {
                (true, Some(e)) => return e,
                // A source without tasks (nothing to serve) ends at once, without an error.
                (true, None) => {}
                (false, Some(e)) => warn!(
                    source = ended.name,
                    error = %format!("{e:#}"),
                    "a source replaced by a reload ended with an error"
                ),
                (false, None) => {}
            }
        }
    }

    /// Stops the sources `names` that run, all at once: they stop accepting and their
    /// in-flight requests finish, for up to the drain time; then what is left is aborted and
    /// waited for, so their sockets are closed and nothing of theirs runs when this returns.
    async fn stop(&mut self, names: &[&'static str]) {
        let stopping: Vec<(&'static str, Current)> = names
            .iter()
            .filter_map(|n| self.current.remove(n).map(|c| (*n, c)))
            .collect();
        for (_, c) in &stopping {
            c.stop.cancel();
        }
        let deadline = tokio::time::Instant::now() + self.drain;
        for (name, c) in &stopping {
            if tokio::time::timeout_at(deadline, c.done.cancelled())
                .await
                .is_ok()
            {
                info!(source = name, "source stopped for the reload");
                continue;
            }
            warn!(
                source = name,
                "requests still in flight after the drain time (half of shutdown.timeout); cancelling them unanswered"
            );
            c.kill.cancel();
            if tokio::time::timeout(KILL_WAIT, c.done.cancelled())
                .await
                .is_err()
            {
                c.abort.abort();
            }
        }
    }

    /// The first half of a reload of the sources `names`: the running ones stop (their
    /// requests finish), then `new` (the enabled ones of the new configuration) are built,
    /// their sockets bound, to be started by [`RunningSources::start_prepared`] once the
    /// settings they share are applied. When one cannot be built (its address is taken, its
    /// TLS files unreadable), `old` (the same names under the running configuration) are
    /// started again and the reload is refused.
    pub async fn prepare(
        &mut self,
        names: &[&'static str],
        new: Vec<Box<dyn ValidSource>>,
        old: Vec<Box<dyn ValidSource>>,
    ) -> Result<Prepared, ReplaceError> {
        self.stop(names).await;
        match self.build(new) {
            Ok(built) => Ok(Prepared(built)),
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

    /// Starts the sources a reload prepared.
    pub fn start_prepared(&mut self, prepared: Prepared) {
        for (s, _) in &prepared.0 {
            info!(source = s.name, "source started with the new configuration");
        }
        self.spawn(prepared.0);
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

/// How long aborted tasks get to finish being cancelled.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A supervisor's tokens: `stop` (stop accepting, finish requests), `kill` (abort the tasks
/// now) and `done` (cancelled by the supervisor when none of its tasks runs any more).
struct Tokens {
    stop: CancellationToken,
    kill: CancellationToken,
    done: CancellationToken,
}

/// Runs a source's tasks until they all end. A task that ends while the source is not being
/// stopped is a failure: the source's other tasks are stopped (their requests finish) and
/// the first error is the supervisor's. `kill` aborts them all.
async fn supervise(
    name: &'static str,
    generation: u64,
    tasks: Vec<weir_sources::SourceTask>,
    tokens: Tokens,
) -> Ended {
    let Tokens { stop, kill, done } = tokens;
    let mut set = JoinSet::new();
    for t in tasks {
        set.spawn(t);
    }
    let mut error = None;
    loop {
        let res = tokio::select! {
            r = set.join_next() => match r {
                Some(r) => r,
                None => break,
            },
            _ = kill.cancelled(), if !set.is_empty() => {
                set.abort_all();
                while set.join_next().await.is_some() {}
                break;
            }
        };
        if stop.is_cancelled() && matches!(res, Ok(Ok(()))) {
            continue;
        }
        let e = match res {
            Ok(Ok(())) => anyhow::anyhow!("source {name} stopped unexpectedly"),
            Ok(Err(e)) => anyhow::Error::from(e).context(format!("source {name} failed")),
            Err(e) if e.is_cancelled() => continue,
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
