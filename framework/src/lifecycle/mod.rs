//! The lifecycle layer: services, their supervision, the runner, signals and
//! structured concurrency. The main types are re-exported at the crate root; this
//! namespace holds the rest ([`ShutdownRequested`], [`Events`], [`IntoServiceResult`]).
//!
//! How the files depend on each other (each only on those listed before it):
//!
//! * `status`: what the runner reports ([`ServiceState`], [`ServiceStatus`], [`Event`]);
//!   `config`: a service's settings and their defaults; `body`: what a body returns;
//!   `group`: [`Group`] and [`Strategy`], checked at start; `slots`: the table of a
//!   runner's slots, which grows as services are added at runtime.
//! * `state`: the slots every part of a runner shares (phase, commands, wake-ups).
//! * `context`: [`ServiceContext`], a run's view of its slot.
//! * `supervisor`: one per service, in the service's task: runs, stops and restarts it.
//! * `service`: the [`Service`] value; `graph`: names, dependencies, start order.
//! * `signals`, `handle` ([`RunnerHandle`]), `runner` ([`Runner`], [`run_services`]).
//! * `task_group`: [`TaskGroup`], on its own.
//!
//! # How a runner works
//!
//! * **One task per service.** Each service's tokio task holds its supervisor, which
//!   waits for the dependencies, runs the body, stops it and decides whether and when
//!   to run it again ([`Restart`], backoff, the restart window). The body is polled
//!   inside that task under `catch_unwind`, so a panic is a failure of the run, and
//!   the task itself is guarded: if the runner's own code panics, the service ends
//!   `Failed` with an internal failure instead of leaving `wait()` waiting.
//! * **Shared slots, no control loop in between.** The services' state lives in one
//!   array of slots shared by the supervisors, the contexts and the [`RunnerHandle`].
//!   Whoever changes what a supervisor cares about (a dependency's readiness, a
//!   command, shutdown) stores it in the slot and signals that supervisor, which
//!   re-examines everything when woken; the signal keeps a permit, so no wake-up is
//!   lost. A slot's phase packs the current run number with its flags, so a
//!   `ready()` from an old run's context is told apart atomically; a stop request is
//!   a number that only goes up, so an old run's context always sees it.
//! * **Stopping** a run: its dependents stop first (the body keeps running for them),
//!   then the body is asked to stop ([`ServiceContext::shutdown_requested`]) and
//!   given its shutdown timeout (a body without a context is dropped at once), then
//!   the tasks tied to it ([`ServiceContext::spawn`]) get what is left of the timeout
//!   and are aborted after it.
//! * **The runner's scope.** A runner has an [`EventBus`](crate::bus::EventBus) (its
//!   own, or the one given to [`Runner::bus`]) and a [`bus::scope`](crate::bus::scope)
//!   frame: each body and each tied task is polled inside it, so
//!   [`bus::ctx`](crate::bus::ctx) works in services, and every [`Event`] is published
//!   on that bus as a typed event. When the last service has ended, the runner's own
//!   bus closes and the tasks services spawned with `bus::ctx::spawn` get the
//!   shutdown timeout to finish before they are aborted.
//! * **A changing set.** Services added at runtime get a slot in segments that never
//!   move (`slots`), so a slot is found by index without a lock; a registry of names
//!   and of dependents added since is made on the first add or remove. A removed
//!   service's slot stays, marked removed.
//! * **Groups** (`group`, `supervisor::groups`): a member's failed run, as its
//!   supervisor decides what follows, counts in its group's window; the group moves
//!   the other members with the same restart and stop commands the handle sends, or
//!   gives up and escalates up the tree.
//! * **Watchdog and report.** A watchdog is one more timer polled with the body; the
//!   report is read from the slots, which outlive the runner's end with the handle.
//! * **Signals** (Unix): signal-hook delivers SIGINT, SIGTERM, SIGQUIT and SIGHUP to
//!   the runner while it runs; outside a runner the signals do what they did before.
//!   Under `#[servicekit::main]` a thread outside the runtime counts SIGINT and
//!   SIGTERM and ends the process with 130 shortly after a second one, whatever is
//!   still running.

mod body;
pub(crate) mod config;
mod context;
mod graph;
mod group;
mod handle;
pub(crate) mod observe;
mod runner;
mod service;
pub(crate) mod signals;
mod slots;
mod state;
mod status;
mod supervisor;
mod task_group;

pub use body::IntoServiceResult;
pub use config::{OnGiveUp, Reload, Restart};
pub use context::{Reloads, ServiceContext, ShutdownRequested};
pub use group::{Group, Strategy};
pub use handle::{Events, RunnerHandle};
pub use runner::{Runner, run_services};
pub use service::Service;
pub use status::{Event, ServiceState, ServiceStatus};
pub use task_group::TaskGroup;
