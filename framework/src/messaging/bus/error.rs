//! The bus's errors.

use std::fmt;
use std::time::Duration;

#[cfg(doc)]
use super::{EventBus, Overflow, Subscription};

/// Why [`Subscription::recv`] returned no event.
///
/// # Examples
///
/// ```
/// use servicekit::bus::RecvError;
/// assert_eq!(RecvError::Lagged(3).to_string(), "subscription lagged behind: 3 events dropped");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// The bus is closed (or its scope ended) and every event the subscription held
    /// was received.
    Closed,
    /// This [`Overflow::DropOldest`] subscription lost this many events since its
    /// last `recv`; the next `recv` continues with the oldest one kept.
    Lagged(u64),
    /// This [`Overflow::Disconnect`] subscription was cut off for being too slow; it
    /// has received everything it held.
    CutOff,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Closed => f.write_str("event bus closed"),
            RecvError::Lagged(n) => write!(f, "subscription lagged behind: {n} events dropped"),
            RecvError::CutOff => f.write_str("subscription cut off for being too slow"),
        }
    }
}

impl std::error::Error for RecvError {}

/// The error of [`Subscription::try_recv`].
///
/// # Examples
///
/// ```
/// use servicekit::bus::{EventBus, TryRecvError};
/// let bus = EventBus::new();
/// let mut sub = bus.subscribe::<u8>();
/// assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
/// bus.close();
/// assert_eq!(sub.try_recv(), Err(TryRecvError::Closed));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing to receive right now.
    Empty,
    /// As [`RecvError::Closed`].
    Closed,
    /// As [`RecvError::Lagged`].
    Lagged(u64),
    /// As [`RecvError::CutOff`].
    CutOff,
}

impl From<RecvError> for TryRecvError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Closed => TryRecvError::Closed,
            RecvError::Lagged(n) => TryRecvError::Lagged(n),
            RecvError::CutOff => TryRecvError::CutOff,
        }
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("no event to receive"),
            TryRecvError::Closed => RecvError::Closed.fmt(f),
            TryRecvError::Lagged(n) => RecvError::Lagged(*n).fmt(f),
            TryRecvError::CutOff => RecvError::CutOff.fmt(f),
        }
    }
}

impl std::error::Error for TryRecvError {}

/// A `bus::ctx` function was called outside every [`scope`](super::scope).
///
/// # Examples
///
/// ```
/// use servicekit::bus::{ctx, NoScope};
/// assert_eq!(ctx::send(1u8), Err(NoScope));
/// assert_eq!(NoScope.to_string(), "not inside a bus scope (see `servicekit::bus::scope`)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoScope;

impl fmt::Display for NoScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not inside a bus scope (see `servicekit::bus::scope`)")
    }
}

impl std::error::Error for NoScope {}

/// Why [`ctx::state`](super::ctx::state) found no value.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use servicekit::bus::{self, ctx, StateError};
/// assert_eq!(ctx::state::<u32>().unwrap_err(), StateError::NoScope);
/// bus::scope("app", async {
///     let missing = ctx::state::<u32>().unwrap_err();
///     assert_eq!(missing.to_string(), "no state of type `u32` in scope `app` or its parents");
/// })
/// .await;
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// Called outside every scope.
    NoScope,
    /// No scope from the current one up carries a value of this type.
    Missing {
        /// The type asked for.
        type_name: &'static str,
        /// The scope it was asked in.
        scope: String,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::NoScope => NoScope.fmt(f),
            StateError::Missing { type_name, scope } => write!(
                f,
                "no state of type `{type_name}` in scope `{scope}` or its parents"
            ),
        }
    }
}

impl std::error::Error for StateError {}

impl From<NoScope> for StateError {
    fn from(_: NoScope) -> Self {
        StateError::NoScope
    }
}

/// Why [`EventBus::request`] got no response.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use servicekit::bus::{EventBus, RequestError};
/// struct Ping;
/// #[derive(Debug)]
/// struct Pong;
/// let bus = EventBus::new();
/// let err = bus.request::<Ping, Pong>(Ping, |_| true, Duration::from_secs(1)).await.unwrap_err();
/// assert!(matches!(err, RequestError::NoResponder { .. }));
/// assert!(err.to_string().contains("Ping"));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Nobody was subscribed to the request's type when it was sent.
    NoResponder {
        /// The request's type.
        request: &'static str,
    },
    /// No matching response arrived in time.
    Timeout {
        /// The request's type.
        request: &'static str,
        /// How long the request waited.
        after: Duration,
    },
    /// The bus closed before a matching response arrived.
    Closed {
        /// The request's type.
        request: &'static str,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NoResponder { request } => {
                write!(f, "no subscriber for request `{request}`")
            }
            RequestError::Timeout { request, after } => {
                write!(f, "request `{request}` got no response within {after:?}")
            }
            RequestError::Closed { request } => {
                write!(
                    f,
                    "event bus closed before request `{request}` got a response"
                )
            }
        }
    }
}

impl std::error::Error for RequestError {}
