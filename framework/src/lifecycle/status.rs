//! What the runner reports: each service's state (defined with the errors, which
//! report it too), a snapshot of it, and events.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ServiceError;
pub use crate::error::ServiceState;

/// A snapshot of one service, from [`RunnerHandle::status`](crate::RunnerHandle::status).
///
/// # Examples
///
/// ```
/// # fn show(s: &servicekit::ServiceStatus) {
/// println!("{}: {} (restarts: {}, up {:?})", s.name, s.state, s.restarts, s.uptime);
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// The service's name.
    pub name: Arc<str>,
    /// Its state.
    pub state: ServiceState,
    /// Whether its current run is ready (it called
    /// [`ServiceContext::ready`](crate::ServiceContext::ready), or has no context)
    /// and running.
    pub ready: bool,
    /// How many times it was restarted after a failure.
    pub restarts: u32,
    /// How many runs have started.
    pub runs: u64,
    /// The last failure, if any.
    pub last_error: Option<Arc<ServiceError>>,
    /// How long the current run has been going, if one is. A service's first run,
    /// when it has no dependencies, counts from the runner's start.
    pub uptime: Option<Duration>,
}

/// Something that happened in a runner, from [`RunnerHandle::events`](crate::RunnerHandle::events),
/// and published on the runner's bus as a typed event (subscribe to `Event` on
/// [`ServiceContext::bus`](crate::ServiceContext::bus)).
///
/// # Examples
///
/// ```
/// use servicekit::Event;
/// # fn show(ev: Event) {
/// match ev {
///     Event::State { service, state } => println!("{service} is {state}"),
///     Event::Failed { service, error } => println!("{service} failed: {error}"),
///     Event::Lagged(n) => println!("missed {n} events"),
///     _ => {}
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A service changed state.
    State {
        /// The service.
        service: Arc<str>,
        /// Its new state.
        state: ServiceState,
    },
    /// A run of a service became ready: it called
    /// [`ServiceContext::ready`](crate::ServiceContext::ready), or it has no context
    /// and started.
    Ready {
        /// The service.
        service: Arc<str>,
    },
    /// A run of a service failed (returned `Err`, panicked, or a tied task failed).
    Failed {
        /// The service.
        service: Arc<str>,
        /// The failure.
        error: Arc<ServiceError>,
    },
    /// The stream fell behind and this many events were skipped (never silently).
    Lagged(u64),
}
