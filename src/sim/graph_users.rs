//! `/v1.0/users/{id | userPrincipalName}` and its relationships in the fake tenant: the
//! user itself (`$select`), `memberOf` (direct groups), `transitiveMemberOf` (groups
//! through nesting) and `manager` (404 when none) — what provisioning on demand reads.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::sim::graph_delta::{parse_select, project};
use crate::sim::graph_http::{bad_segment, find_user, not_found, paged, typed, Reply};
use crate::sim::graph_tenant::{Res, Tenant};

/// Routes `users/{key}` and `users/{key}/{relationship}` (`p` starts at `users`).
pub(crate) fn user(
    t: &Tenant,
    base: &str,
    p: &[String],
    q: &BTreeMap<String, String>,
    link_base: &str,
) -> Reply {
    let Some(uid) = find_user(t, &p[1]) else {
        return not_found(&p[1]);
    };
    let select = match parse_select(q, Res::Users, false) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Some(rel) = p.get(2) else {
        let props = t
            .users
            .get(&uid)
            .map(|u| u.props.clone())
            .unwrap_or_default();
        let mut v = project(Res::Users, &uid, &props, select.as_ref());
        let ctx = format!("{base}/v1.0/$metadata#users/$entity");
        v.insert("@odata.context".into(), json!(ctx));
        return Reply::ok(Value::Object(v));
    };
    let groups: Vec<&String> = match rel.to_ascii_lowercase().as_str() {
        "memberof" => t
            .order
            .iter()
            .filter(|gid| t.groups.get(*gid).is_some_and(|g| g.members.contains(&uid)))
            .collect(),
        "transitivememberof" => {
            let all = transitive_groups(t, &uid);
            t.order.iter().filter(|g| all.contains(*g)).collect()
        }
        "manager" => return manager(t, base, &uid),
        _ => return bad_segment(rel),
    };
    let vals: Vec<Value> = groups
        .into_iter()
        .filter_map(|gid| t.groups.get(gid).map(|g| (gid, g)))
        .map(|(gid, g)| typed(project(Res::Groups, gid, &g.props, None), "group"))
        .collect();
    paged(vals, q, base, link_base, "directoryObjects")
}

/// Every group that contains `uid` directly or through nested groups (cycle-safe).
fn transitive_groups(t: &Tenant, uid: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut todo = vec![uid.to_string()];
    while let Some(member) = todo.pop() {
        for (gid, g) in &t.groups {
            if g.members.contains(&member) && found.insert(gid.clone()) {
                todo.push(gid.clone());
            }
        }
    }
    found
}

/// `GET /users/{id}/manager`: the manager as a directoryObject, or 404 when none is set.
fn manager(t: &Tenant, base: &str, uid: &str) -> Reply {
    let m = t.users.get(uid).and_then(|u| u.manager.clone());
    let Some((mid, mu)) = m.and_then(|m| t.users.get(&m).map(|u| (m, u))) else {
        return not_found("manager");
    };
    let mut v = project(Res::Users, &mid, &mu.props, None);
    v.insert(
        "@odata.context".into(),
        json!(format!("{base}/v1.0/$metadata#directoryObjects/$entity")),
    );
    Reply::ok(typed(v, "user"))
}
