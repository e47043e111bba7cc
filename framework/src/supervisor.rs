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
use crate::error::{Chain, FailureKind, ServiceError, ServiceErrorKind, ServiceFailure};
use crate::runner::{
    ACTIVE, CMD_NONE, CMD_RESTART, CMD_STOP, ENDED, READY, ServiceState, Shared, Slot, SlotInner,
    lock,
};
use crate::service::{Factory, OnGiveUp, Restart, RunFuture, RunResult};

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
    hung: bool,
    lasted: Duration,
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
    match slot.cmd.swap(CMD_NONE, Ordering::AcqRel) {
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
fn poll_body(body: &mut RunFuture, slot: &Slot, run: u64, cx: &mut Context<'_>) -> Poll<RunResult> {
    struct Restore((usize, u64, usize, usize));
    impl Drop for Restore {
        fn drop(&mut self) {
            DIRECT.set(self.0);
        }
    }
    let _restore = Restore(DIRECT.replace(direct_key(slot, run, cx.waker())));
    body.as_mut().poll(cx)
}

/// Polls `fut` once with the current task's waker.
fn poll_now<F: Future + Unpin>(fut: &mut F) -> impl Future<Output = Poll<F::Output>> + '_ {
    std::future::poll_fn(move |cx| Poll::Ready(Pin::new(&mut *fut).poll(cx)))
}

/// Wraps a factory so each run is a periodic loop of the original body: ticks at
/// `start + k × period`; a run that overruns skips every tick it missed and waits for
/// the next one on the grid (no burst of catch-up runs, no immediate extra run).
fn periodic(factory: Factory, period: Duration, has_context: bool) -> Factory {
    let inner = Arc::new(Mutex::new(factory));
    Box::new(move |ctx: ServiceContext| {
        let inner = inner.clone();
        Box::pin(async move {
            let start = Instant::now();
            let mut due = start;
            loop {
                let tick = tokio::time::sleep_until(due);
                if has_context {
                    if ctx.until_shutdown(tick).await.is_none() {
                        return Ok(Ok(()));
                    }
                } else {
                    tick.await;
                }
                let run = (lock(&inner))(ctx.clone());
                if let err @ (Ok(Err(_)) | Err(_)) = run.await {
                    return err;
                }
                let elapsed = start.elapsed().as_nanos();
                let k = elapsed / period.as_nanos() + 1;
                due = start
                    + Duration::from_nanos(
                        u64::try_from(k * period.as_nanos()).unwrap_or(u64::MAX),
                    );
            }
        })
    })
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
        let cfg = &slot.config;
        let failure = match outcome.result {
            Some(Err(e)) => {
                let e = Arc::new(e);
                tracing::warn!(service = %slot.name, run, error = %Chain(&*e), "service failed");
                lock(&slot.inner).status.last_error = Some(e.clone());
                shared.emit(|| crate::Event::Failed {
                    service: slot.shared_name(),
                    error: e.clone(),
                });
                Some(e)
            }
            _ => None,
        };
        if outcome.hung {
            tracing::error!(service = %slot.name, timeout = ?slot.shutdown_timeout(), "service did not stop in time and was aborted");
            shared.record_failure(ServiceFailure {
                service: slot.shared_name(),
                kind: FailureKind::Hung {
                    timeout: slot.shutdown_timeout(),
                },
            });
            return Next::End(ServiceState::Failed);
        }
        if shared.forced.load(Ordering::Acquire) {
            return Next::End(ServiceState::Stopped);
        }
        match outcome.reason {
            Some(Reason::Shutdown | Reason::Stop) => {
                let Some(error) = failure else {
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
        lock(&slot.inner).status.restarts = this.count;
        Next::After(delay)
    }
}

/// Where a supervisor is. Each state holds at most one boxed future (the running
/// body is one), so the whole supervisor is a few words and fits tokio's smallest
/// task cell (an `async fn` kept the body, its result and the idle wait's captures
/// side by side: 264 B, against 72 B here).
enum Step {
    /// Waiting until the service may start a run (dependencies ready).
    Start,
    /// A run in progress: the body, polled in the supervisor's own task.
    Running(RunFuture),
    /// The rarer waits, boxed when taken: a run's wind-down with its timeout, the
    /// restart delay.
    Slow(Pin<Box<dyn Future<Output = Flow> + Send>>),
    /// A restart with no delay: give the worker back once (`false` until then),
    /// then start again.
    Yield(bool),
    /// The service is over, in this state.
    End(ServiceState),
    Done,
}

/// What a boxed slow step ends with.
enum Flow {
    /// A run's wind-down is over.
    Ended {
        result: Option<RunResult>,
        reason: Option<Reason>,
        hung: bool,
        lasted: Duration,
    },
    /// The restart delay is over: `true` to start again, `false` to end.
    Paused(bool),
}

/// The supervisor of one service: waits for its dependencies, runs the body,
/// stops it gracefully, and decides whether and when to run it again. One tokio
/// task per service.
pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    idx: usize,
    run: u64,
    factory: Factory,
    /// Boxed the first time a run ends by itself: most services never need it.
    restarts: Option<Box<Restarts>>,
    step: Step,
}

pub(crate) fn supervise(shared: Arc<Shared>, idx: usize, factory: Factory) -> Supervisor {
    let slot = &shared.slots[idx];
    let factory = match slot.config.every {
        Some(period) => periodic(factory, period, slot.has_context),
        None => factory,
    };
    Supervisor {
        shared,
        idx,
        run: 0,
        factory,
        restarts: None,
        step: Step::Start,
    }
}

impl Future for Supervisor {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            match &mut this.step {
                Step::Start => match may_start(&this.shared, this.idx) {
                    Some(true) => {
                        this.run += 1;
                        let body = begin_run(&this.shared, this.idx, &mut this.factory, this.run);
                        this.step = Step::Running(body);
                    }
                    Some(false) => this.step = Step::End(ServiceState::Stopped),
                    None => {
                        this.shared.set_state(this.idx, ServiceState::Starting);
                        if this.shared.slots[this.idx].wake.poll_take(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                },
                Step::Running(body) => {
                    // The hot, idle part: the body, and the supervisor's wake-up signal.
                    let (shared, idx) = (&*this.shared, this.idx);
                    let (result, reason) = match poll_body(body, &shared.slots[idx], this.run, cx) {
                        Poll::Ready(r) => (Some(r), None),
                        Poll::Pending => loop {
                            if shared.slots[idx].wake.poll_take(cx).is_pending() {
                                return Poll::Pending;
                            }
                            if let Some(reason) = stop_reason(shared, idx) {
                                break (None, Some(reason));
                            }
                        },
                    };
                    let Step::Running(body) = std::mem::replace(&mut this.step, Step::Done) else {
                        unreachable!("matched above")
                    };
                    this.end_run(body, result, reason, cx);
                }
                Step::Slow(fut) => match std::task::ready!(fut.as_mut().poll(cx)) {
                    Flow::Ended {
                        result,
                        reason,
                        hung,
                        lasted,
                    } => {
                        let outcome = finish_run(
                            &this.shared,
                            this.idx,
                            this.run,
                            result,
                            reason,
                            hung,
                            lasted,
                        );
                        this.after_run(outcome);
                    }
                    Flow::Paused(true) => this.step = Step::Start,
                    Flow::Paused(false) => this.step = Step::End(ServiceState::Stopped),
                },
                Step::Yield(yielded) => {
                    if !std::mem::replace(yielded, true) {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    let slot = &this.shared.slots[this.idx];
                    this.step = if this.shared.shutting_down.load(Ordering::Acquire)
                        || slot.cmd.load(Ordering::Acquire) == CMD_STOP
                    {
                        Step::End(ServiceState::Stopped)
                    } else {
                        Step::Start
                    };
                }
                Step::End(end) => {
                    let end = *end;
                    this.step = Step::Done;
                    let (shared, idx) = (&*this.shared, this.idx);
                    shared.set_phase(idx, this.run, ENDED);
                    shared.set_state(idx, end);
                    tracing::info!(service = %shared.slots[idx].name, state = %end, "service ended");
                    shared.supervisor_ended();
                    return Poll::Ready(());
                }
                Step::Done => return Poll::Ready(()),
            }
        }
    }
}

impl Supervisor {
    /// Ends the current run after its body returned (`result`) or was asked to stop
    /// (`reason`): the common stop (ask once, poll once) is done here; anything that
    /// has to wait (dependents, tied tasks, the shutdown timeout) becomes a boxed
    /// slow step.
    fn end_run(
        &mut self,
        mut body: RunFuture,
        mut result: Option<RunResult>,
        reason: Option<Reason>,
        cx: &mut Context<'_>,
    ) {
        let (shared, idx, run) = (&*self.shared, self.idx, self.run);
        let slot = &shared.slots[idx];
        shared.set_phase(idx, run, ACTIVE);
        // Only a run that ended by itself needs its length (for `reset_after`); a stop
        // does not pay for the clock read. One lock for this and the state change.
        let (mut lasted, mut has_tied) = (Duration::ZERO, false);
        let mut look = |inner: &mut SlotInner| {
            if reason.is_none() {
                lasted = inner.status.since.map_or(Duration::ZERO, |s| s.elapsed());
            }
            has_tied = inner.tasks.tied.is_some();
        };
        if reason.is_some() {
            shared.set_state_with(idx, ServiceState::Stopping, look);
        } else {
            look(&mut lock(&slot.inner));
        }
        let simple = slot.dependents().is_empty() && !has_tied;
        if simple && result.is_none() && slot.has_context && !shared.forced.load(Ordering::Acquire)
        {
            // The common stop: ask, poll once; most bodies return right away, so neither
            // a timer nor the boxed slow path below is needed.
            shared.request_stop(idx, run);
            if let Poll::Ready(r) = poll_body(&mut body, slot, run, cx) {
                result = Some(r);
            }
        }
        if !simple || (result.is_none() && slot.has_context) {
            let shared = self.shared.clone();
            self.step = Step::Slow(Box::pin(async move {
                let (result, hung) = wind_down(&shared, idx, run, body, result).await;
                Flow::Ended {
                    result,
                    reason,
                    hung,
                    lasted,
                }
            }));
            return;
        }
        drop(body);
        let outcome = finish_run(shared, idx, run, result, reason, false, lasted);
        self.after_run(outcome);
    }

    /// Decides what follows a run and sets the next step.
    fn after_run(&mut self, outcome: Outcome) {
        let (shared, idx) = (&*self.shared, self.idx);
        self.step = match Restarts::decide(&mut self.restarts, shared, idx, outcome, self.run) {
            Next::Now => Step::Start,
            Next::After(delay) => {
                shared.set_state(idx, ServiceState::Restarting);
                tracing::info!(service = %shared.slots[idx].name, ?delay, "restarting");
                if delay.is_zero() {
                    Step::Yield(false)
                } else {
                    let shared = self.shared.clone();
                    Step::Slow(Box::pin(async move {
                        Flow::Paused(pause(&shared, idx, delay).await)
                    }))
                }
            }
            Next::End(state) => Step::End(state),
        };
    }
}

/// Whether the service may start a run now: `Some(false)` if it must end instead,
/// `None` if it has to wait for a dependency.
fn may_start(shared: &Shared, idx: usize) -> Option<bool> {
    let slot = &shared.slots[idx];
    if shared.shutting_down.load(Ordering::Acquire) {
        return Some(false);
    }
    if slot.cmd.swap(CMD_NONE, Ordering::AcqRel) == CMD_STOP {
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
            () = slot.wake.notified() => {
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

/// Starts run `run`: records it, then makes the body.
fn begin_run(shared: &Arc<Shared>, idx: usize, factory: &mut Factory, run: u64) -> RunFuture {
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
    let now = Instant::now();
    shared.set_state_with(idx, ServiceState::Running, |inner| {
        let tasks = &mut inner.tasks;
        tasks.run = run;
        tasks.open = true;
        tasks.tied = None;
        tasks.token = None;
        inner.status.runs = run;
        inner.status.since = Some(now);
    });
    factory(ServiceContext {
        shared: shared.clone(),
        idx,
        run,
    })
}

/// Closes run `run` once its body is gone: tied tasks are told to stop and the
/// result is turned into the run's outcome.
fn finish_run(
    shared: &Shared,
    idx: usize,
    run: u64,
    result: Option<RunResult>,
    reason: Option<Reason>,
    hung: bool,
    lasted: Duration,
) -> Outcome {
    let slot = &shared.slots[idx];
    shared.request_stop(idx, run);
    let task_error = {
        let mut inner = lock(&slot.inner);
        let tasks = &mut inner.tasks;
        tasks.open = false;
        tasks.tied.take().and_then(|t| t.error)
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
        Err(panic) => Err(error(ServiceErrorKind::Panicked(crate::panic_message(
            &*panic,
        )))),
    });
    shared.set_phase(idx, run, 0);
    Outcome {
        result,
        reason,
        hung,
        lasted,
    }
}

/// Ends a run: dependents stop first (the body keeps running for them meanwhile), then
/// the body is asked to stop and given its timeout (or dropped at once if it has no
/// context), then tied tasks get what is left of the timeout. Returns the body's
/// result, if it returned, and whether it hung.
async fn wind_down<F>(
    shared: &Shared,
    idx: usize,
    run: u64,
    mut fut: F,
    mut result: Option<RunResult>,
) -> (Option<RunResult>, bool)
where
    F: Future<Output = RunResult> + Unpin,
{
    let slot = &shared.slots[idx];
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
            () = slot.wake.notified() => {}
        }
    }

    let deadline = Instant::now() + slot.shutdown_timeout();
    let mut hung = false;
    if result.is_none() && slot.has_context && !forced() {
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
                        hung = true;
                        break;
                    }
                    () = slot.wake.notified() => if forced() { break },
                }
            }
        }
    }
    if result.is_none() && slot.has_context && !hung && forced() {
        lock(&shared.aborted).push(slot.shared_name());
    }
    drop(fut);

    // Tied tasks see shutdown, get what is left of the timeout, then are aborted when
    // the set is dropped. The error slot stays in place so failures during this wait
    // are still recorded.
    shared.request_stop(idx, run);
    let set = {
        let mut inner = lock(&slot.inner);
        let tasks = &mut inner.tasks;
        tasks.open = false;
        tasks.tied.as_mut().map(|t| std::mem::take(&mut t.set))
    };
    if let Some(mut set) = set {
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        while !set.is_empty() && !forced() {
            tokio::select! {
                biased;
                _ = set.join_next() => {}
                () = &mut sleep => {
                    tracing::warn!(service = %slot.name, tasks = set.len(), "tasks still running after the shutdown timeout were aborted");
                    break;
                }
                () = slot.wake.notified() => {}
            }
        }
    }
    (result, hung)
}

#[cfg(test)]
mod tests {
    use super::backoff_delay;
    use std::time::Duration;

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
    //! The per-service memory budget (≤ 1 KiB per idle service, see BENCHMARKS.md)
    //! depends on these sizes: at 72 B the supervisor fits tokio's smallest task cell,
    //! 256 B (as an `async fn` of 264 B it took a 384 B cell, at 328 B a 512 B one).

    #[test]
    fn supervisor_and_slot_stay_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let shared = crate::runner::dummy_shared();
        let supervisor = std::mem::size_of::<super::Supervisor>();
        assert!(supervisor <= 72, "{supervisor}");
        assert!(
            std::mem::size_of::<crate::runner::Slot>() <= 200,
            "{}",
            std::mem::size_of::<crate::runner::Slot>()
        );

        let mut svc = crate::Service::new("x", |ctx| async move { ctx.shutdown_requested().await });
        let ctx = crate::ServiceContext {
            shared,
            idx: 0,
            run: 1,
        };
        let body = (svc.factory)(ctx);
        assert!(
            std::mem::size_of_val(&*body) <= 200,
            "{}",
            std::mem::size_of_val(&*body)
        );
    }
}
