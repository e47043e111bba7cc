//! One supervisor per service, inside the service's task: waits for dependencies,
//! runs the body, stops it gracefully, and decides whether and when to run it again.
//!
//! * [`task`]: the service's tokio task, the body stored inline and polled under
//!   `catch_unwind`, the whole task guarded.
//! * [`restart`]: what follows a run (policy, intensity window, backoff).
//! * [`periodic`]: services that run on a fixed period.
//!
//! Stopping a run: dependents stop first (the body keeps running for them), then the
//! body is asked to stop and given its shutdown timeout (a body without a context is
//! dropped at once), then tied tasks get what is left of the timeout and are aborted
//! after it. The common case (nothing to wait for, the body returns when asked) is
//! done in one poll, without a timer.
//!
//! A service with a watchdog has one timer more, polled with the body: when it fires
//! and the run has not beaten since, the run is stopped as above with the reason
//! `Hung`, and its end is a failure like any other (restarted per the policy).

mod groups;
mod periodic;
mod restart;
mod task;

pub(crate) use task::{Factory, factory, spawn};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use restart::{Next, Restarts};
use task::Body;

use super::context::ServiceContext;
use super::state::{Command, Flags, Shared, SlotInner};
use super::status::{Event, ServiceState};
use crate::error::{BoxError, ServiceError, ServiceErrorKind};

/// What a run's body gave: its output, or the message of its panic.
pub(crate) type RunResult = Result<Result<(), BoxError>, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Shutdown,
    Stop,
    Restart,
    DependencyDown,
    /// The run's watchdog expired: it last beat at `last`, `silent` before.
    Hung {
        last: Instant,
        silent: Duration,
    },
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
    /// Tied tasks still running when a forced shutdown dropped them.
    tasks_dropped: usize,
    /// How long the wind-down took.
    took: Option<Duration>,
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

fn stop_reason(shared: &Shared, idx: usize) -> Option<Reason> {
    if shared.shutting_down.load(Ordering::Acquire) {
        return Some(Reason::Shutdown);
    }
    let slot = &shared.slots[idx];
    // A load first: commands are rare.
    match slot.cmd.take() {
        Some(Command::Stop) => return Some(Reason::Stop),
        Some(Command::Restart) => return Some(Reason::Restart),
        None => {}
    }
    if slot.deps().iter().any(|&d| !shared.phase(d).is_ready()) {
        return Some(Reason::DependencyDown);
    }
    None
}

/// Polls `fut` once with the current task's waker.
fn poll_now<F: Future + Unpin>(fut: &mut F) -> impl Future<Output = Poll<F::Output>> + '_ {
    std::future::poll_fn(move |cx| Poll::Ready(Pin::new(&mut *fut).poll(cx)))
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

/// The supervisor of one service: waits for its dependencies, runs the body,
/// stops it gracefully, and decides whether and when to run it again. One per
/// service, inside its [`task`].
struct Supervisor {
    shared: Arc<Shared>,
    idx: usize,
    run: u64,
    /// Boxed the first time a run ends by itself: most services never need it.
    restarts: Option<Box<Restarts>>,
    /// The watchdog's timer, for a service with a watchdog (armed at each run's
    /// start, see [`watchdog_expired`]).
    watchdog: Option<Pin<Box<tokio::time::Sleep>>>,
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
                        let ctx = begin_run(&self.shared, self.idx, self.run, cx.waker());
                        arm_watchdog(&self.shared, self.idx, &mut self.watchdog);
                        if let Err(panic) = body.start(ctx) {
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
                        if self.shared.slots[self.idx].wake.poll_take(cx).is_pending() {
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
                    let early = if slot.wake.take_now() {
                        stop_reason(shared, idx)
                    } else {
                        None
                    };
                    let (result, reason) = if early.is_some() {
                        (None, early)
                    } else {
                        match body.poll(cx) {
                            Poll::Ready(r) => (Some(r), None),
                            Poll::Pending => loop {
                                if slot.wake.poll_take(cx).is_pending() {
                                    match watchdog_expired(shared, idx, &mut self.watchdog, cx) {
                                        Some(hung) => break (None, Some(hung)),
                                        None => return Poll::Pending,
                                    }
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
                        || slot.cmd.is_stop()
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
                    shared.set_phase(idx, self.run, Flags::ENDED);
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
        let can_ask = slot.has_context && !shared.has_dependents(idx) && !forced();
        let mut asked =
            result.is_none() && matches!(reason, Some(Reason::Shutdown | Reason::Stop)) && can_ask;
        if asked {
            // Not ready any more before the body is asked, and then a second look for
            // dependents: one added at runtime meanwhile either saw this (and does
            // not start) or is seen here (and is waited for, below).
            shared.publish_stopping(idx, run);
            asked = !shared.has_dependents(idx);
        }
        if asked {
            shared.request_stop(idx, run);
            if let Poll::Ready(r) = body.poll(cx) {
                if matches!(r, Ok(Ok(()))) && end_stopped(shared, idx, run) {
                    self.step = Step::Done;
                    return Some(Slow::Done);
                }
                result = Some(r);
            }
        }
        let hung = if matches!(reason, Some(Reason::Hung { .. })) {
            Flags::HUNG
        } else {
            Flags::NONE
        };
        shared.set_phase(idx, run, Flags::ACTIVE | Flags::STOPPING | hung);
        let has_dependents = shared.has_dependents(idx);
        if has_dependents {
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
                lasted = inner.since.map_or(Duration::ZERO, |s| s.elapsed());
            }
            has_tied = inner.tied.is_some();
        };
        if reason.is_some() {
            shared.set_state_with(idx, ServiceState::Stopping, look);
        } else {
            look(&mut slot.inner.lock());
        }
        let simple = !has_dependents && !has_tied;
        if simple && !asked && result.is_none() && can_ask {
            asked = true;
            shared.request_stop(idx, run);
            if let Poll::Ready(r) = body.poll(cx) {
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
        let mut inner = slot.inner.lock();
        if inner.tied.is_some() {
            return false;
        }
        inner.open = false;
        inner.state = ServiceState::Stopped;
        inner.since = None;
        // Stopped in the poll that asked.
        inner.stop_took = Some(Duration::ZERO);
        inner.aborted = false;
    }
    shared.set_phase(idx, run, Flags::ENDED);
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
    if slot.cmd.take() == Some(Command::Stop) {
        return Some(false);
    }
    let mut all_ready = true;
    for &d in slot.deps() {
        // `SeqCst`: pairs with `mark_ready`'s look for dependents added at runtime.
        let phase = shared.phase_sc(d);
        if phase.has_ended() {
            tracing::info!(service = %slot.name, dependency = %shared.slots[d].name, "dependency ended");
            return Some(false);
        }
        all_ready &= phase.is_ready();
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
    shared.set_phase(idx, run, Flags::ACTIVE);
    std::sync::atomic::fence(Ordering::SeqCst);
    if slot.deps().iter().all(|&d| shared.phase(d).is_ready()) {
        return true;
    }
    // As after the previous run (`finish_run`): nothing active. The dependencies are
    // woken, in case one saw the claim and waits for it.
    shared.set_phase(idx, run - 1, Flags::NONE);
    false
}

/// Arms the watchdog's timer of `idx` for a run that has just begun (its start is
/// its first heartbeat, see `begin_run`), if the service has a watchdog.
fn arm_watchdog(shared: &Shared, idx: usize, timer: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    let Some(period) = shared.config(idx).watchdog else {
        return;
    };
    let due = deadline(shared.last_beat(idx), period);
    match timer {
        Some(timer) => timer.as_mut().reset(due),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(due))),
    }
}

/// `last + period`, or a deadline that never comes if that overflows.
fn deadline(last: Instant, period: Duration) -> Instant {
    last.checked_add(period)
        .unwrap_or_else(|| last + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

/// Whether the current run of `idx` has gone longer than its watchdog without a
/// heartbeat. The timer fires at the last heartbeat it knew of plus the period; a
/// run that beat since is given its new deadline, without a clock read.
fn watchdog_expired(
    shared: &Shared,
    idx: usize,
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    cx: &mut Context<'_>,
) -> Option<Reason> {
    let timer = timer.as_mut()?;
    let period = shared.config(idx).watchdog?;
    loop {
        if timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        // It fired: now is at least its deadline.
        let fired = timer.deadline();
        let last = shared.last_beat(idx);
        let due = deadline(last, period);
        if due <= fired {
            return Some(Reason::Hung {
                last,
                silent: fired.saturating_duration_since(last),
            });
        }
        timer.as_mut().reset(due);
    }
}

/// Sleeps the restart delay (not zero: see `Step::Yield`); `false` if the service
/// must end instead. A restart command cuts the delay short.
async fn pause(shared: &Shared, idx: usize, delay: Duration) -> bool {
    let slot = &shared.slots[idx];
    let must_end = || shared.shutting_down.load(Ordering::Acquire) || slot.cmd.is_stop();
    sleep_or_command(slot, delay, must_end).await
}

async fn sleep_or_command(
    slot: &super::state::Slot,
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
                match slot.cmd.take() {
                    Some(Command::Restart) => return true,
                    // Came after the check: the stop wins, as everywhere.
                    Some(Command::Stop) => return false,
                    None => {}
                }
            }
            () = &mut sleep => return true,
        }
    }
}

/// Starts run `run`: records it, and returns the context its body is made with
/// (`task` is the waker of the service's own task).
fn begin_run(shared: &Arc<Shared>, idx: usize, run: u64, task: &Waker) -> ServiceContext {
    let slot = &shared.slots[idx];
    shared.set_phase(
        idx,
        run,
        if slot.has_context {
            Flags::ACTIVE
        } else {
            Flags::ACTIVE | Flags::READY
        },
    );
    // A first run with no dependency to wait for, of a service given at start,
    // starts with the runner (no clock read per service).
    let since = if run == 1 && slot.deps().is_empty() && idx < shared.slots.initial_len() {
        shared.started
    } else {
        Instant::now()
    };
    if shared.config(idx).watchdog.is_some() {
        shared.set_beat(idx, since);
    }
    shared.set_state_with(idx, ServiceState::Running, |inner| {
        inner.run = run;
        inner.open = true;
        inner.tied = None;
        inner.token = None;
        inner.since = Some(since);
    });
    if !slot.has_context {
        shared.emit(|| Event::Ready {
            service: slot.shared_name(),
        });
    }
    ServiceContext::new(shared.clone(), idx, run, task.clone())
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
        let mut inner = slot.inner.lock();
        inner.open = false;
        // For the report: what this run's end cost.
        inner.stop_took = reason.map(|_| ends.took.unwrap_or_default());
        inner.aborted = ends.hung || ends.aborted;
        inner.tasks_aborted += ends.tasks_hung + ends.tasks_dropped;
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
    // A hung run failed by hanging, whatever it did once asked to stop.
    let result = match reason {
        Some(Reason::Hung { last, silent }) => {
            if let Some(Err(e)) = &result {
                tracing::warn!(service = %slot.name, run, error = %crate::error::Chain(e), "a hung run also failed as it stopped");
            }
            Some(Err(error(ServiceErrorKind::Hung {
                watchdog: shared.config(idx).watchdog.unwrap_or_default(),
                last_heartbeat: last,
                silent,
            })))
        }
        _ => result,
    };
    shared.set_phase(idx, run, Flags::NONE);
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
    let began = Instant::now();
    let mut ends = WoundDown::default();
    let mut fut = std::future::poll_fn(|cx| body.poll(cx));
    let forced = || shared.forced.load(Ordering::Acquire);
    while !forced() && shared.any_dependent(idx, |d| shared.phase(d).is_active()) {
        tokio::select! {
            biased;
            r = &mut fut, if result.is_none() => result = Some(r),
            () = slot.wake.notified() => {}
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
                    () = slot.wake.notified() => if forced() { break },
                }
            }
        }
    }
    if result.is_none() && slot.has_context && !ends.hung && forced() {
        ends.aborted = true;
        shared.aborted.lock().push(slot.shared_name());
    }
    drop(fut);
    drop_unreturned(body, &mut result, &mut asked);

    // Tied tasks see shutdown and get what is left of the timeout; those still
    // running then are aborted and reported. The error slot stays in place so
    // failures during this wait (a panic in a task's `Drop` included) are recorded.
    shared.request_stop(idx, run);
    let set = {
        let mut inner = slot.inner.lock();
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
                () = slot.wake.notified() => {}
            }
        }
        if ends.tasks_hung == 0 {
            // A forced shutdown came first: the set's drop aborts those still
            // running (those finished but not joined are not counted).
            while set.try_join_next().is_some() {}
            ends.tasks_dropped = set.len();
        }
    }
    ends.took = Some(began.elapsed());
    (result, ends, asked)
}

/// How long a wind-down waits for aborted tied tasks to be dropped.
const ABORT_GRACE: Duration = Duration::from_millis(100);

impl Supervisor {
    fn new(shared: Arc<Shared>, idx: usize) -> Supervisor {
        Supervisor {
            shared,
            idx,
            run: 0,
            restarts: None,
            watchdog: None,
            step: Step::Start,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
}
