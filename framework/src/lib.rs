//! servicekit: programs made of many long-running services, on tokio.
//!
//! * [`#[service]`](macro@service) turns an `async fn` into a restartable [`Service`]:
//!   restart policies, exponential backoff with jitter, restart limits that escalate,
//!   panics caught, periodic services, dependencies and readiness.
//! * [`run_services`] and [`Runner`] run many services and shut them down gracefully on
//!   SIGINT/SIGTERM (a second signal forces), with per-service timeouts.
//! * [`#[servicekit::main]`](macro@main) builds the runtime, sets up tracing and turns
//!   the outcome into an exit code.
//! * [`TaskGroup`] is structured concurrency outside services.
//! * [`Channel`] / [`Customer`] broadcast messages to every connected customer, each
//!   with its own buffer bound, the sender waiting for the slowest (see [`channel`]).
//! * [`Queue`] is a work queue (each item to one receiver); [`Pipeline`] runs
//!   multi-stage processing with concurrent workers (see [`pipeline`]).
//! * [`EventBus`](bus::EventBus) delivers typed events to every subscription of their
//!   exact type; [`bus::scope`] gives a part of the program its own bus and state,
//!   reachable through [`bus::ctx`] (see [`bus`]).
//! * [`Hub`](hub::Hub) holds named channels and queues: broadcast by prefix with a
//!   report, replay for late customers, byte streams (see [`hub`]).
//! * `redis::RedisChannel` (feature `redis`) carries typed messages between
//!   processes and machines through Redis: ephemeral (pub/sub, at most once) or
//!   durable (streams and consumer groups, at least once), with a sticky close.
//! * [`ops`]: systemd notify and watchdog, and (features `http`, `metrics`) health,
//!   readiness, status and metrics over HTTP with a live status page.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use servicekit::{run_services, service, ServiceContext};
//!
//! #[service(restart = "always", backoff = "100ms..10s")]
//! async fn heartbeat(ctx: ServiceContext, every: Duration) -> std::io::Result<()> {
//!     while ctx.until_shutdown(tokio::time::sleep(every)).await.is_some() {
//!         println!("beat");
//!     }
//!     Ok(())
//! }
//!
//! #[servicekit::main]
//! async fn main() -> servicekit::Result<()> {
//!     run_services([heartbeat(Duration::from_secs(1))]).await
//! }
//! ```
//!
//! # Restart policies
//!
//! | `restart` | OTP | after `Ok` | after `Err` / panic |
//! |---|---|---|---|
//! | `"always"` | permanent | run again (after the base delay) | run again (after backoff) |
//! | `"on-failure"` (default) | transient | end (`Stopped`) | run again (after backoff) |
//! | `"never"` | temporary | end (`Stopped`) | give up (`Failed`) |
//!
//! Failures are limited to `max_restarts` within `within` (default 5 in 60 s); one more
//! and the service gives up: by default the whole runner shuts down and returns an
//! error naming it (`on_give_up = "ignore"` keeps the others running).
//!
//! # Signals and exit codes
//!
//! | event | effect |
//! |---|---|
//! | SIGINT, SIGTERM, SIGQUIT | graceful shutdown, reverse dependency order |
//! | second SIGINT or SIGTERM during shutdown | abort what is left; exit code 130 |
//! | SIGHUP | restart every service in dependency order, except those that take reloads themselves (`reload = "hook"`, `ctx.reloads()`) |
//!
//! `#[servicekit::main]` exits with 0 after a clean shutdown, 1 when a service failed
//! or hung or `main` returned another error (the error chain is printed to stderr), and
//! 130 after a forced shutdown.
//!
//! # Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `serde` | off | `hub::HubConfig` can be deserialized (a hub configured from a file) |
//! | `http` | off | `ops::http`: `/healthz`, `/readyz`, `/status`, `/metrics` and a live status page (hyper) |
//! | `metrics` | off | `ops::metrics`: the runners' metrics through the `metrics` facade |
//! | `redis` | off | `servicekit::redis`: channels across machines over Redis (redis-rs 1.x) |
//! | `tracing-subscriber` | on | `#[servicekit::main]` installs a `tracing-subscriber` fmt layer on stderr, filtered by `RUST_LOG` (default `info`) |
//!
//! A library that depends on servicekit can take it with `default-features = false`
//! and leave the choice of subscriber to the binary. Without the feature `main`
//! installs no subscriber, and writing `#[servicekit::main(tracing = true)]` is a
//! compile error that names the feature.

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

// Layers, from the bottom up; each imports only the ones below it (`.ci/layers`
// checks it). `error` and `guard` are shared by all of them; `rt` sits on top.
mod sync;

mod messaging;

pub mod lifecycle;

pub mod error;
mod guard;
pub mod ops;
mod remote;

#[doc(hidden)]
#[path = "rt.rs"]
pub mod __private;

#[doc(inline)]
pub use servicekit_macros::{main, service};

pub use error::{BoxError, Error, FailureKind, Report, Result, ServiceFailure, ServiceReport};
pub use lifecycle::{
    Event, Group, OnGiveUp, Reload, Restart, Runner, RunnerHandle, Service, ServiceContext,
    ServiceState, ServiceStatus, Strategy, TaskGroup, run_services,
};
pub use messaging::{bus, channel, hub, pipeline, queue};
#[cfg(feature = "redis")]
pub use remote::redis;

pub use channel::{Channel, Customer};
pub use pipeline::{Pipeline, stage};
pub use queue::Queue;
pub use tokio_util::sync::CancellationToken;
