//! Weir's guest SDK for transforms compiled to wasm32. Not built yet: see the transforms
//! issue. It re-exports the shared schema crate so guests and host agree by construction.
#![warn(missing_docs)]

pub use weir_schema as schema;
