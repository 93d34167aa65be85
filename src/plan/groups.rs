//! Group planning: assigned groups, their memberships, and groups that left scope.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde_json::Value;

use super::{diff, managed, scope, Op, Planner};
use crate::state::SkippedRow;

/// Plans assigned groups, their members and the deletion of groups that left scope.
pub(super) fn plan_groups(p: &mut Planner<'_>) {
    let (mirror, mapping, options) = (p.mirror, p.mapping, p.options);
    let mut wanted = BTreeSet::new();
    for gid in &mirror.assigned_groups {
        let Some(group) = mirror.groups.get(gid) else {
            continue;
        };
        let attrs = mapping.map_group(gid, &group.props);
        if p.held.contains(gid) {
            p.out.held += 1;
            wanted.insert(gid.as_str());
            continue;
        }
        let Some(name) = attrs
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            p.out.skipped.push(SkippedRow {
                entra_id: gid.clone(),
                kind: "group".into(),
                reason: "no displayName".into(),
            });
            continue;
        };
        wanted.insert(gid.as_str());
        let have = p.snapshot_groups.get(gid);
        let pushed_members = have.map(|g| &g.members);
        let mut members: BTreeSet<&str> = BTreeSet::new();
        scope::for_each_group_user(mirror, gid, group, options.group_members, |u| {
            let d = p.decided(u);
            if d.active || (d.protected && pushed_members.is_some_and(|m| m.contains(u))) {
                members.insert(u);
            }
        });
        let none = BTreeSet::new();
        let pushed_members = match have {
            None => {
                p.out.ops.push(Op::CreateGroup {
                    entra_id: gid.clone(),
                    display_name: name.clone(),
                    attrs,
                });
                &none
            }
            Some(have) => {
                let paths = mapping.group.iter().map(|a| a.scim_path.as_str());
                let changes = diff(&attrs, &managed(&have.attrs, paths));
                if !changes.is_empty() {
                    p.out.ops.push(Op::UpdateGroup {
                        entra_id: gid.clone(),
                        scim_id: have.scim_id.clone(),
                        display_name: name.clone(),
                        changes,
                        attrs,
                    });
                }
                &have.members
            }
        };
        let (adds, removes) = member_changes(&members, pushed_members);
        if !adds.is_empty() {
            p.out.ops.push(Op::AddMembers {
                group: gid.clone(),
                display_name: name.clone(),
                users: adds,
            });
        }
        if !removes.is_empty() {
            p.out.ops.push(Op::RemoveMembers {
                group: gid.clone(),
                display_name: name,
                users: removes,
            });
        }
    }
    if !options.delete_groups_out_of_scope {
        return;
    }
    for (gid, have) in p.snapshot_groups {
        if wanted.contains(gid.as_str()) || p.out.skipped.iter().any(|s| &s.entra_id == gid) {
            continue;
        }
        if !p.hold(gid) {
            p.out.ops.push(Op::DeleteGroup {
                entra_id: gid.clone(),
                scim_id: have.scim_id.clone(),
                display_name: have.display_name.clone(),
            });
        }
    }
}

/// Members to add and to remove, in order: both sets sort alike, so one walk compares them.
fn member_changes(want: &BTreeSet<&str>, have: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let (mut adds, mut removes) = (Vec::new(), Vec::new());
    let (mut w, mut h) = (want.iter().peekable(), have.iter().peekable());
    loop {
        let order = match (w.peek(), h.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => (**a).cmp(b.as_str()),
        };
        match order {
            Ordering::Less => adds.extend(w.next().map(|a| a.to_string())),
            Ordering::Greater => removes.extend(h.next().cloned()),
            Ordering::Equal => {
                w.next();
                h.next();
            }
        }
    }
    (adds, removes)
}
