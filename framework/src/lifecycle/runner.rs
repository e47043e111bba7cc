//! The runner: validates a set of services, starts one task per service
//! (dependencies first), relays signals, and hands back a [`RunnerHandle`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::DEFAULT_SHUTDOWN_TIMEOUT;
use super::graph;
use super::group::{self, Group, NO_GROUP};
use super::handle::RunnerHandle;
use super::service::Service;
use super::signals;
use super::state::Shared;
use super::supervisor;
use crate::error::{ConfigError, Error, Result};
use crate::messaging::bus::{EventBus, Frame};

/// Builds and starts a set of services.
///
/// [`run_services`] is `Runner::new().services(..).run()`; use the builder to set the
/// runner-wide shutdown timeout, turn signal handling off, or get a [`RunnerHandle`]
/// with status, events and per-service control.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use servicekit::{Runner, Service};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> servicekit::Result<()> {
/// let handle = Runner::new()
///     .shutdown_timeout(Duration::from_secs(5))
///     .signals(false)
///     .service(Service::new("idle", |ctx| async move { ctx.shutdown_requested().await }))
///     .start()
///     .await?;
/// assert_eq!(handle.status().len(), 1);
/// handle.shutdown();
/// handle.wait().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a Runner does nothing until `start` or `run` is awaited"]
pub struct Runner {
    services: Vec<Service>,
    shutdown_timeout: Duration,
    signals: bool,
    token: Option<CancellationToken>,
    bus: Option<EventBus>,
    groups: Vec<Group>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("services", &self.services)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("signals", &self.signals)
            .finish()
    }
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    /// A runner with no services, a 10 s default shutdown timeout, and signal handling on.
    ///
    /// # Examples
    ///
    /// ```
    /// let runner = servicekit::Runner::new();
    /// # drop(runner);
    /// ```
    pub fn new() -> Self {
        Runner {
            services: Vec::new(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            signals: true,
            token: None,
            bus: None,
            groups: Vec::new(),
        }
    }

    /// Defines a group of services with its own strategy and restart intensity
    /// (see [`Group`]); services join it with [`Service::group`]. Groups are fixed
    /// when the runner starts; services added later may join them.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Group, Runner, Service, Strategy};
    /// let runner = Runner::new()
    ///     .group(Group::new("ingest").strategy(Strategy::OneForAll))
    ///     .service(Service::without_context("reader", || async {}).group("ingest"));
    /// # drop(runner);
    /// ```
    pub fn group(mut self, group: Group) -> Self {
        self.groups.push(group);
        self
    }

    /// The shutdown timeout of services that do not set their own.
    ///
    /// # Examples
    ///
    /// ```
    /// let runner = servicekit::Runner::new().shutdown_timeout(std::time::Duration::from_secs(3));
    /// # drop(runner);
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Whether to handle SIGINT/SIGTERM/SIGQUIT/SIGHUP (Ctrl+C on Windows). On by
    /// default; turn it off when the program handles signals itself (then call
    /// [`RunnerHandle::shutdown`] or cancel the [`shutdown_token`](Runner::shutdown_token)).
    ///
    /// # Examples
    ///
    /// ```
    /// let runner = servicekit::Runner::new().signals(false);
    /// # drop(runner);
    /// ```
    pub fn signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Uses `token` as the runner's shutdown token: cancelling it starts a graceful
    /// shutdown (for a sync `main`, a Windows service, a parent framework).
    ///
    /// # Examples
    ///
    /// ```
    /// let token = tokio_util::sync::CancellationToken::new();
    /// let runner = servicekit::Runner::new().shutdown_token(token.clone());
    /// # drop(runner);
    /// ```
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Uses `bus` as the runner's event bus (by default the runner makes its own,
    /// closed when it ends; a bus given here stays open).
    ///
    /// Services reach it through [`ServiceContext::bus`](crate::ServiceContext::bus)
    /// or [`bus::ctx`](crate::bus::ctx) (their bodies and tied tasks run inside the
    /// runner's scope), and the runner publishes every [`Event`](crate::Event) on it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> servicekit::Result<()> {
    /// use servicekit::{bus::{ctx, EventBus}, Runner, Service};
    ///
    /// let bus = EventBus::new();
    /// let mut hellos = bus.subscribe::<String>();
    /// Runner::new()
    ///     .signals(false)
    ///     .bus(bus.clone())
    ///     .service(Service::without_context("greeter", || async {
    ///         ctx::send("hello".to_string()).unwrap();
    ///     }))
    ///     .run()
    ///     .await?;
    /// assert_eq!(*hellos.try_recv().unwrap(), "hello");
    /// # Ok(())
    /// # }
    /// ```
    pub fn bus(mut self, bus: EventBus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Adds a service.
    ///
    /// # Examples
    ///
    /// ```
    /// let runner = servicekit::Runner::new()
    ///     .service(servicekit::Service::without_context("a", || async {}));
    /// # drop(runner);
    /// ```
    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    /// Adds several services.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::Service;
    /// let runner = servicekit::Runner::new().services([
    ///     Service::without_context("a", || async {}),
    ///     Service::without_context("b", || async {}),
    /// ]);
    /// # drop(runner);
    /// ```
    pub fn services(mut self, services: impl IntoIterator<Item = Service>) -> Self {
        if self.services.is_empty() {
            // Collecting a `Vec`'s iterator reuses its buffer: no copy of every service.
            self.services = services.into_iter().collect();
        } else {
            self.services.extend(services);
        }
        self
    }

    /// Validates the configuration and starts every service (dependencies first).
    ///
    /// Services start in the background: this returns as soon as every supervisor is
    /// running, before the services are ready.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for duplicate or empty names, unknown dependencies, a dependency
    /// cycle or an invalid setting (nothing has started then), and [`Error::Signals`] if
    /// the signal handlers cannot be installed.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> servicekit::Result<()> {
    /// let handle = servicekit::Runner::new()
    ///     .signals(false)
    ///     .service(servicekit::Service::without_context("once", || async {}))
    ///     .start()
    ///     .await?;
    /// handle.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(self) -> Result<RunnerHandle> {
        let Runner {
            services,
            shutdown_timeout,
            signals,
            token,
            bus,
            groups,
        } = self;
        let graph = graph::validate(&services)?;
        let (group_rts, group_index) = group::resolve(groups)?;
        let (mut deps, mut dependents) = match &graph {
            Some(g) => (g.deps.clone(), g.dependents.clone()),
            None => (Vec::new(), Vec::new()),
        };
        let mut slots = Vec::with_capacity(services.len());
        let mut factories = Vec::with_capacity(services.len());
        for (i, s) in services.into_iter().enumerate() {
            let take =
                |v: &mut Vec<Vec<usize>>| v.get_mut(i).map(std::mem::take).unwrap_or_default();
            let group = match s.group_name() {
                None => NO_GROUP,
                Some(g) => *group_index
                    .get(g)
                    .ok_or_else(|| ConfigError::UnknownGroup {
                        member: format!("service `{}`", s.name),
                        group: g.to_owned(),
                    })?,
            };
            let (slot, factory) = s.into_slot(
                take(&mut deps),
                take(&mut dependents),
                group,
                shutdown_timeout,
            );
            slots.push(slot);
            factories.push(Some(factory));
        }

        #[cfg(unix)]
        let signals = if signals {
            Some(signals::Signals::new().map_err(Error::Signals)?)
        } else {
            None
        };
        #[cfg(not(unix))]
        let signals = signals.then(signals::Signals::new);

        // Inside an enclosing scope, services see its state (not its bus: the
        // runner's is its own unless one is given).
        let parent = Frame::current();
        let frame = Frame::new(Arc::from("runner"), bus, Vec::new(), parent);
        let shared = Arc::new(Shared::new(
            slots,
            (group_rts, group_index),
            shutdown_timeout,
            token,
            frame,
        ));
        // Observers (systemd notify, HTTP) see the runner before its first event.
        super::observe::runner_starts(&shared);
        // Dependencies first.
        let order = graph.map_or_else(|| (0..factories.len()).collect(), |g| g.order);
        for idx in order {
            let factory = factories[idx].take().expect("each service is started once");
            supervisor::spawn(shared.clone(), idx, factory, None);
        }

        let control = tokio::spawn(control(shared.clone(), signals));
        Ok(RunnerHandle::new(shared, control))
    }

    /// Starts every service and waits until they have all ended; see [`run_services`].
    ///
    /// # Errors
    ///
    /// As [`Runner::start`] and [`RunnerHandle::wait`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> servicekit::Result<()> {
    /// servicekit::Runner::new()
    ///     .signals(false)
    ///     .service(servicekit::Service::without_context("once", || async {}))
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub async fn run(self) -> Result<()> {
        // The report of a clean run is dropped: `start` and `wait` give it.
        self.start().await?.wait().await.map(drop)
    }
}

async fn control(shared: Arc<Shared>, mut signals: Option<signals::Signals>) {
    struct Alive<'a>(&'a Shared);
    impl Drop for Alive<'_> {
        fn drop(&mut self) {
            self.0.control_alive.store(false, Ordering::Release);
        }
    }
    let _alive = Alive(&shared);
    let done = shared.all_ended();
    tokio::pin!(done);
    let root = shared.root.clone();
    let mut cancelled_seen = false;
    loop {
        tokio::select! {
            () = &mut done => break,
            () = root.cancelled(), if !cancelled_seen => {
                cancelled_seen = true;
                shared.begin_shutdown();
            }
            sig = signals::next(&mut signals) => match sig {
                signals::Kind::Reload => shared.restart_all(),
                signals::Kind::Graceful { forcing } => {
                    if shared.shutting_down.load(Ordering::Acquire) {
                        if forcing {
                            shared.force();
                        }
                    } else {
                        shared.begin_shutdown();
                    }
                }
            },
        }
    }
    // The runner's scope ends: its bus closes (unless it was given), and the tasks
    // services spawned with `bus::ctx::spawn` get the shutdown timeout to finish; a
    // signal meanwhile (the runner is already stopping: a second one) aborts them.
    let deadline = if shared.forced.load(Ordering::Acquire) {
        Duration::ZERO
    } else {
        shared.default_shutdown_timeout()
    };
    let end = shared.frame.end(deadline);
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => break,
            sig = signals::next(&mut signals) => {
                if let signals::Kind::Graceful { forcing: true } = sig {
                    shared.force();
                    shared.frame.abort_tasks();
                }
            }
        }
    }
    // Dropping the signal stream unregisters it; once no runner is active the
    // default actions come back.
    drop(signals);
    // `Events` streams end once they have yielded what is buffered.
    shared.finished.cancel();
}

/// Runs services until they have all ended, one gave up, or a shutdown signal
/// arrived; then stops the rest gracefully and reports the outcome.
///
/// Services start in dependency order and stop in reverse. SIGINT, SIGTERM and SIGQUIT
/// start a graceful shutdown; a second SIGINT or SIGTERM during it aborts what is left
/// ([`Error::Forced`]); SIGHUP restarts every service in dependency order. The handlers
/// are removed when this returns.
///
/// # Errors
///
/// [`Error::Config`] before anything starts (duplicate names, unknown dependency, cycle,
/// invalid setting); [`Error::Services`] naming each service that gave up or hung;
/// [`Error::Forced`] after a second signal.
///
/// # Examples
///
/// ```
/// use servicekit::{run_services, service};
///
/// #[service(restart = "never")]
/// async fn once() {
///     println!("hello");
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> servicekit::Result<()> {
/// run_services([once()]).await
/// # }
/// ```
pub async fn run_services(services: impl IntoIterator<Item = Service>) -> Result<()> {
    Runner::new().services(services).run().await
}
