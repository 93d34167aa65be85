//! Carrying out one operation against HERE: the requests it needs (its calls), 409
//! adoption, membership chunks, and what each acknowledged request records.
//!
//! An operation is first turned into [`Call`]s — a request plus what its success records —
//! so the same calls can be sent one by one ([`execute`]) or packed into `/Bulk` requests
//! (see `super::bulk`).

use reqwest::Method;
use serde_json::{json, Value};

use super::{Changes, Done, Exec, Ids, Tally};
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

impl Unit {
    pub(super) fn op(&self) -> &Op {
        &self.op
    }

    /// The group a membership operation changes, when it has no SCIM id yet.
    pub(super) fn group_to_create(&self) -> Option<&str> {
        match &self.op {
            Op::AddMembers { group, .. } if self.target.is_none() => Some(group),
            _ => None,
        }
    }

    /// Points a membership operation at a group created earlier in the same bulk request.
    pub(super) fn target_bulk_id(&mut self, bulk_id: &str) {
        self.target = Some(format!("bulkId:{bulk_id}"));
    }
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

/// One SCIM request: `id` is the resource's SCIM id (or a `bulkId:` reference inside a
/// bulk request); none for a POST to the collection.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub(super) method: Method,
    pub(super) kind: Kind,
    pub(super) id: Option<String>,
    pub(super) body: Option<Value>,
}

/// One request of an operation and what its success records. `done.result` holds the
/// success (a create's SCIM id is filled in from the answer); [`settle`] replaces it with
/// the error when the request fails. A call without a request is acknowledged as is.
pub(super) struct Call {
    pub(super) request: Option<Request>,
    pub(super) done: Done,
}

impl Call {
    fn new(op: &Op, name: &'static str, changes: Changes, request: Request, ack: Ack) -> Call {
        let (status, tally) = match op {
            Op::CreateUser { .. } => (201, Tally::UserCreated),
            Op::UpdateUser {
                reactivate: true, ..
            } => (200, Tally::UserReactivated),
            Op::UpdateUser { .. } => (200, Tally::UserUpdated),
            Op::DeactivateUser { .. } => (200, Tally::UserDeactivated),
            Op::SetManager { .. } => (200, Tally::Quiet),
            Op::CreateGroup { .. } => (201, Tally::GroupCreated),
            Op::UpdateGroup { .. } => (204, Tally::GroupUpdated),
            Op::DeleteGroup { .. } => (204, Tally::GroupDeleted),
            Op::AddMembers { .. } | Op::RemoveMembers { .. } => (204, Tally::Quiet),
        };
        Call {
            request: Some(request),
            done: done(op, name, changes, Ok((ack, status)), tally),
        }
    }

    /// The bulkId a POST is known by inside a bulk request (unique per object).
    pub(super) fn creates(&self) -> Option<String> {
        let r = self.request.as_ref()?;
        (r.method == Method::POST).then(|| format!("{}-{}", self.done.kind, self.done.entra_id))
    }

    /// The bulkId of the object, created in the same bulk request, this call refers to.
    pub(super) fn needs(&self) -> Option<&str> {
        self.request
            .as_ref()?
            .id
            .as_deref()?
            .strip_prefix("bulkId:")
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
    changes: Changes,
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

fn patch_request(kind: Kind, id: &str, ops: Vec<Value>) -> Request {
    Request {
        method: Method::PATCH,
        kind,
        id: Some(id.to_string()),
        body: Some(patch::body(ops)),
    }
}

/// An attribute PATCH of a user or group, logged as its changes.
fn attribute_patch(
    ctx: &Exec,
    op: &Op,
    (kind, scim_id): (Kind, &str),
    changes: &[Change],
    attrs: &Attrs,
    ack: Ack,
) -> Call {
    let request = patch_request(
        kind,
        scim_id,
        patch::attribute_ops(changes, attrs, ctx.style),
    );
    let log = Changes::Json(change_log(changes));
    Call::new(op, op.name(), log, request, ack)
}

/// The requests an operation needs, in order. None when it cannot run yet (a reference
/// to an object HERE does not have): it is planned again next cycle.
pub(super) fn calls(ctx: &Exec, unit: &Unit) -> Vec<Call> {
    let op = &unit.op;
    match op {
        Op::CreateUser {
            entra_id,
            user_name,
            attrs,
            source,
        } => {
            let request = Request {
                method: Method::POST,
                kind: Kind::Users,
                id: None,
                body: Some(build_resource(USER_SCHEMA, &attrs.attrs())),
            };
            let created = Changes::Created(attrs.clone());
            let ack = user_ack(entra_id, "", user_name, true, attrs, *source);
            vec![Call::new(op, "create_user", created, request, ack)]
        }
        Op::UpdateUser {
            entra_id,
            scim_id,
            user_name,
            changes,
            attrs,
            source,
            ..
        } => {
            let ack = user_ack(entra_id, scim_id, user_name, true, attrs, *source);
            let target = (Kind::Users, scim_id.as_str());
            vec![attribute_patch(
                ctx,
                op,
                target,
                changes,
                &attrs.attrs(),
                ack,
            )]
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
            let ops = patch::attribute_ops(&change, &attrs.attrs(), ctx.style);
            let ack = user_ack(entra_id, scim_id, user_name, false, attrs, None);
            let mut log = change_log(&change);
            log["reason"] = json!(reason); // `history` answers why
            let request = patch_request(Kind::Users, scim_id, ops);
            vec![Call::new(op, op.name(), Changes::Json(log), request, ack)]
        }
        Op::SetManager {
            entra_id, manager, ..
        } => {
            let (Some(user), true) = (&unit.subject, manager.is_none() || unit.target.is_some())
            else {
                return Vec::new(); // user or manager not in HERE yet: planned again next cycle
            };
            let ops = vec![patch::manager_op(unit.target.as_deref(), ctx.style)];
            let ack = Ack::Manager {
                entra_id: entra_id.clone(),
                manager: manager.clone(),
            };
            let log = Changes::Json(json!({"manager": {"new": manager}}));
            let request = patch_request(Kind::Users, user, ops);
            vec![Call::new(op, op.name(), log, request, ack)]
        }
        Op::CreateGroup {
            entra_id,
            display_name,
            attrs,
        } => {
            let mut resource = build_resource(GROUP_SCHEMA, attrs);
            resource["members"] = json!([]); // members follow by PATCH
            let request = Request {
                method: Method::POST,
                kind: Kind::Groups,
                id: None,
                body: Some(resource),
            };
            let ack = group_ack(entra_id, "", display_name, attrs);
            vec![Call::new(
                op,
                "create_group",
                Changes::Json(json!(attrs)),
                request,
                ack,
            )]
        }
        Op::UpdateGroup {
            entra_id,
            scim_id,
            display_name,
            changes,
            attrs,
        } => {
            let ack = group_ack(entra_id, scim_id, display_name, attrs);
            let target = (Kind::Groups, scim_id.as_str());
            vec![attribute_patch(ctx, op, target, changes, attrs, ack)]
        }
        Op::AddMembers { .. } | Op::RemoveMembers { .. } => member_calls(ctx, unit),
        Op::DeleteGroup {
            entra_id, scim_id, ..
        } => {
            let request = Request {
                method: Method::DELETE,
                kind: Kind::Groups,
                id: Some(scim_id.clone()),
                body: None,
            };
            let ack = Ack::GroupDeleted {
                entra_id: entra_id.clone(),
            };
            vec![Call::new(op, op.name(), Changes::None, request, ack)]
        }
    }
}

/// Sends an operation's calls one request at a time; a membership chunk that fails stops
/// the chunks after it (they are planned again next cycle).
pub(super) async fn execute(ctx: &Exec, unit: Unit) -> Vec<Done> {
    let mut out = Vec::new();
    for call in calls(ctx, &unit) {
        let done = send_one(ctx, call).await;
        let failed = done.result.is_err();
        out.push(done);
        if failed {
            break;
        }
    }
    out
}

/// Sends one call as a single request and settles it.
pub(super) async fn send_one(ctx: &Exec, call: Call) -> Done {
    let answer = match &call.request {
        None => Ok(None),
        Some(r) => {
            let path = ctx.client.path(r.kind, r.id.as_deref());
            let sent = ctx.client.request(r.method.clone(), &path, r.body.as_ref());
            sent.await.map(|(_, body)| body)
        }
    };
    settle(ctx, call, answer).await
}

/// Turns HERE's answer to a call into what to record: a create learns its SCIM id, a
/// `409` on a create adopts the existing object, a `404` on a delete counts as deleted.
pub(super) async fn settle(
    ctx: &Exec,
    call: Call,
    answer: Result<Option<Value>, ScimError>,
) -> Done {
    let Call { request, done } = call;
    let (Some(request), Ok((ack, status))) = (request, &done.result) else {
        return done;
    };
    let (ack, status) = (ack.clone(), *status);
    let creating = request.method == Method::POST;
    let mut op = done.op;
    let result = match answer {
        Ok(body) if creating => {
            created_id(request.kind, body.as_ref()).map(|id| (with_scim_id(ack, &id), status))
        }
        Ok(_) => Ok((ack, status)),
        Err(e) if creating && e.is_conflict() => {
            op = match request.kind {
                Kind::Users => "adopt_user",
                Kind::Groups => "adopt_group",
            };
            adopt_ack(ctx, ack).await.map(|ack| (ack, 409))
        }
        Err(e) if request.method == Method::DELETE && e.status() == Some(404) => {
            Ok((ack, status)) // already gone
        }
        Err(e) => Err(e),
    };
    Done { op, result, ..done }
}

/// The SCIM id of a created resource: its `id`, or the last segment of its `location`
/// (a bulk answer carries only the location).
fn created_id(kind: Kind, body: Option<&Value>) -> Result<String, ScimError> {
    let id = body.and_then(|b| b.get("id")).and_then(Value::as_str);
    let located = || {
        let location = body?.get("location")?.as_str()?;
        location.rsplit('/').next().filter(|s| !s.is_empty())
    };
    id.or_else(located)
        .map(str::to_string)
        .ok_or_else(|| ScimError::Malformed {
            method: "POST".into(),
            path: kind.endpoint().into(),
            detail: "the created resource has no id".into(),
        })
}

fn with_scim_id(ack: Ack, id: &str) -> Ack {
    match ack {
        Ack::User {
            entra_id,
            user_name,
            active,
            attrs,
            source,
            ..
        } => Ack::User {
            entra_id,
            scim_id: id.to_string(),
            user_name,
            active,
            attrs,
            source,
        },
        Ack::Group {
            entra_id,
            display_name,
            attrs,
            ..
        } => Ack::Group {
            entra_id,
            scim_id: id.to_string(),
            display_name,
            attrs,
        },
        other => other,
    }
}

/// Adopts the object a create found taken, and returns the acknowledgement with its id.
async fn adopt_ack(ctx: &Exec, ack: Ack) -> Result<Ack, ScimError> {
    let id = match &ack {
        Ack::User {
            user_name, attrs, ..
        } => {
            let paths = &ctx.managed_user_paths;
            let attrs = attrs.attrs();
            adopt(ctx, Kind::Users, "userName", user_name, &attrs, paths).await?
        }
        Ack::Group {
            display_name,
            attrs,
            ..
        } => {
            let paths: Vec<String> = attrs.keys().cloned().collect();
            adopt(
                ctx,
                Kind::Groups,
                "displayName",
                display_name,
                attrs,
                &paths,
            )
            .await?
        }
        _ => return Ok(ack),
    };
    Ok(with_scim_id(ack, &id))
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

/// Finds the existing resource and PATCHes only what differs from `attrs` on `paths`.
pub(super) async fn adopt(
    ctx: &Exec,
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
    let id = existing
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
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

/// Membership changes in PATCHes of at most `max_members_per_patch`, each chunk
/// acknowledged on its own.
fn member_calls(ctx: &Exec, unit: &Unit) -> Vec<Call> {
    let Some(group_scim) = unit.target.as_deref() else {
        return Vec::new(); // the group does not exist in HERE (its creation failed)
    };
    let (group, users, adding) = match &unit.op {
        Op::AddMembers { group, users, .. } => (group, users, true),
        Op::RemoveMembers { group, users, .. } => (group, users, false),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    if !adding {
        // members HERE never knew need no request: acknowledge their removal directly
        let unknown: Vec<String> = users
            .iter()
            .filter(|u| !unit.members.iter().any(|(e, _)| e == *u))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            let ack = Ack::MembersRemoved {
                group: group.clone(),
                users: unknown.clone(),
            };
            let log = json!({"removed": unknown});
            out.push(Call {
                request: None,
                done: done(
                    &unit.op,
                    "remove_members",
                    Changes::Json(log),
                    Ok((ack, 0)),
                    Tally::Quiet,
                ),
            });
        }
    }
    for chunk in unit.members.chunks(ctx.max_members_per_patch.max(1)) {
        let scim_ids: Vec<String> = chunk.iter().map(|(_, s)| s.clone()).collect();
        let entra_ids: Vec<String> = chunk.iter().map(|(e, _)| e.clone()).collect();
        let n = entra_ids.len();
        let (ops, ack, tally, name, key) = if adding {
            let ack = Ack::MembersAdded {
                group: group.clone(),
                users: entra_ids.clone(),
            };
            let ops = vec![patch::add_members_op(&scim_ids, ctx.style)];
            (ops, ack, Tally::MembersAdded(n), "add_members", "added")
        } else {
            let ack = Ack::MembersRemoved {
                group: group.clone(),
                users: entra_ids.clone(),
            };
            let ops = patch::remove_members_ops(&scim_ids, ctx.style);
            (
                ops,
                ack,
                Tally::MembersRemoved(n),
                "remove_members",
                "removed",
            )
        };
        let mut call = Call::new(
            &unit.op,
            name,
            Changes::Json(json!({ key: entra_ids })),
            patch_request(Kind::Groups, group_scim, ops),
            ack,
        );
        call.done.tally = tally;
        out.push(call);
    }
    out
}
