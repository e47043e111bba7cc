//! Process signals for the runner.
//!
//! On Unix, signal-hook delivers SIGINT, SIGTERM, SIGQUIT and SIGHUP to a stream while
//! a runner is active. signal-hook cannot uninstall its low-level handler, so once per
//! process we also register a "conditional default" action per signal, armed while no
//! runner is active: then the signal does what it would have done without us
//! (terminate, dump core), so a program gets the default behaviour back after its
//! runner ends.
//!
//! Under `#[servicekit::main]` ([`exit_on_second_signal`]) each runner also has a
//! backstop: a plain thread, outside the tokio runtime, that counts SIGINT and
//! SIGTERM. At the second one it gives the runner [`FORCE_DEADLINE`] to abort what is
//! left and return (exit code 130 through `main`), then ends the process with 130
//! itself: a task that blocks its thread, a `Drop` that never returns or a wedged
//! runtime cannot keep a process alive after a second Ctrl+C. A runner outside
//! `#[servicekit::main]` never ends the process (a library must not).

pub(crate) enum Kind {
    /// SIGINT, SIGTERM (`forcing`: a second one forces the shutdown) or SIGQUIT.
    Graceful { forcing: bool },
    /// SIGHUP.
    Reload,
}

#[cfg(unix)]
mod imp {
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use futures::StreamExt;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

    use super::Kind;

    const HANDLED: [i32; 4] = [SIGINT, SIGTERM, SIGQUIT, SIGHUP];

    /// `true` while no runner is active: the default action runs.
    struct Defaults {
        flag: Arc<AtomicBool>,
        active: Mutex<usize>,
    }

    fn defaults() -> io::Result<&'static Defaults> {
        static DEFAULTS: OnceLock<Defaults> = OnceLock::new();
        static INIT: Mutex<bool> = Mutex::new(false);
        let d = DEFAULTS.get_or_init(|| Defaults {
            flag: Arc::new(AtomicBool::new(true)),
            active: Mutex::new(0),
        });
        let mut done = INIT.lock().unwrap_or_else(|e| e.into_inner());
        if !*done {
            for sig in HANDLED {
                signal_hook::flag::register_conditional_default(sig, d.flag.clone())?;
            }
            *done = true;
        }
        Ok(d)
    }

    static EXIT_ON_SECOND: AtomicBool = AtomicBool::new(false);

    /// Called by `#[servicekit::main]`: from now on every runner has a backstop.
    pub(crate) fn exit_on_second_signal() {
        EXIT_ON_SECOND.store(true, Ordering::Relaxed);
    }

    /// How long a runner has, after the second SIGINT/SIGTERM, before its backstop
    /// ends the process with 130.
    pub(crate) const FORCE_DEADLINE: Duration = Duration::from_millis(700);

    /// Starts the backstop thread; closing the handle ends it.
    fn backstop() -> io::Result<signal_hook::iterator::Handle> {
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        std::thread::Builder::new()
            .name("servicekit-backstop".into())
            .spawn(move || {
                for (seen, _) in signals.forever().enumerate() {
                    if seen == 1 {
                        std::thread::sleep(FORCE_DEADLINE);
                        force_exit();
                    }
                }
            })?;
        Ok(handle)
    }

    /// Ends the process with 130 at once. The message is written from another
    /// thread, given a moment: a thread blocked while holding stderr's lock must not
    /// keep this one from exiting.
    fn force_exit() -> ! {
        let _ = std::thread::Builder::new().spawn(|| {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "Error: shutdown forced by a second signal; what was still running did not end within {FORCE_DEADLINE:?}: exiting"
            );
        });
        std::thread::sleep(Duration::from_millis(50));
        signal_hook::low_level::exit(130)
    }

    pub(crate) struct Signals {
        stream: signal_hook_tokio::Signals,
        backstop: Option<signal_hook::iterator::Handle>,
    }

    impl Signals {
        pub(crate) fn new() -> io::Result<Self> {
            let d = defaults()?;
            let stream = signal_hook_tokio::Signals::new(HANDLED)?;
            let backstop = if EXIT_ON_SECOND.load(Ordering::Relaxed) {
                Some(backstop()?)
            } else {
                None
            };
            let mut active = d.active.lock().unwrap_or_else(|e| e.into_inner());
            *active += 1;
            d.flag.store(false, Ordering::SeqCst);
            Ok(Signals { stream, backstop })
        }

        pub(crate) async fn next(&mut self) -> Kind {
            loop {
                match self.stream.next().await {
                    Some(SIGHUP) => {
                        tracing::info!(signal = "SIGHUP", "received signal");
                        return Kind::Reload;
                    }
                    Some(sig @ (SIGINT | SIGTERM | SIGQUIT)) => {
                        let name = match sig {
                            SIGINT => "SIGINT",
                            SIGTERM => "SIGTERM",
                            _ => "SIGQUIT",
                        };
                        tracing::info!(signal = name, "received signal");
                        return Kind::Graceful {
                            forcing: sig != SIGQUIT,
                        };
                    }
                    Some(_) => {}
                    None => std::future::pending::<()>().await,
                }
            }
        }
    }

    impl Drop for Signals {
        fn drop(&mut self) {
            self.stream.handle().close();
            if let Some(backstop) = &self.backstop {
                backstop.close();
            }
            if let Ok(d) = defaults() {
                let mut active = d.active.lock().unwrap_or_else(|e| e.into_inner());
                *active -= 1;
                if *active == 0 {
                    d.flag.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::Kind;

    /// No backstop on Windows yet: the second Ctrl+C forces the shutdown through
    /// the runtime only.
    pub(crate) fn exit_on_second_signal() {}

    pub(crate) struct Signals;

    impl Signals {
        pub(crate) fn new() -> Self {
            Signals
        }

        pub(crate) async fn next(&mut self) -> Kind {
            loop {
                if tokio::signal::ctrl_c().await.is_ok() {
                    tracing::info!(signal = "Ctrl+C", "received signal");
                    return Kind::Graceful { forcing: true };
                }
            }
        }
    }
}

pub(crate) use imp::{Signals, exit_on_second_signal};

/// The next signal, or never when signals are off.
pub(crate) async fn next(signals: &mut Option<Signals>) -> Kind {
    match signals {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}
