//! One read of the directory: assignments, a users delta round and a groups delta round,
//! applied to the mirror inside one transaction together with the new delta links.

use serde_json::{Map, Value};

use super::{page_values, strip_query, GraphClient, GraphError};
use crate::state::{ReadTxn, State};

/// What a read saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Delta pages fetched.
    pub pages: usize,
    /// User and group entries applied.
    pub entries: usize,
    /// Resources whose stored link was refused, so they were read in full again.
    pub resynced: Vec<&'static str>,
    /// Entries that could not be understood and were skipped.
    pub malformed: usize,
}

/// Which delta round a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    Users,
    Groups,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Users => "users",
            Resource::Groups => "groups",
        }
    }
}

/// Reads assignments and both delta rounds into the mirror; all or nothing.
///
/// `full` ignores stored links. A stored link made with a different `$select` is not
/// reused either (its token would keep tracking the old property set).
pub async fn read_directory(
    client: &GraphClient,
    state: &mut State,
    user_select: &[String],
    group_select: &[String],
    full: bool,
    mut progress: impl FnMut(usize),
) -> Result<ReadStats, GraphError> {
    let users_select = user_select.join(",");
    let groups_select = group_select.join(",");
    let stored = |state: &State, res: &str, select: &str| -> Result<Option<String>, GraphError> {
        Ok(if full {
            None
        } else {
            state
                .delta_link(res)?
                .filter(|(_, s)| s == select)
                .map(|(link, _)| link)
        })
    };
    let users_link = stored(state, "users", &users_select)?;
    let groups_link = stored(state, "groups", &groups_select)?;
    let mut stats = ReadStats::default();
    let tx = state.begin_read()?;
    let rounds = async {
        let rounds = [
            (Resource::Users, users_link, users_select),
            (Resource::Groups, groups_link, groups_select),
        ];
        for (res, link, select) in rounds {
            round(client, &tx, res, link, &select, &mut stats, &mut progress).await?;
        }
        Ok(())
    };
    // the assignments listing has no delta: read it while the delta rounds run
    let (assignments, ()) = tokio::try_join!(client.assignments(), rounds)?;
    tx.set_assignments(&assignments)?;
    tx.commit()?;
    Ok(stats)
}

async fn round(
    client: &GraphClient,
    tx: &ReadTxn<'_>,
    res: Resource,
    link: Option<String>,
    select: &str,
    stats: &mut ReadStats,
    progress: &mut impl FnMut(usize),
) -> Result<(), GraphError> {
    let initial = client.url(&format!("{}/delta?$select={select}", res.name()));
    let mut incremental = link.is_some();
    let mut url = match link {
        Some(l) => l,
        None => {
            reset(tx, res)?;
            initial.clone()
        }
    };
    let mut page = client.get(&url, incremental).await;
    loop {
        let current = match page {
            Err(GraphError::ResyncRequired { status, code }) if incremental => {
                tracing::warn!(resource = res.name(), status, code = %code, "stored delta link refused; reading everything again into a fresh mirror");
                stats.resynced.push(res.name());
                reset(tx, res)?;
                incremental = false;
                url = initial.clone();
                page = client.get(&url, incremental).await;
                continue;
            }
            other => other?,
        };
        stats.pages += 1;
        progress(stats.pages);
        let Some(next) = next_link(&current) else {
            apply_page(tx, res, &current, &url, select, stats)?;
            return Ok(());
        };
        // the next page is on its way while this one is written to the mirror
        let fetch = client.get(next, incremental);
        let apply = async { apply_page(tx, res, &current, &url, select, stats) };
        let (fetched, applied) = tokio::join!(fetch, apply);
        applied?;
        url = next.to_string();
        page = fetched;
    }
}

/// The page after this one, if the round goes on.
fn next_link(page: &Value) -> Option<&str> {
    page.get("@odata.nextLink").and_then(Value::as_str)
}

/// Applies one delta page; returns the next page's URL, or `None` when the page ended the
/// round (its delta link is then stored with `select`).
pub(crate) fn apply_page(
    tx: &ReadTxn<'_>,
    res: Resource,
    page: &Value,
    url: &str,
    select: &str,
    stats: &mut ReadStats,
) -> Result<Option<String>, GraphError> {
    for item in page_values(page, url)? {
        if apply(tx, res, item)? {
            stats.entries += 1;
        } else {
            stats.malformed += 1;
            tracing::warn!(resource = res.name(), url = %strip_query(url), "skipping a delta entry without an id");
        }
    }
    if let Some(next) = next_link(page) {
        Ok(Some(next.to_string()))
    } else if let Some(delta) = page.get("@odata.deltaLink").and_then(Value::as_str) {
        tx.set_delta_link(res.name(), delta, select)?;
        Ok(None)
    } else {
        Err(GraphError::Malformed {
            url: strip_query(url),
            detail: "page has neither @odata.nextLink nor @odata.deltaLink".into(),
        })
    }
}

fn reset(tx: &ReadTxn<'_>, res: Resource) -> Result<(), GraphError> {
    match res {
        Resource::Users => tx.reset_users()?,
        Resource::Groups => tx.reset_groups()?,
    }
    Ok(())
}

/// Applies one entry; `Ok(false)` when it has no usable id.
fn apply(tx: &ReadTxn<'_>, res: Resource, item: &Value) -> Result<bool, GraphError> {
    let Some(obj) = item.as_object() else {
        return Ok(false);
    };
    let Some(id) = obj
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return Ok(false);
    };
    if let Some(removed) = obj.get("@removed") {
        let hard = removed.get("reason").and_then(Value::as_str) != Some("changed");
        match res {
            Resource::Users => tx.remove_user(id, hard)?,
            Resource::Groups => tx.remove_group(id)?,
        }
        return Ok(true);
    }
    match res {
        Resource::Users => tx.apply_user(id, &user_patch(obj))?,
        Resource::Groups => {
            tx.apply_group(id, obj)?;
            apply_members(tx, id, obj.get("members@delta"))?;
        }
    }
    Ok(true)
}

/// A user entry as a property patch, with the `manager@delta` relationship folded into a
/// `manager` property (the manager's object id, or null when removed).
fn user_patch(obj: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = obj.clone();
    if let Some(refs) = obj.get("manager@delta").and_then(Value::as_array) {
        let current = refs.iter().rev().find_map(|r| {
            let id = r.get("id")?.as_str()?;
            Some(if r.get("@removed").is_some() {
                Value::Null
            } else {
                Value::String(id.to_string())
            })
        });
        patch.insert("manager".into(), current.unwrap_or(Value::Null));
    }
    patch
}

fn apply_members(tx: &ReadTxn<'_>, gid: &str, delta: Option<&Value>) -> Result<(), GraphError> {
    let Some(refs) = delta.and_then(Value::as_array) else {
        return Ok(());
    };
    for r in refs {
        let Some(mid) = r.get("id").and_then(Value::as_str) else {
            continue;
        };
        if r.get("@removed").is_some() {
            tx.remove_member(gid, mid)?;
            continue;
        }
        let kind = match r.get("@odata.type").and_then(Value::as_str) {
            Some("#microsoft.graph.user") | None => "user",
            Some("#microsoft.graph.group") => "group",
            Some(_) => "other",
        };
        tx.add_member(gid, mid, kind)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manager_relationship_becomes_a_property() {
        let set = user_patch(
            json!({"id": "u", "manager@delta": [{"id": "m1"}]})
                .as_object()
                .unwrap(),
        );
        assert_eq!(set["manager"], json!("m1"));
        let cleared = user_patch(
            json!({"id": "u", "manager@delta": [{"id": "m1", "@removed": {"reason": "deleted"}}]})
                .as_object()
                .unwrap(),
        );
        assert_eq!(cleared["manager"], Value::Null);
        let untouched = user_patch(json!({"id": "u", "displayName": "x"}).as_object().unwrap());
        assert!(!untouched.contains_key("manager"));
    }
}
