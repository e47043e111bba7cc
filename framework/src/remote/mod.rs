//! Messaging across processes and machines. Beside the in-process messaging layer
//! and above the lifecycle (its bridges run as supervised services); nothing else in
//! the crate imports it.

#[cfg(feature = "redis")]
pub mod redis;
