//! Fake SCIM 2.0 service provider shaped like HERE's `/scim/api/v2`: the public handle, fault
//! settings, and the resource store (create, replace, atomic PATCH, delete, list with filter and
//! paging, validation and uniqueness). HTTP handling lives in `scim_http`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::sim::scim_store::Store;
use crate::sim::{lock, Server};

/// Core User schema URN.
pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema URN.
pub(crate) const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension URN.
pub(crate) const ENT_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// PatchOp message URN.
pub(crate) const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// ListResponse message URN.
pub(crate) const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Error message URN.
pub(crate) const ERR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// Largest page the server returns (advertised as `filter.maxResults`).
pub(crate) const MAX_RESULTS: usize = 50;
/// Base path of the SCIM API on the server.
pub(crate) const BASE_PATH: &str = "/scim/api/v2";

/// Handle on a running fake SCIM service; cheap to clone, the server stops with the last clone.
#[derive(Clone)]
pub struct ScimSim {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<ScimShared>,
    server: Server,
}

/// State shared between the handle and the HTTP handlers.
pub(crate) struct ScimShared {
    pub(crate) store: Mutex<Store>,
}

/// `/Bulk` limits; when set, bulk is advertised in ServiceProviderConfig and served.
#[derive(Clone, Debug)]
pub struct BulkSupport {
    /// Most operations accepted in one BulkRequest (more -> 413).
    pub max_operations: usize,
    /// Largest BulkRequest body in bytes (larger -> 413).
    pub max_payload_size: usize,
    /// `maxPayloadSize` advertised instead of the enforced one (a server that counts
    /// differently from what it advertises, so clients meet its 413).
    pub advertised_payload_size: Option<usize>,
}

/// Faults injected into the fake SCIM service (`/Users`, `/Groups`, `/Bulk` only).
#[derive(Clone, Debug, Default)]
pub struct ScimFaults {
    /// Probability of `500` before anything is applied.
    pub rate_500: f64,
    /// Probability that a write is applied and then answered `500` (ambiguous failure).
    pub rate_500_after_commit: f64,
    /// Probability of `429` with `Retry-After`.
    pub rate_429: f64,
    /// `Retry-After` seconds on injected 429s.
    pub retry_after_secs: u64,
    /// Answer each request this long after it arrived (the fake's own work included).
    pub latency_ms: u64,
    /// POST/PUT/PATCH of users with these userNames -> 400 invalidValue (case-insensitive).
    pub fail_user_names: BTreeSet<String>,
    /// Every write -> 500.
    pub reject_all_writes: bool,
    /// Advertise and serve `/Bulk` with these limits.
    pub bulk: Option<BulkSupport>,
}

/// One request as the fake SCIM service saw it, logged after it was answered.
#[derive(Clone, Debug)]
pub struct ScimRequest {
    /// HTTP method.
    pub method: String,
    /// Path after the base, e.g. `/Users/abc`.
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// Parsed JSON body, if any.
    pub body: Option<serde_json::Value>,
    /// Status answered.
    pub status: u16,
    /// First path segment: `Users`, `Groups`, `Bulk`, `ServiceProviderConfig`, ...
    pub resource_type: Option<String>,
    /// Second path segment, or the new id for a successful POST.
    pub resource_id: Option<String>,
}

/// A SCIM error answer (RFC 7644 §3.12).
#[derive(Debug)]
pub(crate) struct ScimError {
    pub(crate) status: u16,
    pub(crate) scim_type: Option<&'static str>,
    pub(crate) detail: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl ScimError {
    /// An error with status, optional scimType and detail.
    pub(crate) fn new(
        status: u16,
        scim_type: Option<&'static str>,
        detail: impl Into<String>,
    ) -> ScimError {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
            headers: vec![],
        }
    }

    /// The error body; `status` is a string as the RFC requires.
    pub(crate) fn body(&self) -> Value {
        let mut b = json!({"schemas": [ERR_SCHEMA], "status": self.status.to_string(), "detail": self.detail});
        if let Some(t) = self.scim_type {
            b["scimType"] = json!(t);
        }
        b
    }
}

/// The two resource collections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Users,
    Groups,
}

impl Kind {
    /// From a path segment.
    pub(crate) fn from_segment(s: &str) -> Option<Kind> {
        match s {
            "Users" => Some(Kind::Users),
            "Groups" => Some(Kind::Groups),
            _ => None,
        }
    }

    /// Core schema URN of the collection.
    pub(crate) fn schema(self) -> &'static str {
        match self {
            Kind::Users => USER_SCHEMA,
            Kind::Groups => GROUP_SCHEMA,
        }
    }

    /// Path segment of the collection.
    pub(crate) fn segment(self) -> &'static str {
        match self {
            Kind::Users => "Users",
            Kind::Groups => "Groups",
        }
    }

    /// The attribute that must be unique (userName / displayName).
    pub(crate) fn name_attr(self) -> &'static str {
        match self {
            Kind::Users => "userName",
            Kind::Groups => "displayName",
        }
    }
}

impl ScimSim {
    /// Starts the fake on `127.0.0.1:0` with a random JWT-looking bearer token.
    pub async fn start() -> std::io::Result<ScimSim> {
        let listener = Server::bind().await?;
        let base_url = format!("http://{}{BASE_PATH}", listener.local_addr()?);
        let shared = Arc::new(ScimShared {
            store: Mutex::new(Store::new(0x5C1A_0002, base_url)),
        });
        let router = crate::sim::scim_http::router(shared.clone());
        let server = Server::spawn(listener, router)?;
        Ok(ScimSim {
            inner: Arc::new(Inner { shared, server }),
        })
    }

    fn s(&self) -> std::sync::MutexGuard<'_, Store> {
        lock(&self.inner.shared.store)
    }

    /// `http://127.0.0.1:PORT/scim/api/v2`.
    pub fn base_url(&self) -> String {
        self.s().base_url.clone()
    }

    /// Stops the server now (otherwise it stops when the last clone is dropped).
    pub fn shutdown(&self) {
        self.inner.server.stop();
    }

    /// The bearer token every request must carry.
    pub fn token(&self) -> String {
        self.s().token.clone()
    }

    /// All users, in creation order.
    pub fn users(&self) -> Vec<Value> {
        self.s().all(Kind::Users)
    }

    /// All groups, in creation order.
    pub fn groups(&self) -> Vec<Value> {
        self.s().all(Kind::Groups)
    }

    /// User by userName, case-insensitive.
    pub fn find_user(&self, user_name: &str) -> Option<Value> {
        self.s().find(Kind::Users, user_name)
    }

    /// Group by displayName, case-insensitive.
    pub fn find_group(&self, display_name: &str) -> Option<Value> {
        self.s().find(Kind::Groups, display_name)
    }

    /// Creates a user directly (pre-existing data for adoption tests); returns its id.
    /// An invalid resource is stored without validation.
    pub fn seed_user(&self, resource: Value) -> String {
        self.s().seed(Kind::Users, resource)
    }

    /// Creates a group directly; returns its id.
    pub fn seed_group(&self, resource: Value) -> String {
        self.s().seed(Kind::Groups, resource)
    }

    /// Replaces the fault settings.
    pub fn set_faults(&self, f: ScimFaults) {
        self.s().faults = f;
    }

    /// Current fault settings.
    pub fn faults(&self) -> ScimFaults {
        self.s().faults.clone()
    }

    /// Every request answered so far.
    pub fn request_log(&self) -> Vec<ScimRequest> {
        self.s().log.clone()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.s().log.clear()
    }

    /// POST/PUT/PATCH/DELETE requests on Users/Groups in the log (whatever their status).
    pub fn write_count(&self) -> usize {
        self.s()
            .log
            .iter()
            .filter(|r| matches!(r.resource_type.as_deref(), Some("Users" | "Groups")))
            .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
            .count()
    }
}
