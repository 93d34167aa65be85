//! The fake tenant's model: users, groups, direct memberships, app-role assignments, and the
//! change log that delta rounds replay. Mutations here are what `GraphSim`'s API calls.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::sim::graph::{DeltaExpiry, GraphFaults, GraphRequest};
use crate::sim::Rng;

/// Which delta collection an event or token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Res {
    Users,
    Groups,
}

impl Res {
    /// Path segment of the collection.
    pub(crate) fn segment(self) -> &'static str {
        match self {
            Res::Users => "users",
            Res::Groups => "groups",
        }
    }
}

/// A directory user; soft-deleted users stay here with `deleted = true`.
pub(crate) struct User {
    pub(crate) props: Map<String, Value>,
    pub(crate) manager: Option<String>,
    pub(crate) deleted: bool,
}

/// A security group and its direct members (user or group ids).
pub(crate) struct Group {
    pub(crate) props: Map<String, Value>,
    pub(crate) members: Vec<String>,
}

/// A member reference as it was when the change happened (type survives deletion).
#[derive(Clone)]
pub(crate) struct MemberRef {
    pub(crate) id: String,
    pub(crate) is_group: bool,
}

/// What happened to one object; delta rounds replay these in order.
pub(crate) enum Change {
    /// Created or restored: full snapshot of props (+ manager for users).
    Full(Map<String, Value>, Option<String>),
    /// Partial update; `null` means cleared.
    Update(Map<String, Value>),
    /// Manager relationship set or cleared.
    Manager {
        new: Option<String>,
        old: Option<String>,
    },
    /// Soft (`changed`) or hard (`deleted`) removal.
    Removed(&'static str),
    /// Group membership added/removed.
    Members {
        added: Vec<MemberRef>,
        removed: Vec<MemberRef>,
    },
}

/// One entry of the change log.
pub(crate) struct Event {
    pub(crate) seq: u64,
    pub(crate) res: Res,
    pub(crate) id: String,
    pub(crate) change: Change,
}

/// What a delta token or skip token remembers.
#[derive(Clone)]
pub(crate) struct RoundInfo {
    pub(crate) res: Res,
    /// Change-log position the round covered.
    pub(crate) seq: u64,
    /// Lower-cased `$select` names, `None` = everything.
    pub(crate) select: Option<BTreeSet<String>>,
    /// `$filter=id eq ...` ids.
    pub(crate) filter: Option<BTreeSet<String>>,
    /// Original query (without tokens), replayed in a 410 `Location`.
    pub(crate) origin_query: String,
    /// Set by `expire_delta_links`.
    pub(crate) expired: Option<DeltaExpiry>,
}

/// A stored nextLink page of a round.
pub(crate) struct Page {
    pub(crate) info: RoundInfo,
    pub(crate) body: Value,
}

/// An app-role assignment of a user or group to the enterprise app.
pub(crate) struct Assignment {
    pub(crate) id: String,
    pub(crate) principal_id: String,
    pub(crate) principal_type: &'static str,
    pub(crate) created: String,
}

/// The whole fake tenant.
pub(crate) struct Tenant {
    pub(crate) rng: Rng,
    pub(crate) fault_rng: Rng,
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) sp_id: String,
    pub(crate) users: HashMap<String, User>,
    pub(crate) groups: HashMap<String, Group>,
    /// Creation order of users and groups (delta rounds list objects in this order).
    pub(crate) order: Vec<String>,
    pub(crate) assignments: Vec<Assignment>,
    pub(crate) events: Vec<Event>,
    pub(crate) seq: u64,
    pub(crate) delta_tokens: HashMap<String, RoundInfo>,
    pub(crate) pages: HashMap<String, Page>,
    pub(crate) access_tokens: HashMap<String, Instant>,
    pub(crate) issued: Vec<String>,
    pub(crate) log: Vec<GraphRequest>,
    pub(crate) faults: GraphFaults,
    /// Delta pages served since the faults were last set (for `fail_delta_after_pages`).
    pub(crate) delta_pages_served: usize,
}

/// Object props as a map (non-objects become empty).
fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// mailNickname-style alias: alphanumerics only.
fn nickname(s: &str) -> String {
    let n: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(64)
        .collect();
    if n.is_empty() {
        "group".into()
    } else {
        n
    }
}

impl Tenant {
    /// A fresh tenant whose ids and secrets derive from `seed`.
    pub(crate) fn new(seed: u64) -> Tenant {
        let mut rng = Rng::new(seed);
        let tenant_id = rng.uuid();
        let client_id = rng.uuid();
        let sp_id = rng.uuid();
        const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789_-.";
        let tail: String = (0..35)
            .map(|_| CHARS[(rng.next_u64() % CHARS.len() as u64) as usize] as char)
            .collect();
        Tenant {
            fault_rng: Rng::new(seed.wrapping_mul(7919).wrapping_add(1)),
            rng,
            tenant_id,
            client_id,
            client_secret: format!("Fk8Q~{tail}"),
            sp_id,
            users: HashMap::new(),
            groups: HashMap::new(),
            order: Vec::new(),
            assignments: Vec::new(),
            events: Vec::new(),
            seq: 0,
            delta_tokens: HashMap::new(),
            pages: HashMap::new(),
            access_tokens: HashMap::new(),
            issued: Vec::new(),
            log: Vec::new(),
            faults: GraphFaults::default(),
            delta_pages_served: 0,
        }
    }

    fn event(&mut self, res: Res, id: &str, change: Change) {
        self.seq += 1;
        self.events.push(Event {
            seq: self.seq,
            res,
            id: id.to_string(),
            change,
        });
    }

    fn member_ref(&self, id: &str) -> MemberRef {
        MemberRef {
            id: id.to_string(),
            is_group: self.groups.contains_key(id),
        }
    }

    /// See the `GraphSim` method of the same purpose.
    pub(crate) fn add_user(&mut self, upn: &str, props: Value) -> String {
        let id = self.rng.uuid();
        let local = upn.split('@').next().unwrap_or(upn).to_string();
        let mut p = Map::new();
        p.insert("userPrincipalName".into(), json!(upn));
        p.insert("displayName".into(), json!(local));
        p.insert("mailNickname".into(), json!(local));
        p.insert("accountEnabled".into(), json!(true));
        p.insert("userType".into(), json!("Member"));
        p.insert("businessPhones".into(), json!([]));
        let mut manager = None;
        for (k, v) in as_map(props) {
            if k == "manager" {
                manager = v.as_str().map(str::to_string);
            } else if k != "id" {
                p.insert(k, v);
            }
        }
        p.retain(|_, v| !v.is_null());
        self.users.insert(
            id.clone(),
            User {
                props: p.clone(),
                manager: manager.clone(),
                deleted: false,
            },
        );
        self.order.push(id.clone());
        self.event(Res::Users, &id, Change::Full(p, manager));
        id
    }

    /// See the `GraphSim` method of the same purpose.
    pub(crate) fn update_user(&mut self, id: &str, props: Value) {
        let Some(u) = self.users.get_mut(id).filter(|u| !u.deleted) else {
            return;
        };
        let mut changed = Map::new();
        let mut manager = None;
        for (k, v) in as_map(props) {
            if k == "manager" {
                manager = Some(v.as_str().map(str::to_string));
                continue;
            }
            if k == "id" {
                continue;
            }
            if v.is_null() {
                u.props.remove(&k);
            } else {
                u.props.insert(k.clone(), v.clone());
            }
            changed.insert(k, v);
        }
        if !changed.is_empty() {
            self.event(Res::Users, id, Change::Update(changed));
        }
        if let Some(m) = manager {
            self.set_manager(id, m.as_deref());
        }
    }

    /// See the `GraphSim` method of the same purpose.
    pub(crate) fn set_manager(&mut self, id: &str, manager_id: Option<&str>) {
        let Some(u) = self.users.get_mut(id).filter(|u| !u.deleted) else {
            return;
        };
        let old = u.manager.take();
        u.manager = manager_id.map(str::to_string);
        let new = u.manager.clone();
        self.event(Res::Users, id, Change::Manager { new, old });
    }

    /// See the `GraphSim` method of the same purpose.
    pub(crate) fn delete_user(&mut self, id: &str, hard: bool) {
        let Some(u) = self.users.get_mut(id) else {
            return;
        };
        if !hard {
            if !u.deleted {
                u.deleted = true;
                self.event(Res::Users, id, Change::Removed("changed"));
            }
            return;
        }
        self.users.remove(id);
        self.order.retain(|o| o != id);
        self.event(Res::Users, id, Change::Removed("deleted"));
        self.assignments.retain(|a| a.principal_id != id);
        self.drop_from_groups(id, false);
        let reports: Vec<String> = self
            .users
            .iter()
            .filter(|(_, u)| u.manager.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        for r in reports {
            if let Some(u) = self.users.get_mut(&r) {
                u.manager = None;
            }
            let old = Some(id.to_string());
            self.event(Res::Users, &r, Change::Manager { new: None, old });
        }
    }

    /// Removes `id` from every group it is a direct member of, logging membership events.
    fn drop_from_groups(&mut self, id: &str, is_group: bool) {
        let parents: Vec<String> = self
            .order
            .iter()
            .filter(|g| {
                self.groups
                    .get(*g)
                    .is_some_and(|g| g.members.iter().any(|m| m == id))
            })
            .cloned()
            .collect();
        for gid in parents {
            if let Some(g) = self.groups.get_mut(&gid) {
                g.members.retain(|m| m != id);
            }
            let r = MemberRef {
                id: id.to_string(),
                is_group,
            };
            let change = Change::Members {
                added: vec![],
                removed: vec![r],
            };
            self.event(Res::Groups, &gid, change);
        }
    }

    /// See the `GraphSim` method of the same purpose.
    pub(crate) fn restore_user(&mut self, id: &str) {
        let Some(u) = self.users.get_mut(id).filter(|u| u.deleted) else {
            return;
        };
        u.deleted = false;
        let snapshot = Change::Full(u.props.clone(), u.manager.clone());
        self.event(Res::Users, id, snapshot);
        // Memberships were hidden while deleted; they reappear as additions.
        let parents: Vec<String> = self
            .order
            .iter()
            .filter(|g| {
                self.groups
                    .get(*g)
                    .is_some_and(|g| g.members.iter().any(|m| m == id))
            })
            .cloned()
            .collect();
        for gid in parents {
            let added = vec![self.member_ref(id)];
            let change = Change::Members {
                added,
                removed: vec![],
            };
            self.event(Res::Groups, &gid, change);
        }
    }

    /// See the `GraphSim` method of the same purpose.
    pub(crate) fn add_group(&mut self, display_name: &str, members: &[&str]) -> String {
        let id = self.rng.uuid();
        let p = as_map(json!({
            "displayName": display_name,
            "description": null,
            "mailNickname": nickname(display_name),
            "mailEnabled": false,
            "securityEnabled": true,
            "groupTypes": [],
        }));
        self.groups.insert(
            id.clone(),
            Group {
                props: p.clone(),
                members: vec![],
            },
        );
        self.order.push(id.clone());
        self.event(Res::Groups, &id, Change::Full(p, None));
        let mut added = vec![];
        for m in members {
            if self.is_object(m) && *m != id && !added.iter().any(|r: &MemberRef| r.id == *m) {
                added.push(self.member_ref(m));
            }
        }
        if !added.is_empty() {
            if let Some(g) = self.groups.get_mut(&id) {
                g.members = added.iter().map(|r| r.id.clone()).collect();
            }
            let change = Change::Members {
                added,
                removed: vec![],
            };
            self.event(Res::Groups, &id, change);
        }
        id
    }

    fn is_object(&self, id: &str) -> bool {
        self.users.contains_key(id) || self.groups.contains_key(id)
    }

    /// See the `GraphSim` method of the same purpose.
    pub(crate) fn update_group(&mut self, id: &str, props: Value) {
        let Some(g) = self.groups.get_mut(id) else {
            return;
        };
        let changed = as_map(props);
        for (k, v) in &changed {
            g.props.insert(k.clone(), v.clone());
        }
        self.event(Res::Groups, id, Change::Update(changed));
    }

    /// See the `GraphSim` method of the same purpose.
    pub(crate) fn delete_group(&mut self, id: &str) {
        if self.groups.remove(id).is_none() {
            return;
        }
        self.order.retain(|o| o != id);
        self.event(Res::Groups, id, Change::Removed("deleted"));
        self.assignments.retain(|a| a.principal_id != id);
        self.drop_from_groups(id, true);
    }

    /// See the `GraphSim` method of the same purpose.
    pub(crate) fn add_member(&mut self, group_id: &str, member_id: &str) {
        if !self.is_object(member_id) || group_id == member_id {
            return;
        }
        let r = self.member_ref(member_id);
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        if g.members.iter().any(|m| m == member_id) {
            return;
        }
        g.members.push(member_id.to_string());
        let change = Change::Members {
            added: vec![r],
            removed: vec![],
        };
        self.event(Res::Groups, group_id, change);
    }

    /// See the `GraphSim` method of the same purpose.
    pub(crate) fn remove_member(&mut self, group_id: &str, member_id: &str) {
        let r = self.member_ref(member_id);
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        if !g.members.iter().any(|m| m == member_id) {
            return;
        }
        g.members.retain(|m| m != member_id);
        let change = Change::Members {
            added: vec![],
            removed: vec![r],
        };
        self.event(Res::Groups, group_id, change);
    }

    /// See the `GraphSim` method of the same purpose.
    pub(crate) fn assign(&mut self, principal_id: &str) {
        let principal_type = if self.groups.contains_key(principal_id) {
            "Group"
        } else if self.users.get(principal_id).is_some_and(|u| !u.deleted) {
            "User"
        } else {
            return;
        };
        if self
            .assignments
            .iter()
            .any(|a| a.principal_id == principal_id)
        {
            return;
        }
        let id = self.rng.token(32);
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        self.assignments.push(Assignment {
            id,
            principal_id: principal_id.to_string(),
            principal_type,
            created,
        });
    }

    /// Display name of a user or group (for assignment listings).
    pub(crate) fn display_name(&self, id: &str) -> Value {
        let props = self
            .users
            .get(id)
            .map(|u| &u.props)
            .or_else(|| self.groups.get(id).map(|g| &g.props));
        props
            .and_then(|p| p.get("displayName").cloned())
            .unwrap_or(Value::Null)
    }
}
