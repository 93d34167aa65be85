//! Executes a plan against HERE: stage by stage in the order that can't break, with
//! bounded concurrency inside a stage, each acknowledgement committed to the snapshot the
//! moment it arrives, and each failure sent to escrow without stopping the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::mapping::{AttrText, Attrs};
use crate::plan::{diff, Change, Op, Stage};
use crate::report::Summary;
use crate::scim::path::{build_resource, extract};
use crate::scim::{patch, Kind, PatchStyle, ScimClient, ScimError, GROUP_SCHEMA, USER_SCHEMA};
use crate::state::{Ack, OperationLog, State, StateError};

/// What the push needs besides the plan.
pub struct PushContext<'a> {
    pub client: &'a ScimClient,
    pub style: PatchStyle,
    pub max_members_per_patch: usize,
    pub max_concurrency: usize,
    /// Every user attribute path the mapping manages (to compare adopted users).
    pub managed_user_paths: Vec<String>,
    pub run_id: i64,
    /// Set by a shutdown request: no new operation starts, in-flight ones finish.
    pub stop: &'a AtomicBool,
}

/// Why a push ended early.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// HERE refused our credentials; nothing else can succeed.
    #[error(transparent)]
    Unauthorized(ScimError),
    /// Most operations failed: HERE is unwell, so the cycle stops pushing (quarantine).
    #[error("quarantine: {failed} of {attempted} operations failed this cycle, most with: {dominant}; pushing stopped, the schedule backs off until a cycle succeeds")]
    Quarantined {
        failed: usize,
        attempted: usize,
        dominant: String,
    },
    /// The state could not record an acknowledgement.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Quarantine starts when at least this many operations ran ...
const QUARANTINE_MIN_OPERATIONS: usize = 20;
/// ... and at least this share of them failed (Entra uses 40 %).
const QUARANTINE_FAILURE_SHARE: f64 = 0.4;

/// Failure bookkeeping of one push, for the quarantine decision.
#[derive(Default)]
struct Health {
    attempted: usize,
    failed: usize,
    errors: HashMap<String, usize>,
}

impl Health {
    fn observe(&mut self, result: &Result<(Ack, u16), ScimError>) {
        self.attempted += 1;
        if let Err(e) = result {
            self.failed += 1;
            let key = match e {
                ScimError::Http {
                    status, scim_type, ..
                } => format!("{status} {}", scim_type.as_deref().unwrap_or(""))
                    .trim_end()
                    .to_string(),
                ScimError::Transport { detail, .. } => format!("unreachable: {detail}"),
                other => other.to_string(),
            };
            *self.errors.entry(key).or_insert(0) += 1;
        }
    }

    fn quarantined(&self) -> bool {
        self.attempted >= QUARANTINE_MIN_OPERATIONS
            && self.failed as f64 >= self.attempted as f64 * QUARANTINE_FAILURE_SHARE
    }

    fn verdict(&self) -> PushError {
        let dominant = self
            .errors
            .iter()
            .max_by_key(|(k, n)| (**n, std::cmp::Reverse((*k).clone())))
            .map(|(k, n)| format!("{k} ({n}x)"))
            .unwrap_or_default();
        PushError::Quarantined {
            failed: self.failed,
            attempted: self.attempted,
            dominant,
        }
    }
}

/// How a finished unit of work changes the summary.
#[derive(Debug, Clone, Copy)]
enum Tally {
    UserCreated,
    UserUpdated,
    UserReactivated,
    UserDeactivated,
    GroupCreated,
    GroupUpdated,
    GroupDeleted,
    MembersAdded(usize),
    MembersRemoved(usize),
    Quiet,
}

/// One finished request (or request sequence) with what to record.
struct Done {
    op: &'static str,
    entra_id: String,
    kind: &'static str,
    name: String,
    changes: Value,
    result: Result<(Ack, u16), ScimError>,
    tally: Tally,
}

/// SCIM ids known so far (from the snapshot, then from this push's acknowledgements).
#[derive(Default)]
struct Ids {
    users: HashMap<String, String>,
    groups: HashMap<String, String>,
}

impl Ids {
    fn learn(&mut self, ack: &Ack) {
        match ack {
            Ack::User {
                entra_id, scim_id, ..
            } => {
                self.users.insert(entra_id.clone(), scim_id.clone());
            }
            Ack::Group {
                entra_id, scim_id, ..
            } => {
                self.groups.insert(entra_id.clone(), scim_id.clone());
            }
            Ack::GroupDeleted { entra_id } => {
                self.groups.remove(entra_id);
            }
            _ => {}
        }
    }
}

/// Pushes the plan; returns early only when HERE refuses the token or the state fails.
pub async fn push(
    ctx: &PushContext<'_>,
    ops: Vec<Op>,
    state: &mut State,
    summary: &mut Summary,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(), PushError> {
    let (users, groups) = state.scim_ids()?;
    let mut ids = Ids { users, groups };
    let total = ops.len();
    let mut finished = 0;
    let mut stages: Vec<(Stage, Vec<Op>)> = Vec::new();
    for op in ops {
        match stages.last_mut() {
            Some((stage, list)) if *stage == op.stage() => list.push(op),
            _ => stages.push((op.stage(), vec![op])),
        }
    }
    let refused = AtomicBool::new(false);
    let mut health = Health::default();
    for (_, list) in stages {
        if ctx.stop.load(Ordering::Relaxed) || refused.load(Ordering::Relaxed) {
            break;
        }
        let units: Vec<_> = list.into_iter().map(|op| resolve(op, &ids)).collect();
        let mut stream = futures::stream::iter(units)
            .take_while(|_| {
                std::future::ready(
                    !ctx.stop.load(Ordering::Relaxed) && !refused.load(Ordering::Relaxed),
                )
            })
            .map(|unit| execute(ctx, unit))
            .buffer_unordered(ctx.max_concurrency.max(1));
        let mut denial = None;
        while let Some(dones) = stream.next().await {
            finished += 1;
            for done in dones {
                if let Err(e @ ScimError::Unauthorized { .. }) = &done.result {
                    refused.store(true, Ordering::Relaxed);
                    denial.get_or_insert_with(|| e.clone());
                    continue;
                }
                health.observe(&done.result);
                record(ctx, state, summary, &mut ids, done)?;
            }
            progress(finished, total);
            if health.quarantined() {
                // HERE is unwell: abandon the in-flight retries too (an unacknowledged
                // operation is simply planned again, see invariant 4)
                refused.store(true, Ordering::Relaxed);
                break;
            }
        }
        drop(stream);
        if let Some(e) = denial {
            return Err(PushError::Unauthorized(e));
        }
        if health.quarantined() {
            return Err(health.verdict());
        }
    }
    Ok(())
}

fn record(
    ctx: &PushContext<'_>,
    state: &mut State,
    summary: &mut Summary,
    ids: &mut Ids,
    done: Done,
) -> Result<(), StateError> {
    let mut log = OperationLog {
        run_id: Some(ctx.run_id),
        entra_id: done.entra_id,
        kind: done.kind,
        name: done.name,
        op: done.op.to_string(),
        changes: done.changes,
        scim_status: None,
        error: None,
    };
    match done.result {
        Ok((ack, status)) => {
            log.scim_status = Some(status);
            state.record(&ack, &log)?;
            ids.learn(&ack);
            let scim_id = match &ack {
                Ack::User { scim_id, .. } | Ack::Group { scim_id, .. } => scim_id.as_str(),
                _ => ids
                    .users
                    .get(&log.entra_id)
                    .or(ids.groups.get(&log.entra_id))
                    .map(String::as_str)
                    .unwrap_or(""),
            };
            if log.kind == "user" {
                tracing::info!(op = done.op, entra_id = %log.entra_id, scim_id, userName = %log.name, "pushed");
            } else {
                tracing::info!(op = done.op, entra_id = %log.entra_id, scim_id, displayName = %log.name, "pushed");
            }
            tally(summary, done.tally);
        }
        Err(e) => {
            let (status, scim_type) = match &e {
                ScimError::Http {
                    status, scim_type, ..
                } => (Some(*status), scim_type.clone()),
                _ => (None, None),
            };
            tracing::warn!(op = done.op, entra_id = %log.entra_id, name = %log.name, status, scimType = scim_type.as_deref().unwrap_or(""), error = %e, "operation failed; retried next cycle");
            log.scim_status = status;
            log.error = Some(e.to_string());
            state.record_failure(&log)?;
            summary.failed += 1;
        }
    }
    Ok(())
}

fn tally(s: &mut Summary, t: Tally) {
    match t {
        Tally::UserCreated => s.users_created += 1,
        Tally::UserUpdated => s.users_updated += 1,
        Tally::UserReactivated => s.users_reactivated += 1,
        Tally::UserDeactivated => s.users_deactivated += 1,
        Tally::GroupCreated => s.groups_created += 1,
        Tally::GroupUpdated => s.groups_updated += 1,
        Tally::GroupDeleted => s.groups_deleted += 1,
        Tally::MembersAdded(n) => s.members_added += n,
        Tally::MembersRemoved(n) => s.members_removed += n,
        Tally::Quiet => {}
    }
}

/// An operation with the SCIM ids it needs, looked up when its stage starts.
struct Unit {
    op: Op,
    /// SCIM id of the group (member ops) or of the manager (SetManager).
    target: Option<String>,
    /// SCIM id of the user (SetManager).
    subject: Option<String>,
    /// (Entra id, SCIM id) of members that exist in HERE.
    members: Vec<(String, String)>,
}

fn resolve(op: Op, ids: &Ids) -> Unit {
    let user = |e: &String| ids.users.get(e).map(|s| (e.clone(), s.clone()));
    let (target, subject, members) = match &op {
        Op::SetManager {
            entra_id, manager, ..
        } => (
            manager.as_ref().and_then(|m| ids.users.get(m).cloned()),
            ids.users.get(entra_id).cloned(),
            Vec::new(),
        ),
        Op::AddMembers { group, users, .. } | Op::RemoveMembers { group, users, .. } => (
            ids.groups.get(group).cloned(),
            None,
            users.iter().filter_map(user).collect(),
        ),
        _ => (None, None, Vec::new()),
    };
    Unit {
        op,
        target,
        subject,
        members,
    }
}

fn change_log(changes: &[Change]) -> Value {
    let map: serde_json::Map<String, Value> = changes
        .iter()
        .map(|c| (c.path.clone(), json!({"old": c.old, "new": c.new})))
        .collect();
    Value::Object(map)
}

fn done(
    op: &Op,
    name: &'static str,
    changes: Value,
    result: Result<(Ack, u16), ScimError>,
    tally: Tally,
) -> Done {
    Done {
        op: name,
        entra_id: op.entra_id().to_string(),
        kind: op.kind(),
        name: op.object_name().to_string(),
        changes,
        result,
        tally,
    }
}

fn scim_id_of(resource: &Value) -> String {
    resource
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

async fn execute(ctx: &PushContext<'_>, unit: Unit) -> Vec<Done> {
    let c = ctx.client;
    let op = &unit.op;
    match op {
        Op::CreateUser {
            entra_id,
            user_name,
            attrs,
        } => {
            let (name, result) = create_user(ctx, entra_id, user_name, attrs).await;
            let created: Value = serde_json::from_str(attrs.as_str()).unwrap_or_default();
            vec![done(op, name, created, result, Tally::UserCreated)]
        }
        Op::UpdateUser {
            entra_id,
            scim_id,
            user_name,
            changes,
            attrs,
            reactivate,
        } => {
            let result = c
                .patch(
                    Kind::Users,
                    scim_id,
                    patch::attribute_ops(changes, &attrs.attrs(), ctx.style),
                )
                .await
                .map(|_| (user_ack(entra_id, scim_id, user_name, true, attrs), 200));
            let tally = if *reactivate {
                Tally::UserReactivated
            } else {
                Tally::UserUpdated
            };
            vec![done(op, op.name(), change_log(changes), result, tally)]
        }
        Op::DeactivateUser {
            entra_id,
            scim_id,
            user_name,
            attrs,
        } => {
            let change = [Change {
                path: "active".into(),
                old: Some(Value::Bool(true)),
                new: Some(Value::Bool(false)),
            }];
            let result = c
                .patch(
                    Kind::Users,
                    scim_id,
                    patch::attribute_ops(&change, &attrs.attrs(), ctx.style),
                )
                .await
                .map(|_| (user_ack(entra_id, scim_id, user_name, false, attrs), 200));
            vec![done(
                op,
                op.name(),
                change_log(&change),
                result,
                Tally::UserDeactivated,
            )]
        }
        Op::SetManager {
            entra_id, manager, ..
        } => {
            let (Some(user), true) = (&unit.subject, manager.is_none() || unit.target.is_some())
            else {
                return Vec::new(); // user or manager not in HERE yet: planned again next cycle
            };
            let result = c
                .patch(
                    Kind::Users,
                    user,
                    vec![patch::manager_op(unit.target.as_deref(), ctx.style)],
                )
                .await
                .map(|_| {
                    let ack = Ack::Manager {
                        entra_id: entra_id.clone(),
                        manager: manager.clone(),
                    };
                    (ack, 200)
                });
            vec![done(
                op,
                op.name(),
                json!({"manager": {"new": manager}}),
                result,
                Tally::Quiet,
            )]
        }
        Op::CreateGroup {
            entra_id,
            display_name,
            attrs,
        } => {
            let (name, result) = create_group(ctx, entra_id, display_name, attrs).await;
            vec![done(op, name, json!(attrs), result, Tally::GroupCreated)]
        }
        Op::UpdateGroup {
            entra_id,
            scim_id,
            display_name,
            changes,
            attrs,
        } => {
            let result = c
                .patch(
                    Kind::Groups,
                    scim_id,
                    patch::attribute_ops(changes, attrs, ctx.style),
                )
                .await
                .map(|_| (group_ack(entra_id, scim_id, display_name, attrs), 204));
            vec![done(
                op,
                op.name(),
                change_log(changes),
                result,
                Tally::GroupUpdated,
            )]
        }
        Op::AddMembers { .. } | Op::RemoveMembers { .. } => members(ctx, &unit).await,
        Op::DeleteGroup {
            entra_id, scim_id, ..
        } => {
            let result = c.delete(Kind::Groups, scim_id).await.map(|_| {
                (
                    Ack::GroupDeleted {
                        entra_id: entra_id.clone(),
                    },
                    204,
                )
            });
            vec![done(
                op,
                op.name(),
                Value::Null,
                result,
                Tally::GroupDeleted,
            )]
        }
    }
}

fn user_ack(entra_id: &str, scim_id: &str, user_name: &str, active: bool, attrs: &AttrText) -> Ack {
    Ack::User {
        entra_id: entra_id.to_string(),
        scim_id: scim_id.to_string(),
        user_name: user_name.to_string(),
        active,
        attrs: attrs.clone(),
    }
}

fn group_ack(entra_id: &str, scim_id: &str, display_name: &str, attrs: &Attrs) -> Ack {
    Ack::Group {
        entra_id: entra_id.to_string(),
        scim_id: scim_id.to_string(),
        display_name: display_name.to_string(),
        attrs: attrs.clone(),
    }
}

/// POST the user; on 409 adopt the existing one and PATCH it to what the mapping says.
async fn create_user(
    ctx: &PushContext<'_>,
    entra_id: &str,
    user_name: &str,
    text: &AttrText,
) -> (&'static str, Result<(Ack, u16), ScimError>) {
    let attrs = &text.attrs();
    let resource = build_resource(USER_SCHEMA, attrs);
    match ctx.client.create(Kind::Users, &resource).await {
        Ok(created) => (
            "create_user",
            Ok((
                user_ack(entra_id, &scim_id_of(&created), user_name, true, text),
                201,
            )),
        ),
        Err(e) if e.is_conflict() => {
            let adopted = adopt(
                ctx,
                Kind::Users,
                "userName",
                user_name,
                attrs,
                &ctx.managed_user_paths,
            )
            .await;
            (
                "adopt_user",
                adopted.map(|id| (user_ack(entra_id, &id, user_name, true, text), 409)),
            )
        }
        Err(e) => ("create_user", Err(e)),
    }
}

/// POST the group (empty members; they follow by PATCH); on 409 adopt it.
async fn create_group(
    ctx: &PushContext<'_>,
    entra_id: &str,
    display_name: &str,
    attrs: &Attrs,
) -> (&'static str, Result<(Ack, u16), ScimError>) {
    let mut resource = build_resource(GROUP_SCHEMA, attrs);
    resource["members"] = json!([]);
    match ctx.client.create(Kind::Groups, &resource).await {
        Ok(created) => (
            "create_group",
            Ok((
                group_ack(entra_id, &scim_id_of(&created), display_name, attrs),
                201,
            )),
        ),
        Err(e) if e.is_conflict() => {
            let paths: Vec<String> = attrs.keys().cloned().collect();
            let adopted = adopt(
                ctx,
                Kind::Groups,
                "displayName",
                display_name,
                attrs,
                &paths,
            )
            .await;
            (
                "adopt_group",
                adopted.map(|id| (group_ack(entra_id, &id, display_name, attrs), 409)),
            )
        }
        Err(e) => ("create_group", Err(e)),
    }
}

/// Finds the existing resource and PATCHes only what differs from `attrs` on `paths`.
async fn adopt(
    ctx: &PushContext<'_>,
    kind: Kind,
    key: &str,
    value: &str,
    attrs: &Attrs,
    paths: &[String],
) -> Result<String, ScimError> {
    let existing = ctx.client.find(kind, key, value).await?.ok_or_else(|| ScimError::Http {
        method: "GET".into(),
        path: format!("{kind:?}"),
        status: 409,
        scim_type: Some("uniqueness".into()),
        detail: Some(format!("HERE reports {key} {value:?} as taken but no resource matches it; resolve the duplicate in HERE")),
    })?;
    let id = scim_id_of(&existing);
    let current: Attrs = paths
        .iter()
        .filter_map(|p| extract(&existing, p).map(|v| (p.clone(), v)))
        .collect();
    let changes = diff(attrs, &current);
    if !changes.is_empty() {
        ctx.client
            .patch(kind, &id, patch::attribute_ops(&changes, attrs, ctx.style))
            .await?;
    }
    Ok(id)
}

/// Membership changes in PATCHes of at most `max_members_per_patch`, one chunk after the
/// other for the same group, each chunk acknowledged on its own.
async fn members(ctx: &PushContext<'_>, unit: &Unit) -> Vec<Done> {
    let Some(group_scim) = unit.target.as_deref() else {
        return Vec::new(); // the group does not exist in HERE (its creation failed)
    };
    let (group, adding) = match &unit.op {
        Op::AddMembers { group, .. } => (group, true),
        Op::RemoveMembers { group, .. } => (group, false),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut pending: Vec<(String, String)> = unit.members.clone();
    if !adding {
        // members HERE never knew need no request: acknowledge their removal directly
        let known: Vec<&String> = unit.members.iter().map(|(e, _)| e).collect();
        if let Op::RemoveMembers { users, .. } = &unit.op {
            let unknown: Vec<String> = users
                .iter()
                .filter(|u| !known.contains(u))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                let ack = Ack::MembersRemoved {
                    group: group.clone(),
                    users: unknown.clone(),
                };
                out.push(done(
                    &unit.op,
                    "remove_members",
                    json!({"removed": unknown}),
                    Ok((ack, 0)),
                    Tally::Quiet,
                ));
            }
        }
    }
    while !pending.is_empty() {
        let rest = pending.split_off(pending.len().min(ctx.max_members_per_patch.max(1)));
        let chunk = std::mem::replace(&mut pending, rest);
        let scim_ids: Vec<String> = chunk.iter().map(|(_, s)| s.clone()).collect();
        let entra_ids: Vec<String> = chunk.into_iter().map(|(e, _)| e).collect();
        let n = entra_ids.len();
        let (ops, ack, tally, name) = if adding {
            (
                vec![patch::add_members_op(&scim_ids, ctx.style)],
                Ack::MembersAdded {
                    group: group.clone(),
                    users: entra_ids.clone(),
                },
                Tally::MembersAdded(n),
                "add_members",
            )
        } else {
            (
                patch::remove_members_ops(&scim_ids, ctx.style),
                Ack::MembersRemoved {
                    group: group.clone(),
                    users: entra_ids.clone(),
                },
                Tally::MembersRemoved(n),
                "remove_members",
            )
        };
        let result = ctx
            .client
            .patch(Kind::Groups, group_scim, ops)
            .await
            .map(|_| (ack, 204));
        let key = if adding { "added" } else { "removed" };
        let failed = result.is_err();
        out.push(done(
            &unit.op,
            name,
            json!({ key: entra_ids }),
            result,
            tally,
        ));
        if failed {
            break;
        }
    }
    out
}
