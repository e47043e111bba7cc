//! Health, readiness and status over HTTP/1.1, and a live status page (feature
//! `http`), served by a supervised service of the runner it describes.
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` while the runner's control loop runs and no service's watchdog is stale; `503` naming what is wrong otherwise (liveness) |
//! | `GET /readyz` | `200 ready` once every service is ready (or has ended); `503` naming those that are not, and while stopping (readiness) |
//! | `GET /status` | JSON: `{"healthy", "ready", "services": [{"name", "state", "ready", "runs", "restarts", "last_error", "uptime_seconds"}]}` |
//! | `GET /metrics` | the runner's metrics in the Prometheus text format: `servicekit_healthy`, `servicekit_ready`, and per service `servicekit_service_state{state}`, `_ready`, `_runs_total`, `_restarts_total`, `_failures_total{kind}`, `_uptime_seconds`; and the depth and lag of the channels and queues of every hub given to [`channels::export`](super::channels::export) |
//! | `GET /` | a status page (HTML and CSS, a few lines of script), updated live from `/events` |
//! | `GET /events` | server-sent events: the `/status` JSON at once and after every change |
//!
//! The field names of `/status` are stable: `state` is one of `starting`,
//! `running`, `restarting`, `stopping`, `stopped`, `failed`, `aborted`;
//! `last_error` is the last failure's message (or `null`); `uptime_seconds` is the
//! current run's (or `null`).
//!
//! Hyper serves it (the leaner choice: axum's routing and extractors would add
//! weight for a few fixed paths). Requests are bounded: headers within 5 s and
//! 16 KiB, at most 256 connections at once (more are closed at once) of which 16
//! event streams, only `GET` and `HEAD`. The listener is bound when the service is made, so a bad address or
//! a port in use is an error before anything starts; the server is an ordinary
//! service (named `http`), so its failure is reported and restarted like any other.
//! When the runner shuts down, it goes on serving while the other services stop
//! (for at most 3 s, and within its own shutdown timeout), so a probe sees
//! `/readyz` answer "stopping" rather than a refused connection. It takes reloads
//! itself (`Reload::Hook`): a SIGHUP does not cut the probes.
//!
//! # Examples
//!
//! ```no_run
//! use servicekit::ops::http::Http;
//! use servicekit::{Runner, Service};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let http = Http::bind("127.0.0.1:9090")?;
//! println!("status page on http://{}/", http.local_addr());
//! let handle = Runner::new()
//!     .service(http.service())
//!     .service(Service::new("api", |ctx| async move { ctx.ready(); ctx.shutdown_requested().await }))
//!     .start()
//!     .await?;
//! handle.wait().await?;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::observe::RunnerWatch;
use crate::lifecycle::{Event, Runner, Service, ServiceContext};

/// Connections served at once; more are closed as soon as they are accepted.
const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a connection may buffer (request line and headers).
const MAX_BUF: usize = 16 * 1024;

/// A bound listener, to be served by [`service`](Http::service).
///
/// # Examples
///
/// ```
/// let http = servicekit::ops::http::Http::bind("127.0.0.1:0").unwrap();
/// assert!(http.local_addr().port() > 0);
/// ```
#[derive(Debug)]
pub struct Http {
    listener: Arc<StdListener>,
    addr: SocketAddr,
}

impl Http {
    /// Binds `addr` now: a bad address or a port in use is an error here, before
    /// anything starts.
    ///
    /// # Errors
    ///
    /// The error of binding.
    ///
    /// # Examples
    ///
    /// ```
    /// let taken = servicekit::ops::http::Http::bind("127.0.0.1:0").unwrap();
    /// let again = servicekit::ops::http::Http::bind(taken.local_addr());
    /// assert!(again.is_err());
    /// ```
    pub fn bind(addr: impl ToSocketAddrs) -> std::io::Result<Http> {
        let listener = StdListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(Http {
            listener: Arc::new(listener),
            addr,
        })
    }

    /// The address it listens on.
    ///
    /// # Examples
    ///
    /// ```
    /// let http = servicekit::ops::http::Http::bind("127.0.0.1:0").unwrap();
    /// println!("{}", http.local_addr());
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service (named `http`) that serves it, describing the runner it is
    /// given to.
    ///
    /// # Examples
    ///
    /// ```
    /// let http = servicekit::ops::http::Http::bind("127.0.0.1:0").unwrap();
    /// let runner = servicekit::Runner::new().service(http.service());
    /// # drop(runner);
    /// ```
    pub fn service(self) -> Service {
        let listener = self.listener;
        Service::new("http", move |ctx| serve(ctx, listener.clone()))
            // A reload need not cut the probes and the event streams.
            .reload(crate::lifecycle::Reload::Hook)
    }
}

/// What `#[servicekit::main(http = "...")]` does before `main`'s body: binds
/// `addr` (an error here ends the program before anything starts) and serves the
/// first runner the program starts.
pub(crate) fn serve_first_runner(addr: &str) -> std::io::Result<()> {
    let http = std::sync::Mutex::new(Some(Http::bind(addr)?));
    crate::lifecycle::observe::add_observer(move |watch| {
        let taken = http.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(http) = taken
            && let Err(e) = watch.add(http.service())
        {
            tracing::error!(error = %e, "http: the status service could not be added");
        }
    });
    Ok(())
}

/// `Runner::new().http(addr)?`: binds and adds the HTTP service.
///
/// # Examples
///
/// ```
/// use servicekit::ops::http::RunnerHttp;
/// let runner = servicekit::Runner::new().http("127.0.0.1:0").unwrap();
/// # drop(runner);
/// ```
pub trait RunnerHttp: Sized {
    /// Binds `addr` and adds the service that serves it.
    ///
    /// # Errors
    ///
    /// The error of binding.
    fn http(self, addr: impl ToSocketAddrs) -> std::io::Result<Self>;
}

impl RunnerHttp for Runner {
    fn http(self, addr: impl ToSocketAddrs) -> std::io::Result<Runner> {
        Ok(self.service(Http::bind(addr)?.service()))
    }
}

/// One run of the HTTP service: accepts until asked to stop, then goes on serving
/// (so `/readyz` says "stopping") until the other services have ended, for at most
/// [`DRAIN_SERVE`]. Each connection is a task tied to the run.
async fn serve(ctx: ServiceContext, listener: Arc<StdListener>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
    let watch = RunnerWatch::of(&ctx);
    // Cancelled when this run stops serving: ends its connections (and event
    // streams).
    let done = CancellationToken::new();
    let _done = done.clone().drop_guard();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let streams = Arc::new(Semaphore::new(MAX_EVENT_STREAMS));
    ctx.ready();
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        let accepted = match draining {
            None => match ctx.until_shutdown(listener.accept()).await {
                Some(accepted) => accepted,
                // Only a runner's shutdown is waited out (not a stop or a
                // restart of this service alone), within its own timeout.
                None if watch.shutdown_token().is_cancelled() => {
                    let serve_for = DRAIN_SERVE.min(
                        ctx.shutdown_timeout()
                            .saturating_sub(Duration::from_millis(500)),
                    );
                    draining = Some(tokio::time::Instant::now() + serve_for);
                    continue;
                }
                None => break,
            },
            Some(until) => tokio::select! {
                accepted = listener.accept() => accepted,
                // This service is the last one left.
                () = watch.until_one_left() => break,
                () = tokio::time::sleep_until(until) => break,
            },
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, go on.
                tracing::warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let site = Site {
            watch: watch.clone(),
            stop: done.clone(),
            streams: streams.clone(),
        };
        ctx.spawn(async move {
            let _permit = permit;
            connection(stream, site).await;
        });
    }
    Ok(())
}

/// How long the HTTP service goes on serving once asked to stop, while other
/// services still stop (within its default shutdown timeout).
const DRAIN_SERVE: Duration = Duration::from_secs(3);

/// What every connection of a run shares.
#[derive(Clone)]
struct Site {
    watch: RunnerWatch,
    /// Cancelled when the run stops serving.
    stop: CancellationToken,
    /// Room for event streams.
    streams: Arc<Semaphore>,
}

async fn connection(stream: tokio::net::TcpStream, site: Site) {
    let stop = site.stop.clone();
    let handler = hyper::service::service_fn(move |req| {
        let site = site.clone();
        async move { Ok::<_, Infallible>(answer(&req, &site)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BUF)
        .serve_connection(TokioIo::new(stream), handler);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r {
            tracing::debug!(error = %e, "http: connection ended");
        },
        () = stop.cancelled() => {}
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn with_type(mut response: Response<Body>, kind: &'static str) -> Response<Body> {
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(kind),
    );
    response
}

fn answer(req: &Request<hyper::body::Incoming>, site: &Site) -> Response<Body> {
    let watch = &site.watch;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    match req.uri().path() {
        "/healthz" => match health(watch) {
            Ok(()) => text(StatusCode::OK, "ok\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        "/readyz" => match readiness(watch) {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        "/status" => with_type(text(StatusCode::OK, status_json(watch)), "application/json"),
        "/metrics" => with_type(
            text(StatusCode::OK, metrics(watch)),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/" => with_type(
            text(StatusCode::OK, PAGE.into()),
            "text/html; charset=utf-8",
        ),
        "/events" => with_type(
            events(watch.clone(), site.stop.clone(), &site.streams),
            "text/event-stream",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Liveness: the control loop runs and no watchdog is stale.
fn health(watch: &RunnerWatch) -> Result<(), String> {
    if !watch.control_alive() {
        return Err("unhealthy: the runner's control loop has ended".into());
    }
    let stale = watch.stale_watchdogs();
    if !stale.is_empty() {
        return Err(format!("unhealthy: stale watchdog: {}", stale.join(", ")));
    }
    Ok(())
}

/// Readiness: not stopping, and every service ready (or ended).
fn readiness(watch: &RunnerWatch) -> Result<(), String> {
    if watch.shutdown_token().is_cancelled() {
        return Err("not ready: stopping".into());
    }
    let waiting: Vec<String> = watch
        .status()
        .iter()
        .filter(|s| !s.ready && !s.state.is_terminal())
        .map(|s| format!("{} ({})", s.name, s.state))
        .collect();
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(format!("not ready: {}", waiting.join(", ")))
    }
}

/// A label value, escaped for the Prometheus text format.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its help and type lines, then one line per labelled value.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    rows: impl IntoIterator<Item = String>,
) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for row in rows {
        let _ = writeln!(out, "{name}{row}");
    }
}

/// `/metrics`: the runner's metrics in the Prometheus text format (0.0.4).
fn metrics(watch: &RunnerWatch) -> String {
    const STATES: [&str; 7] = [
        "starting",
        "running",
        "restarting",
        "stopping",
        "stopped",
        "failed",
        "aborted",
    ];
    let status = watch.status();
    let per = |f: fn(&crate::ServiceStatus) -> String| -> Vec<String> {
        status
            .iter()
            .map(|s| format!("{{service=\"{}\"}} {}", label(&s.name), f(s)))
            .collect()
    };
    let mut out = String::new();
    family(
        &mut out,
        "servicekit_healthy",
        "gauge",
        "1 while the control loop runs and no watchdog is stale.",
        [format!(" {}", u8::from(health(watch).is_ok()))],
    );
    family(
        &mut out,
        "servicekit_ready",
        "gauge",
        "1 once every service is ready, and not stopping.",
        [format!(" {}", u8::from(readiness(watch).is_ok()))],
    );
    family(
        &mut out,
        "servicekit_service_state",
        "gauge",
        "1 for the state each service is in.",
        status.iter().flat_map(|s| {
            let (name, now) = (label(&s.name), s.state.to_string());
            STATES.iter().map(move |st| {
                format!(
                    "{{service=\"{name}\",state=\"{st}\"}} {}",
                    u8::from(now == *st)
                )
            })
        }),
    );
    family(
        &mut out,
        "servicekit_service_ready",
        "gauge",
        "1 while the service's current run is ready.",
        per(|s| u8::from(s.ready).to_string()),
    );
    family(
        &mut out,
        "servicekit_service_runs_total",
        "counter",
        "Runs started.",
        per(|s| s.runs.to_string()),
    );
    family(
        &mut out,
        "servicekit_service_restarts_total",
        "counter",
        "Restarts after a failure.",
        per(|s| s.restarts.to_string()),
    );
    family(
        &mut out,
        "servicekit_service_uptime_seconds",
        "gauge",
        "How long the current run has been going (0 when none is).",
        per(|s| s.uptime.map_or(0.0, |d| d.as_secs_f64()).to_string()),
    );
    family(
        &mut out,
        "servicekit_service_failures_total",
        "counter",
        "Failed runs, by kind: error, panic, task_error, task_panic, hung.",
        watch
            .failure_counts()
            .into_iter()
            .flat_map(|(name, counts)| {
                let name = label(&name);
                crate::error::FAILURE_LABELS
                    .iter()
                    .zip(counts)
                    .map(move |(kind, n)| format!("{{service=\"{name}\",kind=\"{kind}\"}} {n}"))
            }),
    );
    channel_families(&mut out);
    out
}

/// The exported hubs' channels and queues ([`super::channels`]), one family per
/// metric as the format requires.
fn channel_families(out: &mut String) {
    let samples = super::channels::sample();
    // (name, type, help, rows), in the order first seen.
    let mut families: Vec<(&'static str, bool, &'static str, Vec<String>)> = Vec::new();
    for sample in &samples {
        let labels = format!(
            "{{hub=\"{}\",name=\"{}\"}}",
            label(&sample.hub),
            label(&sample.stats.name)
        );
        for m in sample.metrics() {
            let row = format!("{labels} {}", m.value);
            match families.iter_mut().find(|f| f.0 == m.name) {
                Some(f) => f.3.push(row),
                None => families.push((m.name, m.counter, m.help, vec![row])),
            }
        }
    }
    for (name, counter, help, rows) in families {
        let kind = if counter { "counter" } else { "gauge" };
        family(out, name, kind, help, rows);
    }
}

fn status_json(watch: &RunnerWatch) -> String {
    let services: Vec<serde_json::Value> = watch
        .status()
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": &*s.name,
                "state": s.state.to_string(),
                "ready": s.ready,
                "runs": s.runs,
                "restarts": s.restarts,
                "last_error": s.last_error.as_ref().map(|e| crate::error::chain_string(e)),
                "uptime_seconds": s.uptime.map(|d| d.as_secs_f64()),
            })
        })
        .collect();
    serde_json::json!({
        "healthy": health(watch).is_ok(),
        "ready": readiness(watch).is_ok(),
        "services": services,
    })
    .to_string()
}

/// `/events`: the status at once, then after every event of the runner (at most
/// ten a second), and a comment every 15 s (which finds a peer that left), until
/// the run or the runner ends. At most [`MAX_EVENT_STREAMS`] at once: the probes
/// keep their room.
fn events(watch: RunnerWatch, stop: CancellationToken, streams: &Arc<Semaphore>) -> Response<Body> {
    let Ok(permit) = streams.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams\n".into(),
        );
    };
    let subscription = watch
        .bus()
        .subscription::<Event>()
        .capacity(256)
        .overflow(crate::bus::Overflow::DropOldest)
        .subscribe();
    let finished = watch.finished();
    let state = (true, watch, subscription, stop, finished, permit);
    let stream = futures::stream::unfold(
        state,
        |(first, watch, mut subscription, stop, finished, permit)| async move {
            let mut ping = false;
            if !first {
                tokio::select! {
                    r = subscription.recv() => {
                        if matches!(r, Err(crate::bus::RecvError::Closed)) {
                            return None;
                        }
                    }
                    () = tokio::time::sleep(KEEPALIVE) => ping = true,
                    () = stop.cancelled() => return None,
                    () = finished.cancelled() => return None,
                }
                if !ping {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    // What came meanwhile is in the status already.
                    while subscription.try_recv().is_ok() {}
                }
            }
            let text = if ping {
                ": ping\n\n".to_owned()
            } else {
                format!("data: {}\n\n", status_json(&watch))
            };
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(text))),
                (false, watch, subscription, stop, finished, permit),
            ))
        },
    );
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(StreamExt::boxed(
        stream,
    ))));
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    response
}

/// Event streams served at once.
const MAX_EVENT_STREAMS: usize = 16;
/// How often an idle event stream sends a comment.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The status page: a table, refreshed from `/events`.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>servicekit status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
  h1 { font-size: 1.3em; }
  table { border-collapse: collapse; min-width: 40em; }
  th, td { text-align: left; padding: .35em .8em; border-bottom: 1px solid #ddd; }
  td.state { font-weight: 600; }
  tr.running td.state { color: #1a7f37; }
  tr.restarting td.state, tr.starting td.state, tr.stopping td.state { color: #9a6700; }
  tr.failed td.state, tr.aborted td.state { color: #cf222e; }
  #summary { margin-bottom: 1em; }
  .error { color: #cf222e; font-family: ui-monospace, monospace; font-size: .9em; }
</style>
</head>
<body>
<h1>servicekit status</h1>
<div id="summary">connecting…</div>
<table>
  <thead><tr><th>service</th><th>state</th><th>ready</th><th>runs</th><th>restarts</th><th>uptime</th><th>last error</th></tr></thead>
  <tbody id="services"></tbody>
</table>
<script>
  function uptime(s) {
    if (s === null) return "";
    s = Math.floor(s);
    return (s >= 3600 ? Math.floor(s / 3600) + "h " : "") + (s >= 60 ? Math.floor(s / 60) % 60 + "m " : "") + s % 60 + "s";
  }
  function cell(row, text, cls) {
    const td = row.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
  }
  function render(status) {
    document.getElementById("summary").textContent =
      (status.healthy ? "healthy" : "unhealthy") + ", " + (status.ready ? "ready" : "not ready");
    const body = document.getElementById("services");
    body.replaceChildren();
    for (const s of status.services) {
      const row = body.insertRow();
      row.className = s.state;
      row.dataset.service = s.name;
      cell(row, s.name);
      cell(row, s.state, "state");
      cell(row, s.ready ? "yes" : "no");
      cell(row, s.runs);
      cell(row, s.restarts);
      cell(row, uptime(s.uptime_seconds));
      cell(row, s.last_error || "", "error");
    }
  }
  // Uptimes go on between events.
  let last = null, at = 0;
  new EventSource("/events").onmessage = (e) => {
    last = JSON.parse(e.data);
    at = Date.now();
    render(last);
  };
  setInterval(() => {
    if (last === null) return;
    const since = (Date.now() - at) / 1000;
    render({ ...last, services: last.services.map((s) =>
      ({ ...s, uptime_seconds: s.uptime_seconds === null ? null : s.uptime_seconds + since })) });
  }, 1000);
</script>
</body>
</html>
"#;
