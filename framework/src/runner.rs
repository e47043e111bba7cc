//! The runner: validates a set of services, starts one supervisor task per service,
//! relays signals and commands, and reports how everything ended.
//!
//! Design note: every supervisor owns one `Slot` in a shared array. Slots talk to each
//! other only through two atomics (`phase`, `cmd`) and one [`Signal`] (`wake`): whoever
//! changes something a supervisor cares about (a dependency's readiness, a dependent
//! that stopped, a command, shutdown) stores it and calls `wake.notify()`; the
//! supervisor re-examines everything when woken. The signal keeps a permit, so no
//! wake-up is lost, and there is no channel allocation per service. A `Notify`
//! (`stop`, with `stop_run`) tells a run's context that its shutdown was requested
//! (any number of clones of the context may wait on it); a body polled by its own
//! supervisor needs no registration, because the supervisor polls it again after
//! every stop request, and a stop request notifies only once something registered
//! (`listeners`). The run's `CancellationToken` is only created if the body asks
//! for it.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{Notify, broadcast};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{
    ConfigError, Error, Result, ServiceError, ServiceErrorKind, ServiceFailure, ServiceFailures,
    UnknownService,
};
use crate::service::{Config, DEFAULT_SHUTDOWN_TIMEOUT, Service};

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

/// A snapshot of one service, from [`RunnerHandle::status`].
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

/// Something that happened in a runner, from [`RunnerHandle::events`].
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

// `phase` packs the current run number (high bits) with these flags, so a `ready()`
// from a context of an old run can be told apart atomically. `STOPPING` (with
// `ACTIVE`) marks a run being stopped: its `ready()` no longer counts, so a body
// polled for the first time after its stop began cannot let dependents start.
pub(crate) const READY: u64 = 1;
pub(crate) const ACTIVE: u64 = 2;
pub(crate) const ENDED: u64 = 4;
pub(crate) const STOPPING: u64 = 8;
const RUN_SHIFT: u32 = 4;

// A pending command waits in `Slot::cmd` until the supervisor takes it. Commands are
// ordered so that `fetch_max` keeps the stronger one: a stop not yet taken is never
// replaced by a later restart (the service would otherwise keep running).
pub(crate) const CMD_NONE: u8 = 0;
pub(crate) const CMD_RESTART: u8 = 1;
pub(crate) const CMD_STOP: u8 = 2;

// Bits of `Slot::listeners`.
pub(crate) const LISTEN_NOTIFY: u8 = 1;
pub(crate) const LISTEN_TOKEN: u8 = 2;

pub(crate) struct Slot {
    /// As given: turned into an `Arc<str>` only for events, errors and status, so
    /// starting a service does not copy its name.
    pub(crate) name: Box<str>,
    pub(crate) has_context: bool,
    /// The service's settings: an index into `Shared::configs`, shared by
    /// consecutive services with equal settings (most use the defaults). Not an
    /// `Arc`: no reference count to change per service at start and at the end.
    config: u32,
    links: Option<Box<Links>>,
    pub(crate) phase: AtomicU64,
    pub(crate) cmd: AtomicU8,
    /// Wakes the supervisor (a permit is kept): see [`Slot::wake`].
    wake_permit: AtomicBool,
    wake_waker: futures::task::AtomicWaker,
    /// The last run asked to stop; `stop` wakes everyone waiting on a context.
    pub(crate) stop_run: AtomicU64,
    /// Made by the first registration (most services never need one: see
    /// `ShutdownRequested`), boxed so an unused one costs 8 bytes instead of 32.
    stop: OnceLock<Box<Notify>>,
    /// Who besides the supervisor may be listening for a stop request: set (for
    /// good) by the first registration with `stop` ([`LISTEN_NOTIFY`]) and the first
    /// `CancellationToken` of a run ([`LISTEN_TOKEN`]), so a stop request notifies
    /// or takes the lock only when someone may be listening.
    pub(crate) listeners: AtomicU8,
    /// Set when the service's supervisor has ended (once: see
    /// `Shared::supervisor_ended`).
    ended: AtomicBool,
    /// What the runner reports and the run's tied tasks, behind one lock: a run's
    /// start and end take it once each.
    pub(crate) inner: Mutex<SlotInner>,
}

/// One struct, not a status part and a tied-tasks part, so the small fields share
/// their padding (64 B instead of 72).
pub(crate) struct SlotInner {
    // What the runner reports (`status()`).
    pub(crate) state: ServiceState,
    pub(crate) restarts: u32,
    pub(crate) last_error: Option<Arc<ServiceError>>,
    /// When the current run started, if one is running.
    pub(crate) since: Since,
    // The run and its tied tasks; the set is allocated on the first `ctx.spawn`.
    /// The current run (0 before the first): also the status's run count.
    pub(crate) run: u64,
    /// Whether `ctx.spawn` may still tie tasks to the current run.
    pub(crate) open: bool,
    pub(crate) tied: Option<Box<Tied>>,
    /// Created by the first `ctx.cancellation_token()` of the run.
    pub(crate) token: Option<CancellationToken>,
    /// The body closure, until the service's task first runs and takes it.
    pub(crate) factory: Option<crate::service::Factory>,
}

struct Links {
    deps: Box<[usize]>,
    dependents: Box<[usize]>,
}

impl Slot {
    /// The name as reported in events, errors and status.
    pub(crate) fn shared_name(&self) -> Arc<str> {
        Arc::from(&*self.name)
    }

    /// The signal that wakes the service's supervisor (a permit is kept).
    pub(crate) fn wake(&self) -> Signal<'_> {
        Signal {
            permit: &self.wake_permit,
            waker: &self.wake_waker,
        }
    }

    pub(crate) fn deps(&self) -> &[usize] {
        self.links.as_ref().map_or(&[], |l| &l.deps)
    }

    pub(crate) fn dependents(&self) -> &[usize] {
        self.links.as_ref().map_or(&[], |l| &l.dependents)
    }

    /// The stop `Notify`, made on first use.
    pub(crate) fn stop_notify(&self) -> &Notify {
        self.stop.get_or_init(|| Box::new(Notify::new()))
    }

    /// Records (for good) that someone besides the supervisor listens for stop
    /// requests this way (`LISTEN_NOTIFY` or `LISTEN_TOKEN`); to be called before the
    /// listener checks `stop_run` (see `Shared::request_stop`).
    pub(crate) fn listen(&self, how: u8) {
        if self.listeners.load(Ordering::SeqCst) & how == 0 {
            self.listeners.fetch_or(how, Ordering::SeqCst);
        }
    }
}

/// A time after the runner's start (`Shared::started`), or none, in 8 bytes
/// instead of an `Option<Instant>`'s 16 (a slot is per service, for the whole run).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Since(u64);

impl Since {
    pub(crate) const NONE: Since = Since(u64::MAX);
    /// The runner's start itself.
    pub(crate) const START: Since = Since(0);

    /// `at`, as an offset from `started` (nanoseconds: 584 years).
    pub(crate) fn at(started: Instant, at: Instant) -> Since {
        let nanos = at.saturating_duration_since(started).as_nanos();
        Since(u64::try_from(nanos).unwrap_or(u64::MAX - 1))
    }

    pub(crate) fn get(self, started: Instant) -> Option<Instant> {
        (self != Since::NONE).then(|| started + Duration::from_nanos(self.0))
    }
}

#[derive(Default)]
pub(crate) struct Tied {
    pub(crate) set: JoinSet<()>,
    pub(crate) error: Option<ServiceErrorKind>,
}

/// Aligned so that the `Arc`'s reference count, which every supervisor and context
/// changes, does not share a cache line with the fields every supervisor reads.
#[repr(align(128))]
pub(crate) struct Shared {
    pub(crate) slots: Box<[Slot]>,
    /// The distinct settings of the services (see `Slot::config`).
    configs: Box<[Config]>,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) forced: AtomicBool,
    pub(crate) root: CancellationToken,
    events: broadcast::Sender<Event>,
    /// Live `Events` streams: checked on every state change, so no lock is taken
    /// when nobody listens (`broadcast::Sender::receiver_count` locks).
    subscribers: Arc<AtomicUsize>,
    pub(crate) failures: Mutex<Vec<ServiceFailure>>,
    pub(crate) aborted: Mutex<Vec<Arc<str>>>,
    /// Supervisors still running; `ended` is notified when it reaches zero.
    live: AtomicUsize,
    ended: Notify,
    /// When the runner started its services: the start time of every first run that
    /// waits for no dependency (it begins as soon as its task is first polled), so
    /// starting thousands of services does not read the clock for each.
    pub(crate) started: Instant,
}

/// Wakes one task, the service's supervisor, keeping a permit if it is not waiting
/// (what `Notify::notify_one` does for one waiter). Waiting on it needs no
/// registration node in the waiting future, which keeps the supervisor task small,
/// and a notification is a store and a waker swap instead of a lock.
///
/// A view of two fields of the slot ([`Slot::wake`]): they are not a struct of
/// their own, so the permit shares the padding of the slot's other small fields.
#[derive(Clone, Copy)]
pub(crate) struct Signal<'a> {
    permit: &'a AtomicBool,
    waker: &'a futures::task::AtomicWaker,
}

impl<'a> Signal<'a> {
    pub(crate) fn notify(&self) {
        self.permit.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Takes the permit, or registers the current task to be woken by the next
    /// `notify`. Only one task (the supervisor) waits on a signal.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.take_now() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A `notify` whose store this misses comes after the registration (both go
        // through the waker's own read-modify-writes), so it wakes the task.
        if self.take_now() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Takes the permit if there is one, without registering (a load first: the
    /// permit is rarely there when this is asked).
    pub(crate) fn take_now(&self) -> bool {
        self.permit.load(Ordering::Relaxed) && self.permit.swap(false, Ordering::AcqRel)
    }

    /// Waits for the permit.
    pub(crate) fn notified(self) -> impl std::future::Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| self.poll_take(cx))
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The settings of service `idx`.
    pub(crate) fn config(&self, idx: usize) -> &Config {
        &self.configs[self.slots[idx].config as usize]
    }

    /// The shutdown timeout of service `idx`.
    pub(crate) fn shutdown_timeout(&self, idx: usize) -> Duration {
        self.config(idx)
            .shutdown_timeout
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT)
    }

    /// Called by each supervisor as it ends; a second call for the same service (its
    /// task panicked after it ended) does nothing.
    pub(crate) fn supervisor_ended(&self, idx: usize) {
        if self.slots[idx].ended.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ended.notify_waiters();
        }
    }

    async fn all_ended(&self) {
        loop {
            let notified = self.ended.notified();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn phase(&self, idx: usize) -> u64 {
        self.slots[idx].phase.load(Ordering::Acquire)
    }

    /// Stores a new phase for `idx` and wakes whoever may care: dependents (readiness)
    /// and dependencies (waiting for their dependents to stop).
    pub(crate) fn set_phase(&self, idx: usize, run: u64, flags: u64) {
        let slot = &self.slots[idx];
        slot.phase
            .store((run << RUN_SHIFT) | flags, Ordering::Release);
        for &d in slot.dependents().iter().chain(slot.deps()) {
            self.slots[d].wake().notify();
        }
    }

    pub(crate) fn mark_ready(&self, idx: usize, run: u64) {
        let slot = &self.slots[idx];
        let mut cur = slot.phase.load(Ordering::Acquire);
        loop {
            if cur >> RUN_SHIFT != run || cur & (READY | ENDED | STOPPING) != 0 || cur & ACTIVE == 0
            {
                return;
            }
            match slot.phase.compare_exchange_weak(
                cur,
                cur | READY,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        tracing::debug!(service = %slot.name, run, "ready");
        for &d in slot.dependents() {
            self.slots[d].wake().notify();
        }
    }

    /// Asks run `run` of `idx` to stop: its context's shutdown is requested.
    pub(crate) fn request_stop(&self, idx: usize, run: u64) {
        let slot = &self.slots[idx];
        // Runs only go up: a request already made needs no second read-modify-write
        // (the end of every run asks again).
        if slot.stop_run.load(Ordering::Acquire) >= run
            || slot.stop_run.fetch_max(run, Ordering::SeqCst) >= run
        {
            return;
        }
        // Pairs with `Slot::listen` (for a registration with `stop`) and
        // `ServiceContext::cancellation_token` (for the token): each sets its bit
        // before it checks `stop_run` (all `SeqCst`), so either it sees this stop, or
        // this sees its bit and notifies (or takes the lock, waiting for the token to
        // be stored).
        let listeners = slot.listeners.load(Ordering::SeqCst);
        if listeners & LISTEN_NOTIFY != 0 {
            // Made here if the listener that set the flag has not made it yet: the
            // two then share it, and a registration after this call checks
            // `stop_run` again.
            slot.stop_notify().notify_waiters();
        }
        if listeners & LISTEN_TOKEN != 0 {
            let token = lock(&slot.inner).token.clone();
            if let Some(token) = token {
                token.cancel();
            }
        }
    }

    pub(crate) fn set_state(&self, idx: usize, state: ServiceState) {
        self.set_state_with(idx, state, |_| {});
    }

    /// Sets the state, and changes whatever else `also` changes under the same lock.
    pub(crate) fn set_state_with(
        &self,
        idx: usize,
        state: ServiceState,
        also: impl FnOnce(&mut SlotInner),
    ) {
        let slot = &self.slots[idx];
        {
            let mut inner = lock(&slot.inner);
            also(&mut inner);
            if inner.state == state {
                return;
            }
            inner.state = state;
            if state != ServiceState::Running {
                inner.since = Since::NONE;
            }
        }
        self.announce(idx, state);
    }

    /// Reports a state change made under the slot's lock: a `tracing` event, and an
    /// [`Event::State`] if anyone listens.
    #[inline(always)]
    pub(crate) fn announce(&self, idx: usize, state: ServiceState) {
        let slot = &self.slots[idx];
        tracing::debug!(service = %slot.name, %state, "state changed");
        self.emit(|| Event::State {
            service: slot.shared_name(),
            state,
        });
    }

    /// Sends an event if anyone listens: inlined, so a state change with nobody
    /// listening costs one load.
    #[inline(always)]
    pub(crate) fn emit(&self, ev: impl FnOnce() -> Event) {
        if self.subscribers.load(Ordering::Relaxed) > 0 {
            self.send_event(ev());
        }
    }

    #[cold]
    fn send_event(&self, ev: Event) {
        let _ = self.events.send(ev);
    }

    /// The task of service `idx` panicked (outside every guard around user code):
    /// the service ends as `Failed` with an internal failure, its tied tasks are
    /// aborted, whoever waits on it is woken, and the runner shuts down.
    pub(crate) fn internal_failure(&self, idx: usize, message: String) {
        let slot = &self.slots[idx];
        tracing::error!(service = %slot.name, %message, "the runner's task for this service panicked");
        let (run, tied) = {
            let mut inner = lock(&slot.inner);
            inner.open = false;
            (inner.run, inner.tied.take())
        };
        // Dropping the set aborts the tasks (tokio drops them, guarded, on their
        // own threads).
        drop(tied);
        self.request_stop(idx, run);
        if !slot.ended.load(Ordering::Acquire) {
            self.record_failure(ServiceFailure {
                service: slot.shared_name(),
                kind: crate::error::FailureKind::Internal { message },
            });
            self.set_phase(idx, run, ENDED);
            self.set_state(idx, ServiceState::Failed);
        }
        self.begin_shutdown();
        self.supervisor_ended(idx);
    }

    pub(crate) fn record_failure(&self, failure: ServiceFailure) {
        lock(&self.failures).push(failure);
    }

    pub(crate) fn begin_shutdown(&self) {
        if !self.shutting_down.swap(true, Ordering::AcqRel) {
            tracing::info!("shutting down");
            self.root.cancel();
            for slot in self.slots.iter() {
                slot.wake().notify();
            }
        }
    }

    fn force(&self) {
        self.shutting_down.store(true, Ordering::Release);
        if !self.forced.swap(true, Ordering::AcqRel) {
            tracing::warn!("second signal: aborting what is still running");
            self.root.cancel();
            for slot in self.slots.iter() {
                slot.wake().notify();
            }
        }
    }

    fn restart_all(&self) {
        if self.shutting_down.load(Ordering::Acquire) {
            return;
        }
        tracing::info!("restarting every service");
        // Only the roots: their dependents go down and come back after them by the
        // dependency rule, so each service restarts once, in dependency order.
        for slot in self.slots.iter().filter(|s| s.deps().is_empty()) {
            slot.cmd.fetch_max(CMD_RESTART, Ordering::AcqRel);
            slot.wake().notify();
        }
    }

    fn command(&self, name: &str, cmd: u8) -> Result<(), UnknownService> {
        // A linear search: commands are rare, and a name index would cost every
        // service memory for the whole run.
        let idx = self
            .slots
            .iter()
            .position(|s| &*s.name == name)
            .ok_or_else(|| UnknownService(name.to_owned()))?;
        let slot = &self.slots[idx];
        slot.cmd.fetch_max(cmd, Ordering::AcqRel);
        slot.wake().notify();
        Ok(())
    }
}

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
/// handle.wait().await
/// # }
/// ```
#[must_use = "a Runner does nothing until `start` or `run` is awaited"]
pub struct Runner {
    services: Vec<Service>,
    shutdown_timeout: Duration,
    signals: bool,
    token: Option<CancellationToken>,
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
        }
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
    /// handle.wait().await
    /// # }
    /// ```
    pub async fn start(self) -> Result<RunnerHandle> {
        let Runner {
            services,
            shutdown_timeout,
            signals,
            token,
        } = self;
        let graph = validate(&services)?;
        let n = services.len();
        let (order, mut links) = match graph {
            None => (None, Vec::new()),
            Some((order, deps_of)) => {
                let mut dependents_of: Vec<Vec<usize>> = vec![Vec::new(); n];
                for (i, deps) in deps_of.iter().enumerate() {
                    for &j in deps {
                        dependents_of[j].push(i);
                    }
                }
                let links = deps_of
                    .into_iter()
                    .zip(dependents_of)
                    .map(|(deps, dependents)| {
                        (!deps.is_empty() || !dependents.is_empty()).then(|| {
                            Box::new(Links {
                                deps: deps.into(),
                                dependents: dependents.into(),
                            })
                        })
                    })
                    .collect();
                (Some(order), links)
            }
        };

        let mut slots = Vec::with_capacity(n);
        // Services with the default settings (most) share the first entry of
        // `configs`, and consecutive services with equal settings share one too.
        let mut configs = vec![Config {
            shutdown_timeout: Some(shutdown_timeout),
            ..Config::DEFAULT
        }];
        for (i, s) in services.into_iter().enumerate() {
            let Service {
                name,
                has_context,
                extra,
                factory,
            } = s;
            let config = match extra {
                None => 0,
                Some(extra) => {
                    let mut config = extra.config;
                    config.shutdown_timeout =
                        Some(config.shutdown_timeout.unwrap_or(shutdown_timeout));
                    if configs.last() != Some(&config) {
                        configs.push(config);
                    }
                    configs.len() - 1
                }
            };
            // At most one entry per service, and 2^32 services would need more
            // than 600 GiB of slots.
            let config = u32::try_from(config).expect("fewer than 2^32 services");
            let links = links.get_mut(i).and_then(Option::take);
            slots.push(Slot {
                name: name.into_boxed_str(),
                has_context,
                config,
                links,
                phase: AtomicU64::new(0),
                cmd: AtomicU8::new(CMD_NONE),
                wake_permit: AtomicBool::new(false),
                wake_waker: futures::task::AtomicWaker::new(),
                stop_run: AtomicU64::new(0),
                stop: OnceLock::new(),
                listeners: AtomicU8::new(0),
                ended: AtomicBool::new(false),
                inner: Mutex::new(SlotInner {
                    state: ServiceState::Starting,
                    restarts: 0,
                    last_error: None,
                    since: Since::NONE,
                    run: 0,
                    open: false,
                    tied: None,
                    token: None,
                    factory: Some(factory),
                }),
            });
        }

        #[cfg(unix)]
        let signals = if signals {
            Some(crate::signals::Signals::new().map_err(Error::Signals)?)
        } else {
            None
        };
        #[cfg(not(unix))]
        let signals = signals.then(crate::signals::Signals::new);

        let shared = Arc::new(Shared {
            slots: slots.into(),
            configs: configs.into(),
            shutting_down: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            root: token.unwrap_or_default(),
            events: broadcast::channel(1024).0,
            subscribers: Arc::default(),
            failures: Mutex::new(Vec::new()),
            aborted: Mutex::new(Vec::new()),
            live: AtomicUsize::new(n),
            ended: Notify::new(),
            started: Instant::now(),
        });

        let spawn = |idx| {
            drop(tokio::spawn(crate::supervisor::Spawned::new(
                shared.clone(),
                idx,
            )))
        };
        // Without dependencies, in index order: no order to build (8 B per service).
        match order {
            Some(order) => order.into_iter().for_each(spawn),
            None => (0..n).for_each(spawn),
        }

        let control = tokio::spawn(control(shared.clone(), signals));
        Ok(RunnerHandle {
            shared,
            control: Some(control),
        })
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
        self.start().await?.wait().await
    }
}

/// The hash of a service name for the name index built once at start: eight bytes at
/// a time, each folded in with a 64×64→128-bit multiply. Names come from the program,
/// not from an attacker, and hashing them is a visible part of starting thousands.
fn name_hash(name: &str) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    fn fold(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    }
    let mut h = name.len() as u64;
    let mut words = name.as_bytes().chunks_exact(8);
    for w in &mut words {
        h = fold(h ^ u64::from_le_bytes(w.try_into().expect("8 bytes")), K);
    }
    // The last 1 to 7 bytes as one word, from loads that may overlap (no copy into
    // a buffer, which stalls the load that follows); with the length in `h`, the
    // word still tells every such tail apart.
    let rest = words.remainder();
    let n = rest.len();
    let word = |b: &[u8]| u64::from(u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let tail = match n {
        0 => return fold(h, K.rotate_left(32)),
        1..=3 => {
            u64::from(rest[0]) | (u64::from(rest[n / 2]) << 8) | (u64::from(rest[n - 1]) << 16)
        }
        _ => word(&rest[..4]) | (word(&rest[n - 4..]) << 32),
    };
    fold(fold(h ^ tail, K), K.rotate_left(32))
}

/// Checks names, dependencies and settings. Returns, when some service has
/// dependencies, a start order (dependencies first) and each service's dependencies
/// as indices; `None` when none has (start in the order given, no links).
#[allow(clippy::type_complexity)]
fn validate(services: &[Service]) -> Result<Option<(Vec<usize>, Vec<Vec<usize>>)>, ConfigError> {
    // The name index holds only positions (4 bytes each): a table of 10,000 `&str`
    // keys is five times the memory, written at random, and that was most of the
    // check's time.
    let name = |i: &u32| services[*i as usize].name.as_str();
    let mut index: hashbrown::HashTable<u32> = hashbrown::HashTable::with_capacity(services.len());
    let mut any_deps = false;
    for (i, s) in services.iter().enumerate() {
        if s.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        let hash = name_hash(&s.name);
        match index.entry(hash, |j| name(j) == s.name, |j| name_hash(name(j))) {
            hashbrown::hash_table::Entry::Occupied(_) => {
                return Err(ConfigError::DuplicateName(s.name.clone()));
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                // Positions fit: 2^32 services would be more than 200 GiB of them.
                slot.insert(i as u32);
            }
        }
        let Some(extra) = &s.extra else { continue };
        extra.config.validate(&s.name)?;
        if extra.after.contains(&s.name) {
            return Err(ConfigError::Invalid {
                service: s.name.clone(),
                problem: "it depends on itself".into(),
            });
        }
        any_deps |= !extra.after.is_empty();
    }
    if !any_deps {
        return Ok(None);
    }
    let mut deps_of: Vec<Vec<usize>> = vec![Vec::new(); services.len()];
    for (s, deps) in services.iter().zip(&mut deps_of) {
        for d in s.dependencies() {
            let Some(&j) = index.find(name_hash(d), |j| name(j) == d) else {
                return Err(ConfigError::UnknownDependency {
                    service: s.name.clone(),
                    dependency: d.clone(),
                });
            };
            let j = j as usize;
            if !deps.contains(&j) {
                deps.push(j);
            }
        }
    }
    // Depth-first topological sort; a grey node met again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        White,
        Grey,
        Black,
    }
    let mut mark = vec![Mark::White; services.len()];
    let mut order = Vec::with_capacity(services.len());
    // (node, next dependency to visit); the nodes on the stack are the current path.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..services.len() {
        if mark[root] != Mark::White {
            continue;
        }
        if deps_of[root].is_empty() {
            mark[root] = Mark::Black;
            order.push(root);
            continue;
        }
        mark[root] = Mark::Grey;
        stack.push((root, 0));
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let after = &deps_of[node];
            if *next < after.len() {
                let dep = after[*next];
                *next += 1;
                match mark[dep] {
                    Mark::White => {
                        mark[dep] = Mark::Grey;
                        stack.push((dep, 0));
                    }
                    Mark::Grey => {
                        let start = stack.iter().position(|&(p, _)| p == dep).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[start..]
                            .iter()
                            .map(|&(p, _)| services[p].name.clone())
                            .collect();
                        cycle.push(services[dep].name.clone());
                        return Err(ConfigError::Cycle(cycle));
                    }
                    Mark::Black => {}
                }
            } else {
                mark[node] = Mark::Black;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(Some((order, deps_of)))
}

async fn control(shared: Arc<Shared>, mut signals: Option<crate::signals::Signals>) {
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
            sig = crate::signals::next(&mut signals) => match sig {
                crate::signals::Kind::Reload => shared.restart_all(),
                crate::signals::Kind::Graceful { forcing } => {
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
    // Dropping the signal stream unregisters it; once no runner is active the
    // default actions come back.
    drop(signals);
}

/// A running set of services: status, events, control, and the final outcome.
///
/// Dropping the handle without calling [`wait`](RunnerHandle::wait) starts a graceful
/// shutdown in the background.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
/// use servicekit::{Event, Runner, Service, ServiceState};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> servicekit::Result<()> {
/// let handle = Runner::new()
///     .signals(false)
///     .service(Service::new("svc", |ctx| async move { ctx.shutdown_requested().await }))
///     .start()
///     .await?;
/// let mut events = handle.events();
/// handle.shutdown();
/// while let Some(ev) = events.next().await {
///     if let Event::State { state: ServiceState::Stopped, .. } = ev {
///         break;
///     }
/// }
/// handle.wait().await
/// # }
/// ```
pub struct RunnerHandle {
    shared: Arc<Shared>,
    control: Option<JoinHandle<()>>,
}

impl fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerHandle")
            .field("services", &self.shared.slots.len())
            .field(
                "shutting_down",
                &self.shared.shutting_down.load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl RunnerHandle {
    /// A snapshot of every service, in the order they were added.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(handle: &servicekit::RunnerHandle) {
    /// for s in handle.status() {
    ///     println!("{}: {}", s.name, s.state);
    /// }
    /// # }
    /// ```
    pub fn status(&self) -> Vec<ServiceStatus> {
        let now = Instant::now();
        self.shared
            .slots
            .iter()
            .map(|slot| {
                let inner = lock(&slot.inner);
                ServiceStatus {
                    name: slot.shared_name(),
                    state: inner.state,
                    restarts: inner.restarts,
                    runs: inner.run,
                    last_error: inner.last_error.clone(),
                    uptime: inner
                        .since
                        .get(self.shared.started)
                        .map(|s| now.saturating_duration_since(s)),
                }
            })
            .collect()
    }

    /// A stream of every state change and failure from now on.
    ///
    /// Up to 1024 events are buffered per stream; a stream that falls further behind
    /// yields [`Event::Lagged`] with the number it missed. The stream ends when the
    /// runner has ended and every event was read.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(handle: &servicekit::RunnerHandle) {
    /// use futures::StreamExt;
    /// let mut events = handle.events();
    /// while let Some(ev) = events.next().await {
    ///     println!("{ev:?}");
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> Events {
        self.shared.subscribers.fetch_add(1, Ordering::Relaxed);
        Events {
            // Not the whole `Shared`: the stream ends when the runner's sender drops.
            subscribers: self.shared.subscribers.clone(),
            inner: Box::pin(futures::stream::unfold(
                self.shared.events.subscribe(),
                |mut rx| async move {
                    match rx.recv().await {
                        Ok(ev) => Some((ev, rx)),
                        Err(broadcast::error::RecvError::Lagged(n)) => Some((Event::Lagged(n), rx)),
                        Err(broadcast::error::RecvError::Closed) => None,
                    }
                },
            )),
        }
    }

    /// Starts a graceful shutdown: services stop in reverse dependency order, each
    /// within its shutdown timeout. Returns at once; [`wait`](RunnerHandle::wait) for
    /// the outcome.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(handle: servicekit::RunnerHandle) -> servicekit::Result<()> {
    /// handle.shutdown();
    /// handle.wait().await
    /// # }
    /// ```
    pub fn shutdown(&self) {
        self.shared.begin_shutdown();
    }

    /// The runner's shutdown token: cancelled when shutdown starts; cancelling it
    /// starts one.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(handle: &servicekit::RunnerHandle) {
    /// let token = handle.shutdown_token();
    /// token.cancelled().await;
    /// # }
    /// ```
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.root.clone()
    }

    /// Restarts one service: its dependents stop first, then it stops (within its
    /// shutdown timeout), starts again, and its dependents start again once it is
    /// ready. Does not count towards `max_restarts`.
    ///
    /// # Errors
    ///
    /// [`UnknownService`] if no service has that name. Restarting a service that has
    /// already ended does nothing, and neither does a restart asked for while a
    /// [`stop`](Self::stop) of the same service is still pending: the stop wins.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(handle: &servicekit::RunnerHandle) {
    /// handle.restart("db").expect("db is a service");
    /// # }
    /// ```
    pub fn restart(&self, name: &str) -> Result<(), UnknownService> {
        self.shared.command(name, CMD_RESTART)
    }

    /// Stops one service for good: its dependents stop first (and end too, since what
    /// they depend on is gone); the others keep running.
    ///
    /// # Errors
    ///
    /// [`UnknownService`] if no service has that name.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(handle: &servicekit::RunnerHandle) {
    /// handle.stop("metrics").expect("metrics is a service");
    /// # }
    /// ```
    pub fn stop(&self, name: &str) -> Result<(), UnknownService> {
        self.shared.command(name, CMD_STOP)
    }

    /// Waits until every service has ended (after a shutdown, an escalation, or because
    /// they all returned), then reports the outcome. Signal handlers are removed.
    ///
    /// # Errors
    ///
    /// [`Error::Forced`] if a second signal forced the shutdown; [`Error::Services`]
    /// naming every service that gave up, failed while stopping or hung.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future drops the handle, which starts a graceful
    /// shutdown in the background.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(handle: servicekit::RunnerHandle) {
    /// if let Err(e) = handle.wait().await {
    ///     eprintln!("{e}");
    /// }
    /// # }
    /// ```
    pub async fn wait(mut self) -> Result<()> {
        if let Some(control) = self.control.take()
            && let Err(e) = control.await
            && e.is_panic()
        {
            // The control task died (it relays signals and waits for the services):
            // the services are still stopped, and the error says what happened.
            let message = crate::guard::message(e.into_panic());
            tracing::error!(%message, "the runner's control task panicked");
            self.shared.begin_shutdown();
            self.shared.all_ended().await;
            return Err(Error::Internal(message));
        }
        outcome(&self.shared)
    }
}

fn outcome(shared: &Shared) -> Result<()> {
    if shared.forced.load(Ordering::Acquire) {
        return Err(Error::Forced {
            aborted: std::mem::take(&mut *lock(&shared.aborted)),
        });
    }
    let failures = std::mem::take(&mut *lock(&shared.failures));
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Services(ServiceFailures(failures)))
    }
}

impl Drop for RunnerHandle {
    fn drop(&mut self) {
        if self.control.is_some() {
            self.shared.begin_shutdown();
        }
    }
}

/// The stream returned by [`RunnerHandle::events`].
///
/// # Examples
///
/// ```
/// # async fn f(handle: &servicekit::RunnerHandle) {
/// use futures::StreamExt;
/// let first: Option<servicekit::Event> = handle.events().next().await;
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct Events {
    subscribers: Arc<AtomicUsize>,
    inner: Pin<Box<dyn Stream<Item = Event> + Send>>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Stream for Events {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.inner.as_mut().poll_next(cx)
    }
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
#[cfg(test)]
pub(crate) fn dummy_shared() -> Arc<Shared> {
    Arc::new(Shared {
        slots: Box::new([]),
        configs: Box::new([]),
        shutting_down: AtomicBool::new(false),
        forced: AtomicBool::new(false),
        root: CancellationToken::new(),
        events: broadcast::channel(1).0,
        subscribers: Arc::default(),
        failures: Mutex::new(Vec::new()),
        aborted: Mutex::new(Vec::new()),
        live: AtomicUsize::new(0),
        ended: Notify::new(),
        started: Instant::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// Random names from a two-letter alphabet, 1 to 19 bytes long (across the
    /// hash's 8-byte words), so that duplicates and shared prefixes are common.
    fn names(rng: &mut fastrand::Rng, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let len = rng.usize(1..20);
                (0..len)
                    .map(|_| if rng.bool() { 'a' } else { 'b' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn since_keeps_a_time_after_the_start_to_the_nanosecond() {
        let started = Instant::now();
        assert_eq!(Since::NONE.get(started), None);
        assert_eq!(Since::START.get(started), Some(started));
        for nanos in [0, 1, 999_999_999, 86_400 * 1_000_000_000 + 7] {
            let at = started + Duration::from_nanos(nanos);
            assert_eq!(Since::at(started, at).get(started), Some(at));
        }
        // A time before the start (a clock read that raced it) counts as the start.
        let before = started;
        let later = started + Duration::from_secs(1);
        assert_eq!(Since::at(later, before).get(later), Some(later));
    }

    #[test]
    fn the_name_index_agrees_with_a_reference_set() {
        let mut rng = fastrand::Rng::with_seed(3);
        let (mut duplicates, mut resolved, mut unknowns) = (0, 0, 0);
        for _ in 0..500 {
            let n = rng.usize(1..60);
            let names = names(&mut rng, n);
            let mut seen = HashSet::new();
            let first_duplicate = names.iter().find(|n| !seen.insert(n.as_str()));
            // Each service depends on up to two earlier ones (no cycle), and sometimes
            // on a name that is not a service.
            let mut expected_deps = Vec::new();
            let mut unknown = None;
            let services: Vec<Service> = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let mut after: Vec<String> = Vec::new();
                    let mut deps = Vec::new();
                    for _ in 0..rng.usize(0..3).min(i) {
                        let j = rng.usize(0..i);
                        after.push(names[j].clone());
                        // The index resolves a name to its first service.
                        let first = names.iter().position(|n| *n == names[j]).unwrap();
                        if !deps.contains(&first) {
                            deps.push(first);
                        }
                    }
                    if unknown.is_none() && rng.usize(0..200) == 0 {
                        after.push("c".into());
                        unknown = Some((name.clone(), "c".to_owned()));
                    }
                    expected_deps.push(deps);
                    Service::without_context(name.clone(), || async {}).after(after)
                })
                .collect();
            match (validate(&services), first_duplicate) {
                (Err(ConfigError::DuplicateName(d)), Some(expected)) => {
                    assert_eq!(&d, expected);
                    duplicates += 1;
                }
                (
                    Err(ConfigError::UnknownDependency {
                        service,
                        dependency,
                    }),
                    None,
                ) => {
                    assert_eq!(Some((service, dependency)), unknown);
                    unknowns += 1;
                }
                (Ok(None), None) => assert!(expected_deps.iter().all(Vec::is_empty)),
                (Ok(Some((order, deps_of))), None) => {
                    assert_eq!(unknown, None);
                    assert_eq!(deps_of, expected_deps);
                    let position: HashMap<usize, usize> =
                        order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
                    for (i, deps) in deps_of.iter().enumerate() {
                        assert!(deps.iter().all(|d| position[d] < position[&i]));
                    }
                    resolved += 1;
                }
                (other, expected) => panic!("{other:?}, expected duplicate {expected:?}"),
            }
        }
        // Every kind of outcome was exercised.
        assert!(
            duplicates > 50 && resolved > 50 && unknowns > 5,
            "{duplicates} {resolved} {unknowns}"
        );
    }
}
