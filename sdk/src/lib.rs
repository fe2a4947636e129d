//! Weir's guest SDK: write a transform in Rust, compile it to wasm32, load it in a pipeline.
//!
//! A transform is one type implementing [`Transform`] and one [`export!`] line:
//!
//! ```
//! use weir_sdk::{export, Error, Logs, Transform};
//!
//! struct DropDebug;
//!
//! impl Transform for DropDebug {
//!     type Config = ();
//!     fn new(_config: ()) -> Result<Self, Error> { Ok(DropDebug) }
//!     fn logs(&mut self, logs: &mut Logs) -> Result<(), Error> {
//!         logs.retain(|r| r.severity_number() >= 9)
//!     }
//! }
//!
//! export!(DropDebug);
//! # fn main() {}
//! ```
//!
//! The SDK handles the ABI of `docs/transform-abi.md` (exports, memory ownership, Arrow IPC in
//! and out, the error channel); transforms see typed row views and column-wise edits over the
//! Arrow columns of the lake schema. A returned [`Error`] fails the batch with its message
//! (the pipeline's `on_error` decides what happens to it); it never panics the host.
//! [`testing::run`] runs a transform natively on a batch, so `cargo test` needs no wasm.
#![warn(missing_docs)]

pub mod abi;
mod batch;
pub(crate) mod logs;
pub mod testing;

pub use batch::{Metrics, Traces};
pub use logs::{LogRecord, Logs, NewLog};
pub use weir_schema as schema;
pub use weir_schema::Signal;

/// An error that fails the batch with a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Error(pub String);

impl Error {
    /// An error with a message.
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Error {
        Error(e.to_string())
    }
}

/// A transform. `new` gets the pipeline's JSON config (typed); each signal's method gets one
/// batch to edit in place. Signals a transform does not override pass through unchanged.
pub trait Transform: Sized + 'static {
    /// The transform's configuration, deserialized from the pipeline's `config` JSON.
    type Config: serde::de::DeserializeOwned;

    /// Builds the transform from its config.
    fn new(config: Self::Config) -> Result<Self, Error>;

    /// Edits a logs batch.
    fn logs(&mut self, _logs: &mut Logs) -> Result<(), Error> {
        Ok(())
    }

    /// Edits a metrics batch.
    fn metrics(&mut self, _metrics: &mut Metrics) -> Result<(), Error> {
        Ok(())
    }

    /// Edits a traces batch.
    fn traces(&mut self, _traces: &mut Traces) -> Result<(), Error> {
        Ok(())
    }
}

/// Writes a log line to the agent's log (`level`: 1 error … 5 trace).
pub fn log(level: i32, msg: &str) {
    abi::log(level, msg);
}

/// Exports a [`Transform`] type as a Weir module (on wasm32; a no-op natively).
#[macro_export]
macro_rules! export {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod __weir_exports {
            use super::*;
            static mut STATE: Option<$t> = None;

            #[no_mangle]
            pub extern "C" fn weir_abi_version() -> i32 {
                $crate::schema::abi::ABI_VERSION
            }

            #[no_mangle]
            pub extern "C" fn weir_alloc(len: i32) -> i32 {
                $crate::abi::alloc(len)
            }

            #[no_mangle]
            pub extern "C" fn weir_free(ptr: i32, len: i32) {
                $crate::abi::free(ptr, len)
            }

            #[no_mangle]
            pub extern "C" fn weir_init(ptr: i32, len: i32) -> i32 {
                let config = unsafe { $crate::abi::input(ptr, len) };
                match $crate::abi::init::<$t>(config) {
                    Ok(t) => {
                        unsafe { *::core::ptr::addr_of_mut!(STATE) = Some(t) };
                        0
                    }
                    Err(e) => $crate::abi::fail(&e),
                }
            }

            #[no_mangle]
            pub extern "C" fn weir_transform(signal: i32, ptr: i32, len: i32) -> i64 {
                let input = unsafe { $crate::abi::input(ptr, len) };
                let state = unsafe { &mut *::core::ptr::addr_of_mut!(STATE) };
                if state.is_none() {
                    match $crate::abi::init::<$t>(b"null") {
                        Ok(t) => *state = Some(t),
                        Err(e) => return $crate::abi::fail(&e) as i64,
                    }
                }
                let Some(t) = state.as_mut() else { return -2 };
                match $crate::abi::transform(t, signal, input) {
                    Ok(out) => $crate::abi::hand_over(out),
                    Err(e) => $crate::abi::fail(&e) as i64,
                }
            }
        }
    };
}
