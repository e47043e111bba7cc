//! The bottom layer: crate-private primitives the layers above share.
//!
//! * [`Mutex`]: the lock of the messaging hot paths and of the runner's per-service
//!   state, a spin lock that releases with a plain store (see `lock.rs` for why,
//!   and BENCHMARKS.md for what it buys against `std::sync::Mutex`).
//! * [`Signal`]: wakes one waiting task and keeps a permit if it is not waiting.
//! * A shim: built with `--cfg servicekit_loom`, `Arc`, the atomics and the lock are
//!   loom's, so the model tests (`framework/tests/loom_channel.rs`) explore every
//!   interleaving of the code that ships.

#[cfg(not(servicekit_loom))]
mod lock;
mod signal;

#[cfg(not(servicekit_loom))]
pub(crate) use lock::{Mutex, MutexGuard};
pub(crate) use signal::Signal;

/// Under loom, the lock is loom's (the spin lock's exclusion is the `spin` crate's;
/// what loom checks here is the lock-free code around it).
#[cfg(servicekit_loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

#[cfg(servicekit_loom)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(servicekit_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(servicekit_loom)]
pub(crate) use loom::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};
#[cfg(not(servicekit_loom))]
pub(crate) use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};
