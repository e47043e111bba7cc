//! The ring every customer of a channel reads from, and the bookkeeping around it.
//!
//! Each message is stored once in `Inner::ring`, under one short lock. A customer's
//! position lives outside the lock in its [`Cursor`], so a customer receiving from
//! its local batch publishes each receive with one atomic increment; the sender reads
//! the cursors only when the room it counted runs out (`scan`, at most every
//! `SCAN_EVERY` messages) and parks on the customers that are full (`park`), to be
//! woken by the last of them (`release`).

use std::collections::VecDeque;
use std::task::{Context, Waker};

// The lock-free parts (cursor publication, the parked-sender flag) are model-checked
// with loom through the `sync` shim: `framework/tests/loom_channel.rs`, built with
// `--cfg servicekit_loom`.
use crate::sync::{Arc, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};

use super::{NoCustomers, Overflow, TrySendError};

/// How many messages a blocking or unbounded customer takes from the shared ring per
/// lock. They still count against its bound until received.
pub(super) const BATCH: usize = 256;

/// What a customer shares with the senders outside the lock, in one word: the next
/// sequence number it has not received (low 63 bits; a batching customer publishes
/// each receive here without the lock) and, in the top bit, "a sender is parked
/// until this customer makes room" (set and cleared under the lock).
///
/// Keeping both in one word is what makes the lock-free receive safe and cheap: the
/// customer's increment returns the flag, and the sender's flagging returns the
/// position, so one of the two always sees the other (no store-load fence needed).
pub(super) struct Cursor(AtomicU64);

pub(super) const SENDER_WAITS: u64 = 1 << 63;

impl Cursor {
    pub(super) fn new(pos: u64) -> Self {
        Cursor(AtomicU64::new(pos))
    }

    pub(super) fn pos(&self) -> u64 {
        self.0.load(Ordering::SeqCst) & !SENDER_WAITS
    }

    /// Moves the position (under the lock, by the customer or for a `DropOldest`
    /// customer), keeping the flag.
    pub(super) fn set_pos(&self, pos: u64) {
        let flag = self.0.load(Ordering::SeqCst) & SENDER_WAITS;
        self.0.store(pos | flag, Ordering::SeqCst);
    }

    /// One lock-free receive; returns whether a sender is parked on this customer.
    pub(super) fn advance(&self) -> bool {
        self.advance_by(1)
    }

    /// Moves past `n` messages without the lock (received, or lost by a
    /// `DropOldest` customer); returns whether a sender is parked on this customer.
    pub(super) fn advance_by(&self, n: u64) -> bool {
        self.0.fetch_add(n, Ordering::SeqCst) & SENDER_WAITS != 0
    }

    /// Sets the flag (under the lock) and returns the position at that instant.
    pub(super) fn flag(&self) -> u64 {
        self.0.fetch_or(SENDER_WAITS, Ordering::SeqCst) & !SENDER_WAITS
    }

    pub(super) fn is_flagged(&self) -> bool {
        self.0.load(Ordering::SeqCst) & SENDER_WAITS != 0
    }

    /// Clears the flag (under the lock); returns whether it was set.
    pub(super) fn unflag(&self) -> bool {
        // The flag only changes under the lock, which the caller holds: a plain load
        // first keeps the common case free of a read-modify-write.
        self.is_flagged() && self.0.fetch_and(!SENDER_WAITS, Ordering::SeqCst) & SENDER_WAITS != 0
    }
}

pub(super) struct Cust {
    pub(super) id: u64,
    pub(super) cursor: Arc<Cursor>,
    pub(super) capacity: Option<usize>,
    pub(super) overflow: Overflow,
    /// Set when a `Disconnect` customer is cut off: it receives up to here.
    pub(super) cut_at: Option<u64>,
    /// Set by `CustomerCloser::close`.
    pub(super) closed: bool,
    /// Set while the customer waits for a message (its slot is in `recv_waiting`).
    pub(super) waker: Option<Waker>,
}

impl Cust {
    /// The oldest sequence number this customer may still receive from the ring.
    pub(super) fn hold(&self, tail: u64) -> u64 {
        if self.closed {
            return tail;
        }
        let cursor = self.cursor.pos();
        match (self.cut_at, self.overflow, self.capacity) {
            (Some(cut), _, _) => cursor.min(cut),
            // What a `DropOldest` customer lost is dropped lazily (see `lag_floor`).
            (None, Overflow::DropOldest, Some(cap)) => cursor.max(lag_floor(tail, cap)),
            (None, _, _) => cursor,
        }
    }

    /// The bound a sender waits on: a blocking customer's, and with `all` (a send
    /// that waits for every customer instead of applying their overflow policies,
    /// [`Shared::try_commit_all`]) a lossy customer's too, until it is cut off.
    pub(super) fn wait_cap(&self, all: bool) -> Option<u64> {
        let waits = match self.overflow {
            Overflow::Block => true,
            Overflow::DropOldest | Overflow::Disconnect => all && self.cut_at.is_none(),
        };
        match self.capacity {
            Some(cap) if waits && !self.closed => Some(cap as u64),
            _ => None,
        }
    }
}

pub(super) struct Inner<T> {
    pub(super) ring: VecDeque<T>,
    /// Sequence number of `ring[0]`.
    pub(super) head: u64,
    pub(super) slots: Vec<Option<Cust>>,
    pub(super) free: Vec<usize>,
    pub(super) count: usize,
    pub(super) next_id: u64,
    pub(super) closed: bool,
    pub(super) send_wakers: Vec<Waker>,
    /// Slots of customers waiting for a message (woken by the next commit or close).
    pub(super) recv_waiting: Vec<usize>,
    /// Messages that can be sent before looking at the customers' cursors again: the
    /// least room left in any blocking customer (room only grows between scans, as
    /// customers receive), capped so the ring is trimmed regularly.
    pub(super) room: u64,
    /// Slots of bounded `Disconnect` customers, checked on every send.
    pub(super) lossy: Vec<usize>,
    /// Slots of bounded `DropOldest` customers (their losses are applied lazily, see
    /// [`lag_floor`]; a `send_async` of the bus waits for them).
    pub(super) dropping: Vec<usize>,
    /// How many of the last messages are kept for customers that connect later (0:
    /// none; see `ChannelBuilder::replay`).
    pub(super) replay: u64,
    /// How many customers have `SENDER_WAITS` set: parked senders are woken when the
    /// last of them makes room, not at every receive of every customer.
    pub(super) blocked: usize,
    /// How many `Disconnect` customers were cut off for falling behind.
    pub(super) cut_offs: u64,
}

/// Most messages sent between two scans of the customers' cursors.
pub(super) const SCAN_EVERY: u64 = 64;

impl<T> Inner<T> {
    pub(super) fn tail(&self) -> u64 {
        self.head + self.ring.len() as u64
    }

    pub(super) fn wake_senders(&mut self) {
        for w in self.send_wakers.drain(..) {
            w.wake();
        }
    }

    #[cold]
    pub(super) fn wake_receivers(&mut self) {
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
    pub(super) fn scan(&mut self) {
        let tail = self.tail();
        let mut room = SCAN_EVERY;
        let mut min = tail.saturating_sub(self.replay);
        for c in self.slots.iter().flatten() {
            if let Some(cap) = c.wait_cap(false) {
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
    /// whether some customer is still full. With `all`, lossy customers count too
    /// (see [`Cust::wait_cap`]); they receive under the lock and release the same way.
    pub(super) fn park(&mut self, all: bool) -> bool {
        let tail = self.tail();
        let mut blocked = 0;
        let mut cleared = false;
        for c in self.slots.iter().flatten() {
            match c.wait_cap(all) {
                // Full before and still full at the instant the flag went up.
                Some(cap) if tail - c.cursor.pos() >= cap && tail - c.cursor.flag() >= cap => {
                    blocked += 1;
                }
                _ => {
                    cleared |= c.cursor.unflag();
                }
            }
        }
        self.blocked = blocked;
        if cleared && blocked == 0 {
            // A sender parked earlier waited for the flag just cleared; its customer
            // will not release it now, and no flag is left to: wake it here (the
            // caller's own waker too, harmlessly, if it does not park).
            self.wake_senders();
        }
        blocked > 0
    }

    /// A flagged customer made room (or left): wakes the senders once no flagged
    /// customer is left.
    pub(super) fn release(&mut self, cursor: &Cursor) {
        if cursor.unflag() {
            self.blocked -= 1;
            if self.blocked == 0 {
                self.wake_senders();
            }
        }
    }

    /// Drops ring entries every customer has read.
    pub(super) fn trim(&mut self) {
        let tail = self.tail();
        let min = self
            .slots
            .iter()
            .flatten()
            .map(|c| c.hold(tail))
            .min()
            .unwrap_or(tail)
            .min(tail.saturating_sub(self.replay));
        while self.head < min && self.ring.pop_front().is_some() {
            self.head += 1;
        }
    }
}

/// The oldest sequence number a `DropOldest` customer of bound `cap` still holds when
/// the ring ends at `tail`: the messages before it overflowed it.
///
/// A `DropOldest` customer's losses are not applied by the sender. They follow from
/// its position and the tail alone (the customer holds at most the last `cap`
/// messages), so the customer works them out when it receives: it batches like a
/// blocking customer, with no lock per message, and still loses exactly what a
/// customer trimmed at every send would (`Shared::tail` is the tail it reads).
pub(super) fn lag_floor(tail: u64, cap: usize) -> u64 {
    tail.saturating_sub(cap as u64)
}

pub(super) struct Shared<T> {
    pub(super) inner: Mutex<Inner<T>>,
    /// The ring's tail, published at every send (under the lock) for `DropOldest`
    /// customers receiving from their batch (see [`lag_floor`]).
    pub(super) tail: AtomicU64,
    pub(super) handles: AtomicUsize,
    /// Messages `DropOldest` customers were told they lost (added when they find out,
    /// off the hot path).
    pub(super) lagged: AtomicU64,
    pub(super) default_capacity: Option<usize>,
    pub(super) no_customers: NoCustomers,
}

impl<T> Shared<T> {
    pub(super) fn new(
        default_capacity: Option<usize>,
        no_customers: NoCustomers,
        replay: usize,
    ) -> Self {
        Shared {
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
                dropping: Vec::new(),
                blocked: 0,
                cut_offs: 0,
                replay: replay as u64,
            }),
            tail: AtomicU64::new(0),
            handles: AtomicUsize::new(1),
            lagged: AtomicU64::new(0),
            default_capacity,
            no_customers,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock()
    }

    pub(super) fn close(&self) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        inner.closed = true;
        inner.wake_senders();
        inner.wake_receivers();
        true
    }

    /// Registers a new customer; returns its slot, its id (a slot is reused, an id
    /// never is) and its cursor.
    pub(super) fn connect(
        &self,
        capacity: Option<usize>,
        overflow: Overflow,
    ) -> (usize, u64, Arc<Cursor>) {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        // A late customer starts with the kept messages (none without replay).
        let start = inner.tail().saturating_sub(inner.replay).max(inner.head);
        let cursor = Arc::new(Cursor::new(start));
        let cust = Cust {
            id,
            cursor: cursor.clone(),
            capacity,
            overflow,
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
        match (overflow, capacity) {
            (Overflow::Disconnect, Some(_)) => inner.lossy.push(slot),
            (Overflow::DropOldest, Some(_)) => inner.dropping.push(slot),
            _ => {}
        }
        // A new blocking customer has a full budget, but may have less room than the
        // one the sender counts on: look again before the next send.
        inner.room = 0;
        inner.wake_senders();
        drop(inner);
        (slot, id, cursor)
    }

    pub(super) fn disconnect(&self, slot: usize, id: u64) {
        let mut inner = self.lock();
        if inner.slots[slot].as_ref().is_some_and(|c| c.id == id) {
            if let Some(c) = inner.slots[slot].take() {
                inner.release(&c.cursor);
            }
            inner.free.push(slot);
            inner.lossy.retain(|&i| i != slot);
            inner.dropping.retain(|&i| i != slot);
            inner.count -= 1;
            inner.trim();
            inner.wake_senders();
        }
    }

    /// Commits `msg` to every customer, or says why it cannot now.
    #[inline]
    pub(super) fn try_commit(
        &self,
        msg: T,
        cx: Option<&Context<'_>>,
    ) -> Result<(), TrySendError<T>> {
        let mut inner = self.lock();
        if inner.closed || inner.count == 0 || inner.room == 0 {
            return self.try_commit_slow(inner, msg, cx);
        }
        inner.push(msg);
        self.tail.store(inner.tail(), Ordering::Release);
        Ok(())
    }

    /// Commits `msg` like [`try_commit`](Self::try_commit), but waits (parks, with a
    /// context) while any bounded customer is full, lossy ones included, instead of
    /// dropping their oldest message or cutting them off.
    ///
    /// Only for channels whose customers are all lossy (the event bus): a blocking
    /// sender's `park(false)` would clear the flags this one set.
    pub(super) fn try_commit_all(
        &self,
        msg: T,
        cx: Option<&Context<'_>>,
    ) -> Result<(), TrySendError<T>> {
        let mut inner = self.lock();
        if !inner.closed && inner.count > 0 && inner.lossy_full() {
            let Some(cx) = cx else {
                return Err(TrySendError::Full(msg));
            };
            inner.send_wakers.push(cx.waker().clone());
            if inner.park(true) {
                return Err(TrySendError::Full(msg));
            }
            inner.send_wakers.pop();
        }
        if inner.closed || inner.count == 0 || inner.room == 0 {
            return self.try_commit_slow(inner, msg, cx);
        }
        inner.push(msg);
        self.tail.store(inner.tail(), Ordering::Release);
        Ok(())
    }

    /// `try_commit` when the channel is closed, has no customers, or the sender has
    /// to look at the cursors again (and maybe park).
    #[inline(never)]
    pub(super) fn try_commit_slow(
        &self,
        mut inner: MutexGuard<'_, Inner<T>>,
        msg: T,
        cx: Option<&Context<'_>>,
    ) -> Result<(), TrySendError<T>> {
        if inner.closed {
            return Err(TrySendError::Closed(msg));
        }
        // A channel that keeps messages for late customers stores them even when no
        // customer is connected.
        if inner.count == 0 && inner.replay == 0 {
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
                if inner.park(false) {
                    return Err(TrySendError::Full(msg));
                }
                // Every customer made room meanwhile: not parked after all.
                inner.send_wakers.pop();
                inner.scan();
            }
        }
        inner.push(msg);
        self.tail.store(inner.tail(), Ordering::Release);
        Ok(())
    }
}

impl<T> Inner<T> {
    /// Appends a message there is room for; applies the lossy customers' policies
    /// and wakes the waiting customers.
    #[inline]
    pub(super) fn push(&mut self, msg: T) {
        self.ring.push_back(msg);
        self.room -= 1;
        if !self.lossy.is_empty() {
            self.overflow_lossy();
        }
        if !self.recv_waiting.is_empty() {
            self.wake_receivers();
        }
    }

    /// Whether a lossy customer that has not been cut off is full.
    pub(super) fn lossy_full(&self) -> bool {
        let tail = self.tail();
        self.lossy.iter().chain(&self.dropping).any(|&i| {
            self.slots[i]
                .as_ref()
                .and_then(|c| c.wait_cap(true).map(|cap| tail - c.cursor.pos() >= cap))
                .unwrap_or(false)
        })
    }

    /// The message just pushed overflows the `Disconnect` customers that are full.
    #[cold]
    pub(super) fn overflow_lossy(&mut self) {
        let tail = self.tail() - 1;
        let mut cut = false;
        let Inner {
            slots,
            lossy,
            cut_offs,
            ..
        } = self;
        for &i in lossy.iter() {
            let Some(c) = slots[i].as_mut().filter(|c| !c.closed) else {
                continue;
            };
            let cap = c.capacity.unwrap_or(usize::MAX) as u64;
            let cursor = c.cursor.pos();
            if tail + 1 - cursor > cap && c.cut_at.is_none() {
                c.cut_at = Some(tail);
                *cut_offs += 1;
                // A cut-off customer no longer holds back a sender parked on it
                // (`try_commit_all`).
                cut |= c.cursor.is_flagged();
            }
        }
        if cut {
            self.release_cut();
        }
    }

    #[cold]
    fn release_cut(&mut self) {
        for k in 0..self.lossy.len() {
            let Some(c) = &self.slots[self.lossy[k]] else {
                continue;
            };
            if c.cut_at.is_some() {
                let cursor = c.cursor.clone();
                self.release(&cursor);
            }
        }
    }
}
