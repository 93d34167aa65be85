//! The planner: (mirror ∩ scope, snapshot, mapping) → ordered operations. Pure: no I/O.
//!
//! Desired state is recomputed from the mirror every cycle, so an interrupted or failed
//! push needs no recovery: the next plan contains whatever is still missing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::config::GroupMembers;
use crate::mapping::{Attrs, Mapping};
use crate::state::{MirrorData, SkippedRow, Snapshot};

/// One attribute difference.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// One operation against HERE. Members are Entra ids; SCIM ids are resolved at push time,
/// after the users they name exist.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    CreateUser {
        entra_id: String,
        user_name: String,
        attrs: Attrs,
    },
    /// Attribute changes; `reactivate` when the user comes back (active false → true).
    UpdateUser {
        entra_id: String,
        scim_id: String,
        user_name: String,
        changes: Vec<Change>,
        attrs: Attrs,
        reactivate: bool,
    },
    /// Sets or clears the manager reference (after both users exist).
    SetManager {
        entra_id: String,
        user_name: String,
        manager: Option<String>,
    },
    DeactivateUser {
        entra_id: String,
        scim_id: String,
        user_name: String,
        attrs: Attrs,
    },
    CreateGroup {
        entra_id: String,
        display_name: String,
        attrs: Attrs,
    },
    UpdateGroup {
        entra_id: String,
        scim_id: String,
        display_name: String,
        changes: Vec<Change>,
        attrs: Attrs,
    },
    AddMembers {
        group: String,
        display_name: String,
        users: Vec<String>,
    },
    RemoveMembers {
        group: String,
        display_name: String,
        users: Vec<String>,
    },
    DeleteGroup {
        entra_id: String,
        scim_id: String,
        display_name: String,
    },
}

/// The push stages, in the order that can't break (architecture invariant 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Users,
    Managers,
    Groups,
    MemberAdds,
    MemberRemovals,
    GroupDeletions,
    Deactivations,
}

impl Op {
    /// Which stage this operation runs in.
    pub fn stage(&self) -> Stage {
        match self {
            Op::CreateUser { .. } | Op::UpdateUser { .. } => Stage::Users,
            Op::SetManager { .. } => Stage::Managers,
            Op::CreateGroup { .. } | Op::UpdateGroup { .. } => Stage::Groups,
            Op::AddMembers { .. } => Stage::MemberAdds,
            Op::RemoveMembers { .. } => Stage::MemberRemovals,
            Op::DeleteGroup { .. } => Stage::GroupDeletions,
            Op::DeactivateUser { .. } => Stage::Deactivations,
        }
    }

    /// The log name of the operation (`op=` field).
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateUser { .. } => "create_user",
            Op::UpdateUser {
                reactivate: true, ..
            } => "reactivate_user",
            Op::UpdateUser { .. } => "update_user",
            Op::SetManager { .. } => "set_manager",
            Op::DeactivateUser { .. } => "deactivate_user",
            Op::CreateGroup { .. } => "create_group",
            Op::UpdateGroup { .. } => "update_group",
            Op::AddMembers { .. } => "add_members",
            Op::RemoveMembers { .. } => "remove_members",
            Op::DeleteGroup { .. } => "delete_group",
        }
    }

    /// The Entra id of the object the operation changes.
    pub fn entra_id(&self) -> &str {
        match self {
            Op::CreateUser { entra_id, .. }
            | Op::UpdateUser { entra_id, .. }
            | Op::SetManager { entra_id, .. }
            | Op::DeactivateUser { entra_id, .. }
            | Op::CreateGroup { entra_id, .. }
            | Op::UpdateGroup { entra_id, .. }
            | Op::DeleteGroup { entra_id, .. } => entra_id,
            Op::AddMembers { group, .. } | Op::RemoveMembers { group, .. } => group,
        }
    }

    /// The userName or group displayName operators know the object by.
    pub fn object_name(&self) -> &str {
        match self {
            Op::CreateUser { user_name, .. }
            | Op::UpdateUser { user_name, .. }
            | Op::SetManager { user_name, .. }
            | Op::DeactivateUser { user_name, .. } => user_name,
            Op::CreateGroup { display_name, .. }
            | Op::UpdateGroup { display_name, .. }
            | Op::AddMembers { display_name, .. }
            | Op::RemoveMembers { display_name, .. }
            | Op::DeleteGroup { display_name, .. } => display_name,
        }
    }

    /// `user` or `group`.
    pub fn kind(&self) -> &'static str {
        match self.stage() {
            Stage::Users | Stage::Managers | Stage::Deactivations => "user",
            _ => "group",
        }
    }
}

/// Settings the planner needs.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub group_members: GroupMembers,
    pub delete_groups_out_of_scope: bool,
}

/// The planner's output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// In-scope objects whose source data cannot be provisioned.
    pub skipped: Vec<SkippedRow>,
    /// Objects left alone because they wait in escrow.
    pub held: usize,
}

impl Plan {
    /// Users the plan deactivates (the brake counts these).
    pub fn deactivations(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o, Op::DeactivateUser { .. }))
            .count()
    }

    /// Groups the plan deletes (the brake counts these).
    pub fn group_deletions(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o, Op::DeleteGroup { .. }))
            .count()
    }
}

struct DesiredUser {
    user_name: String,
    attrs: Attrs,
    active: bool,
    manager: Option<String>,
}

/// Which users are in scope: directly assigned, plus members of assigned groups (direct
/// members, or through nesting when `transitive`), that exist and are not soft-deleted.
pub fn users_in_scope(mirror: &MirrorData, members: GroupMembers) -> BTreeSet<String> {
    let mut scope: BTreeSet<String> = mirror.assigned_users.clone();
    for gid in &mirror.assigned_groups {
        scope.extend(group_users(mirror, gid, members));
    }
    scope.retain(|id| mirror.users.get(id).is_some_and(|u| !u.soft_deleted));
    scope
}

/// A group's member users, direct or through nested groups (cycle-safe).
pub fn group_users(mirror: &MirrorData, gid: &str, members: GroupMembers) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::from([gid.to_string()]);
    let mut todo = vec![gid.to_string()];
    while let Some(g) = todo.pop() {
        let Some(group) = mirror.groups.get(&g) else {
            continue;
        };
        out.extend(group.user_members.iter().cloned());
        if members == GroupMembers::Transitive {
            for nested in &group.group_members {
                if seen.insert(nested.clone()) {
                    todo.push(nested.clone());
                }
            }
        }
    }
    out
}

/// Why a user's source record cannot be provisioned, if it can't.
fn bad_user_record(props: &serde_json::Map<String, Value>, attrs: &Attrs) -> Option<String> {
    let upn = props
        .get("userPrincipalName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if upn.trim().is_empty() {
        return Some("no userPrincipalName".into());
    }
    if upn.chars().any(char::is_control) || upn.len() > 1024 {
        return Some("userPrincipalName has control characters or is over 1024 bytes".into());
    }
    attrs.iter().find_map(|(path, v)| {
        let text = v.as_str()?;
        (text.len() > 4096 || text.chars().any(|c| c.is_control() && c != '\n'))
            .then(|| format!("{path} is over 4096 bytes or has control characters"))
    })
}

/// Attribute differences. `diff` compares every path; the planner compares only the paths
/// the mapping manages (see [`managed`]).
pub fn diff(desired: &Attrs, pushed: &Attrs) -> Vec<Change> {
    let paths: BTreeSet<&String> = desired.keys().chain(pushed.keys()).collect();
    paths
        .into_iter()
        .filter_map(|p| {
            let (new, old) = (desired.get(p), pushed.get(p));
            (new != old).then(|| Change {
                path: p.clone(),
                old: old.cloned(),
                new: new.cloned(),
            })
        })
        .collect()
}

/// The pushed attributes on the paths the mapping still manages. An attribute switched off
/// in the mapping is no longer managed: it is left as it is in HERE, not removed (as Entra
/// does when a mapping is deleted); only an attribute whose *source* became empty is removed.
fn managed<'a>(pushed: &Attrs, paths: impl IntoIterator<Item = &'a str>) -> Attrs {
    paths
        .into_iter()
        .filter_map(|p| pushed.get_key_value(p))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Computes the ordered operations that bring HERE to the desired state.
pub fn plan(
    mirror: &MirrorData,
    snapshot: &Snapshot,
    mapping: &Mapping,
    held: &BTreeSet<String>,
    options: &PlanOptions,
) -> Plan {
    let mut out = Plan::default();
    let scope = users_in_scope(mirror, options.group_members);
    let mut desired: BTreeMap<&str, DesiredUser> = BTreeMap::new();
    let mut skipped_ids = BTreeSet::new();
    for id in &scope {
        let user = &mirror.users[id];
        let mut attrs = mapping.map_user(id, &user.props);
        if let Some(reason) = bad_user_record(&user.props, &attrs) {
            out.skipped.push(SkippedRow {
                entra_id: id.clone(),
                kind: "user".into(),
                reason,
            });
            skipped_ids.insert(id.as_str());
            continue;
        }
        let active = user.props.get("accountEnabled").and_then(Value::as_bool) != Some(false);
        attrs.insert("active".into(), Value::Bool(active));
        desired.insert(
            id,
            DesiredUser {
                user_name: attrs["userName"].as_str().unwrap_or_default().to_string(),
                attrs,
                active,
                manager: user
                    .props
                    .get("manager")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            },
        );
    }
    let mut hold = |id: &str| {
        let h = held.contains(id);
        out.held += h as usize;
        h
    };
    let mut ops = Vec::new();
    for (id, want) in &desired {
        if hold(id) {
            continue;
        }
        plan_user(&mut ops, id, want, snapshot, mapping);
    }
    for (id, have) in &snapshot.users {
        let gone = !desired.contains_key(id.as_str()) && !skipped_ids.contains(id.as_str());
        if gone && have.active && !hold(id) {
            let mut attrs = have.attrs.clone();
            attrs.insert("active".into(), Value::Bool(false));
            ops.push(Op::DeactivateUser {
                entra_id: id.clone(),
                scim_id: have.scim_id.clone(),
                user_name: have.user_name.clone(),
                attrs,
            });
        }
    }
    if mapping.manager {
        plan_managers(&mut ops, &desired, snapshot, held);
    }
    let active_users: BTreeSet<&str> = desired
        .iter()
        .filter(|(_, u)| u.active)
        .map(|(id, _)| *id)
        .collect();
    plan_groups(
        &mut ops,
        &mut out.skipped,
        mirror,
        snapshot,
        mapping,
        &active_users,
        options,
    );
    ops.sort_by(|a, b| {
        (a.stage(), a.object_name(), a.entra_id()).cmp(&(b.stage(), b.object_name(), b.entra_id()))
    });
    out.ops = ops;
    out
}

fn plan_user(
    ops: &mut Vec<Op>,
    id: &str,
    want: &DesiredUser,
    snapshot: &Snapshot,
    mapping: &Mapping,
) {
    let Some(have) = snapshot.users.get(id) else {
        if want.active {
            ops.push(Op::CreateUser {
                entra_id: id.to_string(),
                user_name: want.user_name.clone(),
                attrs: want.attrs.clone(),
            });
        }
        return;
    };
    match (have.active, want.active) {
        (true, false) => {
            let mut attrs = have.attrs.clone();
            attrs.insert("active".into(), Value::Bool(false));
            ops.push(Op::DeactivateUser {
                entra_id: id.to_string(),
                scim_id: have.scim_id.clone(),
                user_name: have.user_name.clone(),
                attrs,
            });
        }
        (false, false) => {}
        (was_active, true) => {
            let paths = mapping.user_paths().chain(["active"]);
            let changes = diff(&want.attrs, &managed(&have.attrs, paths));
            if !changes.is_empty() {
                ops.push(Op::UpdateUser {
                    entra_id: id.to_string(),
                    scim_id: have.scim_id.clone(),
                    user_name: want.user_name.clone(),
                    changes,
                    attrs: want.attrs.clone(),
                    reactivate: !was_active,
                });
            }
        }
    }
}

fn plan_managers(
    ops: &mut Vec<Op>,
    desired: &BTreeMap<&str, DesiredUser>,
    snapshot: &Snapshot,
    held: &BTreeSet<String>,
) {
    for (id, want) in desired {
        if !want.active || held.contains(*id) {
            continue;
        }
        let manager = want
            .manager
            .as_deref()
            .filter(|m| desired.get(m).is_some_and(|u| u.active))
            .map(str::to_string);
        let pushed = snapshot.users.get(*id).and_then(|u| u.manager.clone());
        if manager != pushed {
            ops.push(Op::SetManager {
                entra_id: id.to_string(),
                user_name: want.user_name.clone(),
                manager,
            });
        }
    }
}

fn plan_groups(
    ops: &mut Vec<Op>,
    skipped: &mut Vec<SkippedRow>,
    mirror: &MirrorData,
    snapshot: &Snapshot,
    mapping: &Mapping,
    active_users: &BTreeSet<&str>,
    options: &PlanOptions,
) {
    let mut wanted = BTreeSet::new();
    for gid in &mirror.assigned_groups {
        let Some(group) = mirror.groups.get(gid) else {
            continue;
        };
        let attrs = mapping.map_group(gid, &group.props);
        let Some(name) = attrs
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            skipped.push(SkippedRow {
                entra_id: gid.clone(),
                kind: "group".into(),
                reason: "no displayName".into(),
            });
            continue;
        };
        wanted.insert(gid.as_str());
        let members: BTreeSet<String> = group_users(mirror, gid, options.group_members)
            .into_iter()
            .filter(|u| active_users.contains(u.as_str()))
            .collect();
        let pushed_members = match snapshot.groups.get(gid) {
            None => {
                ops.push(Op::CreateGroup {
                    entra_id: gid.clone(),
                    display_name: name.clone(),
                    attrs,
                });
                BTreeSet::new()
            }
            Some(have) => {
                let paths = mapping.group.iter().map(|a| a.scim_path.as_str());
                let changes = diff(&attrs, &managed(&have.attrs, paths));
                if !changes.is_empty() {
                    ops.push(Op::UpdateGroup {
                        entra_id: gid.clone(),
                        scim_id: have.scim_id.clone(),
                        display_name: name.clone(),
                        changes,
                        attrs,
                    });
                }
                have.members.clone()
            }
        };
        let adds: Vec<String> = members.difference(&pushed_members).cloned().collect();
        let removes: Vec<String> = pushed_members.difference(&members).cloned().collect();
        if !adds.is_empty() {
            ops.push(Op::AddMembers {
                group: gid.clone(),
                display_name: name.clone(),
                users: adds,
            });
        }
        if !removes.is_empty() {
            ops.push(Op::RemoveMembers {
                group: gid.clone(),
                display_name: name,
                users: removes,
            });
        }
    }
    if !options.delete_groups_out_of_scope {
        return;
    }
    for (gid, have) in &snapshot.groups {
        if !wanted.contains(gid.as_str()) && !skipped.iter().any(|s| &s.entra_id == gid) {
            ops.push(Op::DeleteGroup {
                entra_id: gid.clone(),
                scim_id: have.scim_id.clone(),
                display_name: have.display_name.clone(),
            });
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
