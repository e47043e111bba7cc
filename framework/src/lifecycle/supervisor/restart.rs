//! What follows a run: the restart policy, the restart intensity window and the
//! backoff with jitter.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::groups::Escalation;
use super::{Outcome, Reason};
use crate::error::{Chain, FailureKind, ServiceFailure};
use crate::lifecycle::config::{OnGiveUp, Restart};
use crate::lifecycle::state::Shared;
use crate::lifecycle::status::{Event, ServiceState};

/// The restart delay before the `attempt`-th consecutive restart (0-based): uniform in
/// `[base, min(cap, base × 2^attempt)]`.
fn backoff_delay(base: Duration, cap: Duration, attempt: u32) -> Duration {
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

/// What comes after a run.
pub(super) enum Next {
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
pub(super) struct Restarts {
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
    pub(super) fn decide(
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
                {
                    let mut inner = slot.inner.lock();
                    inner.failures.get_or_insert_default()[e.label_index()] += 1;
                    inner.last_error = Some(e.clone());
                }
                shared.emit(|| Event::Failed {
                    service: slot.shared_name(),
                    error: e.clone(),
                });
                Some(e)
            }
            _ => None,
        };
        let timeout = shared.shutdown_timeout(idx);
        // A run stopped by its watchdog is a failure like any other (restarted per
        // the policy), whatever its stop had to abort.
        // Unless the service is ending anyway (a shutdown or a stop came meanwhile):
        // then what had to be aborted is reported as for any stop.
        let watchdog = matches!(outcome.reason, Some(Reason::Hung { .. }))
            && !shared.shutting_down.load(Ordering::Acquire)
            && !slot.cmd.is_stop();
        if watchdog && outcome.ends.hung {
            tracing::error!(service = %slot.name, ?timeout, "the hung run did not stop in time and was aborted");
        }
        if watchdog && outcome.ends.tasks_hung > 0 {
            tracing::error!(service = %slot.name, tasks = outcome.ends.tasks_hung, ?timeout, "tied tasks of the hung run did not stop in time and were aborted");
        }
        if outcome.ends.hung && !watchdog {
            tracing::error!(service = %slot.name, ?timeout, "service did not stop in time and was aborted");
            shared.record_failure(ServiceFailure {
                service: slot.shared_name(),
                kind: FailureKind::Hung { timeout },
            });
            return Next::End(ServiceState::Aborted);
        }
        if outcome.ends.tasks_hung > 0 && !watchdog {
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
            Some(Reason::Hung { .. }) | None => {}
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
            // Escalation: to its group if it has one, else to the runner. A parent
            // group that takes it restarts the whole group, this service too
            // (afresh), unless its policy is never to restart.
            let escalation = if cfg.on_give_up == OnGiveUp::Shutdown {
                super::groups::member_gave_up(shared, idx)
            } else {
                Escalation::NoGroup
            };
            if escalation == Escalation::Absorbed && cfg.restart != Restart::Never {
                tracing::warn!(service = %slot.name, error = %Chain(&*error), "service gave up; its group restarts");
                // Afresh: its window and backoff start over; its count of
                // restarts goes on (a counter never goes back).
                let count = this.count + 1;
                **this = Restarts {
                    count,
                    ..Restarts::default()
                };
                slot.inner.lock().restarts = count;
                return Next::After(cfg.backoff_base);
            }
            tracing::error!(service = %slot.name, restarts = this.count, error = %Chain(&*error), "service gave up");
            shared.record_failure(ServiceFailure {
                service: slot.shared_name(),
                kind: FailureKind::GaveUp {
                    restarts: this.count,
                    error,
                },
            });
            if escalation == Escalation::NoGroup && cfg.on_give_up == OnGiveUp::Shutdown {
                shared.begin_shutdown();
            }
            return Next::End(ServiceState::Failed);
        }
        // Its group may not allow the restart (and then has given up).
        if super::groups::member_restarts(shared, idx) == Escalation::GaveUp {
            tracing::error!(service = %slot.name, error = %Chain(&*error), "service failed; its group gave up");
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
        slot.inner.lock().restarts = this.count;
        Next::After(delay)
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
        assert_eq!(
            backoff_delay(Duration::ZERO, Duration::ZERO, 9),
            Duration::ZERO
        );
    }
}
