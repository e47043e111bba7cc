//! The messaging layer: in-process primitives services talk through. Each is a
//! public namespace with its own error types.
//!
//! * [`channel`]: broadcast with backpressure, each customer with its own buffer.
//! * [`queue`]: a work queue, each item to one receiver.
//! * [`pipeline`]: multi-stage processing with concurrent workers, built on both.
//!
//! It imports only the `sync` layer below it; the lifecycle layer sits above it.

pub mod channel;
pub mod pipeline;
pub mod queue;
