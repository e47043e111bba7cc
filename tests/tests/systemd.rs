//! systemd's notify protocol on a real process: this test plays the service
//! manager (a datagram socket named by `NOTIFY_SOCKET`, `WATCHDOG_USEC`) for the
//! `notify` program and checks what it is told: `READY=1` after the last service is
//! ready, `WATCHDOG=1` pings that stop while a service's watchdog is stale and
//! come back, `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1` around SIGHUP, `STOPPING=1` and
//! `EXTEND_TIMEOUT_USEC` during the drain at SIGTERM.

#![cfg(target_os = "linux")]

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SIGHUP: i32 = 1;
const SIGTERM: i32 = 15;

fn signal(pid: u32, sig: i32) {
    let status = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// A message to the manager, with when it came (since the program started).
type Told = (Duration, String);
type Messages = Arc<Mutex<Vec<Told>>>;

fn messages_after(all: &Messages, from: Duration) -> Vec<(Duration, String)> {
    all.lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t >= from)
        .cloned()
        .collect()
}

#[test]
fn the_service_manager_is_told_ready_reloading_stopping_and_pinged_only_while_healthy() {
    let dir = std::env::temp_dir().join(format!("servicekit-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("notify.sock");
    let stall = dir.join("stall");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();

    let began = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_notify"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("STALL", &stall)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();

    let messages: Messages = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (messages, done) = (messages.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    messages.lock().unwrap().push((began.elapsed(), text));
                }
            }
        })
    };
    // Waits (20 s at most) until what the manager was told satisfies `done`.
    let wait_for = |what: &str, done: &dyn Fn(&[Told]) -> bool| {
        let since = Instant::now();
        while !done(&messages.lock().unwrap()) {
            assert!(
                since.elapsed() < Duration::from_secs(20),
                "never {what}: {:?}",
                messages.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let ping_count = |m: &[Told]| m.iter().filter(|(_, m)| m == "WATCHDOG=1").count();

    // Ready: db at 300 ms, api 200 ms after it; pinged every 500 ms.
    wait_for("ready and pinged 4 times", &|m| {
        m.iter().any(|(_, m)| m == "READY=1") && ping_count(m) >= 4
    });
    let ready_at = messages_after(&messages, Duration::ZERO)
        .iter()
        .find(|(_, m)| m == "READY=1")
        .map(|(t, _)| *t)
        .expect("READY=1");
    assert!(
        ready_at >= Duration::from_millis(480),
        "ready at {ready_at:?}"
    );
    let early = messages_after(&messages, Duration::ZERO);
    assert!(
        early.iter().any(|(_, m)| m.starts_with("STATUS=")),
        "{early:?}"
    );

    // A stall: the pings stop while `watched` is stale (from 1 s after its last
    // beat until its hung run is aborted, 2 s later) and come back after.
    std::fs::write(&stall, b"").unwrap();
    let stalled_at = began.elapsed();
    wait_for("pinged again after the stall", &|m| {
        m.iter()
            .any(|(t, m)| m == "WATCHDOG=1" && *t > stalled_at + Duration::from_millis(3500))
    });
    let pings: Vec<Duration> = messages_after(&messages, Duration::ZERO)
        .into_iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| t)
        .collect();
    let before: Vec<_> = pings.iter().filter(|&&t| t < stalled_at).collect();
    assert!(before.len() >= 4, "pings before the stall: {before:?}");
    for pair in before.windows(2) {
        let gap = *pair[1] - *pair[0];
        assert!(gap < Duration::from_millis(1000), "{gap:?} between pings");
    }
    // Pinged every 500 ms, but not for at least 1.5 s while stale.
    let longest = pings
        .windows(2)
        .filter(|p| p[1] > stalled_at)
        .map(|p| p[1] - p[0])
        .max()
        .expect("pings after the stall");
    assert!(
        longest >= Duration::from_millis(1500),
        "the pings did not stop while the watchdog was stale: longest gap {longest:?}"
    );
    assert!(
        pings
            .last()
            .is_some_and(|&t| t > stalled_at + Duration::from_millis(3500)),
        "the pings did not come back: {pings:?}"
    );

    // Reload.
    let reload_at = began.elapsed();
    let sent_hup = monotonic_usec();
    signal(pid, SIGHUP);
    wait_for("ready again after the reload", &|m| {
        m.iter().any(|(t, m)| *t >= reload_at && m == "READY=1")
    });
    // Stop.
    let stop_at = began.elapsed();
    signal(pid, SIGTERM);
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.join().unwrap();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");

    let sequence: Vec<(Duration, String)> = messages_after(&messages, Duration::ZERO)
        .into_iter()
        .filter(|(_, m)| !m.starts_with("STATUS=") && m != "WATCHDOG=1")
        .collect();
    let names: Vec<&str> = sequence
        .iter()
        .map(|(_, m)| m.split('=').next().unwrap())
        .collect();
    // One or more extensions: the drain lasts 2 s, one is sent each second.
    assert!(
        names.starts_with(&[
            "READY",
            "RELOADING",
            "READY",
            "STOPPING",
            "EXTEND_TIMEOUT_USEC"
        ]),
        "{sequence:?}"
    );
    assert!(
        names[4..].iter().all(|n| *n == "EXTEND_TIMEOUT_USEC"),
        "{sequence:?}"
    );
    // `RELOADING=1` carries when it was sent on CLOCK_MONOTONIC, after the SIGHUP
    // (what `Type=notify-reload` checks).
    let reloading = &sequence[1].1;
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(
        (sent_hup..sent_hup + 2_000_000).contains(&usec),
        "{usec} against {sent_hup}"
    );
    let at = |i: usize| sequence[i].0;
    assert!(at(1) >= reload_at);
    // Ready again once db, api and the drainer (2 s to stop) are back: not after
    // the 500 ms that db and api take.
    assert!(at(2) - at(1) >= Duration::from_millis(1500), "{sequence:?}");
    assert!(at(3) >= stop_at);
    assert!(at(4) - at(3) >= Duration::from_millis(900), "{sequence:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Now on CLOCK_MONOTONIC, in microseconds.
fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}
