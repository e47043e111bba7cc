//! Errors returned by the runner, by services and by [`TaskGroup`](crate::TaskGroup).
//!
//! * [`Error`] is what [`run_services`](crate::run_services) and
//!   [`RunnerHandle::wait`](crate::RunnerHandle::wait) return: a configuration problem
//!   found before anything started, the services that failed or hung, or a shutdown
//!   forced by a second signal.
//! * [`ServiceError`] is one failed run of one service: the error it returned or the
//!   message it panicked with, with the service name and run number.
//! * [`ConfigError`] names what is wrong with a runner's configuration.
//! * [`Report`] is what became of each service when a runner ended, returned by
//!   [`RunnerHandle::wait`](crate::RunnerHandle::wait) and carried inside its
//!   errors; [`ServiceState`] is defined here because the report and the errors
//!   name it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error, the form every service error is converted to.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with servicekit's [`Error`] as the default error type.
///
/// # Examples
///
/// ```
/// fn check() -> servicekit::Result<()> {
///     Ok(())
/// }
/// assert!(check().is_ok());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a runner did not end cleanly.
///
/// # Examples
///
/// ```
/// use servicekit::{Error, Runner, Service};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let a = Service::without_context("a", || async {});
/// let b = Service::without_context("a", || async {});
/// let err = Runner::new().signals(false).service(a).service(b).start().await.unwrap_err();
/// assert!(matches!(err, Error::Config(_)));
/// assert_eq!(err.to_string(), "invalid configuration: two services are named `a`");
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was rejected before any service started.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// One or more services failed (gave up restarting) or did not stop in time.
    #[error(transparent)]
    Services(ServiceFailures),
    /// A second SIGINT/SIGTERM arrived during a graceful shutdown: what was still
    /// running was aborted at once. `#[servicekit::main]` exits with code 130.
    #[error("shutdown forced by a second signal; aborted: {}", DisplayNames(.aborted))]
    Forced {
        /// The services that were still stopping and were aborted.
        aborted: Vec<Arc<str>>,
        /// What became of every service.
        report: Report,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// The runner's own control task panicked (a servicekit bug, or a panic in a
    /// `tracing` subscriber): the services were stopped, and this is its message.
    #[error("the runner's control task panicked: {0}")]
    Internal(String),
}

impl Error {
    /// The failed or hung services, if this error is [`Error::Services`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let err = servicekit::Error::Forced { aborted: vec![], report: Default::default() };
    /// assert!(err.failures().is_empty());
    /// ```
    pub fn failures(&self) -> &[ServiceFailure] {
        match self {
            Error::Services(f) => &f.failures,
            _ => &[],
        }
    }

    /// What became of every service, if the runner got as far as starting them
    /// ([`Error::Services`] and [`Error::Forced`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(handle: servicekit::RunnerHandle) {
    /// if let Err(e) = handle.wait().await {
    ///     for s in e.report().into_iter().flat_map(|r| r.unclean()) {
    ///         eprintln!("{s}");
    ///     }
    /// }
    /// # }
    /// ```
    pub fn report(&self) -> Option<&Report> {
        match self {
            Error::Services(f) => Some(&f.report),
            Error::Forced { report, .. } => Some(report),
            _ => None,
        }
    }

    /// Whether the shutdown was forced by a second signal.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = servicekit::Error::Forced { aborted: vec![], report: Default::default() };
    /// assert!(err.is_forced());
    /// ```
    pub fn is_forced(&self) -> bool {
        matches!(self, Error::Forced { .. })
    }
}

/// The list of failed services inside [`Error::Services`]. Its `Display` names every
/// failure; its [`source`] is the cause of the first one, so an error chain printer
/// shows the underlying error.
///
/// [`source`]: std::error::Error::source
///
/// # Examples
///
/// ```
/// use servicekit::{Error, Restart, Service, run_services};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let broken = Service::without_context("broken", || async { Err::<(), _>("no disk") })
///     .restart(Restart::Never);
/// let Err(Error::Services(failures)) = run_services([broken]).await else {
///     panic!("the service gave up");
/// };
/// assert_eq!(failures.len(), 1);
/// assert!(failures.to_string().contains("broken"));
/// # }
/// ```
#[derive(Debug)]
pub struct ServiceFailures {
    pub(crate) failures: Vec<ServiceFailure>,
    pub(crate) report: Report,
}

impl ServiceFailures {
    /// The failures, in the order they happened.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Error, Restart, Service, run_services};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let broken = Service::without_context("broken", || async { Err::<(), _>("no disk") })
    ///     .restart(Restart::Never);
    /// let Err(Error::Services(failures)) = run_services([broken]).await else {
    ///     panic!("the service gave up");
    /// };
    /// let names: Vec<&str> = failures.iter().map(|f| f.service()).collect();
    /// assert_eq!(names, ["broken"]);
    /// # }
    /// ```
    pub fn iter(&self) -> std::slice::Iter<'_, ServiceFailure> {
        self.failures.iter()
    }

    /// What became of every service, the failed ones and the others.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Error, Restart, Service, ServiceState, run_services};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let broken = Service::without_context("broken", || async { Err::<(), _>("no disk") })
    ///     .restart(Restart::Never);
    /// let Err(Error::Services(failures)) = run_services([broken]).await else {
    ///     panic!("the service gave up");
    /// };
    /// let report = failures.report();
    /// assert_eq!(report.get("broken").unwrap().state, ServiceState::Failed);
    /// # }
    /// ```
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// How many services failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Error, Restart, Service, run_services};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let broken = Service::without_context("broken", || async { Err::<(), _>("no disk") })
    ///     .restart(Restart::Never);
    /// let Err(Error::Services(failures)) = run_services([broken]).await else {
    ///     panic!("the service gave up");
    /// };
    /// assert_eq!(failures.len(), 1);
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.failures.len()
    }

    /// Whether the list is empty (never the case inside an [`Error`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Error, Restart, Service, run_services};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let broken = Service::without_context("broken", || async { Err::<(), _>("no disk") })
    ///     .restart(Restart::Never);
    /// let Err(Error::Services(failures)) = run_services([broken]).await else {
    ///     panic!("the service gave up");
    /// };
    /// assert!(!failures.is_empty());
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for ServiceFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        DisplayFailures(self).fmt(f)
    }
}

impl std::error::Error for ServiceFailures {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.failures
            .first()
            .and_then(|f| std::error::Error::source(f))
    }
}

struct DisplayFailures<'a>(&'a ServiceFailures);

impl fmt::Display for DisplayFailures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = &self.0.failures;
        if list.len() == 1 {
            return write!(f, "{}", list[0]);
        }
        write!(f, "{} services failed: ", list.len())?;
        for (i, failure) in list.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

struct DisplayNames<'a, S>(&'a [S]);

impl<S: fmt::Display> fmt::Display for DisplayNames<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing");
        }
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{name}`")?;
        }
        Ok(())
    }
}

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

/// What became of each service when a runner ended: returned by
/// [`RunnerHandle::wait`](crate::RunnerHandle::wait), and carried inside its errors
/// ([`Error::report`]) so a failure comes with the whole picture.
///
/// Every service in it has ended: its state is terminal and its run's future has
/// been dropped. The tasks tied to it
/// ([`ServiceContext::spawn`](crate::ServiceContext::spawn)) have ended too; one
/// still running at the end of its run's shutdown timeout was aborted, counted in
/// [`ServiceReport::tasks_aborted`], and awaited for up to 100 ms more so that its
/// destructors ran in the run (a task that blocks its thread is not waited for
/// longer; after a forced shutdown, aborted tasks are not waited for at all).
///
/// Its `Display` is a table of every service, one per line.
///
/// # Examples
///
/// ```
/// use servicekit::{Runner, Service, ServiceState};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> servicekit::Result<()> {
/// let handle = Runner::new()
///     .signals(false)
///     .service(Service::new("api", |ctx| async move { ctx.shutdown_requested().await }))
///     .start()
///     .await?;
/// handle.shutdown();
/// let report = handle.wait().await?;
/// let api = report.get("api").expect("api is a service");
/// assert_eq!((api.state, api.aborted), (ServiceState::Stopped, false));
/// assert!(report.is_clean());
/// println!("{report}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub(crate) services: Vec<ServiceReport>,
}

impl Report {
    /// Every service, in the order they were added.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(report: &servicekit::Report) {
    /// for s in report.services() {
    ///     println!("{}: {} after {} runs", s.name, s.state, s.runs);
    /// }
    /// # }
    /// ```
    pub fn services(&self) -> &[ServiceReport] {
        &self.services
    }

    /// The service with that name, if there is one.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(report: &servicekit::Report) {
    /// if let Some(db) = report.get("db") {
    ///     println!("db's stop took {:?}", db.stop_duration);
    /// }
    /// # }
    /// ```
    pub fn get(&self, name: &str) -> Option<&ServiceReport> {
        self.services.iter().find(|s| &*s.name == name)
    }

    /// Whether every service ended cleanly ([`ServiceReport::is_clean`]).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(servicekit::Report::default().is_clean());
    /// ```
    pub fn is_clean(&self) -> bool {
        self.services.iter().all(ServiceReport::is_clean)
    }

    /// The services that did not end cleanly, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(report: &servicekit::Report) {
    /// for s in report.unclean() {
    ///     eprintln!("{s}");
    /// }
    /// # }
    /// ```
    pub fn unclean(&self) -> impl Iterator<Item = &ServiceReport> {
        self.services.iter().filter(|s| !s.is_clean())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.services.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// What became of one service, in a [`Report`].
///
/// # Examples
///
/// ```
/// # fn f(s: &servicekit::ServiceReport) {
/// if s.aborted || s.tasks_aborted > 0 {
///     eprintln!("{} did not stop by itself", s.name);
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceReport {
    /// The service's name.
    pub name: Arc<str>,
    /// How it ended: `Stopped`, `Failed` or `Aborted`.
    pub state: ServiceState,
    /// How many runs started (0 if it never started, e.g. its dependency failed).
    pub runs: u64,
    /// How many times it was restarted after a failure.
    pub restarts: u32,
    /// Its last failure, if it ever failed (even if a later run stopped cleanly).
    pub last_error: Option<Arc<ServiceError>>,
    /// How long its last stop took, from the moment it began stopping (its
    /// dependents first) until its run and tied tasks were gone; `None` if its last
    /// run was not stopped (it returned by itself, or never started). A stop done in
    /// the same poll that asked for it counts as zero.
    pub stop_duration: Option<Duration>,
    /// Whether its last run had to be aborted: it did not return within its shutdown
    /// timeout, or a second signal forced the shutdown while it was stopping.
    pub aborted: bool,
    /// How many tasks tied to its runs were still running at the end of their run's
    /// shutdown timeout (or when a forced shutdown came) and were aborted, over
    /// every run.
    pub tasks_aborted: usize,
}

impl ServiceReport {
    /// Whether it ended cleanly: `Stopped`, nothing aborted.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(s: &servicekit::ServiceReport) -> bool {
    /// s.is_clean()
    /// # }
    /// ```
    pub fn is_clean(&self) -> bool {
        self.state == ServiceState::Stopped && !self.aborted && self.tasks_aborted == 0
    }
}

impl fmt::Display for ServiceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}`: {} after {} run{}",
            self.name,
            self.state,
            self.runs,
            if self.runs == 1 { "" } else { "s" }
        )?;
        if self.restarts > 0 {
            write!(
                f,
                ", {} restart{}",
                self.restarts,
                if self.restarts == 1 { "" } else { "s" }
            )?;
        }
        match self.stop_duration {
            Some(d) if d.is_zero() => f.write_str(", stopped at once")?,
            Some(d) => write!(f, ", stop took {d:.3?}")?,
            None => {}
        }
        if self.aborted {
            f.write_str(", its run was aborted")?;
        }
        if self.tasks_aborted > 0 {
            write!(
                f,
                ", {} tied task{} aborted",
                self.tasks_aborted,
                if self.tasks_aborted == 1 { "" } else { "s" }
            )?;
        }
        if let Some(e) = &self.last_error {
            write!(f, "; last error: {}", Chain(&**e))?;
        }
        Ok(())
    }
}

/// One service that made the runner fail.
///
/// # Examples
///
/// ```
/// use servicekit::error::FailureKind;
/// # fn show(f: &servicekit::error::ServiceFailure) {
/// match f.kind() {
///     FailureKind::GaveUp { restarts, .. } => println!("{} gave up after {restarts}", f.service()),
///     FailureKind::Hung { timeout } => println!("{} hung for {timeout:?}", f.service()),
///     _ => println!("{f}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ServiceFailure {
    pub(crate) service: Arc<str>,
    pub(crate) kind: FailureKind,
}

impl ServiceFailure {
    /// The service's name.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(x: &servicekit::error::ServiceFailure) -> &str {
    /// x.service()
    /// # }
    /// ```
    pub fn service(&self) -> &str {
        &self.service
    }

    /// What went wrong.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(x: &servicekit::error::ServiceFailure) -> bool {
    /// matches!(x.kind(), servicekit::error::FailureKind::Hung { .. })
    /// # }
    /// ```
    pub fn kind(&self) -> &FailureKind {
        &self.kind
    }
}

/// What went wrong with a [`ServiceFailure`].
///
/// # Examples
///
/// ```
/// use servicekit::error::FailureKind;
/// let k = FailureKind::Hung { timeout: std::time::Duration::from_secs(2) };
/// assert!(matches!(k, FailureKind::Hung { .. }));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FailureKind {
    /// The service failed and may not be restarted again: its policy is `never`, or it
    /// reached `max_restarts` within `within`.
    GaveUp {
        /// How many times it had been restarted after failures.
        restarts: u32,
        /// The last failure.
        error: Arc<ServiceError>,
    },
    /// The service returned an error (or panicked) after it was asked to stop, in a
    /// shutdown or a [`RunnerHandle::stop`](crate::RunnerHandle::stop). A run that
    /// fails on its own while the runner stops other services first (its dependents)
    /// is reported as a failed run ([`Event::Failed`](crate::Event::Failed), its
    /// status's `last_error`), not as this: it did not fail to stop.
    StopFailed {
        /// The failure.
        error: Arc<ServiceError>,
    },
    /// The service did not return within its `shutdown_timeout` after being asked to
    /// stop, and was aborted.
    Hung {
        /// The timeout it was given.
        timeout: Duration,
    },
    /// Tasks tied to a run with [`ServiceContext::spawn`](crate::ServiceContext::spawn)
    /// were still running when the run's `shutdown_timeout` ran out, and were aborted
    /// (hung, like a body that does not return).
    TasksHung {
        /// How many tasks were aborted.
        tasks: usize,
        /// The timeout they were given (the run's).
        timeout: Duration,
    },
    /// The group of this service gave up because of its failure (too many restarts
    /// of its members, or this member gave up), and no parent group took it: the
    /// runner shut down, or (with `OnGiveUp::Ignore` on the group) stopped the
    /// group's services.
    GroupGaveUp {
        /// The top group that gave up.
        group: Arc<str>,
        /// How many restarts of its members its window held when it gave up.
        restarts: u32,
    },
    /// The runner's own task for this service panicked (a bug in servicekit, or a
    /// panic in user code that escaped every guard). The service ended, its
    /// dependents were stopped, and the runner shut down.
    Internal {
        /// The panic's message.
        message: String,
    },
}

impl fmt::Display for ServiceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FailureKind::GaveUp { restarts: 0, .. } => {
                write!(f, "service `{}` failed", self.service)
            }
            FailureKind::GaveUp { restarts, .. } => write!(
                f,
                "service `{}` gave up after {restarts} restart{}",
                self.service,
                if *restarts == 1 { "" } else { "s" }
            ),
            FailureKind::StopFailed { .. } => {
                write!(f, "service `{}` failed while stopping", self.service)
            }
            FailureKind::GroupGaveUp { group, restarts } => write!(
                f,
                "group `{group}` gave up after {restarts} restart{} (its last failure: service `{}`)",
                if *restarts == 1 { "" } else { "s" },
                self.service
            ),
            FailureKind::Hung { timeout } => write!(
                f,
                "service `{}` did not stop within {timeout:?} and was aborted",
                self.service
            ),
            FailureKind::TasksHung { tasks, timeout } => write!(
                f,
                "service `{}`: {tasks} tied task{} did not stop within {timeout:?} and {} aborted",
                self.service,
                if *tasks == 1 { "" } else { "s" },
                if *tasks == 1 { "was" } else { "were" },
            ),
            FailureKind::Internal { message } => write!(
                f,
                "service `{}`: the runner's task for it panicked (a servicekit bug): {message}",
                self.service
            ),
        }
    }
}

impl std::error::Error for ServiceFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            FailureKind::GaveUp { error, .. } | FailureKind::StopFailed { error } => Some(&**error),
            FailureKind::Hung { .. }
            | FailureKind::TasksHung { .. }
            | FailureKind::GroupGaveUp { .. }
            | FailureKind::Internal { .. } => None,
        }
    }
}

/// The kinds of failed runs, as metric labels.
#[cfg_attr(not(any(feature = "http", feature = "metrics")), allow(dead_code))]
pub(crate) const FAILURE_LABELS: [&str; 5] = ["error", "panic", "task_error", "task_panic", "hung"];

/// One failed run of a service: the error it returned, or the message it panicked with.
///
/// # Examples
///
/// ```
/// # fn f(e: &servicekit::error::ServiceError) {
/// println!("{} run {} failed: {}", e.service(), e.run(), e);
/// if let Some(msg) = e.panic_message() {
///     println!("it panicked: {msg}");
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct ServiceError {
    pub(crate) service: Arc<str>,
    pub(crate) run: u64,
    pub(crate) kind: ServiceErrorKind,
}

pub(crate) enum ServiceErrorKind {
    Returned(BoxError),
    Panicked(String),
    Task(BoxError),
    TaskPanicked(String),
    /// The run went `silent` without a heartbeat, past its `watchdog`.
    Hung {
        watchdog: Duration,
        last_heartbeat: tokio::time::Instant,
        silent: Duration,
    },
}

/// By hand: the user's error's `Debug` is user code, and guarded.
impl fmt::Debug for ServiceErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Guarded<'a>(&'a BoxError);
        impl fmt::Debug for Guarded<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                crate::guard::write(f, "the error's Debug", |buf| {
                    use std::fmt::Write;
                    write!(buf, "{:?}", self.0)
                })
            }
        }
        match self {
            ServiceErrorKind::Returned(e) => f.debug_tuple("Returned").field(&Guarded(e)).finish(),
            ServiceErrorKind::Task(e) => f.debug_tuple("Task").field(&Guarded(e)).finish(),
            ServiceErrorKind::Panicked(m) => f.debug_tuple("Panicked").field(m).finish(),
            ServiceErrorKind::TaskPanicked(m) => f.debug_tuple("TaskPanicked").field(m).finish(),
            ServiceErrorKind::Hung {
                watchdog,
                last_heartbeat,
                silent,
            } => f
                .debug_struct("Hung")
                .field("watchdog", watchdog)
                .field("last_heartbeat", last_heartbeat)
                .field("silent", silent)
                .finish(),
        }
    }
}

impl ServiceError {
    /// The name of the service that failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(e: &servicekit::error::ServiceError) -> &str {
    /// e.service()
    /// # }
    /// ```
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The run that failed, counting from 1.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(e: &servicekit::error::ServiceError) -> bool {
    /// e.run() >= 1
    /// # }
    /// ```
    pub fn run(&self) -> u64 {
        self.run
    }

    /// The panic message, if the run panicked (in the service or in a task it spawned
    /// with [`ServiceContext::spawn`](crate::ServiceContext::spawn)).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(e: &servicekit::error::ServiceError) -> Option<&str> {
    /// e.panic_message()
    /// # }
    /// ```
    pub fn panic_message(&self) -> Option<&str> {
        match &self.kind {
            ServiceErrorKind::Panicked(m) | ServiceErrorKind::TaskPanicked(m) => Some(m),
            _ => None,
        }
    }

    /// The index of this failure's kind in [`FAILURE_LABELS`].
    pub(crate) fn label_index(&self) -> usize {
        match self.kind {
            ServiceErrorKind::Returned(_) => 0,
            ServiceErrorKind::Panicked(_) => 1,
            ServiceErrorKind::Task(_) => 2,
            ServiceErrorKind::TaskPanicked(_) => 3,
            ServiceErrorKind::Hung { .. } => 4,
        }
    }

    /// Whether the run was hung: it went longer than its
    /// [`watchdog`](crate::Service::watchdog) without a
    /// [`heartbeat`](crate::ServiceContext::heartbeat), and was stopped for it.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(e: &servicekit::error::ServiceError) {
    /// if e.is_hung() {
    ///     eprintln!("{e}"); // "service `poller` run 3 hung: no heartbeat for 30s ..."
    /// }
    /// # }
    /// ```
    pub fn is_hung(&self) -> bool {
        matches!(self.kind, ServiceErrorKind::Hung { .. })
    }

    /// When a hung run last beat (its start, if it never did); `None` if the run
    /// was not hung. On tokio's clock, so it compares with
    /// `tokio::time::Instant::now()` (and is exact on a paused clock in tests).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(e: &servicekit::error::ServiceError) {
    /// if let Some(at) = e.last_heartbeat() {
    ///     eprintln!("last heartbeat {:?} ago", at.elapsed());
    /// }
    /// # }
    /// ```
    pub fn last_heartbeat(&self) -> Option<tokio::time::Instant> {
        match self.kind {
            ServiceErrorKind::Hung { last_heartbeat, .. } => Some(last_heartbeat),
            _ => None,
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ServiceErrorKind::Returned(_) => {
                write!(f, "service `{}` run {} failed", self.service, self.run)
            }
            ServiceErrorKind::Panicked(m) => {
                write!(
                    f,
                    "service `{}` run {} panicked: {m}",
                    self.service, self.run
                )
            }
            ServiceErrorKind::Task(_) => write!(
                f,
                "a task spawned by service `{}` run {} failed",
                self.service, self.run
            ),
            ServiceErrorKind::TaskPanicked(m) => write!(
                f,
                "a task spawned by service `{}` run {} panicked: {m}",
                self.service, self.run
            ),
            ServiceErrorKind::Hung {
                watchdog, silent, ..
            } => write!(
                f,
                "service `{}` run {} hung: no heartbeat for {silent:?} (watchdog {watchdog:?})",
                self.service, self.run
            ),
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ServiceErrorKind::Returned(e) | ServiceErrorKind::Task(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A runner configuration that was rejected before any service started.
///
/// # Examples
///
/// ```
/// use servicekit::{error::ConfigError, Error, Runner, Service};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let api = Service::without_context("api", || async {}).after(["db"]);
/// let err = Runner::new().signals(false).service(api).start().await.unwrap_err();
/// assert!(matches!(err, Error::Config(ConfigError::UnknownDependency { .. })));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Two services have the same name.
    #[error("two services are named `{0}`")]
    DuplicateName(String),
    /// A service name is empty.
    #[error("a service has an empty name")]
    EmptyName,
    /// A service depends on a name no service has.
    #[error("service `{service}` depends on `{dependency}`, which is not a service of this runner")]
    UnknownDependency {
        /// The service declaring the dependency.
        service: String,
        /// The missing name.
        dependency: String,
    },
    /// The dependencies form a cycle (the names are listed along the cycle).
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A setting of one service is invalid.
    #[error("service `{service}`: {problem}")]
    Invalid {
        /// The service.
        service: String,
        /// What is wrong, naming the setting.
        problem: String,
    },
    /// A service, or a group's parent, names a group the runner does not have.
    #[error(
        "{member} is in group `{group}`, which is not defined (define it with `Runner::group`)"
    )]
    UnknownGroup {
        /// What names it: "service `x`" or "group `y`".
        member: String,
        /// The missing group.
        group: String,
    },
    /// Two groups have the same name.
    #[error("two groups are named `{0}`")]
    DuplicateGroup(String),
    /// Groups are nested in a cycle (the names are listed along it).
    #[error("groups nested in a cycle: {}", .0.join(" -> "))]
    GroupCycle(Vec<String>),
    /// A service was [added](crate::RunnerHandle::add) to a runner that is shutting
    /// down or has ended.
    #[error("cannot add service `{0}`: the runner is shutting down or has ended")]
    NotRunning(String),
}

/// Why [`RunnerHandle::remove`](crate::RunnerHandle::remove) refused.
///
/// # Examples
///
/// ```
/// use servicekit::error::RemoveError;
/// let e = RemoveError::HasDependents { service: "db".into(), dependents: vec!["api".into()] };
/// assert_eq!(
///     e.to_string(),
///     "service `db` cannot be removed while services depend on it: `api` (remove them first)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoveError {
    /// No service has that name.
    #[error(transparent)]
    Unknown(#[from] UnknownService),
    /// Services that have not been removed depend on it.
    #[error("service `{service}` cannot be removed while services depend on it: {} (remove them first)", DisplayNames(.dependents))]
    HasDependents {
        /// The service.
        service: String,
        /// The services that depend on it.
        dependents: Vec<String>,
    },
}

/// An error from [`RunnerHandle::restart`](crate::RunnerHandle::restart) or
/// [`RunnerHandle::stop`](crate::RunnerHandle::stop): no service has that name.
///
/// # Examples
///
/// ```
/// let e = servicekit::error::UnknownService("nope".into());
/// assert_eq!(e.to_string(), "no service named `nope`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no service named `{0}`")]
pub struct UnknownService(pub String);

/// Displays an error followed by its sources: `outer: inner: root cause`.
/// An error and its `source()` chain on one line, `": "` between them, for log lines.
/// The errors' `Display` and `source` are user code: a panic in one is written in its
/// place (see [`crate::guard::write`]) and the line is still written.
/// An error and its sources, as one line.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn chain_string(e: &(dyn std::error::Error + 'static)) -> String {
    Chain(e).to_string()
}

pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_chain(f, self.0, ": ")
    }
}

/// Writes `err` and each of its sources, `sep` between them, each one guarded.
pub(crate) fn write_chain(
    f: &mut fmt::Formatter<'_>,
    err: &(dyn std::error::Error + 'static),
    sep: &str,
) -> fmt::Result {
    let mut next = Some(err);
    let mut first = true;
    // A chain that loops back on itself (a bug, but user code) is cut off.
    let mut left = 64;
    while let Some(e) = next {
        if !first {
            f.write_str(sep)?;
        }
        first = false;
        crate::guard::write(f, "the error's Display", |buf| {
            use std::fmt::Write;
            write!(buf, "{e}")
        })?;
        left -= 1;
        if left == 0 {
            return f.write_str(sep).and_then(|()| f.write_str("..."));
        }
        next = crate::guard::source(e);
    }
    Ok(())
}

/// How one task of a [`TaskGroup`](crate::TaskGroup) failed.
///
/// # Examples
///
/// ```
/// use servicekit::error::TaskError;
/// # fn f(e: &TaskError) {
/// match e {
///     TaskError::Failed(err) => println!("returned an error: {err}"),
///     TaskError::Panicked(msg) => println!("panicked: {msg}"),
///     _ => {}
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task returned an error (its [`source`](std::error::Error::source)).
    #[error("task failed")]
    Failed(#[source] BoxError),
    /// The task panicked; the panic message is kept.
    #[error("task panicked: {0}")]
    Panicked(String),
}

/// The errors of a [`TaskGroup`](crate::TaskGroup), from [`TaskGroup::wait`](crate::TaskGroup::wait).
///
/// # Examples
///
/// ```
/// # fn f(e: servicekit::error::TaskGroupError) {
/// for err in e.errors() {
///     eprintln!("{err}");
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct TaskGroupError {
    errors: Vec<TaskError>,
}

impl TaskGroupError {
    pub(crate) fn new(errors: Vec<TaskError>) -> TaskGroupError {
        debug_assert!(!errors.is_empty());
        TaskGroupError { errors }
    }
}

impl fmt::Display for TaskGroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{n} task{} failed", if n == 1 { "" } else { "s" })?;
        if let Some(first) = self.errors.first() {
            f.write_str("; first: ")?;
            write_chain(f, first, ": ")?;
        }
        Ok(())
    }
}

impl std::error::Error for TaskGroupError {}

impl TaskGroupError {
    /// Every error, in completion order (fail-fast groups have exactly one).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(e: &servicekit::error::TaskGroupError) -> usize {
    /// e.errors().len()
    /// # }
    /// ```
    pub fn errors(&self) -> &[TaskError] {
        &self.errors
    }

    /// Takes the errors out.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(e: servicekit::error::TaskGroupError) -> Vec<servicekit::error::TaskError> {
    /// e.into_errors()
    /// # }
    /// ```
    pub fn into_errors(self) -> Vec<TaskError> {
        self.errors
    }
}
