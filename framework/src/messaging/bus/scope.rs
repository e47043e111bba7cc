//! Scopes: a future run with its own bus, typed state and tasks, reachable through
//! a tokio task-local ([`ctx`](super::ctx)).
//!
//! A scope is a [`Frame`] (name, bus, state, tasks, parent) set as the task-local
//! of the future it runs and of every task it spawns. Ending a scope closes its own
//! bus before it waits for its tasks, so a task that reads a subscription of that
//! bus sees the end of its stream and returns instead of keeping the scope waiting.

use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle, futures::TaskLocalFuture};
use tokio_util::task::TaskTracker;

use super::EventBus;
use crate::sync::Mutex;

tokio::task_local! {
    pub(super) static CURRENT: Arc<Frame>;
}

type StateValue = Arc<dyn Any + Send + Sync>;

/// One scope: what `bus::ctx` reaches from inside it.
pub(crate) struct Frame {
    pub(super) name: Arc<str>,
    pub(super) bus: EventBus,
    /// Whether the bus is this scope's own (closed when it ends) or its parent's or
    /// a given one.
    own_bus: bool,
    state: Vec<(TypeId, StateValue)>,
    pub(super) parent: Option<Arc<Frame>>,
    tasks: Tasks,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("name", &self.name)
            .field("own_bus", &self.own_bus)
            .field("tasks", &self.tasks.tracker.len())
            .finish()
    }
}

/// The tasks a scope spawned: counted by the tracker (which also counts a task until
/// its future is dropped), aborted through their handles.
struct Tasks {
    tracker: TaskTracker,
    handles: Mutex<Handles>,
}

struct Handles {
    live: Vec<AbortHandle>,
    /// Finished tasks' handles are dropped when `live` reaches this length.
    prune_at: usize,
    /// Set once the scope aborts its tasks: a task spawned after that is aborted too.
    aborting: bool,
}

impl Tasks {
    fn new() -> Self {
        Tasks {
            tracker: TaskTracker::new(),
            handles: Mutex::new(Handles {
                live: Vec::new(),
                prune_at: 16,
                aborting: false,
            }),
        }
    }

    fn register(&self, handle: AbortHandle) {
        let mut h = self.handles.lock();
        if h.aborting {
            handle.abort();
            return;
        }
        h.live.push(handle);
        if h.live.len() >= h.prune_at {
            // A long-lived scope that spawns a task per event keeps only live handles.
            h.live.retain(|t| !t.is_finished());
            h.prune_at = (h.live.len() * 2).max(16);
        }
    }

    /// Aborts every task; returns how many were still running.
    fn abort_all(&self) -> usize {
        let live = {
            let mut h = self.handles.lock();
            h.aborting = true;
            std::mem::take(&mut h.live)
        };
        let mut running = 0;
        for t in live {
            if !t.is_finished() {
                running += 1;
                t.abort();
            }
        }
        running
    }
}

impl Frame {
    /// Whether the frame was made inside another scope.
    pub(crate) fn has_parent(&self) -> bool {
        self.parent.is_some()
    }
}

impl Frame {
    /// A scope's frame. `bus: None` gives it a new bus of its own.
    pub(crate) fn new(
        name: Arc<str>,
        bus: Option<EventBus>,
        state: Vec<(TypeId, StateValue)>,
        parent: Option<Arc<Frame>>,
    ) -> Arc<Frame> {
        let own_bus = bus.is_none();
        Arc::new(Frame {
            name,
            bus: bus.unwrap_or_default(),
            own_bus,
            state,
            parent,
            tasks: Tasks::new(),
        })
    }

    /// The frame of the scope the caller runs in, if any.
    pub(crate) fn current() -> Option<Arc<Frame>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// The frame's bus.
    pub(crate) fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// `fut`, run inside this scope.
    pub(crate) fn enter<F: Future>(self: &Arc<Self>, fut: F) -> TaskLocalFuture<Arc<Frame>, F> {
        CURRENT.scope(self.clone(), fut)
    }

    /// Calls `f` inside this scope.
    pub(crate) fn enter_sync<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.clone(), f)
    }

    /// Spawns `fut` on the current runtime as a task of this scope, inside it.
    pub(super) fn spawn<F>(self: &Arc<Self>, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = tokio::spawn(self.tasks.tracker.track_future(self.enter(fut)));
        self.tasks.register(handle.abort_handle());
        handle
    }

    /// The nearest value of type `T`, from this scope up.
    pub(super) fn state<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let mut frame = Some(self);
        while let Some(f) = frame {
            if let Some((_, value)) = f.state.iter().find(|(t, _)| *t == TypeId::of::<T>()) {
                return value.clone().downcast().ok();
            }
            frame = f.parent.as_deref();
        }
        None
    }

    /// Ends the scope: closes its own bus (subscriptions drain, then end), then
    /// waits up to `deadline` for its tasks and aborts those still running (and waits
    /// until their futures are dropped). Returns how many were aborted.
    pub(crate) async fn end(&self, deadline: Duration) -> usize {
        if self.own_bus {
            self.bus.close();
        }
        self.tasks.tracker.close();
        if self.tasks.tracker.is_empty() {
            return 0;
        }
        if tokio::time::timeout(deadline, self.tasks.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let aborted = self.tasks.abort_all();
        tracing::warn!(
            scope = %self.name,
            aborted,
            ?deadline,
            "tasks of the scope were still running at its end and were aborted"
        );
        self.tasks.tracker.wait().await;
        aborted
    }

    /// Aborts the scope's tasks now (a forced shutdown); an `end` in progress then
    /// returns as soon as their futures are dropped.
    pub(crate) fn abort_tasks(&self) {
        self.tasks.abort_all();
    }

    /// What a scope dropped before it ended (cancelled, or its future panicked) does:
    /// closes its own bus and aborts its tasks, without waiting.
    fn abandon(&self) {
        if self.own_bus {
            self.bus.close();
        }
        self.tasks.tracker.close();
        self.tasks.abort_all();
    }
}

/// Runs `fut` in a new scope named `name`, with a bus of its own; see
/// [`Scope`] for the settings and the [module docs](crate::bus) for the semantics.
///
/// # Panics
///
/// The returned future panics at the scope's end if tasks spawned in it are still
/// running and the tokio runtime has no time driver (the join deadline is a tokio
/// timer); [`ctx::spawn`](super::ctx::spawn) itself needs a tokio runtime.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use servicekit::bus::{self, ctx};
/// let answer = bus::scope("request", async {
///     ctx::name().unwrap().to_string()
/// })
/// .await;
/// assert_eq!(answer, "request");
/// # }
/// ```
pub fn scope<F: Future>(name: impl Into<String>, fut: F) -> Scope<F> {
    Scope {
        name: Arc::from(name.into()),
        join_timeout: Scope::<F>::DEFAULT_JOIN_TIMEOUT,
        bus: BusChoice::Own,
        state: Vec::new(),
        stage: Stage::Unstarted(fut),
        frame: None,
        ended: false,
    }
}

enum BusChoice {
    Own,
    Parent,
    Given(EventBus),
}

/// A future run inside a scope; from [`scope`]. Configure it, then `.await` it.
///
/// Its output is the output of the future it runs, returned once the scope has ended:
/// its own bus closed and its tasks joined (or aborted after
/// [`join_timeout`](Scope::join_timeout)). Dropped before that (cancelled, or its
/// future panicked), it closes its own bus and aborts its tasks at once.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use servicekit::bus::{self, ctx};
///
/// #[derive(Debug, PartialEq)]
/// struct Config {
///     retries: u32,
/// }
///
/// bus::scope("app", async {
///     assert_eq!(ctx::state::<Config>().unwrap().retries, 3);
///     // A nested scope sees its parent's state, and can replace it with a copy.
///     let retries = ctx::state::<Config>().unwrap().retries;
///     bus::scope("retry-hard", async {
///         assert_eq!(ctx::state::<Config>().unwrap().retries, 10);
///     })
///     .with_state(Config { retries: retries + 7 })
///     .await;
///     assert_eq!(ctx::state::<Config>().unwrap().retries, 3);
/// })
/// .with_state(Config { retries: 3 })
/// .join_timeout(Duration::from_secs(1))
/// .await;
/// # }
/// ```
#[must_use = "a scope does nothing unless awaited"]
pub struct Scope<F: Future> {
    name: Arc<str>,
    join_timeout: Duration,
    bus: BusChoice,
    state: Vec<(TypeId, StateValue)>,
    stage: Stage<F>,
    /// Set when the scope starts.
    frame: Option<Arc<Frame>>,
    /// Set once the scope has ended properly; dropped without it, the scope abandons
    /// its frame.
    ended: bool,
}

enum Stage<F: Future> {
    Unstarted(F),
    Running(Pin<Box<TaskLocalFuture<Arc<Frame>, F>>>),
    Ending(F::Output, Pin<Box<dyn Future<Output = ()> + Send>>),
    Done,
}

impl<F: Future> Drop for Scope<F> {
    fn drop(&mut self) {
        if let Some(frame) = &self.frame
            && !self.ended
        {
            frame.abandon();
        }
    }
}

impl<F: Future> fmt::Debug for Scope<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("name", &self.name)
            .field("join_timeout", &self.join_timeout)
            .finish_non_exhaustive()
    }
}

// The future is only pinned once it is boxed (`Stage::Running`); `Scope` never
// hands out a pinned reference to anything stored inline.
impl<F: Future> Unpin for Scope<F> {}

impl<F: Future> Scope<F> {
    /// How long a scope waits for its tasks at its end, by default, before it
    /// aborts them.
    pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(5);

    /// Adds a typed value to the scope's state, read with
    /// [`ctx::state`](super::ctx::state) inside it and inside nested scopes (the
    /// nearest scope with a value of that type wins). One value per type: a second
    /// call with the same type replaces the first.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use servicekit::bus::{self, ctx};
    /// bus::scope("app", async {
    ///     assert_eq!(*ctx::state::<&str>().unwrap(), "eu-west-1");
    /// })
    /// .with_state("eu-west-1")
    /// .await;
    /// # }
    /// ```
    pub fn with_state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        let value: StateValue = Arc::new(value);
        match self.state.iter_mut().find(|(t, _)| *t == TypeId::of::<T>()) {
            Some(slot) => slot.1 = value,
            None => self.state.push((TypeId::of::<T>(), value)),
        }
        self
    }

    /// Shares the enclosing scope's bus instead of having its own (haiway's
    /// `isolated=False`): events cross the boundary both ways, and the bus is not
    /// closed when this scope ends. Outside every scope, the scope gets its own bus.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use servicekit::bus::{self, ctx};
    /// bus::scope("app", async {
    ///     let mut sub = ctx::subscribe::<u8>().unwrap();
    ///     bus::scope("part", async { ctx::send(1u8).unwrap() }).shared().await;
    ///     assert_eq!(*sub.try_recv().unwrap(), 1);
    /// })
    /// .await;
    /// # }
    /// ```
    pub fn shared(mut self) -> Self {
        self.bus = BusChoice::Parent;
        self
    }

    /// Uses `bus` as the scope's bus (it is not closed when the scope ends).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use servicekit::bus::{self, ctx, EventBus};
    /// let bus = EventBus::new();
    /// let mut sub = bus.subscribe::<u8>();
    /// bus::scope("app", async { ctx::send(5u8).unwrap() }).with_bus(bus.clone()).await;
    /// assert_eq!(*sub.try_recv().unwrap(), 5);
    /// # }
    /// ```
    pub fn with_bus(mut self, bus: EventBus) -> Self {
        self.bus = BusChoice::Given(bus);
        self
    }

    /// How long the scope waits for its tasks at its end before it aborts them
    /// (default [`DEFAULT_JOIN_TIMEOUT`](Self::DEFAULT_JOIN_TIMEOUT), 5 s).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use servicekit::bus::{self, ctx};
    /// let forever = bus::scope("app", async {
    ///     ctx::spawn(std::future::pending::<()>()).unwrap()
    /// })
    /// .join_timeout(Duration::from_millis(10))
    /// .await;
    /// assert!(forever.await.unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub fn join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = timeout;
        self
    }

    fn start(&mut self, fut: F) {
        let parent = Frame::current();
        let bus = match std::mem::replace(&mut self.bus, BusChoice::Own) {
            BusChoice::Own => None,
            BusChoice::Parent => parent.as_ref().map(|p| p.bus.clone()),
            BusChoice::Given(bus) => Some(bus),
        };
        let frame = Frame::new(
            self.name.clone(),
            bus,
            std::mem::take(&mut self.state),
            parent,
        );
        self.stage = Stage::Running(Box::pin(frame.enter(fut)));
        self.frame = Some(frame);
    }
}

impl<F: Future> Future for Scope<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.stage, Stage::Done) {
                Stage::Unstarted(fut) => this.start(fut),
                Stage::Running(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.stage = Stage::Running(fut);
                        return Poll::Pending;
                    }
                    Poll::Ready(out) => {
                        drop(fut);
                        let frame = this.frame.clone().expect("a running scope has a frame");
                        let deadline = this.join_timeout;
                        let end = async move {
                            frame.end(deadline).await;
                        };
                        this.stage = Stage::Ending(out, Box::pin(end));
                    }
                },
                Stage::Ending(out, mut end) => match end.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.stage = Stage::Ending(out, end);
                        return Poll::Pending;
                    }
                    Poll::Ready(()) => {
                        this.ended = true;
                        return Poll::Ready(out);
                    }
                },
                Stage::Done => panic!("`Scope` polled after completion"),
            }
        }
    }
}
