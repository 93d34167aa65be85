//! Group planning: assigned groups, their memberships, and groups that left scope.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashSet;
use serde_json::Value;

use super::candidates::Candidates;
use super::{decided, diff, managed, scope, Op, Planner};
use crate::config::GroupMembers;
use crate::mapping::Mapping;
use crate::state::{MirrorData, MirrorGroup, SkippedRow, SnapGroup};

/// Assigned groups from which planning is split over two threads: below it, a second
/// thread costs more than it saves.
const PARALLEL_FROM: usize = 4096;

/// What group planning reads of the planner, shared (read-only) by the threads that plan
/// the halves of a large tenant's groups.
struct View<'p, 'a> {
    mirror: &'a MirrorData,
    snapshot_groups: &'a BTreeMap<String, SnapGroup>,
    mapping: &'a Mapping,
    held: &'a BTreeSet<String>,
    members: GroupMembers,
    candidates: &'p Candidates<'a>,
    assumed: &'p FxHashSet<String>,
}

/// What planning some of the assigned groups came to.
#[derive(Default)]
struct Planned<'a> {
    ops: Vec<Op>,
    skipped: Vec<SkippedRow>,
    held: usize,
    /// Groups that stay in HERE (planned, or waiting in escrow).
    wanted: Vec<&'a str>,
}

impl<'a> Planner<'a> {
    /// What group planning reads of this planner.
    fn group_view(&self) -> View<'_, 'a> {
        View {
            mirror: self.mirror,
            snapshot_groups: self.snapshot_groups,
            mapping: self.mapping,
            held: self.held,
            members: self.options.group_members,
            candidates: &self.candidates,
            assumed: &self.assumed,
        }
    }
}

/// Plans assigned groups, their members and the deletion of groups that left scope.
pub(super) fn plan_groups(p: &mut Planner<'_>) {
    let assigned: Vec<&String> = p.mirror.assigned_groups.iter().collect();
    let halves = assigned.len() >= PARALLEL_FROM;
    let parts = p.group_view().plan_parts(&assigned, halves);
    let mut wanted = BTreeSet::new();
    let mut skipped = BTreeSet::new();
    for part in parts {
        p.out.ops.extend(part.ops);
        skipped.extend(part.skipped.iter().map(|s| s.entra_id.clone()));
        p.out.skipped.extend(part.skipped);
        p.out.held += part.held;
        wanted.extend(part.wanted);
    }
    if !p.options.delete_groups_out_of_scope {
        return;
    }
    for (gid, have) in p.snapshot_groups {
        if wanted.contains(gid.as_str()) || skipped.contains(gid) {
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

impl<'a> View<'_, 'a> {
    /// Plans the assigned groups, in two halves on two threads when `halves`; the parts
    /// come back in the groups' order either way.
    fn plan_parts(&self, assigned: &[&'a String], halves: bool) -> Vec<Planned<'a>> {
        if !halves {
            return vec![self.plan(assigned)];
        }
        let (first, second) = assigned.split_at(assigned.len() / 2);
        std::thread::scope(|s| {
            let second = s.spawn(|| self.plan(second));
            let first = self.plan(first);
            let second = second
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            vec![first, second]
        })
    }

    /// Plans some assigned groups: their attributes and members.
    fn plan(&self, assigned: &[&'a String]) -> Planned<'a> {
        let mut out = Planned::default();
        for gid in assigned {
            if let Some(group) = self.mirror.groups.get(gid.as_str()) {
                self.plan_group(gid, group, &mut out);
            }
        }
        out
    }

    fn plan_group(&self, gid: &'a str, group: &'a MirrorGroup, out: &mut Planned<'a>) {
        let attrs = self.mapping.map_group(gid, &group.props);
        if self.held.contains(gid) {
            out.held += 1;
            out.wanted.push(gid);
            return;
        }
        let Some(name) = attrs
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            out.skipped.push(SkippedRow {
                entra_id: gid.to_string(),
                kind: "group".into(),
                reason: "no displayName".into(),
            });
            return;
        };
        out.wanted.push(gid);
        let have = self.snapshot_groups.get(gid);
        let members = self.members_of(gid, group, have.map(|g| &g.members));
        let none = BTreeSet::new();
        let pushed_members = match have {
            None => {
                out.ops.push(Op::CreateGroup {
                    entra_id: gid.to_string(),
                    display_name: name.clone(),
                    attrs,
                });
                &none
            }
            Some(have) => {
                let paths = self.mapping.group.iter().map(|a| a.scim_path.as_str());
                let changes = diff(&attrs, &managed(&have.attrs, paths));
                if !changes.is_empty() {
                    out.ops.push(Op::UpdateGroup {
                        entra_id: gid.to_string(),
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
            out.ops.push(Op::AddMembers {
                group: gid.to_string(),
                display_name: name.clone(),
                users: adds,
            });
        }
        if !removes.is_empty() {
            out.ops.push(Op::RemoveMembers {
                group: gid.to_string(),
                display_name: name,
                users: removes,
            });
        }
    }

    /// The group's members in HERE once the plan is through, sorted: its users the plan
    /// leaves active, and those kept as they are for bad source data (if members already).
    fn members_of(
        &self,
        gid: &str,
        group: &'a MirrorGroup,
        pushed: Option<&BTreeSet<String>>,
    ) -> Vec<&'a str> {
        let mut members = Vec::new();
        scope::for_each_group_user(self.mirror, gid, group, self.members, |u| {
            let d = decided(self.candidates, self.assumed, u);
            if d.active || (d.protected && pushed.is_some_and(|m| m.contains(u))) {
                members.push(u);
            }
        });
        // direct members come sorted and once each; nested ones may not
        members.sort_unstable();
        members.dedup();
        members
    }
}

/// Members to add and to remove, in order: both sets sort alike, so one walk compares them.
fn member_changes(want: &[&str], have: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::PlanOptions;
    use crate::state::MirrorUser;

    /// Everything a group plan comes to, parts joined in order.
    type Joined<'a> = (Vec<Op>, Vec<SkippedRow>, usize, Vec<&'a str>);

    fn joined(parts: Vec<Planned<'_>>) -> Joined<'_> {
        let mut out: Joined = Default::default();
        for part in parts {
            out.0.extend(part.ops);
            out.1.extend(part.skipped);
            out.2 += part.held;
            out.3.extend(part.wanted);
        }
        out
    }

    /// A tenant's groups: some new, some pushed with other names and members, one held in
    /// escrow, some without a displayName; members enabled or disabled.
    fn mirror() -> (MirrorData, BTreeMap<String, SnapGroup>) {
        let mut m = MirrorData::default();
        for u in 0..200 {
            let props =
                json!({"userPrincipalName": format!("u{u:03}@x"), "accountEnabled": u % 9 != 0});
            let props = props.as_object().cloned().unwrap_or_default();
            let user = MirrorUser {
                props,
                soft_deleted: false,
            };
            m.users.insert(format!("u{u:03}"), user);
        }
        let mut pushed = BTreeMap::new();
        for g in 0..41 {
            let gid = format!("g{g:02}");
            let mut props = serde_json::Map::new();
            if g % 10 != 7 {
                props.insert("displayName".into(), json!(format!("Group {g}")));
            }
            let members = |k: usize| {
                (0..200)
                    .filter(move |u| (u + g) % k == 0)
                    .map(|u| format!("u{u:03}"))
            };
            let user_members = members(7).collect();
            let group = MirrorGroup {
                props,
                user_members,
                group_members: BTreeSet::new(),
            };
            m.groups.insert(gid.clone(), group);
            m.assigned_groups.insert(gid.clone());
            if g % 3 == 0 {
                let old = SnapGroup {
                    scim_id: format!("s{g}"),
                    display_name: format!("Old {g}"),
                    attrs: [("displayName".to_string(), json!(format!("Old {g}")))].into(),
                    members: members(5).collect(),
                };
                pushed.insert(gid, old);
            }
        }
        (m, pushed)
    }

    #[test]
    fn groups_planned_in_halves_come_to_what_one_thread_plans() {
        let (m, pushed) = mirror();
        let (mapping, held) = (Mapping::default(), BTreeSet::from(["g05".to_string()]));
        let options = PlanOptions {
            group_members: GroupMembers::Direct,
            delete_groups_out_of_scope: true,
        };
        let mut planner = Planner::new(&m, &pushed, &mapping, &held, &options);
        for (id, user) in &m.users {
            planner.user(id, Some(user), None);
        }
        let view = planner.group_view();
        let assigned: Vec<&String> = m.assigned_groups.iter().collect();
        let one = joined(view.plan_parts(&assigned, false));
        assert_eq!(one, joined(view.plan_parts(&assigned, true)));
        let kinds: BTreeSet<&str> = one.0.iter().map(Op::name).collect();
        assert_eq!(
            kinds,
            BTreeSet::from([
                "add_members",
                "create_group",
                "remove_members",
                "update_group"
            ])
        );
        assert_eq!((one.1.len(), one.2, one.3.len()), (4, 1, 37));
    }
}
