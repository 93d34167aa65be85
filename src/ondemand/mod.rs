//! Provisioning on demand (`sync --user <UPN or object id> [--dry-run]`): one user, now,
//! with every step printed — read, scope decision and its reason, match in HERE, action,
//! result — so an operator can see why a user is (or is not) in HERE without waiting for
//! the next cycle or reading logs.
//!
//! The user is read from Graph directly ([`read`]); the plan comes from the ordinary
//! planner fed with just this user and just the assigned groups that contain it (their
//! other members are left out of the plan, so nothing happens to them); the push is the
//! ordinary push, so acknowledgements land in the snapshot and the history like a cycle's.
//! The mirror and the delta links are not touched.

mod read;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::AtomicBool;

use serde_json::Value;

use crate::config::Config;
use crate::cycle::{exit, scope_attributes};
use crate::graph::GraphClient;
use crate::mapping::Mapping;
use crate::plan::{Plan, PlanOptions, Planner};
use crate::push::{push, PushContext};
use crate::report::{plan_lines, Summary};
use crate::scim::path::extract;
use crate::scim::{Kind, ScimClient};
use crate::state::{MirrorData, MirrorGroup, MirrorUser, SnapGroup, SnapUser, State};
use read::{read_user, ReadError, UserRead};

/// Runs provisioning on demand for `key`; prints the steps to `out`; returns the exit code:
/// 0 done (or out of scope, or dry run), 1 unknown user or runtime error, 3 the push or the
/// user's source record failed.
pub async fn provision_user(
    cfg: &Config,
    state: &mut State,
    key: &str,
    dry_run: bool,
    out: &mut dyn Write,
) -> i32 {
    match run(cfg, state, key, dry_run, out).await {
        Ok(code) => code,
        Err(message) => {
            tracing::error!(user = key, "provisioning on demand failed: {message}");
            say(out, "error", &message);
            exit::RUNTIME
        }
    }
}

fn say(out: &mut dyn Write, step: &str, text: &str) {
    let _ = writeln!(out, "{step:<7} {text}");
}

async fn run(
    cfg: &Config,
    state: &mut State,
    key: &str,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<i32, String> {
    let mapping = Mapping::from_config(&cfg.mapping).map_err(|e| e.to_string())?;
    let graph = GraphClient::new(&cfg.graph, cfg.here.timeout).map_err(|e| e.to_string())?;
    let user_select = mapping.user_select(&scope_attributes(cfg));
    let members = cfg.sync.group_members;
    let read = read_user(
        &graph,
        key,
        &user_select,
        &mapping.group_select(),
        members,
        mapping.manager,
    )
    .await;
    let user = match read {
        Ok(u) => u,
        Err(ReadError::Unknown) => {
            return Err(format!(
                "no user {key:?} in Entra: give the userPrincipalName or the object id of an existing user"
            ))
        }
        Err(ReadError::Graph(e)) => return Err(e.to_string()),
    };
    let upn = text(&user.props, "userPrincipalName");
    let enabled = user.props.get("accountEnabled").and_then(Value::as_bool) != Some(false);
    say(
        out,
        "read",
        &format!(
            "{upn} (object id {}), accountEnabled = {enabled}, member of {} group(s){}",
            user.id,
            user.groups.len(),
            if members == crate::config::GroupMembers::Transitive {
                " (nesting included)"
            } else {
                ""
            }
        ),
    );
    say(
        out,
        "read",
        &format!(
            "app assignments: {} user(s) and {} group(s) assigned directly",
            user.assigned_users.len(),
            user.assigned_groups.len()
        ),
    );
    for clause in cfg.sync.scope_filter.clauses() {
        let value = crate::plan::filter::attribute_text(&user.props, &clause.attribute);
        say(
            out,
            "read",
            &format!(
                "{} = {}",
                clause.attribute,
                value
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_else(|| "(empty)".into())
            ),
        );
    }
    let pushed = state
        .snapshot_user(&user.id, &desired_name(&mapping, &user))
        .map_err(|e| e.to_string())?;
    if let Some((other, have)) = pushed.as_ref().filter(|(e, _)| *e != user.id) {
        return Err(format!(
            "HERE user {} ({}) is linked to another Entra object ({other}) in the state; resolve the duplicate userName in Entra first",
            have.user_name, have.scim_id
        ));
    }
    let pushed = pushed.map(|(_, u)| u);
    let assigned: BTreeSet<&String> = user.assigned_groups.iter().collect();
    let via: Vec<&String> = user
        .groups
        .keys()
        .filter(|g| assigned.contains(g))
        .collect();
    let direct = user.assigned_users.contains(&user.id);
    if let Err(reason) = scope(cfg, &user, direct, &via, pushed.as_ref(), enabled) {
        say(out, "scope", &format!("OUT OF SCOPE: {reason}"));
        if pushed.as_ref().is_some_and(|p| p.active) {
            say(out, "note", "HERE still has this user active; the next cycle deactivates it (the safety brake applies)");
        }
        say(out, "result", "nothing was written");
        return Ok(exit::OK);
    }
    let names: Vec<String> = via
        .iter()
        .map(|g| format!("{:?}", text(&user.groups[*g], "displayName")))
        .collect();
    let reason = match (direct, names.is_empty()) {
        (true, true) => "assigned directly".to_string(),
        (true, false) => format!(
            "assigned directly and member of assigned group {}",
            names.join(", ")
        ),
        _ => format!("member of assigned group {}", names.join(", ")),
    };
    let disabled = if enabled {
        ""
    } else {
        "; disabled in Entra, so HERE's user is deactivated"
    };
    say(out, "scope", &format!("in scope: {reason}{disabled}"));
    let scim = std::sync::Arc::new(ScimClient::new(&cfg.here).map_err(|e| e.to_string())?);
    let pushed = match pushed {
        Some(p) => {
            say(
                out,
                "match",
                &format!(
                    "HERE user {} ({}), active = {}, from the state",
                    p.scim_id, p.user_name, p.active
                ),
            );
            Some(p)
        }
        None => find_in_here(&scim, &mapping, &desired_name(&mapping, &user), out).await?,
    };
    let plan = plan_one(cfg, state, &mapping, &user, &via, pushed.as_ref())?;
    for s in &plan.skipped {
        say(
            out,
            "skipped",
            &format!("{} {}: {}", s.kind, s.entra_id, s.reason),
        );
    }
    if !plan.skipped.is_empty() {
        say(
            out,
            "result",
            "the source record cannot be provisioned; nothing was written",
        );
        return Ok(exit::PARTIAL);
    }
    if plan.ops.is_empty() {
        say(out, "action", "none: HERE already holds what Entra says");
        return Ok(exit::OK);
    }
    for line in plan_lines(&plan) {
        say(out, "action", &line);
    }
    if dry_run {
        say(out, "result", "dry run: nothing was written");
        return Ok(exit::OK);
    }
    push_plan(cfg, state, &scim, &mapping, plan, out).await
}

/// The scope decision with Entra's reasons; `Err` holds why the user is out of scope.
fn scope(
    cfg: &Config,
    user: &UserRead,
    direct: bool,
    via: &[&String],
    pushed: Option<&SnapUser>,
    enabled: bool,
) -> Result<(), String> {
    if !direct && via.is_empty() {
        let nested = match cfg.sync.group_members {
            crate::config::GroupMembers::Direct => " (members of groups nested in an assigned group are not in scope unless sync.group_members = \"transitive\")",
            crate::config::GroupMembers::Transitive => "",
        };
        return Err(format!(
            "not assigned to the app, neither directly nor through an assigned group{nested}"
        ));
    }
    cfg.sync.scope_filter.check(&user.props)?;
    if !enabled && !pushed.is_some_and(|p| p.active) {
        return Err("disabled in Entra (accountEnabled = false) and not active in HERE: a disabled user is not created (Entra does the same)".into());
    }
    Ok(())
}

fn text(props: &serde_json::Map<String, Value>, key: &str) -> String {
    props
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The userName the mapping gives this user (HERE matches users by it).
fn desired_name(mapping: &Mapping, user: &UserRead) -> String {
    mapping
        .map_user(&user.id, &user.props)
        .get("userName")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| text(&user.props, "userPrincipalName"))
}

/// Looks the user up in HERE by userName (`GET /Users?filter=userName eq "…"`); a match is
/// adopted: planned as an update of the existing resource, never a duplicate.
async fn find_in_here(
    scim: &ScimClient,
    mapping: &Mapping,
    user_name: &str,
    out: &mut dyn Write,
) -> Result<Option<SnapUser>, String> {
    let found = scim
        .find(Kind::Users, "userName", user_name)
        .await
        .map_err(|e| e.to_string())?;
    let Some(resource) = found else {
        say(
            out,
            "match",
            &format!("no HERE user with userName {user_name:?}: it will be created"),
        );
        return Ok(None);
    };
    let scim_id = resource
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let active = match resource.get("active") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.eq_ignore_ascii_case("false"),
        _ => true,
    };
    let paths = mapping.user_paths().chain(["active"]);
    let attrs = paths
        .filter_map(|p| extract(&resource, p).map(|v| (p.to_string(), v)))
        .collect();
    let name = resource
        .get("userName")
        .and_then(Value::as_str)
        .unwrap_or(user_name)
        .to_string();
    say(
        out,
        "match",
        &format!(
            "HERE user {scim_id} ({name}), active = {active}, found by userName: it is adopted"
        ),
    );
    Ok(Some(SnapUser {
        scim_id,
        user_name: name,
        active,
        attrs,
        manager: None,
    }))
}

/// The planner's plan for this user alone and the assigned groups that contain it (or that
/// HERE lists it in), with every other member left out so nothing happens to them.
fn plan_one(
    cfg: &Config,
    state: &State,
    mapping: &Mapping,
    user: &UserRead,
    via: &[&String],
    pushed: Option<&SnapUser>,
) -> Result<Plan, String> {
    let err = |e: crate::state::StateError| e.to_string();
    let stored = state.load_directory().map_err(err)?;
    let pushed_groups = state.load_snapshot_groups().map_err(err)?;
    let assigned: BTreeSet<&String> = user.assigned_groups.iter().collect();
    let listed = pushed_groups
        .iter()
        .filter(|(g, sg)| assigned.contains(g) && sg.members.contains(&user.id))
        .map(|(g, _)| g);
    let mut mirror = MirrorData::default();
    if user.assigned_users.contains(&user.id) {
        mirror.assigned_users.insert(user.id.clone());
    }
    let mut snapshot_groups: BTreeMap<String, SnapGroup> = BTreeMap::new();
    for gid in via.iter().copied().chain(listed) {
        let props = user
            .groups
            .get(gid)
            .or(stored.groups.get(gid).map(|g| &g.props))
            .cloned()
            .unwrap_or_default();
        let mut group = MirrorGroup {
            props,
            ..MirrorGroup::default()
        };
        if via.contains(&gid) {
            group.user_members.insert(user.id.clone());
        }
        mirror.groups.insert(gid.clone(), group);
        mirror.assigned_groups.insert(gid.clone());
        if let Some(sg) = pushed_groups.get(gid) {
            let mut sg = sg.clone();
            sg.members.retain(|m| *m == user.id);
            snapshot_groups.insert(gid.clone(), sg);
        }
    }
    let options = PlanOptions {
        group_members: cfg.sync.group_members,
        delete_groups_out_of_scope: false,
    };
    let held = BTreeSet::new();
    let mut planner = Planner::new(&mirror, &snapshot_groups, mapping, &held, &options)
        .with_scope_filter(cfg.sync.scope_filter.clone());
    if let Some(m) = &user.manager {
        let manager = state.snapshot_user(m, "").map_err(err)?;
        if manager.is_some_and(|(id, u)| id == *m && u.active) {
            planner.assume_active(m);
        }
    }
    let mut props = user.props.clone();
    if let Some(m) = &user.manager {
        props.insert("manager".into(), Value::String(m.clone()));
    }
    let mirror_user = MirrorUser {
        props,
        soft_deleted: false,
    };
    planner.user(&user.id, Some(&mirror_user), pushed);
    Ok(planner.finish())
}

/// Pushes through the ordinary push (snapshot, history and escrow as in a cycle) and
/// prints each recorded operation's result.
async fn push_plan(
    cfg: &Config,
    state: &mut State,
    scim: &std::sync::Arc<ScimClient>,
    mapping: &Mapping,
    plan: Plan,
    out: &mut dyn Write,
) -> Result<i32, String> {
    let run_id = state.start_run(false).map_err(|e| e.to_string())?;
    let stop = AtomicBool::new(false);
    let ctx = PushContext::new(cfg, scim.clone(), mapping, run_id, &stop);
    let mut summary = Summary::default();
    let pushed = push(&ctx, plan.ops, state, &mut summary, &mut |_, _| {}).await;
    summary.scim_requests = scim.request_count();
    summary.exit_code = match (&pushed, summary.failed) {
        (Err(_), _) => exit::RUNTIME,
        (Ok(()), 0) => exit::OK,
        _ => exit::PARTIAL,
    };
    summary.error = pushed.as_ref().err().map(|e| e.to_string());
    let json = serde_json::to_value(&summary).unwrap_or_default();
    if let Err(e) = state.finish_run(run_id, summary.exit_code, &json, summary.error.as_deref()) {
        tracing::error!(error = %e, "cannot record the run in the state");
    }
    for row in state.run_operations(run_id).map_err(|e| e.to_string())? {
        let status = row
            .scim_status
            .map(|s| format!("SCIM {s}"))
            .unwrap_or_else(|| "no SCIM status".into());
        match row.error {
            None => say(
                out,
                "result",
                &format!("{} {}: done ({status})", row.op, row.name),
            ),
            Some(e) => say(
                out,
                "result",
                &format!(
                    "{} {}: FAILED ({status}): {e}; retried next cycle",
                    row.op, row.name
                ),
            ),
        }
    }
    if let Some(e) = &summary.error {
        say(out, "error", e);
    }
    Ok(summary.exit_code)
}
