//! A network partition between a consumer and Redis, with the project's own test
//! hosts: each consumer runs as a process in a network namespace of its own, joined
//! to the host by a veth pair; the host side of the link is taken down for 5 s
//! (packets vanish: no reset, no error, only silence) and brought back. Durable:
//! nothing lost. Ephemeral: the gap reported, the customer resumes. Needs root and
//! `ip` (iproute2), which `.ci/run` installs.
#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use servicekit::redis::{Options, RedisChannel};
use servicekit_tests::RedisServer;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `ip` ({e}); install iproute2 (apt-get install iproute2)")
    });
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace joined to the host by a veth pair: the host is `.1`, the
/// namespace `.2` of a /30 of its own.
struct TestHost {
    ns: String,
    host_if: String,
    host_ip: String,
}

impl TestHost {
    fn new() -> TestHost {
        let id = std::process::id();
        let net = 1 + (id % 250);
        let ns = format!("sk-part-{id}");
        let host_if = format!("skh{id}");
        let ns_if = format!("skn{id}");
        let host_ip = format!("10.201.{net}.1");
        let ns_ip = format!("10.201.{net}.2");
        // A namespace left by a crashed run of the same pid.
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        let host = TestHost {
            ns: ns.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &ns]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        in_ns(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        in_ns(&["link", "set", &ns_if, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        host
    }

    /// Runs `program` inside the namespace.
    fn spawn(&self, program: &str, envs: &[(&str, String)]) -> Child {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped())
            .spawn()
            .expect("spawn in the namespace")
    }

    fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    fn restore(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// The lines a child prints, as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Every line until `closed` (within `limit`).
fn until_closed(rx: &mpsc::Receiver<String>, limit: Duration) -> Vec<String> {
    let began = Instant::now();
    let mut all = Vec::new();
    loop {
        let left = limit.saturating_sub(began.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) if line == "closed" => return all,
            Ok(line) => all.push(line),
            Err(_) => panic!(
                "no `closed` within {limit:?}; last lines: {:?}",
                &all[all.len().saturating_sub(5)..]
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_cut_off_from_redis_for_five_seconds() {
    let host = TestHost::new();
    let server = RedisServer::start_with(&[
        "--bind",
        "127.0.0.1",
        &host.host_ip,
        "--protected-mode",
        "no",
    ]);
    let remote_url = format!("redis://{}:{}/", host.host_ip, server.port());
    let bin = env!("CARGO_BIN_EXE_redis_consumer");
    let mut consumers = Vec::new();
    for delivery in ["durable", "ephemeral"] {
        let mut child = host.spawn(
            bin,
            &[
                ("REDIS_URL", remote_url.clone()),
                ("CHANNEL", delivery.to_string()),
                ("DELIVERY", delivery.to_string()),
            ],
        );
        let rx = lines(&mut child);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            "connected"
        );
        consumers.push((child, rx));
    }

    // The producer's link is the loopback: only the consumers are cut off.
    let durable = RedisChannel::<u64>::open(server.url(), "durable", Options::durable())
        .await
        .unwrap();
    let ephemeral = RedisChannel::<u64>::open(server.url(), "ephemeral", Options::ephemeral())
        .await
        .unwrap();
    let produce = async {
        let began = Instant::now();
        let mut id = 0u64;
        let mut cut = false;
        let mut restored = false;
        while began.elapsed() < Duration::from_secs(12) {
            durable.send(&id).await.unwrap();
            ephemeral.send(&id).await.unwrap();
            id += 1;
            if !cut && began.elapsed() > Duration::from_millis(500) {
                host.cut();
                cut = true;
            }
            if !restored && began.elapsed() > Duration::from_millis(5500) {
                host.restore();
                restored = true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        id
    };
    let sent = produce.await;
    durable.close().await.unwrap();
    ephemeral.close().await.unwrap();

    let (mut durable_child, durable_rx) = consumers.remove(0);
    let (mut ephemeral_child, ephemeral_rx) = consumers.remove(0);
    let durable_lines = until_closed(&durable_rx, Duration::from_secs(30));
    let ephemeral_lines = until_closed(&ephemeral_rx, Duration::from_secs(30));
    let _ = durable_child.wait();
    let _ = ephemeral_child.wait();

    let ids = |lines: &[String]| -> Vec<u64> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("got ")?.parse().ok())
            .collect()
    };
    let errors = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with("error "))
            .cloned()
            .collect()
    };
    let got = ids(&durable_lines);
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    println!(
        "durable: {sent} sent, {} received, {} duplicates; reported {:?}",
        got.len(),
        got.len() - unique.len(),
        errors(&durable_lines)
    );
    assert_eq!(unique, (0..sent).collect(), "nothing lost");
    let got = ids(&ephemeral_lines);
    let reported = errors(&ephemeral_lines);
    println!(
        "ephemeral: {sent} sent, {} received; reported {reported:?}",
        got.len()
    );
    assert!(
        reported
            .iter()
            .any(|e| e.contains("Reconnected { may_have_missed: true }")),
        "{reported:?}"
    );
    assert!(got.len() < sent as usize, "the partition lost messages");
    assert_eq!(got.last(), Some(&(sent - 1)), "resumed after the partition");
}
