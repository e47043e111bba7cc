//! The state a runner's parts share: one [`Slot`] per service in one table
//! ([`Shared`], `Slots`: an array for the services given at start, segments that
//! never move for those added later), read and changed by the service's supervisor, its contexts, the
//! other services' supervisors and the runner's handle.
//!
//! Slots talk to each other through two atomics and one [`Signal`]: whoever changes
//! something a supervisor cares about (a dependency's readiness, a dependent that
//! stopped, a command, shutdown) stores it and notifies the supervisor's `wake`
//! signal; the supervisor re-examines everything when woken. The signal keeps a
//! permit, so no wake-up is lost.
//!
//! * [`Phase`] packs a service's current run number with its flags (active, ready,
//!   stopping, ended), so a `ready()` from a context of an old run is told apart
//!   atomically and a dependent sees a dependency's run and readiness in one load.
//! * [`PendingCommand`] holds the strongest command not yet taken: a stop is never
//!   replaced by a later restart.
//! * A stop request (`stop_run`) is a number that only goes up: a context of an old
//!   run always sees its shutdown requested. Who else listens for it (a
//!   `ShutdownRequested` registered with `stop`, a `CancellationToken`) is recorded
//!   in `listeners` first, so a request that finds nobody takes no lock.

use std::collections::{HashMap, HashSet};
use std::ops::BitOr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{Config, DEFAULT_SHUTDOWN_TIMEOUT, Reload};
use super::group::{GroupRt, Groups};
use super::slots::Slots;
use super::status::{Event, ServiceState, ServiceStatus};
use crate::error::{
    FailureKind, Report, ServiceError, ServiceErrorKind, ServiceFailure, ServiceReport,
    UnknownService,
};
use crate::messaging::bus::{EventBus, Frame, Topic};
use crate::sync::{Mutex, Signal};

/// A service's run number and flags, as one word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Phase(u64);

/// The flags of a [`Phase`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Flags(u64);

impl Flags {
    /// No run is active.
    pub(crate) const NONE: Flags = Flags(0);
    /// The run called `ready()` (or has no context).
    pub(crate) const READY: Flags = Flags(1);
    /// A run is active (claimed, running or winding down).
    pub(crate) const ACTIVE: Flags = Flags(2);
    /// The service has ended for good.
    pub(crate) const ENDED: Flags = Flags(4);
    /// The run is being stopped: its `ready()` no longer counts, so a body polled
    /// for the first time after its stop began cannot let dependents start.
    pub(crate) const STOPPING: Flags = Flags(8);
    /// The run is being stopped because its watchdog found it hung.
    pub(crate) const HUNG: Flags = Flags(16);
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

const RUN_SHIFT: u32 = 5;

impl Phase {
    fn new(run: u64, flags: Flags) -> Phase {
        Phase((run << RUN_SHIFT) | flags.0)
    }

    fn run(self) -> u64 {
        self.0 >> RUN_SHIFT
    }

    fn has(self, flags: Flags) -> bool {
        self.0 & flags.0 != 0
    }

    pub(crate) fn is_ready(self) -> bool {
        self.has(Flags::READY)
    }

    pub(crate) fn is_active(self) -> bool {
        self.has(Flags::ACTIVE)
    }

    pub(crate) fn has_ended(self) -> bool {
        self.has(Flags::ENDED)
    }
}

/// A command for a service's supervisor, ordered so the stronger one wins.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub(crate) enum Command {
    Restart = 1,
    Stop = 2,
}

/// The strongest command not yet taken by the supervisor.
#[derive(Default)]
pub(crate) struct PendingCommand(AtomicU8);

impl PendingCommand {
    /// Records `cmd` unless a stronger one is pending.
    pub(crate) fn request(&self, cmd: Command) {
        self.0.fetch_max(cmd as u8, Ordering::AcqRel);
    }

    /// Takes the pending command, if any.
    pub(crate) fn take(&self) -> Option<Command> {
        // A load first: commands are rare.
        if self.0.load(Ordering::Acquire) == 0 {
            return None;
        }
        match self.0.swap(0, Ordering::AcqRel) {
            1 => Some(Command::Restart),
            2 => Some(Command::Stop),
            _ => None,
        }
    }

    /// Whether a stop is pending (it stays pending).
    pub(crate) fn is_stop(&self) -> bool {
        self.0.load(Ordering::Acquire) == Command::Stop as u8
    }
}

/// Who besides the supervisor may be listening for a stop request.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(crate) enum Listener {
    /// A `ShutdownRequested` registered with the slot's `stop` notify.
    Notify = 1,
    /// A run's `CancellationToken`.
    Token = 2,
}

/// One service, as the runner keeps it for the whole run.
pub(crate) struct Slot {
    pub(crate) name: Box<str>,
    pub(crate) has_context: bool,
    /// Its group's index in `Shared::groups`, or `NO_GROUP`.
    pub(crate) group: u32,
    /// Its own settings; `None` for the defaults (`Shared::default_config`).
    config: Option<Box<Config>>,
    deps: Box<[usize]>,
    dependents: Box<[usize]>,
    phase: AtomicU64,
    pub(crate) cmd: PendingCommand,
    /// Wakes the supervisor.
    pub(crate) wake: Signal,
    /// The last run asked to stop.
    pub(crate) stop_run: AtomicU64,
    /// Wakes every `ShutdownRequested` of a context when its run is asked to stop.
    pub(crate) stop: Notify,
    listeners: AtomicU8,
    /// The last heartbeat of the current run, in nanoseconds since the runner
    /// started (`Shared::started`); kept only for services with a watchdog.
    beat: AtomicU64,
    /// Set once the service's supervisor has ended (`Shared::supervisor_ended`).
    ended: AtomicBool,
    /// Set once the service has been removed (`RunnerHandle::remove`): it is
    /// skipped by name lookups, status and the report.
    pub(crate) removed: AtomicBool,
    /// Whether services added at runtime depend on it (their indices are in the
    /// registry, `Registry::dependents`). Never cleared.
    has_extra: AtomicBool,
    /// What the runner reports and the run's tied tasks.
    pub(crate) inner: Mutex<SlotInner>,
}

/// The part of a slot behind its lock.
pub(crate) struct SlotInner {
    pub(crate) state: ServiceState,
    pub(crate) restarts: u32,
    pub(crate) last_error: Option<Arc<ServiceError>>,
    /// When the current run started, if one is running.
    pub(crate) since: Option<Instant>,
    /// The current run (0 before the first): also the status's run count.
    pub(crate) run: u64,
    /// Whether `ctx.spawn` may still tie tasks to the current run.
    pub(crate) open: bool,
    /// The run's tied tasks, made by the first `ctx.spawn`.
    pub(crate) tied: Option<Box<Tied>>,
    /// Made by the first `ctx.cancellation_token()` of the run.
    pub(crate) token: Option<CancellationToken>,
    /// How long the last stop took, if the last run was stopped (for the report).
    pub(crate) stop_took: Option<Duration>,
    /// Whether the last run had to be aborted.
    pub(crate) aborted: bool,
    /// Tied tasks aborted so far, over every run.
    pub(crate) tasks_aborted: usize,
    /// Failed runs by kind (`error::FAILURE_LABELS`), made by the first.
    pub(crate) failures: Option<Box<[u64; 5]>>,
}

/// The tasks tied to a run, and the first failure among them.
#[derive(Default)]
pub(crate) struct Tied {
    pub(crate) set: JoinSet<()>,
    pub(crate) error: Option<ServiceErrorKind>,
}

impl Slot {
    pub(crate) fn new(
        name: String,
        has_context: bool,
        config: Option<Box<Config>>,
        deps: Vec<usize>,
        dependents: Vec<usize>,
        group: u32,
    ) -> Slot {
        Slot {
            name: name.into_boxed_str(),
            has_context,
            group,
            config,
            deps: deps.into(),
            dependents: dependents.into(),
            phase: AtomicU64::new(0),
            cmd: PendingCommand::default(),
            wake: Signal::default(),
            stop_run: AtomicU64::new(0),
            stop: Notify::new(),
            listeners: AtomicU8::new(0),
            beat: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            has_extra: AtomicBool::new(false),
            inner: Mutex::new(SlotInner {
                state: ServiceState::Starting,
                restarts: 0,
                last_error: None,
                since: None,
                run: 0,
                open: false,
                tied: None,
                token: None,
                stop_took: None,
                aborted: false,
                tasks_aborted: 0,
                failures: None,
            }),
        }
    }

    /// The name as reported in events, errors and status.
    pub(crate) fn shared_name(&self) -> Arc<str> {
        Arc::from(&*self.name)
    }

    pub(crate) fn deps(&self) -> &[usize] {
        &self.deps
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Records (for good) that someone besides the supervisor listens for stop
    /// requests this way; to be called before the listener checks `stop_run` (see
    /// `Shared::request_stop`).
    pub(crate) fn listen(&self, how: Listener) {
        let bit = how as u8;
        if self.listeners.load(Ordering::SeqCst) & bit == 0 {
            self.listeners.fetch_or(bit, Ordering::SeqCst);
        }
    }
}

/// Published on the runner's bus at each reload, for `ServiceContext::reloads`.
pub(crate) struct ReloadSignal {
    /// The services the reload restarts, with their run at the reload (taken
    /// before any restart was asked for).
    pub(crate) restarting: Vec<(Arc<str>, u64)>,
}

/// What only services added or removed at runtime need, made by the first lookup
/// by name that needs it, so a runner whose set never changes pays nothing for it.
#[derive(Default)]
pub(crate) struct Registry {
    /// Every service not removed, by name.
    pub(crate) names: HashMap<Arc<str>, usize>,
    /// The dependents added at runtime of each service (`Slot::has_extra`).
    pub(crate) dependents: HashMap<usize, Vec<usize>>,
    /// Services a `remove` is stopping: nothing new may depend on them.
    pub(crate) removing: HashSet<usize>,
}

/// Everything a runner's parts share.
pub(crate) struct Shared {
    pub(crate) slots: Slots<Slot>,
    /// The groups, fixed at start, and their indices by name.
    pub(crate) groups: Box<[GroupRt]>,
    pub(crate) group_index: HashMap<String, u32>,
    /// Made on first use: see [`Registry`].
    registry: Mutex<Option<Box<Registry>>>,
    /// `RunnerHandle::remove` calls waiting for a supervisor to end.
    removers: AtomicUsize,
    /// Notified as a supervisor ends, while `removers` is not zero.
    slot_ended: Notify,
    /// The runtime the runner started on: services added later are spawned there.
    pub(crate) rt: tokio::runtime::Handle,
    /// The settings of services that set none: the defaults, with the runner's
    /// shutdown timeout.
    default_config: Config,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) forced: AtomicBool,
    pub(crate) root: CancellationToken,
    /// Cancelled when the runner has ended (its control task is over).
    pub(crate) finished: CancellationToken,
    /// Whether the runner's control task is running (cleared as it ends, also by
    /// a panic).
    pub(crate) control_alive: AtomicBool,
    pub(crate) events: broadcast::Sender<Event>,
    /// Live `Events` streams: checked on every state change, so no lock is taken
    /// when nobody listens (`broadcast::Sender::receiver_count` locks).
    pub(crate) subscribers: Arc<AtomicUsize>,
    pub(crate) failures: Mutex<Vec<ServiceFailure>>,
    pub(crate) aborted: Mutex<Vec<Arc<str>>>,
    /// Supervisors still running; `ended` is notified when it reaches zero.
    live: AtomicUsize,
    ended: Notify,
    /// Notified when `live` reaches one.
    one_left: Notify,
    /// When the runner started its services: the start of every first run that
    /// waits for no dependency.
    pub(crate) started: Instant,
    /// The runner's scope: services' bodies and tied tasks run inside it, so
    /// `bus::ctx` reaches the runner's bus from them.
    pub(crate) frame: Arc<Frame>,
    /// Where every [`Event`] is published on the runner's bus.
    bus_events: Arc<Topic<Event>>,
}

impl Shared {
    pub(crate) fn new(
        slots: Vec<Slot>,
        (groups, group_index): Groups,
        shutdown_timeout: Duration,
        token: Option<CancellationToken>,
        frame: Arc<Frame>,
    ) -> Shared {
        Shared {
            bus_events: frame.bus().topic::<Event>(),
            frame,
            live: AtomicUsize::new(slots.len()),
            slots: Slots::new(slots),
            groups,
            group_index,
            registry: Mutex::new(None),
            removers: AtomicUsize::new(0),
            slot_ended: Notify::new(),
            rt: tokio::runtime::Handle::current(),
            default_config: Config {
                shutdown_timeout: Some(shutdown_timeout),
                ..Config::DEFAULT
            },
            shutting_down: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            root: token.unwrap_or_default(),
            finished: CancellationToken::new(),
            control_alive: AtomicBool::new(true),
            events: broadcast::channel(1024).0,
            subscribers: Arc::default(),
            failures: Mutex::new(Vec::new()),
            aborted: Mutex::new(Vec::new()),
            ended: Notify::new(),
            one_left: Notify::new(),
            started: Instant::now(),
        }
    }

    /// The settings of service `idx`.
    pub(crate) fn config(&self, idx: usize) -> &Config {
        self.slots[idx]
            .config
            .as_deref()
            .unwrap_or(&self.default_config)
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
        if self.slots[idx].ended.swap(true, Ordering::SeqCst) {
            return;
        }
        // Pairs with `wait_ended`: it counts itself, then looks at `ended`.
        if self.removers.load(Ordering::SeqCst) > 0 {
            self.slot_ended.notify_waiters();
        }
        match self.live.fetch_sub(1, Ordering::AcqRel) {
            1 => self.ended.notify_waiters(),
            2 => self.one_left.notify_waiters(),
            _ => {}
        }
    }

    /// Waits until at most one supervisor is still running (for a service that
    /// serves while the others stop: the HTTP server).
    pub(crate) async fn until_one_left(&self) {
        loop {
            let notified = self.one_left.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live.load(Ordering::Acquire) <= 1 {
                return;
            }
            notified.await;
        }
    }

    /// Waits until the supervisor of `idx` has ended.
    pub(crate) async fn wait_ended(&self, idx: usize) {
        struct Count<'a>(&'a AtomicUsize);
        impl Drop for Count<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.removers.fetch_add(1, Ordering::SeqCst);
        let _count = Count(&self.removers);
        loop {
            let notified = self.slot_ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.slots[idx].ended.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// A service is being added: counts its supervisor as live, unless every
    /// supervisor has already ended (the runner is over) or shutdown has begun.
    pub(crate) fn admit(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire)
            && self
                .live
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n > 0).then_some(n + 1)
                })
                .is_ok()
    }

    /// The registry, made on first use from the services not removed.
    pub(crate) fn registry(&self) -> crate::sync::MutexGuard<'_, Option<Box<Registry>>> {
        let mut reg = self.registry.lock();
        if reg.is_none() {
            let mut names = HashMap::with_capacity(self.slots.len());
            for (idx, slot) in self.slots.iter().enumerate() {
                if !slot.is_removed() {
                    names.insert(slot.shared_name(), idx);
                }
            }
            *reg = Some(Box::new(Registry {
                names,
                ..Registry::default()
            }));
        }
        reg
    }

    /// Records that `dependent` (added at runtime) depends on `idx`. Under the
    /// registry's lock, before `dependent`'s supervisor starts.
    pub(crate) fn add_dependent(
        reg: &mut Registry,
        slots: &Slots<Slot>,
        idx: usize,
        dependent: usize,
    ) {
        reg.dependents.entry(idx).or_default().push(dependent);
        // `SeqCst`, with the fences of `claim` and `end_run`: a dependency that
        // stops reads it after its fence (see `any_dependent`).
        slots[idx].has_extra.store(true, Ordering::SeqCst);
    }

    /// Whether `f` holds for a dependent of `idx`, given at start or added since.
    pub(crate) fn any_dependent(&self, idx: usize, mut f: impl FnMut(usize) -> bool) -> bool {
        let slot = &self.slots[idx];
        if slot.dependents.iter().any(|&d| f(d)) {
            return true;
        }
        if slot.has_extra.load(Ordering::SeqCst) {
            let reg = self.registry.lock();
            if let Some(list) = reg.as_ref().and_then(|r| r.dependents.get(&idx)) {
                return list.iter().any(|&d| f(d));
            }
        }
        false
    }

    /// Whether `idx` has dependents (given at start, or added since).
    pub(crate) fn has_dependents(&self, idx: usize) -> bool {
        let slot = &self.slots[idx];
        !slot.dependents.is_empty() || slot.has_extra.load(Ordering::SeqCst)
    }

    /// Wakes the supervisors of every dependent of `idx`.
    fn wake_dependents(&self, idx: usize) {
        self.any_dependent(idx, |d| {
            self.slots[d].wake.notify();
            false
        });
    }

    pub(crate) async fn all_ended(&self) {
        loop {
            let notified = self.ended.notified();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn phase(&self, idx: usize) -> Phase {
        Phase(self.slots[idx].phase.load(Ordering::Acquire))
    }

    /// [`phase`](Self::phase), in the single total order of `SeqCst` operations
    /// (a plain load on x86).
    pub(crate) fn phase_sc(&self, idx: usize) -> Phase {
        Phase(self.slots[idx].phase.load(Ordering::SeqCst))
    }

    /// Marks run `run` of `idx` as stopping (not ready) without waking anyone: the
    /// fast stop, before it looks for dependents added at runtime once more.
    pub(crate) fn publish_stopping(&self, idx: usize, run: u64) {
        self.slots[idx].phase.swap(
            Phase::new(run, Flags::ACTIVE | Flags::STOPPING).0,
            Ordering::SeqCst,
        );
    }

    /// Stores a new phase for `idx` and wakes whoever may care: dependents (readiness)
    /// and dependencies (waiting for their dependents to stop).
    pub(crate) fn set_phase(&self, idx: usize, run: u64, flags: Flags) {
        let slot = &self.slots[idx];
        // `SeqCst` (a swap: a store that is also a full barrier, which a plain
        // `SeqCst` store is on x86 anyway): the look for dependents added at runtime
        // (`any_dependent`) comes after it, and a dependent being added checks this
        // phase after its own fence (`claim`), so one of them sees the other.
        slot.phase.swap(Phase::new(run, flags).0, Ordering::SeqCst);
        for &d in slot.deps() {
            self.slots[d].wake.notify();
        }
        self.wake_dependents(idx);
    }

    pub(crate) fn mark_ready(&self, idx: usize, run: u64) {
        let slot = &self.slots[idx];
        let mut cur = slot.phase.load(Ordering::Acquire);
        loop {
            let phase = Phase(cur);
            if phase.run() != run
                || phase.has(Flags::READY | Flags::ENDED | Flags::STOPPING)
                || !phase.is_active()
            {
                return;
            }
            // `SeqCst`: the look for dependents added at runtime follows (see
            // `may_start`).
            match slot.phase.compare_exchange_weak(
                cur,
                cur | Flags::READY.0,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        tracing::debug!(service = %slot.name, run, "ready");
        self.wake_dependents(idx);
        self.emit(|| Event::Ready {
            service: slot.shared_name(),
        });
    }

    /// Records a heartbeat of run `run` of `idx` now, if it is the current run and
    /// the service has a watchdog (a context of an old run does not keep a new one
    /// alive).
    pub(crate) fn heartbeat(&self, idx: usize, run: u64) {
        if self.config(idx).watchdog.is_some() && self.phase(idx).run() == run {
            self.set_beat(idx, Instant::now());
        }
    }

    /// Stores `at` as the last heartbeat of `idx`.
    pub(crate) fn set_beat(&self, idx: usize, at: Instant) {
        let nanos = at.saturating_duration_since(self.started).as_nanos();
        self.slots[idx]
            .beat
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// The last heartbeat of `idx`'s current run (its start if it has not beaten).
    pub(crate) fn last_beat(&self, idx: usize) -> Instant {
        self.started + Duration::from_nanos(self.slots[idx].beat.load(Ordering::Acquire))
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
        if listeners & Listener::Notify as u8 != 0 {
            slot.stop.notify_waiters();
        }
        if listeners & Listener::Token as u8 != 0 {
            let token = slot.inner.lock().token.clone();
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
            let mut inner = slot.inner.lock();
            also(&mut inner);
            if inner.state == state {
                return;
            }
            inner.state = state;
            if state != ServiceState::Running {
                inner.since = None;
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

    /// Sends an event if anyone listens (an `Events` stream or a subscription on the
    /// runner's bus): inlined, so a state change with nobody listening costs two
    /// loads.
    #[inline(always)]
    pub(crate) fn emit(&self, ev: impl FnOnce() -> Event) {
        if self.subscribers.load(Ordering::Relaxed) > 0 || self.bus_events.has_subscribers() {
            self.send_event(ev());
        }
    }

    #[cold]
    fn send_event(&self, ev: Event) {
        if self.subscribers.load(Ordering::Relaxed) > 0 {
            let _ = self.events.send(ev.clone());
        }
        self.bus_events.publish(ev);
    }

    /// The shutdown timeout of services that set none.
    pub(crate) fn default_shutdown_timeout(&self) -> Duration {
        self.default_config
            .shutdown_timeout
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT)
    }

    /// The runner's bus.
    pub(crate) fn bus(&self) -> &EventBus {
        self.frame.bus()
    }

    /// The task of service `idx` panicked (outside every guard around user code):
    /// the service ends as `Failed` with an internal failure, its tied tasks are
    /// aborted, whoever waits on it is woken, and the runner shuts down.
    pub(crate) fn internal_failure(&self, idx: usize, message: String) {
        let slot = &self.slots[idx];
        tracing::error!(service = %slot.name, %message, "the runner's task for this service panicked");
        let (run, tied) = {
            let mut inner = slot.inner.lock();
            inner.open = false;
            let mut tied = inner.tied.take();
            if let Some(t) = &mut tied {
                // Finished but not yet joined: not aborted.
                while t.set.try_join_next().is_some() {}
                inner.tasks_aborted += t.set.len();
            }
            (inner.run, tied)
        };
        // Dropping the set aborts the tasks (tokio drops them, guarded, on their
        // own threads).
        drop(tied);
        self.request_stop(idx, run);
        if !slot.ended.load(Ordering::Acquire) {
            self.record_failure(ServiceFailure {
                service: slot.shared_name(),
                kind: FailureKind::Internal { message },
            });
            self.set_phase(idx, run, Flags::ENDED);
            self.set_state(idx, ServiceState::Failed);
        }
        self.begin_shutdown();
        self.supervisor_ended(idx);
    }

    pub(crate) fn record_failure(&self, failure: ServiceFailure) {
        self.failures.lock().push(failure);
    }

    pub(crate) fn begin_shutdown(&self) {
        // `SeqCst`: pairs with `RunnerHandle::add` (see `Slots::push`).
        if !self.shutting_down.swap(true, Ordering::SeqCst) {
            tracing::info!("shutting down");
            self.root.cancel();
            for slot in self.slots.iter() {
                slot.wake.notify();
            }
        }
    }

    pub(crate) fn force(&self) {
        self.shutting_down.store(true, Ordering::Release);
        if !self.forced.swap(true, Ordering::AcqRel) {
            tracing::warn!("second signal: aborting what is still running");
            self.root.cancel();
            for slot in self.slots.iter() {
                slot.wake.notify();
            }
        }
    }

    /// A reload (SIGHUP or `RunnerHandle::reload`): services that take reloads
    /// themselves are told, the others restart in dependency order.
    pub(crate) fn restart_all(&self) {
        if self.shutting_down.load(Ordering::Acquire) {
            return;
        }
        tracing::info!("reloading: restarting every service that does not take reloads itself");
        let restarting = self.reload_restarts();
        let hook = |idx: usize| self.config(idx).reload == Reload::Hook;
        // A service restarted directly is one with no dependency that restarts: the
        // others go down and come back after their dependencies by the dependency
        // rule, so each service restarts once, in dependency order.
        for (idx, slot) in self.slots.iter().enumerate() {
            if !slot.is_removed() && !hook(idx) && slot.deps().iter().all(|&d| hook(d)) {
                slot.cmd.request(Command::Restart);
                slot.wake.notify();
            }
        }
        self.bus().send(ReloadSignal { restarting });
    }

    /// A snapshot of every service not removed (`RunnerHandle::status`).
    pub(crate) fn status(&self) -> Vec<ServiceStatus> {
        let now = Instant::now();
        (0..self.slots.len())
            .filter(|&idx| !self.slots[idx].is_removed())
            .map(|idx| {
                let slot = &self.slots[idx];
                let ready = self.phase(idx).is_ready();
                let inner = slot.inner.lock();
                ServiceStatus {
                    name: slot.shared_name(),
                    state: inner.state,
                    ready: ready && inner.state == ServiceState::Running,
                    restarts: inner.restarts,
                    runs: inner.run,
                    last_error: inner.last_error.clone(),
                    uptime: inner.since.map(|s| now.saturating_duration_since(s)),
                }
            })
            .collect()
    }

    /// The services with a watchdog whose current run has not beaten for longer
    /// than it (a hung run not yet stopped, or one still being stopped).
    pub(crate) fn stale_watchdogs(&self) -> Vec<Arc<str>> {
        let now = Instant::now();
        (0..self.slots.len())
            .filter(|&idx| {
                let slot = &self.slots[idx];
                let Some(period) = self.config(idx).watchdog else {
                    return false;
                };
                // A run being stopped is not watched, unless it is stopped for
                // hanging.
                let phase = self.phase(idx);
                !slot.is_removed()
                    && phase.is_active()
                    && !phase.has_ended()
                    && (!phase.has(Flags::STOPPING) || phase.has(Flags::HUNG))
                    && now.saturating_duration_since(self.last_beat(idx)) > period
            })
            .map(|idx| self.slots[idx].shared_name())
            .collect()
    }

    /// Failed runs of every service not removed, by kind (`error::FAILURE_LABELS`).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn failure_counts(&self) -> Vec<(Arc<str>, [u64; 5])> {
        (0..self.slots.len())
            .filter(|&idx| !self.slots[idx].is_removed())
            .map(|idx| {
                let slot = &self.slots[idx];
                let counts = slot
                    .inner
                    .lock()
                    .failures
                    .as_deref()
                    .copied()
                    .unwrap_or_default();
                (slot.shared_name(), counts)
            })
            .collect()
    }

    /// The services a reload restarts: those that do not take reloads themselves,
    /// and those that depend on one of them (restarted by the dependency rule).
    pub(crate) fn reload_restarts(&self) -> Vec<(Arc<str>, u64)> {
        let n = self.slots.len();
        let mut restarts: Vec<bool> = (0..n)
            .map(|idx| !self.slots[idx].is_removed() && self.config(idx).reload != Reload::Hook)
            .collect();
        loop {
            let mut changed = false;
            for idx in 0..n {
                if !restarts[idx]
                    && !self.slots[idx].is_removed()
                    && self.slots[idx].deps().iter().any(|&d| restarts[d])
                {
                    restarts[idx] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        (0..n)
            .filter(|&idx| restarts[idx] && !self.phase(idx).has_ended())
            .map(|idx| {
                (
                    self.slots[idx].shared_name(),
                    self.slots[idx].inner.lock().run,
                )
            })
            .collect()
    }

    /// What became of every service, as it is now (final once every supervisor
    /// has ended).
    pub(crate) fn report(&self) -> Report {
        Report {
            services: (0..self.slots.len())
                .filter(|&idx| !self.slots[idx].is_removed())
                .map(|idx| self.service_report(idx))
                .collect(),
        }
    }

    /// What became of service `idx`, as it is now.
    pub(crate) fn service_report(&self, idx: usize) -> ServiceReport {
        let slot = &self.slots[idx];
        let inner = slot.inner.lock();
        ServiceReport {
            name: slot.shared_name(),
            state: inner.state,
            runs: inner.run,
            restarts: inner.restarts,
            last_error: inner.last_error.clone(),
            stop_duration: inner.stop_took,
            aborted: inner.aborted,
            tasks_aborted: inner.tasks_aborted,
        }
    }

    /// The services not removed that depend on `idx` (under the registry's lock).
    pub(crate) fn live_dependents(&self, reg: &Registry, idx: usize) -> Vec<String> {
        let slot = &self.slots[idx];
        let added = reg.dependents.get(&idx).map_or(&[][..], Vec::as_slice);
        slot.dependents
            .iter()
            .chain(added)
            .map(|&d| &self.slots[d])
            .filter(|d| !d.is_removed())
            .map(|d| d.name.to_string())
            .collect()
    }

    /// Forgets service `idx`, whose supervisor has ended (under the registry's lock).
    pub(crate) fn forget(&self, reg: &mut Registry, idx: usize) {
        let slot = &self.slots[idx];
        if slot.removed.swap(true, Ordering::AcqRel) {
            return;
        }
        if reg.names.get(&*slot.name) == Some(&idx) {
            reg.names.remove(&*slot.name);
        }
        reg.dependents.remove(&idx);
        reg.removing.remove(&idx);
        for &d in slot.deps() {
            if let Some(list) = reg.dependents.get_mut(&d) {
                list.retain(|&x| x != idx);
            }
        }
        // What it kept for the report goes; the slot itself stays (see `Slots`).
        let mut inner = slot.inner.lock();
        inner.last_error = None;
        inner.tied = None;
        inner.token = None;
    }

    /// The index of the service named `name`, if one is (not removed).
    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        // Once services are added or removed the registry has an index; until then
        // a linear search: commands are rare, and an index would cost every service
        // memory for the whole run.
        if let Some(reg) = self.registry.lock().as_ref() {
            return reg.names.get(name).copied();
        }
        self.slots
            .iter()
            .position(|s| &*s.name == name && !s.is_removed())
    }

    pub(crate) fn command(&self, name: &str, cmd: Command) -> Result<(), UnknownService> {
        let idx = self
            .find(name)
            .ok_or_else(|| UnknownService(name.to_owned()))?;
        let slot = &self.slots[idx];
        slot.cmd.request(cmd);
        slot.wake.notify();
        Ok(())
    }
}
