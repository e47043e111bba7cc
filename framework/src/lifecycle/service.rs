//! The `Service` value: a named, restartable unit of work, its settings and its
//! dependencies. It runs nothing by itself: a runner starts it.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::body::IntoServiceResult;
use super::config::{Config, OnGiveUp, Reload, Restart};
use super::context::ServiceContext;
use super::state::Slot;
use super::supervisor::{self, Factory};

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
    pub(crate) group: Option<String>,
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
            factory: supervisor::factory(f),
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

    /// The group given to [`group`](Service::group).
    pub(crate) fn group_name(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.group.as_deref())
    }

    /// Makes the service a member of a group (defined with
    /// [`Runner::group`](crate::Runner::group)): its failures count in the group's
    /// restart intensity and trigger the group's [`Strategy`](crate::Strategy).
    /// A group the runner does not have is an error at start (or at
    /// [`add`](crate::RunnerHandle::add)).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = servicekit::Service::without_context("reader", || async {}).group("ingest");
    /// # drop(s);
    /// ```
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.extra().group = Some(group.into());
        self
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

    /// Gives the service another name: to run one `#[service]` fn (whose name is
    /// fixed) more than once, or to name an instance after what it serves.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{service, ServiceContext};
    ///
    /// #[service]
    /// async fn poller(ctx: ServiceContext, url: String) {
    ///     ctx.ready();
    ///     // ... poll `url` until shutdown ...
    /// }
    ///
    /// let a = poller("https://a.example".into()).named("poller-a");
    /// let b = poller("https://b.example".into()).named("poller-b");
    /// assert_eq!((a.name(), b.name()), ("poller-a", "poller-b"));
    /// ```
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A pool of `n` instances of a service, each supervised on its own: `make` is
    /// called once per instance and each is named `<its name>#<i>` (`worker#0`,
    /// `worker#1`, ...), so status and events list them together.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{service, Queue, Service, ServiceContext};
    ///
    /// #[service]
    /// async fn worker(ctx: ServiceContext, jobs: Queue<u64>) {
    ///     let rx = jobs.receiver();
    ///     ctx.ready();
    ///     while let Some(Ok(job)) = ctx.until_shutdown(rx.recv()).await {
    ///         println!("job {job}");
    ///     }
    /// }
    ///
    /// let jobs = Queue::bounded(100);
    /// let pool = Service::replicas(3, || worker(jobs.clone()));
    /// let names: Vec<_> = pool.iter().map(|s| s.name()).collect();
    /// assert_eq!(names, ["worker#0", "worker#1", "worker#2"]);
    /// ```
    pub fn replicas(n: usize, mut make: impl FnMut() -> Service) -> Vec<Service> {
        (0..n)
            .map(|i| {
                let service = make();
                let name = format!("{}#{i}", service.name);
                service.named(name)
            })
            .collect()
    }

    /// Sets what a reload does to it (default [`Reload::Restart`]; [`Reload::Hook`]
    /// to take reloads itself through [`ServiceContext::reloads`]).
    ///
    /// [`ServiceContext::reloads`]: crate::ServiceContext::reloads
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{Reload, Service};
    /// let s = Service::without_context("x", || async {}).reload(Reload::Hook);
    /// # drop(s);
    /// ```
    pub fn reload(mut self, reload: Reload) -> Self {
        self.extra().config.reload = reload;
        self
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

    /// Watches each run for hangs: a run that goes `period` without calling
    /// [`ServiceContext::heartbeat`](crate::ServiceContext::heartbeat) (counted from
    /// its start) is hung. It is asked to stop, aborted if it has not returned within
    /// its shutdown timeout, reported as a failed run whose error says it hung and
    /// when it last beat ([`ServiceError::is_hung`](crate::error::ServiceError::is_hung)),
    /// and restarted per its policy, like any failure.
    ///
    /// Only a running run is watched: not while it waits for its dependencies, for
    /// its restart delay, or while it stops. A periodic service
    /// ([`every`](Self::every)) beats at the start and end of each tick by itself, so
    /// its watchdog catches a tick that takes too long; it must be longer than the
    /// period. Any other service needs a context to beat with: a watchdog on
    /// [`Service::without_context`] is rejected when the runner starts.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let s = servicekit::Service::new("poller", |ctx| async move {
    ///     while ctx.until_shutdown(tokio::time::sleep(Duration::from_secs(1))).await.is_some() {
    ///         // ... one round of work ...
    ///         ctx.heartbeat();
    ///     }
    /// })
    /// .watchdog(Duration::from_secs(30));
    /// # drop(s);
    /// ```
    pub fn watchdog(mut self, period: Duration) -> Self {
        self.extra().config.watchdog = Some(period);
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

impl Service {
    /// Its slot in a runner (with its dependencies and dependents as indices) and
    /// the factory of its task. Its settings get the runner's shutdown timeout if
    /// they set none.
    pub(crate) fn into_slot(
        self,
        deps: Vec<usize>,
        dependents: Vec<usize>,
        group: u32,
        shutdown_timeout: Duration,
    ) -> (Slot, Factory) {
        let Service {
            name,
            has_context,
            extra,
            factory,
        } = self;
        let config = extra.map(|extra| {
            let mut config = extra.config;
            config.shutdown_timeout = Some(config.shutdown_timeout.unwrap_or(shutdown_timeout));
            Box::new(config)
        });
        (
            Slot::new(name, has_context, config, deps, dependents, group),
            factory,
        )
    }
}
