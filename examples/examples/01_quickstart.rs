//! The quickstart: an event detector broadcasts system events on a `Channel`; an event
//! logger and an error alerter each receive every event through their own `Customer`
//! (the alerter with a smaller buffer). Ctrl+C (or SIGTERM) stops everything cleanly:
//! the detector first, then the consumers, which drain what they had buffered; the
//! program exits 0.
//!
//! Run it with `cargo run -p servicekit-examples --example 01_quickstart`.

use std::time::Duration;

use servicekit::{Channel, ServiceContext, run_services, service};

#[derive(Debug, Clone)]
struct SystemEvent {
    id: u64,
    level: Level,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Info,
    Warning,
    Error,
}

/// Detects (simulated) system events and broadcasts them. It starts once both
/// consumers are connected, so no event is sent to nobody.
#[service(
    name = "EventDetector",
    restart = "always",
    backoff = "100ms..10s",
    after = ["EventLogger", "ErrorAlerter"]
)]
async fn event_detector(ctx: ServiceContext, events: Channel<SystemEvent>) {
    ctx.ready();
    let mut id = 0;
    loop {
        let pause = Duration::from_millis(fastrand::u64(200..800));
        if ctx
            .until_shutdown(tokio::time::sleep(pause))
            .await
            .is_none()
        {
            break;
        }
        id += 1;
        let level = match fastrand::u8(0..10) {
            0..=5 => Level::Info,
            6..=7 => Level::Warning,
            _ => Level::Error,
        };
        let event = SystemEvent {
            id,
            level,
            message: format!("simulated event {}", fastrand::u32(1..100)),
        };
        // Waits while a consumer's buffer is full (backpressure).
        match ctx.until_shutdown(events.send(event)).await {
            Some(Ok(())) => println!("EventDetector: sent #{id} {level:?}"),
            Some(Err(e)) => println!("EventDetector: {e}"),
            None => break,
        }
    }
    println!("EventDetector: stopped after {id} events");
}

/// Logs every event.
#[service(name = "EventLogger")]
async fn event_logger(ctx: ServiceContext, events: Channel<SystemEvent>) {
    let mut customer = events.connect();
    ctx.ready();
    let mut seen = 0;
    while let Some(Ok(event)) = ctx.until_shutdown(customer.recv()).await {
        seen += 1;
        println!(
            "EventLogger: received #{} {:?}: {}",
            event.id, event.level, event.message
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // writing the log line
    }
    // The detector has stopped first: log what is still buffered.
    while let Ok(event) = customer.try_recv() {
        seen += 1;
        println!("EventLogger: drained #{}", event.id);
    }
    println!("EventLogger: stopped after {seen} events");
}

/// Raises an alert for errors; a buffer of 2 is enough for it.
#[service(name = "ErrorAlerter")]
async fn error_alerter(ctx: ServiceContext, events: Channel<SystemEvent>) {
    let mut customer = events.connect_with(2);
    ctx.ready();
    let mut alerts = 0;
    while let Some(Ok(event)) = ctx.until_shutdown(customer.recv()).await {
        if event.level == Level::Error {
            alerts += 1;
            println!("ErrorAlerter: ALERT #{}: {}", event.id, event.message);
            tokio::time::sleep(Duration::from_millis(100)).await; // paging someone
        }
    }
    println!("ErrorAlerter: stopped after {alerts} alerts");
}

#[servicekit::main]
async fn main() -> servicekit::Result<()> {
    println!("quickstart: detector, logger and alerter running; press Ctrl+C to stop");
    let events = Channel::bounded(5);
    run_services([
        event_detector(events.clone()),
        event_logger(events.clone()),
        error_alerter(events.clone()),
    ])
    .await?;
    println!("quickstart: all services stopped cleanly");
    Ok(())
}
