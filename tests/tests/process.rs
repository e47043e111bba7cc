//! Real processes: build the examples, run them, send real signals, and check exit codes
//! and output.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Builds every example once per test binary and returns the examples directory.
fn examples_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "servicekit-examples",
                "--examples",
            ])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the examples failed");
        // target/<profile>/deps/process-xxxx -> target/<profile>/examples
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("examples")
    })
    .clone()
}

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    /// Lines before this index were already matched by `expect_line`.
    cursor: usize,
    stderr: std::thread::JoinHandle<String>,
}

impl Proc {
    fn spawn(path: PathBuf) -> Proc {
        Proc::spawn_with(path, &[])
    }

    fn spawn_with(path: PathBuf, args: &[&str]) -> Proc {
        Proc::spawn_env(path, args, &[])
    }

    fn spawn_env(path: PathBuf, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(&path)
            .args(args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
        let out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Proc {
            child,
            lines,
            stdout: Vec::new(),
            cursor: 0,
            stderr,
        }
    }

    fn example(name: &str) -> Proc {
        Proc::spawn(examples_dir().join(name))
    }

    /// The `hooks` test program in one of its modes.
    fn hooks(mode: &str) -> Proc {
        Proc::spawn_with(PathBuf::from(env!("CARGO_BIN_EXE_hooks")), &[mode])
    }

    /// Waits for a stdout line containing `text`, after the last one matched.
    /// Waits for a stdout line containing `text` (as `expect_line`) and returns it.
    fn line_with(&mut self, text: &str) -> String {
        self.expect_line(text);
        self.stdout[self.cursor - 1].clone()
    }

    fn expect_line(&mut self, text: &str) {
        if let Some(i) = self.stdout[self.cursor..]
            .iter()
            .position(|l| l.contains(text))
        {
            self.cursor += i + 1;
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(text);
                    self.stdout.push(line);
                    if hit {
                        self.cursor = self.stdout.len();
                        return;
                    }
                }
                Err(_) => panic!("no line with `{text}`; stdout so far: {:#?}", self.stdout),
            }
        }
    }

    /// Reads stdout until `done` holds for all of it so far, for at most 20 s.
    fn wait_for_output(&mut self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&self.stdout) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(_) => panic!("never {what}; stdout so far: {:#?}", self.stdout),
            }
        }
    }

    fn signal(&self, sig: i32) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit (at most `limit`), returning status, elapsed, stdout, stderr.
    fn finish(mut self, limit: Duration) -> (ExitStatus, Duration, Vec<String>, String) {
        let began = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if began.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {limit:?}; stdout: {:#?}",
                    self.stdout
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = began.elapsed();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.stdout.push(line);
        }
        let stdout = std::mem::take(&mut self.stdout);
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        (status, elapsed, stdout, stderr.join().unwrap())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A failed assertion must not leave the program running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SIGHUP: i32 = 1;
const SIGINT: i32 = 2;
const SIGQUIT: i32 = 3;
const SIGTERM: i32 = 15;

fn graceful_stop_of_quickstart(sig: i32) {
    let mut p = Proc::example("01_quickstart");
    p.expect_line("EventLogger: received #1");
    p.signal(sig);
    let (status, elapsed, out, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    // The detector (which depends on the consumers) stops before them.
    let pos = |prefix: &str| {
        out.iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line: {out:#?}"))
    };
    assert!(pos("EventDetector: stopped") < pos("EventLogger: stopped"));
    assert!(pos("EventDetector: stopped") < pos("ErrorAlerter: stopped"));
    // Every event sent was logged (received, or drained after the detector stopped).
    let count = |prefixes: &[&str]| {
        out.iter()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .count()
    };
    assert_eq!(
        count(&["EventDetector: sent"]),
        count(&["EventLogger: received", "EventLogger: drained"]),
        "{out:#?}"
    );
    assert_eq!(
        out.last().unwrap(),
        "quickstart: all services stopped cleanly"
    );
}

#[test]
fn sigint_stops_the_quickstart_cleanly() {
    graceful_stop_of_quickstart(SIGINT);
}

#[test]
fn sigterm_stops_the_quickstart_cleanly() {
    graceful_stop_of_quickstart(SIGTERM);
}

#[test]
fn sigquit_stops_the_quickstart_cleanly() {
    graceful_stop_of_quickstart(SIGQUIT);
}

#[test]
fn a_service_reaching_its_restart_limit_makes_the_program_exit_1() {
    let p = Proc::example("02_restart");
    let (status, elapsed, out, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert!(elapsed < Duration::from_secs(10));
    assert_eq!(
        out.iter().filter(|l| l.contains("connecting")).count(),
        5,
        "{out:#?}"
    );
    assert!(
        err.contains("Error: service `flaky-upstream` gave up after 4 restarts"),
        "stderr: {err}"
    );
    assert!(
        err.contains("caused by: connection refused (attempt 5)"),
        "stderr: {err}"
    );
}

#[test]
fn one_sigint_waits_for_the_hung_service_timeout_then_exits_1_naming_it() {
    let mut p = Proc::example("03_graceful_shutdown");
    p.expect_line("stubborn: I will ignore");
    p.signal(SIGINT);
    let (status, elapsed, out, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    assert!(out.iter().any(|l| l == "drainer: drained"), "{out:#?}");
    assert!(
        out.iter().any(|l| l.starts_with("batcher: finished batch")),
        "{out:#?}"
    );
    assert!(
        err.contains("Error: service `stubborn` did not stop within 2s and was aborted"),
        "stderr: {err}"
    );
    // The exit message lists what did not stop cleanly, from the runner's report.
    assert!(
        err.contains(
            "services did not stop cleanly:\n  `stubborn`: aborted after 1 run, stop took 2."
        ),
        "stderr: {err}"
    );
    assert!(err.contains("its run was aborted"), "stderr: {err}");
}

#[test]
fn a_second_sigint_forces_exit_130_at_once() {
    let mut p = Proc::example("03_graceful_shutdown");
    p.expect_line("stubborn: I will ignore");
    p.signal(SIGINT);
    p.expect_line("drainer: drained");
    let began = Instant::now();
    p.signal(SIGINT);
    let (status, _, _, err) = p.finish(Duration::from_secs(10));
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(status.code(), Some(130), "stderr: {err}");
    assert!(
        err.contains("shutdown forced by a second signal; aborted: `stubborn`"),
        "{err}"
    );
    // Its end says it was aborted, not stopped.
    assert!(
        err.contains("service ended service=stubborn state=aborted"),
        "{err}"
    );
    assert!(
        err.contains("services did not stop cleanly:\n  `stubborn`: aborted after 1 run"),
        "{err}"
    );
}

#[test]
fn a_sigterm_after_sigint_forces_too() {
    let mut p = Proc::example("03_graceful_shutdown");
    p.expect_line("stubborn: I will ignore");
    p.signal(SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    p.signal(SIGTERM);
    let (status, elapsed, _, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "stderr: {err}");
    assert!(elapsed < Duration::from_secs(1));
}

#[test]
fn dependencies_start_in_order_sighup_restarts_in_order_and_stop_is_reversed() {
    let mut p = Proc::example("04_dependencies");
    p.expect_line("worker: ready");
    p.signal(SIGHUP);
    p.expect_line("worker: starting (run 2)");
    p.expect_line("worker: ready");
    p.signal(SIGINT);
    let (status, _, out, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    let lines: Vec<&str> = out
        .iter()
        .map(String::as_str)
        .filter(|l| !l.ends_with("ready") && !l.starts_with("dependencies"))
        .collect();
    assert_eq!(
        lines,
        [
            "db: starting (run 1)",
            "api: starting on port 8080 (run 1)",
            "worker: starting (run 1)",
            // SIGHUP: down in reverse, up in order, each once
            "worker: stopped",
            "api: stopped",
            "db: stopped",
            "db: starting (run 2)",
            "api: starting on port 8080 (run 2)",
            "worker: starting (run 2)",
            // SIGINT
            "worker: stopped",
            "api: stopped",
            "db: stopped",
        ]
    );
    assert_eq!(out.last().unwrap(), "dependencies: all stopped");
    assert!(err.contains("signal=\"SIGHUP\""), "{err}");
}

#[test]
fn the_channels_example_shows_each_policy_and_ends_by_itself() {
    let p = Proc::example("06_channels");
    let (status, _, out, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    let has = |l: &str| out.iter().any(|x| x == l);
    assert!(
        has("drop-oldest: told that 5 messages were dropped"),
        "{out:#?}"
    );
    assert!(has("drop-oldest: got 8"), "{out:#?}");
    assert!(has("disconnect: got 3"), "{out:#?}");
    assert!(
        has("disconnect: customer cut off for being too slow"),
        "{out:#?}"
    );
    assert!(has("close: send after close -> channel closed"), "{out:#?}");
    assert!(has("close: drained 3"), "{out:#?}");
    assert!(has("close: then channel closed"), "{out:#?}");
    assert_eq!(
        out.iter()
            .filter(|l| l.starts_with("backpressure: slow customer handled"))
            .count(),
        5
    );
}

#[test]
fn periodic_example_ticks_and_stops_on_sigterm() {
    let mut p = Proc::example("05_periodic");
    // When each line of `prefix` says it ran, in seconds since the program started.
    let times = |out: &[String], prefix: &str| -> Vec<f64> {
        out.iter()
            .filter(|l| l.starts_with(prefix))
            .map(|l| {
                let at = l.split(" at ").nth(1).expect(l).split_whitespace().next();
                at.and_then(|t| t.strip_suffix('s')?.parse().ok()).expect(l)
            })
            .collect()
    };
    p.wait_for_output("three ticks and four compactor runs", |out| {
        times(out, "metrics: tick at").len() >= 3 && times(out, "compactor: run").len() >= 4
    });
    p.signal(SIGTERM);
    let (status, _, out, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    // A load can only delay a tick: none comes before its period (times are
    // printed to a tenth of a second).
    for (i, at) in times(&out, "metrics: tick at").iter().enumerate() {
        assert!(*at >= i as f64 * 0.5 - 0.1, "tick {i} at {at}s: {out:#?}");
    }
    // The third compactor run takes 700 ms, and the next one never starts while it
    // runs.
    let compactor = times(&out, "compactor: run");
    assert!(compactor[3] - compactor[2] >= 0.6, "{out:#?}");
}

fn default_action_is_back_after_the_runner(sig: i32) {
    let mut p = Proc::spawn(PathBuf::from(env!("CARGO_BIN_EXE_after_runner")));
    p.expect_line("runner ended");
    p.signal(sig);
    let (status, elapsed, out, _) = p.finish(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(sig), "{status:?}");
    assert!(elapsed < Duration::from_secs(2));
    assert!(!out.iter().any(|l| l == "still alive"));
}

#[test]
fn sigint_kills_by_default_once_the_runner_has_ended() {
    default_action_is_back_after_the_runner(SIGINT);
}

#[test]
fn sighup_and_sigterm_kill_by_default_once_the_runner_has_ended() {
    default_action_is_back_after_the_runner(SIGHUP);
    default_action_is_back_after_the_runner(SIGTERM);
}

#[test]
fn the_pipeline_examples_end_by_themselves_with_their_results() {
    let run = |name: &str| {
        let (status, _, out, err) = Proc::example(name).finish(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "{name} stderr: {err}");
        out
    };
    let out = run("07_pipeline");
    let outputs: Vec<&String> = out.iter().filter(|l| l.starts_with("output: ")).collect();
    assert_eq!(outputs.len(), 10);
    assert_eq!(outputs[0], "output: Processed: 2", "input order is kept");
    assert_eq!(outputs[9], "output: Processed: 20");
    assert!(out.iter().any(|l| l == "completed: 10 items"));

    let out = run("08_pipeline_errors");
    assert!(
        out.iter().any(|l| l == "finished: 6 successes, 4 errors"),
        "{out:#?}"
    );
    assert!(
        out.iter()
            .any(|l| l == "error in stage `process`: cannot process multiple of 7: 14")
    );

    let out = run("09_event_enrichment");
    assert!(
        out.iter()
            .any(|l| l == "summary: 5 events processed, 1 rejected"),
        "{out:#?}"
    );
    assert!(
        out.iter()
            .any(|l| l == "processed: purchase for user2 (segment: standard)")
    );

    let out = run("10_windowing");
    assert_eq!(
        out.last().unwrap(),
        "windowing: 50 metrics, 50 windows computed"
    );
    assert_eq!(out.iter().filter(|l| l.starts_with("window ")).count(), 5);
}

/// Runs `command` under bash with its output piped into `head`, which exits after
/// a few lines and closes the pipe; returns the program's own exit code and how long
/// the whole pipeline took.
fn through_head(command: &str) -> (Option<i32>, Duration) {
    let began = Instant::now();
    let script =
        format!("timeout -s KILL 20 {command} | head -2 >/dev/null; exit ${{PIPESTATUS[0]}}");
    let status = Command::new("bash")
        .args(["-c", &script])
        .env("RUST_LOG", "info")
        .status()
        .unwrap();
    (status.code(), began.elapsed())
}

#[test]
fn the_restart_example_exits_1_by_itself_when_head_closes_its_output() {
    let exe = examples_dir().join("02_restart");
    let exe = exe.display();
    // stdout and stderr into one pipe that `head` closes; then stderr alone.
    for command in [format!("{exe} 2>&1"), format!("{exe} 2>&1 >/dev/null")] {
        let (code, elapsed) = through_head(&command);
        // 137 would be `timeout` killing a hung program.
        assert_eq!(code, Some(1), "{command}");
        assert!(elapsed < Duration::from_secs(5), "{command}: {elapsed:?}");
    }
}

#[test]
fn an_error_whose_display_panics_is_reported_and_the_program_exits_1() {
    let p = Proc::hooks("display");
    let (status, elapsed, _, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(
        err.contains(
            "Error: service `bad-display` failed\n  caused by: service `bad-display` run 1 failed\n  caused by: <the error's Display panicked: Display exploded>"
        ),
        "stderr: {err}"
    );
}

#[test]
fn a_panicking_drop_in_a_service_without_context_is_a_failure_to_stop() {
    let mut p = Proc::hooks("drop");
    p.expect_line("bad-drop: running");
    p.signal(SIGINT);
    let (status, elapsed, _, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(
        err.contains("Error: service `bad-drop` failed while stopping"),
        "stderr: {err}"
    );
    assert!(
        err.contains("dropping its future panicked: Drop of the held value exploded"),
        "stderr: {err}"
    );
}

/// A second signal ends the process with 130 within a second of it, however wedged
/// it is: the runtime's only thread blocked by a service, or a `Drop` that never
/// returns during the forced shutdown. 50 runs in all, three at a time. The second
/// signal comes 300 ms after the first, so the two are never merged into one
/// pending signal; the clock starts before `kill` is forked, so what is measured
/// is an upper bound.
#[test]
fn a_second_signal_always_ends_the_process_with_130_within_a_second() {
    const RUNS: usize = 50;
    let one = |mode: &str, sig: i32| {
        let mut p = Proc::hooks(mode);
        p.expect_line(if mode == "block-body" {
            "blocker: blocking the thread"
        } else {
            "stuck: ignoring shutdown"
        });
        p.signal(SIGINT);
        std::thread::sleep(Duration::from_millis(300));
        let began = Instant::now();
        p.signal(sig);
        let (status, _, _, err) = p.finish(Duration::from_secs(5));
        let elapsed = began.elapsed();
        assert_eq!(status.code(), Some(130), "{mode}: stderr: {err}");
        assert!(elapsed < Duration::from_secs(1), "{mode}: {elapsed:?}");
        assert!(
            err.contains("shutdown forced by a second signal"),
            "{mode}: stderr: {err}"
        );
    };
    std::thread::scope(|s| {
        for lane in 0..3 {
            s.spawn(move || {
                for i in (lane..RUNS).step_by(3) {
                    let mode = if i % 2 == 0 {
                        "block-body"
                    } else {
                        "block-drop"
                    };
                    one(mode, if i % 4 < 2 { SIGINT } else { SIGTERM });
                }
            });
        }
    });
}

#[test]
fn the_event_bus_example_reacts_to_every_event_and_ends_by_itself() {
    let p = Proc::example("11_event_bus");
    let (status, _, out, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    let has = |l: &str| out.iter().any(|x| x == l);
    assert!(has("ALERT for alan: login from 203.0.113.9"), "{out:#?}");
    assert!(
        has("order 2 rejected: no items (processing continues)"),
        "{out:#?}"
    );
    assert!(has("order 3 for alan: 1 item(s), 239.00"), "{out:#?}");
    assert!(has("login stats: {\"ada\": 2, \"alan\": 1}"), "{out:#?}");
    assert!(has("revenue: 368.90"), "{out:#?}");
    assert!(
        out.iter()
            .any(|l| l.starts_with("watcher: flaky_importer failed")),
        "{out:#?}"
    );
}

#[test]
fn the_request_response_example_answers_each_request_and_ends_by_itself() {
    let p = Proc::example("12_request_response");
    let (status, _, out, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    for id in 1..=10 {
        let want = format!("request {id}: [\"users-{id}#1\", \"users-{id}#2\", \"users-{id}#3\"]");
        assert!(out.contains(&want), "{want} missing: {out:#?}");
    }
    let timeout = |id: u32, ms: u32| {
        format!(
            "request {id}: request `12_request_response::DataRequest` got no response within {ms}ms"
        )
    };
    assert!(out.contains(&timeout(11, 200)), "{out:#?}");
    assert!(out.contains(&timeout(12, 300)), "{out:#?}");
    assert!(err.contains("the query engine crashed"), "{err}");
    assert_eq!(out.last().map(String::as_str), Some("done"));
}

#[test]
fn the_hub_example_pipes_fans_out_replays_and_ends_by_itself() {
    let p = Proc::example("13_hub");
    let (status, _, out, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    let expected = [
        "stage3: ALPHA",
        "stage3: BETA",
        "stage3: GAMMA",
        "stage3: end of stream",
        "broadcast delivered to [\"subscriber/0\", \"subscriber/1\", \"subscriber/2\"]",
        "broadcast skipped (no customers): [\"subscriber/idle\"]",
        "subscriber/0 got event data",
        "subscriber/1 got event data",
        "subscriber/2 got event data",
        "late reader: login grace",
        "late reader: login edsger",
        "late reader: login barbara",
        "late reader: login donald",
    ];
    assert_eq!(&out[..expected.len()], expected, "{out:#?}");
}

/// A plain HTTP/1.1 GET: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[test]
fn the_operations_example_serves_its_probes_and_stops_on_sigterm() {
    let mut p = Proc::spawn_env(
        examples_dir().join("15_operations"),
        &[],
        &[("HTTP_ADDR", "127.0.0.1:0")],
    );
    let line = p.line_with("status page: http://");
    let addr = line
        .trim_start_matches("status page: http://")
        .trim_end_matches('/')
        .to_owned();
    // Not ready until db (1 s) and api are.
    let (code, body) = http_get(&addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("db"), "{body}");
    p.expect_line("api: ready");
    let began = Instant::now();
    while http_get(&addr, "/readyz").0 != 200 {
        assert!(began.elapsed() < Duration::from_secs(5), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_owned()));
    // The importer fails after 3 s and is restarted: the status says so.
    let began = Instant::now();
    loop {
        let (code, body) = http_get(&addr, "/status");
        assert_eq!(code, 200);
        if body.contains("upstream closed the connection during batch 1") {
            assert!(body.contains("\"name\":\"importer\""), "{body}");
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(8), "{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, metrics) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics
            .contains("servicekit_service_failures_total{service=\"importer\",kind=\"error\"} 1"),
        "{metrics}"
    );
    // The hub's queue is exported: jobs queued by `api`, taken by `importer`.
    let sent = metrics
        .lines()
        .find_map(|l| l.strip_prefix("servicekit_queue_sent_total{hub=\"main\",name=\"jobs\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no queue in {metrics}"));
    assert!(sent >= 10, "{metrics}");
    assert!(
        metrics.contains("servicekit_queue_capacity{hub=\"main\",name=\"jobs\"} 1000"),
        "{metrics}"
    );
    p.signal(SIGTERM);
    let (status, _, out, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert!(
        out.iter()
            .any(|l| l.starts_with("`db`: stopped after 1 run")),
        "{out:#?}"
    );
}

#[test]
fn main_with_http_serves_the_first_runner_and_a_port_in_use_ends_it_first() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_main_http"));
    let addr = "127.0.0.1:39517";
    // Taken: the program ends with 1 before its body runs.
    {
        let _taken = std::net::TcpListener::bind(addr).expect("the test's port is free");
        let p = Proc::spawn(bin.clone());
        let (status, elapsed, out, err) = p.finish(Duration::from_secs(10));
        assert_eq!(status.code(), Some(1), "stderr: {err}");
        assert!(elapsed < Duration::from_secs(2));
        assert!(out.is_empty(), "the body ran: {out:?}");
        assert!(
            err.contains("Error: cannot listen on 127.0.0.1:39517:"),
            "{err}"
        );
    }
    // Free: served.
    let mut p = Proc::spawn(bin);
    p.expect_line("started");
    let began = Instant::now();
    while http_get(addr, "/readyz").0 != 200 {
        assert!(began.elapsed() < Duration::from_secs(5), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, body) = http_get(addr, "/status");
    assert_eq!(code, 200);
    assert!(body.contains("\"name\":\"api\""), "{body}");
    assert!(body.contains("\"name\":\"http\""), "{body}");
    p.signal(SIGTERM);
    let (status, _, _, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {err}");
}

/// Every endpoint, each time: `(/healthz, /readyz, /status as JSON, /metrics)`.
struct Probe {
    healthz: (u16, String),
    readyz: (u16, String),
    status: serde_json::Value,
    metrics: String,
}

impl Probe {
    fn take(addr: &str) -> Probe {
        let (code, status) = http_get(addr, "/status");
        assert_eq!(code, 200, "{status}");
        let (code, metrics) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "{metrics}");
        Probe {
            healthz: http_get(addr, "/healthz"),
            readyz: http_get(addr, "/readyz"),
            status: serde_json::from_str(&status).expect("/status is JSON"),
            metrics,
        }
    }

    /// Takes probes until `done` holds for one (within 10 s), and returns it.
    fn until(addr: &str, what: &str, done: impl Fn(&Probe) -> bool) -> Probe {
        let began = Instant::now();
        loop {
            let p = Probe::take(addr);
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
            std::thread::sleep(Duration::from_millis(20));
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

    /// The value of one series of `/metrics` (which must be there).
    fn metric(&self, series: &str) -> f64 {
        self.metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{}", self.metrics))
    }
}

#[test]
fn every_endpoint_of_a_real_process_in_every_state() {
    let dir = std::env::temp_dir().join(format!("servicekit-http-states-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let touch = |name: &str| std::fs::write(dir.join(name), b"").unwrap();
    let mut p = Proc::spawn_env(
        PathBuf::from(env!("CARGO_BIN_EXE_http_states")),
        &[],
        &[("STATE_DIR", dir.to_str().unwrap())],
    );
    let addr = p
        .line_with("http://")
        .trim_start_matches("http://")
        .to_owned();

    // Starting: alive, not ready, naming the service that is not.
    let probe = Probe::until(&addr, "served", |p| p.healthz.0 == 200);
    assert_eq!(probe.readyz.0, 503);
    assert!(probe.readyz.1.contains("slow"), "{:?}", probe.readyz);
    assert_eq!(probe.status["ready"], false);
    assert_eq!(probe.service("slow")["ready"], false);
    assert_eq!(probe.metric("servicekit_ready"), 0.0);
    assert_eq!(
        probe.metric("servicekit_service_ready{service=\"slow\"}"),
        0.0
    );
    let (code, page) = http_get(&addr, "/");
    assert_eq!(code, 200);
    assert!(page.contains("<html"), "{page}");

    // Ready.
    touch("ready");
    // Each endpoint is answered at request time: the probe waits until all agree.
    let probe = Probe::until(&addr, "ready", |p| {
        p.readyz.0 == 200 && p.metric("servicekit_ready") == 1.0
    });
    assert_eq!(probe.readyz.1, "ready\n");
    assert_eq!(probe.healthz, (200, "ok\n".to_owned()));
    assert_eq!(probe.status["healthy"], true);
    assert_eq!(probe.service("slow")["state"], "running");
    assert_eq!(probe.metric("servicekit_ready"), 1.0);

    // One failing: its error in the status and the metrics, restarted after 100 ms.
    touch("fail");
    let probe = Probe::until(&addr, "restarted after failing", |p| {
        p.service("flaky")["restarts"] == 1 && p.service("flaky")["state"] == "running"
    });
    assert_eq!(
        probe.service("flaky")["last_error"],
        "service `flaky` run 1 failed: flaky: lost its upstream"
    );
    assert_eq!(
        probe.metric("servicekit_service_failures_total{service=\"flaky\",kind=\"error\"}"),
        1.0
    );
    assert_eq!(probe.healthz.0, 200);

    // One hung: unhealthy, naming it, until its run is aborted and restarted.
    touch("hang");
    let probe = Probe::until(&addr, "unhealthy", |p| {
        p.healthz.0 == 503 && p.status["healthy"] == false
    });
    assert!(
        probe.healthz.1.contains("stale watchdog: watched"),
        "{:?}",
        probe.healthz
    );
    assert_eq!(probe.status["healthy"], false);
    let probe = Probe::until(&addr, "healthy again", |p| {
        p.healthz.0 == 200 && p.service("watched")["restarts"] == 1
    });
    assert!(
        probe.service("watched")["last_error"]
            .as_str()
            .unwrap()
            .contains("hung: no heartbeat"),
        "{}",
        probe.status
    );
    assert_eq!(
        probe.metric("servicekit_service_failures_total{service=\"watched\",kind=\"hung\"}"),
        1.0
    );

    // Stopping: the server answers while `drainer` takes its second. Readiness
    // turns at the signal; a service's state turns when its supervisor next runs,
    // a moment later, so the probe waits for both.
    p.signal(SIGTERM);
    let probe = Probe::until(&addr, "stopping", |p| {
        p.readyz.0 == 503 && p.service("drainer")["state"] == "stopping"
    });
    assert_eq!(probe.readyz.1, "not ready: stopping\n");
    assert_eq!(probe.metric("servicekit_ready"), 0.0);
    let (status, _, _, err) = p.finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_distributed_example_shares_orders_between_workers_and_audits_them_all() {
    let server = servicekit_tests::RedisServer::start();
    let p = Proc::spawn_env(
        examples_dir().join("14_distributed"),
        &[],
        &[("REDIS_URL", &server.url()), ("RUST_LOG", "warn")],
    );
    let (status, _, out, err) = p.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "stdout: {out:#?}\nstderr: {err}");
    let handled = |who: &str| -> Vec<Vec<u32>> {
        out.iter()
            .filter(|l| l.starts_with(who) && l.contains(": handled "))
            .map(|l| {
                let list = l.rsplit_once('[').unwrap().1.trim_end_matches(']');
                list.split(", ")
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect()
            })
            .collect()
    };
    let audit = handled("audit");
    assert_eq!(audit, [(1..=20).collect::<Vec<u32>>()], "{out:#?}");
    let workers = handled("worker");
    assert_eq!(workers.len(), 2, "{out:#?}");
    let mut all: Vec<u32> = workers.concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=20).collect::<Vec<u32>>(),
        "each order once: {out:#?}"
    );
    assert!(
        workers.iter().all(|w| !w.is_empty()),
        "both worked: {out:#?}"
    );
    assert_eq!(
        out.iter()
            .filter(|l| l.contains("notice: orders are coming"))
            .count(),
        3,
        "{out:#?}"
    );
    assert!(out.iter().any(|l| l == "producer: every consumer is done"));
}
