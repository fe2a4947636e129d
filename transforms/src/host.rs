//! The host: a shared engine with an epoch ticker, a module cache, and transforms with their
//! instance pools.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Memory cap of an instance.
    pub max_memory: usize,
    /// Deadline of one call.
    pub timeout: Duration,
    /// Largest output accepted; every size the output declares is checked against the
    /// output's real size before it is decoded.
    pub max_output_bytes: usize,
    /// Calls after which an instance is replaced.
    pub recycle_after_calls: u64,
    /// Memory size past which an instance is replaced after its call.
    pub recycle_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory: 64 << 20,
            timeout: Duration::from_secs(1),
            max_output_bytes: 64 << 20,
            recycle_after_calls: 10_000,
            recycle_memory: 32 << 20,
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
            pool: Mutex::new(Vec::new()),
        };
        let first = t.instance()?;
        t.give_back(first);
        Ok(t)
    }
}

/// A loaded transform: one module, its config and a pool of instances.
pub struct Transform {
    engine: Engine,
    linker: Linker<GuestState>,
    module: Module,
    name: String,
    config: String,
    limits: Limits,
    pool: Mutex<Vec<GuestInstance>>,
}

impl Transform {
    /// The transform's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Instances waiting in the pool.
    pub fn pooled_instances(&self) -> usize {
        self.pool.lock().map(|p| p.len()).unwrap_or(0)
    }

    fn instance(&self) -> Result<GuestInstance, TransformError> {
        if let Some(g) = self.pool.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(g);
        }
        GuestInstance::new(
            &self.engine,
            &self.linker,
            &self.module,
            &self.name,
            self.limits.max_memory,
            self.limits.timeout,
            self.config.as_bytes(),
        )
        .map_err(|m| abi(&self.name, m))
    }

    fn give_back(&self, g: GuestInstance) {
        let worn = g.calls >= self.limits.recycle_after_calls
            || g.memory.data_size(&g.store) > self.limits.recycle_memory;
        if worn {
            return;
        }
        if let Ok(mut p) = self.pool.lock() {
            p.push(g);
        }
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
        let mut g = self.instance()?;
        let result = self.call(&mut g, signal, &input);
        match &result {
            // A failed instance may hold broken state: never reuse it.
            Err(_) => {}
            Ok(_) => self.give_back(g),
        }
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
