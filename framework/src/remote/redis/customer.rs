//! A remote customer: what its reader task (ephemeral or durable) hands over, and
//! the receiving side.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use futures::Stream;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::RecvError;

/// A message received from a [`RedisChannel`](super::RedisChannel).
///
/// # Examples
///
/// ```no_run
/// # use servicekit::redis::{Options, RedisChannel};
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let ch = RedisChannel::<String>::open("redis://127.0.0.1/", "x", Options::durable()).await?;
/// # let mut customer = ch.connect().await?;
/// let msg = customer.recv().await?;
/// println!("{} sent at {:?}: {}", msg.id, msg.sent_at, msg.payload);
/// customer.ack(&msg);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Message<T> {
    /// Durable: the stream entry's id (what [`RemoteCustomer::ack`] acknowledges).
    /// Ephemeral: the envelope's id, unique to the message.
    pub id: String,
    /// When the sender sent it (its clock).
    pub sent_at: SystemTime,
    /// The message.
    pub payload: T,
    /// How many times it has been delivered to a customer of its group (1 the first
    /// time; more after a reclaim). Always 1 for an ephemeral message.
    pub deliveries: u64,
}

pub(crate) enum Item<T> {
    Msg(Message<T>),
    Err(RecvError),
}

struct State<T> {
    items: VecDeque<Item<T>>,
    cap: usize,
    lagged: u64,
    /// The reader saw the close (or the customer was closed): `Closed` once drained.
    ended: bool,
    waker: Option<Waker>,
    malformed: u64,
    /// Ids to acknowledge (durable), flushed by the reader.
    acks: Vec<String>,
    /// Ids of messages a closed customer dropped, for the reader to hand back.
    untaken: Vec<String>,
    /// Durable: ids `recv` returned and the customer has not acknowledged.
    held: Option<HashSet<String>>,
}

/// What a customer and its reader task share.
pub(crate) struct Buffer<T> {
    state: Mutex<State<T>>,
    /// The reader waits here for room (durable) and for acknowledgements.
    pub(crate) wake_reader: Notify,
}

impl<T> Buffer<T> {
    /// A buffer of `cap` messages; `durable` ones keep track of what the customer
    /// holds unacknowledged.
    pub(crate) fn new(cap: usize, durable: bool) -> Arc<Buffer<T>> {
        Arc::new(Buffer {
            state: Mutex::new(State {
                items: VecDeque::new(),
                cap,
                lagged: 0,
                ended: false,
                waker: None,
                malformed: 0,
                acks: Vec::new(),
                untaken: Vec::new(),
                held: durable.then(HashSet::new),
            }),
            wake_reader: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Plain data: a panic elsewhere while it was held leaves it whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(mut state: MutexGuard<'_, State<T>>) {
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ephemeral: a full buffer drops its oldest message.
    pub(crate) fn push_lossy(&self, item: Item<T>) {
        self.push_lossy_all(vec![item]);
    }

    /// As [`push_lossy`](Self::push_lossy), under one lock, with one wake-up; a
    /// message that does not decode is counted.
    pub(crate) fn push_lossy_all(&self, items: Vec<Item<T>>) {
        if items.is_empty() {
            return;
        }
        let mut state = self.lock();
        for item in items {
            if matches!(item, Item::Err(RecvError::Decode(_))) {
                state.malformed += 1;
            }
            if state.items.len() >= state.cap {
                // The oldest message goes; the notices (reconnected, malformed)
                // stay, and are not counted as lost messages.
                match state.items.iter().position(|i| matches!(i, Item::Msg(_))) {
                    Some(oldest) => {
                        state.items.remove(oldest);
                        state.lagged += 1;
                    }
                    None => {
                        state.items.pop_front();
                    }
                }
            }
            state.items.push_back(item);
        }
        Self::wake(state);
    }

    /// How many more fit (durable readers wait for room and read no more).
    pub(crate) fn room(&self) -> usize {
        let state = self.lock();
        state.cap.saturating_sub(state.items.len())
    }

    /// Durable: the caller waited for room; errors go in regardless.
    pub(crate) fn push(&self, item: Item<T>) {
        let mut state = self.lock();
        state.items.push_back(item);
        Self::wake(state);
    }

    /// A notice (a Redis error, reconnected) the customer has not yet seen one of
    /// in a row: a reader failing again and again does not fill the buffer.
    pub(crate) fn notice(&self, error: RecvError) {
        let mut state = self.lock();
        if let Some(Item::Err(last)) = state.items.back()
            && std::mem::discriminant(last) == std::mem::discriminant(&error)
        {
            return;
        }
        state.items.push_back(Item::Err(error));
        Self::wake(state);
    }

    /// The ids waiting in the buffer.
    pub(crate) fn buffered_ids(&self) -> Vec<String> {
        self.lock()
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Msg(m) => Some(m.id.clone()),
                Item::Err(_) => None,
            })
            .collect()
    }

    /// Durable: a message that does not decode, counted.
    pub(crate) fn malformed(&self, error: RecvError) {
        self.lock().malformed += 1;
        self.push(Item::Err(error));
    }

    /// The channel is closed: the customer drains, then sees `Closed`.
    pub(crate) fn end(&self) {
        let mut state = self.lock();
        state.ended = true;
        Self::wake(state);
    }

    /// Queues an acknowledgement for the reader to send.
    pub(crate) fn ack_later(&self, id: String) {
        let mut state = self.lock();
        if let Some(held) = &mut state.held {
            held.remove(&id);
        }
        state.acks.push(id);
    }

    /// The ids the customer holds unacknowledged, emptied (it went).
    pub(crate) fn take_held(&self) -> Vec<String> {
        self.lock()
            .held
            .as_mut()
            .map(|held| held.drain().collect())
            .unwrap_or_default()
    }

    /// Every id handed to the customer whose acknowledgement has not reached
    /// Redis: buffered, held, or acknowledged and waiting to be sent.
    pub(crate) fn handed_out(&self) -> HashSet<String> {
        let state = self.lock();
        let mut ids: HashSet<String> = state.held.iter().flatten().cloned().collect();
        ids.extend(state.acks.iter().cloned());
        ids.extend(state.items.iter().filter_map(|item| match item {
            Item::Msg(m) => Some(m.id.clone()),
            Item::Err(_) => None,
        }));
        ids
    }

    /// The ids of the messages the customer did not take (it went), emptied.
    pub(crate) fn drain_ids(&self) -> Vec<String> {
        let mut state = self.lock();
        let mut ids = std::mem::take(&mut state.untaken);
        ids.extend(state.items.drain(..).filter_map(|item| match item {
            Item::Msg(m) => Some(m.id),
            Item::Err(_) => None,
        }));
        ids
    }

    pub(crate) fn take_acks(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().acks)
    }

    /// Puts back acknowledgements that could not be sent.
    pub(crate) fn return_acks(&self, mut ids: Vec<String>) {
        let mut state = self.lock();
        ids.append(&mut state.acks);
        state.acks = ids;
    }
}

/// A customer of a [`RedisChannel`](super::RedisChannel): receives with
/// [`recv`](Self::recv), [`recv_timeout`](Self::recv_timeout) or as a [`Stream`].
/// Its reader runs in a task of its own until the customer is closed or dropped.
///
/// # Examples
///
/// ```no_run
/// use futures::StreamExt;
/// # use servicekit::redis::{Options, RedisChannel};
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ch = RedisChannel::<u32>::open("redis://127.0.0.1/", "numbers", Options::ephemeral()).await?;
/// let mut customer = ch.connect().await?;
/// ch.send_batch(&[1, 2]).await?;
/// ch.close().await?;
/// let got: Vec<u32> = customer.filter_map(|r| async move { r.ok() }).map(|m| m.payload).collect().await;
/// assert_eq!(got, [1, 2]);
/// # Ok(()) }
/// ```
pub struct RemoteCustomer<T> {
    buffer: Arc<Buffer<T>>,
    /// Ends the reading (`close`); the reader stays for acknowledgements.
    stop: CancellationToken,
    /// Ends the reader when the customer goes (a parent of `stop`).
    _gone: DropGuard,
    /// Auto-acknowledge: the id of the message `recv` returned last.
    auto_ack: Option<Option<String>>,
    /// `Closed` was returned (the stream is over).
    done: bool,
}

impl<T> std::fmt::Debug for RemoteCustomer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCustomer")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<T> RemoteCustomer<T> {
    /// A customer of `buffer`; `gone` is cancelled when it is dropped, `stop`
    /// (a child of `gone`) also when it is closed.
    pub(crate) fn new(
        buffer: Arc<Buffer<T>>,
        gone: CancellationToken,
        stop: CancellationToken,
        auto_ack: bool,
    ) -> RemoteCustomer<T> {
        RemoteCustomer {
            buffer,
            stop,
            _gone: gone.drop_guard(),
            auto_ack: auto_ack.then_some(None),
            done: false,
        }
    }

    /// The next message, or why there is none now. Only [`RecvError::Closed`] is
    /// final; after any other error `recv` goes on.
    ///
    /// # Errors
    ///
    /// [`RecvError`]: closed, lagged, reconnected, a message that did not decode,
    /// or a Redis error the reader is recovering from.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is taken only when `recv` returns it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RecvError, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ch = RedisChannel::<u32>::open("redis://127.0.0.1/", "n", Options::ephemeral()).await?;
    /// let mut customer = ch.connect().await?;
    /// loop {
    ///     match customer.recv().await {
    ///         Ok(msg) => println!("{}", msg.payload),
    ///         Err(RecvError::Closed) => break,
    ///         Err(e) => eprintln!("{e}"), // lagged, reconnected, malformed: go on
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn recv(&mut self) -> Result<Message<T>, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// As [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvError::Timeout`] when nothing came in time; otherwise as `recv`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use servicekit::redis::{Options, RecvError, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ch = RedisChannel::<u32>::open("redis://127.0.0.1/", "quiet", Options::ephemeral()).await?;
    /// let mut customer = ch.connect().await?;
    /// assert!(matches!(customer.recv_timeout(Duration::from_millis(10)).await, Err(RecvError::Timeout)));
    /// # Ok(()) }
    /// ```
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<T>, RecvError> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .unwrap_or(Err(RecvError::Timeout))
    }

    /// Polls for the next message (what `recv` and the `Stream` use).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ch = RedisChannel::<u32>::open("redis://127.0.0.1/", "n", Options::ephemeral()).await?;
    /// let mut customer = ch.connect().await?;
    /// ch.send(&5).await?;
    /// let msg = std::future::poll_fn(|cx| customer.poll_recv(cx)).await?;
    /// assert_eq!(msg.payload, 5);
    /// # Ok(()) }
    /// ```
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message<T>, RecvError>> {
        if let Some(Some(id)) = self.auto_ack.as_mut().map(Option::take) {
            self.buffer.ack_later(id);
            self.buffer.wake_reader.notify_one();
        }
        if self.done {
            return Poll::Ready(Err(RecvError::Closed));
        }
        let mut state = self.buffer.lock();
        if state.lagged > 0 {
            let n = std::mem::take(&mut state.lagged);
            return Poll::Ready(Err(RecvError::Lagged(n)));
        }
        match state.items.pop_front() {
            Some(item) => {
                let was_full = state.items.len() + 1 == state.cap;
                // Held from the moment it leaves the buffer, under the same lock:
                // the reader never sees it in neither.
                if let (Item::Msg(msg), Some(held)) = (&item, &mut state.held) {
                    held.insert(msg.id.clone());
                }
                drop(state);
                // A durable reader may wait for room.
                if was_full {
                    self.buffer.wake_reader.notify_one();
                }
                Poll::Ready(match item {
                    Item::Msg(msg) => {
                        if let Some(last) = &mut self.auto_ack {
                            *last = Some(msg.id.clone());
                        }
                        Ok(msg)
                    }
                    Item::Err(e) => Err(e),
                })
            }
            None if state.ended => {
                self.done = true;
                Poll::Ready(Err(RecvError::Closed))
            }
            None => {
                match &mut state.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// Acknowledges a durable message: its group will not deliver it again. The
    /// customer's reader sends it (with others) at once, or with its next read;
    /// until then, and if the process dies first, the message stays pending and is
    /// delivered again (at least once). Does nothing for an ephemeral message.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ch = RedisChannel::<u32>::open("redis://127.0.0.1/", "jobs", Options::durable()).await?;
    /// let mut customer = ch.connect().await?;
    /// let msg = customer.recv().await?;
    /// // ... handle it ...
    /// customer.ack(&msg);
    /// # Ok(()) }
    /// ```
    pub fn ack(&self, msg: &Message<T>) {
        self.buffer.ack_later(msg.id.clone());
        self.buffer.wake_reader.notify_one();
    }

    /// Stops receiving: what was buffered is dropped (durable: handed back to the
    /// group at once) and `recv` says closed, while [`ack`](Self::ack) still works
    /// for the messages in hand (with `auto_ack`, the last one is acknowledged
    /// now). Dropping the customer also hands back what it holds unacknowledged
    /// (delivered again); with `auto_ack`, drop it after `close` once done. The
    /// channel stays open for others.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ch = RedisChannel::<u32>::open("redis://127.0.0.1/", "n", Options::ephemeral()).await?;
    /// let mut customer = ch.connect().await?;
    /// customer.close();
    /// assert!(customer.is_closed());
    /// assert!(customer.recv().await.unwrap_err().is_closed());
    /// # Ok(()) }
    /// ```
    pub fn close(&mut self) {
        self.done = true;
        if let Some(Some(id)) = self.auto_ack.as_mut().map(Option::take) {
            self.buffer.ack_later(id);
        }
        let ids = self.buffer.drain_ids();
        self.buffer.lock().untaken = ids;
        self.stop.cancel();
        self.buffer.wake_reader.notify_one();
    }

    /// Whether the customer is closed, or has seen the channel's close (what is
    /// buffered can still be received).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ch = RedisChannel::<u32>::open("redis://127.0.0.1/", "n", Options::ephemeral()).await?;
    /// let customer = ch.connect().await?;
    /// assert!(!customer.is_closed());
    /// # Ok(()) }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.done || self.buffer.lock().ended
    }

    /// How many messages could not be decoded so far (each was also returned as
    /// [`RecvError::Decode`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ch = RedisChannel::<u32>::open("redis://127.0.0.1/", "n", Options::ephemeral()).await?;
    /// let customer = ch.connect().await?;
    /// assert_eq!(customer.malformed(), 0);
    /// # Ok(()) }
    /// ```
    pub fn malformed(&self) -> u64 {
        self.buffer.lock().malformed
    }
}

impl<T> futures::stream::FusedStream for RemoteCustomer<T> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<T> Stream for RemoteCustomer<T> {
    type Item = Result<Message<T>, RecvError>;

    /// Every message and error, ending after [`RecvError::Closed`] (which is not
    /// yielded).
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.poll_recv(cx) {
            Poll::Ready(Err(RecvError::Closed)) => Poll::Ready(None),
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Pending,
        }
    }
}
