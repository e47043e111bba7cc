//! Health, readiness, status and events over HTTP, with a real client on real
//! sockets, in each state of a runner: starting, ready, a service hung past its
//! watchdog, a service failed and restarted, stopping; and requests that are
//! malformed, oversized or a thousand at once, which do not disturb the services.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use servicekit::ops::http::Http;
use servicekit::{Runner, Service, ServiceState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::sleep;

const MS: Duration = Duration::from_millis(1);

/// Sends `request` as is and reads the answer to its end: (status, body).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(request).await.expect("sends");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// `/healthz`, `/readyz` and `/status` (parsed), fetched one after another.
struct Probe {
    healthz: (u16, String),
    readyz: (u16, String),
    status: serde_json::Value,
}

impl Probe {
    async fn take(addr: std::net::SocketAddr) -> Probe {
        let healthz = get(addr, "/healthz").await;
        let readyz = get(addr, "/readyz").await;
        let status = serde_json::from_str(&get(addr, "/status").await.1).expect("status JSON");
        Probe {
            healthz,
            readyz,
            status,
        }
    }

    /// Probes until `done` holds, for at most 10 s. Each endpoint answers at request
    /// time and services change state on their own tasks, so a test waits for every
    /// fact it goes on to assert rather than sleeping for a guessed time.
    async fn until(addr: std::net::SocketAddr, what: &str, done: impl Fn(&Probe) -> bool) -> Probe {
        let began = std::time::Instant::now();
        loop {
            let p = Probe::take(addr).await;
            if done(&p) {
                return p;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "never {what}: {:?} {:?} {}",
                p.healthz,
                p.readyz,
                p.status
            );
            sleep(10 * MS).await;
        }
    }

    fn service(&self, name: &str) -> &serde_json::Value {
        self.status["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {}", self.status))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_in_every_state() {
    let http = Http::bind("127.0.0.1:0").unwrap();
    let addr = http.local_addr();
    let hang = Arc::new(AtomicBool::new(false));
    let h = hang.clone();
    let go = Arc::new(tokio::sync::Notify::new());
    let g = go.clone();
    let handle = Runner::new()
        .signals(false)
        .service(http.service())
        .service(Service::new("slow", move |ctx| {
            let g = g.clone();
            async move {
                if ctx.until_shutdown(g.notified()).await.is_some() {
                    ctx.ready();
                    ctx.shutdown_requested().await;
                }
            }
        }))
        .service(
            Service::new("watched", move |ctx| {
                let h = h.clone();
                async move {
                    ctx.ready();
                    loop {
                        if ctx.until_shutdown(sleep(50 * MS)).await.is_none() {
                            return;
                        }
                        if h.swap(false, Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        ctx.heartbeat();
                    }
                }
            })
            .watchdog(Duration::from_secs(1))
            .shutdown_timeout(Duration::from_secs(1))
            .backoff(MS, MS),
        )
        .service(Service::new("drainer", |ctx| async move {
            ctx.ready();
            ctx.shutdown_requested().await;
            sleep(Duration::from_secs(2)).await;
        }))
        .start()
        .await
        .unwrap();

    // Starting: alive, not ready, naming what is not (`slow` waits for `go`; the
    // others are ready as soon as they run).
    let probe = Probe::until(addr, "only slow not ready", |p| {
        p.readyz.1.contains("slow (running)") && !p.readyz.1.contains("watched")
    })
    .await;
    assert_eq!(probe.healthz, (200, "ok\n".into()));
    assert_eq!(probe.readyz.0, 503);
    assert_eq!(probe.status["ready"], false);

    // Ready (after 300 ms of running).
    sleep(300 * MS).await;
    go.notify_one();
    let probe = Probe::until(addr, "ready", |p| {
        p.readyz.0 == 200 && p.status["ready"] == true
    })
    .await;
    assert_eq!(probe.readyz, (200, "ready\n".into()));
    let status = probe.status;
    assert_eq!(status["healthy"], true);
    assert_eq!(status["ready"], true);
    let names: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["http", "slow", "watched", "drainer"]);
    let slow = &status["services"][1];
    assert_eq!(slow["state"], "running");
    assert_eq!(slow["ready"], true);
    assert_eq!(slow["runs"], 1);
    assert_eq!(slow["restarts"], 0);
    assert!(slow["last_error"].is_null());
    assert!(slow["uptime_seconds"].as_f64().unwrap() > 0.3);

    // Hung: stale from 1 s after its last beat until its run is aborted 1 s later;
    // unhealthy meanwhile, naming it.
    hang.store(true, Ordering::SeqCst);
    let probe = Probe::until(addr, "unhealthy", |p| {
        p.healthz.0 == 503 && p.status["healthy"] == false
    })
    .await;
    assert!(
        probe.healthz.1.contains("stale watchdog: watched"),
        "{:?}",
        probe.healthz
    );

    // Restarted: healthy again, the failure in its status.
    let probe = Probe::until(addr, "restarted", |p| {
        p.healthz.0 == 200
            && p.status["ready"] == true
            && p.service("watched")["restarts"] == 1
            && p.service("watched")["state"] == "running"
    })
    .await;
    let watched = probe.service("watched");
    assert!(
        watched["last_error"]
            .as_str()
            .unwrap()
            .contains("hung: no heartbeat"),
        "{watched}"
    );

    // The metrics, in the Prometheus text format.
    let (code, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(value("servicekit_healthy"), 1.0);
    assert_eq!(value("servicekit_ready"), 1.0);
    assert_eq!(
        value("servicekit_service_failures_total{service=\"watched\",kind=\"hung\"}"),
        1.0
    );
    assert_eq!(
        value("servicekit_service_failures_total{service=\"watched\",kind=\"error\"}"),
        0.0
    );
    assert_eq!(
        value("servicekit_service_restarts_total{service=\"watched\"}"),
        1.0
    );
    assert_eq!(
        value("servicekit_service_runs_total{service=\"watched\"}"),
        2.0
    );
    assert_eq!(
        value("servicekit_service_state{service=\"slow\",state=\"running\"}"),
        1.0
    );
    assert_eq!(
        value("servicekit_service_state{service=\"slow\",state=\"stopped\"}"),
        0.0
    );
    // Every sample line is a name, optional labels and a number; every family has
    // its TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, number) = line.rsplit_once(' ').expect(line);
        assert!(number.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        assert!(text.contains(&format!("# TYPE {name} ")), "{line}");
    }

    // The page, and the live events.
    let (code, page) = get(addr, "/").await;
    assert_eq!(code, 200);
    assert!(page.contains("new EventSource(\"/events\")"));
    let mut events = TcpStream::connect(addr).await.unwrap();
    events
        .write_all(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut first = vec![0u8; 8192];
    let n = events.read(&mut first).await.unwrap();
    let first = String::from_utf8_lossy(&first[..n]).into_owned();
    assert!(first.contains("text/event-stream"), "{first}");

    // Stopping: the server goes on answering while the drainer takes its 2 s.
    handle.shutdown();
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!((code, body.as_str()), (503, "not ready: stopping\n"));
    // The event stream saw the states change, then ends with the server.
    let mut rest = String::new();
    let ended =
        tokio::time::timeout(Duration::from_secs(5), events.read_to_string(&mut rest)).await;
    assert!(
        matches!(ended, Ok(Ok(_))),
        "the event stream did not end: {ended:?}"
    );
    assert!(first.contains("data: {\"healthy\":true"), "{first}");
    assert!(rest.contains("\"state\":\"stopping\""), "{rest}");
    let report = handle.wait().await.expect("a clean stop");
    assert_eq!(
        report.get("http").unwrap().state,
        ServiceState::Stopped,
        "{report}"
    );
    // Closed for good.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_a_thousand_connections_do_not_disturb_the_services() {
    let http = Http::bind("127.0.0.1:0").unwrap();
    let addr = http.local_addr();
    let handle = Runner::new()
        .signals(false)
        .service(http.service())
        .service(Service::new("steady", |ctx| async move {
            ctx.ready();
            ctx.shutdown_requested().await
        }))
        .start()
        .await
        .unwrap();
    sleep(100 * MS).await;

    assert_eq!(raw(addr, b"NONSENSE\r\n\r\n").await.0, 400);
    assert_eq!(get(addr, "/nope").await.0, 404);
    assert_eq!(
        raw(
            addr,
            b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .await
        .0,
        405
    );
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (code, _) = raw(addr, huge.as_bytes()).await;
    assert!(code == 431 || code == 0, "an oversized request: {code}");

    // A thousand at once: each is answered or closed, nothing else moves.
    let mut clients = Vec::new();
    for _ in 0..1000 {
        clients.push(tokio::spawn(async move { get(addr, "/healthz").await.0 }));
    }
    let mut answered = 0;
    for c in clients {
        match c.await.unwrap() {
            200 => answered += 1,
            0 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(answered > 0);
    assert_eq!(get(addr, "/healthz").await.0, 200);
    let status = handle.status();
    assert!(
        status
            .iter()
            .all(|s| s.runs == 1 && s.state == ServiceState::Running)
    );
    handle.shutdown();
    handle.wait().await.unwrap();
}

#[test]
fn a_port_in_use_is_an_error_before_anything_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = Http::bind(taken.local_addr().unwrap()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_depth_and_lag_of_an_exported_hubs_channels_are_in_metrics() {
    use servicekit::channel::Overflow;
    use servicekit::hub::Hub;

    let hub = Hub::<u32>::new();
    servicekit::ops::channels::export("test \"hub\"", &hub);
    let events = hub.channel("events").unwrap();
    let mut slow = events.connect_with(10);
    let _lossy = events
        .customer()
        .capacity(2)
        .overflow(Overflow::DropOldest)
        .connect();
    for i in 0..7 {
        events.try_send(i).unwrap();
    }
    slow.try_recv().unwrap();
    let jobs = hub.queue("jobs").unwrap();
    for i in 0..3 {
        jobs.try_send(i).unwrap();
    }

    let http = Http::bind("127.0.0.1:0").unwrap();
    let addr = http.local_addr();
    let handle = Runner::new()
        .signals(false)
        .service(http.service())
        .start()
        .await
        .unwrap();
    sleep(100 * MS).await;
    let scrape = || async {
        let (code, text) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        text
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    let ch =
        |metric: &str, name: &str| format!("{metric}{{hub=\"test \\\"hub\\\"\",name=\"{name}\"}}");

    let text = scrape().await;
    assert_eq!(
        value(&text, &ch("servicekit_channel_customers", "events")),
        2.0
    );
    assert_eq!(
        value(&text, &ch("servicekit_channel_sent_total", "events")),
        7.0
    );
    // `slow` has 6 of 7 to receive; the lossy customer kept 2 of 7.
    assert_eq!(value(&text, &ch("servicekit_channel_depth", "events")), 6.0);
    assert_eq!(
        value(&text, &ch("servicekit_channel_lagged_total", "events")),
        5.0
    );
    assert_eq!(
        value(&text, &ch("servicekit_channel_cut_off_total", "events")),
        0.0
    );
    assert_eq!(value(&text, &ch("servicekit_queue_depth", "jobs")), 3.0);
    assert_eq!(
        value(&text, &ch("servicekit_queue_sent_total", "jobs")),
        3.0
    );
    assert!(text.contains("# TYPE servicekit_channel_lagged_total counter"));
    assert!(text.contains("# TYPE servicekit_queue_depth gauge"));
    // Each family's samples are together, after its TYPE line, as the format asks.
    let mut seen = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        if seen.last() != Some(&name) {
            assert!(!seen.contains(&name), "{name} is split:\n{text}");
            seen.push(name);
        }
    }

    // The figures follow the channel, at each scrape.
    while slow.try_recv().is_ok() {}
    let text = scrape().await;
    assert_eq!(value(&text, &ch("servicekit_channel_depth", "events")), 2.0);

    // A dropped hub leaves the export.
    drop((hub, events, jobs, slow, _lossy));
    let text = scrape().await;
    assert!(!text.contains("servicekit_channel_depth"), "{text}");
    handle.shutdown();
    handle.wait().await.unwrap();
}
