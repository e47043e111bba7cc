//! The implicit context: the current [`scope`](super::scope)'s bus, state and tasks,
//! reachable from anywhere inside it without a handle.
//!
//! Every function here works inside a scope (and inside tasks spawned with
//! [`spawn`], and inside services, which run in their runner's scope) and returns
//! [`NoScope`] (or [`StateError::NoScope`]) outside one; none of them panics for
//! lack of a scope.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use servicekit::bus::{self, ctx};
//!
//! struct Audit(&'static str);
//!
//! fn deep_in_the_call_stack() {
//!     // No handle passed down: the scope's bus is found through the task.
//!     ctx::send(Audit("password changed")).unwrap();
//! }
//!
//! bus::scope("app", async {
//!     let mut audit = ctx::subscribe::<Audit>().unwrap();
//!     deep_in_the_call_stack();
//!     assert_eq!(audit.try_recv().unwrap().0, "password changed");
//! })
//! .await;
//! assert_eq!(ctx::send(Audit("outside")), Err(servicekit::bus::NoScope));
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::scope::CURRENT;
use super::{EventBus, NoScope, StateError, Subscription};

/// Sends `event` on the current scope's bus ([`EventBus::send`]).
///
/// # Errors
///
/// [`NoScope`] outside every scope (the event is dropped).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use servicekit::bus::{self, ctx};
/// bus::scope("app", async {
///     let mut sub = ctx::subscribe::<u32>().unwrap();
///     ctx::send(42u32).unwrap();
///     assert_eq!(*sub.try_recv().unwrap(), 42);
/// })
/// .await;
/// # }
/// ```
pub fn send<E: Send + Sync + 'static>(event: E) -> Result<(), NoScope> {
    CURRENT
        .try_with(|frame| frame.bus.send(event))
        .map_err(|_| NoScope)
}

/// Subscribes to events of type `E` on the current scope's bus
/// ([`EventBus::subscribe`]).
///
/// # Errors
///
/// [`NoScope`] outside every scope.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use servicekit::bus::{self, ctx};
/// bus::scope("app", async {
///     let sub = ctx::subscribe::<String>().unwrap();
///     assert_eq!(ctx::bus().unwrap().subscriber_count::<String>(), 1);
///     # drop(sub);
/// })
/// .await;
/// # }
/// ```
pub fn subscribe<E: Send + Sync + 'static>() -> Result<Subscription<E>, NoScope> {
    CURRENT
        .try_with(|frame| frame.bus.subscribe())
        .map_err(|_| NoScope)
}

/// The current scope's bus, for what the functions here do not cover
/// ([`EventBus::send_async`], [`EventBus::request`], ...).
///
/// # Errors
///
/// [`NoScope`] outside every scope.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use servicekit::bus::{self, ctx};
/// bus::scope("app", async {
///     let bus = ctx::bus().unwrap();
///     bus.send_async(1u8).await;
/// })
/// .await;
/// # }
/// ```
pub fn bus() -> Result<EventBus, NoScope> {
    CURRENT
        .try_with(|frame| frame.bus.clone())
        .map_err(|_| NoScope)
}

/// The current scope's name.
///
/// # Errors
///
/// [`NoScope`] outside every scope.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use servicekit::bus::{self, ctx};
/// bus::scope("outer", async {
///     bus::scope("inner", async { assert_eq!(&*ctx::name().unwrap(), "inner") }).await;
///     assert_eq!(&*ctx::name().unwrap(), "outer");
/// })
/// .await;
/// # }
/// ```
pub fn name() -> Result<Arc<str>, NoScope> {
    CURRENT
        .try_with(|frame| frame.name.clone())
        .map_err(|_| NoScope)
}

/// The nearest value of type `T` in the current scope's state or its parents'
/// ([`Scope::with_state`](super::Scope::with_state)). Values are immutable: to change
/// one for a part of the program, run that part in a nested scope with a modified
/// copy.
///
/// # Errors
///
/// [`StateError::NoScope`] outside every scope; [`StateError::Missing`] if no scope
/// from here up carries a `T`.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use servicekit::bus::{self, ctx};
///
/// #[derive(Clone)]
/// struct Limits {
///     max_items: usize,
/// }
///
/// bus::scope("app", async {
///     let limits = ctx::state::<Limits>().unwrap();
///     assert_eq!(limits.max_items, 100);
/// })
/// .with_state(Limits { max_items: 100 })
/// .await;
/// # }
/// ```
pub fn state<T: Send + Sync + 'static>() -> Result<Arc<T>, StateError> {
    CURRENT
        .try_with(|frame| {
            frame.state::<T>().ok_or_else(|| StateError::Missing {
                type_name: std::any::type_name::<T>(),
                scope: frame.name.to_string(),
            })
        })
        .map_err(|_| StateError::NoScope)?
}

/// Spawns `fut` as a task of the current scope, inside it: `ctx` works in it, the
/// scope waits for it when it ends (up to its
/// [`join_timeout`](super::Scope::join_timeout)) and aborts it after that.
///
/// A panic in the task ends that task only (its [`JoinHandle`] reports it); the scope
/// and its bus go on.
///
/// # Errors
///
/// [`NoScope`] outside every scope (nothing is spawned).
///
/// # Panics
///
/// Panics outside a tokio runtime, like [`tokio::spawn`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use servicekit::bus::{self, ctx};
/// let name = bus::scope("app", async {
///     ctx::spawn(async { ctx::name().unwrap() }).unwrap().await.unwrap()
/// })
/// .await;
/// assert_eq!(&*name, "app");
/// # }
/// ```
pub fn spawn<F>(fut: F) -> Result<JoinHandle<F::Output>, NoScope>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let frame = CURRENT.try_with(Arc::clone).map_err(|_| NoScope)?;
    Ok(frame.spawn(fut))
}
