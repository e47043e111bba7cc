//! Procedural macros for [servicekit](https://docs.rs/servicekit): `#[service]` and
//! `#[main]`. Use them through the `servicekit` crate, which re-exports them.

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]

mod args;
mod check;
mod expand;

use proc_macro::TokenStream;

/// Turns an `async fn` into a function returning a restartable [`Service`].
///
/// Calling the generated function runs nothing: it returns a `Service` that
/// `run_services` or a `Runner` runs, restarts and stops. The arguments are kept and
/// cloned for each run, so they must be `Clone + Send + 'static`. A parameter of type
/// `ServiceContext` (in any position) is injected by the runner and is not part of the
/// generated signature. The body may return `()` or `Result<(), E>` with
/// `E: Into<Box<dyn Error + Send + Sync>>`.
///
/// # Arguments
///
/// | key | value | default |
/// |---|---|---|
/// | `name` | `"text"` | the fn's name |
/// | `restart` | `"always"`, `"on-failure"`, `"never"` | `"on-failure"` |
/// | `every` | duration: run the body periodically | not periodic |
/// | `backoff` | `"base..cap"` | `"100ms..30s"` |
/// | `reset_after` | duration | `"60s"` |
/// | `max_restarts` | whole number | `5` |
/// | `within` | duration | `"60s"` |
/// | `on_give_up` | `"shutdown"`, `"ignore"` | `"shutdown"` |
/// | `shutdown_timeout` | duration | the runner's (10 s) |
/// | `reload` | `"restart"`, `"hook"` (take reloads through `ctx.reloads()`) | `"restart"` |
/// | `watchdog` | duration: a run that goes this long without `ctx.heartbeat()` is hung, stopped and restarted per policy | none |
/// | `group` | `"name"`: a member of that group (defined with `Runner::group`) | none |
/// | `after` | `["name", ...]`: dependencies | none |
/// | `crate` | `"path"` to servicekit | `"::servicekit"` |
///
/// Durations are written `"250ms"`, `"5s"`, `"2m"` or `"1h"` and checked at compile time.
///
/// With `every`, one run of the service is the periodic loop: a tick that returns
/// `Ok` keeps it going, a tick that fails ends the run, which `restart` then treats
/// like any failed run (backoff, `max_restarts`; `"never"` gives up at the first
/// failure). A restarted run starts a new grid, with a tick at once.
///
/// The context is found by its type's name, `ServiceContext`. Behind a type alias the
/// macro cannot see it: mark the parameter `#[context]` (`#[context] ctx: Ctx`).
///
/// # Examples
///
/// ```
/// use servicekit::{service, ServiceContext};
///
/// #[service(name = "api", restart = "always", backoff = "100ms..10s", after = ["db"])]
/// async fn api(ctx: ServiceContext, port: u16) -> std::io::Result<()> {
///     ctx.ready();
///     println!("listening on {port}");
///     ctx.shutdown_requested().await;
///     Ok(())
/// }
///
/// assert_eq!(api(8080).name(), "api");
/// ```
///
/// Equivalent code without `#[service]`:
///
/// ```
/// use std::time::Duration;
///
/// fn api(port: u16) -> servicekit::Service {
///     servicekit::Service::new("api", move |ctx| {
///         let port = port.clone();
///         async move {
///             ctx.ready();
///             println!("listening on {port}");
///             ctx.shutdown_requested().await;
///             Ok::<(), std::io::Error>(())
///         }
///     })
///     .restart(servicekit::Restart::Always)
///     .backoff(Duration::from_millis(100), Duration::from_secs(10))
///     .after(["db"])
/// }
///
/// assert_eq!(api(8080).name(), "api");
/// ```
///
/// A periodic service, and a context behind an alias:
///
/// ```
/// use servicekit::{service, ServiceContext};
///
/// type Ctx = ServiceContext;
///
/// #[service(every = "5s", restart = "on-failure", max_restarts = 3, within = "1m")]
/// async fn compact(#[context] ctx: Ctx) -> std::io::Result<()> {
///     println!("compacting (run {})", ctx.run());
///     Ok(())
/// }
///
/// assert_eq!(compact().name(), "compact");
/// ```
///
/// [`Service`]: https://docs.rs/servicekit/latest/servicekit/struct.Service.html
#[proc_macro_attribute]
pub fn service(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::service(args.into(), item.into()).into()
}

/// Runs `async fn main` on a tokio runtime and turns its outcome into the exit code.
///
/// It builds the runtime (`flavor = "multi_thread"` by default or `"current_thread"`,
/// `worker_threads = n`), installs a `tracing-subscriber` fmt layer on stderr filtered
/// by `RUST_LOG` (default `info`) unless `tracing = false`, and after the body returns
/// shuts the runtime down within `runtime_shutdown` (default `"1s"`) so a stray
/// blocking task cannot keep the process alive. Started by systemd with
/// `Type=notify`, every runner tells it when the services are ready, reloading and
/// stopping, and pings its watchdog (`servicekit::ops::systemd`); `systemd = false`
/// turns that off. `http = "127.0.0.1:9090"` (servicekit's `http` feature) binds
/// that address before the body runs (a port in use ends the program with 1 and a
/// clear message) and serves `/healthz`, `/readyz`, `/status`, `/metrics` and the
/// status page of the first runner the body starts. With servicekit's `metrics` feature, every runner also records
/// its metrics through the `metrics` facade (`servicekit::ops::metrics`).
///
/// `main` may return `()` or `Result<(), E>` with `E: Into<Box<dyn Error + Send + Sync>>`.
///
/// Log lines and the exit message never panic: a closed or full stderr loses them,
/// never the program. Colours are used only when stderr is a terminal and `NO_COLOR`
/// is not set. A second SIGINT or SIGTERM during a shutdown ends the process with
/// 130 within a second whatever is still running: if aborting what is left does not
/// finish within 0.7 s (a task blocking its thread, a `Drop` that never returns), a
/// thread outside the runtime ends the process itself.
///
/// | outcome | exit code |
/// |---|---|
/// | `()` or `Ok(())` | 0 |
/// | `Err(e)` (a service failed or hung, or any other error); the chain is printed to stderr | 1 |
/// | `Err(servicekit::Error::Forced)`: a second signal forced the shutdown | 130 |
///
/// # Examples
///
/// ```
/// #[servicekit::main(flavor = "current_thread")]
/// async fn main() -> servicekit::Result<()> {
///     let hello = servicekit::Service::without_context("hello", || async {
///         println!("hello");
///     });
///     servicekit::run_services([hello]).await
/// }
/// ```
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::main(args.into(), item.into()).into()
}
