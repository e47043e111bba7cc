//! What the runner reports: each service's state, a snapshot of it, and events.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ServiceError;

/// The state of one service.
///
/// `Starting → Running → (Restarting → Running)* → Stopping → Stopped | Failed |
/// Aborted`. A service waiting for its dependencies is `Starting`.
///
/// # Examples
///
/// ```
/// use servicekit::ServiceState;
/// assert!(ServiceState::Stopped.is_terminal());
/// assert!(!ServiceState::Running.is_terminal());
/// assert_eq!(ServiceState::Restarting.to_string(), "restarting");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceState {
    /// Created, or waiting for its dependencies to be ready.
    Starting,
    /// A run is in progress.
    Running,
    /// The last run ended and the next one waits for its backoff delay.
    Restarting,
    /// Asked to stop; waiting for dependents, then for the run to return.
    Stopping,
    /// Ended without error (terminal).
    Stopped,
    /// Gave up, failed while stopping, or its runner task failed (terminal).
    Failed,
    /// Did not stop by itself and was aborted: its run, or a task tied to it, was
    /// still running after its shutdown timeout, or a second signal forced the
    /// shutdown while it was still stopping (terminal). Its future was dropped.
    Aborted,
}

impl ServiceState {
    /// Whether the service has ended for good.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(servicekit::ServiceState::Failed.is_terminal());
    /// ```
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ServiceState::Stopped | ServiceState::Failed | ServiceState::Aborted
        )
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Restarting => "restarting",
            ServiceState::Stopping => "stopping",
            ServiceState::Stopped => "stopped",
            ServiceState::Failed => "failed",
            ServiceState::Aborted => "aborted",
        })
    }
}

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
