//! One supervisor task per service: waits for dependencies, runs the body, stops it
//! gracefully, and decides whether and when to run it again.
//!
//! The body is polled inside the supervisor task (no second spawn per run), under
//! `catch_unwind`, so a restart costs a factory call and a few atomics, and "the next
//! run starts only after the previous one has ended" holds by construction.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::context::ServiceContext;
use crate::error::BoxError;
use crate::error::{Chain, FailureKind, ServiceError, ServiceErrorKind, ServiceFailure};
use crate::runner::{
    ACTIVE, CMD_NONE, CMD_RESTART, CMD_STOP, ENDED, READY, STOPPING, ServiceState, Shared, Since,
    Slot, SlotInner, lock,
};
use crate::service::{IntoServiceResult, OnGiveUp, Restart, RunResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Shutdown,
    Stop,
    Restart,
    DependencyDown,
}

struct Outcome {
    /// `None` when the run was cancelled or aborted before it returned.
    result: Option<Result<(), ServiceError>>,
    reason: Option<Reason>,
    /// What the run's wind-down had to abort.
    ends: WoundDown,
    lasted: Duration,
    /// Whether the body was asked to stop before it returned: a failure after that is
    /// a failure to stop; before it, the body failed on its own.
    asked: bool,
}

/// What a run's wind-down had to abort.
#[derive(Default, Clone, Copy)]
struct WoundDown {
    /// The body did not return within its shutdown timeout.
    hung: bool,
    /// The body had not returned when a forced shutdown dropped it.
    aborted: bool,
    /// Tied tasks still running after the shutdown timeout.
    tasks_hung: usize,
}

/// A panic while a run's future was dropped, as the run's failure.
fn drop_panicked(message: &str) -> String {
    format!("dropping its future panicked: {message}")
}

/// Drops a body that did not return (how a run is cancelled, and how a service
/// without a context is stopped): a panic in its `Drop` becomes the run's result, a
/// failure to stop. A body that returned is already gone (`Body::poll`).
fn drop_unreturned(body: &mut dyn Body, result: &mut Option<RunResult>, asked: &mut bool) {
    if let Some(panic) = body.clear()
        && result.is_none()
    {
        *result = Some(Err(drop_panicked(&panic)));
        *asked = true;
    }
}

/// The restart delay before the `attempt`-th consecutive restart (0-based): uniform in
/// `[base, min(cap, base × 2^attempt)]`.
pub(crate) fn backoff_delay(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(Duration::MAX)
        .min(cap)
        .max(base);
    let span = (ceiling - base).as_nanos();
    if span == 0 {
        return base;
    }
    let jitter = fastrand::u128(0..=span);
    base + Duration::from_nanos(u64::try_from(jitter).unwrap_or(u64::MAX))
}

fn stop_reason(shared: &Shared, idx: usize) -> Option<Reason> {
    if shared.shutting_down.load(Ordering::Acquire) {
        return Some(Reason::Shutdown);
    }
    let slot = &shared.slots[idx];
    // A load first: commands are rare.
    let cmd = match slot.cmd.load(Ordering::Acquire) {
        CMD_NONE => CMD_NONE,
        _ => slot.cmd.swap(CMD_NONE, Ordering::AcqRel),
    };
    match cmd {
        CMD_STOP => return Some(Reason::Stop),
        CMD_RESTART => return Some(Reason::Restart),
        _ => {}
    }
    if slot.deps().iter().any(|&d| shared.phase(d) & READY == 0) {
        return Some(Reason::DependencyDown);
    }
    None
}

thread_local! {
    /// The run whose body its supervisor is polling on this thread: the slot's
    /// address, the run, and the data and vtable pointers of the waker it polls with.
    static DIRECT: Cell<(usize, u64, usize, usize)> = const { Cell::new((0, 0, 0, 0)) };
}

fn direct_key(slot: &Slot, run: u64, waker: &Waker) -> (usize, u64, usize, usize) {
    (
        std::ptr::from_ref(slot) as usize,
        run,
        waker.data() as usize,
        std::ptr::from_ref(waker.vtable()) as usize,
    )
}

/// Whether the current poll is the supervisor of `slot` polling run `run`'s body
/// with `waker`, its task's own. Such a poll may return `Pending` without
/// registering for the stop request: the supervisor polls the body again after
/// every `request_stop` (it makes them itself, or is woken for them).
pub(crate) fn polled_directly(slot: &Slot, run: u64, waker: &Waker) -> bool {
    DIRECT.get() == direct_key(slot, run, waker)
}

/// Polls a run's body, marked as polled directly by its supervisor (see
/// [`polled_directly`]).
fn poll_body(body: &mut dyn Body, slot: &Slot, run: u64, cx: &mut Context<'_>) -> Poll<RunResult> {
    struct Restore((usize, u64, usize, usize));
    impl Drop for Restore {
        fn drop(&mut self) {
            DIRECT.set(self.0);
        }
    }
    let _restore = Restore(DIRECT.replace(direct_key(slot, run, cx.waker())));
    body.poll(cx)
}

/// Polls `fut` once with the current task's waker.
fn poll_now<F: Future + Unpin>(fut: &mut F) -> impl Future<Output = Poll<F::Output>> + '_ {
    std::future::poll_fn(move |cx| Poll::Ready(Pin::new(&mut *fut).poll(cx)))
}

/// Wraps a body closure so each run is a periodic loop of the original body: ticks
/// at `start + k × period`; a run that overruns skips every tick it missed and waits
/// for the next one on the grid (no burst of catch-up runs, no immediate extra run).
/// The loop is boxed, once per run (a periodic run lasts as long as the service).
pub(crate) fn periodic<M, F>(
    make: M,
    period: Duration,
    has_context: bool,
) -> impl FnMut(ServiceContext) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
+ Send
+ 'static
where
    M: FnMut(ServiceContext) -> F + Send + 'static,
    F: Future + Send + 'static,
    F::Output: IntoServiceResult,
{
    let inner = Arc::new(Mutex::new(make));
    move |ctx: ServiceContext| -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> {
        let inner = inner.clone();
        Box::pin(async move {
            let start = Instant::now();
            let mut due = start;
            loop {
                let tick = tokio::time::sleep_until(due);
                if has_context {
                    if ctx.until_shutdown(tick).await.is_none() {
                        return Ok(());
                    }
                } else {
                    tick.await;
                }
                let run = (lock(&inner))(ctx.clone());
                run.await.into_service_result()?;
                let elapsed = start.elapsed().as_nanos();
                let k = elapsed / period.as_nanos() + 1;
                due = start
                    + Duration::from_nanos(
                        u64::try_from(k * period.as_nanos()).unwrap_or(u64::MAX),
                    );
            }
        })
    }
}

/// What comes after a run.
enum Next {
    /// Start again at once (restart command, or a dependency came back).
    Now,
    /// Start again after this delay.
    After(Duration),
    /// The service is over, in this state.
    End(ServiceState),
}

/// The restart bookkeeping of one service, kept between runs (boxed the first time
/// a run ends by itself: most services never need it).
#[derive(Default)]
struct Restarts {
    /// Exponent of the next backoff delay.
    attempt: u32,
    /// Times of the restarts within the current `within` window.
    window: VecDeque<Instant>,
    /// Restarts after failures so far.
    count: u32,
}

impl Restarts {
    /// Decides what follows a run (no waiting here, so nothing of this is kept alive
    /// in the supervisor task while a run is idle).
    ///
    /// The bookkeeping is boxed only when a run ends by itself: a service that is
    /// only ever stopped never allocates it.
    fn decide(
        restarts: &mut Option<Box<Restarts>>,
        shared: &Shared,
        idx: usize,
        outcome: Outcome,
        run: u64,
    ) -> Next {
        let slot = &shared.slots[idx];
        let cfg = shared.config(idx);
        let failure = match outcome.result {
            Some(Err(e)) => {
                let e = Arc::new(e);
                tracing::warn!(service = %slot.name, run, error = %Chain(&*e), "service failed");
                lock(&slot.inner).last_error = Some(e.clone());
                shared.emit(|| crate::Event::Failed {
                    service: slot.shared_name(),
                    error: e.clone(),
                });
                Some(e)
            }
            _ => None,
        };
        let timeout = shared.shutdown_timeout(idx);
        if outcome.ends.hung {
            tracing::error!(service = %slot.name, ?timeout, "service did not stop in time and was aborted");
            shared.record_failure(ServiceFailure {
                service: slot.shared_name(),
                kind: FailureKind::Hung { timeout },
            });
            return Next::End(ServiceState::Aborted);
        }
        if outcome.ends.tasks_hung > 0 {
            let tasks = outcome.ends.tasks_hung;
            tracing::error!(service = %slot.name, tasks, ?timeout, "tied tasks did not stop in time and were aborted");
            shared.record_failure(ServiceFailure {
                service: slot.shared_name(),
                kind: FailureKind::TasksHung { tasks, timeout },
            });
            return Next::End(ServiceState::Aborted);
        }
        if shared.forced.load(Ordering::Acquire) {
            return Next::End(if outcome.ends.aborted {
                ServiceState::Aborted
            } else {
                ServiceState::Stopped
            });
        }
        match outcome.reason {
            Some(Reason::Shutdown | Reason::Stop) => {
                // A body that failed on its own before it was asked to stop is
                // reported as failed (above), but did not fail to stop.
                let Some(error) = failure.filter(|_| outcome.asked) else {
                    return Next::End(ServiceState::Stopped);
                };
                shared.record_failure(ServiceFailure {
                    service: slot.shared_name(),
                    kind: FailureKind::StopFailed { error },
                });
                return Next::End(ServiceState::Failed);
            }
            Some(Reason::Restart | Reason::DependencyDown) => return Next::Now,
            None => {}
        }
        let this = restarts.get_or_insert_with(Box::default);
        let Some(error) = failure else {
            if cfg.restart != Restart::Always {
                return Next::End(ServiceState::Stopped);
            }
            // A clean end is not a failure: no count, and the delay starts over.
            this.attempt = 0;
            return Next::After(cfg.backoff_base);
        };
        let now = Instant::now();
        let unlimited = cfg.max_restarts == u32::MAX;
        let mut give_up = cfg.restart == Restart::Never;
        if !give_up && !unlimited {
            while this
                .window
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= cfg.within)
            {
                this.window.pop_front();
            }
            give_up = this.window.len() >= cfg.max_restarts as usize;
        }
        if give_up {
            tracing::error!(service = %slot.name, restarts = this.count, error = %Chain(&*error), "service gave up");
            shared.record_failure(ServiceFailure {
                service: slot.shared_name(),
                kind: FailureKind::GaveUp {
                    restarts: this.count,
                    error,
                },
            });
            if cfg.on_give_up == OnGiveUp::Shutdown {
                shared.begin_shutdown();
            }
            return Next::End(ServiceState::Failed);
        }
        if !unlimited {
            this.window.push_back(now);
        }
        if outcome.lasted >= cfg.reset_after {
            this.attempt = 0;
        }
        let delay = backoff_delay(cfg.backoff_base, cfg.backoff_cap, this.attempt);
        this.attempt = this.attempt.saturating_add(1);
        this.count += 1;
        lock(&slot.inner).restarts = this.count;
        Next::After(delay)
    }
}

/// Where a supervisor is. The body of a run is not here: it lives inline in the
/// service's task (see [`task`]), and the rare waits (a wind-down with its timeout,
/// a restart delay) are boxed futures awaited there, so this stays a few words.
enum Step {
    /// Waiting until the service may start a run (dependencies ready).
    Start,
    /// A run in progress: its body is polled in the supervisor's own task.
    Running,
    /// A restart with no delay: give the worker back once (`false` until then),
    /// then start again.
    Yield(bool),
    /// The service is over, in this state.
    End(ServiceState),
    Done,
}

/// What the fast path hands to [`task`] when it has to wait in a way that needs a
/// timer or several wake-up sources.
enum Slow {
    /// The run ends but cannot be closed at once (dependents, tied tasks, a body that
    /// did not return when asked): wind it down.
    WindDown {
        result: Option<RunResult>,
        reason: Option<Reason>,
        lasted: Duration,
        /// Whether the body was already asked to stop.
        asked: bool,
    },
    /// Sleep this restart delay (not zero), then start again.
    Pause(Duration),
    /// The service is over.
    Done,
}

/// A run's body as the supervisor sees it: made, polled and dropped in place.
/// Implemented by [`Inline`], the body stored in the task itself; the supervisor's
/// logic goes through this trait so it is compiled once, not once per service type.
pub(crate) trait Body: Send {
    /// Makes the body of a new run (the previous one is gone); `Err` with the panic's
    /// message if the closure that makes it panicked.
    fn start(&mut self, ctx: ServiceContext) -> Result<(), String>;
    /// Polls the current body; `Pending` if there is none. A body that returned or
    /// panicked is dropped at once; a panic in its `Drop` fails the run.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<RunResult>;
    /// Drops the current body (its destructors run); `Some` with the message if its
    /// `Drop` panicked.
    fn clear(&mut self) -> Option<String>;
}

/// The body of the current run, pinned inside the service's task, the closure that
/// makes one per run, and the run's tracing span (kept only when a subscriber wants
/// it, boxed so an unused span costs the task one word instead of five).
struct Inline<'a, M, F> {
    make: &'a mut M,
    body: Pin<&'a mut Option<F>>,
    span: Option<Box<tracing::Span>>,
}

impl<M, F> Body for Inline<'_, M, F>
where
    M: FnMut(ServiceContext) -> F + Send,
    F: Future + Send,
    F::Output: IntoServiceResult,
{
    fn start(&mut self, ctx: ServiceContext) -> Result<(), String> {
        let span = tracing::info_span!("service", name = %ctx.name(), run = ctx.run());
        let make = &mut self.make;
        let body = span.in_scope(|| crate::guard::catch(|| make(ctx)))?;
        self.body.set(Some(body));
        self.span = (!span.is_disabled()).then(|| Box::new(span));
        Ok(())
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<RunResult> {
        let Some(body) = self.body.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        let result = {
            let _entered = self.span.as_deref().map(tracing::Span::enter);
            // The conversion of the output is user code too (`Into` of its error).
            let polled = crate::guard::catch(|| match body.poll(cx) {
                Poll::Pending => None,
                Poll::Ready(output) => Some(output.into_service_result()),
            });
            match polled {
                Ok(None) => return Poll::Pending,
                Ok(Some(output)) => Ok(output),
                Err(panic) => Err(panic),
            }
        };
        // A body that returned or panicked is never polled again. A panic in its
        // `Drop` fails a run that had succeeded; a run that had already failed keeps
        // its first failure, and the panic is logged.
        let result = match (self.clear(), result) {
            (None, result) => result,
            (Some(panic), Ok(Ok(()))) => Err(drop_panicked(&panic)),
            (Some(panic), result) => {
                tracing::error!(panic = %panic, "dropping the future of a failed run panicked");
                result
            }
        };
        Poll::Ready(result)
    }

    fn clear(&mut self) -> Option<String> {
        let entered = self.span.as_deref().map(tracing::Span::enter);
        let body = &mut self.body;
        // An assignment whose drop panics still stores the new value: the body is
        // gone either way.
        let panic = crate::guard::catch(|| body.set(None)).err();
        drop(entered);
        self.span = None;
        panic
    }
}

/// Makes a service's task: [`task`] with the service's body type, so each run's
/// body is stored inline in the task's box instead of boxed on its own. `Service`
/// keeps its body closure behind this trait until its task first runs.
pub(crate) trait IntoTask: Send + 'static {
    /// The task of service `idx`, boxed.
    fn into_task(self: Box<Self>, shared: Arc<Shared>, idx: usize) -> TaskFuture;
}

/// A service's task once it has run: supervisor, body closure and current body.
pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service's tokio task, as spawned: three words, so it takes tokio's smallest
/// task cell (128 B) and the thread that starts the runner writes no more than that.
/// Its first poll, on a worker, takes the body closure from the slot and makes the
/// real task, boxed (the supervisor with the body inline: 144 B for an idle body),
/// and keeps it behind a thin pointer (one more 16 B box per service instead of a
/// 256 B cell); the index is 32 bits (a runner holds fewer than 2^32 services).
///
/// It is also the guard of the runner's own code: a panic that escapes the task (a
/// bug in the supervisor, or user code outside every narrower guard) ends the
/// service with an internal failure ([`Shared::internal_failure`]) instead of
/// killing the task silently and leaving `wait()` waiting for it forever.
pub(crate) struct Spawned {
    shared: Arc<Shared>,
    task: Option<Box<TaskFuture>>,
    idx: u32,
    done: bool,
}

impl Spawned {
    pub(crate) fn new(shared: Arc<Shared>, idx: usize) -> Spawned {
        Spawned {
            shared,
            task: None,
            idx: u32::try_from(idx).expect("fewer than 2^32 services"),
            done: false,
        }
    }
}

impl Future for Spawned {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(());
        }
        let idx = this.idx as usize;
        let polled = crate::guard::catch(|| {
            #[cfg(test)]
            if &*this.shared.slots[idx].name == tests::INJECT_INTERNAL_PANIC {
                panic!("injected into the supervisor");
            }
            let task = this.task.get_or_insert_with(|| {
                let factory = lock(&this.shared.slots[idx].inner)
                    .factory
                    .take()
                    .expect("a service's task is made once");
                Box::new(factory.into_task(this.shared.clone(), idx))
            });
            task.as_mut().as_mut().poll(cx)
        });
        let message = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(())) => {
                this.done = true;
                return Poll::Ready(());
            }
            Err(message) => message,
        };
        this.done = true;
        // The task, with the body it may hold, is dropped before the failure is
        // reported: "ended" means its future is gone.
        if let Some(panic) = this.task.take().and_then(crate::guard::drop_caught) {
            tracing::error!(service = %this.shared.slots[idx].name, %panic, "dropping the service's task panicked");
        }
        this.shared.internal_failure(idx, message);
        Poll::Ready(())
    }
}

/// The task of one service: its supervisor, the closure that makes each run's body,
/// and the body of the current run, all in one box inside the service's tokio task
/// (see [`Spawned`]). The supervisor's fast path (start a run, poll it, stop it when
/// it returns at once) is one poll of [`Supervisor::poll_fast`]; the slow waits are
/// boxed here when taken.
pub(crate) fn task<M, F>(
    shared: Arc<Shared>,
    idx: usize,
    mut make: M,
) -> impl Future<Output = ()> + Send
where
    M: FnMut(ServiceContext) -> F + Send,
    F: Future + Send,
    F::Output: IntoServiceResult,
{
    let mut sup = Supervisor {
        shared,
        idx,
        run: 0,
        restarts: None,
        step: Step::Start,
    };
    // Not an `async fn`: its arguments would be stored beside the locals made from
    // them. Here `sup` and `make` are the block's captures, used in place.
    async move {
        let body = std::pin::pin!(None::<F>);
        let mut body = Inline {
            make: &mut make,
            body,
            span: None,
        };
        loop {
            match std::future::poll_fn(|cx| sup.poll_fast(cx, &mut body)).await {
                Slow::Done => return,
                slow => Box::pin(sup.slow(&mut body, slow)).await,
            }
        }
    }
}

/// The supervisor of one service: waits for its dependencies, runs the body,
/// stops it gracefully, and decides whether and when to run it again. One per
/// service, inside its [`task`].
struct Supervisor {
    shared: Arc<Shared>,
    idx: usize,
    run: u64,
    /// Boxed the first time a run ends by itself: most services never need it.
    restarts: Option<Box<Restarts>>,
    step: Step,
}

impl Supervisor {
    /// Runs the supervisor until it has to wait on something only [`task`] waits
    /// for (or is over).
    fn poll_fast(&mut self, cx: &mut Context<'_>, body: &mut dyn Body) -> Poll<Slow> {
        loop {
            match &mut self.step {
                // A dependency that went down between the check and the claim is
                // waited for as if the check had failed.
                Step::Start => match may_start(&self.shared, self.idx)
                    .filter(|&go| !go || claim(&self.shared, self.idx, self.run + 1))
                {
                    Some(true) => {
                        self.run += 1;
                        self.step = Step::Running;
                        if let Err(panic) = body.start(begin_run(&self.shared, self.idx, self.run))
                        {
                            // The closure panicked before there was a body: a run that
                            // failed at once.
                            if let Some(slow) = self.end_run(body, Some(Err(panic)), None, cx) {
                                return Poll::Ready(slow);
                            }
                        }
                    }
                    Some(false) => self.step = Step::End(ServiceState::Stopped),
                    None => {
                        self.shared.set_state(self.idx, ServiceState::Starting);
                        if self.shared.slots[self.idx]
                            .wake()
                            .poll_take(cx)
                            .is_pending()
                        {
                            return Poll::Pending;
                        }
                    }
                },
                Step::Running => {
                    // The hot, idle part: the body, and the supervisor's wake-up signal.
                    let (shared, idx) = (&*self.shared, self.idx);
                    let slot = &shared.slots[idx];
                    // Woken to stop (an idle service's usual wake-up): the body is asked
                    // first and then polled once, instead of being polled before too.
                    let early = if slot.wake().take_now() {
                        stop_reason(shared, idx)
                    } else {
                        None
                    };
                    let (result, reason) = if early.is_some() {
                        (None, early)
                    } else {
                        match poll_body(body, slot, self.run, cx) {
                            Poll::Ready(r) => (Some(r), None),
                            Poll::Pending => loop {
                                if slot.wake().poll_take(cx).is_pending() {
                                    return Poll::Pending;
                                }
                                if let Some(reason) = stop_reason(shared, idx) {
                                    break (None, Some(reason));
                                }
                            },
                        }
                    };
                    if let Some(slow) = self.end_run(body, result, reason, cx) {
                        return Poll::Ready(slow);
                    }
                }
                Step::Yield(yielded) => {
                    if !std::mem::replace(yielded, true) {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    let slot = &self.shared.slots[self.idx];
                    self.step = if self.shared.shutting_down.load(Ordering::Acquire)
                        || slot.cmd.load(Ordering::Acquire) == CMD_STOP
                    {
                        Step::End(ServiceState::Stopped)
                    } else {
                        Step::Start
                    };
                }
                Step::End(end) => {
                    let end = *end;
                    self.step = Step::Done;
                    let (shared, idx) = (&*self.shared, self.idx);
                    shared.set_phase(idx, self.run, ENDED);
                    shared.set_state(idx, end);
                    tracing::info!(service = %shared.slots[idx].name, state = %end, "service ended");
                    shared.supervisor_ended(idx);
                    return Poll::Ready(Slow::Done);
                }
                Step::Done => return Poll::Ready(Slow::Done),
            }
        }
    }

    /// Waits what the fast path could not: a run's wind-down, then its restart
    /// delay, if any. Boxed by [`task`] when taken (most services never get here).
    async fn slow(&mut self, body: &mut (dyn Body + Send), slow: Slow) {
        let delay = match slow {
            Slow::Done => return,
            Slow::Pause(delay) => delay,
            Slow::WindDown {
                result,
                reason,
                lasted,
                asked,
            } => {
                let (shared, idx, run) = (&*self.shared, self.idx, self.run);
                let (result, ends, asked) = wind_down(shared, idx, run, body, result, asked).await;
                let mut outcome = finish_run(shared, idx, run, result, reason, ends, lasted);
                outcome.asked = asked;
                match self.after_run(outcome) {
                    Some(delay) => delay,
                    None => return,
                }
            }
        };
        self.step = if pause(&self.shared, self.idx, delay).await {
            Step::Start
        } else {
            Step::End(ServiceState::Stopped)
        };
    }

    /// Ends the current run after its body returned (`result`) or was asked to stop
    /// (`reason`): the common stop (ask once, poll once) is done here; anything that
    /// has to wait (dependents, tied tasks, the shutdown timeout) is handed to
    /// [`task`] as a wind-down. Returns what `task` has to wait for, if anything.
    fn end_run(
        &mut self,
        body: &mut dyn Body,
        mut result: Option<RunResult>,
        reason: Option<Reason>,
        cx: &mut Context<'_>,
    ) -> Option<Slow> {
        let (shared, idx, run) = (&*self.shared, self.idx, self.run);
        let slot = &shared.slots[idx];
        let forced = || shared.forced.load(Ordering::Acquire);
        // The common stop: ask, poll once. Most bodies then return at once, and if
        // one returns cleanly with nothing left to wait for, the service ends here.
        let can_ask = slot.has_context && slot.dependents().is_empty() && !forced();
        let mut asked =
            result.is_none() && matches!(reason, Some(Reason::Shutdown | Reason::Stop)) && can_ask;
        if asked {
            shared.request_stop(idx, run);
            if let Poll::Ready(r) = poll_body(body, slot, run, cx) {
                if matches!(r, Ok(Ok(()))) && end_stopped(shared, idx, run) {
                    self.step = Step::Done;
                    return Some(Slow::Done);
                }
                result = Some(r);
            }
        }
        shared.set_phase(idx, run, ACTIVE | STOPPING);
        if !slot.dependents().is_empty() {
            // Pairs with `claim`: the look for active dependents (`wind_down`) comes
            // after this fence, so a dependent claiming a run now is seen, or sees
            // this service not ready.
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        // Only a run that ended by itself needs its length (for `reset_after`); a stop
        // does not pay for the clock read. One lock for this and the state change.
        let (mut lasted, mut has_tied) = (Duration::ZERO, false);
        let mut look = |inner: &mut SlotInner| {
            if reason.is_none() {
                lasted = inner
                    .since
                    .get(shared.started)
                    .map_or(Duration::ZERO, |s| s.elapsed());
            }
            has_tied = inner.tied.is_some();
        };
        if reason.is_some() {
            shared.set_state_with(idx, ServiceState::Stopping, look);
        } else {
            look(&mut lock(&slot.inner));
        }
        let simple = slot.dependents().is_empty() && !has_tied;
        if simple && !asked && result.is_none() && can_ask {
            asked = true;
            shared.request_stop(idx, run);
            if let Poll::Ready(r) = poll_body(body, slot, run, cx) {
                result = Some(r);
            }
        }
        if !simple || (result.is_none() && slot.has_context) {
            self.step = Step::Done;
            return Some(Slow::WindDown {
                result,
                reason,
                lasted,
                asked,
            });
        }
        drop_unreturned(body, &mut result, &mut asked);
        let mut outcome = finish_run(
            shared,
            idx,
            run,
            result,
            reason,
            WoundDown::default(),
            lasted,
        );
        outcome.asked = asked;
        self.after_run(outcome).map(Slow::Pause)
    }

    /// Decides what follows a run and sets the next step; returns the restart delay
    /// to sleep first, if there is one.
    fn after_run(&mut self, outcome: Outcome) -> Option<Duration> {
        let (shared, idx) = (&*self.shared, self.idx);
        let mut pause = None;
        self.step = match Restarts::decide(&mut self.restarts, shared, idx, outcome, self.run) {
            Next::Now => Step::Start,
            Next::After(delay) => {
                shared.set_state(idx, ServiceState::Restarting);
                tracing::info!(service = %shared.slots[idx].name, ?delay, "restarting");
                if delay.is_zero() {
                    Step::Yield(false)
                } else {
                    pause = Some(delay);
                    Step::Done
                }
            }
            Next::End(state) => Step::End(state),
        };
        pause
    }
}

/// Ends the service after its body returned cleanly from a stop request
/// (shutdown or `stop`), under one lock: what `finish_run`, `Restarts::decide`
/// and `Step::End` do for this case, with the same state changes reported.
/// `false`, with nothing changed, if the run has tied tasks (they get a
/// wind-down).
fn end_stopped(shared: &Shared, idx: usize, run: u64) -> bool {
    let slot = &shared.slots[idx];
    {
        let mut inner = lock(&slot.inner);
        if inner.tied.is_some() {
            return false;
        }
        inner.open = false;
        inner.state = ServiceState::Stopped;
        inner.since = Since::NONE;
    }
    shared.set_phase(idx, run, ENDED);
    shared.announce(idx, ServiceState::Stopping);
    shared.announce(idx, ServiceState::Stopped);
    tracing::info!(service = %slot.name, state = %ServiceState::Stopped, "service ended");
    shared.supervisor_ended(idx);
    true
}

/// Whether the service may start a run now: `Some(false)` if it must end instead,
/// `None` if it has to wait for a dependency.
fn may_start(shared: &Shared, idx: usize) -> Option<bool> {
    let slot = &shared.slots[idx];
    if shared.shutting_down.load(Ordering::Acquire) {
        return Some(false);
    }
    if slot.cmd.load(Ordering::Acquire) != CMD_NONE
        && slot.cmd.swap(CMD_NONE, Ordering::AcqRel) == CMD_STOP
    {
        return Some(false);
    }
    let mut all_ready = true;
    for &d in slot.deps() {
        let phase = shared.phase(d);
        if phase & ENDED != 0 {
            tracing::info!(service = %slot.name, dependency = %shared.slots[d].name, "dependency ended");
            return Some(false);
        }
        all_ready &= phase & READY != 0;
    }
    all_ready.then_some(true)
}

/// Claims run `run` of `idx` before it starts, if it has dependencies: publishes
/// the run as active, then (after a `SeqCst` fence) checks again that every
/// dependency is ready. A dependency that stops at the same time clears its `READY`,
/// fences, then looks for active dependents (`end_run`, `wind_down`), so either it
/// sees this run and waits for it to stop, or this sees it not ready: `false`, the
/// phase is put back, and the run does not start. Without the claim a dependent
/// could pass its check, and the dependency its look, before either published.
fn claim(shared: &Shared, idx: usize, run: u64) -> bool {
    let slot = &shared.slots[idx];
    if slot.deps().is_empty() {
        return true;
    }
    shared.set_phase(idx, run, ACTIVE);
    std::sync::atomic::fence(Ordering::SeqCst);
    if slot.deps().iter().all(|&d| shared.phase(d) & READY != 0) {
        return true;
    }
    // As after the previous run (`finish_run`): nothing active. The dependencies are
    // woken, in case one saw the claim and waits for it.
    shared.set_phase(idx, run - 1, 0);
    false
}

/// Sleeps the restart delay (not zero: see `Step::Yield`); `false` if the service
/// must end instead. A restart command cuts the delay short.
async fn pause(shared: &Shared, idx: usize, delay: Duration) -> bool {
    let slot = &shared.slots[idx];
    let must_end = || {
        shared.shutting_down.load(Ordering::Acquire) || slot.cmd.load(Ordering::Acquire) == CMD_STOP
    };
    sleep_or_command(slot, delay, must_end).await
}

async fn sleep_or_command(
    slot: &crate::runner::Slot,
    delay: Duration,
    must_end: impl Fn() -> bool,
) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            () = slot.wake().notified() => {
                if must_end() {
                    return false;
                }
                if slot.cmd.swap(CMD_NONE, Ordering::AcqRel) == CMD_RESTART {
                    return true;
                }
            }
            () = &mut sleep => return true,
        }
    }
}

/// Starts run `run`: records it, and returns the context its body is made with.
fn begin_run(shared: &Arc<Shared>, idx: usize, run: u64) -> ServiceContext {
    let slot = &shared.slots[idx];
    shared.set_phase(
        idx,
        run,
        if slot.has_context {
            ACTIVE
        } else {
            ACTIVE | READY
        },
    );
    let since = if run == 1 && slot.deps().is_empty() {
        Since::START
    } else {
        Since::at(shared.started, Instant::now())
    };
    shared.set_state_with(idx, ServiceState::Running, |inner| {
        inner.run = run;
        inner.open = true;
        inner.tied = None;
        inner.token = None;
        inner.since = since;
    });
    ServiceContext {
        shared: shared.clone(),
        idx,
        run,
    }
}

/// Closes run `run` once its body is gone: tied tasks are told to stop and the
/// result is turned into the run's outcome.
fn finish_run(
    shared: &Shared,
    idx: usize,
    run: u64,
    result: Option<RunResult>,
    reason: Option<Reason>,
    ends: WoundDown,
    lasted: Duration,
) -> Outcome {
    let slot = &shared.slots[idx];
    shared.request_stop(idx, run);
    let task_error = {
        let mut inner = lock(&slot.inner);
        inner.open = false;
        inner.tied.take().and_then(|t| t.error)
    };
    let error = |kind| ServiceError {
        service: slot.shared_name(),
        run,
        kind,
    };
    let result = result.map(|r| match r {
        Ok(Ok(())) => match task_error {
            Some(kind) => Err(error(kind)),
            None => Ok(()),
        },
        Ok(Err(e)) => Err(error(ServiceErrorKind::Returned(e))),
        Err(panic) => Err(error(ServiceErrorKind::Panicked(panic))),
    });
    shared.set_phase(idx, run, 0);
    Outcome {
        result,
        reason,
        ends,
        lasted,
        asked: false,
    }
}

/// Ends a run: dependents stop first (the body keeps running for them meanwhile), then
/// the body is asked to stop and given its timeout (or dropped at once if it has no
/// context), then tied tasks get what is left of the timeout and are aborted after
/// it. Returns the body's result, if it returned (or panicked as it was dropped),
/// what had to be aborted, and whether it had been asked to stop (`asked`: it
/// already was) when it returned.
async fn wind_down(
    shared: &Shared,
    idx: usize,
    run: u64,
    body: &mut (dyn Body + Send),
    mut result: Option<RunResult>,
    mut asked: bool,
) -> (Option<RunResult>, WoundDown, bool) {
    let slot = &shared.slots[idx];
    let mut ends = WoundDown::default();
    let mut fut = std::future::poll_fn(|cx| body.poll(cx));
    let forced = || shared.forced.load(Ordering::Acquire);
    while !forced()
        && slot
            .dependents()
            .iter()
            .any(|&d| shared.phase(d) & ACTIVE != 0)
    {
        tokio::select! {
            biased;
            r = &mut fut, if result.is_none() => result = Some(r),
            () = slot.wake().notified() => {}
        }
    }

    let deadline = Instant::now() + shared.shutdown_timeout(idx);
    if result.is_none() && slot.has_context && !forced() {
        asked = true;
        shared.request_stop(idx, run);
        if let Poll::Ready(r) = poll_now(&mut fut).await {
            result = Some(r);
        } else {
            let sleep = tokio::time::sleep_until(deadline);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    biased;
                    r = &mut fut => {
                        result = Some(r);
                        break;
                    }
                    () = &mut sleep => {
                        ends.hung = true;
                        break;
                    }
                    () = slot.wake().notified() => if forced() { break },
                }
            }
        }
    }
    if result.is_none() && slot.has_context && !ends.hung && forced() {
        ends.aborted = true;
        lock(&shared.aborted).push(slot.shared_name());
    }
    drop(fut);
    drop_unreturned(body, &mut result, &mut asked);

    // Tied tasks see shutdown and get what is left of the timeout; those still
    // running then are aborted and reported. The error slot stays in place so
    // failures during this wait (a panic in a task's `Drop` included) are recorded.
    shared.request_stop(idx, run);
    let set = {
        let mut inner = lock(&slot.inner);
        inner.open = false;
        inner.tied.as_mut().map(|t| std::mem::take(&mut t.set))
    };
    if let Some(mut set) = set {
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        while !set.is_empty() && !forced() {
            tokio::select! {
                biased;
                _ = set.join_next() => {}
                () = &mut sleep => {
                    ends.tasks_hung = set.len();
                    set.abort_all();
                    // A short wait for the aborted tasks to be dropped (on their
                    // threads), so what their `Drop` does belongs to this run; a
                    // task blocking its thread is not waited for longer.
                    let grace = tokio::time::sleep(ABORT_GRACE);
                    tokio::pin!(grace);
                    while !set.is_empty() {
                        tokio::select! {
                            biased;
                            _ = set.join_next() => {}
                            () = &mut grace => break,
                        }
                    }
                    break;
                }
                () = slot.wake().notified() => {}
            }
        }
    }
    (result, ends, asked)
}

/// How long a wind-down waits for aborted tied tasks to be dropped.
const ABORT_GRACE: Duration = Duration::from_millis(100);

#[cfg(test)]
pub(crate) mod tests {
    use super::backoff_delay;
    use std::time::Duration;

    /// A service with this name makes its runner task panic outside every guard
    /// around user code (unit tests only): see `an_internal_panic_is_reported`.
    pub(crate) const INJECT_INTERNAL_PANIC: &str = "__inject_internal_panic";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_internal_panic_is_reported_and_the_runner_still_returns() {
        use crate::error::FailureKind;
        use crate::{Runner, Service, ServiceState};
        let handle = Runner::new()
            .signals(false)
            .service(Service::new(INJECT_INTERNAL_PANIC, |ctx| async move {
                ctx.shutdown_requested().await
            }))
            .service(
                Service::new(
                    "dependent",
                    |ctx| async move { ctx.shutdown_requested().await },
                )
                .after([INJECT_INTERNAL_PANIC]),
            )
            .service(Service::new("other", |ctx| async move {
                ctx.ready();
                ctx.shutdown_requested().await
            }))
            .start()
            .await
            .unwrap();
        let mut events = handle.events();
        // No shutdown asked for: the internal failure shuts the runner down.
        let err = tokio::time::timeout(Duration::from_secs(5), handle.wait())
            .await
            .expect("the runner returned")
            .unwrap_err();
        let mut last = std::collections::HashMap::new();
        while let Some(ev) = futures::StreamExt::next(&mut events).await {
            if let crate::Event::State { service, state } = ev {
                last.insert(service.to_string(), state);
            }
        }
        assert_eq!(last[INJECT_INTERNAL_PANIC], ServiceState::Failed);
        assert_eq!(last["other"], ServiceState::Stopped);
        // It never started (its dependency never became ready), and ended.
        assert_eq!(last["dependent"], ServiceState::Stopped);
        assert_eq!(err.failures().len(), 1, "{err}");
        let f = &err.failures()[0];
        assert_eq!(f.service(), INJECT_INTERNAL_PANIC);
        assert!(
            matches!(f.kind(), FailureKind::Internal { message } if message == "injected into the supervisor"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("the runner's task for it panicked"),
            "{err}"
        );
    }

    #[test]
    fn backoff_bounds_grow_then_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        for attempt in 0..40 {
            let ceiling = (base * 2u32.saturating_pow(attempt.min(20))).min(cap);
            for _ in 0..200 {
                let d = backoff_delay(base, cap, attempt);
                assert!(d >= base && d <= ceiling, "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(backoff_delay(base, cap, 0), base);
        assert_eq!(
            backoff_delay(Duration::ZERO, Duration::ZERO, 9),
            Duration::ZERO
        );
    }
}
#[cfg(test)]
mod size_budget {
    //! The per-service cost (see BENCHMARKS.md) depends on these sizes: the task as
    //! spawned (tokio's smallest cell), the slot, and the boxed task a first poll
    //! makes (supervisor, body closure and the current run's body inline).

    #[test]
    fn task_and_slot_stay_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let shared = crate::runner::dummy_shared();
        // At most three words: tokio's 128 B task cell.
        let spawned = std::mem::size_of::<super::Spawned>();
        assert!(spawned <= 24, "{spawned}");
        let supervisor = std::mem::size_of::<super::Supervisor>();
        assert!(supervisor <= 40, "{supervisor}");
        let slot = std::mem::size_of::<crate::runner::Slot>();
        assert!(slot <= 168, "{slot}");

        // The bench's idle service: its whole boxed task, body inline, in at most
        // 152 B, so the box is a 160 B chunk (a 72 B supervisor in a 256 B cell plus
        // a 176 B boxed body before). `shutdown_requested()` is two words.
        let task = super::task(shared, 0, |ctx: crate::ServiceContext| async move {
            ctx.shutdown_requested().await;
        });
        let task = std::mem::size_of_val(&task);
        assert!(task <= 152, "{task}");
    }
}
