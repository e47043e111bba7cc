//! `Pipeline`: multi-stage processing with concurrent workers, order kept, bad items
//! routed aside, and a report.
//!
//! ```text
//! Pipeline::from(source).via(stage("parse", f).workers(4)).via(..).to(sink).errors(e).run()
//! ```
//!
//! * **Sources**: any [`Stream`], e.g. a [`queue::Receiver`](crate::queue::Receiver) or a
//!   [`Customer`](crate::Customer) (`customer.filter_map(|r| async { r.ok() })`).
//! * **Sinks** ([`PipelineSink`]): a [`Queue`], a [`Channel`], an async closure, or
//!   any `futures` `Sink` through [`Pipeline::to_sink`]. When the source ends, every
//!   stage drains and then the sink is closed.
//! * **Workers**: each stage runs up to `workers(n)` items at once (concurrent
//!   futures driven by the pipeline; use `spawn_blocking` inside a stage for CPU-heavy
//!   work). Output order is the input order unless the stage is `.unordered()`.
//! * **Backpressure**: consecutive stages are connected by a bounded queue
//!   (`buffer(n)`, default 32); a stage holds at most `workers` items
//!   in flight and waits while its output queue is full, end to end: a slow sink
//!   slows the source.
//! * **Errors**: a stage function returns `Result`; a failed item goes to the error
//!   sink as a [`StageError`] naming the stage while the rest flow on. Without an
//!   error sink the first error stops the pipeline: work in flight is dropped and
//!   [`run`](Pipeline::run) returns the error.
//! * **Cancellation**: `run` spawns nothing; dropping its future drops every item in
//!   flight. A pipeline can therefore run inside a service:
//!   `ctx.until_shutdown(pipeline.run()).await`.
//!
//! # Streams
//!
//! The stream transforms of effectpy's `Stream`/`StreamE` are the `futures` crate's
//! `futures::StreamExt` / `futures::TryStreamExt`:
//! `map`, `filter`, `take`, `then` and, on streams of `Result`, `and_then`, `map_err`,
//! `or_else`. Use them on a source before it enters a pipeline:
//!
//! ```
//! use futures::{StreamExt, TryStreamExt};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let evens: Vec<u32> = futures::stream::iter(1..=10)
//!     .filter(|n| std::future::ready(n % 2 == 0))
//!     .map(|n| n * 10)
//!     .take(3)
//!     .collect()
//!     .await;
//! assert_eq!(evens, [20, 40, 60]);
//!
//! let parsed: Result<Vec<u32>, String> = futures::stream::iter(["1", "2", "x"])
//!     .map(|s| s.parse::<u32>().map_err(|e| e.to_string()))
//!     .and_then(|n| async move { Ok(n + 1) })
//!     .map_err(|e| format!("bad input: {e}"))
//!     .try_collect()
//!     .await;
//! assert_eq!(parsed.unwrap_err(), "bad input: invalid digit found in string");
//! # }
//! ```
//!
//! # Example
//!
//! ```
//! use servicekit::{Pipeline, Queue, stage};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), servicekit::pipeline::PipelineError> {
//! let out = Queue::unbounded();
//! let results = out.receiver();
//! let report = Pipeline::from(futures::stream::iter(1..=5))
//!     .via(stage("double", |n: u32| async move { Ok::<_, std::io::Error>(n * 2) }).workers(3))
//!     .via(stage("describe", |n: u32| async move { Ok::<_, std::io::Error>(format!("#{n}")) }))
//!     .to(out)
//!     .run()
//!     .await?;
//! assert_eq!(report.stages[0].output, 5);
//! let all: Vec<String> = futures::StreamExt::collect(results).await;
//! assert_eq!(all, ["#2", "#4", "#6", "#8", "#10"]);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use futures::stream::BoxStream;
use futures::{Sink, SinkExt, Stream, StreamExt};

use crate::channel::Channel;
use crate::error::BoxError;
use crate::queue::Queue;

/// One stage of a [`Pipeline`]: a named async function applied to every item.
///
/// # Examples
///
/// ```
/// let parse = servicekit::stage("parse", |line: String| async move {
///     line.trim().parse::<u64>()
/// })
/// .workers(4)
/// .unordered();
/// # drop(parse);
/// ```
#[must_use = "a stage does nothing until added to a pipeline with `via`"]
pub struct Stage<F> {
    name: String,
    f: F,
    workers: usize,
    buffer: usize,
    ordered: bool,
}

impl<F> fmt::Debug for Stage<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage")
            .field("name", &self.name)
            .field("workers", &self.workers)
            .field("buffer", &self.buffer)
            .field("ordered", &self.ordered)
            .finish()
    }
}

/// Makes a [`Stage`] from a name and an async function returning `Result`.
/// One worker, input order kept, until set otherwise.
///
/// # Examples
///
/// ```
/// let s = servicekit::stage("upper", |s: String| async move { Ok::<_, std::io::Error>(s.to_uppercase()) });
/// # drop(s);
/// ```
pub fn stage<F>(name: impl Into<String>, f: F) -> Stage<F> {
    Stage {
        name: name.into(),
        f,
        workers: 1,
        buffer: DEFAULT_BUFFER,
        ordered: true,
    }
}

/// Default bound of the queue between a stage and the next.
const DEFAULT_BUFFER: usize = 32;

impl<F> Stage<F> {
    /// How many items the stage processes at once. 0 is rejected by
    /// [`Pipeline::run`] before anything runs.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = servicekit::stage("s", |n: u8| async move { Ok::<_, std::io::Error>(n) }).workers(8);
    /// # drop(s);
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// The bound of the queue between this stage and the next (default
    /// 32): how far this stage may run ahead. 0 is rejected by
    /// [`Pipeline::run`] before anything runs.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = servicekit::stage("s", |n: u8| async move { Ok::<_, std::io::Error>(n) }).buffer(256);
    /// # drop(s);
    /// ```
    pub fn buffer(mut self, n: usize) -> Self {
        self.buffer = n;
        self
    }

    /// Emit results in completion order instead of input order.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = servicekit::stage("s", |n: u8| async move { Ok::<_, std::io::Error>(n) }).unordered();
    /// # drop(s);
    /// ```
    pub fn unordered(mut self) -> Self {
        self.ordered = false;
        self
    }

    /// Keeps a copy of each input until the stage function is done with it, so that
    /// an item that fails reaches the error sink with the item itself:
    /// [`StageError::input`] gives it back. Costs a clone and a boxed future per
    /// item. A stage function can also hand the item back by itself, by failing
    /// with a [`Failed`] (no clone needed).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use servicekit::{Pipeline, Queue, pipeline::StageError, stage};
    ///
    /// let errors = Queue::<StageError>::unbounded();
    /// let out = Queue::unbounded();
    /// Pipeline::from(futures::stream::iter(["1", "x", "3"].map(String::from)))
    ///     .via(stage("parse", |s: String| async move { s.parse::<u32>() }).keep_input())
    ///     .to(out.clone())
    ///     .errors(errors.clone())
    ///     .run()
    ///     .await
    ///     .unwrap();
    /// let failed = errors.receiver().try_recv().unwrap();
    /// assert_eq!(failed.input::<String>().map(String::as_str), Some("x"));
    /// # }
    /// ```
    pub fn keep_input<I, U, E, Fut>(
        self,
    ) -> Stage<impl Fn(I) -> BoxFuture<'static, Result<U, Failed<I>>> + Send + Sync + 'static>
    where
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<U, E>> + Send + 'static,
        I: Clone + fmt::Debug + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        let Stage {
            name,
            f,
            workers,
            buffer,
            ordered,
        } = self;
        Stage {
            name,
            f: move |item: I| {
                let input = item.clone();
                let fut = f(item);
                async move {
                    fut.await.map_err(|e| Failed {
                        input,
                        error: e.into(),
                    })
                }
                .boxed()
            },
            workers,
            buffer,
            ordered,
        }
    }
}

/// A stage function's error that carries the item that failed, so the error sink gets
/// it back ([`StageError::input`]); see [`Stage::keep_input`].
///
/// # Examples
///
/// ```
/// use servicekit::pipeline::Failed;
/// let stage_fn = |line: String| async move {
///     match line.parse::<u32>() {
///         Ok(n) => Ok(n),
///         Err(e) => Err(Failed { input: line, error: e.into() }),
///     }
/// };
/// # drop(stage_fn);
/// ```
#[derive(Debug)]
pub struct Failed<I> {
    /// The item the stage was given.
    pub input: I,
    /// Why it failed.
    pub error: BoxError,
}

impl<I> fmt::Display for Failed<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<I: fmt::Debug> std::error::Error for Failed<I> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// An item that failed in a stage: the stage's name and the error.
///
/// # Examples
///
/// ```
/// # fn f(e: &servicekit::pipeline::StageError) {
/// eprintln!("stage {} failed: {}", e.stage(), e.error());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StageError {
    stage: Arc<str>,
    error: Arc<dyn std::error::Error + Send + Sync>,
}

impl StageError {
    /// The stage that failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(e: &servicekit::pipeline::StageError) -> &str {
    /// e.stage()
    /// # }
    /// ```
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The stage function's error (a [`Failed`] when the stage hands its input back:
    /// it displays as the error it carries).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(e: &servicekit::pipeline::StageError) -> String {
    /// e.error().to_string()
    /// # }
    /// ```
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The item that failed, if the stage kept it ([`Stage::keep_input`]) or handed
    /// it back in a [`Failed`], and it is of type `I`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(e: &servicekit::pipeline::StageError) {
    /// if let Some(line) = e.input::<String>() {
    ///     eprintln!("could not parse {line:?}: {}", e.error());
    /// }
    /// # }
    /// ```
    pub fn input<I: fmt::Debug + Send + Sync + 'static>(&self) -> Option<&I> {
        Some(&self.error.downcast_ref::<Failed<I>>()?.input)
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage `{}` failed", self.stage)
    }
}

impl std::error::Error for StageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// Why [`Pipeline::run`] failed.
///
/// # Examples
///
/// ```
/// use servicekit::{Pipeline, pipeline::PipelineError, stage};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = Pipeline::from(futures::stream::iter([1u8]))
///     .via(stage("s", |n: u8| async move { Ok::<_, std::io::Error>(n) }).workers(0))
///     .run()
///     .await
///     .unwrap_err();
/// assert!(matches!(err, PipelineError::Config(_)));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The pipeline was built with an invalid setting; nothing ran.
    #[error("invalid pipeline: {0}")]
    Config(String),
    /// An item failed and there is no error sink: the pipeline stopped.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// The sink refused an item.
    #[error("the pipeline's sink failed")]
    Sink(#[source] BoxError),
}

/// Counts for one stage, in [`PipelineReport`].
///
/// # Examples
///
/// ```
/// # fn f(s: &servicekit::pipeline::StageReport) {
/// println!("{}: {} in, {} out, {} failed, busy {:?}", s.name, s.input, s.output, s.failed, s.busy);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageReport {
    /// The stage's name.
    pub name: String,
    /// Items that entered it.
    pub input: u64,
    /// Items it passed on.
    pub output: u64,
    /// Items that failed in it.
    pub failed: u64,
    /// Total time its workers spent on items (summed over workers).
    pub busy: Duration,
}

/// What a pipeline did, from [`Pipeline::run`].
///
/// # Examples
///
/// ```
/// # fn f(r: &servicekit::pipeline::PipelineReport) {
/// println!("{} items delivered", r.delivered);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineReport {
    /// Per stage, in order.
    pub stages: Vec<StageReport>,
    /// Items handed to the sink.
    pub delivered: u64,
}

/// Where a pipeline's results (or errors) go: a [`Queue`], a [`Channel`], or an async
/// closure `FnMut(T) -> impl Future<Output = ()>`.
///
/// # Examples
///
/// ```
/// use servicekit::{pipeline::PipelineSink, Queue};
/// fn takes_sink<S: PipelineSink<u32>>(s: S) -> S { s }
/// let q = takes_sink(Queue::<u32>::unbounded());
/// # drop(q);
/// ```
pub trait PipelineSink<T>: Send + 'static {
    /// Delivers one item.
    fn put(&mut self, item: T) -> BoxFuture<'_, Result<(), BoxError>>;
    /// Called once the pipeline has drained: closes a queue or channel.
    fn finish(&mut self) {}
}

impl<T: Send + 'static> PipelineSink<T> for Queue<T> {
    fn put(&mut self, item: T) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move { self.send(item).await.map_err(|e| e.to_string().into()) })
    }

    fn finish(&mut self) {
        self.close();
    }
}

impl<T: Clone + Send + 'static> PipelineSink<T> for Channel<T> {
    fn put(&mut self, item: T) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move { self.send(item).await.map_err(|e| e.to_string().into()) })
    }

    fn finish(&mut self) {
        self.close();
    }
}

impl<T, F, Fut> PipelineSink<T> for F
where
    T: Send + 'static,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn put(&mut self, item: T) -> BoxFuture<'_, Result<(), BoxError>> {
        let fut = self(item);
        Box::pin(async move {
            fut.await;
            Ok(())
        })
    }
}

struct FromSink<S>(Pin<Box<S>>);

impl<T, S> PipelineSink<T> for FromSink<S>
where
    T: Send + 'static,
    S: Sink<T> + Send + 'static,
    S::Error: Into<BoxError>,
{
    fn put(&mut self, item: T) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move { self.0.send(item).await.map_err(Into::into) })
    }
}

#[derive(Default)]
struct Stats {
    input: AtomicU64,
    output: AtomicU64,
    failed: AtomicU64,
    busy_nanos: AtomicU64,
}

/// Shared by the stages of one pipeline: where failed items go.
#[derive(Default)]
struct Route {
    /// With an error sink, failed items are queued here and delivered by `run`.
    aside: Mutex<Vec<StageError>>,
    routed: std::sync::atomic::AtomicBool,
    first: Mutex<Option<StageError>>,
    failed: tokio::sync::Notify,
}

/// A multi-stage processing pipeline; see the [module docs](crate::pipeline).
///
/// # Examples
///
/// ```
/// use servicekit::{Pipeline, stage};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut seen = Vec::new();
/// let (tx, rx) = std::sync::mpsc::channel();
/// Pipeline::from(futures::stream::iter(["1", "x", "3"]))
///     .via(stage("parse", |s: &'static str| async move { s.parse::<u32>() }))
///     .to(move |n: u32| {
///         tx.send(n).unwrap();
///         async {}
///     })
///     .errors(|e: servicekit::pipeline::StageError| async move { eprintln!("{e}: {}", e.error()) })
///     .run()
///     .await
///     .unwrap();
/// seen.extend(rx.try_iter());
/// assert_eq!(seen, [1, 3]);
/// # }
/// ```
#[must_use = "a pipeline does nothing until `run` is awaited"]
pub struct Pipeline<T> {
    stream: BoxStream<'static, T>,
    /// One per stage: runs the stage and fills the queue to the next one.
    drivers: Vec<BoxFuture<'static, ()>>,
    stages: Vec<(String, Arc<Stats>)>,
    problems: Vec<String>,
    route: Arc<Route>,
    sink: Option<Box<dyn PipelineSink<T>>>,
    errors: Option<Box<dyn PipelineSink<StageError>>>,
}

impl<T> fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field(
                "stages",
                &self.stages.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Pipeline<T> {
    /// A pipeline reading from `source`.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = servicekit::Pipeline::from(futures::stream::iter(0..10));
    /// # drop(p);
    /// ```
    #[allow(clippy::should_implement_trait)]
    pub fn from<S>(source: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        Pipeline {
            stream: source.boxed(),
            drivers: Vec::new(),
            stages: Vec::new(),
            problems: Vec::new(),
            route: Arc::default(),
            sink: None,
            errors: None,
        }
    }

    /// Adds a stage.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Pipeline, stage};
    /// let p = Pipeline::from(futures::stream::iter(0..10u32))
    ///     .via(stage("square", |n: u32| async move { Ok::<_, std::io::Error>(n * n) }).workers(2));
    /// # drop(p);
    /// ```
    pub fn via<U, E, F, Fut>(self, stage: Stage<F>) -> Pipeline<U>
    where
        U: Send + 'static,
        E: Into<BoxError>,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<U, E>> + Send + 'static,
    {
        let Pipeline {
            stream,
            mut drivers,
            mut stages,
            mut problems,
            route,
            sink: _,
            errors,
        } = self;
        if stage.workers == 0 {
            problems.push(format!(
                "stage `{}`: workers must be at least 1",
                stage.name
            ));
        }
        if stage.buffer == 0 {
            problems.push(format!("stage `{}`: buffer must be at least 1", stage.name));
        }
        let name: Arc<str> = stage.name.as_str().into();
        let stats = Arc::new(Stats::default());
        stages.push((stage.name, stats.clone()));
        let f = Arc::new(stage.f);
        let (st, nm) = (stats.clone(), name.clone());
        let work = stream.map(move |item| {
            st.input.fetch_add(1, Ordering::Relaxed);
            let fut = f(item);
            let (st, nm) = (st.clone(), nm.clone());
            async move {
                let started = std::time::Instant::now();
                let out = fut.await;
                st.busy_nanos
                    .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                out.map_err(|e| {
                    st.failed.fetch_add(1, Ordering::Relaxed);
                    let e: BoxError = e.into();
                    StageError {
                        stage: nm,
                        error: Arc::from(e),
                    }
                })
            }
        });
        let workers = stage.workers.max(1);
        let results: BoxStream<'static, Result<U, StageError>> = if stage.ordered {
            work.buffered(workers).boxed()
        } else {
            work.buffer_unordered(workers).boxed()
        };
        let r = route.clone();
        let out = results.filter_map(move |res| {
            let r = r.clone();
            let st = stats.clone();
            async move {
                match res {
                    Ok(v) => {
                        st.output.fetch_add(1, Ordering::Relaxed);
                        Some(v)
                    }
                    Err(e) => {
                        if r.routed.load(Ordering::Relaxed) {
                            r.aside.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                        } else {
                            let mut first = r.first.lock().unwrap_or_else(|p| p.into_inner());
                            if first.is_none() {
                                *first = Some(e);
                                r.failed.notify_one();
                            }
                        }
                        None
                    }
                }
            }
        });
        // The stage runs as its own driver (a future of `run`, not a task) feeding a
        // bounded queue: it works ahead of the next stage by up to `buffer` items and
        // waits when the queue is full (backpressure).
        let queue = Queue::bounded(stage.buffer.max(1));
        let next = queue.receiver();
        drivers.push(Box::pin(async move {
            let mut out = std::pin::pin!(out);
            while let Some(v) = out.next().await {
                if queue.send(v).await.is_err() {
                    break;
                }
            }
            queue.close();
        }));
        Pipeline {
            stream: next.boxed(),
            drivers,
            stages,
            problems,
            route,
            sink: None,
            errors,
        }
    }

    /// Where results go (see [`PipelineSink`]). Without a sink, results are dropped
    /// (and still counted).
    ///
    /// # Examples
    ///
    /// ```
    /// let out = servicekit::Queue::unbounded();
    /// let p = servicekit::Pipeline::from(futures::stream::iter(0..3)).to(out.clone());
    /// # drop(p);
    /// ```
    pub fn to(mut self, sink: impl PipelineSink<T>) -> Self {
        self.sink = Some(Box::new(sink));
        self
    }

    /// Sends results into any `futures` [`Sink`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = futures::channel::mpsc::unbounded::<u32>();
    /// let p = servicekit::Pipeline::from(futures::stream::iter(0..3u32)).to_sink(tx);
    /// # drop(p);
    /// ```
    pub fn to_sink<S>(self, sink: S) -> Self
    where
        S: Sink<T> + Send + 'static,
        S::Error: Into<BoxError>,
    {
        self.to(FromSink(Box::pin(sink)))
    }

    /// Where failed items go: with an error sink, a failing item is reported there and
    /// the others flow on.
    ///
    /// # Examples
    ///
    /// ```
    /// let errors = servicekit::Queue::<servicekit::pipeline::StageError>::unbounded();
    /// let p = servicekit::Pipeline::from(futures::stream::iter(0..3)).errors(errors.clone());
    /// # drop(p);
    /// ```
    pub fn errors(mut self, sink: impl PipelineSink<StageError>) -> Self {
        self.errors = Some(Box::new(sink));
        self.route.routed.store(true, Ordering::Relaxed);
        self
    }

    /// Runs the pipeline until the source ends and every stage has drained (then the
    /// sink is closed), or until the first error when there is no error sink.
    ///
    /// # Errors
    ///
    /// [`PipelineError::Config`] before anything runs (a stage with 0 workers or a
    /// 0 buffer);
    /// [`PipelineError::Stage`] for the first failed item when there is no error
    /// sink; [`PipelineError::Sink`] if the sink refused an item (e.g. closed).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops every item in flight; nothing keeps running.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let report = servicekit::Pipeline::from(futures::stream::iter(0..3)).run().await.unwrap();
    /// assert_eq!(report.delivered, 3);
    /// # }
    /// ```
    pub async fn run(self) -> Result<PipelineReport, PipelineError> {
        let Pipeline {
            mut stream,
            drivers,
            stages,
            problems,
            route,
            mut sink,
            mut errors,
        } = self;
        if !problems.is_empty() {
            return Err(PipelineError::Config(problems.join("; ")));
        }
        let mut delivered = 0u64;
        let drive = async {
            while let Some(item) = stream.next().await {
                let aside: Vec<StageError> =
                    std::mem::take(&mut *route.aside.lock().unwrap_or_else(|p| p.into_inner()));
                if let Some(errors) = errors.as_mut() {
                    for e in aside {
                        errors.put(e).await.map_err(PipelineError::Sink)?;
                    }
                }
                if let Some(sink) = sink.as_mut() {
                    sink.put(item).await.map_err(PipelineError::Sink)?;
                }
                delivered += 1;
            }
            let aside: Vec<StageError> =
                std::mem::take(&mut *route.aside.lock().unwrap_or_else(|p| p.into_inner()));
            if let Some(errors) = errors.as_mut() {
                for e in aside {
                    errors.put(e).await.map_err(PipelineError::Sink)?;
                }
            }
            Ok::<(), PipelineError>(())
        };
        let result = tokio::select! {
            biased;
            () = route.failed.notified() => {
                let first = route.first.lock().unwrap_or_else(|p| p.into_inner()).take();
                Err(PipelineError::Stage(first.expect("notified after recording")))
            }
            (_, r) = futures::future::join(futures::future::join_all(drivers), drive) => r,
        };
        if let Some(sink) = sink.as_mut() {
            sink.finish();
        }
        if let Some(errors) = errors.as_mut() {
            errors.finish();
        }
        result?;
        Ok(PipelineReport {
            stages: stages
                .into_iter()
                .map(|(name, s)| StageReport {
                    name,
                    input: s.input.load(Ordering::Relaxed),
                    output: s.output.load(Ordering::Relaxed),
                    failed: s.failed.load(Ordering::Relaxed),
                    busy: Duration::from_nanos(s.busy_nanos.load(Ordering::Relaxed)),
                })
                .collect(),
            delivered,
        })
    }
}
