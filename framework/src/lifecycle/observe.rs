//! Observers of every runner a program starts: how the operations layer (systemd
//! notify, HTTP) follows runners without the lifecycle layer knowing it. An
//! observer is called as each runner starts, before its services do, with a
//! [`RunnerWatch`]: a read-only view of the runner that outlives it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub(crate) use super::state::ReloadSignal;
use super::state::Shared;
use super::status::ServiceStatus;
use crate::messaging::bus::{EventBus, Subscription};

type Observer = Arc<dyn Fn(&RunnerWatch) + Send + Sync>;

static OBSERVERS: RwLock<Vec<Observer>> = RwLock::new(Vec::new());

/// Calls `observer` with each runner that starts from now on.
pub(crate) fn add_observer(observer: impl Fn(&RunnerWatch) + Send + Sync + 'static) {
    OBSERVERS
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::new(observer));
}

/// Tells the observers that a runner starts (its services have not yet).
pub(crate) fn runner_starts(shared: &Arc<Shared>) {
    let observers = OBSERVERS.read().unwrap_or_else(|e| e.into_inner()).clone();
    if observers.is_empty() {
        return;
    }
    let watch = RunnerWatch::new(shared.clone());
    for observer in observers {
        observer(&watch);
    }
}

/// A read-only view of a runner, for observers.
#[derive(Clone)]
pub(crate) struct RunnerWatch {
    shared: Arc<Shared>,
}

impl RunnerWatch {
    pub(crate) fn new(shared: Arc<Shared>) -> RunnerWatch {
        RunnerWatch { shared }
    }

    /// The runner `ctx`'s run belongs to (for the operations layer's services).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn of(ctx: &super::ServiceContext) -> RunnerWatch {
        RunnerWatch::new(ctx.shared().clone())
    }

    /// A snapshot of every service.
    pub(crate) fn status(&self) -> Vec<ServiceStatus> {
        self.shared.status()
    }

    /// The runner's bus, where every `Event` is published.
    pub(crate) fn bus(&self) -> &EventBus {
        self.shared.bus()
    }

    /// Yields at each reload (SIGHUP or `RunnerHandle::reload`).
    pub(crate) fn reloads(&self) -> Subscription<ReloadSignal> {
        self.shared.bus().subscribe::<ReloadSignal>()
    }

    /// Cancelled when the runner begins to shut down.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.shared.root.clone()
    }

    /// Cancelled when the runner has ended.
    pub(crate) fn finished(&self) -> CancellationToken {
        self.shared.finished.clone()
    }

    /// Whether the runner's control task is running.
    pub(crate) fn control_alive(&self) -> bool {
        self.shared
            .control_alive
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Returns once every service but one (the caller's own) has ended.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) async fn until_one_left(&self) {
        self.shared.until_one_left().await;
    }

    /// Services whose watchdog has gone stale.
    pub(crate) fn stale_watchdogs(&self) -> Vec<Arc<str>> {
        self.shared.stale_watchdogs()
    }

    /// Adds a service to the runner, as `RunnerHandle::add` does.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn add(&self, service: super::Service) -> Result<(), crate::error::ConfigError> {
        super::handle::add_service(&self.shared, service)
    }

    /// Failed runs of every service, by kind (`error::FAILURE_LABELS`).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn failure_counts(&self) -> Vec<(Arc<str>, [u64; 5])> {
        self.shared.failure_counts()
    }

    /// Whether the runner was started outside any other runner's services (a
    /// program's main runner, not one nested in a service).
    pub(crate) fn is_top_level(&self) -> bool {
        !self.shared.frame.has_parent()
    }

    /// The longest shutdown timeout of the services not removed.
    pub(crate) fn max_shutdown_timeout(&self) -> Duration {
        (0..self.shared.slots.len())
            .filter(|&idx| !self.shared.slots[idx].is_removed())
            .map(|idx| self.shared.shutdown_timeout(idx))
            .max()
            .unwrap_or_else(|| self.shared.default_shutdown_timeout())
    }
}
