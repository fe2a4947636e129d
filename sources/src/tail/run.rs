//! Running an engine: rounds on a blocking thread until shutdown, waits between them ended
//! early by inotify, and a back-off while writes are refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::engine::TailEngine;

/// Runs the engine until `shutdown`: a round, then a wait of `poll_interval` (none when a file
/// had more to read; a growing back-off while writes are refused). Where inotify is available
/// the directories of the followed files and the patterns' fixed prefixes are watched, and a
/// change ends the wait at once (a created, renamed or deleted file also brings the rescan
/// forward); the poll is the fallback for what cannot be watched.
pub async fn run(
    mut engine: TailEngine,
    poll: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), crate::contract::ServeError> {
    let mut backoff = Duration::ZERO;
    let mut watcher = Watcher::new(engine.source);
    loop {
        let (back, result) = tokio::task::spawn_blocking(move || {
            let r = engine.round();
            (engine, r)
        })
        .await
        .map_err(|e| crate::contract::ServeError::Server {
            what: "file tailing",
            message: format!("tailing task failed: {e}"),
        })?;
        engine = back;
        let wait = match result {
            Ok(o) if o.more => Duration::ZERO,
            Ok(_) => {
                backoff = Duration::ZERO;
                poll
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
                if backoff >= Duration::from_secs(1) {
                    warn!(source = engine.source, error = %e, retry_in = ?backoff, "batch not written; reading paused, nothing advanced");
                } else {
                    debug!(source = engine.source, error = %e, "batch not written; retrying");
                }
                backoff
            }
        };
        if wait.is_zero() {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            continue;
        }
        watcher.sync(&engine);
        let refused = backoff > Duration::ZERO;
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
            rescan = watcher.changed(), if !refused => {
                engine.rescan_due |= rescan;
            }
        }
    }
}

/// inotify watches on the directories the engine reads (Linux; elsewhere, or when inotify
/// fails, nothing is watched and the poll does the work).
struct Watcher {
    source: &'static str,
    stream: Option<inotify::EventStream<[u8; 4096]>>,
    watched: HashMap<PathBuf, inotify::WatchDescriptor>,
    /// The number of watches that failed to be added (said once).
    failed: bool,
}

impl Watcher {
    fn new(source: &'static str) -> Watcher {
        let stream = inotify::Inotify::init()
            .and_then(|i| i.into_event_stream([0u8; 4096]))
            .map_err(|e| info!(source, error = %e, "inotify unavailable: polling only"))
            .ok();
        Watcher {
            source,
            stream,
            watched: HashMap::new(),
            failed: false,
        }
    }

    /// Watches the engine's directories now, and drops the watches of the others.
    fn sync(&mut self, engine: &TailEngine) {
        let Some(stream) = &self.stream else { return };
        let want = engine.watch_dirs();
        let mut watches = stream.watches();
        self.watched.retain(|dir, wd| {
            let keep = want.contains(dir);
            if !keep {
                let _ = watches.remove(wd.clone());
            }
            keep
        });
        use inotify::WatchMask as M;
        let mask = M::MODIFY | M::CREATE | M::MOVED_FROM | M::MOVED_TO | M::DELETE | M::CLOSE_WRITE;
        for dir in want {
            if self.watched.contains_key(&dir) {
                continue;
            }
            match watches.add(&dir, mask) {
                Ok(wd) => {
                    self.watched.insert(dir, wd);
                }
                Err(e) => {
                    if !self.failed {
                        warn!(source = self.source, dir = %dir.display(), error = %e, "cannot watch a directory (fs.inotify.max_user_watches?): its files are polled");
                        self.failed = true;
                    }
                }
            }
        }
    }

    /// Waits for a change; true when a file was created, renamed or deleted (the rescan is
    /// due). Never returns when nothing is watched.
    async fn changed(&mut self) -> bool {
        use tokio_stream::StreamExt;
        let Some(stream) = &mut self.stream else {
            return std::future::pending().await;
        };
        match stream.next().await {
            Some(Ok(ev)) => {
                use inotify::EventMask as E;
                let structural = E::CREATE
                    | E::MOVED_FROM
                    | E::MOVED_TO
                    | E::DELETE
                    | E::IGNORED
                    | E::Q_OVERFLOW;
                let mut rescan = ev.mask.intersects(structural);
                // Busy files write all the time: gather what else comes within a short
                // moment into the same round, instead of one round per event.
                tokio::time::sleep(Duration::from_millis(25)).await;
                while let Ok(Some(Ok(ev))) =
                    tokio::time::timeout(Duration::ZERO, stream.next()).await
                {
                    rescan |= ev.mask.intersects(structural);
                }
                if rescan {
                    // A deleted directory's watch is gone: let `sync` add it again if needed.
                    self.watched.clear();
                }
                rescan
            }
            Some(Err(e)) => {
                warn!(source = self.source, error = %e, "inotify failed: polling only");
                self.stream = None;
                self.watched.clear();
                false
            }
            None => {
                self.stream = None;
                false
            }
        }
    }
}
