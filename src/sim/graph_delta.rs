//! Delta rounds for `/users/delta` and `/groups/delta`: projections honouring `$select`, the
//! initial round (all current objects, empty page, split `members@delta`), change rounds replayed
//! from the change log, pagination with opaque skip/delta tokens, and token expiry answers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::sim::graph::DeltaExpiry;
use crate::sim::graph_http::{gerr, Reply};
use crate::sim::graph_tenant::{Change, MemberRef, Page, Res, RoundInfo, Tenant, User};

/// User properties the fake knows (Graph v1.0 `user`, the subset delta can track).
pub(crate) const USER_PROPS: &[&str] = &[
    "accountEnabled",
    "ageGroup",
    "businessPhones",
    "city",
    "companyName",
    "country",
    "createdDateTime",
    "creationType",
    "department",
    "displayName",
    "employeeHireDate",
    "employeeId",
    "employeeLeaveDateTime",
    "employeeOrgData",
    "employeeType",
    "externalUserState",
    "faxNumber",
    "givenName",
    "identities",
    "imAddresses",
    "jobTitle",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesImmutableId",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "postalCode",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "showInAddressList",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
];

/// Group properties the fake knows.
pub(crate) const GROUP_PROPS: &[&str] = &[
    "classification",
    "createdDateTime",
    "description",
    "displayName",
    "groupTypes",
    "isAssignableToRole",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "onPremisesSyncEnabled",
    "proxyAddresses",
    "securityEnabled",
    "visibility",
];

const COLLECTIONS: &[&str] = &[
    "businessPhones",
    "otherMails",
    "proxyAddresses",
    "imAddresses",
    "identities",
    "groupTypes",
];
const USERS_PER_PAGE: usize = 4;
const GROUPS_PER_PAGE: usize = 2;
/// Members per `members@delta` slice.
pub(crate) const MEMBER_SLICE: usize = 5;
const SYNC_STATE_MSG: &str = "The sync state generation is not found. The delta token is expired and data must be synchronized again.";

fn known(res: Res) -> &'static [&'static str] {
    match res {
        Res::Users => USER_PROPS,
        Res::Groups => GROUP_PROPS,
    }
}

fn type_name(res: Res) -> &'static str {
    match res {
        Res::Users => "microsoft.graph.user",
        Res::Groups => "microsoft.graph.group",
    }
}

/// Parses `$select` into lower-cased names; unknown names are a 400 as on real Graph.
pub(crate) fn parse_select(
    q: &BTreeMap<String, String>,
    res: Res,
    delta: bool,
) -> Result<Option<BTreeSet<String>>, Reply> {
    let Some(raw) = q.get("$select") else {
        return Ok(None);
    };
    let mut out = BTreeSet::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let l = name.to_ascii_lowercase();
        let relation = match res {
            Res::Users => l == "manager",
            Res::Groups => l == "members",
        };
        let ok = l == "id"
            || (relation && delta)
            || known(res).iter().any(|k| k.eq_ignore_ascii_case(&l))
            || (res == Res::Users && l.starts_with("extension_"));
        if !ok {
            let msg = format!(
                "Could not find a property named '{name}' on type '{}'.",
                type_name(res)
            );
            return Err(gerr(400, "Request_BadRequest", &msg));
        }
        out.insert(l);
    }
    Ok(Some(out))
}

fn wants(select: Option<&BTreeSet<String>>, name: &str) -> bool {
    select.is_none_or(|s| s.contains(&name.to_ascii_lowercase()))
}

/// Value Graph returns for a selected property that was never set.
fn unset_value(name: &str) -> Value {
    if name.eq_ignore_ascii_case("onPremisesExtensionAttributes") {
        let m: Map<String, Value> = (1..=15)
            .map(|i| (format!("extensionAttribute{i}"), Value::Null))
            .collect();
        return Value::Object(m);
    }
    if COLLECTIONS.iter().any(|c| c.eq_ignore_ascii_case(name)) {
        return json!([]);
    }
    Value::Null
}

/// Full representation of an object: all stored props, or exactly the selected ones (unset = null).
pub(crate) fn project(
    res: Res,
    id: &str,
    props: &Map<String, Value>,
    select: Option<&BTreeSet<String>>,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    match select {
        None => out.extend(props.iter().map(|(k, v)| (k.clone(), v.clone()))),
        Some(sel) => {
            for s in sel {
                if s == "id" || s == "manager" || s == "members" {
                    continue;
                }
                let stored = props.iter().find(|(k, _)| k.eq_ignore_ascii_case(s));
                match stored {
                    Some((k, v)) => out.insert(k.clone(), v.clone()),
                    None => {
                        let name = known(res)
                            .iter()
                            .find(|k| k.eq_ignore_ascii_case(s))
                            .map_or(s.clone(), |k| k.to_string());
                        let v = unset_value(&name);
                        out.insert(name, v)
                    }
                };
            }
        }
    }
    out
}

fn member_ref(r: &MemberRef, removed: bool) -> Value {
    let t = if r.is_group {
        "#microsoft.graph.group"
    } else {
        "#microsoft.graph.user"
    };
    let mut v = json!({"@odata.type": t, "id": r.id});
    if removed {
        v["@removed"] = json!({"reason": "deleted"});
    }
    v
}

fn user_ref(id: &str, removed: bool) -> Value {
    let r = MemberRef {
        id: id.to_string(),
        is_group: false,
    };
    member_ref(&r, removed)
}

/// Pushes one entry per slice of member references (or none when the list is empty).
fn push_member_slices(items: &mut Vec<Value>, base: &Map<String, Value>, refs: Vec<Value>) {
    for chunk in refs.chunks(MEMBER_SLICE) {
        let mut e = base.clone();
        e.insert("members@delta".into(), Value::Array(chunk.to_vec()));
        items.push(Value::Object(e));
    }
}

fn user_full(id: &str, u: &User, select: Option<&BTreeSet<String>>) -> Value {
    let mut e = project(Res::Users, id, &u.props, select);
    if let Some(m) = &u.manager {
        if wants(select, "manager") {
            e.insert("manager@delta".into(), json!([user_ref(m, false)]));
        }
    }
    Value::Object(e)
}

impl Tenant {
    fn full_items(&self, res: Res, info: &RoundInfo) -> Vec<Value> {
        let select = info.select.as_ref();
        let mut items = vec![];
        for id in &self.order {
            if info.filter.as_ref().is_some_and(|f| !f.contains(id)) {
                continue;
            }
            match res {
                Res::Users => match self.users.get(id) {
                    Some(u) if !u.deleted => items.push(user_full(id, u, select)),
                    _ => {}
                },
                Res::Groups => {
                    let Some(g) = self.groups.get(id) else {
                        continue;
                    };
                    let base = project(Res::Groups, id, &g.props, select);
                    let visible = |m: &&String| {
                        self.groups.contains_key(*m)
                            || self.users.get(*m).is_some_and(|u| !u.deleted)
                    };
                    let refs: Vec<Value> = g
                        .members
                        .iter()
                        .filter(visible)
                        .map(|m| member_ref(&self.ref_of(m), false))
                        .collect();
                    if wants(select, "members") && !refs.is_empty() {
                        push_member_slices(&mut items, &base, refs);
                    } else {
                        items.push(Value::Object(base));
                    }
                }
            }
        }
        items
    }

    fn ref_of(&self, id: &str) -> MemberRef {
        MemberRef {
            id: id.to_string(),
            is_group: self.groups.contains_key(id),
        }
    }

    fn change_items(&self, info: &RoundInfo) -> Vec<Value> {
        let select = info.select.as_ref();
        let mut items = vec![];
        for ev in self
            .events
            .iter()
            .filter(|e| e.seq > info.seq && e.res == info.res)
        {
            if info.filter.as_ref().is_some_and(|f| !f.contains(&ev.id)) {
                continue;
            }
            let id = ev.id.as_str();
            match &ev.change {
                Change::Full(props, manager) => {
                    let mut e = project(ev.res, id, props, select);
                    if let (Some(m), true) = (manager, wants(select, "manager")) {
                        e.insert("manager@delta".into(), json!([user_ref(m, false)]));
                    }
                    items.push(Value::Object(e));
                }
                Change::Update(changed) => {
                    let mut e = Map::new();
                    e.insert("id".into(), json!(id));
                    for (k, v) in changed.iter().filter(|(k, _)| wants(select, k)) {
                        e.insert(k.clone(), v.clone());
                    }
                    if e.len() > 1 {
                        items.push(Value::Object(e));
                    }
                }
                Change::Manager { new, old } => {
                    if !wants(select, "manager") {
                        continue;
                    }
                    let r = match (new, old) {
                        (Some(n), _) => user_ref(n, false),
                        (None, Some(o)) => user_ref(o, true),
                        (None, None) => continue,
                    };
                    items.push(json!({"id": id, "manager@delta": [r]}));
                }
                Change::Removed(reason) => {
                    items.push(json!({"id": id, "@removed": {"reason": reason}}));
                }
                Change::Members { added, removed } => {
                    if !wants(select, "members") {
                        continue;
                    }
                    let refs: Vec<Value> = added
                        .iter()
                        .map(|r| member_ref(r, false))
                        .chain(removed.iter().map(|r| member_ref(r, true)))
                        .collect();
                    let mut base = Map::new();
                    base.insert("id".into(), json!(id));
                    push_member_slices(&mut items, &base, refs);
                }
            }
        }
        items
    }

    /// Splits a round into pages, stores all but the first, mints the next delta token and
    /// returns the first page.
    fn paginate(&mut self, items: Vec<Value>, info: RoundInfo, link_base: &str) -> Value {
        let default = match info.res {
            Res::Users => USERS_PER_PAGE,
            Res::Groups => GROUPS_PER_PAGE,
        };
        let size = self.faults.page_size.unwrap_or(default).max(1);
        let mut chunks: Vec<Vec<Value>> = items.chunks(size).map(<[Value]>::to_vec).collect();
        if chunks.is_empty() {
            chunks.push(vec![]);
        }
        // Any round with data gets an empty page with a nextLink after its first page, and the
        // deltaLink comes on a later page: clients must not stop at an empty page.
        if chunks.len() == 1 && !chunks[0].is_empty() {
            chunks.push(vec![]);
        }
        if chunks.len() > 1 {
            chunks.insert(1, vec![]);
        }
        let dtok = self.rng.token(48);
        let mut round = info.clone();
        round.seq = self.seq;
        self.delta_tokens.insert(dtok.clone(), round.clone());
        let ctx = format!("{}#{}", metadata_base(link_base), info.res.segment());
        let toks: Vec<String> = chunks.iter().map(|_| self.rng.token(48)).collect();
        let mut first = Value::Null;
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut body = json!({"@odata.context": ctx, "value": chunk});
            if i + 1 < n {
                body["@odata.nextLink"] = json!(format!("{link_base}?$skiptoken={}", toks[i + 1]));
            } else {
                body["@odata.deltaLink"] = json!(format!("{link_base}?$deltatoken={dtok}"));
            }
            if i == 0 {
                first = body;
            } else {
                let page = Page {
                    info: round.clone(),
                    body,
                };
                self.pages.insert(toks[i].clone(), page);
            }
        }
        first
    }
}

fn metadata_base(link_base: &str) -> String {
    match link_base.find("/v1.0/") {
        Some(i) => format!("{}/v1.0/$metadata", &link_base[..i]),
        None => format!("{link_base}/$metadata"),
    }
}

/// Parses `id eq '..' or id eq '..'` (at most 50 ids); anything else is unsupported.
fn parse_id_filter(expr: &str) -> Option<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for part in expr.split(" or ") {
        let p = part.trim();
        let rest = p.get(..6).filter(|h| h.eq_ignore_ascii_case("id eq "))?;
        let v = p[rest.len()..].trim();
        let inner = v.strip_prefix('\'')?.strip_suffix('\'')?;
        if inner.is_empty() || inner.contains('\'') {
            return None;
        }
        ids.insert(inner.to_string());
    }
    (ids.len() <= 50).then_some(ids)
}

fn expired_reply(how: DeltaExpiry, info: &RoundInfo, base: &str) -> Reply {
    match how {
        DeltaExpiry::SyncStateNotFound400 => gerr(400, "syncStateNotFound", SYNC_STATE_MSG),
        DeltaExpiry::Gone410 => {
            let msg = "Resync required. Replace any local cached data with a full delta round using an empty $deltatoken.";
            let mut r = gerr(410, "resyncRequired", msg);
            let loc = format!(
                "{base}/v1.0/{}/delta?{}$deltatoken=",
                info.res.segment(),
                info.origin_query
            );
            r.headers.push(("Location".into(), loc));
            r
        }
    }
}

/// Re-encodes the initial query's `$select`/`$filter` for a 410 `Location`.
fn origin_query(q: &BTreeMap<String, String>) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for k in ["$select", "$filter"] {
        if let Some(v) = q.get(k) {
            s.append_pair(k, v);
        }
    }
    let out = s.finish().replace("%24", "$");
    if out.is_empty() {
        out
    } else {
        format!("{out}&")
    }
}

/// Answers one delta request (initial, nextLink page, deltaLink, `latest`).
pub(crate) fn delta(
    t: &mut Tenant,
    base: &str,
    res: Res,
    link_base: &str,
    q: &BTreeMap<String, String>,
) -> Reply {
    for bad in ["$expand", "$orderby", "$search"] {
        if q.contains_key(bad) {
            return gerr(400, "Request_UnsupportedQuery", "Unsupported Query.");
        }
    }
    if let Some(tok) = q.get("$skiptoken") {
        if q.contains_key("$select") || q.contains_key("$filter") {
            return gerr(400, "Request_UnsupportedQuery", "Unsupported Query.");
        }
        let Some(page) = t.pages.get(tok).filter(|p| p.info.res == res) else {
            return gerr(400, "Request_BadRequest", "Invalid skip token.");
        };
        if let Some(how) = page.info.expired {
            return expired_reply(how, &page.info, base);
        }
        if t.faults
            .fail_delta_after_pages
            .is_some_and(|n| t.delta_pages_served >= n)
        {
            return gerr(
                500,
                "generalException",
                "An internal server error occurred.",
            );
        }
        let body = page.body.clone();
        t.delta_pages_served += 1;
        return Reply::ok(body);
    }
    let dtok = q.get("$deltatoken").or_else(|| q.get("$deltaToken"));
    let body = match dtok.map(String::as_str) {
        Some(tok) if tok.eq_ignore_ascii_case("latest") => {
            let select = match parse_select(q, res, true) {
                Ok(s) => s,
                Err(r) => return r,
            };
            let info = new_round(res, t.seq, select, None, q);
            t.paginate(vec![], info, link_base)
        }
        Some(tok) if !tok.is_empty() => {
            let Some(info) = t.delta_tokens.get(tok).filter(|i| i.res == res).cloned() else {
                return gerr(400, "syncStateNotFound", SYNC_STATE_MSG);
            };
            if let Some(how) = info.expired {
                return expired_reply(how, &info, base);
            }
            let items = t.change_items(&info);
            t.paginate(items, info, link_base)
        }
        _ => {
            let select = match parse_select(q, res, true) {
                Ok(s) => s,
                Err(r) => return r,
            };
            let filter = match q.get("$filter") {
                None => None,
                Some(f) => match parse_id_filter(f) {
                    Some(ids) => Some(ids),
                    None => return gerr(400, "Request_UnsupportedQuery", "Unsupported Query."),
                },
            };
            let info = new_round(res, t.seq, select, filter, q);
            let items = t.full_items(res, &info);
            t.paginate(items, info, link_base)
        }
    };
    t.delta_pages_served += 1;
    Reply::ok(body)
}

fn new_round(
    res: Res,
    seq: u64,
    select: Option<BTreeSet<String>>,
    filter: Option<BTreeSet<String>>,
    q: &BTreeMap<String, String>,
) -> RoundInfo {
    RoundInfo {
        res,
        seq,
        select,
        filter,
        origin_query: origin_query(q),
        expired: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_filter_accepts_or_list_and_rejects_other_shapes() {
        let f = parse_id_filter("id eq 'a' or id eq 'b'");
        assert_eq!(f.map(|s| s.len()), Some(2));
        assert!(parse_id_filter("displayName eq 'x'").is_none());
        let many: Vec<String> = (0..51).map(|i| format!("id eq '{i}'")).collect();
        assert!(parse_id_filter(&many.join(" or ")).is_none());
    }

    #[test]
    fn select_rejects_unknown_property() {
        let mut q = BTreeMap::new();
        q.insert("$select".to_string(), "displayName,bogusProp".to_string());
        assert!(parse_select(&q, Res::Users, true).is_err());
        q.insert(
            "$select".to_string(),
            "displayName,extension_abc_x,manager".to_string(),
        );
        assert_eq!(
            parse_select(&q, Res::Users, true)
                .ok()
                .flatten()
                .map(|s| s.len()),
            Some(3)
        );
    }
}
