//! HTTP surface of the fake tenant: the v2.0 token endpoint (client credentials with a secret,
//! HTTP Basic, or a certificate assertion) and the Graph v1.0 routes, with bearer checks,
//! throttling faults, Entra/Graph-shaped error bodies and the request log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use http::{HeaderMap, Method, Uri};
use serde_json::{json, Value};

use crate::sim::graph::{GraphRequest, Shared, DEFAULT_TOKEN_TTL};
use crate::sim::graph_delta::{delta, parse_select, project};
use crate::sim::graph_tenant::{Res, Tenant};
use crate::sim::{answer_after, b64url_decode, lock, parse_query, percent_decode, respond};

const ODATA_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
const TOKEN_JSON: &str = "application/json; charset=utf-8";
const LIST_PAGE: usize = 4;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const NOT_FOUND_TAIL: &str =
    "does not exist or one of its queried reference-property objects are not present.";

/// A computed answer: status, JSON body and extra headers.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) content_type: &'static str,
}

impl Reply {
    /// 200 with an OData JSON body.
    pub(crate) fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body,
            headers: vec![],
            content_type: ODATA_JSON,
        }
    }
}

/// Graph error body `{"error":{"code","message","innerError":{...}}}`.
pub(crate) fn gerr(status: u16, code: &str, message: &str) -> Reply {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
    let rid = uuid::Uuid::new_v4().to_string();
    let body = json!({"error": {"code": code, "message": message, "innerError": {
        "date": now, "request-id": rid, "client-request-id": rid}}});
    Reply {
        status,
        body,
        headers: vec![],
        content_type: ODATA_JSON,
    }
}

/// Entra token-endpoint error body (`error`, `error_description` with the AADSTS code, ...).
fn terr(status: u16, error: &str, code: u32, desc: &str) -> Reply {
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {desc} Trace ID: {} Correlation ID: {} Timestamp: {now}",
            uuid::Uuid::new_v4(), uuid::Uuid::new_v4()),
        "error_codes": [code],
        "timestamp": now,
        "trace_id": uuid::Uuid::new_v4().to_string(),
        "correlation_id": uuid::Uuid::new_v4().to_string(),
    });
    Reply {
        status,
        body,
        headers: vec![],
        content_type: TOKEN_JSON,
    }
}

/// The axum router: everything goes through one handler that parses Graph-style paths.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = lock(&shared.tenant).faults.latency_ms;
    answer_after(latency, || answer(&shared, &method, &uri, &headers, &body)).await
}

/// One request's answer, worked out at once; [`handle`] holds it back until its time.
fn answer(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let query = parse_query(uri.query());
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut t = lock(&shared.tenant);
    let mut reply = route(
        &mut t,
        &shared.base_url,
        method,
        uri.path(),
        &query,
        headers,
        body,
    );
    let minimal = header("prefer").is_some_and(|p| p.contains("return=minimal"));
    if minimal && reply.status == 200 && uri.path().contains("delta") {
        reply
            .headers
            .push(("Preference-Applied".into(), "return=minimal".into()));
    }
    t.log.push(GraphRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query,
        status: reply.status,
        authorization_present: headers.contains_key(http::header::AUTHORIZATION),
        prefer: header("prefer"),
    });
    drop(t);
    let rid = uuid::Uuid::new_v4().to_string();
    reply.headers.push(("request-id".into(), rid));
    if let Some(c) = header("client-request-id") {
        reply.headers.push(("client-request-id".into(), c));
    }
    respond(
        reply.status,
        Some(&reply.body),
        reply.content_type,
        &reply.headers,
    )
}

fn route(
    t: &mut Tenant,
    base: &str,
    method: &Method,
    path: &str,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let parts: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    if parts.len() == 4 && parts[1] == "oauth2" && parts[2] == "v2.0" && parts[3] == "token" {
        if method != Method::POST {
            return terr(
                400,
                "invalid_request",
                900561,
                "The endpoint only accepts POST requests.",
            );
        }
        return token(t, &parts[0], headers, body);
    }
    if parts.first().map(String::as_str) != Some("v1.0") {
        return gerr(400, "BadRequest", "Invalid version.");
    }
    if let Some(r) = check_bearer(t, headers) {
        return r;
    }
    let r = t.fault_rng.unit();
    let f = &t.faults;
    let retry = vec![("Retry-After".to_string(), f.retry_after_secs.to_string())];
    if r < f.rate_429 {
        let mut e = gerr(429, "TooManyRequests", "Too many requests.");
        e.headers = retry;
        return e;
    }
    if r < f.rate_429 + f.rate_503 {
        let mut e = gerr(503, "serviceNotAvailable", "Service unavailable.");
        e.headers = retry;
        return e;
    }
    if method != Method::GET {
        return gerr(
            405,
            "Request_BadRequest",
            "The HTTP method is not supported on this resource.",
        );
    }
    v1(t, base, &parts[1..], q)
}

fn check_bearer(t: &Tenant, headers: &HeaderMap) -> Option<Reply> {
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = auth
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("bearer "))
        .map(|_| auth[7..].trim())
        .unwrap_or("");
    let msg = if token.is_empty() {
        "Access token is empty."
    } else {
        match t.access_tokens.get(token) {
            None => "IDX14100: JWT is not well formed, there are no dots (.).",
            Some(exp) if *exp <= Instant::now() => {
                "Lifetime validation failed, the token is expired."
            }
            Some(_) => return None,
        }
    };
    let mut r = gerr(401, "InvalidAuthenticationToken", msg);
    let wa = "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"";
    r.headers.push(("WWW-Authenticate".into(), wa.into()));
    Some(r)
}

/// Credentials from the form body, falling back to HTTP Basic (form-encoded id:secret).
fn form_with_basic(headers: &HeaderMap, body: &[u8]) -> BTreeMap<String, String> {
    let mut form: BTreeMap<String, String> =
        url::form_urlencoded::parse(body).into_owned().collect();
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth.len() > 6 && auth[..6].eq_ignore_ascii_case("basic ") {
        let decoded =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, auth[6..].trim());
        if let Some(s) = decoded.ok().and_then(|b| String::from_utf8(b).ok()) {
            if let Some((id, secret)) = s.split_once(':') {
                form.entry("client_id".into())
                    .or_insert_with(|| percent_decode(id));
                form.entry("client_secret".into())
                    .or_insert_with(|| percent_decode(secret));
            }
        }
    }
    form
}

fn token(t: &mut Tenant, tenant: &str, headers: &HeaderMap, body: &[u8]) -> Reply {
    let ctype = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        let d = "The request body must contain the following parameter: 'grant_type'.";
        return terr(400, "invalid_request", 900144, d);
    }
    let form = form_with_basic(headers, body);
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if !tenant.eq_ignore_ascii_case(&t.tenant_id) {
        let d = format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.");
        return terr(400, "invalid_request", 90002, &d);
    }
    if get("grant_type") != "client_credentials" {
        let d = "The app requested an unsupported grant type.";
        return terr(400, "unsupported_grant_type", 70003, d);
    }
    if get("client_id") != t.client_id {
        let d = format!(
            "Application with identifier '{}' was not found in the directory '{tenant}'.",
            get("client_id")
        );
        return terr(400, "unauthorized_client", 700016, &d);
    }
    let scope = get("scope").trim();
    if !scope.ends_with("/.default") || scope.contains(' ') {
        let d = format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).");
        return terr(400, "invalid_scope", 1002012, &d);
    }
    if form.contains_key("client_assertion") || form.contains_key("client_assertion_type") {
        if get("client_assertion_type") != ASSERTION_TYPE {
            let d = "The client_assertion_type is not supported.";
            return terr(400, "invalid_request", 50027, d);
        }
        if let Err(e) = check_assertion(get("client_assertion"), &t.client_id) {
            return e;
        }
        if t.faults.reject_secret {
            let d = "Client assertion failed signature validation.";
            return terr(401, "invalid_client", 700027, d);
        }
    } else if t.faults.reject_secret || get("client_secret") != t.client_secret {
        let d = format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", t.client_id);
        return terr(401, "invalid_client", 7000215, &d);
    }
    let ttl = t.faults.token_ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL);
    let tok = issue_token(t, ttl);
    let mut r = Reply::ok(
        json!({"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": tok}),
    );
    r.content_type = TOKEN_JSON;
    r
}

/// Structural checks Entra makes on a certificate client assertion.
fn check_assertion(jwt: &str, client_id: &str) -> Result<(), Reply> {
    let bad = |code: u32, d: &str| Err(terr(401, "invalid_client", code, d));
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(terr(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        ));
    }
    let decode = |s: &str| -> Option<Value> { serde_json::from_slice(&b64url_decode(s)?).ok() };
    let (Some(header), Some(claims)) = (decode(parts[0]), decode(parts[1])) else {
        return Err(terr(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        ));
    };
    if header.get("x5t#S256").is_none() && header.get("x5t").is_none() {
        return bad(700027, "Client assertion contains an invalid signature. The key was not found (no x5t#S256 or x5t header).");
    }
    let aud = claims["aud"].as_str().unwrap_or("");
    if !aud.ends_with("/oauth2/v2.0/token") {
        return bad(
            700212,
            "No matching federated identity record found for presented assertion audience.",
        );
    }
    if claims["iss"].as_str() != Some(client_id) || claims["sub"].as_str() != Some(client_id) {
        return bad(700023, "Client assertion audience claim does not match Realm issuer, or iss/sub is not the client id.");
    }
    let now = chrono::Utc::now().timestamp();
    match claims["exp"].as_i64() {
        Some(exp) if exp > now => Ok(()),
        _ => bad(
            700024,
            "Client assertion is not within its valid time range.",
        ),
    }
}

fn issue_token(t: &mut Tenant, ttl: u64) -> String {
    let now = chrono::Utc::now().timestamp();
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "fake-signing-key"});
    let uti = t.rng.token(12);
    let claims = json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{}/", t.tenant_id),
        "iat": now, "nbf": now, "exp": now + ttl as i64,
        "appid": t.client_id, "tid": t.tenant_id, "uti": uti,
        "roles": ["User.Read.All", "GroupMember.Read.All", "Application.Read.All"],
    });
    let tok = t.rng.fake_jwt(&header, &claims);
    let expires = Instant::now() + Duration::from_secs(ttl);
    t.access_tokens.insert(tok.clone(), expires);
    t.issued.push(tok.clone());
    tok
}

pub(crate) fn not_found(id: &str) -> Reply {
    gerr(
        404,
        "Request_ResourceNotFound",
        &format!("Resource '{id}' {NOT_FOUND_TAIL}"),
    )
}

pub(crate) fn bad_segment(seg: &str) -> Reply {
    gerr(
        400,
        "BadRequest",
        &format!("Resource not found for the segment '{seg}'."),
    )
}

/// Routes `/v1.0/...` (already authorized) to the handlers.
fn v1(t: &mut Tenant, base: &str, p: &[String], q: &BTreeMap<String, String>) -> Reply {
    let Some(first) = p.first() else {
        return bad_segment("");
    };
    let head = first.to_ascii_lowercase();
    let is_delta = |s: &String| {
        let l = s.to_ascii_lowercase();
        matches!(
            l.as_str(),
            "delta" | "delta()" | "microsoft.graph.delta" | "microsoft.graph.delta()"
        )
    };
    let res = match head.as_str() {
        "users" => Some(Res::Users),
        "groups" => Some(Res::Groups),
        _ => None,
    };
    if let (Some(res), 2, true) = (res, p.len(), p.get(1).is_some_and(is_delta)) {
        let link_base = format!("{base}/v1.0/{}/{}", p[0], p[1]);
        return delta(t, base, res, &link_base, q);
    }
    if head.starts_with("serviceprincipals") {
        return service_principal(t, base, p, q);
    }
    let link_base = format!("{base}/v1.0/{}", p.join("/"));
    match (res, p.len()) {
        (Some(Res::Users), 2 | 3) => crate::sim::graph_users::user(t, base, p, q, &link_base),
        (Some(Res::Groups), 2 | 3) => {
            let Some(g) = t.groups.get(&p[1]) else {
                return not_found(&p[1]);
            };
            let select = match parse_select(q, Res::Groups, false) {
                Ok(s) => s,
                Err(e) => return e,
            };
            if p.len() == 2 {
                let mut v = project(Res::Groups, &p[1], &g.props, select.as_ref());
                let ctx = format!("{base}/v1.0/$metadata#groups/$entity");
                v.insert("@odata.context".into(), json!(ctx));
                return Reply::ok(Value::Object(v));
            }
            if !p[2].eq_ignore_ascii_case("members") {
                return bad_segment(&p[2]);
            }
            let mut vals = vec![];
            for m in &g.members {
                if let Some(u) = t.users.get(m).filter(|u| !u.deleted) {
                    vals.push(typed(project(Res::Users, m, &u.props, None), "user"));
                } else if let Some(sub) = t.groups.get(m) {
                    vals.push(typed(project(Res::Groups, m, &sub.props, None), "group"));
                }
            }
            paged(vals, q, base, &link_base, "directoryObjects")
        }
        _ => bad_segment(first),
    }
}

pub(crate) fn typed(mut m: serde_json::Map<String, Value>, kind: &str) -> Value {
    m.insert(
        "@odata.type".into(),
        json!(format!("#microsoft.graph.{kind}")),
    );
    Value::Object(m)
}

/// Live user by object id or userPrincipalName (case-insensitive).
pub(crate) fn find_user(t: &Tenant, key: &str) -> Option<String> {
    if t.users.get(key).is_some_and(|u| !u.deleted) {
        return Some(key.to_string());
    }
    t.users
        .iter()
        .filter(|(_, u)| !u.deleted)
        .find(|(_, u)| {
            u.props["userPrincipalName"]
                .as_str()
                .is_some_and(|upn| upn.eq_ignore_ascii_case(key))
        })
        .map(|(id, _)| id.clone())
}

/// Server-driven paging for plain collections: opaque `$skiptoken` carrying the offset and
/// the page size; `$top` (1..=999, as Graph allows) sets the page size, else a small default.
pub(crate) fn paged(
    vals: Vec<Value>,
    q: &BTreeMap<String, String>,
    base: &str,
    link_base: &str,
    ctx: &str,
) -> Reply {
    paged_with(&vals, |_| true, Value::clone, q, base, link_base, ctx)
}

/// [`paged`] over the items `keep` admits, rendered only when they are on the requested
/// page; the skip token holds a position in `vals`, so a page costs its own items rather
/// than the whole listing (as a server's cursor does).
pub(crate) fn paged_with<T>(
    vals: &[T],
    keep: impl Fn(&T) -> bool,
    render: impl Fn(&T) -> Value,
    q: &BTreeMap<String, String>,
    base: &str,
    link_base: &str,
    ctx: &str,
) -> Reply {
    let top = match q.get("$top").map(|t| t.parse::<usize>()) {
        None => LIST_PAGE,
        Some(Ok(n)) if (1..=999).contains(&n) => n,
        Some(_) => {
            return gerr(
                400,
                "Request_BadRequest",
                "Invalid page size specified: '$top'.",
            )
        }
    };
    let (start, size) = match q.get("$skiptoken") {
        None => (0, top),
        Some(tok) => match parse_skip_token(tok) {
            Some(p) => p,
            None => return gerr(400, "Request_BadRequest", "Invalid skip token."),
        },
    };
    let mut kept = vals.iter().enumerate().skip(start).filter(|(_, v)| keep(v));
    let page: Vec<Value> = kept.by_ref().take(size).map(|(_, v)| render(v)).collect();
    let mut body = json!({"@odata.context": format!("{base}/v1.0/$metadata#{ctx}"), "value": page});
    if let Some((next, _)) = kept.next() {
        // Graph's nextLinks keep the request's other options (`$select` above all)
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in q
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "$top" | "$skiptoken"))
        {
            query.append_pair(k, v);
        }
        let tok = crate::sim::b64url(format!("o:{next}:{size}").as_bytes());
        query.append_pair("$skiptoken", &tok);
        body["@odata.nextLink"] = json!(format!("{link_base}?{}", query.finish()));
    }
    Reply::ok(body)
}

/// `(position, page size)` from a skip token minted by [`paged_with`].
fn parse_skip_token(tok: &str) -> Option<(usize, usize)> {
    let text = String::from_utf8(b64url_decode(tok)?).ok()?;
    let mut parts = text.strip_prefix("o:")?.split(':');
    let start = parts.next()?.parse::<usize>().ok()?;
    let size = parts
        .next()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(LIST_PAGE);
    Some((start, size))
}

fn sp_object(t: &Tenant, base: &str) -> Value {
    json!({
        "@odata.context": format!("{base}/v1.0/$metadata#servicePrincipals/$entity"),
        "id": t.sp_id, "appId": t.client_id, "displayName": "HERE Enterprise Browser",
        "appRoleAssignmentRequired": true, "servicePrincipalType": "Application",
        "accountEnabled": true,
    })
}

fn service_principal(t: &Tenant, base: &str, p: &[String], q: &BTreeMap<String, String>) -> Reply {
    let head = &p[0];
    let (spid, rest) = if head.eq_ignore_ascii_case("servicePrincipals") {
        if p.len() == 1 {
            let want = q
                .get("$filter")
                .map(|f| f.replace(' ', ""))
                .unwrap_or_default();
            let hit = want.is_empty()
                || want == format!("appIdeq'{}'", t.client_id)
                || want == format!("ideq'{}'", t.sp_id);
            let vals = if hit {
                vec![sp_object(t, base)]
            } else {
                vec![]
            };
            let ctx = format!("{base}/v1.0/$metadata#servicePrincipals");
            return Reply::ok(json!({"@odata.context": ctx, "value": vals}));
        }
        (p[1].clone(), &p[2..])
    } else {
        let inner = head
            .get("servicePrincipals(".len()..)
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or("");
        let app = inner
            .split_once('=')
            .map(|(_, v)| v.trim_matches('\''))
            .unwrap_or("");
        if !inner.to_ascii_lowercase().starts_with("appid=") {
            return bad_segment(head);
        }
        let id = if app == t.client_id {
            t.sp_id.clone()
        } else {
            app.to_string()
        };
        (id, &p[1..])
    };
    if spid != t.sp_id {
        return not_found(&spid);
    }
    match rest {
        [] => Reply::ok(sp_object(t, base)),
        [r] if r.eq_ignore_ascii_case("appRoleAssignedTo") => {
            let live = |a: &crate::sim::graph_tenant::Assignment| {
                t.users.get(&a.principal_id).is_none_or(|u| !u.deleted)
            };
            // `$select` is honoured, as Graph does (a page of 999 then costs a third)
            let select: Option<Vec<String>> = q.get("$select").map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_ascii_lowercase())
                    .collect()
            });
            let wanted = |k: &str| {
                select
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|p| p.eq_ignore_ascii_case(k)))
            };
            let render = |a: &crate::sim::graph_tenant::Assignment| {
                let fields: [(&str, &dyn Fn() -> Value); 9] = [
                    ("id", &|| json!(a.id)),
                    ("deletedDateTime", &|| Value::Null),
                    ("appRoleId", &|| {
                        json!("00000000-0000-0000-0000-000000000000")
                    }),
                    ("createdDateTime", &|| json!(a.created)),
                    ("principalDisplayName", &|| t.display_name(&a.principal_id)),
                    ("principalId", &|| json!(a.principal_id)),
                    ("principalType", &|| json!(a.principal_type)),
                    ("resourceDisplayName", &|| json!("HERE Enterprise Browser")),
                    ("resourceId", &|| json!(t.sp_id)),
                ];
                let picked = fields.iter().filter(|(k, _)| wanted(k));
                Value::Object(picked.map(|(k, v)| (k.to_string(), v())).collect())
            };
            let link_base = format!("{base}/v1.0/{}", p.join("/"));
            paged_with(
                &t.assignments,
                live,
                render,
                q,
                base,
                &link_base,
                "servicePrincipals('x')/appRoleAssignedTo",
            )
        }
        [r, ..] => bad_segment(r),
    }
}
