//! What a group does when a member fails: count the restart in its window, apply
//! its strategy to the other members, or give up and escalate (see
//! [`Group`](crate::Group)). Called by a member's supervisor as it decides what
//! follows a failed run ([`super::restart`]); the other members are moved with
//! restart and stop commands, as `RunnerHandle::restart` and `stop` do.

use tokio::time::Instant;

use crate::error::{FailureKind, ServiceFailure};
use crate::lifecycle::config::OnGiveUp;
use crate::lifecycle::group::{NO_GROUP, Strategy};
use crate::lifecycle::state::{Command, Shared};

/// A member of a group: one of its services, or one of its child groups.
#[derive(Clone, Copy)]
enum Member {
    Service(usize),
    Group(usize),
}

/// Service `idx` failed and restarts by its own policy: the restart counts in its
/// group's window; within it, the group's strategy moves the other members; past
/// it, the group gives up.
pub(super) fn member_restarts(shared: &Shared, idx: usize) {
    let Some(g) = group_of(shared, idx) else {
        return;
    };
    // A failure as the runner stops restarts nothing.
    if shared
        .shutting_down
        .load(std::sync::atomic::Ordering::Acquire)
    {
        return;
    }
    if record(shared, g) {
        apply(shared, g, Member::Service(idx), idx);
    } else {
        give_up(shared, g, idx);
    }
}

/// Service `idx` gave up by its own policy and escalates: its group gives up.
/// `false` if it is in no group (it escalates to the runner).
pub(super) fn member_gave_up(shared: &Shared, idx: usize) -> bool {
    let Some(g) = group_of(shared, idx) else {
        return false;
    };
    give_up(shared, g, idx);
    true
}

fn group_of(shared: &Shared, idx: usize) -> Option<usize> {
    let g = shared.slots[idx].group;
    (g != NO_GROUP).then_some(g as usize)
}

/// Counts a restart in group `g`'s window; `false` if that is one too many.
fn record(shared: &Shared, g: usize) -> bool {
    let group = &shared.groups[g];
    let now = Instant::now();
    let mut guard = group.window.lock();
    let (window, total) = &mut *guard;
    while window
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) >= group.within)
    {
        window.pop_front();
    }
    if window.len() >= group.max_restarts as usize {
        return false;
    }
    window.push_back(now);
    *total += 1;
    true
}

/// Group `g` gives up because of service `culprit`: each group up the chain takes
/// it as a failed member (restarting the whole child group and applying its own
/// strategy) if its intensity allows, or gives up in turn; at the top, the group's
/// `on_give_up` decides.
fn give_up(shared: &Shared, g: usize, culprit: usize) {
    let mut child = g;
    loop {
        let group = &shared.groups[child];
        tracing::error!(group = %group.name, service = %shared.slots[culprit].name, "group gave up");
        match group.parent {
            Some(parent) if record(shared, parent) => {
                tracing::info!(group = %group.name, parent = %shared.groups[parent].name, "restarting the group");
                group.window.lock().0.clear();
                for idx in services_in(shared, child) {
                    if idx != culprit {
                        command(shared, idx, Command::Restart);
                    }
                }
                apply(shared, parent, Member::Group(child), culprit);
                return;
            }
            Some(parent) => child = parent,
            None => {
                let restarts = group.window.lock().1;
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
                return;
            }
        }
    }
}

/// Applies group `g`'s strategy after `failed` failed (it is restarting already,
/// as is service `except`).
fn apply(shared: &Shared, g: usize, failed: Member, except: usize) {
    let targets: Vec<usize> = match shared.groups[g].strategy {
        Strategy::OneForOne => return,
        Strategy::OneForAll => services_in(shared, g).collect(),
        Strategy::RestForOne => {
            let members = members_of(shared, g);
            let position = |m: Member| match m {
                Member::Service(idx) => Some(idx),
                Member::Group(c) => members
                    .iter()
                    .filter(|(_, of)| matches!(of, Member::Group(x) if *x == c))
                    .map(|&(idx, _)| idx)
                    .min(),
            };
            let Some(from) = position(failed) else {
                return;
            };
            // A member's place is its first service's.
            members
                .iter()
                .filter(|&&(_, of)| position(of).is_some_and(|p| p > from))
                .map(|&(idx, _)| idx)
                .collect()
        }
    };
    let skip = match failed {
        Member::Service(idx) => Some(idx),
        Member::Group(_) => None,
    };
    for idx in targets {
        if idx != except && Some(idx) != skip {
            command(shared, idx, Command::Restart);
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

/// Whether a service of group `of` is in `g`'s subtree: `Some(None)` if `of` is
/// `g`, `Some(Some(c))` if it is in `g`'s child group `c`'s subtree.
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
