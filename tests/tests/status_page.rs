//! The status page in a real browser (Chromium, headless): it lists every service,
//! and updates itself from the server-sent events, without a reload, when a service
//! fails and is restarted. A screenshot is saved to
//! `target/status-page.png` (the workspace's target directory).
//!
//! Chromium is installed by `.ci/run`; without it this test fails, it does not skip.

#![cfg(target_os = "linux")]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use servicekit::bus::EventBus;
use servicekit::ops::http::Http;
use servicekit::{Runner, Service};
use tokio::time::sleep;

fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("which")
            .arg(name)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return name;
        }
    }
    panic!("no Chromium: `.ci/run` installs it (apt-get install chromium)");
}

/// Runs headless Chromium on `url` with one action (`--dump-dom` or
/// `--screenshot=…`); it finishes once the page's event stream has closed.
fn browse(url: String, action: String) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let out = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1100,420",
                "--virtual-time-budget=30000",
                &action,
                &url,
            ])
            .stderr(Stdio::null())
            .output()
            .expect("chromium runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
}

/// A runner with the HTTP service and three others; `fail` makes `importer`'s
/// current run fail once. Returns a probe too: it waits until one more page has
/// opened its event stream (a subscription to the runner's events) than had when
/// it was made.
async fn runner(fail: Arc<AtomicBool>) -> (servicekit::RunnerHandle, String, PageOpened) {
    let http = Http::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", http.local_addr());
    let bus = EventBus::new();
    let handle = Runner::new()
        .signals(false)
        .bus(bus.clone())
        .service(http.service())
        .service(Service::new("db", |ctx| async move {
            ctx.ready();
            ctx.shutdown_requested().await
        }))
        .service(
            Service::new("importer", move |ctx| {
                let fail = fail.clone();
                async move {
                    ctx.ready();
                    while ctx
                        .until_shutdown(sleep(Duration::from_millis(20)))
                        .await
                        .is_some()
                    {
                        if fail.swap(false, Ordering::SeqCst) {
                            return Err("upstream closed the connection");
                        }
                    }
                    Ok(())
                }
            })
            .backoff(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .service(Service::new("api", |ctx| async move {
            ctx.ready();
            ctx.shutdown_requested().await
        }))
        .start()
        .await
        .unwrap();
    let before = bus.subscriber_count::<servicekit::Event>();
    (handle, url, PageOpened { bus, before })
}

struct PageOpened {
    bus: EventBus,
    before: usize,
}

impl PageOpened {
    /// Waits (a minute at most: a first Chromium start on a fresh machine is slow)
    /// until the page is listening to the events.
    async fn wait(&self) {
        let began = std::time::Instant::now();
        while self.bus.subscriber_count::<servicekit::Event>() <= self.before {
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "the page never opened its event stream"
            );
            sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_every_service_and_updates_itself() {
    let fail = Arc::new(AtomicBool::new(false));
    let (handle, url, opened) = runner(fail.clone()).await;
    let dom = browse(url, "--dump-dom".into());
    opened.wait().await;
    // The page is listening and has had time to render its first status; then a
    // failure, and its restart.
    sleep(Duration::from_millis(300)).await;
    fail.store(true, Ordering::SeqCst);
    let began = std::time::Instant::now();
    while !handle
        .status()
        .iter()
        .any(|s| &*s.name == "importer" && s.runs == 2 && s.restarts == 1)
    {
        assert!(began.elapsed() < Duration::from_secs(10), "never restarted");
        sleep(Duration::from_millis(20)).await;
    }
    // The stream sends at most ten updates a second: give the last one time to land.
    sleep(Duration::from_millis(1000)).await;
    // Closing the event stream lets Chromium finish and dump what it shows.
    handle.shutdown();
    handle.wait().await.unwrap();
    let dom = tokio::task::spawn_blocking(move || dom.join().unwrap())
        .await
        .unwrap();

    let rows: Vec<&str> = dom
        .split("data-service=\"")
        .skip(1)
        .map(|r| r.split('"').next().unwrap())
        .collect();
    assert_eq!(rows, ["http", "db", "importer", "api"], "{dom}");
    let importer = dom
        .split("data-service=\"importer\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap();
    // name, state, ready, runs, restarts, uptime, last error
    let cells: Vec<&str> = importer
        .split("<td")
        .skip(1)
        .map(|c| {
            let c = &c[c.find('>').unwrap() + 1..];
            c.split("</td>").next().unwrap()
        })
        .collect();
    assert_eq!(cells[0], "importer", "{importer}");
    assert_eq!(
        (cells[3], cells[4]),
        ("2", "1"),
        "runs and restarts: {importer}"
    );
    assert!(
        cells[6].contains("upstream closed the connection"),
        "{importer}"
    );
    // The summary line was written by the page's script, from the events.
    assert!(dom.contains("<div id=\"summary\">"), "{dom}");
    assert!(
        !dom.contains("connecting…"),
        "the page never heard from the server"
    );

    // A screenshot, for the record.
    let fail = Arc::new(AtomicBool::new(true));
    let (handle, url, opened) = runner(fail).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/status-page.png");
    let _ = std::fs::remove_file(&path);
    let shot = browse(url, format!("--screenshot={}", path.display()));
    opened.wait().await;
    sleep(Duration::from_millis(1000)).await;
    handle.shutdown();
    handle.wait().await.unwrap();
    tokio::task::spawn_blocking(move || shot.join().unwrap())
        .await
        .unwrap();
    let png = std::fs::read(&path).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}
