//! One supervisor task per service: waits for dependencies, runs the body, stops it
//! gracefully, and decides whether and when to run it again.
//!
//! The body is polled inside the supervisor task (no second spawn per run), under
//! `catch_unwind`, so a restart costs a factory call and a few atomics, and "the next
//! run starts only after the previous one has ended" holds by construction.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::context::ServiceContext;
use crate::error::{Chain, FailureKind, ServiceError, ServiceErrorKind, ServiceFailure};
use crate::runner::{
    ACTIVE, CMD_NONE, CMD_RESTART, CMD_STOP, ENDED, READY, ServiceState, Shared, lock,
};
use crate::service::{Factory, OnGiveUp, Restart};

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
    if slot
        .deps
        .iter()
        .any(|&d| shared.phase(d) & READY == 0)
    {
        return Some(Reason::DependencyDown);
    }
    None
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
                        return Ok(());
                    }
                } else {
                    tick.await;
                }
                let run = (lock(&inner))(ctx.clone());
                run.await?;
                let elapsed = start.elapsed().as_nanos();
                let k = elapsed / period.as_nanos() + 1;
                due = start + Duration::from_nanos(u64::try_from(k * period.as_nanos()).unwrap_or(u64::MAX));
            }
        })
    })
}

pub(crate) async fn supervise(shared: Arc<Shared>, idx: usize, factory: Factory) {
    let slot = &shared.slots[idx];
    let cfg = &slot.config;
    let mut factory = match cfg.every {
        Some(period) => periodic(factory, period, slot.has_context),
        None => factory,
    };
    let unlimited = cfg.max_restarts == u32::MAX;
    let mut attempt: u32 = 0;
    let mut window: VecDeque<Instant> = VecDeque::new();
    let mut restarts: u32 = 0;
    let mut run: u64 = 0;

    let end = 'life: loop {
        if !wait_start(&shared, idx).await {
            break ServiceState::Stopped;
        }
        run += 1;
        let outcome = run_once(&shared, idx, &mut factory, run).await;

        let failure = match outcome.result {
            Some(Err(e)) => {
                let e = Arc::new(e);
                tracing::warn!(service = %slot.name, run, error = %Chain(&*e), "service failed");
                lock(&slot.status).last_error = Some(e.clone());
                shared.emit(|| crate::Event::Failed {
                    service: slot.name.clone(),
                    error: e.clone(),
                });
                Some(e)
            }
            _ => None,
        };
        if outcome.hung {
            tracing::error!(service = %slot.name, timeout = ?slot.shutdown_timeout, "service did not stop in time and was aborted");
            shared.record_failure(ServiceFailure {
                service: slot.name.clone(),
                kind: FailureKind::Hung {
                    timeout: slot.shutdown_timeout,
                },
            });
            break ServiceState::Failed;
        }
        if shared.forced.load(Ordering::Acquire) {
            break ServiceState::Stopped;
        }
        match outcome.reason {
            Some(Reason::Shutdown | Reason::Stop) => {
                if let Some(error) = failure {
                    shared.record_failure(ServiceFailure {
                        service: slot.name.clone(),
                        kind: FailureKind::StopFailed { error },
                    });
                    break ServiceState::Failed;
                }
                break ServiceState::Stopped;
            }
            Some(Reason::Restart | Reason::DependencyDown) => continue,
            None => {}
        }

        let delay = match failure {
            None if cfg.restart == Restart::Always => {
                attempt = 0;
                cfg.backoff_base
            }
            None => break ServiceState::Stopped,
            Some(error) => {
                let now = Instant::now();
                let mut give_up = cfg.restart == Restart::Never;
                if !give_up && !unlimited {
                    while window
                        .front()
                        .is_some_and(|&t| now.saturating_duration_since(t) >= cfg.within)
                    {
                        window.pop_front();
                    }
                    give_up = window.len() >= cfg.max_restarts as usize;
                }
                if give_up {
                    tracing::error!(service = %slot.name, restarts, error = %Chain(&*error), "service gave up");
                    shared.record_failure(ServiceFailure {
                        service: slot.name.clone(),
                        kind: FailureKind::GaveUp { restarts, error },
                    });
                    if cfg.on_give_up == OnGiveUp::Shutdown {
                        shared.begin_shutdown();
                    }
                    break 'life ServiceState::Failed;
                }
                if !unlimited {
                    window.push_back(now);
                }
                if outcome.lasted >= cfg.reset_after {
                    attempt = 0;
                }
                let delay = backoff_delay(cfg.backoff_base, cfg.backoff_cap, attempt);
                attempt = attempt.saturating_add(1);
                restarts += 1;
                lock(&slot.status).restarts = restarts;
                delay
            }
        };
        shared.set_state(idx, ServiceState::Restarting);
        tracing::info!(service = %slot.name, ?delay, "restarting");
        if !pause(&shared, idx, delay).await {
            break ServiceState::Stopped;
        }
    };
    shared.set_phase(idx, run, ENDED);
    shared.set_state(idx, end);
    tracing::info!(service = %slot.name, state = %end, "service ended");
}

/// Waits until the service may start a run: `false` if it must end instead.
async fn wait_start(shared: &Shared, idx: usize) -> bool {
    let slot = &shared.slots[idx];
    loop {
        if shared.shutting_down.load(Ordering::Acquire) {
            return false;
        }
        if slot.cmd.swap(CMD_NONE, Ordering::AcqRel) == CMD_STOP {
            return false;
        }
        let mut all_ready = true;
        for &d in slot.deps.iter() {
            let phase = shared.phase(d);
            if phase & ENDED != 0 {
                tracing::info!(service = %slot.name, dependency = %shared.slots[d].name, "dependency ended");
                return false;
            }
            all_ready &= phase & READY != 0;
        }
        if all_ready {
            return true;
        }
        shared.set_state(idx, ServiceState::Starting);
        slot.wake.notified().await;
    }
}

/// Sleeps the restart delay; `false` if the service must end instead. A restart
/// command cuts the delay short.
async fn pause(shared: &Shared, idx: usize, delay: Duration) -> bool {
    let slot = &shared.slots[idx];
    let must_end = || {
        shared.shutting_down.load(Ordering::Acquire)
            || slot.cmd.load(Ordering::Acquire) == CMD_STOP
    };
    if delay.is_zero() {
        tokio::task::yield_now().await;
        return !must_end();
    }
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

async fn run_once(shared: &Arc<Shared>, idx: usize, factory: &mut Factory, run: u64) -> Outcome {
    let slot = &shared.slots[idx];
    let token = CancellationToken::new();
    {
        let mut tasks = lock(&slot.tasks);
        tasks.run = run;
        tasks.open = true;
        tasks.error = None;
    }
    shared.set_phase(
        idx,
        run,
        if slot.has_context { ACTIVE } else { ACTIVE | READY },
    );
    let started = Instant::now();
    {
        let mut st = lock(&slot.status);
        st.runs = run;
        st.since = Some(started);
    }
    shared.set_state(idx, ServiceState::Running);

    let ctx = ServiceContext {
        shared: shared.clone(),
        idx,
        run,
        token: token.clone(),
    };
    let span = tracing::info_span!("service", name = %slot.name, run);
    let body = span.in_scope(|| factory(ctx));
    let mut fut = AssertUnwindSafe(body).catch_unwind().instrument(span);

    let mut result = None;
    let mut reason = None;
    while result.is_none() {
        tokio::select! {
            biased;
            r = &mut fut => result = Some(r),
            () = slot.wake.notified() => {
                reason = stop_reason(shared, idx);
                if reason.is_some() {
                    break;
                }
            }
        }
    }
    let lasted = started.elapsed();
    let forced = || shared.forced.load(Ordering::Acquire);

    // Going down: dependents stop first (the body keeps running for them meanwhile).
    shared.set_phase(idx, run, ACTIVE);
    if reason.is_some() {
        shared.set_state(idx, ServiceState::Stopping);
    }
    while !forced()
        && slot
            .dependents
            .iter()
            .any(|&d| shared.phase(d) & ACTIVE != 0)
    {
        tokio::select! {
            biased;
            r = &mut fut, if result.is_none() => result = Some(r),
            () = slot.wake.notified() => {}
        }
    }

    let timeout = slot.shutdown_timeout;
    let deadline = Instant::now() + timeout;
    let mut hung = false;
    if result.is_none() && slot.has_context && !forced() {
        token.cancel();
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
        lock(&shared.aborted).push(slot.name.clone());
    }
    drop(fut);

    // Tasks tied to the run: they see shutdown, get what is left of the timeout, then
    // are aborted when the set is dropped.
    token.cancel();
    let set = {
        let mut tasks = lock(&slot.tasks);
        tasks.open = false;
        tasks.set.take()
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
    let task_error = lock(&slot.tasks).error.take();

    let error = |kind| ServiceError {
        service: slot.name.clone(),
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
        assert_eq!(backoff_delay(Duration::ZERO, Duration::ZERO, 9), Duration::ZERO);
    }
}
