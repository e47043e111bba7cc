//! Typed events between services that do not know each other (haiway's event bus):
//! a login monitor that raises security alerts, login statistics, an order
//! processor, and a pager for the alerts, all reacting to events a frontend
//! publishes from deep in its call stack with `bus::ctx::send`. A subscriber's error
//! never stops the others, and a watcher reacts to another service's failure through
//! the runner's own lifecycle events. Ends by itself, exit code 0.
//!
//! Run it with `cargo run -p servicekit-examples --example 11_event_bus`.

use std::collections::BTreeMap;

use futures::StreamExt;
use servicekit::bus::{EventBus, ctx};
use servicekit::{Event, Runner, ServiceContext, service};

#[derive(Debug)]
struct UserLoggedIn {
    user_id: String,
    ip_address: String,
}

#[derive(Debug)]
struct OrderCreated {
    order_id: u64,
    customer_id: String,
    total_amount: f64,
    items: Vec<String>,
}

#[derive(Debug)]
struct SecurityAlert {
    user_id: String,
    reason: String,
}

/// Published by the frontend once it has sent everything.
struct FrontendDone;

fn is_suspicious(ip: &str) -> bool {
    ip.starts_with("203.0.113.")
}

/// Subscribes first, then says it is ready: the frontend starts after it (`after`),
/// so no event is sent before the subscription exists.
#[service]
async fn security_monitor(ctx: ServiceContext) {
    let mut logins = ctx.bus().subscribe::<UserLoggedIn>();
    ctx.ready();
    while let Some(Some(event)) = ctx.until_shutdown(logins.next()).await {
        let login = match event {
            Ok(login) => login,
            Err(lag) => {
                println!("security monitor: {lag}");
                continue;
            }
        };
        if is_suspicious(&login.ip_address) {
            ctx::send(SecurityAlert {
                user_id: login.user_id.clone(),
                reason: format!("login from {}", login.ip_address),
            })
            .expect("services run in the runner's scope");
        }
    }
}

#[service]
async fn login_stats(ctx: ServiceContext) {
    let mut logins = ctx.bus().subscribe::<UserLoggedIn>();
    ctx.ready();
    let mut per_user = BTreeMap::<String, u32>::new();
    while let Some(Some(event)) = ctx.until_shutdown(logins.next()).await {
        match event {
            Ok(login) => *per_user.entry(login.user_id.clone()).or_default() += 1,
            Err(lag) => println!("login stats: {lag}"),
        }
    }
    println!("login stats: {per_user:?}");
}

#[service]
async fn alert_pager(ctx: ServiceContext) {
    let mut alerts = ctx.bus().subscribe::<SecurityAlert>();
    ctx.ready();
    while let Some(Some(alert)) = ctx.until_shutdown(alerts.next()).await {
        match alert {
            Ok(alert) => println!("ALERT for {}: {}", alert.user_id, alert.reason),
            Err(lag) => println!("pager: {lag}"),
        }
    }
}

/// An order it cannot handle is logged and processing continues (haiway's "always
/// handle exceptions in event processors").
#[service]
async fn order_processor(ctx: ServiceContext) {
    let mut orders = ctx.bus().subscribe::<OrderCreated>();
    ctx.ready();
    let mut revenue = 0.0;
    while let Some(Some(order)) = ctx.until_shutdown(orders.next()).await {
        let order = match order {
            Ok(order) => order,
            Err(lag) => {
                println!("orders: {lag}");
                continue;
            }
        };
        match process(&order) {
            Ok(amount) => {
                revenue += amount;
                println!(
                    "order {} for {}: {} item(s), {amount:.2}",
                    order.order_id,
                    order.customer_id,
                    order.items.len()
                );
            }
            Err(e) => println!(
                "order {} rejected: {e} (processing continues)",
                order.order_id
            ),
        }
    }
    println!("revenue: {revenue:.2}");
}

fn process(order: &OrderCreated) -> Result<f64, String> {
    if order.items.is_empty() {
        return Err("no items".into());
    }
    Ok(order.total_amount)
}

/// Reacts to another service's failure through the runner's lifecycle events.
#[service]
async fn failure_watcher(ctx: ServiceContext) {
    let mut events = ctx.bus().subscribe::<Event>();
    ctx.ready();
    while let Some(Some(event)) = ctx.until_shutdown(events.next()).await {
        match event.as_deref() {
            Ok(Event::Failed { service, error }) => {
                println!("watcher: {service} failed ({error}); it will be restarted")
            }
            Ok(_) => {}
            Err(lag) => println!("watcher: {lag}"),
        }
    }
}

/// Fails on its first run: the watcher (started first) sees it, the runner restarts
/// it.
#[service(restart = "on-failure", backoff = "10ms..10ms", after = ["failure_watcher"])]
async fn flaky_importer(ctx: ServiceContext) -> Result<(), String> {
    if ctx.run() == 1 {
        return Err("upstream not reachable".into());
    }
    ctx.ready();
    ctx.shutdown_requested().await;
    Ok(())
}

// The frontend's call stack: no bus handle is passed down.
fn handle_login(user_id: &str, ip: &str) {
    ctx::send(UserLoggedIn {
        user_id: user_id.into(),
        ip_address: ip.into(),
    })
    .expect("inside the runner's scope");
}

fn create_order(order_id: u64, customer_id: &str, items: &[&str], total_amount: f64) {
    ctx::send(OrderCreated {
        order_id,
        customer_id: customer_id.into(),
        total_amount,
        items: items.iter().map(|s| s.to_string()).collect(),
    })
    .expect("inside the runner's scope");
}

#[service(
    restart = "never",
    after = ["security_monitor", "login_stats", "alert_pager", "order_processor", "failure_watcher"]
)]
async fn frontend() {
    handle_login("ada", "198.51.100.7");
    handle_login("alan", "203.0.113.9");
    create_order(1, "ada", &["keyboard", "mouse"], 129.90);
    handle_login("ada", "198.51.100.7");
    create_order(2, "grace", &[], 0.0);
    create_order(3, "alan", &["monitor"], 239.00);
    // Give the subscribers a moment, then say we are done.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    ctx::send(FrontendDone).expect("inside the runner's scope");
}

#[servicekit::main]
async fn main() -> servicekit::Result<()> {
    let bus = EventBus::new();
    let mut done = bus.subscribe::<FrontendDone>();
    let handle = Runner::new()
        .bus(bus)
        .services([
            security_monitor(),
            login_stats(),
            alert_pager(),
            order_processor(),
            failure_watcher(),
            flaky_importer(),
            frontend(),
        ])
        .start()
        .await?;
    let _ = done.recv().await;
    handle.shutdown();
    let report = handle.wait().await?;
    println!("shutdown report:\n{report}");
    Ok(())
}
