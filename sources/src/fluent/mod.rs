//! The Fluent forward source (TCP 24224): the forward protocol v1 as Fluentd, Fluent Bit and
//! the fluent-logger libraries speak it.
//!
//! Every complete message already read from a connection is decoded into one batch and written
//! to the buffer at once; then, for messages that carried a `chunk` option, `{"ack": chunk}` is
//! sent, in order. An ack is sent only after the batch is durable.
//!
//! When the buffer is full: if every message of the batch asked for an ack, none is acked and
//! the batch is dropped (the client resends it after its ack timeout); otherwise the
//! connection stops reading and retries until the batch fits (TCP backpressure), since a client
//! without acks would never resend.
//!
//! A broken stream (invalid msgpack, a message that is not forward protocol, a frame over
//! `max_frame_bytes`) closes that connection only; messages decoded before the broken one are
//! still written and acked.

pub mod config;
pub mod decode;
pub mod frame;
pub mod handshake;
mod service;

pub use config::{FluentConfig, ValidFluent};
pub use service::{FluentService, SOURCE};
