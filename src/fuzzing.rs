//! Entry points for the `cargo fuzz` targets in `fuzz/`. Each takes raw bytes, drives one
//! parser end to end as a cycle would, and returns what it saw so the target can check
//! invariants. Not an API: hidden from the docs and free to change with the targets.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};

use crate::config::{Config, GroupMembers, MappingConfig};
use crate::graph::{apply_page, assignments_of, GraphError, ReadStats, Resource};
use crate::mapping::{AttrText, Attrs, Mapping};
use crate::plan::{diff, Op, Plan, PlanOptions, Planner};
use crate::scim::path::{build_resource, extract};
use crate::scim::{error_fields, find_in_list, patch, PatchStyle, USER_SCHEMA};
use crate::state::{Ack, OperationLog, SkippedRow, State, StateError};

/// Cycles one delta input may drive.
const MAX_CYCLES: usize = 4;
const URL: &str = "https://graph.microsoft.com/v1.0/fuzz/delta";

/// What [`delta_pages`] saw.
#[derive(Debug, Default)]
pub struct DeltaRun {
    pub stats: ReadStats,
    /// Reads refused as malformed (their transaction rolled back, as a cycle's would).
    pub refused: usize,
    /// The plan of each cycle; every operation was then acknowledged.
    pub plans: Vec<Plan>,
    /// One more cycle with Entra unchanged: a converged planner has nothing left to do.
    pub settled: Plan,
    /// Cycles where the cycle's planner (users settled by their keys, the others planned
    /// from their stored rows) and the full planner (every user parsed) disagreed: (row plan, full plan).
    pub disagreements: Vec<(Plan, Plan)>,
}

/// Delta pages → mirror → plan, for several cycles over one in-memory state.
///
/// The input is one Graph delta page (`{"value": [...], "@odata.deltaLink": ...}`) or an
/// array of pages, one per cycle. Every page is applied as a users page and as a groups
/// page. A page's optional `assignments` member is read as an `appRoleAssignedTo` page;
/// without it every group and the users with an even-length id are assigned. After each
/// cycle's plan, every operation is acknowledged as the push would record it.
///
/// `Ok(None)` when the input is not JSON; `Err` only when the state itself fails.
pub fn delta_pages(data: &[u8]) -> Result<Option<DeltaRun>, StateError> {
    let Ok(input) = serde_json::from_slice::<Value>(data) else {
        return Ok(None);
    };
    let pages: Vec<&Value> = match &input {
        Value::Array(pages) => pages.iter().take(MAX_CYCLES).collect(),
        page => vec![page],
    };
    let options = PlanOptions {
        group_members: if data.len().is_multiple_of(2) {
            GroupMembers::Direct
        } else {
            GroupMembers::Transitive
        },
        delete_groups_out_of_scope: !data.len().is_multiple_of(3),
    };
    let mapping = Mapping::default();
    let mut state = State::open_in_memory()?;
    let mut run = DeltaRun::default();
    for page in pages {
        match read(&mut state, page, &mut run.stats) {
            Ok(()) => {}
            Err(GraphError::State(e)) => return Err(e),
            Err(_) => run.refused += 1,
        }
        let plan = cycle_plan(&mut state, &mapping, &options, &mut run)?;
        acknowledge(&mut state, &plan)?;
        run.plans.push(plan);
    }
    run.settled = cycle_plan(&mut state, &mapping, &options, &mut run)?;
    Ok(Some(run))
}

/// Plans as a cycle does (and remembers the fingerprints it would), checking the plan
/// against one made by parsing every user.
fn cycle_plan(
    state: &mut State,
    mapping: &Mapping,
    options: &PlanOptions,
    run: &mut DeltaRun,
) -> Result<Plan, StateError> {
    let directory = state.load_directory()?;
    let snapshot_groups = state.load_snapshot_groups()?;
    let held = BTreeSet::new();
    let mut rows = Planner::new(&directory, &snapshot_groups, mapping, &held, options);
    crate::cycle::plan_users(state, crate::cycle::KeyScan::Inline, &mut rows)?;
    let plan = rows.finish();
    let mut full = Planner::new(&directory, &snapshot_groups, mapping, &held, options);
    state.for_each_user(|id, user, pushed| full.user(id, user.as_ref(), pushed.as_ref()))?;
    let full = full.finish();
    let same = without_sources(&plan.ops) == without_sources(&full.ops)
        && sorted(&plan.skipped) == sorted(&full.skipped)
        && plan.held == full.held;
    if !same {
        run.disagreements.push((plan.clone(), full));
    }
    state.remember_sources(&plan.sources)?;
    Ok(plan)
}

/// Skipped rows in id order (the planners see users in different orders).
fn sorted(skipped: &[SkippedRow]) -> Vec<&SkippedRow> {
    let mut rows: Vec<&SkippedRow> = skipped.iter().collect();
    rows.sort_by(|a, b| a.entra_id.cmp(&b.entra_id));
    rows
}

/// Operations without the fingerprints only the row planner records.
fn without_sources(ops: &[Op]) -> Vec<Op> {
    let mut ops = ops.to_vec();
    for op in &mut ops {
        if let Op::CreateUser { source, .. } | Op::UpdateUser { source, .. } = op {
            *source = None;
        }
    }
    ops
}

/// One read: assignments, the page as a users round and as a groups round, all or nothing.
fn read(state: &mut State, page: &Value, stats: &mut ReadStats) -> Result<(), GraphError> {
    let tx = state.begin_read()?;
    let assignments = match page.get("assignments") {
        Some(list) => assignments_of(list, URL)?,
        None => default_assignments(page),
    };
    tx.set_assignments(&assignments)?;
    for res in [Resource::Users, Resource::Groups] {
        apply_page(&tx, res, page, URL, "fuzz", stats)?;
    }
    tx.commit()?;
    Ok(())
}

fn default_assignments(page: &Value) -> Vec<(String, String)> {
    let ids = page
        .get("value")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("id")?.as_str());
    let mut out = Vec::new();
    for id in ids {
        if id.len().is_multiple_of(2) {
            out.push((id.to_string(), "User".to_string()));
        }
        out.push((id.to_string(), "Group".to_string()));
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// Records every operation of `plan` as acknowledged, with made-up SCIM ids.
fn acknowledge(state: &mut State, plan: &Plan) -> Result<(), StateError> {
    for op in &plan.ops {
        let user = |entra_id: &String,
                    scim_id: &str,
                    name: &String,
                    active,
                    attrs: &AttrText,
                    source: &Option<i64>| Ack::User {
            entra_id: entra_id.clone(),
            scim_id: scim_id.to_string(),
            user_name: name.clone(),
            active,
            attrs: attrs.clone(),
            source: *source,
        };
        let group = |entra_id: &String, scim_id: &str, name: &String, attrs: &Attrs| Ack::Group {
            entra_id: entra_id.clone(),
            scim_id: scim_id.to_string(),
            display_name: name.clone(),
            attrs: attrs.clone(),
        };
        let ack = match op {
            Op::CreateUser {
                entra_id,
                user_name,
                attrs,
                source,
            } => user(
                entra_id,
                &format!("u-{entra_id}"),
                user_name,
                true,
                attrs,
                source,
            ),
            Op::UpdateUser {
                entra_id,
                scim_id,
                user_name,
                attrs,
                source,
                ..
            } => user(entra_id, scim_id, user_name, true, attrs, source),
            Op::DeactivateUser {
                entra_id,
                scim_id,
                user_name,
                attrs,
                ..
            } => user(entra_id, scim_id, user_name, false, attrs, &None),
            Op::SetManager {
                entra_id, manager, ..
            } => Ack::Manager {
                entra_id: entra_id.clone(),
                manager: manager.clone(),
            },
            Op::CreateGroup {
                entra_id,
                display_name,
                attrs,
            } => group(entra_id, &format!("g-{entra_id}"), display_name, attrs),
            Op::UpdateGroup {
                entra_id,
                scim_id,
                display_name,
                attrs,
                ..
            } => group(entra_id, scim_id, display_name, attrs),
            Op::AddMembers { group, users, .. } => Ack::MembersAdded {
                group: group.clone(),
                users: users.clone(),
            },
            Op::RemoveMembers { group, users, .. } => Ack::MembersRemoved {
                group: group.clone(),
                users: users.clone(),
            },
            Op::DeleteGroup { entra_id, .. } => Ack::GroupDeleted {
                entra_id: entra_id.clone(),
            },
        };
        let log = OperationLog {
            run_id: None,
            entra_id: op.entra_id().to_string(),
            kind: op.kind(),
            name: op.object_name().to_string(),
            op: op.name().to_string(),
            changes: Value::Null,
            scim_status: Some(200),
            error: None,
        };
        state.record(&ack, &log)?;
    }
    Ok(())
}

/// What [`scim_response`] saw.
#[derive(Debug, Default)]
pub struct ScimRun {
    /// (path, value read from HERE's resource, value read back after rebuilding it).
    pub round_trips: Vec<(String, Option<Value>, Option<Value>)>,
}

/// A SCIM response body as HERE might send it: the error fields, the `ListResponse` lookup
/// of adoption, every mapped path read from the body and from each listed resource (as
/// adoption reads an existing resource), the PATCH adoption would send, and each value
/// written back into a resource and read again.
pub fn scim_response(data: &[u8]) -> ScimRun {
    let mut run = ScimRun::default();
    let body: Option<Value> = serde_json::from_slice(data).ok();
    let _ = error_fields(body.as_ref());
    let Some(body) = body else {
        return run;
    };
    let mapping = Mapping::default();
    let user_paths: Vec<String> = mapping
        .user_paths()
        .map(str::to_string)
        .chain(["active".to_string()])
        .collect();
    let group_paths: Vec<String> = mapping.group.iter().map(|a| a.scim_path.clone()).collect();
    let mut resources = vec![body.clone()];
    if let Some(list) = body.get("Resources").and_then(Value::as_array) {
        resources.extend(list.iter().cloned());
    }
    for attribute in ["userName", "displayName"] {
        let wanted = first_text(&body, attribute).unwrap_or_default();
        let _ = find_in_list(Some(&body), attribute, &wanted);
    }
    for existing in &resources {
        for paths in [&user_paths, &group_paths] {
            adopt(&mut run, &mapping, existing, paths);
        }
    }
    // Paths the operator may write in the mapping, read from the same body.
    if let Some(paths) = body.get("paths").and_then(Value::as_array) {
        for path in paths.iter().filter_map(Value::as_str) {
            let _ = extract(&body, path);
        }
    }
    run
}

fn first_text(body: &Value, attribute: &str) -> Option<String> {
    body.get("Resources")?
        .as_array()?
        .first()?
        .get(attribute)?
        .as_str()
        .map(str::to_string)
}

fn adopt(run: &mut ScimRun, mapping: &Mapping, existing: &Value, paths: &[String]) {
    let current: Attrs = paths
        .iter()
        .filter_map(|p| extract(existing, p).map(|v| (p.clone(), v)))
        .collect();
    let desired = match existing.as_object() {
        Some(props) => mapping.map_user("fuzz", props),
        None => Attrs::new(),
    };
    let changes = diff(&desired, &current);
    for style in [PatchStyle::Rfc7644, PatchStyle::Entra] {
        let _ = patch::body(patch::attribute_ops(&changes, &desired, style));
    }
    let rebuilt = build_resource(USER_SCHEMA, &current);
    for (path, value) in &current {
        let again = extract(&rebuilt, path);
        run.round_trips
            .push((path.clone(), Some(value.clone()), again));
    }
}

/// What [`config_text`] saw.
#[derive(Debug, Default)]
pub struct ConfigRun {
    pub config_ok: bool,
    pub mapping_ok: bool,
}

/// Config text → validated [`Config`] → [`Mapping`]; the `[mapping]` tables are also read
/// on their own so mapping overrides are reached without a valid rest of the file.
pub fn config_text(data: &[u8]) -> ConfigRun {
    let mut run = ConfigRun::default();
    let Ok(text) = std::str::from_utf8(data) else {
        return run;
    };
    if let Ok(cfg) = Config::parse(text, Path::new("/etc/entra-here-sync/fuzz.toml")) {
        run.config_ok = true;
        if let Ok(m) = Mapping::from_config(&cfg.mapping) {
            use_mapping(&m);
        }
    }
    #[derive(serde::Deserialize)]
    struct OnlyMapping {
        #[serde(default)]
        mapping: MappingConfig,
    }
    let mapping = toml::from_str::<OnlyMapping>(text)
        .map(|o| o.mapping)
        .or_else(|_| toml::from_str::<MappingConfig>(text));
    if let Ok(cfg) = mapping {
        if let Ok(m) = Mapping::from_config(&cfg) {
            run.mapping_ok = true;
            use_mapping(&m);
        }
    }
    run
}

/// Everything a cycle does with a mapping that does not need Graph or HERE.
fn use_mapping(m: &Mapping) {
    let _ = (m.user_select(&["department".into()]), m.group_select());
    let props = json!({
        "userPrincipalName": "a@b.example",
        "displayName": "A B",
        "givenName": "A",
        "mail": "a@b.example",
        "businessPhones": ["+1 555"],
        "onPremisesExtensionAttributes": {"extensionAttribute1": "x"},
    });
    if let Some(props) = props.as_object() {
        let user = m.map_user("u1", props);
        let group = m.map_group("g1", props);
        for attrs in [&user, &group] {
            let resource = build_resource(USER_SCHEMA, attrs);
            for path in attrs.keys() {
                let _ = extract(&resource, path);
            }
            let changes = diff(attrs, &Attrs::new());
            let _ = patch::attribute_ops(&changes, attrs, PatchStyle::Entra);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_run_and_a_cycle_settles() {
        let page = json!([
            {
                "value": [
                    {"id": "u1", "userPrincipalName": "a@x", "accountEnabled": true,
                     "manager@delta": [{"id": "u2"}]},
                    {"id": "u2", "userPrincipalName": "b@x"},
                    {"id": "g1", "displayName": "G", "members@delta": [{"id": "u1"}, {"id": "u2"}]}
                ],
                "assignments": {"value": [
                    {"principalId": "g1", "principalType": "Group"},
                    {"principalId": "u1", "principalType": "User"}
                ]},
                "@odata.deltaLink": "L1"
            },
            {"value": [{"id": "u1", "@removed": {"reason": "deleted"}}], "@odata.deltaLink": "L2"},
            {"no": "value"}
        ]);
        let run = delta_pages(page.to_string().as_bytes()).unwrap().unwrap();
        assert_eq!(run.refused, 1);
        assert!(!run.plans[0].ops.is_empty());
        assert!(run.settled.ops.is_empty(), "{:?}", run.settled.ops);
        assert!(run.disagreements.is_empty(), "{:?}", run.disagreements);
        assert!(delta_pages(b"not json").unwrap().is_none());
    }

    #[test]
    fn scim_and_config_entry_points_run() {
        let body = json!({"Resources": [{"userName": "a@x", "emails": [{"type": "work", "value": "a@x"}]}]});
        let run = scim_response(body.to_string().as_bytes());
        assert!(run.round_trips.iter().all(|(_, a, b)| a == b));
        assert!(!run.round_trips.is_empty());
        let run = config_text(b"[mapping.user]\ntitle = \"jobTitle\"\n");
        assert!(run.mapping_ok && !run.config_ok);
    }
}
