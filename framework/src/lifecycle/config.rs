//! A service's supervision settings: restart policy, backoff, restart intensity,
//! what to do on giving up, shutdown timeout; their defaults and their validation.

use std::time::Duration;

use crate::error::ConfigError;

/// When a service that ended is run again (OTP's restart types).
///
/// | policy | OTP name | re-run after `Ok` | re-run after `Err` or panic |
/// |---|---|---|---|
/// | [`Always`](Restart::Always) | permanent | yes | yes |
/// | [`OnFailure`](Restart::OnFailure) (default) | transient | no | yes |
/// | [`Never`](Restart::Never) | temporary | no | no |
///
/// # Examples
///
/// ```
/// use servicekit::{Restart, Service};
/// let s = Service::without_context("tick", || async {}).restart(Restart::Always);
/// assert_eq!(s.name(), "tick");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Re-run after every end, clean or not (a clean end is re-run after the base
    /// backoff delay and does not count towards `max_restarts`).
    Always,
    /// Re-run after an error or a panic; a clean return ends the service.
    #[default]
    OnFailure,
    /// Never re-run; an error or panic ends the service as failed.
    Never,
}

/// What happens when a service fails and may not be restarted any more.
///
/// # Examples
///
/// ```
/// use servicekit::{OnGiveUp, Service};
/// let s = Service::without_context("optional", || async {}).on_give_up(OnGiveUp::Ignore);
/// # drop(s);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnGiveUp {
    /// Shut the whole runner down and return an error naming the service (escalation,
    /// as an OTP supervisor that exceeds its intensity). The default.
    #[default]
    Shutdown,
    /// Leave the service `Failed` and keep the others running; the runner still reports
    /// the failure when it ends.
    Ignore,
}

/// What a reload (SIGHUP, or [`RunnerHandle::reload`](crate::RunnerHandle::reload))
/// does to a service.
///
/// # Examples
///
/// ```
/// use servicekit::{Reload, Service};
/// let s = Service::new("config-watcher", |ctx| async move {
///     let mut reloads = ctx.reloads();
///     while ctx.until_shutdown(reloads.next()).await.is_some() {
///         // ... read the configuration again ...
///     }
/// })
/// .reload(Reload::Hook);
/// # drop(s);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reload {
    /// Restart it, in dependency order with the others. The default.
    #[default]
    Restart,
    /// Leave it running and tell it: each reload is an item of
    /// [`ServiceContext::reloads`](crate::ServiceContext::reloads). Services that
    /// depend on it are not restarted because of it.
    Hook,
}

/// The supervision settings of one service. Built through [`Service`]'s methods.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    pub(crate) restart: Restart,
    pub(crate) every: Option<Duration>,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) reset_after: Duration,
    pub(crate) max_restarts: u32,
    pub(crate) within: Duration,
    pub(crate) on_give_up: OnGiveUp,
    pub(crate) shutdown_timeout: Option<Duration>,
    pub(crate) reload: Reload,
    /// A run that goes this long without a heartbeat is hung.
    pub(crate) watchdog: Option<Duration>,
}

/// Default lower bound of the restart delay.
pub(crate) const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Default upper bound of the restart delay.
pub(crate) const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Default time a run must last without failing for the backoff to start again from its base.
pub(crate) const DEFAULT_RESET_AFTER: Duration = Duration::from_secs(60);
/// Default number of restarts allowed within [`DEFAULT_WITHIN`].
pub(crate) const DEFAULT_MAX_RESTARTS: u32 = 5;
/// Default window for [`DEFAULT_MAX_RESTARTS`].
pub(crate) const DEFAULT_WITHIN: Duration = Duration::from_secs(60);
/// Default time a service with a context has to return once asked to stop.
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    /// The defaults, as one constant (a service with no settings of its own points here).
    pub(crate) const DEFAULT: Config = Config {
        restart: Restart::OnFailure,
        every: None,
        backoff_base: DEFAULT_BACKOFF_BASE,
        backoff_cap: DEFAULT_BACKOFF_CAP,
        reset_after: DEFAULT_RESET_AFTER,
        max_restarts: DEFAULT_MAX_RESTARTS,
        within: DEFAULT_WITHIN,
        on_give_up: OnGiveUp::Shutdown,
        shutdown_timeout: None,
        reload: Reload::Restart,
        watchdog: None,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

impl Config {
    pub(crate) fn validate(&self, name: &str, has_context: bool) -> Result<(), ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            service: name.to_owned(),
            problem,
        };
        if self.backoff_base > self.backoff_cap {
            return Err(invalid(format!(
                "`backoff` base {:?} is greater than its cap {:?}",
                self.backoff_base, self.backoff_cap
            )));
        }
        if self.within.is_zero() {
            return Err(invalid("`within` must be greater than zero".into()));
        }
        if self.every.is_some_and(|d| d.is_zero()) {
            return Err(invalid("`every` must be greater than zero".into()));
        }
        if let Some(watchdog) = self.watchdog {
            if watchdog.is_zero() {
                return Err(invalid("`watchdog` must be greater than zero".into()));
            }
            match self.every {
                // Each tick is a heartbeat (see `periodic`): the wait for the next
                // one must fit in the watchdog.
                Some(every) if every >= watchdog => {
                    return Err(invalid(format!(
                        "`watchdog` {watchdog:?} must be longer than the period `every` {every:?}: \
                         a periodic service's heartbeat is each tick"
                    )));
                }
                Some(_) => {}
                None if !has_context => {
                    return Err(invalid(
                        "`watchdog` needs a `ServiceContext` to call `heartbeat()` on \
                         (or a periodic service, whose ticks are its heartbeats)"
                            .into(),
                    ));
                }
                None => {}
            }
        }
        Ok(())
    }
}
