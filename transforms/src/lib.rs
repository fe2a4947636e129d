//! Weir's WebAssembly transform host.
//!
//! A transform is a core wasm module that implements the ABI of `docs/transform-abi.md`:
//! the host hands it one whole batch as an Arrow IPC stream and gets one back. This crate
//! compiles modules once (cached by content hash on a shared [`wasmtime::Engine`]), keeps a
//! bounded pool of reusable instances per transform, and runs every call under a memory cap
//! (a [`wasmtime::ResourceLimiter`]; one linear memory per instance) and a deadline (epoch
//! interruption). The output's declared sizes are checked against its real size before
//! arrow-ipc decodes it. A trap, a timeout, a memory limit, an ABI violation or a bad output
//! is an error of the call, never a crash of the agent; the instance is then discarded.
#![warn(missing_docs)]

mod guest;
mod host;
mod ipc;
pub mod pipeline;

pub use host::{Limits, Transform, TransformHost, TransformSpec};
pub use pipeline::{OnError, PipelineError, PipelineSpec, Pipelines, StepMetrics, StepSpec};

/// Why a transform call failed. The kind is the `kind` label of the error metrics.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// The module could not be compiled or instantiated, or breaks the ABI.
    #[error("transform {name}: ABI violation: {message}")]
    Abi {
        /// Transform name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The guest trapped.
    #[error("transform {name}: trapped: {message}")]
    Trap {
        /// Transform name.
        name: String,
        /// The trap.
        message: String,
    },
    /// The call ran past its deadline.
    #[error("transform {name}: timed out after {timeout_ms} ms")]
    Timeout {
        /// Transform name.
        name: String,
        /// The deadline.
        timeout_ms: u128,
    },
    /// The guest tried to grow its memory past the cap.
    #[error("transform {name}: memory limit of {limit} bytes reached")]
    MemoryLimit {
        /// Transform name.
        name: String,
        /// The cap.
        limit: usize,
    },
    /// The output is not a valid IPC stream of the input's schema, or too large.
    #[error("transform {name}: bad output: {message}")]
    BadOutput {
        /// Transform name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Every instance of the transform (`max_instances`) stayed busy for `instance_wait`.
    #[error(
        "transform {name}: all {max_instances} instances stayed busy for {waited_ms} ms (max_instances)"
    )]
    Busy {
        /// Transform name.
        name: String,
        /// The pool's bound.
        max_instances: usize,
        /// How long the batch waited.
        waited_ms: u128,
    },
    /// The guest reported an error for the batch.
    #[error("transform {name}: {message} (code {code})")]
    Guest {
        /// Transform name.
        name: String,
        /// The negative result code.
        code: i64,
        /// The message set with `weir.error`, if any.
        message: String,
    },
}

impl TransformError {
    /// The error kind: `abi`, `trap`, `timeout`, `memory_limit`, `bad_output`, `busy`,
    /// `guest_error`.
    pub fn kind(&self) -> &'static str {
        match self {
            TransformError::Abi { .. } => "abi",
            TransformError::Trap { .. } => "trap",
            TransformError::Timeout { .. } => "timeout",
            TransformError::MemoryLimit { .. } => "memory_limit",
            TransformError::BadOutput { .. } => "bad_output",
            TransformError::Busy { .. } => "busy",
            TransformError::Guest { .. } => "guest_error",
        }
    }
}
