//! The messaging layer: in-process primitives services talk through. Each is a
//! public namespace with its own error types.
//!
//! * [`channel`]: broadcast with backpressure, each customer with its own buffer.
//! * [`queue`]: a work queue, each item to one receiver.
//! * [`pipeline`]: multi-stage processing with concurrent workers, built on both.
//! * [`hub`]: named channels and queues, with prefix broadcast, replay for late
//!   customers, configuration and byte streams, built on both.
//! * [`bus`]: a typed, scoped event bus (each event to every subscription of its
//!   exact type), built on the channel; scopes carry state and tasks.
//!
//! It imports only the `sync` layer below it; the lifecycle layer sits above it.

pub mod bus;
pub mod channel;
pub mod hub;
pub mod pipeline;
pub mod queue;
