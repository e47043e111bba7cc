//! The `Service` value: a named, restartable unit of work and its supervision settings.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::context::ServiceContext;
use crate::error::{BoxError, ConfigError};
use crate::runner::Shared;
use crate::supervisor::{self, IntoTask, TaskFuture};

/// What one run produces: the body's result, or the payload of its panic.
/// What a run's body gave: its output, or the message of its panic.
pub(crate) type RunResult = Result<Result<(), BoxError>, String>;
/// A service's body closure until its task first runs (see [`IntoTask`]).
pub(crate) type Factory = Box<dyn IntoTask>;

/// When a service that ended is run again (OTP's restart types).
///
/// | policy | OTP name | re-run after `Ok` | re-run after `Err` or panic |
/// |---|---|---|---|
/// | [`Always`](Restart::Always) | permanent | yes | yes |
/// | [`OnFailure`](Restart::OnFailure) (default) | transient | no | yes |
/// | [`Never`](Restart::Never) | temporary | no | no |
///
/// # Examples
///
/// ```
/// use servicekit::{Restart, Service};
/// let s = Service::without_context("tick", || async {}).restart(Restart::Always);
/// assert_eq!(s.name(), "tick");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Re-run after every end, clean or not (a clean end is re-run after the base
    /// backoff delay and does not count towards `max_restarts`).
    Always,
    /// Re-run after an error or a panic; a clean return ends the service.
    #[default]
    OnFailure,
    /// Never re-run; an error or panic ends the service as failed.
    Never,
}

/// What happens when a service fails and may not be restarted any more.
///
/// # Examples
///
/// ```
/// use servicekit::{OnGiveUp, Service};
/// let s = Service::without_context("optional", || async {}).on_give_up(OnGiveUp::Ignore);
/// # drop(s);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnGiveUp {
    /// Shut the whole runner down and return an error naming the service (escalation,
    /// as an OTP supervisor that exceeds its intensity). The default.
    #[default]
    Shutdown,
    /// Leave the service `Failed` and keep the others running; the runner still reports
    /// the failure when it ends.
    Ignore,
}

/// The supervision settings of one service. Built through [`Service`]'s methods.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    pub(crate) restart: Restart,
    pub(crate) every: Option<Duration>,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) reset_after: Duration,
    pub(crate) max_restarts: u32,
    pub(crate) within: Duration,
    pub(crate) on_give_up: OnGiveUp,
    pub(crate) shutdown_timeout: Option<Duration>,
}

/// Default lower bound of the restart delay.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Default upper bound of the restart delay.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Default time a run must last without failing for the backoff to start again from its base.
pub const DEFAULT_RESET_AFTER: Duration = Duration::from_secs(60);
/// Default number of restarts allowed within [`DEFAULT_WITHIN`].
pub const DEFAULT_MAX_RESTARTS: u32 = 5;
/// Default window for [`DEFAULT_MAX_RESTARTS`].
pub const DEFAULT_WITHIN: Duration = Duration::from_secs(60);
/// Default time a service with a context has to return once asked to stop.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    /// The defaults, as one constant (a service with no settings of its own points here).
    pub(crate) const DEFAULT: Config = Config {
        restart: Restart::OnFailure,
        every: None,
        backoff_base: DEFAULT_BACKOFF_BASE,
        backoff_cap: DEFAULT_BACKOFF_CAP,
        reset_after: DEFAULT_RESET_AFTER,
        max_restarts: DEFAULT_MAX_RESTARTS,
        within: DEFAULT_WITHIN,
        on_give_up: OnGiveUp::Shutdown,
        shutdown_timeout: None,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

impl Config {
    pub(crate) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            service: name.to_owned(),
            problem,
        };
        if self.backoff_base > self.backoff_cap {
            return Err(invalid(format!(
                "`backoff` base {:?} is greater than its cap {:?}",
                self.backoff_base, self.backoff_cap
            )));
        }
        if self.within.is_zero() {
            return Err(invalid("`within` must be greater than zero".into()));
        }
        if self.every.is_some_and(|d| d.is_zero()) {
            return Err(invalid("`every` must be greater than zero".into()));
        }
        Ok(())
    }
}

/// A named, restartable unit of work, ready to be run by [`run_services`] or a
/// [`Runner`].
///
/// A `Service` runs nothing by itself: it holds a factory that the runner calls for
/// each run (so a restart gets fresh arguments) and the supervision settings. The
/// [`#[service]`](crate::service) macro builds one from an `async fn`; the
/// constructors here build one from a closure.
///
/// # Defaults
///
/// | setting | default |
/// |---|---|
/// | `restart` | [`Restart::OnFailure`] |
/// | `backoff` | 100 ms .. 30 s, exponential with full jitter |
/// | `reset_after` | 60 s |
/// | `max_restarts` / `within` | 5 in 60 s, then `on_give_up` |
/// | `on_give_up` | [`OnGiveUp::Shutdown`] |
/// | `shutdown_timeout` | the runner's ([`Runner::shutdown_timeout`], 10 s by default) |
///
/// [`run_services`]: crate::run_services
/// [`Runner`]: crate::Runner
/// [`Runner::shutdown_timeout`]: crate::Runner::shutdown_timeout
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use servicekit::{Restart, Service};
///
/// let svc = Service::new("worker", |ctx| async move {
///     ctx.ready();
///     ctx.shutdown_requested().await;
///     Ok::<(), std::io::Error>(())
/// })
/// .restart(Restart::Always)
/// .backoff(Duration::from_millis(50), Duration::from_secs(5))
/// .shutdown_timeout(Duration::from_secs(2));
/// assert_eq!(svc.name(), "worker");
/// ```
#[must_use = "a Service does nothing until it is given to a runner"]
pub struct Service {
    pub(crate) name: String,
    pub(crate) has_context: bool,
    /// Settings that differ from the defaults, and dependencies; boxed only when there
    /// are some, so a service with the defaults is a few words to build and move.
    pub(crate) extra: Option<Box<Extra>>,
    pub(crate) factory: Factory,
}

/// The rarer parts of a [`Service`].
#[derive(Debug, Default)]
pub(crate) struct Extra {
    pub(crate) config: Config,
    pub(crate) after: Vec<String>,
}

/// A body closure as given to [`Service::new`] or [`Service::without_context`],
/// kept with its type so the service's task, on its first poll, can make the boxed
/// task that stores each run's body inline (see [`supervisor::task`]).
pub(crate) struct BodyFn<F>(pub(crate) F);

impl<F, Fut> IntoTask for BodyFn<F>
where
    F: FnMut(ServiceContext) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoServiceResult,
{
    fn into_task(self: Box<Self>, shared: Arc<Shared>, idx: usize) -> TaskFuture {
        match shared.config(idx).every {
            None => Box::pin(supervisor::task(shared, idx, self.0)),
            Some(period) => {
                let runs = supervisor::periodic(self.0, period, shared.slots[idx].has_context);
                Box::pin(supervisor::task(shared, idx, runs))
            }
        }
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("has_context", &self.has_context)
            .field("config", self.config())
            .field("after", &self.dependencies())
            .finish_non_exhaustive()
    }
}

/// What a service body may return: `()` or `Result<(), E>` with `E` convertible into a
/// boxed error (`std::io::Error`, `anyhow::Error`, `Box<dyn Error + Send + Sync>`, …).
///
/// # Examples
///
/// ```
/// use servicekit::IntoServiceResult;
/// assert!(().into_service_result().is_ok());
/// assert!(Err::<(), _>(std::io::Error::other("x")).into_service_result().is_err());
/// ```
#[diagnostic::on_unimplemented(
    message = "a service must return `()` or `Result<(), E>`, not `{Self}`",
    label = "a service's body returns `()` or `Result<(), E>` with `E: Into<Box<dyn Error + Send + Sync>>`",
    note = "a value to hand on belongs in a `Channel` or a `Queue`, not in the service's result"
)]
pub trait IntoServiceResult {
    /// Converts the body's output.
    fn into_service_result(self) -> Result<(), BoxError>;
}

impl IntoServiceResult for () {
    fn into_service_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> IntoServiceResult for Result<(), E> {
    fn into_service_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

impl Service {
    /// A service whose body receives a [`ServiceContext`]: on shutdown it is asked to
    /// stop (through the context) and has its `shutdown_timeout` to return.
    ///
    /// The closure is called once per run; clone what it captures inside it.
    ///
    /// # Examples
    ///
    /// ```
    /// let svc = servicekit::Service::new("idle", |ctx| async move {
    ///     ctx.shutdown_requested().await;
    /// });
    /// # drop(svc);
    /// ```
    pub fn new<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: FnMut(ServiceContext) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoServiceResult,
    {
        Self::from_fn(name.into(), true, f)
    }

    /// A service without a context: on shutdown its future is dropped at once
    /// (destructors run), and it is ready as soon as it starts.
    ///
    /// # Examples
    ///
    /// ```
    /// let svc = servicekit::Service::without_context("ticker", || async {
    ///     tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    /// });
    /// # drop(svc);
    /// ```
    pub fn without_context<F, Fut>(name: impl Into<String>, mut f: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoServiceResult,
    {
        Self::from_fn(name.into(), false, move |_ctx| f())
    }

    pub(crate) fn from_fn<F, Fut>(name: String, has_context: bool, f: F) -> Self
    where
        F: FnMut(ServiceContext) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoServiceResult,
    {
        Service {
            name,
            has_context,
            extra: None,
            factory: Box::new(BodyFn(f)),
        }
    }

    /// The rarer settings, boxed on first use.
    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The settings (the defaults unless one was set).
    pub(crate) fn config(&self) -> &Config {
        self.extra.as_ref().map_or(&Config::DEFAULT, |e| &e.config)
    }

    /// The names given to [`after`](Service::after).
    pub(crate) fn dependencies(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |e| &e.after)
    }

    /// The service's name.
    ///
    /// # Examples
    ///
    /// ```
    /// let svc = servicekit::Service::without_context("db", || async {});
    /// assert_eq!(svc.name(), "db");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the restart policy (default [`Restart::OnFailure`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{Restart, Service};
    /// let s = Service::without_context("x", || async {}).restart(Restart::Never);
    /// # drop(s);
    /// ```
    pub fn restart(mut self, policy: Restart) -> Self {
        self.extra().config.restart = policy;
        self
    }

    /// Makes the service periodic: the body runs every `period` (the first run at
    /// once), never two at once; ticks missed while a run was too long are skipped.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let s = servicekit::Service::without_context("gc", || async {})
    ///     .every(Duration::from_secs(5));
    /// # drop(s);
    /// ```
    pub fn every(mut self, period: Duration) -> Self {
        self.extra().config.every = Some(period);
        self
    }

    /// Sets the restart delay bounds: the `n`-th consecutive restart waits a random time
    /// in `[base, min(cap, base × 2ⁿ)]` (exponential growth with full jitter above the
    /// base). `base > cap` is rejected when the runner starts.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let s = servicekit::Service::without_context("x", || async {})
    ///     .backoff(Duration::from_millis(10), Duration::from_secs(1));
    /// # drop(s);
    /// ```
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        let config = &mut self.extra().config;
        config.backoff_base = base;
        config.backoff_cap = cap;
        self
    }

    /// A run that lasted at least this long before failing starts the backoff again
    /// from its base.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let s = servicekit::Service::without_context("x", || async {})
    ///     .reset_after(Duration::from_secs(30));
    /// # drop(s);
    /// ```
    pub fn reset_after(mut self, period: Duration) -> Self {
        self.extra().config.reset_after = period;
        self
    }

    /// Restart intensity: at most `max_restarts` restarts after failures within any
    /// window of length `within`; one more failure gives up (see [`OnGiveUp`]).
    /// `within` of zero is rejected when the runner starts.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let s = servicekit::Service::without_context("x", || async {})
    ///     .max_restarts(3, Duration::from_secs(10));
    /// # drop(s);
    /// ```
    pub fn max_restarts(mut self, max_restarts: u32, within: Duration) -> Self {
        let config = &mut self.extra().config;
        config.max_restarts = max_restarts;
        config.within = within;
        self
    }

    /// What to do when the service gives up (default [`OnGiveUp::Shutdown`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{OnGiveUp, Service};
    /// let s = Service::without_context("x", || async {}).on_give_up(OnGiveUp::Ignore);
    /// # drop(s);
    /// ```
    pub fn on_give_up(mut self, action: OnGiveUp) -> Self {
        self.extra().config.on_give_up = action;
        self
    }

    /// How long this service has to return once asked to stop before it is aborted
    /// and reported as hung (default: the runner's).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let s = servicekit::Service::new("x", |ctx| async move { ctx.shutdown_requested().await })
    ///     .shutdown_timeout(Duration::from_secs(2));
    /// # drop(s);
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.extra().config.shutdown_timeout = Some(timeout);
        self
    }

    /// Services that must be ready before this one starts; they stop after it.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = servicekit::Service::without_context("api", || async {}).after(["db", "cache"]);
    /// # drop(s);
    /// ```
    pub fn after<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra().after.extend(names.into_iter().map(Into::into));
        self
    }
}
