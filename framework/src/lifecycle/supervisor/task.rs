//! A service's tokio task: the supervisor, the closure that makes each run's body
//! and the current body, in one future, under a guard.
//!
//! The body is polled inside the supervisor's own task (no second spawn per run),
//! under `catch_unwind` ([`Body`]), so a restart costs a call of the closure and "the
//! next run starts only after the previous one has ended" holds by construction.
//! The whole task is guarded too ([`Guarded`]): a panic that escapes the supervisor
//! ends the service with an internal failure instead of leaving the runner waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{RunResult, Slow, Supervisor, drop_panicked};
use crate::guard;
use crate::lifecycle::body::IntoServiceResult;
use crate::lifecycle::context::ServiceContext;
use crate::lifecycle::state::Shared;
use crate::messaging::bus::Frame;
use tokio::task::futures::TaskLocalFuture;

/// A service's body closure with its type erased, until its task first runs.
pub(crate) type Factory = Box<dyn MakeTask>;

/// Makes a service's task (see [`task`]) with the concrete type of its body, so each
/// run's body is stored inline in the task.
pub(crate) trait MakeTask: Send + 'static {
    /// The task of service `idx`: its supervisor, body closure and current body.
    fn make_task(self: Box<Self>, shared: Arc<Shared>, idx: usize) -> TaskFuture;
}

/// A service's task once it has started.
type TaskFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Erases a body closure's type: the factory of [`Service::new`](crate::Service::new).
pub(crate) fn factory<M, F>(make: M) -> Factory
where
    M: FnMut(ServiceContext) -> F + Send + 'static,
    F: Future + Send + 'static,
    F::Output: IntoServiceResult,
{
    Box::new(BodyFn(make))
}

struct BodyFn<M>(M);

impl<M, F> MakeTask for BodyFn<M>
where
    M: FnMut(ServiceContext) -> F + Send + 'static,
    F: Future + Send + 'static,
    F::Output: IntoServiceResult,
{
    fn make_task(self: Box<Self>, shared: Arc<Shared>, idx: usize) -> TaskFuture {
        match shared.config(idx).every {
            None => Box::pin(task(shared, idx, self.0)),
            Some(period) => {
                let runs = super::periodic::periodic(self.0, period, shared.slots[idx].has_context);
                Box::pin(task(shared, idx, runs))
            }
        }
    }
}

/// Spawns service `idx`'s task on the current runtime (see [`Guarded`]).
/// `rt`: the runtime to spawn on, if not the current one (a service added from
/// outside the runtime).
pub(crate) fn spawn(
    shared: Arc<Shared>,
    idx: usize,
    factory: Factory,
    rt: Option<&tokio::runtime::Handle>,
) {
    let idx = u32::try_from(idx).expect("fewer than 2^32 services");
    let task = Guarded {
        shared,
        stage: Box::new(Stage::Unstarted(factory)),
        idx,
    };
    drop(match rt {
        Some(rt) => rt.spawn(task),
        None => tokio::spawn(task),
    });
}

/// A service's tokio task as spawned.
///
/// It is small on purpose: three words, tokio's smallest task cell, so the thread
/// that starts the runner writes little per service. The real task (supervisor, body
/// closure and body, a few hundred bytes) is made and boxed by its first poll, on a
/// worker. Against spawning the real task directly this makes a cold start of
/// 100,000 services about a third faster until every body runs, and saves about
/// 200 B per service (BENCHMARKS.md, "lifecycle").
///
/// It is also the guard of the runner's own code: a panic that escapes the task (a
/// bug in the supervisor, or user code outside every narrower guard) drops the task
/// and ends the service with an internal failure ([`Shared::internal_failure`])
/// instead of killing the task silently and leaving `wait()` waiting for it forever.
struct Guarded {
    shared: Arc<Shared>,
    stage: Box<Stage>,
    idx: u32,
}

enum Stage {
    Unstarted(Factory),
    Started(TaskFuture),
    Ended,
}

impl Future for Guarded {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Guarded { shared, stage, idx } = self.get_mut();
        let idx = *idx as usize;
        let polled = guard::catch(|| {
            #[cfg(test)]
            if &*shared.slots[idx].name == super::tests::INJECT_INTERNAL_PANIC {
                panic!("injected into the supervisor");
            }
            if let Stage::Unstarted(_) = **stage
                && let Stage::Unstarted(factory) = std::mem::replace(&mut **stage, Stage::Ended)
            {
                **stage = Stage::Started(factory.make_task(shared.clone(), idx));
            }
            match &mut **stage {
                Stage::Started(task) => task.as_mut().poll(cx),
                Stage::Unstarted(_) | Stage::Ended => Poll::Ready(()),
            }
        });
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                **stage = Stage::Ended;
                Poll::Ready(())
            }
            Err(message) => {
                // The task, with the body it may hold, is dropped before the failure
                // is reported: "ended" means its future is gone.
                if let Err(panic) = guard::catch(|| **stage = Stage::Ended) {
                    tracing::error!(service = %shared.slots[idx].name, %panic, "dropping the service's task panicked");
                }
                shared.internal_failure(idx, message);
                Poll::Ready(())
            }
        }
    }
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
/// it).
struct Inline<'a, M, F> {
    make: &'a mut M,
    /// The body runs inside the runner's scope (`bus::ctx` works in it).
    body: Pin<&'a mut Option<TaskLocalFuture<Arc<Frame>, F>>>,
    frame: Arc<Frame>,
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
        let (make, frame) = (&mut self.make, &self.frame);
        // The closure too runs inside the runner's scope (`bus::ctx` works in it).
        let body = span.in_scope(|| guard::catch(|| frame.enter_sync(|| make(ctx))))?;
        self.body.set(Some(self.frame.enter(body)));
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
            let polled = guard::catch(|| match body.poll(cx) {
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
        let panic = guard::catch(|| body.set(None)).err();
        drop(entered);
        self.span = None;
        panic
    }
}

/// The task of one service: its supervisor, the closure that makes each run's body,
/// and the body of the current run, stored inline. The supervisor's fast path (start
/// a run, poll it, stop it when it returns at once) is one poll of
/// [`Supervisor::poll_fast`]; the slow waits (a wind-down with its timeout, a restart
/// delay) are boxed when taken.
fn task<M, F>(shared: Arc<Shared>, idx: usize, mut make: M) -> impl Future<Output = ()> + Send
where
    M: FnMut(ServiceContext) -> F + Send,
    F: Future + Send,
    F::Output: IntoServiceResult,
{
    let frame = shared.frame.clone();
    let mut sup = Supervisor::new(shared, idx);
    async move {
        let body = std::pin::pin!(None);
        let mut body = Inline {
            make: &mut make,
            body,
            frame,
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
