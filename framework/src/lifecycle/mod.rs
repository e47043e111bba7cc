//! The lifecycle layer: services, their supervision, the runner, signals and
//! structured concurrency. The main types are re-exported at the crate root; this
//! namespace holds the rest ([`ShutdownRequested`], [`Events`], [`IntoServiceResult`]).
//!
//! How the files depend on each other (each only on those listed before it):
//!
//! * `status`: what the runner reports ([`ServiceState`], [`ServiceStatus`], [`Event`]);
//!   `config`: a service's settings and their defaults; `body`: what a body returns.
//! * `state`: the slots every part of a runner shares (phase, commands, wake-ups).
//! * `context`: [`ServiceContext`], a run's view of its slot.
//! * `supervisor`: one per service, in the service's task: runs, stops and restarts it.
//! * `service`: the [`Service`] value; `graph`: names, dependencies, start order.
//! * `signals`, `handle` ([`RunnerHandle`]), `runner` ([`Runner`], [`run_services`]).
//! * `task_group`: [`TaskGroup`], on its own.

mod body;
pub(crate) mod config;
mod context;
mod graph;
mod handle;
mod runner;
mod service;
pub(crate) mod signals;
mod state;
mod status;
mod supervisor;
mod task_group;

pub use body::IntoServiceResult;
pub use config::{OnGiveUp, Restart};
pub use context::{ServiceContext, ShutdownRequested};
pub use handle::{Events, RunnerHandle};
pub use runner::{Runner, run_services};
pub use service::Service;
pub use status::{Event, ServiceState, ServiceStatus};
pub use task_group::TaskGroup;
