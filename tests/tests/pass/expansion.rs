//! Every `#[service]` form compiles and builds a service.
#![deny(warnings)]

use std::time::Duration;

use servicekit::{ServiceContext, service};

#[derive(Clone)]
struct Config {
    _port: u16,
}

/// Documented service with every key.
#[service(
    name = "full",
    restart = "always",
    backoff = "10ms..1s",
    reset_after = "30s",
    max_restarts = 3,
    within = "1m",
    on_give_up = "ignore",
    shutdown_timeout = "2s",
    after = ["other"],
    crate = "::servicekit"
)]
pub async fn full(config: Config, ctx: ServiceContext, mut n: u32) -> Result<(), std::io::Error> {
    let _ = config;
    n += 1;
    ctx.ready();
    let _ = n;
    Ok(())
}

#[service(every = "5s")]
async fn periodic() {}

#[service]
async fn generic<T: Clone + Send + Sync + std::fmt::Debug + 'static>(value: T) -> anyhow::Result<()> {
    println!("{value:?}");
    Ok(())
}

#[service]
async fn pattern((a, b): (u32, u32), _unused: Duration) {
    let _ = a + b;
}

type Ctx = ServiceContext;

/// The context behind an alias, marked: the macro cannot see through aliases.
#[service]
async fn aliased(#[context] ctx: Ctx, port: u16, name: &'static str) {
    ctx.ready();
    let _ = (port, name);
}

#[servicekit::main(flavor = "current_thread", tracing = false, runtime_shutdown = "100ms")]
async fn main() -> servicekit::Result<()> {
    let services = [
        full(Config { _port: 1 }, 0),
        periodic(),
        generic(5u8),
        pattern((1, 2), Duration::ZERO),
        aliased(8080, "api"),
    ];
    assert_eq!(services[4].name(), "aliased");
    assert_eq!(services[0].name(), "full");
    assert_eq!(services[1].name(), "periodic");
    Ok(())
}
