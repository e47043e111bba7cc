//! A panic at every place where the runner calls user code, on a multi-thread
//! runtime, 100 rounds each: the runner always returns, and reports the failure of
//! the service, naming what panicked.
//!
//! The hooks: the body, the `Display`, `Debug` and `source` of the error it returns,
//! the `Drop` of its future (with and without a context), the `Drop` of a task tied
//! to it (ending by itself, and aborted), and a panic payload whose own `Drop` panics.

use std::fmt;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use servicekit::error::{FailureKind, ServiceError};
use servicekit::{Error, Restart, Runner, Service, ServiceContext};
use tokio::sync::Notify;

const ROUNDS: usize = 100;

/// The injected panics are the point here: keep their messages out of the test
/// output (each is a short "... exploded", or has a payload that is not a string), and
/// let the others, failed assertions, through.
fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let text = p
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str));
            if text.is_none_or(|t| t.ends_with(" exploded") && t.len() < 30) {
                return;
            }
            default(info);
        }));
    });
}

struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("{}", self.0);
    }
}

/// Calls `f`, which panics, from a body that returns `()` (a body that ends in a
/// panic has the type `!`, which is not a service's output).
fn explode(f: impl FnOnce()) {
    f();
}

/// An error whose `Display`, `Debug` or `source` panics.
struct BadError {
    display: bool,
    debug: bool,
    source: bool,
}

impl fmt::Display for BadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.display {
            panic!("Display exploded");
        }
        f.write_str("a bad error")
    }
}

impl fmt::Debug for BadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.debug {
            panic!("Debug exploded");
        }
        f.write_str("BadError")
    }
}

impl std::error::Error for BadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if self.source {
            panic!("source exploded");
        }
        None
    }
}

/// Runs `services` until they end (`armed` is `None`: a service that gives up
/// shuts the runner down), or until the service notifies `armed` and then shuts
/// down; the runner must
/// return within 5 s. The `Err` it returns, formatted with `Display` and `Debug`
/// (which must not panic either).
async fn run(services: Vec<Service>, armed: Option<Arc<Notify>>) -> (Error, String, String) {
    let handle = Runner::new()
        .signals(false)
        .shutdown_timeout(Duration::from_millis(50))
        .services(services)
        .start()
        .await
        .expect("valid configuration");
    if let Some(armed) = armed {
        tokio::time::timeout(Duration::from_secs(5), armed.notified())
            .await
            .expect("the service armed its bomb");
        handle.shutdown();
    }
    let err = tokio::time::timeout(Duration::from_secs(5), handle.wait())
        .await
        .expect("the runner returned")
        .expect_err("the failure was reported");
    let display = err.to_string();
    let debug = format!("{err:?}");
    // The chain down to the service's own error (the user's error is user code:
    // servicekit guards its own formatting of it, see `LOG`).
    let mut chain = String::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = next.filter(|e| !e.is::<BadError>()) {
        chain.push_str(&e.to_string());
        chain.push('\n');
        next = e.source();
    }
    (err, format!("{display}\n{chain}"), debug)
}

/// What the runner logged, from every test of this binary (a global subscriber).
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .init();
    });
}

fn log_text() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

fn only_failure(err: &Error) -> (&str, &FailureKind) {
    assert_eq!(err.failures().len(), 1, "{err}");
    let f = &err.failures()[0];
    (f.service(), f.kind())
}

/// The error of the only failure, which must be `name` giving up.
fn gave_up<'a>(err: &'a Error, name: &str) -> &'a ServiceError {
    let (service, kind) = only_failure(err);
    assert_eq!(service, name);
    let FailureKind::GaveUp { error, .. } = kind else {
        panic!("{kind:?}")
    };
    error
}

/// A service that returns `Err(BadError)` once, and gives up.
fn returns_bad_error(display: bool, debug: bool, source: bool) -> Service {
    Service::without_context("bad-error", move || async move {
        Err::<(), _>(BadError {
            display,
            debug,
            source,
        })
    })
    .restart(Restart::Never)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_body_is_a_reported_failure() {
    quiet_panics();
    for _ in 0..ROUNDS {
        let svc = Service::new("body", |_ctx: ServiceContext| async move {
            tokio::task::yield_now().await;
            explode(|| panic!("body exploded"));
        })
        .restart(Restart::Never);
        let (err, text, _) = run(vec![svc], None).await;
        let error = gave_up(&err, "body");
        assert_eq!(error.panic_message(), Some("body exploded"));
        assert!(text.contains("panicked: body exploded"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_display_debug_or_source_of_an_error_is_written_in_its_place() {
    quiet_panics();
    capture_log();
    for round in 0..ROUNDS {
        let (display, debug, source) = match round % 3 {
            0 => (true, false, false),
            1 => (false, true, false),
            _ => (false, false, true),
        };
        let (err, text, debug_text) =
            run(vec![returns_bad_error(display, debug, source)], None).await;
        let (name, kind) = only_failure(&err);
        assert_eq!(name, "bad-error");
        assert!(matches!(kind, FailureKind::GaveUp { .. }), "{kind:?}");
        assert!(text.contains("service `bad-error` failed"), "{text}");
        if display {
            // The log line of the failure, with the error's chain.
            let log = log_text();
            assert!(
                log.contains("error=service `bad-error` run 1 failed: <the error's Display panicked: Display exploded>"),
                "{log}"
            );
        }
        if debug {
            assert!(
                debug_text.contains("<the error's Debug panicked: Debug exploded>"),
                "{debug_text}"
            );
        }
        if source {
            // Its source could not be asked for: the chain ends at it.
            let log = log_text();
            assert!(
                log.contains("error=service `bad-error` run 1 failed: a bad error"),
                "{log}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_drop_of_the_future_fails_the_stop() {
    quiet_panics();
    for round in 0..ROUNDS {
        // Without a context the future is dropped to stop it; with one, the body
        // returns when asked and its locals are dropped as it returns.
        let armed = Arc::new(Notify::new());
        let a = armed.clone();
        let svc = if round % 2 == 0 {
            Service::without_context("drops", move || {
                let a = a.clone();
                async move {
                    let _bomb = PanicOnDrop("Drop exploded");
                    a.notify_one();
                    std::future::pending::<()>().await;
                }
            })
        } else {
            Service::new("drops", move |ctx: ServiceContext| {
                let a = a.clone();
                async move {
                    let _bomb = PanicOnDrop("Drop exploded");
                    a.notify_one();
                    ctx.shutdown_requested().await;
                }
            })
        };
        let (err, text, _) = run(vec![svc], Some(armed)).await;
        let (name, kind) = only_failure(&err);
        assert_eq!(name, "drops");
        let FailureKind::StopFailed { error } = kind else {
            panic!("round {round}: {kind:?}")
        };
        assert!(
            error
                .panic_message()
                .is_some_and(|m| m.contains("Drop exploded")),
            "{error}"
        );
        assert!(text.contains("failed while stopping"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_drop_of_a_tied_task_is_reported() {
    quiet_panics();
    for round in 0..ROUNDS {
        let stubborn = round % 2 == 1;
        let armed = Arc::new(Notify::new());
        let a = armed.clone();
        let svc = Service::new("ties", move |ctx: ServiceContext| {
            let a = a.clone();
            async move {
                let c = ctx.clone();
                ctx.spawn(async move {
                    let _bomb = PanicOnDrop("task Drop exploded");
                    a.notify_one();
                    if stubborn {
                        std::future::pending::<()>().await;
                    }
                    c.shutdown_requested().await;
                });
                ctx.shutdown_requested().await;
            }
        });
        let (err, text, _) = run(vec![svc], Some(armed)).await;
        let (name, kind) = only_failure(&err);
        assert_eq!(name, "ties");
        if stubborn {
            // Aborted after the timeout: hung, like a body.
            assert!(
                matches!(kind, FailureKind::TasksHung { tasks: 1, .. }),
                "{kind:?}"
            );
        } else {
            let FailureKind::StopFailed { error } = kind else {
                panic!("{kind:?}")
            };
            // Its locals are dropped as it returns, inside its last poll.
            assert_eq!(error.panic_message(), Some("task Drop exploded"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_payload_whose_drop_panics_is_caught() {
    quiet_panics();
    for _ in 0..ROUNDS {
        let svc = Service::without_context("payload", || async {
            tokio::task::yield_now().await;
            explode(|| std::panic::panic_any(PanicOnDrop("payload Drop exploded")));
        })
        .restart(Restart::Never);
        let (err, _, _) = run(vec![svc], None).await;
        let error = gave_up(&err, "payload");
        assert_eq!(
            error.panic_message(),
            Some("panic with a non-string payload")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_factory_and_in_into_of_an_error_are_failures_too() {
    quiet_panics();
    struct BadInto;
    impl From<BadInto> for Box<dyn std::error::Error + Send + Sync> {
        fn from(_: BadInto) -> Self {
            panic!("Into exploded")
        }
    }
    for round in 0..ROUNDS {
        let svc = if round % 2 == 0 {
            Service::new(
                "factory",
                |_ctx: ServiceContext| -> std::future::Ready<()> { panic!("factory exploded") },
            )
        } else {
            Service::without_context("factory", || async { Err::<(), _>(BadInto) })
        }
        .restart(Restart::Never);
        let (err, _, _) = run(vec![svc], None).await;
        let error = gave_up(&err, "factory");
        let want = if round % 2 == 0 {
            "factory exploded"
        } else {
            "Into exploded"
        };
        assert_eq!(error.panic_message(), Some(want));
    }
}
