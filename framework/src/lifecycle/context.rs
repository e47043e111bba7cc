//! `ServiceContext`: what a running service sees of its runner.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use std::sync::atomic::Ordering;
use tokio::sync::futures::Notified;
use tokio_util::sync::CancellationToken;

use super::body::IntoServiceResult;
use super::state::{Listener, ReloadSignal, Shared};
use crate::error::ServiceErrorKind;
use crate::messaging::bus::{EventBus, Subscription};

/// A running service's handle on its runner: shutdown, readiness and tied tasks.
///
/// A parameter of this type in a [`#[service]`](crate::service) fn is injected by the
/// runner (it is not part of the generated function's signature). Each run gets its own
/// context; clones are cheap and refer to the same run.
///
/// # Shutdown
///
/// When the runner shuts down, or this service is stopped or restarted, or a service it
/// depends on goes down, the context's shutdown is requested: [`shutdown_requested`]
/// resolves, [`is_shutdown_requested`] turns true and [`cancellation_token`] is
/// cancelled. The service then has its `shutdown_timeout` to return before it is
/// aborted and reported as hung.
///
/// [`shutdown_requested`]: ServiceContext::shutdown_requested
/// [`is_shutdown_requested`]: ServiceContext::is_shutdown_requested
/// [`cancellation_token`]: ServiceContext::cancellation_token
///
/// # Examples
///
/// ```
/// use servicekit::{service, ServiceContext};
///
/// #[service]
/// async fn server(ctx: ServiceContext) {
///     // ... bind sockets ...
///     ctx.ready(); // services that depend on this one may start now
///     while let Some(()) = ctx.until_shutdown(tokio::time::sleep(std::time::Duration::from_secs(1))).await {
///         // ... periodic work ...
///     }
/// }
/// # drop(server());
/// ```
#[derive(Clone)]
pub struct ServiceContext {
    shared: Arc<Shared>,
    idx: usize,
    run: u64,
    /// The waker of the service's own task, which polls the body (see
    /// [`ShutdownRequested`]).
    task: Waker,
}

impl fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceContext")
            .field("service", &self.name())
            .field("run", &self.run)
            .field("shutdown_requested", &self.is_shutdown_requested())
            .finish()
    }
}

impl ServiceContext {
    /// The context of run `run` of service `idx`.
    pub(crate) fn new(shared: Arc<Shared>, idx: usize, run: u64, task: Waker) -> ServiceContext {
        ServiceContext {
            shared,
            idx,
            run,
            task,
        }
    }

    /// How long this service has to stop once asked.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn shutdown_timeout(&self) -> std::time::Duration {
        self.shared.shutdown_timeout(self.idx)
    }

    /// The runner this run belongs to (for `observe::RunnerWatch::of`).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The service's name.
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{service, ServiceContext};
    /// #[service]
    /// async fn hello(ctx: ServiceContext) {
    ///     println!("I am {}", ctx.name());
    /// }
    /// # drop(hello());
    /// ```
    pub fn name(&self) -> &str {
        &self.shared.slots[self.idx].name
    }

    /// This run's number, counting from 1 (restarts increase it).
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{service, ServiceContext};
    /// #[service]
    /// async fn hello(ctx: ServiceContext) {
    ///     if ctx.run() > 1 {
    ///         println!("restarted");
    ///     }
    /// }
    /// # drop(hello());
    /// ```
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Marks the service ready: services that depend on it (`after = [...]`) may start.
    /// Calling it again, or once the runner has begun to stop the run (its
    /// dependents first) or the run has ended, does nothing.
    ///
    /// A service with a context is not ready until it calls this; one without a context
    /// is ready as soon as it starts.
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{service, ServiceContext};
    /// #[service(name = "db")]
    /// async fn db(ctx: ServiceContext) {
    ///     // ... open the pool ...
    ///     ctx.ready();
    ///     ctx.shutdown_requested().await;
    /// }
    /// # drop(db());
    /// ```
    pub fn ready(&self) {
        self.shared.mark_ready(self.idx, self.run);
    }

    /// Tells the service's watchdog that this run is alive (see
    /// [`Service::watchdog`](crate::Service::watchdog)): a run that goes longer
    /// than its watchdog without calling this is stopped as hung and restarted per
    /// its policy. Does nothing for a service without a watchdog, or from a context
    /// of a run that has ended. Cheap: a clock read and a store.
    ///
    /// Call it where the run makes progress (after each message handled, each
    /// round of a loop), not from a timer of its own: a timer keeps beating while
    /// the work it should vouch for is stuck.
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{service, ServiceContext};
    /// use std::time::Duration;
    ///
    /// #[service(watchdog = "30s")]
    /// async fn poller(ctx: ServiceContext) {
    ///     while ctx.until_shutdown(tokio::time::sleep(Duration::from_secs(5))).await.is_some() {
    ///         // ... poll the upstream (a call that might never answer) ...
    ///         ctx.heartbeat();
    ///     }
    /// }
    /// # drop(poller());
    /// ```
    pub fn heartbeat(&self) {
        self.shared.heartbeat(self.idx, self.run);
    }

    /// Whether this run has been asked to stop.
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{service, ServiceContext};
    /// #[service]
    /// async fn busy(ctx: ServiceContext) {
    ///     while !ctx.is_shutdown_requested() {
    ///         tokio::task::yield_now().await;
    ///     }
    /// }
    /// # drop(busy());
    /// ```
    pub fn is_shutdown_requested(&self) -> bool {
        // Runs only go up, and every run ends with a stop request: a context of an
        // old run always sees its shutdown requested. `SeqCst`: `ShutdownRequested`
        // checks this after `Slot::listen` (see `Shared::request_stop`).
        self.shared.slots[self.idx].stop_run.load(Ordering::SeqCst) >= self.run
    }

    /// Resolves once this run has been asked to stop.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it and calling again loses nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{service, ServiceContext};
    /// #[service]
    /// async fn idle(ctx: ServiceContext) {
    ///     ctx.shutdown_requested().await;
    ///     println!("flushing before exit");
    /// }
    /// # drop(idle());
    /// ```
    pub fn shutdown_requested(&self) -> ShutdownRequested<'_> {
        ShutdownRequested {
            ctx: self,
            notified: None,
        }
    }

    /// Runs `fut` until it completes (`Some(output)`) or shutdown is requested
    /// (`None`; `fut` is dropped). If both are ready, the output wins.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as `fut`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{service, ServiceContext};
    /// # async fn next_job() -> Option<u32> { None }
    /// #[service]
    /// async fn worker(ctx: ServiceContext) {
    ///     while let Some(Some(job)) = ctx.until_shutdown(next_job()).await {
    ///         println!("job {job}");
    ///     }
    /// }
    /// # drop(worker());
    /// ```
    pub async fn until_shutdown<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = fut => Some(out),
            () = self.shutdown_requested() => None,
        }
    }

    /// The runner's event bus (see [`bus`](crate::bus)): events other services publish,
    /// and every runner [`Event`](crate::Event) (state changes, readiness, failures)
    /// as a typed event, so a service can react to another's failure.
    ///
    /// The body and the tasks tied to it run inside the runner's scope, so
    /// [`bus::ctx::send`](crate::bus::ctx::send) and friends reach the same bus.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::StreamExt;
    /// use servicekit::{service, Event, ServiceContext};
    ///
    /// #[service]
    /// async fn watcher(ctx: ServiceContext) {
    ///     let mut events = ctx.bus().subscribe::<Event>();
    ///     ctx.ready();
    ///     while let Some(Some(ev)) = ctx.until_shutdown(events.next()).await {
    ///         match ev.as_deref() {
    ///             Ok(Event::Failed { service, error }) => eprintln!("{service} failed: {error}"),
    ///             Ok(_) => {}
    ///             Err(lag) => eprintln!("watcher: {lag}"), // fell behind: told, goes on
    ///         }
    ///     }
    /// }
    /// # drop(watcher());
    /// ```
    pub fn bus(&self) -> &EventBus {
        self.shared.bus()
    }

    /// The reloads of the runner from now on (SIGHUP, or
    /// [`RunnerHandle::reload`](crate::RunnerHandle::reload)): for a service that
    /// takes them itself ([`Reload::Hook`](crate::Reload::Hook)) instead of being
    /// restarted. Take it before calling [`ready`](Self::ready), so that no reload
    /// falls between. A service that does not take reloads is restarted instead: its
    /// `Reloads` yields nothing, and ends when the runner does.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{service, ServiceContext};
    ///
    /// #[service(reload = "hook")]
    /// async fn config_watcher(ctx: ServiceContext) {
    ///     let mut reloads = ctx.reloads();
    ///     ctx.ready();
    ///     while ctx.until_shutdown(reloads.next()).await.is_some() {
    ///         println!("reading the configuration again");
    ///     }
    /// }
    /// # drop(config_watcher());
    /// ```
    pub fn reloads(&self) -> Reloads {
        Reloads {
            signals: self.shared.bus().subscribe::<ReloadSignal>(),
            hook: self.shared.config(self.idx).reload == crate::Reload::Hook,
        }
    }

    /// The cancellation token of this run (a clone): cancelled when shutdown is
    /// requested. Hand it to servers with their own graceful shutdown, e.g.
    /// `axum::serve(..).with_graceful_shutdown(token.cancelled_owned())`.
    ///
    /// The token is created on the first call of a run (a run that never asks for it
    /// costs nothing); cancelling it yourself does not stop the service.
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{service, ServiceContext};
    /// #[service]
    /// async fn http(ctx: ServiceContext) {
    ///     let token = ctx.cancellation_token();
    ///     // axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await
    ///     token.cancelled().await;
    /// }
    /// # drop(http());
    /// ```
    pub fn cancellation_token(&self) -> CancellationToken {
        let slot = &self.shared.slots[self.idx];
        let mut inner = slot.inner.lock();
        // Before the check of `stop_run`: see `Shared::request_stop`.
        slot.listen(Listener::Token);
        if inner.run != self.run || slot.stop_run.load(Ordering::SeqCst) >= self.run {
            let token = CancellationToken::new();
            token.cancel();
            return token;
        }
        inner
            .token
            .get_or_insert_with(CancellationToken::new)
            .clone()
    }

    /// Spawns a task tied to this run.
    ///
    /// When the run ends (the service returns, fails, or is stopped), the context's
    /// shutdown is requested and its tasks have the rest of the service's
    /// `shutdown_timeout` to finish; those still running then are aborted, and the
    /// service is reported as hung ([`FailureKind::TasksHung`](crate::error::FailureKind::TasksHung),
    /// state [`Aborted`](crate::ServiceState::Aborted)), like a body that does not
    /// return. A task that returns `Err` or panics (in its `Drop` too) fails the run:
    /// shutdown is requested, and once the service returns the run counts as failed
    /// with the task's error (and is restarted per its policy).
    ///
    /// A task spawned through a context whose run has already ended is not started.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// # use servicekit::{service, ServiceContext};
    /// #[service]
    /// async fn listener(ctx: ServiceContext) {
    ///     for conn in 0..3 {
    ///         let c = ctx.clone();
    ///         ctx.spawn(async move {
    ///             c.shutdown_requested().await;
    ///             println!("connection {conn} closed");
    ///         });
    ///     }
    ///     ctx.shutdown_requested().await;
    /// }
    /// # drop(listener());
    /// ```
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future + Send + 'static,
        F::Output: IntoServiceResult,
    {
        let slot = &self.shared.slots[self.idx];
        let mut inner = slot.inner.lock();
        if inner.run != self.run || !inner.open {
            tracing::warn!(service = %slot.name, run = self.run, "task spawned after its run ended was not started");
            return;
        }
        let tied = inner.tied.get_or_insert_with(Default::default);
        // Tasks that have ended are let go as new ones come: a run that spawns many
        // short tasks (a server's connections) does not keep them all.
        while tied.set.try_join_next().is_some() {}
        tied.set.spawn(TiedTask {
            fut: Some(Box::pin(self.shared.frame.enter(fut))),
            shared: self.shared.clone(),
            idx: self.idx,
            run: self.run,
        });
    }
}

/// A task tied to a run (`ServiceContext::spawn`). Everything user code does in it
/// is guarded: its polls, the conversion of its output, and the `Drop` of its future,
/// whether it ended by itself or was aborted. A failure fails the run it is tied to.
struct TiedTask<F> {
    /// Boxed, so this wrapper is `Unpin` and can drop the future when it wants to.
    fut: Option<Pin<Box<F>>>,
    shared: Arc<Shared>,
    idx: usize,
    run: u64,
}

impl<F> TiedTask<F> {
    /// Records the task's failure for its run (the first one counts), and asks the
    /// run to stop.
    fn fail(&self, kind: ServiceErrorKind) {
        let (shared, idx, run) = (&*self.shared, self.idx, self.run);
        let slot = &shared.slots[idx];
        let mut inner = slot.inner.lock();
        if inner.run == run
            && let Some(tied) = inner.tied.as_mut()
            && tied.error.is_none()
        {
            tied.error = Some(kind);
        }
        drop(inner);
        shared.request_stop(idx, run);
        // The supervisor polls the body again when woken: it sees the stop.
        slot.wake.notify();
    }

    /// Drops the future; a panic in its `Drop` fails the run.
    fn drop_future(&mut self) {
        if let Some(panic) = self.fut.take().and_then(crate::guard::drop_caught) {
            self.fail(ServiceErrorKind::TaskPanicked(format!(
                "dropping it panicked: {panic}"
            )));
        }
    }
}

impl<F> Future for TiedTask<F>
where
    F: Future,
    F::Output: IntoServiceResult,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(fut) = this.fut.as_mut() else {
            return Poll::Ready(());
        };
        let polled = crate::guard::catch(|| match fut.as_mut().poll(cx) {
            Poll::Pending => None,
            Poll::Ready(out) => Some(out.into_service_result()),
        });
        let failure = match polled {
            Ok(None) => return Poll::Pending,
            Ok(Some(Ok(()))) => None,
            Ok(Some(Err(e))) => Some(ServiceErrorKind::Task(e)),
            Err(panic) => Some(ServiceErrorKind::TaskPanicked(panic)),
        };
        if let Some(kind) = failure {
            this.fail(kind);
        }
        this.drop_future();
        Poll::Ready(())
    }
}

impl<F> Drop for TiedTask<F> {
    fn drop(&mut self) {
        // Aborted before it ended (its run's wind-down timed out, or the runner
        // was forced).
        self.drop_future();
    }
}

/// The future returned by [`ServiceContext::shutdown_requested`]: resolves once the
/// context's run has been asked to stop.
///
/// # Cancel safety
///
/// Cancel safe: dropping it and calling again loses nothing.
///
/// # Examples
///
/// ```
/// # use servicekit::{service, ServiceContext};
/// #[service]
/// async fn idle(ctx: ServiceContext) {
///     let stop: servicekit::lifecycle::ShutdownRequested<'_> = ctx.shutdown_requested();
///     stop.await;
/// }
/// # drop(idle());
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct ShutdownRequested<'a> {
    ctx: &'a ServiceContext,
    /// The registration with the slot's stop `Notify`, made on the first poll from
    /// outside the service's own task that does not find the stop requested.
    notified: Option<Pin<Box<Notified<'a>>>>,
}

impl fmt::Debug for ShutdownRequested<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownRequested")
            .field("service", &self.ctx.name())
            .field("run", &self.ctx.run)
            .field("registered", &self.notified.is_some())
            .finish()
    }
}

impl Future for ShutdownRequested<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let ctx = this.ctx;
        let slot = &ctx.shared.slots[ctx.idx];
        loop {
            if ctx.is_shutdown_requested() {
                return Poll::Ready(());
            }
            let notified = match &mut this.notified {
                Some(notified) => notified,
                // Polled by the service's own task, with its waker: every stop request
                // is followed by a poll of the body from that task (the supervisor
                // asks, then polls), so this future is polled again and sees the
                // stop. No registration: an idle service waits at no cost.
                None if cx.waker().will_wake(&ctx.task) => return Poll::Pending,
                // Anywhere else (a tied task, a `FuturesUnordered` with wakers of its
                // own): a registration with the slot's `Notify`, made before the next
                // check, so a `notify_waiters` after it is not missed.
                None => {
                    slot.listen(Listener::Notify);
                    this.notified = Some(Box::pin(slot.stop.notified()));
                    continue;
                }
            };
            std::task::ready!(notified.as_mut().poll(cx));
            // Woken by a stop request of this run or an earlier one: check again with
            // a fresh registration.
            notified.set(slot.stop.notified());
        }
    }
}

/// The reloads of a runner, from [`ServiceContext::reloads`]: a `Stream` with one item
/// per reload, ending when the runner ends. Reloads that come faster than they are
/// read are merged into one item, never lost altogether.
#[must_use = "a `Reloads` tells nothing unless it is read"]
pub struct Reloads {
    signals: Subscription<ReloadSignal>,
    /// Whether the service takes reloads (otherwise it is restarted, and told nothing).
    hook: bool,
}

impl fmt::Debug for Reloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloads").finish_non_exhaustive()
    }
}

impl Reloads {
    /// Waits for the next reload; `None` once the runner has ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn f(ctx: servicekit::ServiceContext) {
    /// let mut reloads = ctx.reloads();
    /// while let Some(()) = reloads.next().await {
    ///     // reload
    /// }
    /// # }
    /// ```
    pub async fn next(&mut self) -> Option<()> {
        futures::StreamExt::next(self).await
    }
}

impl futures::Stream for Reloads {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        loop {
            // A lag means reloads were dropped: at least one happened.
            match self.signals.poll_recv(cx) {
                Poll::Ready(Ok(_) | Err(crate::bus::RecvError::Lagged(_))) if self.hook => {
                    return Poll::Ready(Some(()));
                }
                Poll::Ready(Ok(_) | Err(crate::bus::RecvError::Lagged(_))) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
