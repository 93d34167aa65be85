//! HTTP surface of the fake SCIM service: bearer check, fault injection (`/Users`, `/Groups`,
//! `/Bulk` only), routing of the resource endpoints, `/Bulk` with `bulkId` references, and the
//! request log (written after each answer).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use http::{HeaderMap, Method, Uri};
use serde_json::{json, Map, Value};

use crate::sim::scim::{Kind, ScimError, ScimRequest, ScimShared, BASE_PATH};
use crate::sim::scim_meta;
use crate::sim::scim_store::{project, Store};
use crate::sim::{answer_after, lock, parse_query, percent_decode, respond};

const SCIM_JSON: &str = "application/scim+json";
const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

/// A successful answer: status, body, headers, and the id a POST created (for the log).
struct Answer {
    status: u16,
    body: Option<Value>,
    headers: Vec<(String, String)>,
    created: Option<String>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: Some(body),
            headers: vec![],
            created: None,
        }
    }
}

/// The axum router: one handler; paths are parsed by hand below the base path.
pub(crate) fn router(shared: Arc<ScimShared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(
    State(shared): State<Arc<ScimShared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = lock(&shared.store).faults.latency_ms;
    answer_after(latency, || answer(&shared, &method, &uri, &headers, &body)).await
}

/// One request's answer, worked out at once; [`handle`] holds it back until its time.
fn answer(
    shared: &ScimShared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let query = parse_query(uri.query());
    let full = uri.path();
    let rel = full
        .strip_prefix(BASE_PATH)
        .filter(|r| r.is_empty() || r.starts_with('/'));
    let segs: Vec<String> = rel
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let parsed: Result<Option<Value>, ScimError> = if body.is_empty() {
        Ok(None)
    } else {
        serde_json::from_slice(body).map(Some).map_err(|_| {
            ScimError::new(
                400,
                Some("invalidSyntax"),
                "Request body is not valid JSON.",
            )
        })
    };
    let logged_body = parsed.as_ref().ok().cloned().flatten();
    let mut s = lock(&shared.store);
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let authorized =
        auth.len() > 7 && auth[..7].eq_ignore_ascii_case("bearer ") && auth[7..].trim() == s.token;
    let under_base = rel.map(|_| segs.as_slice());
    let outcome = serve(
        &mut s,
        method,
        authorized,
        under_base,
        &query,
        parsed,
        body.len(),
    );
    let answer = outcome.unwrap_or_else(|e| Answer {
        status: e.status,
        body: Some(e.body()),
        headers: e.headers,
        created: None,
    });
    s.log.push(ScimRequest {
        method: method.to_string(),
        path: rel.unwrap_or(full).to_string(),
        query,
        body: logged_body,
        status: answer.status,
        resource_type: segs.first().cloned(),
        resource_id: segs.get(1).cloned().or(answer.created),
    });
    drop(s);
    respond(
        answer.status,
        answer.body.as_ref(),
        SCIM_JSON,
        &answer.headers,
    )
}

/// Auth, faults and routing for one request (the caller logs and sends the answer).
fn serve(
    s: &mut Store,
    method: &Method,
    authorized: bool,
    segs: Option<&[String]>,
    q: &BTreeMap<String, String>,
    body: Result<Option<Value>, ScimError>,
    raw_len: usize,
) -> Result<Answer, ScimError> {
    if !authorized {
        let mut e = ScimError::new(
            401,
            None,
            "Authorization failure. The authorization header is invalid or missing.",
        );
        e.headers.push(("WWW-Authenticate".into(), "Bearer".into()));
        return Err(e);
    }
    let Some((segs, top)) = segs.and_then(|s| Some((s, s.first()?))) else {
        return Err(ScimError::new(404, None, "Endpoint not found."));
    };
    let faulty = matches!(top.as_str(), "Users" | "Groups" | "Bulk");
    let write = *method != Method::GET;
    let r = if faulty { s.fault_rng.unit() } else { 1.0 };
    let f = &s.faults;
    let (r429, r500, commit) = (f.rate_429, f.rate_500, f.rate_500_after_commit);
    if r < r429 {
        let mut e = ScimError::new(429, None, "Too many requests.");
        e.headers
            .push(("Retry-After".into(), f.retry_after_secs.to_string()));
        return Err(e);
    }
    if r < r429 + r500 || (faulty && write && f.reject_all_writes) {
        return Err(ScimError::new(500, None, "Internal server error."));
    }
    let body = body?;
    let answer = route(s, method, segs, q, body, raw_len)?;
    if faulty && write && r < r429 + r500 + commit {
        // Applied, then failed: the log still records which resource was created.
        let e = ScimError::new(500, None, "Internal server error.");
        let mut a = Answer::json(500, e.body());
        a.created = answer.created;
        return Ok(a);
    }
    Ok(answer)
}

fn etag(res: &Map<String, Value>) -> Vec<(String, String)> {
    let v = res
        .get("meta")
        .and_then(|m| m["version"].as_str())
        .unwrap_or("");
    vec![("ETag".to_string(), v.to_string())]
}

fn route(
    s: &mut Store,
    method: &Method,
    segs: &[String],
    q: &BTreeMap<String, String>,
    body: Option<Value>,
    raw_len: usize,
) -> Result<Answer, ScimError> {
    let not_allowed = || ScimError::new(405, None, "Method not allowed.");
    let top = segs[0].as_str();
    if let Some(doc) = scim_meta::discovery(s, top, segs.get(1).map(String::as_str), segs.len()) {
        return if *method == Method::GET {
            doc.map(|d| Answer::json(200, d))
        } else {
            Err(not_allowed())
        };
    }
    if top == "Bulk" && segs.len() == 1 {
        if *method != Method::POST {
            return Err(not_allowed());
        }
        return bulk(s, &body.unwrap_or(Value::Null), raw_len).map(|b| Answer::json(200, b));
    }
    let Some(kind) = Kind::from_segment(top).filter(|_| segs.len() <= 2) else {
        return Err(ScimError::new(404, None, "Endpoint not found."));
    };
    let need_body = || {
        body.clone().ok_or_else(|| {
            ScimError::new(400, Some("invalidSyntax"), "A request body is required.")
        })
    };
    let Some(id) = segs.get(1) else {
        return match *method {
            Method::GET => s.list(kind, q).map(|l| Answer::json(200, l)),
            Method::POST => {
                let res = s.create(kind, &need_body()?)?;
                let mut a = Answer::json(201, project(&Value::Object(res.clone()), q));
                a.headers = etag(&res);
                let loc = res
                    .get("meta")
                    .and_then(|m| m["location"].as_str())
                    .unwrap_or("");
                a.headers.push(("Location".into(), loc.to_string()));
                a.created = res.get("id").and_then(Value::as_str).map(str::to_string);
                Ok(a)
            }
            _ => Err(not_allowed()),
        };
    };
    let res = match *method {
        Method::GET => s.get(kind, id)?.clone(),
        Method::PUT => s.replace(kind, id, &need_body()?)?,
        Method::PATCH => {
            let res = s.patch(kind, id, &need_body()?)?;
            if kind == Kind::Groups && !q.contains_key("attributes") {
                let mut a = Answer::json(204, Value::Null);
                a.body = None;
                a.headers = etag(&res);
                return Ok(a);
            }
            res
        }
        Method::DELETE => {
            s.delete(kind, id)?;
            let mut a = Answer::json(204, Value::Null);
            a.body = None;
            return Ok(a);
        }
        _ => return Err(not_allowed()),
    };
    let mut a = Answer::json(200, project(&Value::Object(res.clone()), q));
    a.headers = etag(&res);
    Ok(a)
}

/// Replaces every `"bulkId:x"` string in `v`; `Err(x)` names the first unknown bulkId.
fn resolve(v: &Value, ids: &HashMap<String, String>) -> Result<Value, String> {
    Ok(match v {
        Value::String(st) => match st.strip_prefix("bulkId:") {
            Some(b) => Value::String(ids.get(b).cloned().ok_or_else(|| b.to_string())?),
            None => v.clone(),
        },
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| resolve(x, ids))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                out.insert(k.clone(), resolve(x, ids)?);
            }
            Value::Object(out)
        }
        _ => v.clone(),
    })
}

/// Resolves `bulkId:x` path segments, e.g. `/Groups/bulkId:g1`.
fn resolve_path(path: &str, ids: &HashMap<String, String>) -> Result<String, String> {
    let segs: Vec<String> = path
        .split('/')
        .map(|seg| match seg.strip_prefix("bulkId:") {
            Some(b) => ids.get(b).cloned().ok_or_else(|| b.to_string()),
            None => Ok(seg.to_string()),
        })
        .collect::<Result<_, _>>()?;
    Ok(segs.join("/"))
}

/// One bulk operation; returns its BulkResponse entry and the created id (for POST).
fn bulk_op(s: &mut Store, method: &str, path: &str, data: &Value) -> (Value, Option<String>) {
    let segs: Vec<&str> = path.split('/').filter(|x| !x.is_empty()).collect();
    let kind = segs.first().and_then(|k| Kind::from_segment(k));
    let result: Result<(u16, Option<Map<String, Value>>), ScimError> =
        match (kind, segs.len(), method) {
            (Some(k), 1, "POST") => s.create(k, data).map(|r| (201, Some(r))),
            (Some(k), 2, "PUT") => s.replace(k, segs[1], data).map(|r| (200, Some(r))),
            (Some(k), 2, "PATCH") => s.patch(k, segs[1], data).map(|r| (200, Some(r))),
            (Some(k), 2, "DELETE") => s.delete(k, segs[1]).map(|_| (204, None)),
            (None, _, _) => Err(ScimError::new(
                404,
                None,
                format!("Endpoint {path} not found."),
            )),
            _ => Err(ScimError::new(
                400,
                Some("invalidSyntax"),
                format!("{method} {path} is not a valid bulk operation."),
            )),
        };
    let mut entry = json!({"method": method});
    if let (Some(k), Some(id)) = (kind, segs.get(1)) {
        let seg = if k == Kind::Users { "Users" } else { "Groups" };
        entry["location"] = json!(format!("{}/{seg}/{id}", s.base_url));
    }
    match result {
        Ok((status, res)) => {
            entry["status"] = json!(status.to_string());
            let created = res
                .as_ref()
                .filter(|_| status == 201)
                .and_then(|r| r["id"].as_str().map(str::to_string));
            if let Some(meta) = res.as_ref().and_then(|r| r.get("meta")) {
                entry["location"] = meta["location"].clone();
                entry["version"] = meta["version"].clone();
            }
            (entry, created)
        }
        Err(e) => {
            entry["status"] = json!(e.status.to_string());
            entry["response"] = e.body();
            (entry, None)
        }
    }
}

/// Whether bulkId `b` is declared by another operation that has not run yet.
fn declared_later(ops: &[Value], results: &[Option<Value>], i: usize, b: &str) -> bool {
    ops.iter()
        .enumerate()
        .any(|(j, o)| j != i && results[j].is_none() && o["bulkId"].as_str() == Some(b))
}

/// RFC 7644 §3.7: runs operations in order, deferring ones that reference a bulkId created
/// later in the same request; stops after `failOnErrors` errors.
fn bulk(s: &mut Store, body: &Value, raw_len: usize) -> Result<Value, ScimError> {
    let Some(cfg) = s.faults.bulk.clone() else {
        return Err(ScimError::new(
            501,
            None,
            "Bulk operations are not supported.",
        ));
    };
    if raw_len > cfg.max_payload_size {
        let d = format!(
            "The size of the bulk operation exceeds the maxPayloadSize ({}).",
            cfg.max_payload_size
        );
        return Err(ScimError::new(413, None, d));
    }
    let syntax = |d: &str| ScimError::new(400, Some("invalidSyntax"), d.to_string());
    if !body["schemas"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == BULK_REQUEST))
    {
        return Err(syntax("'schemas' must contain the BulkRequest URN."));
    }
    let ops = body["Operations"]
        .as_array()
        .ok_or_else(|| syntax("'Operations' is required."))?;
    if ops.len() > cfg.max_operations {
        let d = format!(
            "The number of operations exceeds maxOperations ({}).",
            cfg.max_operations
        );
        return Err(ScimError::new(413, None, d));
    }
    let fail_on = body["failOnErrors"].as_u64().map(|n| n as usize);
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut results: Vec<Option<Value>> = vec![None; ops.len()];
    let mut pending: Vec<usize> = (0..ops.len()).collect();
    let mut errors = 0usize;
    while !pending.is_empty() && fail_on.is_none_or(|f| errors < f) {
        let mut deferred = vec![];
        for &i in &pending {
            if fail_on.is_some_and(|f| errors >= f) {
                break;
            }
            let op = &ops[i];
            let method = op["method"].as_str().unwrap_or("").to_ascii_uppercase();
            let bulk_id = op["bulkId"].as_str();
            let path = op["path"].as_str().unwrap_or("");
            let resolved =
                resolve(&op["data"], &ids).and_then(|d| Ok((d, resolve_path(path, &ids)?)));
            let (mut entry, created) = match resolved {
                Err(b) if declared_later(ops, &results, i, &b) => {
                    deferred.push(i);
                    continue;
                }
                Err(b) => {
                    let e = ScimError::new(
                        400,
                        Some("invalidValue"),
                        format!("Unresolvable bulkId reference '{b}'."),
                    );
                    (
                        json!({"method": method, "status": "400", "response": e.body()}),
                        None,
                    )
                }
                Ok(_) if method == "POST" && bulk_id.is_none() => {
                    let e = ScimError::new(
                        400,
                        Some("invalidSyntax"),
                        "POST operations require a bulkId.",
                    );
                    (
                        json!({"method": method, "status": "400", "response": e.body()}),
                        None,
                    )
                }
                Ok((data, path)) => bulk_op(s, &method, &path, &data),
            };
            if let Some(b) = bulk_id {
                entry["bulkId"] = json!(b);
                if let Some(id) = created {
                    ids.insert(b.to_string(), id);
                }
            }
            if entry.get("response").is_some() {
                errors += 1;
            }
            results[i] = Some(entry);
        }
        if deferred.len() == pending.len() {
            // No progress: the remaining references cannot be resolved.
            for &i in &deferred {
                let e = ScimError::new(
                    409,
                    Some("invalidValue"),
                    "Circular or unresolvable bulkId reference.",
                );
                let mut entry =
                    json!({"method": ops[i]["method"], "status": "409", "response": e.body()});
                if let Some(b) = ops[i]["bulkId"].as_str() {
                    entry["bulkId"] = json!(b);
                }
                results[i] = Some(entry);
            }
            break;
        }
        pending = deferred;
    }
    let done: Vec<Value> = results.into_iter().flatten().collect();
    Ok(json!({"schemas": [BULK_RESPONSE], "Operations": done}))
}
