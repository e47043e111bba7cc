//! Support for the code the macros generate (`servicekit::__private`): not public
//! API, hidden from the docs.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use crate::error::BoxError;
use crate::lifecycle::{IntoServiceResult, Service, ServiceContext};

/// The defaults the macros fill in when only one of `max_restarts` / `within` is given.
pub const DEFAULT_MAX_RESTARTS: u32 = crate::lifecycle::config::DEFAULT_MAX_RESTARTS;
/// See [`DEFAULT_MAX_RESTARTS`].
pub const DEFAULT_WITHIN: Duration = crate::lifecycle::config::DEFAULT_WITHIN;

pub use core::time::Duration as __Duration;

/// Builds a service from the macro's factory closure.
pub fn service<F, Fut>(name: &str, has_context: bool, f: F) -> Service
where
    F: FnMut(ServiceContext) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoServiceResult,
{
    Service::from_fn(name.to_owned(), has_context, f)
}

/// Checks that a `#[service]` body returns `()` or `Result<(), E>`; the macro spans
/// the call on the declared return type so the error points there.
#[inline]
pub fn check_output<F>(fut: F) -> Checked<F>
where
    F: Future,
    F::Output: IntoServiceResult,
{
    futures::FutureExt::map(fut, IntoServiceResult::into_service_result)
}

/// The future [`check_output`] returns.
pub type Checked<F> = futures::future::Map<F, fn(<F as Future>::Output) -> Result<(), BoxError>>;

/// Clones one argument of a `#[service]` fn for a run; the bounds give the error
/// users see for an argument that cannot be cloned or sent.
#[inline]
pub fn clone_arg<T: Clone + Send + 'static>(arg: &T) -> T {
    arg.clone()
}

/// What `#[servicekit::main]` may return.
#[diagnostic::on_unimplemented(
    message = "`#[servicekit::main]` must return `()` or `Result<(), E>`, not `{Self}`",
    label = "the exit code comes from this: 0 for `()` or `Ok(())`, 1 for an error, 130 for a forced shutdown"
)]
pub trait MainOutput {
    /// Reports the outcome on stderr and gives the exit code.
    fn exit_code(self) -> ExitCode;
}

impl MainOutput for () {
    fn exit_code(self) -> ExitCode {
        ExitCode::SUCCESS
    }
}

impl<E: Into<BoxError>> MainOutput for Result<(), E> {
    fn exit_code(self) -> ExitCode {
        let Err(e) = self else {
            return ExitCode::SUCCESS;
        };
        let e: BoxError = e.into();
        let mut forced = false;
        let mut report = None;
        let mut chain: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
        while let Some(err) = chain {
            if let Some(runner) = err.downcast_ref::<crate::Error>() {
                forced |= runner.is_forced();
                report = report.or(runner.report());
            }
            chain = crate::guard::source(err);
        }
        struct Report<'a>(&'a (dyn std::error::Error + 'static));
        impl std::fmt::Display for Report<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                crate::error::write_chain(f, self.0, "\n  caused by: ")
            }
        }
        // Rendered whole first: a panic hook's output (a user `Display` that
        // panics) then comes before the message, not in the middle of it.
        let mut text = format!("Error: {}\n", Report(&*e));
        if let Some(report) = report {
            write_unclean(&mut text, report);
        }
        print_err(&text);
        if forced {
            ExitCode::from(130)
        } else {
            ExitCode::FAILURE
        }
    }
}

/// The services of a runner's report that did not end cleanly, one per line, at
/// most [`UNCLEAN_LINES`] of them.
fn write_unclean(text: &mut String, report: &crate::Report) {
    use std::fmt::Write;
    let unclean: Vec<_> = report.unclean().collect();
    if unclean.is_empty() {
        return;
    }
    let _ = writeln!(
        text,
        "{} of {} services did not stop cleanly:",
        unclean.len(),
        report.services().len()
    );
    for s in unclean.iter().take(UNCLEAN_LINES) {
        let _ = writeln!(text, "  {s}");
    }
    if unclean.len() > UNCLEAN_LINES {
        let _ = writeln!(text, "  ... and {} more", unclean.len() - UNCLEAN_LINES);
    }
}

/// How many services `#[servicekit::main]`'s exit message lists.
const UNCLEAN_LINES: usize = 20;

/// `#[servicekit::main(http = "...")]` could not listen: the program ends with 1.
pub fn listen_failed(addr: &str, error: &std::io::Error) -> ExitCode {
    print_err(&format!("Error: cannot listen on {addr}: {error}\n"));
    ExitCode::FAILURE
}

/// What `#[servicekit::main(http = "...")]` expands to, beside `main`: nothing with
/// the `http` feature, a compile error naming the feature without it.
#[cfg(feature = "http")]
#[macro_export]
#[doc(hidden)]
macro_rules! __require_http {
    () => {};
}

/// See the other definition.
#[cfg(not(feature = "http"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __require_http {
    () => {
        ::core::compile_error!(
            "`#[servicekit::main(http = \"...\")]` needs servicekit's `http` feature: enable it, or remove `http = ...`"
        );
    };
}

/// Writes to stderr without panicking: a closed or full stderr loses the text,
/// never the program (`eprintln!` panics on `EPIPE`).
fn print_err(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Installs a tracing-subscriber fmt layer on stderr filtered by `RUST_LOG` (default
/// `info`), unless a subscriber is already installed.
#[cfg(feature = "tracing-subscriber")]
fn install_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .with_ansi(use_colour())
        .log_internal_errors(false)
        .try_init();
}

/// Without the `tracing-subscriber` feature `main` installs no subscriber (an
/// explicit `tracing = true` is a compile error instead, `__require_tracing_subscriber`).
#[cfg(not(feature = "tracing-subscriber"))]
fn install_tracing() {}

/// What `#[servicekit::main(tracing = true)]` expands to, beside `main`: nothing with
/// the `tracing-subscriber` feature, a compile error naming the feature without it.
#[cfg(feature = "tracing-subscriber")]
#[macro_export]
#[doc(hidden)]
macro_rules! __require_tracing_subscriber {
    () => {};
}

/// See the other definition.
#[cfg(not(feature = "tracing-subscriber"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __require_tracing_subscriber {
    () => {
        ::core::compile_error!(
            "`#[servicekit::main(tracing = true)]` needs servicekit's `tracing-subscriber` feature (on by default): enable it, or remove `tracing = true`"
        );
    };
}

#[cfg(feature = "tracing-subscriber")]
/// Stderr for the tracing subscriber: write errors (a closed pipe) are dropped.
struct LossyStderr;

#[cfg(feature = "tracing-subscriber")]
impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

#[cfg(feature = "tracing-subscriber")]
/// Colours only on a terminal, and never with `NO_COLOR` set (to anything but the
/// empty string, as <https://no-color.org> says).
fn use_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `#[servicekit::main]` settings.
#[derive(Debug)]
pub struct MainConfig {
    /// Multi-thread runtime (the default) or current-thread.
    pub multi_thread: bool,
    /// Worker threads of a multi-thread runtime.
    pub worker_threads: Option<usize>,
    /// Install a tracing-subscriber fmt layer filtered by `RUST_LOG` (default `info`);
    /// without the `tracing-subscriber` feature nothing is installed.
    pub tracing: bool,
    /// How long the runtime may take to shut down after `main` returns.
    pub runtime_shutdown: Duration,
}

/// Runs `main`'s body: tracing, runtime, exit code, runtime shutdown deadline.
pub fn run_main<Fut>(config: MainConfig, fut: Fut) -> ExitCode
where
    Fut: Future,
    Fut::Output: MainOutput,
{
    if config.tracing {
        install_tracing();
    }

    let mut builder = if config.multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    if let Some(n) = config.worker_threads {
        builder.worker_threads(n);
    }
    crate::lifecycle::signals::exit_on_second_signal();
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            print_err(&format!("Error: cannot build the tokio runtime: {e}\n"));
            return ExitCode::FAILURE;
        }
    };
    let out = runtime.block_on(fut);
    let code = out.exit_code();
    runtime.shutdown_timeout(config.runtime_shutdown);
    code
}
