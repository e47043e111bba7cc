//! systemd's notify protocol, for units with `Type=notify` and `WatchdogSec=`.
//!
//! With [`enable`] (which `#[servicekit::main]` calls unless told
//! `systemd = false`), the program's main runner (the first it starts outside any
//! other runner's services) tells the service manager, over the datagram socket
//! named by `NOTIFY_SOCKET`:
//!
//! | message | when |
//! |---|---|
//! | `READY=1` | once every service is ready (called `ctx.ready()`, or has no context) or has ended |
//! | `STATUS=3 running, 1 restarting, 0 failed` | whenever those counts change |
//! | `RELOADING=1` + `MONOTONIC_USEC=…`, then `READY=1` | at a reload (SIGHUP), and once the services it restarts are ready again (so `Type=notify-reload` works too) |
//! | `STOPPING=1` | when the shutdown begins |
//! | `EXTEND_TIMEOUT_USEC=…` | every second of the shutdown while services still stop within their own timeouts |
//! | `WATCHDOG=1` | every half of `WATCHDOG_USEC`, while the runner's control task runs and no service's watchdog ([`Service::watchdog`](crate::Service::watchdog)) is stale (a running run past it, or a hung one still being stopped) |
//!
//! So systemd restarts a process that is really stuck (its runtime blocked, its
//! control task dead, or a service hung past its watchdog), and waits for a long
//! drain as long as it makes progress. Without `NOTIFY_SOCKET` nothing is done;
//! a message that cannot be sent is logged and dropped, never an error of the
//! program. A `WATCHDOG_PID` naming another process turns the pings off.
//!
//! `NOTIFY_SOCKET` stays in the environment (removing it is `unsafe` in a threaded
//! program): a child process the program starts inherits it. With systemd's default
//! `NotifyAccess=main`, what a child sends there is ignored; do not set
//! `NotifyAccess=all` for a program whose children speak the protocol too.
//!
//! # Examples
//!
//! ```
//! // Outside `#[servicekit::main]` (which does this by default):
//! let active = servicekit::ops::systemd::enable();
//! // `false` unless started by systemd with `Type=notify`.
//! # drop(active);
//! ```

#[cfg(unix)]
pub use imp::enable;

/// Does nothing and returns `false`: the notify protocol is for Unix.
///
/// # Examples
///
/// ```
/// assert!(!servicekit::ops::systemd::enable() || cfg!(unix));
/// ```
#[cfg(not(unix))]
pub fn enable() -> bool {
    false
}

#[cfg(unix)]
mod imp {
    use std::collections::HashMap;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use tokio::time::Instant;

    use crate::bus::{Overflow, RecvError, Subscription};
    use crate::lifecycle::observe::{self, ReloadSignal, RunnerWatch};
    use crate::lifecycle::{Event, ServiceState};

    /// Turns the notify protocol on for the program's main runner, if the process
    /// was started with `NOTIFY_SOCKET`; returns whether it was. Calling it again
    /// does nothing more.
    ///
    /// The runner followed is the first one the program starts outside any other
    /// runner's services: one voice to the service manager (a runner nested in a
    /// service, or a second one, does not tell it it is stopping).
    ///
    /// # Examples
    ///
    /// ```
    /// if servicekit::ops::systemd::enable() {
    ///     println!("systemd is listening");
    /// }
    /// ```
    pub fn enable() -> bool {
        static ENABLED: OnceLock<bool> = OnceLock::new();
        *ENABLED.get_or_init(|| {
            let Some(socket) = Socket::from_env() else {
                return false;
            };
            let socket = Arc::new(socket);
            let watchdog = watchdog_interval();
            let followed = AtomicBool::new(false);
            observe::add_observer(move |watch| {
                if !watch.is_top_level() || followed.swap(true, Ordering::AcqRel) {
                    return;
                }
                // Subscribed now, before the runner's first event.
                let follow = Follow::new(watch.clone(), socket.clone(), watchdog);
                drop(tokio::spawn(follow.run()));
            });
            true
        })
    }

    /// Half of `WATCHDOG_USEC` (at least 1 ms), if it is set for this process.
    fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
    }

    /// The service manager's socket.
    struct Socket {
        sock: std::os::unix::net::UnixDatagram,
        addr: std::os::unix::net::SocketAddr,
    }

    impl Socket {
        fn from_env() -> Option<Socket> {
            let name = std::env::var_os("NOTIFY_SOCKET")?;
            let addr = socket_addr(name.as_encoded_bytes())?;
            let sock = match std::os::unix::net::UnixDatagram::unbound() {
                Ok(sock) => sock,
                Err(e) => {
                    tracing::warn!(error = %e, "systemd notify: cannot make a socket");
                    return None;
                }
            };
            // A full socket drops the message rather than blocking the runtime.
            let _ = sock.set_nonblocking(true);
            Some(Socket { sock, addr })
        }

        fn send(&self, message: &str) {
            tracing::debug!(message, "systemd notify");
            if let Err(e) = self.sock.send_to_addr(message.as_bytes(), &self.addr) {
                tracing::warn!(error = %e, message, "systemd notify: the message was not sent");
            }
        }
    }

    /// `RELOADING=1` with the time it was sent on `CLOCK_MONOTONIC`, which
    /// `Type=notify-reload` needs to match the reload to the signal it sent.
    fn reloading() -> String {
        #[cfg(target_os = "linux")]
        {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
            format!("RELOADING=1\nMONOTONIC_USEC={usec}")
        }
        #[cfg(not(target_os = "linux"))]
        "RELOADING=1".to_owned()
    }

    /// `NOTIFY_SOCKET`: a path, or `@name` for an abstract socket (Linux).
    fn socket_addr(name: &[u8]) -> Option<std::os::unix::net::SocketAddr> {
        match name.first()? {
            b'/' => std::os::unix::net::SocketAddr::from_pathname(std::path::Path::new(
                std::ffi::OsStr::from_bytes(name),
            ))
            .ok(),
            #[cfg(target_os = "linux")]
            b'@' => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(&name[1..]).ok()
            }
            _ => {
                tracing::warn!(
                    "systemd notify: NOTIFY_SOCKET is neither a path nor an abstract name"
                );
                None
            }
        }
    }

    /// The notifier of one runner, subscribed when it starts.
    struct Follow {
        watch: RunnerWatch,
        events: Subscription<Event>,
        reloads: Subscription<ReloadSignal>,
        socket: Arc<Socket>,
        watchdog: Option<Duration>,
    }

    impl Follow {
        fn new(watch: RunnerWatch, socket: Arc<Socket>, watchdog: Option<Duration>) -> Follow {
            // Lossy: every event only prompts a look at the status.
            let events = watch
                .bus()
                .subscription::<Event>()
                .capacity(1024)
                .overflow(Overflow::DropOldest)
                .subscribe();
            let reloads = watch.reloads();
            Follow {
                watch,
                events,
                reloads,
                socket,
                watchdog,
            }
        }

        /// Follows the runner until it has ended, telling the service manager.
        async fn run(self) {
            let Follow {
                watch,
                mut events,
                mut reloads,
                socket,
                watchdog,
            } = self;
            let stopping = watch.shutdown_token();
            let finished = watch.finished();
            let mut state = Notifier {
                socket,
                ready_sent: false,
                reloading: None,
                status: String::new(),
                stopping: None,
            };
            let mut pings = watchdog.map(|every| {
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval
            });
            let mut drain = tokio::time::interval(Duration::from_secs(1));
            // The runner's bus closes before the runner has ended (its scope's tasks
            // still get their time): the other arms go on until then.
            let mut bus_open = true;
            state.look(&watch);
            loop {
                tokio::select! {
                    biased;
                    () = finished.cancelled() => break,
                    () = stopping.cancelled(), if state.stopping.is_none() => {
                        state.socket.send("STOPPING=1");
                        state.reloading = None;
                        state.stopping = Some(Drain { progress: Instant::now(), ended: ended(&watch) });
                        drain.reset();
                    }
                    r = reloads.recv(), if bus_open => match r {
                        Ok(reload) => {
                            if state.stopping.is_none() {
                                state.socket.send(&reloading());
                                state.reloading = Some(reload.restarting.iter().cloned().collect());
                                state.look(&watch);
                            }
                        }
                        Err(RecvError::Lagged(_)) => {}
                        Err(_) => bus_open = false,
                    },
                    ev = events.recv(), if bus_open => match ev {
                        Ok(_) | Err(RecvError::Lagged(_)) => {
                            // What came meanwhile is in the status already.
                            while events.try_recv().is_ok() {}
                            state.look(&watch);
                        }
                        Err(_) => bus_open = false,
                    },
                    _ = tick(&mut pings) => {
                        let stale = watch.stale_watchdogs();
                        if watch.control_alive() && stale.is_empty() {
                            state.socket.send("WATCHDOG=1");
                        } else {
                            tracing::warn!(?stale, "systemd watchdog: not pinging");
                        }
                    }
                    _ = drain.tick(), if state.stopping.is_some() => state.extend(&watch),
                }
            }
        }
    }

    async fn tick(pings: &mut Option<tokio::time::Interval>) {
        match pings {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// How many services have ended.
    fn ended(watch: &RunnerWatch) -> usize {
        watch
            .status()
            .iter()
            .filter(|s| s.state.is_terminal())
            .count()
    }

    struct Notifier {
        socket: Arc<Socket>,
        ready_sent: bool,
        /// During a reload: the services it restarts, with their run at the reload.
        reloading: Option<HashMap<Arc<str>, u64>>,
        /// The last `STATUS=` sent.
        status: String,
        stopping: Option<Drain>,
    }

    /// The shutdown's progress: when a service last ended, and how many had.
    struct Drain {
        progress: Instant,
        ended: usize,
    }

    impl Notifier {
        /// Sends what the current status calls for: the first `READY=1`, the end of
        /// a reload, a changed `STATUS=`.
        fn look(&mut self, watch: &RunnerWatch) {
            let status = watch.status();
            let all_ready = status.iter().all(|s| s.ready || s.state.is_terminal());
            if !self.ready_sent && all_ready && self.stopping.is_none() {
                self.ready_sent = true;
                self.socket.send("READY=1");
            }
            // A reload is over once each service it restarts runs again and is
            // ready, or has ended, or is gone.
            if let Some(restarting) = &self.reloading {
                let back = restarting.iter().all(|(name, run)| {
                    status
                        .iter()
                        .find(|s| s.name == *name)
                        .is_none_or(|s| s.state.is_terminal() || (s.runs > *run && s.ready))
                });
                if back && all_ready {
                    self.reloading = None;
                    self.socket.send("READY=1");
                }
            }
            let count = |f: fn(ServiceState) -> bool| status.iter().filter(|s| f(s.state)).count();
            let line = format!(
                "STATUS={} running, {} restarting, {} failed",
                count(|s| s == ServiceState::Running),
                count(|s| s == ServiceState::Restarting),
                count(|s| matches!(s, ServiceState::Failed | ServiceState::Aborted)),
            );
            if line != self.status {
                self.socket.send(&line);
                self.status = line;
            }
        }

        /// During the shutdown, once a second: more time, while services still end
        /// within the longest of their timeouts of each other.
        fn extend(&mut self, watch: &RunnerWatch) {
            let Some(drain) = &mut self.stopping else {
                return;
            };
            let now_ended = ended(watch);
            if now_ended > drain.ended {
                drain.ended = now_ended;
                drain.progress = Instant::now();
            }
            if drain.progress.elapsed() <= watch.max_shutdown_timeout() {
                self.socket.send("EXTEND_TIMEOUT_USEC=3000000");
            }
        }
    }
}
