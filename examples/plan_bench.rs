//! Planner benchmark: a synthetic tenant streamed through the pure planner exactly as a
//! cycle streams it from the state — [`UserRow`]s with the Entra properties as the compact
//! JSON text the state stores, and for the no-change plan the [`PushedRow`]s the state
//! holds once HERE acknowledged the initial plan (fingerprints included). No network, no
//! SQLite.
//!
//! `cargo run --release --example plan_bench -- USERS GROUPS` prints the planner's own
//! time and the RSS before and at the peak of each plan: an initial plan (empty snapshot)
//! and a no-change plan (everything acknowledged). The rows are built before the clock
//! starts (their memory is in "before") and handed over one by one, as the state hands
//! them over; the time runs from `Planner::new` to `finish`, which waits for the threads
//! the planner works out new users and groups on. CPU time is the process's, over every
//! thread.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use entra_here_sync::config::GroupMembers;
use entra_here_sync::demo::{peak_rss_mb, upn, user_props};
use entra_here_sync::mapping::{AttrText, Mapping};
use entra_here_sync::plan::{Op, Plan, PlanOptions, Planner};
use entra_here_sync::state::{fingerprint, MirrorData, MirrorGroup, PushedRow, SnapGroup, UserRow};

fn user_id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000")
}

/// User `i`'s properties as the mirror stores them (`Value::Object(..).to_string()`).
fn props_text(i: usize) -> String {
    let mut props = user_props(i).as_object().cloned().unwrap_or_default();
    props.insert("userPrincipalName".into(), upn(i).into());
    serde_json::Value::Object(props).to_string()
}

/// What the state holds for a user HERE acknowledged: userName, attributes, fingerprint.
type Acked = (String, AttrText, Option<i64>);

/// The process's time on a CPU so far (every thread, finished ones too), in seconds: the
/// machine may be shared, and wall time counts other processes' turns too.
fn cpu_secs() -> f64 {
    // utime and stime, in clock ticks (100 a second on Linux), follow the command name
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let ticks: f64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// Wall and CPU seconds.
#[derive(Default)]
struct Spent {
    wall: f64,
    cpu: f64,
}

impl Spent {
    fn of(f: impl FnOnce()) -> Spent {
        let (t, c) = (Instant::now(), cpu_secs());
        f();
        Spent {
            wall: t.elapsed().as_secs_f64(),
            cpu: cpu_secs() - c,
        }
    }
}

/// Every row, as the state would hand them over (built before the clock starts).
fn rows(users: usize, pushed: impl Fn(usize) -> Option<PushedRow>) -> Vec<UserRow> {
    (0..users)
        .map(|i| {
            let props = props_text(i);
            UserRow {
                id: user_id(i),
                // stored with the text, as the mirror stores it
                props_hash: Some(fingerprint(&props) as i64),
                props: Some(props),
                soft_deleted: false,
                pushed: pushed(i),
            }
        })
        .collect()
}

/// Streams `users` rows through a new planner; returns the plan, the time from
/// `Planner::new` to `finish` (its other threads' work included: `finish` waits for it),
/// and the RSS before the plan (the rows included).
fn timed_plan(
    new: impl FnOnce() -> Planner<'static>,
    users: usize,
    pushed: impl Fn(usize) -> Option<PushedRow>,
) -> (Plan, Spent, f64) {
    let rows = rows(users, pushed);
    let before = rss_mb();
    reset_peak();
    let mut plan = Plan::default();
    let spent = Spent::of(|| {
        let mut planner = new();
        rows.into_iter().for_each(|row| planner.user_row(row));
        plan = planner.finish();
    });
    (plan, spent, before)
}

/// The resident set now, in MB.
fn rss_mb() -> f64 {
    entra_here_sync::demo::memory_mb("VmRSS:")
}

/// Resets the peak RSS to the current RSS (Linux `clear_refs`), so each plan's peak is
/// its own.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn report(name: &str, plan: &Plan, spent: &Spent, users: usize, before: f64) {
    println!(
        "{name}: {} operations, {} sources in {:.2} s ({:.2} µs/user; CPU {:.2} s); RSS {before:.0} MB before, peak {:.0} MB",
        plan.ops.len(),
        plan.sources.len(),
        spent.wall,
        spent.wall * 1e6 / users as f64,
        spent.cpu,
        peak_rss_mb()
    );
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
    // leaked: the planner borrows them for 'static, as a cycle's planner borrows its inputs
    let dir: &'static MirrorData = Box::leak(Box::new(dir));
    let mapping: &'static Mapping = Box::leak(Box::default());
    let options: &'static PlanOptions = Box::leak(Box::new(PlanOptions {
        group_members: GroupMembers::Direct,
        delete_groups_out_of_scope: true,
    }));
    let held: &'static BTreeSet<String> = Box::leak(Box::default());
    let no_groups: &'static BTreeMap<String, SnapGroup> = Box::leak(Box::default());
    println!(
        "synthetic directory: {users} users, {groups} groups; RSS {:.0} MB",
        rss_mb()
    );

    let (plan, spent, before) = timed_plan(
        || Planner::new(dir, no_groups, mapping, held, options),
        users,
        |_| None,
    );
    report("initial plan", &plan, &spent, users, before);

    // What the state holds once HERE acknowledged that plan. The plan is consumed, so its
    // attributes move here rather than being copied.
    let mut acked: Vec<Option<Acked>> = vec![None; users];
    let mut pushed_groups = BTreeMap::new();
    for op in plan.ops {
        match op {
            Op::CreateUser {
                entra_id,
                user_name,
                attrs,
                source,
            } => {
                let i = usize::from_str_radix(&entra_id[..8], 16).unwrap_or(0);
                acked[i] = Some((user_name, attrs, source));
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
    let pushed_groups: &'static BTreeMap<String, SnapGroup> = Box::leak(Box::new(pushed_groups));
    let pushed = |i: usize| {
        let (user_name, attrs, source) = acked[i].as_ref()?;
        Some(PushedRow {
            scim_id: format!("s{i}"),
            user_name: user_name.clone(),
            active: true,
            attrs: attrs.as_str().to_string(),
            manager: None,
            source_hash: *source,
        })
    };
    // `acked` and the rows stand in for the state file: the no-change plan's own memory is
    // its peak minus the RSS before it
    let (plan, spent, before) = timed_plan(
        || Planner::new(dir, pushed_groups, mapping, held, options),
        users,
        pushed,
    );
    report("no-change plan", &plan, &spent, users, before);
}
