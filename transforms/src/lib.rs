//! Weir's WebAssembly transform host (wasmtime). Not built yet: see the transforms issue.
//! The crate exists so the workspace has the layout of the design from the start.
#![warn(missing_docs)]
