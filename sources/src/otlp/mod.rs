//! The OTLP source: gRPC (4317) and HTTP (4318), protobuf and JSON, gzip, partial success.
//!
//! Both transports share [`decode`]: the body becomes the signal's export request, then Arrow
//! rows of the lake schema; decoding, Arrow mapping and the buffer write run together in one
//! blocking task per request, and the response waits for the batch's fate (durable, refused,
//! or full).

pub mod config;
pub mod decode;
pub mod grpc;
pub mod http;
mod service;

pub use config::{OtlpConfig, ValidOtlp};
