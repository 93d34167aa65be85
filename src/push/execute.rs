//! Carrying out one operation against HERE: the requests, 409 adoption, membership
//! chunks, and what to record for each.

use serde_json::{json, Value};

use super::{Done, Ids, PushContext, Tally};
use crate::mapping::{AttrText, Attrs};
use crate::plan::{diff, Change, Op};
use crate::scim::path::{build_resource, extract};
use crate::scim::{patch, Kind, ScimError, GROUP_SCHEMA, USER_SCHEMA};
use crate::state::Ack;

/// An operation with the SCIM ids it needs, looked up when its stage starts.
pub(super) struct Unit {
    op: Op,
    /// SCIM id of the group (member ops) or of the manager (SetManager).
    target: Option<String>,
    /// SCIM id of the user (SetManager).
    subject: Option<String>,
    /// (Entra id, SCIM id) of members that exist in HERE.
    members: Vec<(String, String)>,
}

pub(super) fn resolve(op: Op, ids: &Ids) -> Unit {
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

pub(super) fn change_log(changes: &[Change]) -> Value {
    let map: serde_json::Map<String, Value> = changes
        .iter()
        .map(|c| (c.path.clone(), json!({"old": c.old, "new": c.new})))
        .collect();
    Value::Object(map)
}

pub(super) fn done(
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

pub(super) fn scim_id_of(resource: &Value) -> String {
    resource
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub(super) async fn execute(ctx: &PushContext<'_>, unit: Unit) -> Vec<Done> {
    let c = ctx.client;
    let op = &unit.op;
    match op {
        Op::CreateUser {
            entra_id,
            user_name,
            attrs,
            source,
        } => {
            let (name, result) = create_user(ctx, entra_id, user_name, attrs, *source).await;
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
            source,
        } => {
            let result = c
                .patch(
                    Kind::Users,
                    scim_id,
                    patch::attribute_ops(changes, &attrs.attrs(), ctx.style),
                )
                .await
                .map(|_| {
                    (
                        user_ack(entra_id, scim_id, user_name, true, attrs, *source),
                        200,
                    )
                });
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
            reason,
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
                .map(|_| {
                    (
                        user_ack(entra_id, scim_id, user_name, false, attrs, None),
                        200,
                    )
                });
            let mut log = change_log(&change);
            log["reason"] = json!(reason); // `history` answers why
            vec![done(op, op.name(), log, result, Tally::UserDeactivated)]
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

pub(super) fn user_ack(
    entra_id: &str,
    scim_id: &str,
    user_name: &str,
    active: bool,
    attrs: &AttrText,
    source: Option<i64>,
) -> Ack {
    Ack::User {
        entra_id: entra_id.to_string(),
        scim_id: scim_id.to_string(),
        user_name: user_name.to_string(),
        active,
        attrs: attrs.clone(),
        source,
    }
}

pub(super) fn group_ack(entra_id: &str, scim_id: &str, display_name: &str, attrs: &Attrs) -> Ack {
    Ack::Group {
        entra_id: entra_id.to_string(),
        scim_id: scim_id.to_string(),
        display_name: display_name.to_string(),
        attrs: attrs.clone(),
    }
}

/// POST the user; on 409 adopt the existing one and PATCH it to what the mapping says.
pub(super) async fn create_user(
    ctx: &PushContext<'_>,
    entra_id: &str,
    user_name: &str,
    text: &AttrText,
    source: Option<i64>,
) -> (&'static str, Result<(Ack, u16), ScimError>) {
    let attrs = &text.attrs();
    let resource = build_resource(USER_SCHEMA, attrs);
    match ctx.client.create(Kind::Users, &resource).await {
        Ok(created) => (
            "create_user",
            Ok((
                user_ack(
                    entra_id,
                    &scim_id_of(&created),
                    user_name,
                    true,
                    text,
                    source,
                ),
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
                adopted.map(|id| (user_ack(entra_id, &id, user_name, true, text, source), 409)),
            )
        }
        Err(e) => ("create_user", Err(e)),
    }
}

/// POST the group (empty members; they follow by PATCH); on 409 adopt it.
pub(super) async fn create_group(
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
pub(super) async fn adopt(
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
pub(super) async fn members(ctx: &PushContext<'_>, unit: &Unit) -> Vec<Done> {
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
