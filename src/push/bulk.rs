//! SCIM `/Bulk` (RFC 7644 §3.7): a stage's calls packed into bulk requests within HERE's
//! advertised `maxOperations` and `maxPayloadSize`, each operation's answer settled and
//! recorded exactly as a single request's would be.
//!
//! A new group and its first members travel in the same bulk request: the membership
//! PATCH names the group `bulkId:group-<entra id>`. When the group could not be created
//! there, its membership calls are dropped (the group waits in escrow and they are planned
//! again); when it was adopted (409), they are sent again with the adopted id.

use std::collections::{HashMap, HashSet};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};

use super::execute::{calls, resolve, send_one, settle, Call, Unit};
use super::{Done, Ids, PushError, Recorder};
use crate::plan::Op;
use crate::scim::{error_fields, BulkLimits, ScimError};
use crate::state::Ack;

/// The BulkRequest message schema.
const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
/// Room left for the request's envelope around its operations.
const ENVELOPE: usize = 128;
/// A wave sends what can go now; a call whose group was created in another request of the
/// wave goes in the next. Two waves always suffice; the third is a guard.
const MAX_WAVES: usize = 3;

/// Pushes one phase (a stage, or new groups with their members) in bulk requests.
pub(super) async fn push_phase(
    rec: &mut Recorder<'_, '_>,
    limits: &BulkLimits,
    ops: Vec<Op>,
) -> Result<(), PushError> {
    let ctx = rec.ctx;
    let units = clustered(ops.into_iter().map(|op| resolve(op, &rec.ids)).collect());
    let mut pending: Vec<Call> = units.iter().flat_map(|u| calls(ctx, u)).collect();
    let mut counter = 0;
    for _ in 0..MAX_WAVES {
        if pending.is_empty() || rec.stopped() {
            break;
        }
        let (immediate, requests): (Vec<Call>, Vec<Call>) =
            pending.into_iter().partition(|c| c.request.is_none());
        rec.record(immediate.into_iter().map(|c| c.done).collect())?;
        let (batches, deferred) = pack(retarget(requests, &rec.ids), limits, &mut counter);
        let refused = rec.refused;
        let stream = futures::stream::iter(batches)
            .take_while(|_| std::future::ready(!super::stopped(ctx, refused)))
            .map(|batch| send_batch(ctx, batch))
            .buffer_unordered(ctx.max_concurrency.max(1));
        rec.drain(stream).await?;
        pending = deferred;
    }
    Ok(())
}

/// Units in push order, each new group's membership right after the group's creation so
/// both land in the same bulk request; membership units of groups that don't exist yet
/// refer to the group by its bulkId.
fn clustered(mut units: Vec<Unit>) -> Vec<Unit> {
    let created: HashMap<String, usize> = units
        .iter()
        .enumerate()
        .filter_map(|(i, u)| match u.op() {
            Op::CreateGroup { entra_id, .. } => Some((entra_id.clone(), i)),
            _ => None,
        })
        .collect();
    let mut keys = Vec::with_capacity(units.len());
    for (i, unit) in units.iter_mut().enumerate() {
        let group = unit.group_to_create().map(str::to_string);
        match group.and_then(|g| created.get(&g).map(|at| (g, *at))) {
            Some((g, at)) => {
                unit.target_bulk_id(&format!("group-{g}"));
                keys.push((at, 1));
            }
            None => keys.push((i, 0)),
        }
    }
    let mut keyed: Vec<_> = keys.into_iter().zip(units).collect();
    keyed.sort_by_key(|(k, _)| *k); // stable: chunks keep their order
    keyed.into_iter().map(|(_, u)| u).collect()
}

/// Calls that refer to a group created in an earlier wave get its SCIM id; those whose
/// group was not created are dropped (planned again next cycle, as in single mode).
fn retarget(calls: Vec<Call>, ids: &Ids) -> Vec<Call> {
    let creating: HashSet<String> = calls.iter().filter_map(Call::creates).collect();
    calls
        .into_iter()
        .filter_map(|mut call| {
            let Some(need) = call.needs().map(str::to_string) else {
                return Some(call);
            };
            if creating.contains(&need) {
                return Some(call);
            }
            let id = need
                .strip_prefix("group-")
                .and_then(|g| ids.groups.get(g))?;
            if let Some(r) = call.request.as_mut() {
                r.id = Some(id.clone());
            }
            Some(call)
        })
        .collect()
}

/// One call as a bulk operation.
struct Entry {
    call: Call,
    bulk_id: String,
    operation: Value,
    size: usize,
}

fn entry(call: Call, counter: &mut usize) -> Entry {
    *counter += 1;
    let bulk_id = call.creates().unwrap_or_else(|| format!("op-{counter}"));
    let mut operation = json!({ "bulkId": bulk_id });
    if let Some(r) = &call.request {
        let path = match &r.id {
            Some(id) => format!("/{}/{id}", r.kind.endpoint()),
            None => format!("/{}", r.kind.endpoint()),
        };
        operation["method"] = json!(r.method.as_str());
        operation["path"] = json!(path);
        if let Some(body) = &r.body {
            operation["data"] = body.clone();
        }
    }
    let size = operation.to_string().len() + 1;
    Entry {
        call,
        bulk_id,
        operation,
        size,
    }
}

/// Packs calls, in order, into bulk requests within the limits. A call whose group is
/// created in an earlier request of this wave waits for the next wave.
fn pack(
    calls: Vec<Call>,
    limits: &BulkLimits,
    counter: &mut usize,
) -> (Vec<Vec<Entry>>, Vec<Call>) {
    let mut batches: Vec<Vec<Entry>> = Vec::new();
    let mut current: Vec<Entry> = Vec::new();
    let mut size = ENVELOPE;
    let mut here: HashSet<String> = HashSet::new();
    let mut deferred = Vec::new();
    for call in calls {
        if call.needs().is_some_and(|n| !here.contains(n)) {
            deferred.push(call);
            continue;
        }
        let e = entry(call, counter);
        let full =
            current.len() >= limits.max_operations || size + e.size > limits.max_payload_size;
        if full && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
            size = ENVELOPE;
            here.clear();
            if e.call.needs().is_some() {
                deferred.push(e.call); // its group went out in the request just closed
                continue;
            }
        }
        if let Some(b) = e.call.creates() {
            here.insert(b);
        }
        size += e.size;
        current.push(e);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    (batches, deferred)
}

/// Sends one bulk request and settles each operation. A request HERE finds too large
/// (413) is split in two; a single operation it refuses as too large is sent on its own.
fn send_batch<'a>(
    ctx: &'a super::PushContext<'a>,
    entries: Vec<Entry>,
) -> BoxFuture<'a, Vec<Done>> {
    async move {
        let operations: Vec<&Value> = entries.iter().map(|e| &e.operation).collect();
        let request = json!({ "schemas": [BULK_REQUEST], "Operations": operations });
        match ctx.client.bulk(&request).await {
            Ok(response) => settle_all(ctx, entries, &response).await,
            Err(e) if e.status() == Some(413) && entries.len() > 1 => {
                let mut first = entries;
                let second = first.split_off(first.len() / 2);
                let mut out = send_batch(ctx, first).await;
                let created = settled_groups(&out);
                let mut counter = 0;
                let rest: Vec<Entry> = second
                    .into_iter()
                    .filter_map(|e| regroup(e.call, &created))
                    .map(|c| entry(c, &mut counter))
                    .collect();
                out.extend(send_batch(ctx, rest).await);
                out
            }
            Err(e) if e.status() == Some(413) => {
                let mut out = Vec::new();
                for e in entries {
                    out.push(send_one(ctx, e.call).await);
                }
                out
            }
            Err(e) => {
                let mut out = Vec::new();
                for entry in entries {
                    out.push(settle(ctx, entry.call, Err(e.clone())).await);
                }
                out
            }
        }
    }
    .boxed()
}

/// Groups created (201) or adopted (409) by settled calls: bulkId → (status, SCIM id).
fn settled_groups(done: &[Done]) -> HashMap<String, (u16, String)> {
    done.iter()
        .filter_map(|d| match &d.result {
            Ok((
                Ack::Group {
                    entra_id, scim_id, ..
                },
                status,
            )) => Some((format!("group-{entra_id}"), (*status, scim_id.clone()))),
            _ => None,
        })
        .collect()
}

/// Points a call that needs a group at the group's SCIM id; `None` when it was not created.
fn regroup(mut call: Call, groups: &HashMap<String, (u16, String)>) -> Option<Call> {
    let Some(need) = call.needs() else {
        return Some(call);
    };
    let id = groups.get(need)?.1.clone();
    if let Some(r) = call.request.as_mut() {
        r.id = Some(id);
    }
    Some(call)
}

/// Settles every operation of a bulk request from the BulkResponse. Membership calls that
/// failed because their new group was not created are dropped, or sent again alone when
/// the group was adopted.
async fn settle_all(
    ctx: &super::PushContext<'_>,
    entries: Vec<Entry>,
    response: &Value,
) -> Vec<Done> {
    let results = response
        .get("Operations")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let by_id: HashMap<&str, &Value> = results
        .iter()
        .filter_map(|r| Some((r.get("bulkId")?.as_str()?, r)))
        .collect();
    let mut out = Vec::with_capacity(entries.len());
    let mut orphans = Vec::new();
    for (i, e) in entries.into_iter().enumerate() {
        let result = by_id
            .get(e.bulk_id.as_str())
            .copied()
            .or_else(|| results.get(i).filter(|r| r.get("bulkId").is_none()));
        let answer = answer(&e, result);
        if answer.is_err() && e.call.needs().is_some() {
            orphans.push((e.call, answer));
            continue;
        }
        out.push(settle(ctx, e.call, answer).await);
    }
    let groups = settled_groups(&out);
    for (call, answer) in orphans {
        let status = call.needs().and_then(|n| groups.get(n)).map(|g| g.0);
        match (status, regroup(call, &groups)) {
            // the group was created here: the failure is the membership call's own
            (Some(201), Some(call)) => out.push(settle(ctx, call, answer).await),
            // the group was adopted: send the membership again with its id
            (Some(_), Some(call)) => out.push(send_one(ctx, call).await),
            // the group was not created: its escrow entry covers it
            _ => {}
        }
    }
    out
}

/// One operation's answer from its BulkResponse entry.
fn answer(e: &Entry, result: Option<&Value>) -> Result<Option<Value>, ScimError> {
    let method = e.operation["method"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let path = e.operation["path"].as_str().unwrap_or_default().to_string();
    let Some(result) = result else {
        return Err(ScimError::Malformed {
            method,
            path,
            detail: format!("the BulkResponse has no result for operation {}", e.bulk_id),
        });
    };
    let status = result.get("status");
    let code = status
        .and_then(|s| s.as_u64().or_else(|| s.as_str()?.trim().parse().ok()))
        .or_else(|| status?.get("code")?.as_u64())
        .unwrap_or(0) as u16;
    match code {
        200..=299 => Ok(Some(result.clone())),
        401 | 403 => Err(ScimError::Unauthorized {
            method,
            path,
            status: code,
        }),
        _ => {
            let (scim_type, detail) = error_fields(result.get("response"));
            Err(ScimError::Http {
                method,
                path,
                status: code,
                scim_type,
                detail,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::Tally;
    use crate::scim::Kind;
    use reqwest::Method;

    fn entry_for(method: Method) -> Entry {
        let call = Call {
            request: Some(super::super::execute::Request {
                method,
                kind: Kind::Users,
                id: None,
                body: Some(json!({"userName": "ada@example.com"})),
            }),
            done: Done {
                op: "create_user",
                entra_id: "e1".into(),
                kind: "user",
                name: "ada@example.com".into(),
                changes: Value::Null,
                result: Ok((
                    Ack::GroupDeleted {
                        entra_id: "e1".into(),
                    },
                    201,
                )),
                tally: Tally::Quiet,
            },
        };
        entry(call, &mut 0)
    }

    #[test]
    fn a_post_is_known_by_its_object_and_others_by_a_counter() {
        let post = entry_for(Method::POST);
        assert_eq!(post.bulk_id, "user-e1");
        assert_eq!(post.operation["path"], "/Users");
        assert_eq!(post.size, post.operation.to_string().len() + 1);
        assert_eq!(entry_for(Method::DELETE).bulk_id, "op-1");
    }

    #[test]
    fn statuses_are_read_as_strings_numbers_or_codes() {
        let e = entry_for(Method::POST);
        let ok = |r: Value| answer(&e, Some(&r)).is_ok();
        assert!(ok(
            json!({"status": "201", "location": "https://h/Users/1"})
        ));
        assert!(ok(json!({"status": 200})));
        assert!(ok(json!({"status": {"code": 204}})));
        let conflict = answer(
            &e,
            Some(&json!({"status": "409",
            "response": {"scimType": "uniqueness", "detail": "taken"}})),
        );
        assert!(
            conflict.as_ref().is_err_and(ScimError::is_conflict),
            "{conflict:?}"
        );
        let denied = answer(&e, Some(&json!({"status": "401"})));
        assert!(matches!(denied, Err(ScimError::Unauthorized { .. })));
        let missing = answer(&e, None).unwrap_err().to_string();
        assert!(
            missing.contains("no result for operation user-e1"),
            "{missing}"
        );
    }
}
