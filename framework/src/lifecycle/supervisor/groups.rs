//! What a group does when a member fails: count the restart in its window, apply
//! its strategy to the other members, or give up and escalate (see
//! [`Group`](crate::Group)). Called by a member's supervisor as it decides what
//! follows a failed run ([`super::restart`]); the other members are moved with
//! restart and stop commands, as `RunnerHandle::restart` and `stop` do.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::error::{FailureKind, ServiceFailure};
use crate::lifecycle::config::OnGiveUp;
use crate::lifecycle::group::{NO_GROUP, Strategy};
use crate::lifecycle::state::{Command, Shared};
use crate::lifecycle::status::ServiceState;

/// What became of a member's failure in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Escalation {
    /// It is in no group (or the runner is stopping it anyway).
    NoGroup,
    /// Its group allows the restart (and applied its strategy), or a parent group
    /// restarts its group whole.
    Absorbed,
    /// Its group gave up and no parent took it: the runner shuts down, or the
    /// group's services are stopped.
    GaveUp,
}

/// A member of a group: one of its services, or one of its child groups.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Member {
    Service(usize),
    Group(usize),
}

/// Service `idx` failed and its own policy restarts it: the restart counts in its
/// group's window; within it, the group's strategy moves the other members; past
/// it, the group gives up.
pub(super) fn member_restarts(shared: &Shared, idx: usize) -> Escalation {
    let Some(g) = group_of(shared, idx) else {
        return Escalation::NoGroup;
    };
    match record(shared, g) {
        Ok(()) => {
            apply(shared, g, Member::Service(idx), idx);
            Escalation::Absorbed
        }
        Err(restarts) => give_up(shared, g, idx, restarts),
    }
}

/// Service `idx` gave up by its own policy and escalates: its group gives up.
pub(super) fn member_gave_up(shared: &Shared, idx: usize) -> Escalation {
    let Some(g) = group_of(shared, idx) else {
        return Escalation::NoGroup;
    };
    let restarts = shared.groups[g].window.lock().len() as u32;
    give_up(shared, g, idx, restarts)
}

/// The group of `idx`, unless it has none or is being stopped anyway (a shutdown,
/// a stop or a removal): a failure then moves nothing.
fn group_of(shared: &Shared, idx: usize) -> Option<usize> {
    let slot = &shared.slots[idx];
    if slot.group == NO_GROUP || shared.shutting_down.load(Ordering::Acquire) || slot.cmd.is_stop()
    {
        return None;
    }
    Some(slot.group as usize)
}

/// Counts a restart in group `g`'s window. One too many: `Err` with the restarts
/// the window held, and the window starts over (the group gives up once, and a
/// failure at the same moment counts in the new window).
fn record(shared: &Shared, g: usize) -> Result<(), u32> {
    let group = &shared.groups[g];
    if group.max_restarts == u32::MAX {
        return Ok(());
    }
    let now = Instant::now();
    let mut window = group.window.lock();
    while window
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) >= group.within)
    {
        window.pop_front();
    }
    if window.len() >= group.max_restarts as usize {
        let held = window.len() as u32;
        window.clear();
        return Err(held);
    }
    window.push_back(now);
    Ok(())
}

/// Group `g` gives up because of service `culprit`: each group up the chain takes
/// it as a failed member (restarting the whole child group and applying its own
/// strategy) if its intensity allows, or gives up in turn; at the top, the group's
/// `on_give_up` decides.
fn give_up(shared: &Shared, g: usize, culprit: usize, restarts: u32) -> Escalation {
    let mut child = g;
    let mut restarts = restarts;
    loop {
        let group = &shared.groups[child];
        tracing::error!(group = %group.name, service = %shared.slots[culprit].name, restarts, "group gave up");
        match group.parent {
            Some(parent) => match record(shared, parent) {
                Ok(()) => {
                    tracing::info!(group = %group.name, parent = %shared.groups[parent].name, "restarting the group");
                    let mut targets: Vec<usize> = services_in(shared, child).collect();
                    reset_windows(shared, child);
                    targets.extend(strategy_targets(shared, parent, Member::Group(child)));
                    restart(shared, targets, culprit);
                    return Escalation::Absorbed;
                }
                Err(held) => {
                    child = parent;
                    restarts = held;
                }
            },
            None => {
                shared.record_failure(ServiceFailure {
                    service: shared.slots[culprit].shared_name(),
                    kind: FailureKind::GroupGaveUp {
                        group: group.name.clone(),
                        restarts,
                    },
                });
                match group.on_give_up {
                    OnGiveUp::Shutdown => shared.begin_shutdown(),
                    OnGiveUp::Ignore => {
                        for idx in services_in(shared, child) {
                            command(shared, idx, Command::Stop);
                        }
                    }
                }
                return Escalation::GaveUp;
            }
        }
    }
}

/// Applies group `g`'s strategy after its service `failed` failed.
fn apply(shared: &Shared, g: usize, failed: Member, culprit: usize) {
    let targets = strategy_targets(shared, g, failed);
    restart(shared, targets, culprit);
}

/// The services group `g`'s strategy restarts after `failed` failed; the windows
/// of the child groups among them start over.
fn strategy_targets(shared: &Shared, g: usize, failed: Member) -> Vec<usize> {
    let members = members_of(shared, g);
    // A member's place is its first service's.
    let place = |m: Member| {
        members
            .iter()
            .filter(|&&(_, of)| of == m)
            .map(|&(idx, _)| idx)
            .min()
    };
    let chosen: Vec<(usize, Member)> = match shared.groups[g].strategy {
        Strategy::OneForOne => return Vec::new(),
        Strategy::OneForAll => members,
        Strategy::RestForOne => {
            let Some(from) = place(failed) else {
                return Vec::new();
            };
            members
                .iter()
                .copied()
                .filter(|&(_, of)| place(of).is_some_and(|p| p > from))
                .collect()
        }
    };
    let mut reset = Vec::new();
    for &(_, of) in &chosen {
        if let Member::Group(c) = of
            && of != failed
            && !reset.contains(&c)
        {
            reset.push(c);
            reset_windows(shared, c);
        }
    }
    chosen.into_iter().map(|(idx, _)| idx).collect()
}

/// Restarts `targets` (but `culprit`, which restarts by itself after its backoff),
/// as `restart_all` does: only those with no dependency among them and the culprit
/// (the others are stopped first and come back after their dependencies by the
/// dependency rule), and not those restarting already after a failure of their own
/// (a group restart does not cut a backoff short).
fn restart(shared: &Shared, mut targets: Vec<usize>, culprit: usize) {
    targets.sort_unstable();
    targets.dedup();
    let moving = |d: usize| d == culprit || targets.binary_search(&d).is_ok();
    for &idx in &targets {
        let slot = &shared.slots[idx];
        if idx == culprit
            || slot.deps().iter().any(|&d| moving(d))
            || slot.inner.lock().state == ServiceState::Restarting
        {
            continue;
        }
        command(shared, idx, Command::Restart);
    }
}

/// The windows of group `g` and every group under it start over.
fn reset_windows(shared: &Shared, g: usize) {
    for h in 0..shared.groups.len() {
        if member_of(shared, h as u32, g).is_some() {
            shared.groups[h].window.lock().clear();
        }
    }
}

fn command(shared: &Shared, idx: usize, cmd: Command) {
    let slot = &shared.slots[idx];
    slot.cmd.request(cmd);
    slot.wake.notify();
}

/// The services in group `g` or, transitively, its child groups (not removed).
fn services_in(shared: &Shared, g: usize) -> impl Iterator<Item = usize> + '_ {
    (0..shared.slots.len()).filter(move |&idx| {
        let slot = &shared.slots[idx];
        !slot.is_removed() && member_of(shared, slot.group, g).is_some()
    })
}

/// Each service of `g`'s subtree, with the member of `g` it belongs to.
fn members_of(shared: &Shared, g: usize) -> Vec<(usize, Member)> {
    (0..shared.slots.len())
        .filter_map(|idx| {
            let slot = &shared.slots[idx];
            if slot.is_removed() {
                return None;
            }
            member_of(shared, slot.group, g)
                .map(|m| (idx, m.map_or(Member::Service(idx), Member::Group)))
        })
        .collect()
}

/// Whether group `of` is `g` or under it: `Some(None)` if `of` is `g`,
/// `Some(Some(c))` if it is in the subtree of `g`'s child group `c`.
fn member_of(shared: &Shared, of: u32, g: usize) -> Option<Option<usize>> {
    if of == NO_GROUP {
        return None;
    }
    let (mut cur, mut below) = (of as usize, None);
    loop {
        if cur == g {
            return Some(below);
        }
        below = Some(cur);
        cur = shared.groups[cur].parent?;
    }
}
