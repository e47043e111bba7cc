//! A single-waiter signal with a permit.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// Wakes one task, keeping a permit if it is not waiting (what
/// `tokio::sync::Notify::notify_one` does for one waiter), without a registration
/// node in the waiting future and with a store and a waker swap instead of a lock.
///
/// Only one task waits on a signal: each service's supervisor waits on its own.
#[derive(Default)]
pub(crate) struct Signal {
    permit: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Stores the permit and wakes the waiting task, if any.
    pub(crate) fn notify(&self) {
        self.permit.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Takes the permit, or registers the current task to be woken by the next
    /// [`notify`](Signal::notify).
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

    /// Takes the permit if there is one, without registering.
    pub(crate) fn take_now(&self) -> bool {
        self.permit.load(Ordering::Relaxed) && self.permit.swap(false, Ordering::AcqRel)
    }

    /// Waits for the permit.
    pub(crate) fn notified(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_take(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::Signal;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_permit_is_kept_and_no_wake_up_is_lost() {
        let signal = Arc::new(Signal::default());
        // Notified before anyone waits: the permit is kept, and taken once.
        signal.notify();
        assert!(signal.take_now());
        assert!(!signal.take_now());
        // Notified from another thread while the task waits, many times over.
        for _ in 0..2_000 {
            let s = signal.clone();
            let notifier = std::thread::spawn(move || s.notify());
            tokio::time::timeout(std::time::Duration::from_secs(5), signal.notified())
                .await
                .expect("the notification woke the waiter");
            notifier.join().unwrap();
        }
    }
}
