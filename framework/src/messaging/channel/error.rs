//! The channel's errors.

use std::fmt;

#[cfg(doc)]
use super::{Channel, Customer, NoCustomers, Overflow};

/// The error of [`Channel::send`]: the message comes back.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ch = servicekit::Channel::bounded(1);
/// ch.close();
/// let err = ch.send(7).await.unwrap_err();
/// assert!(err.is_closed());
/// assert_eq!(err.into_inner(), 7);
/// # }
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum SendError<T> {
    /// The channel is closed.
    Closed(T),
    /// No customer is connected and the channel is set to [`NoCustomers::Fail`].
    NoCustomers(T),
}

impl<T> SendError<T> {
    /// The message that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = servicekit::channel::SendError::Closed(3);
    /// assert_eq!(e.into_inner(), 3);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(t) | SendError::NoCustomers(t) => t,
        }
    }

    /// Whether the channel was closed.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(servicekit::channel::SendError::Closed(()).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed(_))
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::NoCustomers(_) => f.write_str("NoCustomers(..)"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed(_) => "channel closed",
            SendError::NoCustomers(_) => "no customer connected",
        })
    }
}

impl<T> std::error::Error for SendError<T> {}

/// The error of [`Channel::try_send`]: why it would have waited, with the message.
///
/// # Examples
///
/// ```
/// use servicekit::{Channel, channel::TrySendError};
/// let ch = Channel::bounded(1);
/// let _c = ch.connect();
/// ch.try_send(1).unwrap();
/// let err = ch.try_send(2).unwrap_err();
/// assert!(err.is_full());
/// assert_eq!(err.into_inner(), 2);
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySendError<T> {
    /// A blocking customer's buffer is full.
    Full(T),
    /// No customer is connected.
    NoCustomers(T),
    /// The channel is closed.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The message that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(servicekit::channel::TrySendError::Full(1).into_inner(), 1);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(t) | TrySendError::NoCustomers(t) | TrySendError::Closed(t) => t,
        }
    }

    /// Whether a customer was full.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(servicekit::channel::TrySendError::Full(()).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }

    /// Whether the channel was closed.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(servicekit::channel::TrySendError::Closed(()).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, TrySendError::Closed(_))
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::NoCustomers(_) => f.write_str("NoCustomers(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "a customer's buffer is full",
            TrySendError::NoCustomers(_) => "no customer connected",
            TrySendError::Closed(_) => "channel closed",
        })
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// Why [`Customer::recv`] returned no message.
///
/// # Examples
///
/// ```
/// use servicekit::channel::RecvError;
/// assert_eq!(RecvError::Lagged(3).to_string(), "customer lagged behind: 3 messages dropped");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// The channel (or this customer) is closed and everything buffered was received.
    Closed,
    /// This [`Overflow::DropOldest`] customer lost this many messages since its last
    /// `recv`; the next `recv` continues with the oldest one kept.
    Lagged(u64),
    /// This [`Overflow::Disconnect`] customer was cut off for being too slow; it has
    /// received everything it had buffered.
    CutOff,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Closed => f.write_str("channel closed"),
            RecvError::Lagged(n) => write!(f, "customer lagged behind: {n} messages dropped"),
            RecvError::CutOff => f.write_str("customer cut off for being too slow"),
        }
    }
}

impl std::error::Error for RecvError {}

/// The error of [`Customer::try_recv`].
///
/// # Examples
///
/// ```
/// use servicekit::{Channel, channel::TryRecvError};
/// let ch = Channel::<u8>::bounded(1);
/// let mut c = ch.connect();
/// assert_eq!(c.try_recv(), Err(TryRecvError::Empty));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing buffered right now.
    Empty,
    /// As [`RecvError`].
    Recv(RecvError),
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("no message buffered"),
            TryRecvError::Recv(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TryRecvError {}
