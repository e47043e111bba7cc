//! `Queue`: a work queue. Each item goes to exactly one receiver.
//!
//! Bounded or unbounded, many senders and many receivers. [`Queue::close`] (or dropping
//! every `Queue` handle) lets receivers drain what is queued, then they see
//! [`QueueClosed`]; senders get their item back.
//!
//! This wraps [`async-channel`](https://docs.rs/async-channel), which already has
//! exactly these semantics (drain on close, the value returned to the sender) and is
//! well kept; see `BENCHMARKS.md` for how it compares.
//!
//! ## Example
//!
//! ```
//! use servicekit::Queue;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let jobs = Queue::bounded(16);
//! let worker = jobs.receiver();
//! jobs.send("resize image").await.unwrap();
//! jobs.close();
//! assert_eq!(worker.recv().await, Ok("resize image"));
//! assert!(worker.recv().await.is_err()); // closed and drained
//! # }
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

/// The sending handle of a work queue; clone it for more senders. The queue closes
/// when every `Queue` handle is dropped.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let q = servicekit::Queue::unbounded();
/// let rx = q.receiver();
/// q.try_send(1).unwrap();
/// assert_eq!(rx.recv().await, Ok(1));
/// # }
/// ```
pub struct Queue<T> {
    tx: async_channel::Sender<T>,
    rx: async_channel::Receiver<T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("len", &self.tx.len())
            .field("capacity", &self.tx.capacity())
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

/// The error of [`Queue::send`]: the queue is closed; the item comes back.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let q = servicekit::Queue::bounded(1);
/// q.close();
/// assert_eq!(q.send(5).await.unwrap_err().into_inner(), 5);
/// # }
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct QueueSendError<T>(pub T);

impl<T> QueueSendError<T> {
    /// The item that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(servicekit::QueueSendError(1).into_inner(), 1);
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for QueueSendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QueueSendError(..)")
    }
}

impl<T> fmt::Display for QueueSendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue closed")
    }
}

impl<T> std::error::Error for QueueSendError<T> {}

/// The error of [`Queue::try_send`], with the item.
///
/// # Examples
///
/// ```
/// use servicekit::{Queue, QueueTrySendError};
/// let q = Queue::bounded(1);
/// q.try_send(1).unwrap();
/// assert!(matches!(q.try_send(2), Err(QueueTrySendError::Full(2))));
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum QueueTrySendError<T> {
    /// The queue is full.
    Full(T),
    /// The queue is closed.
    Closed(T),
}

impl<T> QueueTrySendError<T> {
    /// The item that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(servicekit::QueueTrySendError::Full(3).into_inner(), 3);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            QueueTrySendError::Full(t) | QueueTrySendError::Closed(t) => t,
        }
    }

    /// Whether the queue was full.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(servicekit::QueueTrySendError::Full(()).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, QueueTrySendError::Full(_))
    }
}

impl<T> fmt::Debug for QueueTrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueTrySendError::Full(_) => f.write_str("Full(..)"),
            QueueTrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for QueueTrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueTrySendError::Full(_) => "queue full",
            QueueTrySendError::Closed(_) => "queue closed",
        })
    }
}

impl<T> std::error::Error for QueueTrySendError<T> {}

/// The queue is closed and everything in it was received.
///
/// # Examples
///
/// ```
/// assert_eq!(servicekit::QueueClosed.to_string(), "queue closed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueClosed;

impl fmt::Display for QueueClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue closed")
    }
}

impl std::error::Error for QueueClosed {}

/// The error of [`QueueReceiver::try_recv`].
///
/// # Examples
///
/// ```
/// use servicekit::{Queue, QueueTryRecvError};
/// let q = Queue::<u8>::bounded(1);
/// assert_eq!(q.receiver().try_recv(), Err(QueueTryRecvError::Empty));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueTryRecvError {
    /// Nothing queued right now.
    Empty,
    /// Closed and drained.
    Closed,
}

impl fmt::Display for QueueTryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueTryRecvError::Empty => "queue empty",
            QueueTryRecvError::Closed => "queue closed",
        })
    }
}

impl std::error::Error for QueueTryRecvError {}

impl<T> Queue<T> {
    /// A queue holding at most `capacity` items.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = servicekit::Queue::<u32>::bounded(8);
    /// assert_eq!(q.capacity(), Some(8));
    /// ```
    pub fn bounded(capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "Queue::bounded: capacity must be greater than 0"
        );
        let (tx, rx) = async_channel::bounded(capacity);
        Queue { tx, rx }
    }

    /// A queue without a bound.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = servicekit::Queue::<u32>::unbounded();
    /// assert_eq!(q.capacity(), None);
    /// ```
    pub fn unbounded() -> Self {
        let (tx, rx) = async_channel::unbounded();
        Queue { tx, rx }
    }

    /// A receiver: each item goes to exactly one of the receivers.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = servicekit::Queue::<u32>::bounded(8);
    /// let (a, b) = (q.receiver(), q.receiver());
    /// # drop((a, b));
    /// ```
    pub fn receiver(&self) -> QueueReceiver<T> {
        QueueReceiver {
            rx: Box::pin(self.rx.clone()),
        }
    }

    /// Sends an item, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`QueueSendError`] with the item if the queue is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the item was not
    /// queued.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let q = servicekit::Queue::bounded(1);
    /// q.send(1).await.unwrap();
    /// assert_eq!(q.len(), 1);
    /// # }
    /// ```
    pub async fn send(&self, item: T) -> Result<(), QueueSendError<T>> {
        self.tx.send(item).await.map_err(|e| QueueSendError(e.0))
    }

    /// Sends without waiting.
    ///
    /// # Errors
    ///
    /// [`QueueTrySendError::Full`] or [`QueueTrySendError::Closed`], with the item.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = servicekit::Queue::bounded(1);
    /// assert!(q.try_send(1).is_ok());
    /// assert!(q.try_send(2).unwrap_err().is_full());
    /// ```
    pub fn try_send(&self, item: T) -> Result<(), QueueTrySendError<T>> {
        self.tx.try_send(item).map_err(|e| match e {
            async_channel::TrySendError::Full(t) => QueueTrySendError::Full(t),
            async_channel::TrySendError::Closed(t) => QueueTrySendError::Closed(t),
        })
    }

    /// Closes the queue: receivers drain what is queued, then see [`QueueClosed`];
    /// sends fail. Returns `false` if it was already closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = servicekit::Queue::<u8>::bounded(1);
    /// assert!(q.close());
    /// assert!(q.is_closed());
    /// ```
    pub fn close(&self) -> bool {
        self.tx.close()
    }

    /// Whether the queue is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!servicekit::Queue::<u8>::bounded(1).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// How many items are queued.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = servicekit::Queue::bounded(4);
    /// q.try_send(1).unwrap();
    /// assert_eq!(q.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether nothing is queued.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(servicekit::Queue::<u8>::bounded(1).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// The bound, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(servicekit::Queue::<u8>::bounded(3).capacity(), Some(3));
    /// ```
    pub fn capacity(&self) -> Option<usize> {
        self.tx.capacity()
    }
}

/// The receiving side of a [`Queue`]: `recv`, `try_recv`, and a [`Stream`] that ends
/// when the queue is closed and drained. Clones share the queue (each item still goes
/// to one of them).
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let q = servicekit::Queue::unbounded();
/// let rx = q.receiver();
/// for i in 0..3 {
///     q.try_send(i).unwrap();
/// }
/// drop(q);
/// assert_eq!(rx.collect::<Vec<_>>().await, [0, 1, 2]);
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct QueueReceiver<T> {
    // Boxed: async-channel's receiver holds a listener and is not `Unpin`.
    rx: Pin<Box<async_channel::Receiver<T>>>,
}

impl<T> Clone for QueueReceiver<T> {
    fn clone(&self) -> Self {
        QueueReceiver {
            rx: Box::pin((*self.rx).clone()),
        }
    }
}

impl<T> fmt::Debug for QueueReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueReceiver")
            .field("len", &self.rx.len())
            .finish()
    }
}

impl<T> QueueReceiver<T> {
    /// Receives the next item, waiting for one.
    ///
    /// # Errors
    ///
    /// [`QueueClosed`] once the queue is closed and drained.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no item is lost if the future is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let q = servicekit::Queue::bounded(1);
    /// let rx = q.receiver();
    /// q.send(9).await.unwrap();
    /// assert_eq!(rx.recv().await, Ok(9));
    /// # }
    /// ```
    pub async fn recv(&self) -> Result<T, QueueClosed> {
        self.rx.recv().await.map_err(|_| QueueClosed)
    }

    /// Receives an item if one is queued.
    ///
    /// # Errors
    ///
    /// [`QueueTryRecvError::Empty`] or [`QueueTryRecvError::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = servicekit::Queue::bounded(1);
    /// let rx = q.receiver();
    /// q.try_send(1).unwrap();
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// ```
    pub fn try_recv(&self) -> Result<T, QueueTryRecvError> {
        self.rx.try_recv().map_err(|e| match e {
            async_channel::TryRecvError::Empty => QueueTryRecvError::Empty,
            async_channel::TryRecvError::Closed => QueueTryRecvError::Closed,
        })
    }
}

impl<T> Stream for QueueReceiver<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.as_mut().poll_next(cx)
    }
}
