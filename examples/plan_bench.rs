//! Planner benchmark: a synthetic tenant streamed through the pure planner, the way a
//! cycle streams users from the state (no network, no SQLite).
//!
//! `cargo run --release --example plan_bench -- USERS GROUPS` prints the planner's own
//! time (building the synthetic rows is not counted) and the peak RSS of an initial plan
//! (empty snapshot) and of a no-change plan (full snapshot).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use entra_here_sync::config::GroupMembers;
use entra_here_sync::demo::{peak_rss_mb, upn, user_props};
use entra_here_sync::mapping::Mapping;
use entra_here_sync::plan::{Op, PlanOptions, Planner};
use entra_here_sync::state::{MirrorData, MirrorGroup, MirrorUser, SnapGroup, SnapUser};

fn user_id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000")
}

fn mirror_user(i: usize) -> MirrorUser {
    let mut props = user_props(i).as_object().cloned().unwrap_or_default();
    props.insert("userPrincipalName".into(), upn(i).into());
    MirrorUser {
        props,
        soft_deleted: false,
    }
}

/// Feeds `users` synthetic rows through the planner; returns the plan and the seconds spent
/// inside the planner (building the rows, as the state would hand them over, is not counted).
fn timed_plan<'a>(
    mut planner: Planner<'_>,
    users: usize,
    pushed: impl Fn(usize) -> Option<&'a SnapUser>,
) -> (entra_here_sync::plan::Plan, f64) {
    let mut spent = std::time::Duration::ZERO;
    for i in 0..users {
        let (id, row) = (user_id(i), mirror_user(i));
        let t = Instant::now();
        planner.user(&id, Some(&row), pushed(i));
        spent += t.elapsed();
    }
    let t = Instant::now();
    let plan = planner.finish();
    spent += t.elapsed();
    (plan, spent.as_secs_f64())
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let users = args.first().copied().unwrap_or(1_000_000);
    let groups = args.get(1).copied().unwrap_or(50_000);
    let mut dir = MirrorData::default();
    for g in 0..groups {
        let members: BTreeSet<String> = (0..20).map(|k| user_id((g * 20 + k) % users)).collect();
        let mut props = serde_json::Map::new();
        props.insert("displayName".into(), format!("Group {g}").into());
        let gid = format!("g{g:07}");
        dir.groups.insert(
            gid.clone(),
            MirrorGroup {
                props,
                user_members: members,
                group_members: BTreeSet::new(),
            },
        );
        dir.assigned_groups.insert(gid);
    }
    for i in (0..users).step_by(10) {
        dir.assigned_users.insert(user_id(i));
    }
    let mapping = Mapping::default();
    let options = PlanOptions {
        group_members: GroupMembers::Direct,
        delete_groups_out_of_scope: true,
    };
    let held = BTreeSet::new();
    println!(
        "synthetic directory: {users} users, {groups} groups; peak RSS {:.0} MB",
        peak_rss_mb()
    );

    let no_groups = BTreeMap::new();
    let (plan, secs) = timed_plan(
        Planner::new(&dir, &no_groups, &mapping, &held, &options),
        users,
        |_| None,
    );
    println!(
        "initial plan: {} operations in {secs:.2} s ({:.1} µs/user); peak RSS {:.0} MB",
        plan.ops.len(),
        secs * 1e6 / users as f64,
        peak_rss_mb()
    );

    // the snapshot that plan would leave behind, then a plan over an unchanged tenant
    let mut pushed_groups = BTreeMap::new();
    let mut pushed_users: Vec<Option<SnapUser>> = vec![None; users];
    for op in plan.ops {
        match op {
            Op::CreateUser {
                entra_id,
                user_name,
                attrs,
                ..
            } => {
                let i = usize::from_str_radix(&entra_id[..8], 16).unwrap_or(0);
                pushed_users[i] = Some(SnapUser {
                    scim_id: format!("s{i}"),
                    user_name,
                    active: true,
                    attrs: attrs.attrs(),
                    manager: None,
                });
            }
            Op::CreateGroup {
                entra_id,
                display_name,
                attrs,
            } => {
                pushed_groups.insert(
                    entra_id,
                    SnapGroup {
                        scim_id: "g".into(),
                        display_name,
                        attrs,
                        members: BTreeSet::new(),
                    },
                );
            }
            Op::AddMembers { group, users, .. } => {
                if let Some(g) = pushed_groups.get_mut(&group) {
                    g.members.extend(users);
                }
            }
            _ => {}
        }
    }
    let (plan, secs) = timed_plan(
        Planner::new(&dir, &pushed_groups, &mapping, &held, &options),
        users,
        |i| pushed_users[i].as_ref(),
    );
    println!(
        "no-change plan: {} operations in {secs:.2} s ({:.1} µs/user); peak RSS {:.0} MB",
        plan.ops.len(),
        secs * 1e6 / users as f64,
        peak_rss_mb()
    );
}
