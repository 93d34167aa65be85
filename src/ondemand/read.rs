//! The Graph reads of provisioning on demand: one user by object id or UPN, its group
//! memberships (direct, or through nesting when `sync.group_members = "transitive"`), its
//! manager, and the app's assignments. Read directly, not through delta: the mirror and
//! the delta links are left exactly as the last cycle left them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::GroupMembers;
use crate::graph::{page_values, GraphClient, GraphError};

/// What Graph says about one user, fresh.
pub struct UserRead {
    pub id: String,
    pub props: Map<String, Value>,
    /// Groups containing the user (id → properties), per `sync.group_members`.
    pub groups: BTreeMap<String, Map<String, Value>>,
    /// The manager's object id, when the mapping sends managers and one is set.
    pub manager: Option<String>,
    pub assigned_users: Vec<String>,
    pub assigned_groups: Vec<String>,
}

/// Why the user could not be read.
pub enum ReadError {
    /// Graph has no such user (404).
    Unknown,
    Graph(GraphError),
}

impl From<GraphError> for ReadError {
    fn from(e: GraphError) -> Self {
        ReadError::Graph(e)
    }
}

fn is_not_found(e: &GraphError) -> bool {
    matches!(e, GraphError::Http { status: 404, .. })
}

/// Percent-encodes one path segment (a UPN may hold `#`, as guests' `…#EXT#@…` do).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reads the user, its groups, its manager and the app's assignments.
pub async fn read_user(
    graph: &GraphClient,
    key: &str,
    user_select: &[String],
    group_select: &[String],
    members: GroupMembers,
    manager: bool,
) -> Result<UserRead, ReadError> {
    // `manager` is a relationship: delta tracks it through $select, a plain GET does not
    let select: Vec<&str> = user_select
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "manager")
        .collect();
    let url = graph.url(&format!(
        "users/{}?$select=id,{}",
        segment(key.trim()),
        select.join(",")
    ));
    let user = match graph.get(&url, false).await {
        Ok(u) => u,
        Err(e) if is_not_found(&e) => return Err(ReadError::Unknown),
        Err(e) => return Err(e.into()),
    };
    let id = user
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(ReadError::Unknown)?;
    let mut props = user.as_object().cloned().unwrap_or_default();
    props.retain(|k, v| k != "id" && !k.contains('@') && !v.is_null());
    let relation = match members {
        GroupMembers::Direct => "memberOf",
        GroupMembers::Transitive => "transitiveMemberOf",
    };
    let select: Vec<&str> = group_select
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "members")
        .collect();
    let mut next = Some(graph.url(&format!(
        "users/{}/{relation}?$select=id,{}",
        segment(&id),
        select.join(",")
    )));
    let mut groups = BTreeMap::new();
    while let Some(url) = next {
        let page = graph.get(&url, false).await?;
        for g in page_values(&page, &url)? {
            let is_group =
                g.get("@odata.type").and_then(Value::as_str) == Some("#microsoft.graph.group");
            if let (true, Some(gid)) = (is_group, g.get("id").and_then(Value::as_str)) {
                let mut p = g.as_object().cloned().unwrap_or_default();
                p.retain(|k, _| k != "id" && !k.contains('@'));
                groups.insert(gid.to_string(), p);
            }
        }
        next = page
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    let manager = if manager {
        let url = graph.url(&format!("users/{}/manager?$select=id", segment(&id)));
        match graph.get(&url, false).await {
            Ok(m) => m.get("id").and_then(Value::as_str).map(str::to_string),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let (mut assigned_users, mut assigned_groups) = (Vec::new(), Vec::new());
    for (pid, kind) in graph.assignments().await? {
        match kind.as_str() {
            "User" => assigned_users.push(pid),
            _ => assigned_groups.push(pid),
        }
    }
    Ok(UserRead {
        id,
        props,
        groups,
        manager,
        assigned_users,
        assigned_groups,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn guest_upns_are_encoded_for_the_path() {
        assert_eq!(
            super::segment("ann_contoso.com#EXT#@x.onmicrosoft.com"),
            "ann_contoso.com%23EXT%23@x.onmicrosoft.com"
        );
        assert_eq!(super::segment("a b/c"), "a%20b%2Fc");
    }
}
