//! Who is in scope: Entra's rules for "sync only assigned users and groups".

use std::collections::BTreeSet;

use crate::config::GroupMembers;
use crate::state::{MirrorData, MirrorGroup};

/// Which users are in scope: directly assigned, plus members of assigned groups (direct
/// members, or through nesting when `transitive`), that exist and are not soft-deleted.
pub fn users_in_scope(mirror: &MirrorData, members: GroupMembers) -> BTreeSet<String> {
    let mut scope = scope_candidates(mirror, members);
    scope.retain(|id| mirror.users.get(id).is_some_and(|u| !u.soft_deleted));
    scope
}

/// Users assigned directly or through an assigned group, whether or not they still exist
/// (the planner checks existence as users stream past).
pub fn scope_candidates(mirror: &MirrorData, members: GroupMembers) -> BTreeSet<String> {
    let mut scope: BTreeSet<String> = mirror.assigned_users.clone();
    for gid in &mirror.assigned_groups {
        scope.extend(group_users(mirror, gid, members));
    }
    scope
}

/// A group's member users, direct or through nested groups (cycle-safe).
pub fn group_users(mirror: &MirrorData, gid: &str, members: GroupMembers) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(group) = mirror.groups.get(gid) {
        for_each_group_user(mirror, gid, group, members, |u| {
            out.insert(u.to_string());
        });
    }
    out
}

/// Calls `f` with each member user of group `gid` (`group`), borrowed from the mirror (a
/// user reached through two nested groups comes twice): the planner walks a large
/// tenant's groups without copying ids.
pub(super) fn for_each_group_user<'m>(
    mirror: &'m MirrorData,
    gid: &str,
    group: &'m MirrorGroup,
    members: GroupMembers,
    mut f: impl FnMut(&'m str),
) {
    if members == GroupMembers::Direct {
        group.user_members.iter().for_each(|u| f(u));
        return;
    }
    let mut seen = BTreeSet::from([gid]);
    let mut todo = vec![group];
    while let Some(group) = todo.pop() {
        group.user_members.iter().for_each(|u| f(u));
        for nested in &group.group_members {
            if seen.insert(nested.as_str()) {
                todo.extend(mirror.groups.get(nested));
            }
        }
    }
}
