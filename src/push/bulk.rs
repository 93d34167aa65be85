//! SCIM `/Bulk` (RFC 7644 §3.7): a stage's calls packed into bulk requests within HERE's
//! advertised `maxOperations` and `maxPayloadSize`, each operation's answer settled and
//! recorded exactly as a single request's would be.
//!
//! A new group and its first members travel in the same bulk request: the membership
//! PATCH names the group `bulkId:group-<entra id>`. When the group could not be created
//! there, its membership calls are dropped (the group waits in escrow and they are planned
//! again); when it was adopted (409), they are sent again with the adopted id.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::{json, Value};

use super::execute::{calls, resolve, send_one, settle, Call, Unit};
use super::{Done, Driver, Exec, Ids, PushError, Recorder};
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

/// Pushes one phase (a stage, or new groups with their members) in bulk requests. Calls
/// are built and packed as the requests go out, so only the requests in flight hold them.
pub(super) async fn push_phase(
    rec: &mut Recorder<'_, '_>,
    limits: &BulkLimits,
    ops: Vec<Op>,
) -> Result<(), PushError> {
    let exec = rec.ctx.exec.clone();
    let units = clustered(ops, &rec.ids);
    let deferred = Arc::new(Mutex::new(Vec::new()));
    let calls_of = {
        let exec = exec.clone();
        move |u: Unit| calls(&exec, &u)
    };
    let first = Packer::new(units.into_iter().flat_map(calls_of), limits, &deferred);
    rec.drain(sent(&exec, first)).await?;
    for _ in 1..MAX_WAVES {
        let waiting = std::mem::take(&mut *deferred.lock().unwrap_or_else(|e| e.into_inner()));
        let calls = retarget(waiting, &rec.ids);
        if calls.is_empty() || rec.stopped() {
            break;
        }
        let next = Packer::new(calls.into_iter(), limits, &deferred);
        rec.drain(sent(&exec, next)).await?;
    }
    Ok(())
}

/// Bulk requests in flight at most (fewer than `max_concurrency` when that is larger):
/// each already carries up to `maxOperations` operations, so a few keep HERE busy, and
/// the memory of the calls in flight stays bounded.
const BULK_IN_FLIGHT: usize = 2;

/// The batches sent, a few at a time, on the push's driver.
fn sent<I>(exec: &Exec, batches: I) -> Driver
where
    I: Iterator<Item = Vec<Entry>> + Send + 'static,
{
    let limit = exec.max_concurrency.clamp(1, BULK_IN_FLIGHT);
    let exec = exec.clone();
    let work = batches.map(move |batch| {
        let exec = exec.clone();
        async move { send_batch(&exec, batch).await }
    });
    Driver::start(work, limit)
}

/// Units in push order, each new group's membership right after the group's creation so
/// both land in the same bulk request; membership units of groups that don't exist yet
/// refer to the group by its bulkId. Phases without new groups keep their order.
fn clustered(ops: Vec<Op>, ids: &Ids) -> Box<dyn Iterator<Item = Unit> + Send> {
    if !ops.iter().any(|op| matches!(op, Op::CreateGroup { .. })) {
        return super::units(ops, ids);
    }
    let mut units: Vec<Unit> = ops.into_iter().map(|op| resolve(op, ids)).collect();
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
    let ordered: Vec<Unit> = keyed.into_iter().map(|(_, u)| u).collect();
    Box::new(ordered.into_iter())
}

/// Calls that waited for a group created in an earlier wave get its SCIM id; those whose
/// group was not created are dropped (planned again next cycle, as in single mode).
fn retarget(calls: Vec<Call>, ids: &Ids) -> Vec<Call> {
    let group = |need: &str| {
        let entra_id = need.strip_prefix("group-")?;
        ids.groups.get(entra_id).cloned()
    };
    calls
        .into_iter()
        .filter_map(|c| regroup(c, group))
        .collect()
}

/// One call as a bulk operation, serialised (a request's worth of parsed bodies would
/// take ten times the memory).
struct Entry {
    call: Call,
    bulk_id: String,
    operation: String,
}

fn entry(mut call: Call, counter: &mut usize) -> Entry {
    *counter += 1;
    let bulk_id = call.creates().unwrap_or_else(|| format!("op-{counter}"));
    let mut operation = json!({ "bulkId": bulk_id });
    if let Some(r) = call.request.as_mut() {
        let path = match &r.id {
            Some(id) => format!("/{}/{id}", r.kind.endpoint()),
            None => format!("/{}", r.kind.endpoint()),
        };
        operation["method"] = json!(r.method.as_str());
        operation["path"] = json!(path);
        if let Some(body) = r.body.take() {
            operation["data"] = body;
        }
    }
    Entry {
        call,
        bulk_id,
        operation: operation.to_string(),
    }
}

impl Entry {
    /// Bytes the operation adds to a bulk request (with its separator).
    fn size(&self) -> usize {
        self.operation.len() + 1
    }

    /// The call again, body included (to send it alone or in another request).
    fn into_call(mut self) -> Call {
        if let Some(r) = self.call.request.as_mut() {
            let operation: Value = serde_json::from_str(&self.operation).unwrap_or_default();
            r.body = operation.get("data").cloned();
        }
        self.call
    }
}

/// The BulkRequest for some operations, serialised.
fn bulk_request(entries: &[Entry]) -> String {
    let operations: Vec<&str> = entries.iter().map(|e| e.operation.as_str()).collect();
    format!(
        "{{\"schemas\":[\"{BULK_REQUEST}\"],\"Operations\":[{}]}}",
        operations.join(",")
    )
}

/// Packs calls, in order, into bulk requests within the limits, one request at a time. A
/// call whose group went out in an earlier request waits (in `deferred`) for the next wave.
struct Packer<I> {
    calls: I,
    limits: BulkLimits,
    counter: usize,
    /// The entry that did not fit in the previous request.
    carry: Option<Entry>,
    deferred: Arc<Mutex<Vec<Call>>>,
}

impl<I: Iterator<Item = Call>> Packer<I> {
    fn new(calls: I, limits: &BulkLimits, deferred: &Arc<Mutex<Vec<Call>>>) -> Self {
        Packer {
            calls,
            limits: *limits,
            counter: 0,
            carry: None,
            deferred: deferred.clone(),
        }
    }

    fn defer(&self, call: Call) {
        let mut waiting = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        waiting.push(call);
    }
}

impl<I: Iterator<Item = Call>> Iterator for Packer<I> {
    type Item = Vec<Entry>;

    fn next(&mut self) -> Option<Vec<Entry>> {
        let mut batch: Vec<Entry> = Vec::new();
        let mut size = ENVELOPE;
        let mut here: HashSet<String> = HashSet::new();
        loop {
            let e = match self.carry.take() {
                Some(e) => e,
                None => match self.calls.next() {
                    Some(call) => entry(call, &mut self.counter),
                    None => break,
                },
            };
            let full = batch.len() >= self.limits.max_operations
                || size + e.size() > self.limits.max_payload_size;
            if e.call.needs().is_some_and(|n| !here.contains(n) || full) {
                self.defer(e.into_call()); // its group went out in an earlier request
                continue;
            }
            if full && !batch.is_empty() {
                self.carry = Some(e);
                break;
            }
            if let Some(b) = e.call.creates() {
                here.insert(b);
            }
            size += e.size();
            batch.push(e);
        }
        (!batch.is_empty()).then_some(batch)
    }
}

/// Sends one bulk request and settles each operation. A request HERE finds too large
/// (413) is split in two; a single operation it refuses as too large is sent on its own.
fn send_batch<'a>(ctx: &'a Exec, entries: Vec<Entry>) -> BoxFuture<'a, Vec<Done>> {
    async move {
        // calls that need no request (members HERE never knew) are acknowledged as they are
        let (entries, settled): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.call.request.is_some());
        let mut out: Vec<Done> = settled.into_iter().map(|e| e.call.done).collect();
        if entries.is_empty() {
            return out;
        }
        match ctx.client.bulk(bulk_request(&entries)).await {
            Ok(response) => out.extend(settle_all(ctx, entries, &response).await),
            Err(e) if e.status() == Some(413) && entries.len() > 1 => {
                let mut first = entries;
                let second = first.split_off(first.len() / 2);
                let done = send_batch(ctx, first).await;
                let groups = settled_groups(&done);
                out.extend(done);
                let mut counter = 0;
                let rest: Vec<Entry> = second
                    .into_iter()
                    .filter_map(|e| regroup(e.into_call(), |n| groups.get(n).map(|g| g.1.clone())))
                    .map(|c| entry(c, &mut counter))
                    .collect();
                out.extend(send_batch(ctx, rest).await);
            }
            Err(e) if e.status() == Some(413) => {
                for entry in entries {
                    out.push(send_one(ctx, entry.into_call()).await);
                }
            }
            Err(e) => {
                for entry in entries {
                    out.push(settle(ctx, entry.call, Err(e.clone())).await);
                }
            }
        }
        out
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

/// Points a call that needs a group at the group's SCIM id (`group` looks it up by bulkId);
/// `None` when it was not created.
fn regroup(mut call: Call, group: impl Fn(&str) -> Option<String>) -> Option<Call> {
    let Some(need) = call.needs() else {
        return Some(call);
    };
    let id = group(need)?;
    if let Some(r) = call.request.as_mut() {
        r.id = Some(id);
    }
    Some(call)
}

/// Settles every operation of a bulk request from the BulkResponse. Membership calls that
/// failed because their new group was not created are dropped, or sent again alone when
/// the group was adopted.
async fn settle_all(ctx: &Exec, entries: Vec<Entry>, response: &Value) -> Vec<Done> {
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
            orphans.push((e.into_call(), answer));
            continue;
        }
        out.push(settle(ctx, e.call, answer).await);
    }
    let groups = settled_groups(&out);
    for (call, answer) in orphans {
        let status = call.needs().and_then(|n| groups.get(n)).map(|g| g.0);
        match (
            status,
            regroup(call, |n| groups.get(n).map(|g| g.1.clone())),
        ) {
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
    let (method, path) = match &e.call.request {
        Some(r) => (
            r.method.to_string(),
            format!(
                "{}/{}",
                r.kind.endpoint(),
                r.id.as_deref().unwrap_or_default()
            ),
        ),
        None => Default::default(),
    };
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
                changes: crate::push::Changes::None,
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
        let operation: Value = serde_json::from_str(&post.operation).unwrap();
        assert_eq!(operation["path"], "/Users");
        assert_eq!(operation["data"]["userName"], "ada@example.com");
        let request: Value = serde_json::from_str(&bulk_request(&[post])).unwrap();
        assert_eq!(request["schemas"][0], BULK_REQUEST);
        assert_eq!(request["Operations"][0], operation);
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
