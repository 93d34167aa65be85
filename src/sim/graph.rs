//! Fake Microsoft identity platform + Microsoft Graph v1.0 subset: the public handle and the
//! tenant model (users, groups, memberships, app assignments and the change log that feeds
//! delta rounds). HTTP handling lives in `graph_http`, delta paging in `graph_delta`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::sim::graph_tenant::Tenant;
use crate::sim::{lock, Server};

/// Default access-token lifetime in seconds, as Entra issues it.
pub(crate) const DEFAULT_TOKEN_TTL: u64 = 3599;

/// Handle on a running fake Entra tenant; cheap to clone, the server stops with the last clone.
#[derive(Clone)]
pub struct GraphSim {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    server: Server,
}

/// State shared between the handle and the HTTP handlers.
pub(crate) struct Shared {
    /// `http://127.0.0.1:PORT`, used in nextLink/deltaLink URLs.
    pub(crate) base_url: String,
    /// Everything mutable, behind one lock (never held across an await).
    pub(crate) tenant: Mutex<Tenant>,
}

/// How `expire_delta_links` makes previously issued delta/skip tokens fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaExpiry {
    /// Synchronization reset: `410 Gone`, code `resyncRequired`, `Location` with an empty `$deltatoken`.
    Gone410,
    /// Expired token: `400`, code `syncStateNotFound`.
    SyncStateNotFound400,
}

/// Faults injected into the fake Graph; probabilities are drawn from a seeded PRNG.
#[derive(Clone, Debug, Default)]
pub struct GraphFaults {
    /// Probability that a `/v1.0` request is answered `429` with `Retry-After`.
    pub rate_429: f64,
    /// Probability that a `/v1.0` request is answered `503` with `Retry-After`.
    pub rate_503: f64,
    /// Value of the `Retry-After` header on injected 429/503 answers.
    pub retry_after_secs: u64,
    /// Lifetime of newly issued access tokens (default 3599 s); `Some(0)` issues dead tokens.
    pub token_ttl_secs: Option<u64>,
    /// Serve N delta pages, then answer 500 to every further nextLink page (mid-read failure).
    pub fail_delta_after_pages: Option<usize>,
    /// Answer each request this long after it arrived (the fake's own work included).
    pub latency_ms: u64,
    /// Entries per delta page for users and groups (defaults 4 and 2); member slices stay at 5.
    pub page_size: Option<usize>,
    /// Token endpoint answers 401 invalid_client (AADSTS7000215) as if the secret were wrong.
    pub reject_secret: bool,
}

/// One request as the fake Graph saw it, for assertions about client behaviour.
#[derive(Clone, Debug)]
pub struct GraphRequest {
    /// HTTP method.
    pub method: String,
    /// URL path, e.g. `/v1.0/users/delta`.
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// Status code answered.
    pub status: u16,
    /// Whether an `Authorization` header was sent.
    pub authorization_present: bool,
    /// The `Prefer` header, if any.
    pub prefer: Option<String>,
}

impl GraphSim {
    /// Starts the fake tenant on `127.0.0.1:0` on the current tokio runtime.
    pub async fn start() -> std::io::Result<GraphSim> {
        let listener = Server::bind().await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            base_url,
            tenant: Mutex::new(Tenant::new(0x6A9F_5EED)),
        });
        let router = crate::sim::graph_http::router(shared.clone());
        let server = Server::spawn(listener, router)?;
        Ok(GraphSim {
            inner: Arc::new(Inner { shared, server }),
        })
    }

    fn t(&self) -> std::sync::MutexGuard<'_, Tenant> {
        lock(&self.inner.shared.tenant)
    }

    /// `http://127.0.0.1:PORT`: both the authority URL and the Graph URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.server.addr())
    }

    /// Stops the server now (otherwise it stops when the last clone is dropped).
    pub fn shutdown(&self) {
        self.inner.server.stop();
    }

    /// Directory (tenant) id accepted by the token endpoint.
    pub fn tenant_id(&self) -> String {
        self.t().tenant_id.clone()
    }

    /// Application (client) id of the syncing app; also the enterprise app's `appId`.
    pub fn client_id(&self) -> String {
        self.t().client_id.clone()
    }

    /// The one valid client secret.
    pub fn client_secret(&self) -> String {
        self.t().client_secret.clone()
    }

    /// Object id of the enterprise app's service principal.
    pub fn service_principal_id(&self) -> String {
        self.t().sp_id.clone()
    }

    /// Creates a user (defaults: displayName and mailNickname from the UPN, enabled) and
    /// returns its object id. A `manager` prop (an id) sets the manager relationship.
    pub fn add_user(&self, upn: &str, props: Value) -> String {
        self.t().add_user(upn, props)
    }

    /// Partial update: given props are set, `null` clears; a `manager` key sets/clears the manager.
    pub fn update_user(&self, id: &str, props: Value) {
        self.t().update_user(id, props)
    }

    /// Sets or clears the manager relationship (tracked as `manager@delta`).
    pub fn set_manager(&self, id: &str, manager_id: Option<&str>) {
        self.t().set_manager(id, manager_id)
    }

    /// `accountEnabled = false`.
    pub fn disable_user(&self, id: &str) {
        self.t().update_user(id, json!({"accountEnabled": false}))
    }

    /// `accountEnabled = true`.
    pub fn enable_user(&self, id: &str) {
        self.t().update_user(id, json!({"accountEnabled": true}))
    }

    /// Soft delete (`@removed changed`, memberships kept) or hard delete (`deleted`, removed
    /// from groups, assignments and as manager). Hard-deleting a soft-deleted user purges it.
    pub fn delete_user(&self, id: &str, hard: bool) {
        self.t().delete_user(id, hard)
    }

    /// Restores a soft-deleted user; it reappears in delta as a new object, and its kept
    /// memberships reappear as `members@delta` additions (they were hidden while deleted).
    pub fn restore_user(&self, id: &str) {
        self.t().restore_user(id)
    }

    /// Creates a security group with the given direct members; returns its object id.
    pub fn add_group(&self, display_name: &str, members: &[&str]) -> String {
        self.t().add_group(display_name, members)
    }

    /// Changes a group's displayName.
    pub fn rename_group(&self, id: &str, name: &str) {
        self.t().update_group(id, json!({ "displayName": name }))
    }

    /// Hard-deletes a group (security groups skip the recycle bin).
    pub fn delete_group(&self, id: &str) {
        self.t().delete_group(id)
    }

    /// Adds a user or group as a direct member.
    pub fn add_member(&self, group_id: &str, member_id: &str) {
        self.t().add_member(group_id, member_id)
    }

    /// Removes a direct member.
    pub fn remove_member(&self, group_id: &str, member_id: &str) {
        self.t().remove_member(group_id, member_id)
    }

    /// Assigns a user or group to the enterprise app (default access role).
    pub fn assign(&self, principal_id: &str) {
        self.t().assign(principal_id)
    }

    /// Removes every assignment of the principal.
    pub fn unassign(&self, principal_id: &str) {
        self.t()
            .assignments
            .retain(|a| a.principal_id != principal_id)
    }

    /// Makes every delta and skip token issued so far fail the given way.
    pub fn expire_delta_links(&self, how: DeltaExpiry) {
        let mut t = self.t();
        for info in t.delta_tokens.values_mut() {
            info.expired = Some(how);
        }
        for page in t.pages.values_mut() {
            page.info.expired = Some(how);
        }
    }

    /// Replaces the fault settings (and restarts the `fail_delta_after_pages` count).
    pub fn set_faults(&self, f: GraphFaults) {
        let mut t = self.t();
        t.faults = f;
        t.delta_pages_served = 0;
    }

    /// Current fault settings.
    pub fn faults(&self) -> GraphFaults {
        self.t().faults.clone()
    }

    /// Every request answered so far (token endpoint included).
    pub fn request_log(&self) -> Vec<GraphRequest> {
        self.t().log.clone()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.t().log.clear()
    }

    /// Every access token ever issued (secret-leak tests search logs for these).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.t().issued.clone()
    }

    /// Current props of a user (live or soft-deleted) including `id` and, if set, `manager`.
    pub fn user(&self, id: &str) -> Option<Value> {
        let t = self.t();
        let u = t.users.get(id)?;
        let mut m = u.props.clone();
        m.insert("id".into(), json!(id));
        if let Some(mgr) = &u.manager {
            m.insert("manager".into(), json!(mgr));
        }
        Some(Value::Object(m))
    }

    /// Ids of live (not soft-deleted) users, in creation order.
    pub fn user_ids(&self) -> Vec<String> {
        let t = self.t();
        t.order
            .iter()
            .filter(|id| t.users.get(*id).is_some_and(|u| !u.deleted))
            .cloned()
            .collect()
    }

    /// Ids of existing groups, in creation order.
    pub fn group_ids(&self) -> Vec<String> {
        let t = self.t();
        t.order
            .iter()
            .filter(|id| t.groups.contains_key(*id))
            .cloned()
            .collect()
    }

    /// Direct members of a group as stored (soft-deleted users included, as Entra keeps them).
    pub fn group_members(&self, group_id: &str) -> Vec<String> {
        self.t()
            .groups
            .get(group_id)
            .map(|g| g.members.clone())
            .unwrap_or_default()
    }

    /// What a correct sync should provision: (in-scope live user ids, assigned group ids).
    /// Entra rule: directly assigned users + DIRECT user members of assigned groups (no nesting).
    pub fn expected_scope(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let t = self.t();
        let live = |id: &str| t.users.get(id).is_some_and(|u| !u.deleted);
        let (mut users, mut groups) = (BTreeSet::new(), BTreeSet::new());
        for a in &t.assignments {
            if live(&a.principal_id) {
                users.insert(a.principal_id.clone());
            } else if let Some(g) = t.groups.get(&a.principal_id) {
                groups.insert(a.principal_id.clone());
                users.extend(g.members.iter().filter(|m| live(m)).cloned());
            }
        }
        (users, groups)
    }

    /// Number of live (not soft-deleted) users.
    pub fn user_count(&self) -> usize {
        self.t().users.values().filter(|u| !u.deleted).count()
    }
}
