//! The host: a shared engine with an epoch ticker, a module cache, and transforms with their
//! instance pools.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Linker, Module, Trap};
use weir_schema::Signal;

use crate::guest::{deadline_ticks, linker, GuestInstance, GuestState, TICKS_PER_SEC};
use crate::ipc::check_output;
use crate::TransformError;

/// Limits of one transform.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Memory cap of an instance (its one linear memory). Default 64 MiB.
    pub max_memory: usize,
    /// Deadline of one call. Default 1 s.
    pub timeout: Duration,
    /// Largest output accepted; every size the output declares is checked against the
    /// output's real size before it is decoded. Default 64 MiB.
    pub max_output_bytes: usize,
    /// Calls after which an instance is replaced. Default 10 000.
    pub recycle_after_calls: u64,
    /// Memory size past which an instance is replaced after its call. Default 32 MiB.
    pub recycle_memory: usize,
    /// Instances of the transform alive at once (pooled or running a batch); 0 counts as 1.
    /// A batch that finds them all busy waits for one. With `max_memory` it bounds the
    /// transform's guest memory: `max_instances × max_memory`. Default 4.
    pub max_instances: usize,
    /// How long a batch waits for an instance when all `max_instances` are busy; past it the
    /// batch fails with kind `busy` and follows `on_error`. Default 5 s.
    pub instance_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory: 64 << 20,
            timeout: Duration::from_secs(1),
            max_output_bytes: 64 << 20,
            recycle_after_calls: 10_000,
            recycle_memory: 32 << 20,
            max_instances: 4,
            instance_wait: Duration::from_secs(5),
        }
    }
}

/// What to load.
#[derive(Debug, Clone)]
pub struct TransformSpec {
    /// Name in logs and metrics.
    pub name: String,
    /// The module: wasm binary or WAT text.
    pub module: Vec<u8>,
    /// JSON config passed to `weir_init`.
    pub config: String,
    /// Limits.
    pub limits: Limits,
}

/// Ticks the engine's epoch every 10 ms until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The shared engine, linker and module cache.
pub struct TransformHost {
    engine: Engine,
    linker: Linker<GuestState>,
    modules: Mutex<HashMap<String, Module>>,
    _ticker: Ticker,
}

fn abi(name: &str, message: impl Into<String>) -> TransformError {
    TransformError::Abi {
        name: name.to_string(),
        message: message.into(),
    }
}

impl TransformHost {
    /// A host with its own engine and epoch ticker.
    pub fn new() -> Result<TransformHost, TransformError> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        // The limiter sees one memory at a time: with several per instance, `max_memory` would
        // cap each of them, not the instance (the limiter also allows one memory per store).
        cfg.wasm_multi_memory(false);
        let engine = Engine::new(&cfg)
            .map_err(|e| abi("host", format!("cannot create the engine: {e:#}")))?;
        let linker =
            linker(&engine).map_err(|e| abi("host", format!("cannot define imports: {e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (e2, s2) = (engine.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !s2.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1000 / TICKS_PER_SEC));
                    e2.increment_epoch();
                }
            })
            .map_err(|e| abi("host", format!("cannot start the epoch ticker: {e}")))?;
        Ok(TransformHost {
            engine,
            linker,
            modules: Mutex::new(HashMap::new()),
            _ticker: Ticker {
                stop,
                thread: Some(thread),
            },
        })
    }

    /// Modules compiled so far (the cache is keyed by the SHA-256 of the module bytes).
    pub fn cached_modules(&self) -> usize {
        self.modules.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn module(&self, name: &str, bytes: &[u8]) -> Result<Module, TransformError> {
        let key = hex::encode(Sha256::digest(bytes));
        if let Some(m) = self.modules.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(m);
        }
        let module = Module::new(&self.engine, bytes)
            .map_err(|e| abi(name, format!("cannot compile: {e:#}")))?;
        for import in module.imports() {
            if import.module() != "weir"
                || !matches!(import.name(), "log" | "error" | "now_unix_nanos")
            {
                return Err(abi(
                    name,
                    format!(
                        "imports {}.{}, which the host does not provide",
                        import.module(),
                        import.name()
                    ),
                ));
            }
        }
        if let Ok(mut m) = self.modules.lock() {
            m.insert(key, module.clone());
        }
        Ok(module)
    }

    /// Compiles (or reuses) the module, checks its ABI and config with a first instance.
    pub fn load(&self, spec: TransformSpec) -> Result<Transform, TransformError> {
        let module = self.module(&spec.name, &spec.module)?;
        let t = Transform {
            engine: self.engine.clone(),
            linker: self.linker.clone(),
            module,
            name: spec.name,
            config: spec.config,
            limits: spec.limits,
            pool: Mutex::new(Pool::default()),
            freed: Condvar::new(),
        };
        let mut first = t.lease()?;
        first.keep = true;
        drop(first);
        Ok(t)
    }
}

/// A loaded transform: one module, its config and a bounded pool of instances.
pub struct Transform {
    engine: Engine,
    linker: Linker<GuestState>,
    module: Module,
    name: String,
    config: String,
    limits: Limits,
    pool: Mutex<Pool>,
    /// Signalled when an instance returns to the pool or its slot is freed.
    freed: Condvar,
}

/// The instances of a transform.
#[derive(Default)]
struct Pool {
    /// Instances waiting for a batch.
    idle: Vec<GuestInstance>,
    /// Instances alive: idle, running a batch, or being created. At most `max_instances`.
    live: usize,
}

/// An instance (or the slot for one being created) taken from the pool. Dropping it returns
/// the instance to the pool when `keep` is set and it is not worn out, and otherwise
/// discards it and frees its slot, also when a panic unwinds through the call.
struct Lease<'a> {
    transform: &'a Transform,
    guest: Option<GuestInstance>,
    keep: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let t = self.transform;
        // A discarded instance is dropped here, before its slot is freed and outside the lock.
        let reuse = self.guest.take().filter(|g| self.keep && !t.worn(g));
        let mut pool = t.lock_pool();
        match reuse {
            Some(g) => pool.idle.push(g),
            None => pool.live = pool.live.saturating_sub(1),
        }
        drop(pool);
        t.freed.notify_one();
    }
}

impl Transform {
    /// The transform's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Instances waiting in the pool.
    pub fn pooled_instances(&self) -> usize {
        self.lock_pool().idle.len()
    }

    /// Instances alive: pooled, running a batch or being created (at most `max_instances`).
    pub fn live_instances(&self) -> usize {
        self.lock_pool().live
    }

    /// The pool's state is consistent whenever its lock is released (nothing panics while
    /// holding it), so a poisoned lock is still usable.
    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle instance, or a new one while fewer than `max_instances` are alive; otherwise
    /// waits up to `instance_wait` for one to be given back or discarded.
    fn lease(&self) -> Result<Lease<'_>, TransformError> {
        let max = self.limits.max_instances.max(1);
        let started = Instant::now();
        let mut pool = self.lock_pool();
        let mut waiting = false;
        loop {
            if let Some(g) = pool.idle.pop() {
                return Ok(Lease {
                    transform: self,
                    guest: Some(g),
                    keep: false,
                });
            }
            if pool.live < max {
                pool.live += 1;
                break;
            }
            let left = self.limits.instance_wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                tracing::debug!(transform = %self.name, max_instances = max, "no instance free in time");
                return Err(TransformError::Busy {
                    name: self.name.clone(),
                    max_instances: max,
                    waited_ms: started.elapsed().as_millis(),
                });
            }
            if !waiting {
                waiting = true;
                tracing::trace!(transform = %self.name, max_instances = max, "all instances busy; waiting");
            }
            pool = self
                .freed
                .wait_timeout(pool, left)
                .map(|(p, _)| p)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        drop(pool);
        // The slot is taken: if instantiation fails, dropping the empty lease frees it.
        let mut lease = Lease {
            transform: self,
            guest: None,
            keep: false,
        };
        let g = GuestInstance::new(
            &self.engine,
            &self.linker,
            &self.module,
            &self.name,
            self.limits.max_memory,
            self.limits.timeout,
            self.config.as_bytes(),
        )
        .map_err(|m| abi(&self.name, m))?;
        lease.guest = Some(g);
        Ok(lease)
    }

    /// Whether an instance has served enough calls or grown too large to be reused.
    fn worn(&self, g: &GuestInstance) -> bool {
        g.calls >= self.limits.recycle_after_calls
            || g.memory.data_size(&g.store) > self.limits.recycle_memory
    }

    fn classify(&self, g: &GuestInstance, e: wasmtime::Error) -> TransformError {
        if g.store.data().hit_memory_limit {
            return TransformError::MemoryLimit {
                name: self.name.clone(),
                limit: self.limits.max_memory,
            };
        }
        if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return TransformError::Timeout {
                name: self.name.clone(),
                timeout_ms: self.limits.timeout.as_millis(),
            };
        }
        TransformError::Trap {
            name: self.name.clone(),
            message: format!("{e:#}"),
        }
    }

    /// Runs the transform on one batch of `signal`. Blocking (call it off the async threads).
    pub fn run(&self, signal: Signal, batch: &RecordBatch) -> Result<RecordBatch, TransformError> {
        let input = encode(batch).map_err(|m| abi(&self.name, m))?;
        let mut lease = self.lease()?;
        let Some(g) = lease.guest.as_mut() else {
            return Err(abi(&self.name, "no instance"));
        };
        let result = self.call(g, signal, &input);
        // A failed instance may hold broken state: never reuse it.
        lease.keep = result.is_ok();
        result
    }

    fn call(
        &self,
        g: &mut GuestInstance,
        signal: Signal,
        input: &[u8],
    ) -> Result<RecordBatch, TransformError> {
        g.calls += 1;
        {
            let st = g.store.data_mut();
            st.error = None;
            st.log_lines = 0;
            st.hit_memory_limit = false;
        }
        g.store
            .set_epoch_deadline(deadline_ticks(self.limits.timeout));
        let started = Instant::now();
        let in_ptr = g.write(input).map_err(|m| {
            if g.store.data().hit_memory_limit {
                TransformError::MemoryLimit {
                    name: self.name.clone(),
                    limit: self.limits.max_memory,
                }
            } else {
                abi(&self.name, m)
            }
        })?;
        let rc = g
            .transform
            .call(
                &mut g.store,
                (signal.code() as i32, in_ptr, input.len() as i32),
            )
            .map_err(|e| self.classify(g, e))?;
        let _ = g.free.call(&mut g.store, (in_ptr, input.len() as i32));
        if rc < 0 {
            let message = g
                .store
                .data_mut()
                .error
                .take()
                .unwrap_or_else(|| "no message".into());
            return Err(TransformError::Guest {
                name: self.name.clone(),
                code: rc,
                message,
            });
        }
        let (out_ptr, out_len) = (
            (rc as u64 >> 32) as usize,
            (rc as u64 & 0xffff_ffff) as usize,
        );
        tracing::trace!(transform = %self.name, elapsed = ?started.elapsed(), out_len, "transform call");
        if out_len == 0 {
            return Ok(RecordBatch::new_empty(signal.schema()));
        }
        let bad = |message: String| TransformError::BadOutput {
            name: self.name.clone(),
            message,
        };
        if out_len > self.limits.max_output_bytes {
            return Err(bad(format!(
                "{out_len} bytes exceeds max_output_bytes ({})",
                self.limits.max_output_bytes
            )));
        }
        let data = g.memory.data(&g.store);
        let out = data
            .get(out_ptr..out_ptr.saturating_add(out_len))
            .ok_or_else(|| {
                bad(format!(
                    "output [{out_ptr}, +{out_len}) is outside the guest memory ({} bytes)",
                    data.len()
                ))
            })?
            .to_vec();
        let _ = g.free.call(&mut g.store, (out_ptr as i32, out_len as i32));
        // Every size the output declares must be backed by its bytes before arrow-ipc, which
        // trusts them, allocates or slices anything.
        check_output(signal, &out).map_err(bad)?;
        // And should arrow-ipc still panic on something the check missed, that is this
        // call's bad output, not a crash of the agent.
        std::panic::catch_unwind(AssertUnwindSafe(|| decode(signal, &out)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::warn!(transform = %self.name, panic = %what, "decoding the output panicked");
                Err(format!("cannot decode the output: {what}"))
            })
            .map_err(bad)
    }
}

fn encode(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    // Not get_array_memory_size: arrays decoded from IPC share one buffer it counts per column.
    let mut out = Vec::with_capacity(batch.num_rows() * 64 + 1024);
    let mut w = StreamWriter::try_new(&mut out, &batch.schema()).map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(out)
}

fn decode(signal: Signal, bytes: &[u8]) -> Result<RecordBatch, String> {
    let reader =
        StreamReader::try_new(bytes, None).map_err(|e| format!("not an Arrow IPC stream: {e}"))?;
    if reader.schema() != signal.schema() {
        return Err(format!("output schema is not the {signal} schema"));
    }
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid record batch: {e}"))?;
    match batches.as_slice() {
        [] => Ok(RecordBatch::new_empty(signal.schema())),
        [one] => Ok(one.clone()),
        many => {
            arrow_select::concat::concat_batches(&signal.schema(), many).map_err(|e| e.to_string())
        }
    }
}
