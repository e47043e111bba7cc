//! `Queue`: a work queue. Each item goes to exactly one receiver.
//!
//! Bounded or unbounded, many senders and many receivers. [`Queue::close`] (or dropping
//! every `Queue` handle) lets receivers drain what is queued, then they see
//! [`RecvError`]; senders get their item back.
//!
//! ## How it works
//!
//! One `VecDeque` behind one short lock (released with a plain store; waiters spin,
//! then yield, then nap: see `BENCHMARKS.md`), and two first-come-first-served lists
//! of waiting tasks: receivers waiting for an item, senders waiting for room. Each
//! operation wakes at most one task: a send wakes a waiting receiver, a receive a
//! waiting sender. When a woken task has taken its item (or used its room) it wakes
//! the next one if there is still something for it, and a waiter woken but dropped
//! before it acted passes its turn on (both sides' turns, as it may hold the other
//! side's too). So no item and no free slot is ever left while every task waiting for
//! one sleeps and no woken task is left to act, and a busy queue does not wake a task
//! per item (a second wake-up per operation makes the runtime wake another worker,
//! and the tasks spread over every worker to fight over the lock).
//!
//! Memory: the items (`size_of::<T>()` each, in a ring that grows up to the bound),
//! plus a waker and an id (24 bytes) per waiting task.
//!
//! Why not wrap a peer crate: `async-channel` has these semantics but is slower
//! with several producers and consumers; `flume` has no explicit `close`; `kanal`'s
//! `close` discards what is queued. How fast it is, against those peers in the same
//! run, is in `BENCHMARKS.md` (`cargo bench -p servicekit --bench queue`), not here.
//!
//! Latency for the rest of the runtime: a waiter for the lock spins, then yields,
//! and only if the holder keeps it that long naps 20 µs between looks (`cargo bench
//! -p servicekit --bench queue -- --stalls` measures an unrelated task's longest wait
//! beside each queue).
//!
//! A woken waiter must be polled again or dropped for the next one to get its turn
//! (as with `async-channel`): do not keep a pending `recv()` or `send()` future, or a
//! `Receiver` polled as a `Stream`, alive without polling it again while other
//! tasks wait on the queue (dropping it is always fine).
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

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::sync::{Mutex, MutexGuard};
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
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Queue {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        let last = {
            let mut st = self.shared.lock();
            st.senders -= 1;
            st.senders == 0
        };
        if last {
            self.shared.close();
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The state every handle of one queue shares, behind one lock.
struct State<T> {
    items: VecDeque<T>,
    /// Items ever sent.
    sent: u64,
    /// The bound; `usize::MAX` when unbounded.
    cap: usize,
    closed: bool,
    /// Live `Queue` handles: the queue closes when the last one is dropped.
    senders: usize,
    recv_waiters: Waiters,
    send_waiters: Waiters,
}

/// Tasks waiting for an item (or for room), first come first served.
///
/// At most one waiter is notified at a time: the notified task, when it has taken
/// its item (or used its room), wakes the next one if there is still something for
/// it and nobody on the other side was woken by the same operation. Waking one task
/// per item instead makes the runtime spread a busy queue's tasks over every worker,
/// where they spend their time fighting over the lock (measured: 4 producers and 4
/// consumers ran 4× slower). A waiter's entry is removed when it
/// is notified, so a future whose entry is gone knows it was notified, and passes the
/// notification on if it is dropped without using it.
struct Waiters {
    list: VecDeque<(u64, Waker)>,
    next_id: u64,
    /// Waiters notified that have not polled since (0 or 1 while open).
    notified: usize,
}

impl Waiters {
    const fn new() -> Self {
        Waiters {
            list: VecDeque::new(),
            next_id: 0,
            notified: 0,
        }
    }

    /// Registers (or refreshes) the waiter `slot` with `waker`.
    fn register(&mut self, slot: &mut Option<u64>, waker: &Waker) {
        if let Some(id) = *slot {
            if let Some(entry) = self.list.iter_mut().find(|(i, _)| *i == id) {
                if !entry.1.will_wake(waker) {
                    entry.1 = waker.clone();
                }
                return;
            }
            // Notified, and polled again without success: back in line.
            self.notified = self.notified.saturating_sub(1);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.list.push_back((id, waker.clone()));
        *slot = Some(id);
    }

    /// Forgets the waiter `slot`; returns `true` if it had been notified (its entry
    /// was already taken by a wake-up).
    #[inline]
    fn remove(&mut self, slot: &mut Option<u64>) -> bool {
        match slot.take() {
            None => false,
            Some(id) => self.remove_id(id),
        }
    }

    #[cold]
    fn remove_id(&mut self, id: u64) -> bool {
        match self.list.iter().position(|(i, _)| *i == id) {
            Some(pos) => {
                self.list.remove(pos);
                false
            }
            None => {
                self.notified = self.notified.saturating_sub(1);
                true
            }
        }
    }

    /// The next waiter to wake, unless one is already notified.
    #[inline]
    fn notify_one(&mut self) -> Option<Waker> {
        if self.notified > 0 || self.list.is_empty() {
            return None;
        }
        let (_, waker) = self.list.pop_front()?;
        self.notified = 1;
        Some(waker)
    }

    fn take_all(&mut self) -> impl Iterator<Item = Waker> + use<> {
        self.notified = 0;
        std::mem::take(&mut self.list).into_iter().map(|(_, w)| w)
    }
}

#[inline]
fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// The bound, readable without the lock.
    cap: Option<usize>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock()
    }

    fn close(&self) -> bool {
        let (recv, send) = {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            st.closed = true;
            (st.recv_waiters.take_all(), st.send_waiters.take_all())
        };
        recv.chain(send).for_each(Waker::wake);
        true
    }

    /// One attempt to send; on `Full`, registers `slot` to be woken when room frees
    /// up (if `cx` is given).
    #[inline]
    fn try_send(
        &self,
        item: T,
        slot: &mut Option<u64>,
        cx: Option<&Context<'_>>,
    ) -> Result<(), TrySendError<T>> {
        let mut st = self.lock();
        if st.closed {
            st.send_waiters.remove(slot);
            return Err(TrySendError::Closed(item));
        }
        if st.items.len() >= st.cap {
            if let Some(cx) = cx {
                st.send_waiters.register(slot, cx.waker());
            }
            return Err(TrySendError::Full(item));
        }
        let was_notified = st.send_waiters.remove(slot);
        st.items.push_back(item);
        st.sent += 1;
        // One wake-up per operation at most (a second one makes the runtime wake
        // another worker): a receiver for the new item, else the turn of the next
        // waiting sender if there is room for it too. A woken receiver passes the
        // senders' turn on when it takes an item, or when it is dropped.
        let next = match st.recv_waiters.notify_one() {
            Some(receiver) => Some(receiver),
            None if was_notified && st.items.len() < st.cap => st.send_waiters.notify_one(),
            None => None,
        };
        drop(st);
        wake(next);
        Ok(())
    }

    /// One attempt to receive; on `Empty`, registers `slot` to be woken when an
    /// item arrives (if `cx` is given).
    #[inline]
    fn try_recv(
        &self,
        slot: &mut Option<u64>,
        cx: Option<&Context<'_>>,
    ) -> Result<T, TryRecvError> {
        let mut st = self.lock();
        let Some(item) = st.items.pop_front() else {
            if st.closed {
                st.recv_waiters.remove(slot);
                return Err(TryRecvError::Closed);
            }
            if let Some(cx) = cx {
                st.recv_waiters.register(slot, cx.waker());
            }
            return Err(TryRecvError::Empty);
        };
        let was_notified = st.recv_waiters.remove(slot);
        // As in `try_send`: a sender for the freed room, else the next receiver's
        // turn if there is an item for it too.
        let next = match st.send_waiters.notify_one() {
            Some(sender) => Some(sender),
            None if was_notified && !st.items.is_empty() => st.recv_waiters.notify_one(),
            None => None,
        };
        drop(st);
        wake(next);
        Ok(item)
    }

    /// A waiting receiver gives up: forget it, and if it had been woken, pass on the
    /// turns it may hold.
    #[inline]
    fn cancel_recv(&self, slot: &mut Option<u64>) {
        if slot.is_some() {
            self.cancel_waiter(slot, |st| &mut st.recv_waiters);
        }
    }

    /// A waiting sender gives up: forget it, and if it had been woken, pass on the
    /// turns it may hold.
    #[inline]
    fn cancel_send(&self, slot: &mut Option<u64>) {
        if slot.is_some() {
            self.cancel_waiter(slot, |st| &mut st.send_waiters);
        }
    }

    /// Removes the waiter `slot` from its list. One that had been woken may hold its
    /// own side's turn and, with one wake-up per operation (see `try_send`), the other
    /// side's too: both are passed on if there is something for them.
    #[cold]
    fn cancel_waiter(&self, slot: &mut Option<u64>, list: fn(&mut State<T>) -> &mut Waiters) {
        let mut st = self.lock();
        let mut turns = [None, None];
        if list(&mut st).remove(slot) {
            if !st.items.is_empty() {
                turns[0] = st.recv_waiters.notify_one();
            }
            if !st.closed && st.items.len() < st.cap {
                turns[1] = st.send_waiters.notify_one();
            }
        }
        drop(st);
        turns.into_iter().for_each(wake);
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
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// The item that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(servicekit::queue::SendError(1).into_inner(), 1);
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue closed")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// The error of [`Queue::try_send`], with the item.
///
/// # Examples
///
/// ```
/// use servicekit::{Queue, queue::TrySendError};
/// let q = Queue::bounded(1);
/// q.try_send(1).unwrap();
/// assert!(matches!(q.try_send(2), Err(TrySendError::Full(2))));
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySendError<T> {
    /// The queue is full.
    Full(T),
    /// The queue is closed.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The item that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(servicekit::queue::TrySendError::Full(3).into_inner(), 3);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(t) | TrySendError::Closed(t) => t,
        }
    }

    /// Whether the queue was full.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(servicekit::queue::TrySendError::Full(()).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "queue full",
            TrySendError::Closed(_) => "queue closed",
        })
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// The queue is closed and everything in it was received.
///
/// # Examples
///
/// ```
/// assert_eq!(servicekit::queue::RecvError.to_string(), "queue closed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue closed")
    }
}

impl std::error::Error for RecvError {}

/// The error of [`Receiver::try_recv`].
///
/// # Examples
///
/// ```
/// use servicekit::{Queue, queue::TryRecvError};
/// let q = Queue::<u8>::bounded(1);
/// assert_eq!(q.receiver().try_recv(), Err(TryRecvError::Empty));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued right now.
    Empty,
    /// Closed and drained.
    Closed,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryRecvError::Empty => "queue empty",
            TryRecvError::Closed => "queue closed",
        })
    }
}

impl std::error::Error for TryRecvError {}

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
        Self::with_cap(Some(capacity))
    }

    fn with_cap(cap: Option<usize>) -> Self {
        Queue {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    items: VecDeque::new(),
                    sent: 0,
                    cap: cap.unwrap_or(usize::MAX),
                    closed: false,
                    senders: 1,
                    recv_waiters: Waiters::new(),
                    send_waiters: Waiters::new(),
                }),
                cap,
            }),
        }
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
        Self::with_cap(None)
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
    pub fn receiver(&self) -> Receiver<T> {
        Receiver {
            shared: self.shared.clone(),
            slot: None,
        }
    }

    /// Sends an item, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the item if the queue is closed.
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
    pub async fn send(&self, item: T) -> Result<(), SendError<T>> {
        SendFut {
            shared: &self.shared,
            item: Some(item),
            slot: None,
        }
        .await
    }

    /// Sends without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], with the item.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = servicekit::Queue::bounded(1);
    /// assert!(q.try_send(1).is_ok());
    /// assert!(q.try_send(2).unwrap_err().is_full());
    /// ```
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.shared.try_send(item, &mut None, None)
    }

    /// Closes the queue: receivers drain what is queued, then see [`RecvError`];
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
        self.shared.close()
    }

    /// Whether the queue is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!servicekit::Queue::<u8>::bounded(1).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
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
        self.shared.lock().items.len()
    }

    /// Whether nothing is queued.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(servicekit::Queue::<u8>::bounded(1).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }

    /// The bound, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(servicekit::Queue::<u8>::bounded(3).capacity(), Some(3));
    /// ```
    pub fn capacity(&self) -> Option<usize> {
        self.shared.cap
    }

    /// A snapshot of the queue's load, for a metrics scrape.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = servicekit::Queue::bounded(4);
    /// let rx = q.receiver();
    /// q.try_send(1).unwrap();
    /// q.try_send(2).unwrap();
    /// rx.try_recv().unwrap();
    /// let stats = q.stats();
    /// assert_eq!((stats.depth, stats.sent, stats.capacity), (1, 2, Some(4)));
    /// ```
    pub fn stats(&self) -> QueueStats {
        let st = self.shared.lock();
        QueueStats {
            depth: st.items.len(),
            sent: st.sent,
            capacity: self.shared.cap,
            closed: st.closed,
        }
    }
}

/// A snapshot of a [`Queue`]'s load, from [`Queue::stats`].
///
/// # Examples
///
/// ```
/// let stats = servicekit::Queue::<u8>::unbounded().stats();
/// assert_eq!((stats.depth, stats.capacity), (0, None));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueStats {
    /// Items waiting for a receiver.
    pub depth: usize,
    /// Items sent since the queue was made.
    pub sent: u64,
    /// The bound, if any.
    pub capacity: Option<usize>,
    /// Whether the queue is closed.
    pub closed: bool,
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
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// This receiver's place among the waiters while it is polled as a `Stream`.
    slot: Option<u64>,
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver {
            shared: self.shared.clone(),
            slot: None,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.cancel_recv(&mut self.slot);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("len", &self.shared.lock().items.len())
            .finish()
    }
}

impl<T> Receiver<T> {
    /// Receives the next item, waiting for one.
    ///
    /// # Errors
    ///
    /// [`RecvError`] once the queue is closed and drained.
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
    pub async fn recv(&self) -> Result<T, RecvError> {
        RecvFut {
            shared: &self.shared,
            slot: None,
        }
        .await
    }

    /// Receives an item if one is queued.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] or [`TryRecvError::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = servicekit::Queue::bounded(1);
    /// let rx = q.receiver();
    /// q.try_send(1).unwrap();
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// ```
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.shared.try_recv(&mut None, None)
    }
}

impl<T> Stream for Receiver<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        match this.shared.try_recv(&mut this.slot, Some(cx)) {
            Ok(item) => Poll::Ready(Some(item)),
            Err(TryRecvError::Closed) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }
}

/// The future of [`Queue::send`].
struct SendFut<'a, T> {
    shared: &'a Shared<T>,
    item: Option<T>,
    slot: Option<u64>,
}

// The item is moved in and out by value and never pinned.
impl<T> Unpin for SendFut<'_, T> {}

impl<T> Future for SendFut<'_, T> {
    type Output = Result<(), SendError<T>>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let item = this.item.take().expect("SendFut polled after completion");
        match this.shared.try_send(item, &mut this.slot, Some(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(TrySendError::Closed(item)) => Poll::Ready(Err(SendError(item))),
            Err(TrySendError::Full(item)) => {
                this.item = Some(item);
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for SendFut<'_, T> {
    fn drop(&mut self) {
        self.shared.cancel_send(&mut self.slot);
    }
}

/// The future of [`Receiver::recv`].
struct RecvFut<'a, T> {
    shared: &'a Shared<T>,
    slot: Option<u64>,
}

impl<T> Future for RecvFut<'_, T> {
    type Output = Result<T, RecvError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match this.shared.try_recv(&mut this.slot, Some(cx)) {
            Ok(item) => Poll::Ready(Ok(item)),
            Err(TryRecvError::Closed) => Poll::Ready(Err(RecvError)),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }
}

impl<T> Drop for RecvFut<'_, T> {
    fn drop(&mut self) {
        self.shared.cancel_recv(&mut self.slot);
    }
}
