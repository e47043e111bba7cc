//! Groups of services with an OTP strategy and their own restart intensity: the
//! definition ([`Group`], [`Strategy`]), checked at start, and the state a runner
//! keeps for each (`GroupRt`; what happens when a member fails is in
//! `supervisor::groups`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::config::{DEFAULT_MAX_RESTARTS, DEFAULT_WITHIN, OnGiveUp};
use crate::error::ConfigError;
use crate::sync::Mutex;

/// What a group does when one of its members fails and is restarted (OTP's
/// supervisor strategies).
///
/// A group's members are its services and its child groups, in the order they were
/// added to the runner (a child group at the place of its first service).
///
/// # Examples
///
/// ```
/// use servicekit::{Group, Strategy};
/// let g = Group::new("ingest").strategy(Strategy::RestForOne);
/// # drop(g);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the failed member restarts (as without a group). The default.
    #[default]
    OneForOne,
    /// Every member restarts: the failed one after its backoff, the others at once
    /// (each stopping its dependents first, as a restart does).
    OneForAll,
    /// The failed member and the members after it restart.
    RestForOne,
}

/// A named group of services with its own [`Strategy`] and restart intensity
/// (OTP's supervisor, beside the `after` dependency graph). Services join it with
/// [`Service::group`](crate::Service::group) or `#[service(group = "...")]`; the
/// runner gets it with [`Runner::group`](crate::Runner::group).
///
/// Every restart of a member after a failure counts in the group's window: at
/// most `max_restarts` within `within` (default 5 in 60 s; `u32::MAX` for no
/// limit). One more, or a member that gives up by its own policy, and the group
/// **gives up** (its window starts over) and escalates:
///
/// * in a parent group ([`parent`](Group::parent)), that counts as a failure of a
///   member of the parent: within the parent's intensity, the whole group restarts
///   (the windows of every group in it start over; the member that gave up by its
///   own policy restarts afresh, unless its policy is [`Restart::Never`]) and the
///   parent applies its strategy to its other members; past it, the parent gives up
///   in turn;
/// * at the top, [`OnGiveUp::Shutdown`] (the default) shuts the runner down and
///   its error names the group ([`FailureKind::GroupGaveUp`]); [`OnGiveUp::Ignore`]
///   stops the group's services for good (and, by the dependency rule, the services
///   that depend on them) and lets the others run. The member whose failure made
///   the group give up ends `Failed`.
///
/// How members are moved: a restart by the group is the same as
/// [`RunnerHandle::restart`](crate::RunnerHandle::restart) (dependents stop first
/// and come back after), is not a failure of theirs, does not cut short the backoff
/// of a member already restarting after its own failure, and only reaches the
/// members that depend on no other member being restarted (those come back by the
/// dependency rule). Services that have ended for good are not started again. A
/// failure while the runner or the member is being stopped moves nothing. A member
/// that gives up with `on_give_up = "ignore"` of its own does not escalate.
///
/// [`Restart::Never`]: crate::Restart::Never
///
/// [`FailureKind::GroupGaveUp`]: crate::FailureKind::GroupGaveUp
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use servicekit::{Group, Runner, Service, Strategy};
///
/// let runner = Runner::new()
///     .group(Group::new("pipeline").strategy(Strategy::OneForOne))
///     .group(
///         Group::new("ingest")
///             .strategy(Strategy::OneForAll)
///             .max_restarts(3, Duration::from_secs(30))
///             .parent("pipeline"),
///     )
///     .service(Service::new("reader", |ctx| async move { ctx.shutdown_requested().await }).group("ingest"))
///     .service(Service::new("parser", |ctx| async move { ctx.shutdown_requested().await }).group("ingest"));
/// # drop(runner);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Group does nothing until it is given to a runner"]
pub struct Group {
    pub(crate) name: String,
    pub(crate) strategy: Strategy,
    pub(crate) max_restarts: u32,
    pub(crate) within: Duration,
    pub(crate) on_give_up: OnGiveUp,
    pub(crate) parent: Option<String>,
}

impl Group {
    /// A group with the one-for-one strategy and the default intensity (5 restarts
    /// in 60 s).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = servicekit::Group::new("ingest");
    /// # drop(g);
    /// ```
    pub fn new(name: impl Into<String>) -> Group {
        Group {
            name: name.into(),
            strategy: Strategy::OneForOne,
            max_restarts: DEFAULT_MAX_RESTARTS,
            within: DEFAULT_WITHIN,
            on_give_up: OnGiveUp::Shutdown,
            parent: None,
        }
    }

    /// Sets the strategy.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Group, Strategy};
    /// let g = Group::new("ingest").strategy(Strategy::OneForAll);
    /// # drop(g);
    /// ```
    pub fn strategy(mut self, strategy: Strategy) -> Group {
        self.strategy = strategy;
        self
    }

    /// At most `max` restarts of members within any `within` window; one more and
    /// the group gives up.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = servicekit::Group::new("ingest").max_restarts(3, std::time::Duration::from_secs(10));
    /// # drop(g);
    /// ```
    pub fn max_restarts(mut self, max: u32, within: Duration) -> Group {
        self.max_restarts = max;
        self.within = within;
        self
    }

    /// What a top-level group does when it gives up (a group with a parent
    /// escalates to it instead).
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Group, OnGiveUp};
    /// let g = Group::new("optional").on_give_up(OnGiveUp::Ignore);
    /// # drop(g);
    /// ```
    pub fn on_give_up(mut self, action: OnGiveUp) -> Group {
        self.on_give_up = action;
        self
    }

    /// Nests the group in another: its giving up is a failure of a member there.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = servicekit::Group::new("ingest").parent("pipeline");
    /// # drop(g);
    /// ```
    pub fn parent(mut self, parent: impl Into<String>) -> Group {
        self.parent = Some(parent.into());
        self
    }

    /// The group's name.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(servicekit::Group::new("ingest").name(), "ingest");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A group as a runner keeps it.
pub(crate) struct GroupRt {
    pub(crate) name: Arc<str>,
    pub(crate) strategy: Strategy,
    pub(crate) max_restarts: u32,
    pub(crate) within: Duration,
    pub(crate) on_give_up: OnGiveUp,
    pub(crate) parent: Option<usize>,
    /// Restarts of members within the current window.
    pub(crate) window: Mutex<VecDeque<Instant>>,
}

/// A runner's groups, and their indices by name.
pub(crate) type Groups = (Box<[GroupRt]>, HashMap<String, u32>);

/// No group (a slot's `group`).
pub(crate) const NO_GROUP: u32 = u32::MAX;

/// Checks the groups (names, parents, no cycle, settings) and resolves each
/// service's group name: the groups as a runner keeps them, and name → index.
pub(crate) fn resolve(groups: Vec<Group>) -> Result<Groups, ConfigError> {
    let mut index = HashMap::with_capacity(groups.len());
    for (i, g) in groups.iter().enumerate() {
        if g.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        if index.insert(g.name.clone(), i as u32).is_some() {
            return Err(ConfigError::DuplicateGroup(g.name.clone()));
        }
        if g.within.is_zero() {
            return Err(ConfigError::Invalid {
                service: format!("group {}", g.name),
                problem: "`within` must be greater than zero".into(),
            });
        }
    }
    let mut parents = Vec::with_capacity(groups.len());
    for g in &groups {
        parents.push(match &g.parent {
            None => None,
            Some(p) => Some(*index.get(p).ok_or_else(|| ConfigError::UnknownGroup {
                member: format!("group `{}`", g.name),
                group: p.clone(),
            })? as usize),
        });
    }
    // A cycle of parents: follow each chain at most `len` steps.
    for start in 0..groups.len() {
        let mut path = vec![start];
        let mut cur = start;
        while let Some(p) = parents[cur] {
            if let Some(at) = path.iter().position(|&x| x == p) {
                let mut names: Vec<String> =
                    path[at..].iter().map(|&i| groups[i].name.clone()).collect();
                names.push(groups[p].name.clone());
                return Err(ConfigError::GroupCycle(names));
            }
            path.push(p);
            cur = p;
        }
    }
    let rt = groups
        .into_iter()
        .zip(parents)
        .map(|(g, parent)| GroupRt {
            name: Arc::from(g.name),
            strategy: g.strategy,
            max_restarts: g.max_restarts,
            within: g.within,
            on_give_up: g.on_give_up,
            parent,
            window: Mutex::new(VecDeque::new()),
        })
        .collect();
    Ok((rt, index))
}
