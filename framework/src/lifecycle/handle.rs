//! The handle of a running runner: status, events, per-service control and the
//! final outcome.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::group::NO_GROUP;
use super::service::Service;
use super::state::{Command, Shared};
use super::status::{Event, ServiceStatus};
use super::supervisor;
use crate::error::{
    ConfigError, Error, RemoveError, Report, Result, ServiceFailures, ServiceReport, UnknownService,
};

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
/// handle.wait().await?;
/// # Ok(())
/// # }
/// ```
pub struct RunnerHandle {
    shared: Arc<Shared>,
    /// The control task until a `wait` has seen it end, then its panic, if any.
    control: tokio::sync::Mutex<Control>,
}

enum Control {
    Running(JoinHandle<()>),
    Ended(Option<String>),
}

impl RunnerHandle {
    pub(crate) fn new(shared: Arc<Shared>, control: JoinHandle<()>) -> RunnerHandle {
        RunnerHandle {
            shared,
            control: tokio::sync::Mutex::new(Control::Running(control)),
        }
    }
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
    /// A snapshot of every service, in the order they were added. It stays
    /// readable after the runner has ended ([`wait`](Self::wait) does not consume
    /// the handle): then it is the final state of each service.
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
        self.shared.status()
    }

    /// A stream of every state change and failure from now on.
    ///
    /// Up to 1024 events are buffered per stream; a stream that falls further behind
    /// yields [`Event::Lagged`] with the number it missed. The stream ends when the
    /// runner has ended and every event was read.
    ///
    /// It starts when it is called, after `start()`: a service that fails at once may
    /// already have done so. To see every event from the first, subscribe to
    /// [`Event`] on a bus and give it to the runner before it starts
    /// ([`Runner::bus`](crate::Runner::bus)).
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
            // Not the whole `Shared`: the stream holds its receiver and the
            // runner's `finished` token, and ends once the runner has ended and
            // what was buffered has been read.
            subscribers: self.shared.subscribers.clone(),
            inner: Box::pin(
                futures::stream::unfold(
                    (self.shared.events.subscribe(), self.shared.finished.clone()),
                    |(mut rx, finished)| async move {
                        // Once the runner has ended, what is buffered is the rest.
                        let next = if finished.is_cancelled() {
                            match rx.try_recv() {
                                Ok(ev) => Ok(ev),
                                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                    Err(broadcast::error::RecvError::Lagged(n))
                                }
                                Err(_) => Err(broadcast::error::RecvError::Closed),
                            }
                        } else {
                            tokio::select! {
                                biased;
                                r = rx.recv() => r,
                                () = finished.cancelled() => return Some((None, (rx, finished))),
                            }
                        };
                        match next {
                            Ok(ev) => Some((Some(ev), (rx, finished))),
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                Some((Some(Event::Lagged(n)), (rx, finished)))
                            }
                            Err(broadcast::error::RecvError::Closed) => None,
                        }
                    },
                )
                // `None` items: the runner ended during a wait, look again.
                .filter_map(std::future::ready),
            ),
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
    /// handle.wait().await?;
    /// # Ok(())
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

    /// Reloads, as SIGHUP does: every service restarts in dependency order, except
    /// those that take reloads themselves ([`Reload::Hook`](crate::Reload::Hook)),
    /// which see it through [`ServiceContext::reloads`](crate::ServiceContext::reloads).
    /// Does nothing once the runner is shutting down.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(handle: &servicekit::RunnerHandle) {
    /// handle.reload();
    /// # }
    /// ```
    pub fn reload(&self) {
        self.shared.restart_all();
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
        self.shared.command(name, Command::Restart)
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
        self.shared.command(name, Command::Stop)
    }

    /// Adds a service to the running set and starts it (once its dependencies are
    /// ready). Every rule of the services given at start holds for it: its restart
    /// policy, backoff and intensity, its watchdog, and its dependencies both ways
    /// (it stops and restarts with them; services added later may depend on it). It
    /// appears in [`status`](Self::status), [`events`](Self::events) and the report.
    ///
    /// It is spawned on the runtime the runner started on, so this may be called
    /// from any thread.
    ///
    /// # Errors
    ///
    /// Checked against the running set before anything starts, as
    /// [`Runner::start`](crate::Runner::start) checks the initial one:
    /// [`ConfigError::EmptyName`], [`ConfigError::DuplicateName`] (a service not
    /// removed has that name), [`ConfigError::UnknownDependency`],
    /// [`ConfigError::Cycle`] (it depends on itself: nothing running can depend on a
    /// service not yet added, so no longer cycle can form), [`ConfigError::Invalid`],
    /// and [`ConfigError::NotRunning`] once the runner is shutting down.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Runner, Service};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> servicekit::Result<()> {
    /// let handle = Runner::new()
    ///     .signals(false)
    ///     .service(Service::new("db", |ctx| async move {
    ///         ctx.ready();
    ///         ctx.shutdown_requested().await
    ///     }))
    ///     .start()
    ///     .await?;
    /// handle.add(
    ///     Service::new("tenant-42", |ctx| async move { ctx.shutdown_requested().await })
    ///         .after(["db"]),
    /// )?;
    /// handle.shutdown();
    /// let report = handle.wait().await?;
    /// assert!(report.get("tenant-42").is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub fn add(&self, service: Service) -> Result<(), ConfigError> {
        add_service(&self.shared, service)
    }

    /// Stops a service for good and forgets it: it leaves
    /// [`status`](Self::status) and the final report, its name is free for a new
    /// service, and what it kept is freed. Returns what became of it.
    ///
    /// A service others depend on is not removed: remove (or never add) its
    /// dependents first. Stopping a dependency under running dependents is what
    /// [`stop`](Self::stop) is for; removing one would leave them pointing at
    /// nothing.
    ///
    /// It stops as in a shutdown (asked, then given its shutdown timeout, then
    /// aborted), and this waits for that. A service that has already ended is
    /// forgotten at once. As when services end by themselves, a runner whose last
    /// service is removed has nothing left to run, and ends.
    ///
    /// A failure while it stops (an error once asked, a hang past its shutdown
    /// timeout) is still one of the runner's failures: [`wait`](Self::wait)
    /// reports it in its error, though the service is no longer in the report.
    ///
    /// Each service added takes a slot in the runner's table (a few hundred bytes)
    /// that is not reused after it is removed; what it kept besides (its last
    /// error, its tasks, its name in the registry) is freed.
    ///
    /// # Errors
    ///
    /// [`RemoveError::Unknown`] if no service has that name,
    /// [`RemoveError::HasDependents`] naming those that depend on it.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before the service has ended, the service still
    /// stops, but is not forgotten: call `remove` again.
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
    ///     .service(Service::new("a", |ctx| async move { ctx.shutdown_requested().await }))
    ///     .service(Service::new("b", |ctx| async move { ctx.shutdown_requested().await }))
    ///     .start()
    ///     .await?;
    /// let removed = handle.remove("b").await.expect("nothing depends on b");
    /// assert_eq!(removed.state, ServiceState::Stopped);
    /// assert_eq!(handle.status().len(), 1);
    /// handle.shutdown();
    /// handle.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn remove(&self, name: &str) -> Result<ServiceReport, RemoveError> {
        let shared = &self.shared;
        let idx = {
            let mut guard = shared.registry();
            let reg = guard.as_mut().expect("made by `registry`");
            let idx = *reg
                .names
                .get(name)
                .ok_or_else(|| UnknownService(name.to_owned()))?;
            let dependents = shared.live_dependents(reg, idx);
            if !dependents.is_empty() {
                return Err(RemoveError::HasDependents {
                    service: name.to_owned(),
                    dependents,
                });
            }
            // From now on no service may be added depending on it.
            reg.removing.insert(idx);
            idx
        };
        let slot = &shared.slots[idx];
        slot.cmd.request(Command::Stop);
        slot.wake.notify();
        shared.wait_ended(idx).await;
        let report = shared.service_report(idx);
        let mut guard = shared.registry();
        shared.forget(guard.as_mut().expect("made by `registry`"), idx);
        Ok(report)
    }

    /// Waits until every service has ended (after a shutdown, an escalation, or because
    /// they all returned), then reports what became of each one. Signal handlers are
    /// removed.
    ///
    /// It can be called again (it returns the same outcome, less any service
    /// [removed](Self::remove) since), and the handle stays usable afterwards:
    /// [`status`](Self::status) gives the final state of each service.
    ///
    /// # Errors
    ///
    /// [`Error::Forced`] if a second signal forced the shutdown; [`Error::Services`]
    /// naming every service that gave up, failed while stopping or hung. Both carry
    /// the [`Report`] too ([`Error::report`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a `wait` dropped before the end changes nothing, and a later one
    /// takes over.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(handle: servicekit::RunnerHandle) {
    /// match handle.wait().await {
    ///     Ok(report) => println!("clean shutdown:\n{report}"),
    ///     Err(e) => eprintln!("{e}"),
    /// }
    /// let final_states = handle.status();
    /// # drop(final_states);
    /// # }
    /// ```
    pub async fn wait(&self) -> Result<Report> {
        let panic = {
            let mut control = self.control.lock().await;
            if let Control::Running(task) = &mut *control {
                let panic = match task.await {
                    Err(e) if e.is_panic() => Some(crate::guard::message(e.into_panic())),
                    _ => None,
                };
                if let Some(message) = &panic {
                    tracing::error!(%message, "the runner's control task panicked");
                }
                // Recorded before any other wait: the task is never awaited twice.
                *control = Control::Ended(panic);
            }
            match &*control {
                Control::Ended(panic) => panic.clone(),
                Control::Running(_) => None,
            }
        };
        if let Some(message) = panic {
            // The control task died (it relays signals and waits for the services):
            // the services are still stopped, and the error says what happened.
            self.shared.begin_shutdown();
            self.shared.all_ended().await;
            self.shared.finished.cancel();
            return Err(Error::Internal(message));
        }
        outcome(&self.shared)
    }
}

/// [`RunnerHandle::add`], for the handle and for observers.
pub(crate) fn add_service(shared: &Arc<Shared>, service: Service) -> Result<(), ConfigError> {
    let (idx, factory) = {
        let mut guard = shared.registry();
        let reg = guard.as_mut().expect("made by `registry`");
        let name = service.name.as_str();
        if name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        if reg.names.contains_key(name) {
            return Err(ConfigError::DuplicateName(name.to_owned()));
        }
        service.config().validate(name, service.has_context)?;
        let mut deps = Vec::with_capacity(service.dependencies().len());
        for d in service.dependencies() {
            if d == name {
                return Err(ConfigError::Cycle(vec![name.to_owned(), name.to_owned()]));
            }
            let Some(&j) = reg.names.get(d.as_str()) else {
                return Err(ConfigError::UnknownDependency {
                    service: name.to_owned(),
                    dependency: d.clone(),
                });
            };
            if reg.removing.contains(&j) {
                return Err(ConfigError::Invalid {
                    service: name.to_owned(),
                    problem: format!("it depends on `{d}`, which is being removed"),
                });
            }
            if !deps.contains(&j) {
                deps.push(j);
            }
        }
        let group = match service.group_name() {
            None => NO_GROUP,
            Some(g) => *shared
                .group_index
                .get(g)
                .ok_or_else(|| ConfigError::UnknownGroup {
                    member: format!("service `{name}`"),
                    group: g.to_owned(),
                })?,
        };
        if !shared.admit() {
            return Err(ConfigError::NotRunning(name.to_owned()));
        }
        let (slot, factory) = service.into_slot(
            deps.clone(),
            Vec::new(),
            group,
            shared.default_shutdown_timeout(),
        );
        let idx = shared.slots.push(slot);
        reg.names.insert(shared.slots[idx].shared_name(), idx);
        for d in deps {
            Shared::add_dependent(reg, &shared.slots, d, idx);
        }
        (idx, factory)
    };
    supervisor::spawn(shared.clone(), idx, factory, Some(&shared.rt));
    // A shutdown that began meanwhile may have woken every slot but this one
    // (see `Slots::push`).
    if shared.shutting_down.load(Ordering::SeqCst) {
        shared.slots[idx].wake.notify();
    }
    Ok(())
}

fn outcome(shared: &Shared) -> Result<Report> {
    let report = shared.report();
    if shared.forced.load(Ordering::Acquire) {
        return Err(Error::Forced {
            aborted: shared.aborted.lock().clone(),
            report,
        });
    }
    let failures = shared.failures.lock().clone();
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(Error::Services(ServiceFailures { failures, report }))
    }
}

impl Drop for RunnerHandle {
    fn drop(&mut self) {
        if let Control::Running(_) = self.control.get_mut() {
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
