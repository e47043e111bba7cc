//! The event bus against a reference model: random sequences of subscribe, send,
//! receive, drop and nested scopes (isolated or shared, entered and left), through
//! `bus::scope` and `bus::ctx`, compared step by step with a plain model of what each
//! subscription must see.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use proptest::prelude::*;
use servicekit::bus::{self, Overflow, Subscription, TryRecvError, ctx};

#[derive(Debug, PartialEq)]
struct A(u32);
#[derive(Debug, PartialEq)]
struct B(u32);

#[derive(Debug, Clone)]
enum Op {
    Subscribe {
        b: bool,
        cap: usize,
        disconnect: bool,
    },
    Send {
        b: bool,
        value: u32,
    },
    TryRecv(usize),
    Drop(usize),
    Enter {
        shared: bool,
    },
    Leave,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), 1..5usize, any::<bool>())
            .prop_map(|(b, cap, disconnect)| Op::Subscribe { b, cap, disconnect }),
        6 => (any::<bool>(), any::<u32>()).prop_map(|(b, value)| Op::Send { b, value }),
        6 => any::<usize>().prop_map(Op::TryRecv),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => any::<bool>().prop_map(|shared| Op::Enter { shared }),
        1 => Just(Op::Leave),
    ]
}

/// What one receive gave.
#[derive(Debug, PartialEq)]
enum Got {
    Event(u32),
    Empty,
    Lagged(u64),
    CutOff,
    Closed,
}

struct ModelSub {
    bus: usize,
    b: bool,
    cap: usize,
    disconnect: bool,
    queue: VecDeque<u32>,
    lagged: u64,
    cut: bool,
    done: bool,
}

#[derive(Default)]
struct Model {
    /// Whether each bus is closed.
    closed: Vec<bool>,
    /// The bus of each scope entered, innermost last, and whether it is its own.
    stack: Vec<(usize, bool)>,
    subs: Vec<ModelSub>,
}

impl Model {
    fn current(&self) -> usize {
        self.stack.last().unwrap().0
    }

    fn enter(&mut self, shared: bool) {
        if shared {
            let bus = self.current();
            self.stack.push((bus, false));
        } else {
            self.closed.push(false);
            self.stack.push((self.closed.len() - 1, true));
        }
    }

    fn leave(&mut self) {
        let (bus, own) = self.stack.pop().unwrap();
        if own {
            self.closed[bus] = true;
        }
    }

    fn subscribe(&mut self, b: bool, cap: usize, disconnect: bool) {
        let bus = self.current();
        let closed = self.closed[bus];
        self.subs.push(ModelSub {
            bus,
            b,
            cap,
            disconnect,
            queue: VecDeque::new(),
            lagged: 0,
            cut: false,
            done: closed,
        });
    }

    fn send(&mut self, b: bool, value: u32) {
        let bus = self.current();
        if self.closed[bus] {
            return;
        }
        for s in self.subs.iter_mut().filter(|s| s.bus == bus && s.b == b) {
            if s.cut || s.done {
                continue;
            }
            if s.queue.len() == s.cap {
                if s.disconnect {
                    s.cut = true;
                    continue;
                }
                s.queue.pop_front();
                s.lagged += 1;
            }
            s.queue.push_back(value);
        }
    }

    fn try_recv(&mut self, i: usize) -> Got {
        let closed = self.closed[self.subs[i].bus];
        let s = &mut self.subs[i];
        if s.done && s.queue.is_empty() {
            return Got::Closed;
        }
        if s.lagged > 0 {
            return Got::Lagged(std::mem::take(&mut s.lagged));
        }
        if let Some(v) = s.queue.pop_front() {
            return Got::Event(v);
        }
        if s.cut {
            s.done = true;
            return Got::CutOff;
        }
        if closed {
            s.done = true;
            return Got::Closed;
        }
        Got::Empty
    }

    fn count(&self, b: bool) -> usize {
        let bus = self.current();
        self.subs
            .iter()
            .filter(|s| s.bus == bus && s.b == b)
            .count()
    }
}

enum Real {
    A(Subscription<A>),
    B(Subscription<B>),
}

fn got<E>(r: Result<std::sync::Arc<E>, TryRecvError>, value: impl Fn(&E) -> u32) -> Got {
    match r {
        Ok(e) => Got::Event(value(&e)),
        Err(TryRecvError::Empty) => Got::Empty,
        Err(TryRecvError::Lagged(n)) => Got::Lagged(n),
        Err(TryRecvError::CutOff) => Got::CutOff,
        Err(TryRecvError::Closed) => Got::Closed,
    }
}

impl Real {
    fn try_recv(&mut self) -> Got {
        match self {
            Real::A(s) => got(s.try_recv(), |a| a.0),
            Real::B(s) => got(s.try_recv(), |b| b.0),
        }
    }
}

#[derive(Default)]
struct Harness {
    ops: Vec<Op>,
    pos: usize,
    model: Model,
    /// Live subscriptions: the real one and its index in the model.
    live: Vec<(Real, usize)>,
    failure: Option<String>,
}

type Shared = Rc<RefCell<Harness>>;

/// Runs the ops from the current position until a `Leave` (or the end), inside
/// whatever scope the caller entered.
fn interpret(h: Shared, depth: usize) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(async move {
        loop {
            let op = {
                let mut g = h.borrow_mut();
                if g.failure.is_some() || g.pos >= g.ops.len() {
                    return;
                }
                g.pos += 1;
                g.ops[g.pos - 1].clone()
            };
            match op {
                Op::Enter { shared } => {
                    if depth >= 4 {
                        continue;
                    }
                    h.borrow_mut().model.enter(shared);
                    let inner = bus::scope("nested", interpret(h.clone(), depth + 1));
                    if shared {
                        inner.shared().await;
                    } else {
                        inner.await;
                    }
                    h.borrow_mut().model.leave();
                }
                Op::Leave if depth > 0 => return,
                Op::Leave => {}
                op => step(&mut h.borrow_mut(), op),
            }
        }
    })
}

fn step(g: &mut Harness, op: Op) {
    match op {
        Op::Subscribe { b, cap, disconnect } => {
            let overflow = if disconnect {
                Overflow::Disconnect
            } else {
                Overflow::DropOldest
            };
            let bus = ctx::bus().unwrap();
            let real = if b {
                Real::B(
                    bus.subscription()
                        .capacity(cap)
                        .overflow(overflow)
                        .subscribe(),
                )
            } else {
                Real::A(
                    bus.subscription()
                        .capacity(cap)
                        .overflow(overflow)
                        .subscribe(),
                )
            };
            g.model.subscribe(b, cap, disconnect);
            let idx = g.model.subs.len() - 1;
            g.live.push((real, idx));
        }
        Op::Send { b, value } => {
            if b {
                ctx::send(B(value)).unwrap();
            } else {
                ctx::send(A(value)).unwrap();
            }
            g.model.send(b, value);
        }
        Op::TryRecv(i) if !g.live.is_empty() => {
            let i = i % g.live.len();
            let real = g.live[i].0.try_recv();
            let model = g.model.try_recv(g.live[i].1);
            if real != model {
                g.failure = Some(format!(
                    "op {}: subscription {i} received {real:?}, the model says {model:?}",
                    g.pos - 1
                ));
            }
        }
        Op::Drop(i) if !g.live.is_empty() => {
            let i = i % g.live.len();
            let (_, idx) = g.live.swap_remove(i);
            // A dropped subscription no longer counts.
            g.model.subs[idx].bus = usize::MAX;
        }
        _ => {}
    }
    if g.failure.is_none() {
        let bus = ctx::bus().unwrap();
        let counts = (bus.subscriber_count::<A>(), bus.subscriber_count::<B>());
        let model = (g.model.count(false), g.model.count(true));
        if counts != model {
            g.failure = Some(format!(
                "op {}: subscriber counts {counts:?}, the model says {model:?}",
                g.pos - 1
            ));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn the_bus_agrees_with_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let h: Shared = Rc::new(RefCell::new(Harness { ops, ..Harness::default() }));
        h.borrow_mut().model.enter(false);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(bus::scope("root", interpret(h.clone(), 0)));
        h.borrow_mut().model.leave();
        // After the root scope ended, every live subscription drains what the model
        // says it held, then ends.
        let mut g = h.borrow_mut();
        if g.failure.is_none() {
            let Harness { model, live, failure, .. } = &mut *g;
            'subs: for (real, idx) in live.iter_mut() {
                loop {
                    let (r, m) = (real.try_recv(), model.try_recv(*idx));
                    if r != m {
                        *failure = Some(format!("after the end: received {r:?}, the model says {m:?}"));
                        break 'subs;
                    }
                    if r == Got::Closed {
                        break;
                    }
                }
            }
        }
        prop_assert!(g.failure.is_none(), "{}", g.failure.clone().unwrap());
    }
}
