//! Broadcast `Channel` / `Customer`: lossless fan-out with backpressure.
//!
//! One message sent to a [`Channel`] reaches every [`Customer`] connected at that
//! moment. Each customer has its own buffer bound; the sender waits for the slowest.
//!
//! ## Backpressure
//!
//! A customer with a bounded buffer (`Channel::bounded(n)`, or
//! [`connect_with(n)`](Channel::connect_with)) holds at most `n` unread messages. While
//! any such customer with the default [`Overflow::Block`] policy is full,
//! [`send`](Channel::send) waits and [`try_send`](Channel::try_send) returns
//! [`TrySendError::Full`]. Unbounded customers never make the sender wait. By default a
//! send also waits while no customer is connected
//! ([`NoCustomers::Wait`]; [`NoCustomers::Fail`] returns the message instead).
//!
//! A waiting sender is parked on the customers that are full, and woken once: by the
//! receive that gives it room (the first receive of the last of them), never later,
//! and not by receives that cannot let it proceed. A customer publishes each receive
//! with one atomic increment, so a sender is never left asleep while there is room,
//! even if the customer stops receiving (for example because it waits for that
//! sender through another path).
//!
//! ## Overflow
//!
//! Instead of blocking the sender, a customer may choose
//! [`Overflow::DropOldest`]: its oldest unread message is dropped and its next
//! [`recv`](Customer::recv) reports [`RecvError::Lagged`] with how many it lost; or
//! [`Overflow::Disconnect`]: it is cut off, receives what it had buffered, then
//! [`RecvError::CutOff`]. Nothing is lost without the customer being told.
//!
//! ## Closing
//!
//! [`Channel::close`], or dropping every `Channel` handle, ends the stream: customers
//! receive what is buffered, then [`RecvError::Closed`]; senders get their message back
//! in [`SendError`]. [`Customer::close`] disconnects one customer (its buffer is dropped
//! and a waiting sender is released); [`Customer::closer`] does it from another task,
//! waking a `recv` that is waiting.
//!
//! ## Cancel safety
//!
//! Delivery is all-or-nothing: a message is committed to every customer in one step,
//! so a `send` future dropped before it completed delivered to nobody. `recv` is
//! cancel safe: a message is only taken when the future completes.
//!
//! ## Memory
//!
//! Each message is stored once, in one ring shared by all customers, however many
//! there are; it is cloned when a customer receives it (use `Arc<T>` for large
//! messages). A message stays in the ring until the slowest customer has read it.
//! Per customer: about 100 bytes of state, plus a local batch of up to
//! [`BATCH`] clones taken in one lock (blocking and unbounded customers only), which
//! still count against its bound until they are received.
//!
//! ## Locking
//!
//! The ring is guarded by a short lock that is released with a plain store (senders
//! take it once per message, a customer once per batch; waiters spin, then yield,
//! then nap, and are never parked waiting to be woken), and each customer publishes
//! its receives with one atomic increment outside it. Customers clone their batch under that lock, so a
//! `Clone` that is slow (large owned data) holds up the senders meanwhile: send
//! `Arc<T>` for such messages.
//!
//! ## Example
//!
//! ```
//! use servicekit::{Channel, channel::RecvError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let events = Channel::bounded(8);
//! let mut logger = events.connect();
//! let mut alerter = events.connect_with(2);
//! events.send("disk 91% full").await.unwrap();
//! events.close();
//! assert_eq!(logger.recv().await, Ok("disk 91% full"));
//! assert_eq!(alerter.recv().await, Ok("disk 91% full"));
//! assert_eq!(logger.recv().await, Err(RecvError::Closed));
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

// The lock-free parts (cursor publication, the parked-sender flag) are model-checked
// with loom through the `sync` shim: `framework/tests/loom_channel.rs`, built with
// `--cfg servicekit_loom`.
use crate::sync::{Arc, AtomicU8, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};

use futures::Stream;

/// How many messages a blocking or unbounded customer takes from the shared ring per
/// lock. They still count against its bound until received.
pub const BATCH: usize = 256;

/// What a customer does when its buffer is full.
///
/// # Examples
///
/// ```
/// use servicekit::{Channel, channel::Overflow};
/// let ch = Channel::<u32>::bounded(4);
/// let metrics = ch.customer().capacity(100).overflow(Overflow::DropOldest).connect();
/// # drop(metrics);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The sender waits until this customer has room (backpressure). The default.
    #[default]
    Block,
    /// The oldest unread message is dropped; the next `recv` reports
    /// [`RecvError::Lagged`] with the number lost.
    DropOldest,
    /// The customer is cut off: it receives what it had buffered, then
    /// [`RecvError::CutOff`].
    Disconnect,
}

/// What `send` does while no customer is connected.
///
/// # Examples
///
/// ```
/// use servicekit::{Channel, channel::NoCustomers, channel::TrySendError};
/// let ch = Channel::bounded(4).when_no_customers(NoCustomers::Fail);
/// assert!(matches!(ch.try_send(1), Err(TrySendError::NoCustomers(1))));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoCustomers {
    /// Wait until a customer connects (the default).
    #[default]
    Wait,
    /// Return the message in [`SendError::NoCustomers`].
    Fail,
}

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

/// What a customer shares with the senders outside the lock, in one word: the next
/// sequence number it has not received (low 63 bits; a batching customer publishes
/// each receive here without the lock) and, in the top bit, "a sender is parked
/// until this customer makes room" (set and cleared under the lock).
///
/// Keeping both in one word is what makes the lock-free receive safe and cheap: the
/// customer's increment returns the flag, and the sender's flagging returns the
/// position, so one of the two always sees the other (no store-load fence needed).
struct Cursor(AtomicU64);

const SENDER_WAITS: u64 = 1 << 63;

impl Cursor {
    fn new(pos: u64) -> Self {
        Cursor(AtomicU64::new(pos))
    }

    fn pos(&self) -> u64 {
        self.0.load(Ordering::SeqCst) & !SENDER_WAITS
    }

    /// Moves the position (under the lock, by the customer or for a `DropOldest`
    /// customer), keeping the flag.
    fn set_pos(&self, pos: u64) {
        let flag = self.0.load(Ordering::SeqCst) & SENDER_WAITS;
        self.0.store(pos | flag, Ordering::SeqCst);
    }

    /// One lock-free receive; returns whether a sender is parked on this customer.
    fn advance(&self) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst) & SENDER_WAITS != 0
    }

    /// Sets the flag (under the lock) and returns the position at that instant.
    fn flag(&self) -> u64 {
        self.0.fetch_or(SENDER_WAITS, Ordering::SeqCst) & !SENDER_WAITS
    }

    fn is_flagged(&self) -> bool {
        self.0.load(Ordering::SeqCst) & SENDER_WAITS != 0
    }

    /// Clears the flag (under the lock); returns whether it was set.
    fn unflag(&self) -> bool {
        // The flag only changes under the lock, which the caller holds: a plain load
        // first keeps the common case free of a read-modify-write.
        self.is_flagged() && self.0.fetch_and(!SENDER_WAITS, Ordering::SeqCst) & SENDER_WAITS != 0
    }
}

struct Cust {
    id: u64,
    cursor: Arc<Cursor>,
    capacity: Option<usize>,
    overflow: Overflow,
    lagged: u64,
    /// Set when a `Disconnect` customer is cut off: it receives up to here.
    cut_at: Option<u64>,
    /// Set by `CustomerCloser::close`.
    closed: bool,
    /// Set while the customer waits for a message (its slot is in `recv_waiting`).
    waker: Option<Waker>,
}

impl Cust {
    /// The oldest sequence number this customer may still receive from the ring.
    fn hold(&self, tail: u64) -> u64 {
        if self.closed {
            return tail;
        }
        let cursor = self.cursor.pos();
        match self.cut_at {
            Some(cut) => cursor.min(cut),
            None => cursor,
        }
    }

    /// The bound of a blocking customer, the one that can keep a sender waiting.
    fn block_cap(&self) -> Option<u64> {
        match self.capacity {
            Some(cap) if self.overflow == Overflow::Block && !self.closed => Some(cap as u64),
            _ => None,
        }
    }
}

struct Inner<T> {
    ring: VecDeque<T>,
    /// Sequence number of `ring[0]`.
    head: u64,
    slots: Vec<Option<Cust>>,
    free: Vec<usize>,
    count: usize,
    next_id: u64,
    closed: bool,
    send_wakers: Vec<Waker>,
    /// Slots of customers waiting for a message (woken by the next commit or close).
    recv_waiting: Vec<usize>,
    /// Messages that can be sent before looking at the customers' cursors again: the
    /// least room left in any blocking customer (room only grows between scans, as
    /// customers receive), capped so the ring is trimmed regularly.
    room: u64,
    /// Slots of `DropOldest` / `Disconnect` customers, checked on every send.
    lossy: Vec<usize>,
    /// How many customers have `SENDER_WAITS` set: parked senders are woken when the
    /// last of them makes room, not at every receive of every customer.
    blocked: usize,
}

/// Most messages sent between two scans of the customers' cursors.
const SCAN_EVERY: u64 = 64;

impl<T> Inner<T> {
    fn tail(&self) -> u64 {
        self.head + self.ring.len() as u64
    }

    fn wake_senders(&mut self) {
        for w in self.send_wakers.drain(..) {
            w.wake();
        }
    }

    #[cold]
    fn wake_receivers(&mut self) {
        let Inner {
            slots,
            recv_waiting,
            ..
        } = self;
        for i in recv_waiting.drain(..) {
            if let Some(w) = slots[i].as_mut().and_then(|c| c.waker.take()) {
                w.wake();
            }
        }
    }

    /// Reads every cursor: trims the ring and recomputes `room`.
    fn scan(&mut self) {
        let tail = self.tail();
        let mut room = SCAN_EVERY;
        let mut min = tail;
        for c in self.slots.iter().flatten() {
            if let Some(cap) = c.block_cap() {
                room = room.min(cap.saturating_sub(tail - c.cursor.pos()));
            }
            min = min.min(c.hold(tail));
        }
        self.room = room;
        while self.head < min && self.ring.pop_front().is_some() {
            self.head += 1;
        }
    }

    /// Parks the senders on the full customers: flags each one that is full at the
    /// instant its flag is set (a customer receiving at the same time either moved
    /// its position first, or sees the flag and releases its part). Flags left from
    /// an earlier park on customers that are no longer full are cleared. Returns
    /// whether some customer is still full.
    fn park(&mut self) -> bool {
        let tail = self.tail();
        let mut blocked = 0;
        for c in self.slots.iter().flatten() {
            match c.block_cap() {
                // Full before and still full at the instant the flag went up.
                Some(cap) if tail - c.cursor.pos() >= cap && tail - c.cursor.flag() >= cap => {
                    blocked += 1;
                }
                _ => {
                    c.cursor.unflag();
                }
            }
        }
        self.blocked = blocked;
        blocked > 0
    }

    /// A flagged customer made room (or left): wakes the senders once no flagged
    /// customer is left.
    fn release(&mut self, cursor: &Cursor) {
        if cursor.unflag() {
            self.blocked -= 1;
            if self.blocked == 0 {
                self.wake_senders();
            }
        }
    }

    /// Drops ring entries every customer has read.
    fn trim(&mut self) {
        let tail = self.tail();
        let min = self
            .slots
            .iter()
            .flatten()
            .map(|c| c.hold(tail))
            .min()
            .unwrap_or(tail);
        while self.head < min && self.ring.pop_front().is_some() {
            self.head += 1;
        }
    }
}

struct Shared<T> {
    inner: Mutex<Inner<T>>,
    handles: AtomicUsize,
    default_capacity: Option<usize>,
    no_customers: AtomicU8,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock()
    }

    fn close(&self) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        inner.closed = true;
        inner.wake_senders();
        inner.wake_receivers();
        true
    }

    fn connect(this: &Arc<Self>, capacity: Option<usize>, overflow: Overflow) -> Customer<T> {
        let mut inner = this.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let cursor = Arc::new(Cursor::new(inner.tail()));
        let cust = Cust {
            id,
            cursor: cursor.clone(),
            capacity,
            overflow,
            lagged: 0,
            cut_at: None,
            closed: false,
            waker: None,
        };
        let slot = match inner.free.pop() {
            Some(i) => {
                inner.slots[i] = Some(cust);
                i
            }
            None => {
                inner.slots.push(Some(cust));
                inner.slots.len() - 1
            }
        };
        inner.count += 1;
        if overflow != Overflow::Block && capacity.is_some() {
            inner.lossy.push(slot);
        }
        // A new blocking customer has a full budget, but may have less room than the
        // one the sender counts on: look again before the next send.
        inner.room = 0;
        inner.wake_senders();
        drop(inner);
        Customer {
            shared: this.clone(),
            slot,
            id,
            batching: overflow == Overflow::Block,
            local: VecDeque::new(),
            cursor,
            done: false,
        }
    }

    fn disconnect(&self, slot: usize, id: u64) {
        let mut inner = self.lock();
        if inner.slots[slot].as_ref().is_some_and(|c| c.id == id) {
            if let Some(c) = inner.slots[slot].take() {
                inner.release(&c.cursor);
            }
            inner.free.push(slot);
            inner.lossy.retain(|&i| i != slot);
            inner.count -= 1;
            inner.trim();
            inner.wake_senders();
        }
    }

    /// Commits `msg` to every customer, or says why it cannot now.
    #[inline]
    fn try_commit(&self, msg: T, cx: Option<&Context<'_>>) -> Result<(), TrySendError<T>> {
        let mut inner = self.lock();
        if inner.closed || inner.count == 0 || inner.room == 0 {
            return Self::try_commit_slow(inner, msg, cx);
        }
        inner.push(msg);
        Ok(())
    }

    /// `try_commit` when the channel is closed, has no customers, or the sender has
    /// to look at the cursors again (and maybe park).
    #[inline(never)]
    fn try_commit_slow(
        mut inner: MutexGuard<'_, Inner<T>>,
        msg: T,
        cx: Option<&Context<'_>>,
    ) -> Result<(), TrySendError<T>> {
        if inner.closed {
            return Err(TrySendError::Closed(msg));
        }
        if inner.count == 0 {
            if let Some(cx) = cx {
                inner.send_wakers.push(cx.waker().clone());
            }
            return Err(TrySendError::NoCustomers(msg));
        }
        if inner.room == 0 {
            inner.scan();
            if inner.room == 0 {
                let Some(cx) = cx else {
                    return Err(TrySendError::Full(msg));
                };
                // Park on the full customers, then look again (see `park`).
                inner.send_wakers.push(cx.waker().clone());
                if inner.park() {
                    return Err(TrySendError::Full(msg));
                }
                // Every customer made room meanwhile: not parked after all.
                inner.send_wakers.pop();
                inner.scan();
            }
        }
        inner.push(msg);
        Ok(())
    }
}

impl<T> Inner<T> {
    /// Appends a message there is room for; applies the lossy customers' policies
    /// and wakes the waiting customers.
    #[inline]
    fn push(&mut self, msg: T) {
        self.ring.push_back(msg);
        self.room -= 1;
        if !self.lossy.is_empty() {
            self.overflow_lossy();
        }
        if !self.recv_waiting.is_empty() {
            self.wake_receivers();
        }
    }

    /// The message just pushed overflows the `DropOldest` / `Disconnect` customers
    /// that are full.
    #[cold]
    fn overflow_lossy(&mut self) {
        let tail = self.tail() - 1;
        let Inner { slots, lossy, .. } = self;
        for &i in lossy.iter() {
            let Some(c) = slots[i].as_mut().filter(|c| !c.closed) else {
                continue;
            };
            let cap = c.capacity.unwrap_or(usize::MAX) as u64;
            let cursor = c.cursor.pos();
            if tail + 1 - cursor > cap {
                match c.overflow {
                    Overflow::DropOldest => {
                        c.cursor.set_pos(cursor + 1);
                        c.lagged += 1;
                    }
                    _ if c.cut_at.is_none() => c.cut_at = Some(tail),
                    _ => {}
                }
            }
        }
    }
}

/// The sending side of a broadcast channel, and the place customers connect.
///
/// `Channel` is a cheap handle: clones send to and connect to the same channel. When
/// every `Channel` handle is dropped the channel closes. See the
/// [module docs](crate::channel) for the semantics.
///
/// # Examples
///
/// ```
/// use servicekit::Channel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ch = Channel::bounded(16);
/// let mut a = ch.connect();
/// let mut b = ch.connect();
/// let producer = ch.clone();
/// tokio::spawn(async move {
///     for i in 0..3 {
///         producer.send(i).await.unwrap();
///     }
/// });
/// drop(ch); // the producer's clone keeps it open until it is done
/// for i in 0..3 {
///     assert_eq!(a.recv().await, Ok(i));
///     assert_eq!(b.recv().await, Ok(i));
/// }
/// # }
/// ```
pub struct Channel<T> {
    shared: Arc<Shared<T>>,
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("Channel")
            .field("customers", &inner.count)
            .field("buffered", &inner.ring.len())
            .field("closed", &inner.closed)
            .finish()
    }
}

impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Channel {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Channel<T> {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
        }
    }
}

impl<T: Clone> Channel<T> {
    fn with_capacity(capacity: Option<usize>) -> Self {
        Channel {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    ring: VecDeque::new(),
                    head: 0,
                    slots: Vec::new(),
                    free: Vec::new(),
                    count: 0,
                    next_id: 0,
                    closed: false,
                    send_wakers: Vec::new(),
                    recv_waiting: Vec::new(),
                    room: 0,
                    lossy: Vec::new(),
                    blocked: 0,
                }),
                handles: AtomicUsize::new(1),
                default_capacity: capacity,
                no_customers: AtomicU8::new(0),
            }),
        }
    }

    /// A channel whose customers hold at most `capacity` unread messages by default.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<String>::bounded(5);
    /// assert!(!ch.has_customers());
    /// ```
    pub fn bounded(capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "Channel::bounded: capacity must be greater than 0"
        );
        Self::with_capacity(Some(capacity))
    }

    /// A channel whose customers are unbounded by default: the sender never waits for
    /// them.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::unbounded();
    /// let mut c = ch.connect();
    /// for i in 0..1000 {
    ///     ch.try_send(i).unwrap();
    /// }
    /// assert_eq!(c.len(), 1000);
    /// ```
    pub fn unbounded() -> Self {
        Self::with_capacity(None)
    }

    /// Sets what sends do while no customer is connected (default
    /// [`NoCustomers::Wait`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Channel, channel::NoCustomers};
    /// let ch = Channel::<u8>::bounded(1).when_no_customers(NoCustomers::Fail);
    /// # drop(ch);
    /// ```
    pub fn when_no_customers(self, policy: NoCustomers) -> Self {
        self.shared
            .no_customers
            .store((policy == NoCustomers::Fail) as u8, Ordering::Relaxed);
        self
    }

    /// Connects a customer with the channel's default buffer and [`Overflow::Block`].
    /// It receives messages sent from now on.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(4);
    /// let c = ch.connect();
    /// assert_eq!(ch.customer_count(), 1);
    /// # drop(c);
    /// ```
    pub fn connect(&self) -> Customer<T> {
        Shared::connect(&self.shared, self.shared.default_capacity, Overflow::Block)
    }

    /// Connects a customer with its own buffer bound.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(4);
    /// let slow = ch.connect_with(1);
    /// # drop(slow);
    /// ```
    pub fn connect_with(&self, capacity: usize) -> Customer<T> {
        assert!(
            capacity > 0,
            "Channel::connect_with: capacity must be greater than 0"
        );
        Shared::connect(&self.shared, Some(capacity), Overflow::Block)
    }

    /// A builder for a customer with its own buffer and overflow policy.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Channel, channel::Overflow};
    /// let ch = Channel::<u8>::bounded(4);
    /// let c = ch.customer().capacity(16).overflow(Overflow::Disconnect).connect();
    /// # drop(c);
    /// ```
    pub fn customer(&self) -> CustomerBuilder<'_, T> {
        CustomerBuilder {
            channel: self,
            capacity: self.shared.default_capacity,
            overflow: Overflow::Block,
        }
    }

    /// Sends `msg` to every connected customer, waiting while a blocking customer is
    /// full or (by default) while none is connected.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the channel is closed; [`SendError::NoCustomers`] if no
    /// customer is connected and the channel is set to [`NoCustomers::Fail`]. The
    /// message comes back in the error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe and all-or-nothing: if the future is dropped before it completes,
    /// the message was delivered to nobody (and is dropped with the future).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ch = servicekit::Channel::bounded(1);
    /// let mut c = ch.connect();
    /// ch.send(1).await.unwrap();
    /// // Full: a second send waits until `c` receives.
    /// let second = ch.send(2);
    /// assert_eq!(c.recv().await, Ok(1));
    /// second.await.unwrap();
    /// assert_eq!(c.recv().await, Ok(2));
    /// # }
    /// ```
    pub fn send(&self, msg: T) -> Send<'_, T> {
        Send {
            shared: &self.shared,
            msg: Some(msg),
        }
    }

    /// Sends without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`], [`TrySendError::NoCustomers`] or
    /// [`TrySendError::Closed`], with the message.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Channel, channel::TrySendError};
    /// let ch = Channel::bounded(2);
    /// assert!(matches!(ch.try_send(1), Err(TrySendError::NoCustomers(1))));
    /// let _c = ch.connect();
    /// assert!(ch.try_send(1).is_ok());
    /// ```
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.shared.try_commit(msg, None)
    }

    /// Closes the channel: customers receive what is buffered, then
    /// [`RecvError::Closed`]; sends fail. Returns `false` if it was already closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(1);
    /// assert!(ch.close());
    /// assert!(ch.is_closed());
    /// assert!(!ch.close());
    /// ```
    pub fn close(&self) -> bool {
        self.shared.close()
    }

    /// Whether the channel is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!servicekit::Channel::<u8>::bounded(1).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// How many customers are connected.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(1);
    /// let c = ch.connect();
    /// assert_eq!(ch.customer_count(), 1);
    /// drop(c);
    /// assert_eq!(ch.customer_count(), 0);
    /// ```
    pub fn customer_count(&self) -> usize {
        self.shared.lock().count
    }

    /// Whether any customer is connected.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!servicekit::Channel::<u8>::bounded(1).has_customers());
    /// ```
    pub fn has_customers(&self) -> bool {
        self.customer_count() > 0
    }
}

/// Builds a customer with its own settings; from [`Channel::customer`].
///
/// # Examples
///
/// ```
/// use servicekit::{Channel, channel::Overflow};
/// let ch = Channel::<u8>::bounded(4);
/// let c = ch.customer().unbounded().connect();
/// # drop(c);
/// ```
#[must_use = "call `connect` to make the customer"]
pub struct CustomerBuilder<'a, T> {
    channel: &'a Channel<T>,
    capacity: Option<usize>,
    overflow: Overflow,
}

impl<T> fmt::Debug for CustomerBuilder<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomerBuilder")
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .finish()
    }
}

impl<T: Clone> CustomerBuilder<'_, T> {
    /// Bounds the customer's buffer.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::unbounded();
    /// let c = ch.customer().capacity(8).connect();
    /// # drop(c);
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "CustomerBuilder::capacity: capacity must be greater than 0"
        );
        self.capacity = Some(capacity);
        self
    }

    /// Makes the customer's buffer unbounded (it never makes the sender wait).
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(1);
    /// let c = ch.customer().unbounded().connect();
    /// # drop(c);
    /// ```
    pub fn unbounded(mut self) -> Self {
        self.capacity = None;
        self
    }

    /// Sets what happens when the customer's buffer is full (default
    /// [`Overflow::Block`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::channel::Overflow;
    /// let ch = servicekit::Channel::<u8>::bounded(1);
    /// let c = ch.customer().overflow(Overflow::DropOldest).connect();
    /// # drop(c);
    /// ```
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Connects the customer.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(1);
    /// let c = ch.customer().connect();
    /// assert_eq!(ch.customer_count(), 1);
    /// # drop(c);
    /// ```
    pub fn connect(self) -> Customer<T> {
        Shared::connect(&self.channel.shared, self.capacity, self.overflow)
    }
}

/// The future of [`Channel::send`].
#[must_use = "futures do nothing unless polled"]
pub struct Send<'a, T> {
    shared: &'a Arc<Shared<T>>,
    msg: Option<T>,
}

impl<T> fmt::Debug for Send<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Send")
            .field("pending", &self.msg.is_some())
            .finish()
    }
}

impl<T> Unpin for Send<'_, T> {}

impl<T> Future for Send<'_, T> {
    type Output = Result<(), SendError<T>>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let msg = self.msg.take().expect("Send polled after completion");
        match self.shared.try_commit(msg, Some(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(TrySendError::Closed(m)) => Poll::Ready(Err(SendError::Closed(m))),
            Err(TrySendError::NoCustomers(m))
                if self.shared.no_customers.load(Ordering::Relaxed) == 1 =>
            {
                Poll::Ready(Err(SendError::NoCustomers(m)))
            }
            Err(TrySendError::NoCustomers(m) | TrySendError::Full(m)) => {
                self.msg = Some(m);
                Poll::Pending
            }
        }
    }
}

/// One receiver of a [`Channel`], with its own buffer.
///
/// It receives every message sent after it connected, in order. It is a
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
        if c.lagged > 0 {
            return Poll::Ready(Err(RecvError::Lagged(std::mem::take(&mut c.lagged))));
        }
        let pos = self.cursor.pos();
        let end = c.cut_at.unwrap_or(tail);
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
                end.saturating_sub(self.cursor.pos()) as usize
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
            c.lagged = 0;
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
        Shared::connect(&self.shared, self.shared.default_capacity, Overflow::Block)
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
