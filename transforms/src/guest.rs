//! One instance of a guest module: its store, exports and the state its imports write to.

use std::time::Duration;

use tracing::{debug, error, info, trace, warn};
use wasmtime::{
    Caller, Engine, Instance, Linker, Memory, Module, ResourceLimiter, Store, TypedFunc,
};

/// Longest message accepted from `weir.log` / `weir.error`.
const MAX_MESSAGE: usize = 4096;
/// Log lines accepted per call.
const MAX_LOG_LINES: u32 = 100;
/// Epoch ticks per second (the host's ticker period is 10 ms).
pub(crate) const TICKS_PER_SEC: u64 = 100;

/// What the imports and the limiter record.
pub(crate) struct GuestState {
    pub name: String,
    pub max_memory: usize,
    pub hit_memory_limit: bool,
    pub error: Option<String>,
    pub log_lines: u32,
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.hit_memory_limit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    /// One linear memory per store (a store holds one instance): `memory_growing` sees one
    /// memory at a time, so with two `max_memory` would cap each, not their total. The engine
    /// also refuses multi-memory modules at compile time; this holds even if it did not.
    fn memories(&self) -> usize {
        1
    }
}

fn read_text(caller: &mut Caller<'_, GuestState>, ptr: i32, len: i32) -> Option<String> {
    let memory = caller.get_export("memory")?.into_memory()?;
    let (ptr, len) = (ptr as u32 as usize, (len as u32 as usize).min(MAX_MESSAGE));
    let data = memory.data(&caller);
    let bytes = data.get(ptr..ptr.checked_add(len)?)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// The imports of module `weir`.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut l = Linker::new(engine);
    l.func_wrap(
        "weir",
        "log",
        |mut c: Caller<'_, GuestState>, level: i32, ptr: i32, len: i32| {
            if c.data().log_lines >= MAX_LOG_LINES {
                return;
            }
            c.data_mut().log_lines += 1;
            let Some(msg) = read_text(&mut c, ptr, len) else {
                return;
            };
            let name = c.data().name.clone();
            match level {
                1 => error!(transform = %name, "{msg}"),
                2 => warn!(transform = %name, "{msg}"),
                3 => info!(transform = %name, "{msg}"),
                4 => debug!(transform = %name, "{msg}"),
                _ => trace!(transform = %name, "{msg}"),
            }
        },
    )?;
    l.func_wrap(
        "weir",
        "error",
        |mut c: Caller<'_, GuestState>, ptr: i32, len: i32| {
            let msg = read_text(&mut c, ptr, len);
            c.data_mut().error = msg;
        },
    )?;
    l.func_wrap("weir", "now_unix_nanos", || -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    })?;
    Ok(l)
}

/// A live instance and its typed exports.
pub(crate) struct GuestInstance {
    pub store: Store<GuestState>,
    pub memory: Memory,
    pub alloc: TypedFunc<i32, i32>,
    pub free: TypedFunc<(i32, i32), ()>,
    pub transform: TypedFunc<(i32, i32, i32), i64>,
    pub calls: u64,
}

impl GuestInstance {
    /// Instantiates `module`, checks the ABI version and calls `weir_init` with `config`.
    pub fn new(
        engine: &Engine,
        linker: &Linker<GuestState>,
        module: &Module,
        name: &str,
        max_memory: usize,
        init_timeout: Duration,
        config: &[u8],
    ) -> Result<GuestInstance, String> {
        let state = GuestState {
            name: name.to_string(),
            max_memory,
            hit_memory_limit: false,
            error: None,
            log_lines: 0,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| s);
        store.set_epoch_deadline(deadline_ticks(init_timeout));
        store.epoch_deadline_trap();
        let instance: Instance = linker
            .instantiate(&mut store, module)
            .map_err(|e| format!("cannot instantiate: {e:#}"))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("no exported memory")?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "weir_abi_version")
            .map_err(|e| format!("weir_abi_version: {e}"))?
            .call(&mut store, ())
            .map_err(|e| format!("weir_abi_version failed: {e:#}"))?;
        if version != weir_schema::abi::ABI_VERSION {
            return Err(format!(
                "module implements ABI version {version}, the host implements {}",
                weir_schema::abi::ABI_VERSION
            ));
        }
        let alloc = instance
            .get_typed_func(&mut store, "weir_alloc")
            .map_err(|e| format!("weir_alloc: {e}"))?;
        let free = instance
            .get_typed_func(&mut store, "weir_free")
            .map_err(|e| format!("weir_free: {e}"))?;
        let transform = instance
            .get_typed_func(&mut store, "weir_transform")
            .map_err(|e| format!("weir_transform: {e}"))?;
        let mut g = GuestInstance {
            store,
            memory,
            alloc,
            free,
            transform,
            calls: 0,
        };
        if let Ok(init) = instance.get_typed_func::<(i32, i32), i32>(&mut g.store, "weir_init") {
            let ptr = g.write(config).map_err(|e| format!("weir_init: {e}"))?;
            let rc = init
                .call(&mut g.store, (ptr, config.len() as i32))
                .map_err(|e| format!("weir_init failed: {e:#}"))?;
            let _ = g.free.call(&mut g.store, (ptr, config.len() as i32));
            if rc < 0 {
                let msg = g.store.data_mut().error.take().unwrap_or_default();
                return Err(format!("weir_init refused the config (code {rc}): {msg}"));
            }
        }
        Ok(g)
    }

    /// Allocates guest memory and writes `bytes` there.
    pub fn write(&mut self, bytes: &[u8]) -> Result<i32, String> {
        let len = i32::try_from(bytes.len()).map_err(|_| "input larger than 2 GiB".to_string())?;
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| format!("weir_alloc failed: {e:#}"))?;
        if ptr == 0 && len > 0 {
            return Err("weir_alloc returned 0 (out of memory)".into());
        }
        self.memory
            .write(&mut self.store, ptr as u32 as usize, bytes)
            .map_err(|_| format!("weir_alloc returned {ptr}, outside the guest memory"))?;
        Ok(ptr)
    }
}

/// Epoch ticks for a timeout (at least one).
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    ((timeout.as_millis() as u64).saturating_mul(TICKS_PER_SEC) / 1000).max(1)
}

#[cfg(test)]
mod tests {
    use wasmtime::{Config, Engine, Linker, Module, Store};

    use super::GuestState;

    /// Even on an engine that accepts multi-memory modules, a store holds one memory: a second
    /// one would have a `max_memory` of its own.
    #[test]
    fn the_limiter_allows_one_memory_per_store() {
        let mut cfg = Config::new();
        cfg.wasm_multi_memory(true);
        let engine = Engine::new(&cfg).expect("engine");
        let instantiate = |wat: &str| {
            let module = Module::new(&engine, wat).expect("module");
            let mut store = Store::new(
                &engine,
                GuestState {
                    name: "t".into(),
                    max_memory: 4 << 20,
                    hit_memory_limit: false,
                    error: None,
                    log_lines: 0,
                },
            );
            store.limiter(|s| s);
            Linker::new(&engine)
                .instantiate(&mut store, &module)
                .map(|_| ())
        };
        instantiate("(module (memory 48))").expect("one memory of 3 MiB");
        let err = instantiate("(module (memory 48) (memory 48))").expect_err("two memories");
        assert!(format!("{err:#}").contains("memor"), "{err:#}");
    }
}
