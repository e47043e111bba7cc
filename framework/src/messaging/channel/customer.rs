//! The receiving side of a channel.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

#[cfg(doc)]
use super::Channel;
use super::ring::{BATCH, Cursor, Shared, lag_floor};
use super::{Overflow, RecvError, TryRecvError};
use crate::sync::{Arc, Ordering};

/// One receiver of a [`Channel`], with its own buffer.
///
/// It receives every message sent after it connected, in order (on a channel that
/// keeps messages for late customers, the kept ones first). It is a
/// [`Stream`] of `Result<T, RecvError>` that ends when the channel is closed.
/// Dropping it disconnects it.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ch = servicekit::Channel::unbounded();
/// let customer = ch.connect();
/// for i in 0..3 {
///     ch.try_send(i).unwrap();
/// }
/// ch.close();
/// let all: Vec<_> = customer.map(Result::unwrap).collect().await;
/// assert_eq!(all, [0, 1, 2]);
/// # }
/// ```
pub struct Customer<T> {
    shared: Arc<Shared<T>>,
    slot: usize,
    id: u64,
    batching: bool,
    /// The bound of a `DropOldest` customer, which works out its own losses (see
    /// [`lag_floor`]).
    drop_cap: Option<usize>,
    /// Messages cloned from the ring but not received yet (sequence numbers
    /// `cursor .. cursor + local.len()`); they still count against the bound.
    local: VecDeque<T>,
    /// Sequence number of the next message to hand out, and whether a sender waits
    /// on this customer (shared with the channel; see [`Cursor`]).
    cursor: Arc<Cursor>,
    /// Closed, disconnected or cut off and fully drained.
    done: bool,
}

impl<T> fmt::Debug for Customer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Customer")
            .field("id", &self.id)
            .field("local", &self.local.len())
            .field("done", &self.done)
            .finish()
    }
}

impl<T> Customer<T> {
    /// Connects a new customer to the channel of `shared`.
    pub(super) fn attach(
        shared: &Arc<Shared<T>>,
        capacity: Option<usize>,
        overflow: Overflow,
    ) -> Self {
        let (slot, id, cursor) = shared.connect(capacity, overflow);
        Customer {
            shared: shared.clone(),
            slot,
            id,
            batching: overflow != Overflow::Disconnect,
            drop_cap: capacity.filter(|_| overflow == Overflow::DropOldest),
            local: VecDeque::new(),
            cursor,
            done: false,
        }
    }
}

impl<T> Drop for Customer<T> {
    fn drop(&mut self) {
        self.shared.disconnect(self.slot, self.id);
    }
}

impl<T: Clone> Customer<T> {
    /// Receives the next message, waiting for one.
    ///
    /// # Errors
    ///
    /// [`RecvError::Closed`] once the channel (or this customer) is closed and
    /// everything buffered was received; [`RecvError::Lagged`] and
    /// [`RecvError::CutOff`] for the overflow policies.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no message is lost if the future is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ch = servicekit::Channel::bounded(2);
    /// let mut c = ch.connect();
    /// ch.send("hi").await.unwrap();
    /// assert_eq!(c.recv().await, Ok("hi"));
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Receives a message if one is buffered.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when nothing is buffered; otherwise as
    /// [`recv`](Customer::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::bounded(2);
    /// let mut c = ch.connect();
    /// ch.try_send(5).unwrap();
    /// assert_eq!(c.try_recv(), Ok(5));
    /// ```
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        match self.take(None) {
            Poll::Ready(Ok(t)) => Ok(t),
            Poll::Ready(Err(e)) => Err(TryRecvError::Recv(e)),
            Poll::Pending => Err(TryRecvError::Empty),
        }
    }

    /// Polls for the next message (what [`recv`](Customer::recv) and the `Stream`
    /// implementation use).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ch = servicekit::Channel::bounded(2);
    /// let mut c = ch.connect();
    /// ch.try_send(1).unwrap();
    /// let got = std::future::poll_fn(|cx| c.poll_recv(cx)).await;
    /// assert_eq!(got, Ok(1));
    /// # }
    /// ```
    #[inline]
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, RecvError>> {
        self.take(Some(cx))
    }

    /// The hot path, inlined into `recv` / `poll_recv` / `try_recv`: a receive from
    /// the local batch is one atomic increment.
    #[inline]
    fn take(&mut self, cx: Option<&Context<'_>>) -> Poll<Result<T, RecvError>> {
        if let Some(cap) = self.drop_cap
            && !self.done
            && let Some(lost) = self.lost(cap)
        {
            return Poll::Ready(Err(RecvError::Lagged(lost)));
        }
        if let Some(t) = self.local.pop_front() {
            // A sender parked on this customer is released at the first receive that
            // gives it room: waiting for a run of receives would be cheaper, but would
            // leave a sender asleep while there is room, if the customer then waits
            // for that sender.
            if self.cursor.advance() {
                self.release_sender();
            }
            return Poll::Ready(Ok(t));
        }
        self.take_shared(cx)
    }

    /// For a `DropOldest` customer: how many messages it lost since it last looked,
    /// if any. They are skipped (dropped from its batch, or passed over in the ring).
    #[inline]
    fn lost(&mut self, cap: usize) -> Option<u64> {
        let floor = lag_floor(self.shared.tail.load(Ordering::Acquire), cap);
        let pos = self.cursor.pos();
        if pos >= floor {
            return None;
        }
        let lost = floor - pos;
        self.shared.lagged.fetch_add(lost, Ordering::Relaxed);
        let in_batch = (lost as usize).min(self.local.len());
        self.local.drain(..in_batch);
        if self.cursor.advance_by(lost) {
            self.release_sender();
        }
        Some(lost)
    }

    #[cold]
    #[inline(never)]
    fn release_sender(&self) {
        self.shared.lock().release(&self.cursor);
    }

    /// Takes the next batch from the shared ring, or registers to be woken.
    #[inline(never)]
    fn take_shared(&mut self, cx: Option<&Context<'_>>) -> Poll<Result<T, RecvError>> {
        if self.done {
            return Poll::Ready(Err(RecvError::Closed));
        }
        let mut inner = self.shared.lock();
        let closed = inner.closed;
        let head = inner.head;
        let tail = inner.tail();
        let Some(c) = inner.slots[self.slot].as_mut().filter(|c| c.id == self.id) else {
            self.done = true;
            return Poll::Ready(Err(RecvError::Closed));
        };
        if c.closed {
            drop(inner);
            self.done = true;
            self.shared.disconnect(self.slot, self.id);
            return Poll::Ready(Err(RecvError::Closed));
        }
        let end = c.cut_at.unwrap_or(tail);
        let pos = self.cursor.pos();
        if let Some(cap) = self.drop_cap
            && pos < lag_floor(tail, cap)
        {
            let lost = lag_floor(tail, cap) - pos;
            self.shared.lagged.fetch_add(lost, Ordering::Relaxed);
            self.cursor.advance_by(lost);
            inner.release(&self.cursor);
            return Poll::Ready(Err(RecvError::Lagged(lost)));
        }
        if pos >= end {
            if c.cut_at.is_some() {
                drop(inner);
                self.done = true;
                self.shared.disconnect(self.slot, self.id);
                return Poll::Ready(Err(RecvError::CutOff));
            }
            if closed {
                self.done = true;
                return Poll::Ready(Err(RecvError::Closed));
            }
            if let Some(cx) = cx {
                let first = c.waker.is_none();
                match &mut c.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                if first {
                    inner.recv_waiting.push(self.slot);
                }
            }
            return Poll::Pending;
        }
        let start = (pos - head) as usize;
        let take = if self.batching {
            ((end - pos) as usize).min(BATCH)
        } else {
            1
        };
        let first = inner.ring[start].clone();
        self.local
            .extend(inner.ring.range(start + 1..start + take).cloned());
        self.cursor.set_pos(pos + 1);
        inner.release(&self.cursor);
        Poll::Ready(Ok(first))
    }

    /// How many messages are waiting for this customer.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::bounded(4);
    /// let c = ch.connect();
    /// ch.try_send(1).unwrap();
    /// assert_eq!(c.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        let inner = self.shared.lock();
        match inner.slots[self.slot].as_ref().filter(|c| c.id == self.id) {
            Some(c) if !c.closed => {
                let end = c.cut_at.unwrap_or(inner.tail());
                let waiting = end.saturating_sub(self.cursor.pos()) as usize;
                self.drop_cap.map_or(waiting, |cap| waiting.min(cap))
            }
            _ => self.local.len(),
        }
    }

    /// Whether nothing is waiting for this customer.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(4);
    /// assert!(ch.connect().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything buffered for this customer; it stays connected.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::bounded(4);
    /// let mut c = ch.connect();
    /// ch.try_send(1).unwrap();
    /// c.reset();
    /// assert!(c.is_empty());
    /// ```
    pub fn reset(&mut self) {
        self.local.clear();
        let mut inner = self.shared.lock();
        let tail = inner.tail();
        if let Some(c) = inner.slots[self.slot].as_mut().filter(|c| c.id == self.id) {
            let end = c.cut_at.unwrap_or(tail);
            self.cursor.set_pos(end);
        }
        inner.release(&self.cursor);
        inner.trim();
        inner.wake_senders();
    }

    /// Disconnects this customer: its buffer is dropped, a sender waiting for it is
    /// released, and `recv` returns [`RecvError::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ch = servicekit::Channel::bounded(4);
    /// let mut c = ch.connect();
    /// ch.send(1).await.unwrap();
    /// c.close();
    /// assert_eq!(c.recv().await, Err(servicekit::channel::RecvError::Closed));
    /// assert_eq!(ch.customer_count(), 0);
    /// # }
    /// ```
    pub fn close(&mut self) {
        self.local.clear();
        self.done = true;
        self.shared.disconnect(self.slot, self.id);
    }

    /// A handle that closes this customer from another task, waking a `recv` that is
    /// waiting on it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ch = servicekit::Channel::<u8>::bounded(4);
    /// let mut c = ch.connect();
    /// let closer = c.closer();
    /// tokio::spawn(async move { closer.close() });
    /// assert_eq!(c.recv().await, Err(servicekit::channel::RecvError::Closed));
    /// # }
    /// ```
    pub fn closer(&self) -> CustomerCloser<T> {
        CustomerCloser {
            shared: self.shared.clone(),
            slot: self.slot,
            id: self.id,
        }
    }

    /// Connects another, independent customer to the same channel, with the channel's
    /// default settings. It receives messages sent from now on.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(4);
    /// let a = ch.connect();
    /// let b = a.connect();
    /// assert_eq!(ch.customer_count(), 2);
    /// # drop((a, b));
    /// ```
    pub fn connect(&self) -> Customer<T> {
        Customer::attach(&self.shared, self.shared.default_capacity, Overflow::Block)
    }

    /// Whether this customer will receive nothing more.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(4);
    /// let mut c = ch.connect();
    /// c.close();
    /// assert!(c.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        if self.done {
            return self.local.is_empty();
        }
        let inner = self.shared.lock();
        match inner.slots[self.slot].as_ref().filter(|c| c.id == self.id) {
            Some(c) => {
                c.closed || (inner.closed && self.cursor.pos() >= c.cut_at.unwrap_or(inner.tail()))
            }
            None => self.local.is_empty(),
        }
    }
}

impl<T: Clone> Stream for Customer<T> {
    type Item = Result<T, RecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.poll_recv(cx) {
            Poll::Ready(Err(RecvError::Closed)) => Poll::Ready(None),
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Unpin for Customer<T> {}

/// Closes a [`Customer`] from anywhere; from [`Customer::closer`].
///
/// # Examples
///
/// ```
/// let ch = servicekit::Channel::<u8>::bounded(4);
/// let c = ch.connect();
/// c.closer().close();
/// assert!(c.is_closed());
/// ```
pub struct CustomerCloser<T> {
    shared: Arc<Shared<T>>,
    slot: usize,
    id: u64,
}

impl<T> Clone for CustomerCloser<T> {
    fn clone(&self) -> Self {
        CustomerCloser {
            shared: self.shared.clone(),
            slot: self.slot,
            id: self.id,
        }
    }
}

impl<T> fmt::Debug for CustomerCloser<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomerCloser")
            .field("id", &self.id)
            .finish()
    }
}

impl<T> CustomerCloser<T> {
    /// Closes the customer: it stops holding back senders at once, and its `recv`
    /// returns [`RecvError::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(1);
    /// let c = ch.connect();
    /// let closer = c.closer();
    /// closer.close();
    /// # drop(c);
    /// ```
    pub fn close(&self) {
        let mut inner = self.shared.lock();
        if let Some(c) = inner.slots[self.slot].as_mut().filter(|c| c.id == self.id) {
            c.closed = true;
            let cursor = c.cursor.clone();
            inner.release(&cursor);
        }
        inner.wake_receivers();
        inner.trim();
        inner.wake_senders();
    }
}
