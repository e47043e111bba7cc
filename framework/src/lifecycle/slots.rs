//! The runner's table of slots: the services given at start in one array, and those
//! added while it runs ([`RunnerHandle::add`](crate::RunnerHandle::add)) in segments
//! that never move. A `&Slot` stays valid for the runner's whole life and indexing
//! takes no lock: a service given at start costs one comparison more per access.
//!
//! A removed service's slot stays in the table, marked removed (its index may still
//! be in other slots' lists and in old contexts), and is skipped by everything that
//! looks services up by name or lists them.

use std::ops::Index;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Segment `k` holds `FIRST << k` slots.
const FIRST: usize = 32;
/// Enough segments for more services than a `u32` counts.
const SEGMENTS: usize = 28;

type Segment<T> = Box<[OnceLock<T>]>;

/// The table of a runner's slots (`T` is `state::Slot`).
pub(crate) struct Slots<T> {
    initial: Box<[T]>,
    added: [OnceLock<Segment<T>>; SEGMENTS],
    /// How many slots were added; a slot is set before this counts it.
    added_len: AtomicUsize,
}

/// The segment and offset of the `i`-th added slot.
fn locate(i: usize) -> (usize, usize) {
    // Segment k covers [FIRST × (2^k − 1), FIRST × (2^(k+1) − 1)).
    let n = i / FIRST + 1;
    let k = (usize::BITS - 1 - n.leading_zeros()) as usize;
    (k, i - FIRST * ((1 << k) - 1))
}

impl<T> Slots<T> {
    pub(crate) fn new(initial: Vec<T>) -> Slots<T> {
        Slots {
            initial: initial.into(),
            added: [const { OnceLock::new() }; SEGMENTS],
            added_len: AtomicUsize::new(0),
        }
    }

    /// Appends a slot and returns its index. Callers serialize (the registry's lock).
    pub(crate) fn push(&self, slot: T) -> usize {
        let i = self.added_len.load(Ordering::Acquire);
        let (k, offset) = locate(i);
        assert!(k < SEGMENTS, "fewer than 2^32 services");
        let segment = self.added[k].get_or_init(|| {
            (0..FIRST << k)
                .map(|_| OnceLock::new())
                .collect::<Vec<_>>()
                .into()
        });
        if segment[offset].set(slot).is_err() {
            unreachable!("each added slot is set once");
        }
        // `SeqCst`, like the loads of `len`: a shutdown that begins meanwhile
        // either sees this slot (and wakes it) or is seen by the adder (which wakes
        // it then; see `RunnerHandle::add`).
        self.added_len.store(i + 1, Ordering::SeqCst);
        self.initial.len() + i
    }

    /// How many slots there are, removed ones included.
    pub(crate) fn len(&self) -> usize {
        self.initial.len() + self.added_len.load(Ordering::SeqCst)
    }

    /// How many slots were given at start.
    pub(crate) fn initial_len(&self) -> usize {
        self.initial.len()
    }

    /// Every slot, removed ones included, in the order they were added.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        (0..self.len()).map(|i| &self[i])
    }
}

impl<T> Index<usize> for Slots<T> {
    type Output = T;

    #[inline]
    fn index(&self, idx: usize) -> &T {
        if let Some(slot) = self.initial.get(idx) {
            return slot;
        }
        let (k, offset) = locate(idx - self.initial.len());
        self.added[k]
            .get()
            .and_then(|segment| segment[offset].get())
            .expect("an index handed out by `push`")
    }
}

#[cfg(test)]
mod tests {
    use super::{FIRST, Slots, locate};

    #[test]
    fn segments_double_and_cover_every_index_once() {
        let mut expected = (0, 0);
        for i in 0..FIRST * 1000 {
            assert_eq!(locate(i), expected, "index {i}");
            expected.1 += 1;
            if expected.1 == FIRST << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
    }

    #[test]
    fn pushed_values_are_found_at_their_index_and_never_move() {
        let table = Slots::new(vec![String::from("a"), String::from("b")]);
        let first: *const String = &table[0];
        for i in 0..5000 {
            assert_eq!(table.push(format!("added {i}")), i + 2);
        }
        assert_eq!(table.len(), 5002);
        assert!(std::ptr::eq(first, &table[0]));
        assert_eq!(table[1], "b");
        assert_eq!(table[2], "added 0");
        assert_eq!(table[5001], "added 4999");
        assert_eq!(table.iter().count(), 5002);
    }
}
