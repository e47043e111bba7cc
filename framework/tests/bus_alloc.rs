//! What the event bus allocates, counted by a counting global allocator: nothing for
//! an event nobody subscribed to, and a dropped subscription gives back what it held.
//!
//! One test function: the allocator counts every thread, so nothing may run beside it.

#![cfg(not(servicekit_loom))]

use std::alloc::System;

use servicekit::bus::EventBus;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

struct Payload(#[allow(dead_code)] Vec<u8>);

fn net(region: &Region<'_, System>) -> isize {
    let c = region.change();
    c.bytes_allocated as isize - c.bytes_deallocated as isize
}

#[test]
fn the_bus_allocates_nothing_without_subscribers_and_frees_what_a_subscription_held() {
    let bus = EventBus::new();
    // Other types have subscribers, and this one had one: its topic exists.
    let _other = bus.subscribe::<u64>();
    drop(bus.subscribe::<[u8; 64]>());

    // The test harness's own thread may allocate meanwhile: a round with no
    // allocation at all proves a send allocates nothing (every round would count
    // 20,000 otherwise).
    let rounds: Vec<_> = (0..5)
        .map(|_| {
            let region = Region::new(GLOBAL);
            for i in 0..10_000u32 {
                bus.send([i as u8; 64]); // had a subscriber once
                bus.send(i); // never had one
            }
            region.change().allocations
        })
        .collect();
    assert!(
        rounds.contains(&0),
        "sends with no subscriber allocated: {rounds:?} allocations per 20,000 sends"
    );

    // A slow subscription holding 1,000 events of 1 KiB, then dropped.
    let region = Region::new(GLOBAL);
    let sub = bus.subscription::<Payload>().capacity(1_000).subscribe();
    for _ in 0..1_000 {
        bus.send(Payload(vec![7; 1024]));
    }
    let held = net(&region);
    assert!(held > 1_000 * 1024, "the events are held: {held} B");
    drop(sub);
    let left = net(&region);
    // What stays is the type's buffer of pointers (kept for reuse), not the events.
    assert!(
        left < 64 * 1024,
        "a dropped subscription kept {left} B of {held} B"
    );
}
