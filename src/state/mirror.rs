//! The directory mirror: what Entra says, kept current by delta rounds.
//!
//! All changes of one read (assignments, users round, groups round) go through one
//! [`ReadTxn`]; the new delta links are written in the same transaction, so a read that
//! fails half-way leaves mirror and links exactly as they were.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::scan::text;
use super::{classify, fingerprint, now, Result, State};

/// A user as mirrored (merged delta patches).
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorUser {
    pub props: Map<String, Value>,
    /// Soft-deleted in Entra (restorable); still a group member there.
    pub soft_deleted: bool,
}

/// A group as mirrored with its direct members.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MirrorGroup {
    pub props: Map<String, Value>,
    /// Direct member user ids.
    pub user_members: BTreeSet<String>,
    /// Direct member group ids (nesting).
    pub group_members: BTreeSet<String>,
}

/// Everything the planner needs from the mirror.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MirrorData {
    pub users: BTreeMap<String, MirrorUser>,
    pub groups: BTreeMap<String, MirrorGroup>,
    pub assigned_users: BTreeSet<String>,
    pub assigned_groups: BTreeSet<String>,
}

/// One read's transaction over the mirror. Rolled back on drop unless committed.
pub struct ReadTxn<'a> {
    conn: &'a mut Connection,
    state_path: std::path::PathBuf,
    open: bool,
}

impl State {
    /// Starts the transaction of one read.
    pub fn begin_read(&mut self) -> Result<ReadTxn<'_>> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| classify(&self.path, e))?;
        Ok(ReadTxn {
            conn: &mut self.conn,
            state_path: self.path.clone(),
            open: true,
        })
    }

    /// The stored delta link for `resource` and the `$select` it was made with.
    pub fn delta_link(&self, resource: &str) -> Result<Option<(String, String)>> {
        self.conn
            .query_row(
                "SELECT link, select_list FROM delta_links WHERE resource = ?1",
                [resource],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// (resource, seconds since the link was stored) for every stored link.
    pub fn delta_link_ages(&self) -> Result<Vec<(String, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT resource, updated_at FROM delta_links ORDER BY resource")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, now() - r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Loads the whole mirror (tests and small tools; cycles stream users instead).
    pub fn load_mirror(&self) -> Result<MirrorData> {
        let mut data = self.load_directory()?;
        self.for_each_user(|id, user, _| {
            if let Some(u) = user {
                data.users.insert(id.to_string(), u);
            }
        })?;
        Ok(data)
    }

    /// The mirror without its users: groups, memberships and assignments.
    pub fn load_directory(&self) -> Result<MirrorData> {
        let mut data = MirrorData::default();
        let err = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare("SELECT id, props FROM mirror_groups")
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let id: String = r.get(0).map_err(err)?;
            let props: String = r.get(1).map_err(err)?;
            data.groups.insert(
                id,
                MirrorGroup {
                    props: parse_props(&props),
                    ..MirrorGroup::default()
                },
            );
        }
        // the table is keyed (group, member): each group's members come together, in order
        let mut stmt = self
            .conn
            .prepare(
                "SELECT group_id, member_id, member_type FROM mirror_members
                 ORDER BY group_id, member_id",
            )
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut members = GroupMembers::default();
        while let Some(r) = rows.next().map_err(err)? {
            let column = |i| text(r, i).map_err(err);
            let (gid, mid, kind) = (column(0)?, column(1)?, column(2)?);
            if members.group != gid {
                members.flush(&mut data.groups);
                members.group = gid.to_string();
            }
            match kind {
                "user" => members.users.push(mid.to_string()),
                "group" => members.groups.push(mid.to_string()),
                _ => {}
            }
        }
        members.flush(&mut data.groups);
        for (id, kind) in text_pairs(&self.conn, ASSIGNMENTS).map_err(err)? {
            match kind.as_str() {
                "User" => data.assigned_users.insert(id),
                "Group" => data.assigned_groups.insert(id),
                _ => false,
            };
        }
        Ok(data)
    }
}

/// One group's members as they are read, handed to the group when the next one begins.
#[derive(Default)]
struct GroupMembers {
    group: String,
    users: Vec<String>,
    groups: Vec<String>,
}

impl GroupMembers {
    fn flush(&mut self, groups: &mut BTreeMap<String, MirrorGroup>) {
        let (users, nested) = (
            std::mem::take(&mut self.users),
            std::mem::take(&mut self.groups),
        );
        if let Some(g) = groups.get_mut(&self.group) {
            // in id order already: each set is built at once, without a search per member
            g.user_members.append(&mut users.into_iter().collect());
            g.group_members.append(&mut nested.into_iter().collect());
        }
    }
}

/// The fingerprint and manager stored beside a user's properties text.
pub(super) fn props_key(text: &str) -> (i64, Option<String>) {
    key_of(&parse_props(text), text)
}

fn key_of(props: &Map<String, Value>, text: &str) -> (i64, Option<String>) {
    let manager = props.get("manager").and_then(Value::as_str);
    (fingerprint(text) as i64, manager.map(str::to_string))
}

/// The app's assignments as stored: (principal id, principal type).
const ASSIGNMENTS: &str = "SELECT principal_id, principal_type FROM assignments";

/// Every row of a query of two text columns.
pub(super) fn text_pairs(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn parse_props(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Merges a partial Graph object into stored properties: absent = unchanged, null = cleared.
fn merge(props: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if k == "id" || k.contains('@') {
            continue;
        }
        if v.is_null() {
            props.remove(k);
        } else {
            props.insert(k.clone(), v.clone());
        }
    }
}

impl ReadTxn<'_> {
    fn err(&self, e: rusqlite::Error) -> super::StateError {
        classify(&self.state_path, e)
    }

    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> Result<usize> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        stmt.execute(p).map_err(|e| self.err(e))
    }

    fn props_of(&self, table: &str, id: &str) -> Result<Option<Map<String, Value>>> {
        let sql = format!("SELECT props FROM {table} WHERE id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let text: Option<String> = stmt
            .query_row([id], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(text.map(|t| parse_props(&t)))
    }

    /// Forgets all mirrored users (start of a full users round).
    pub fn reset_users(&self) -> Result<()> {
        self.exec("DELETE FROM mirror_users", [])?;
        Ok(())
    }

    /// Forgets all mirrored groups and memberships (start of a full groups round).
    pub fn reset_groups(&self) -> Result<()> {
        self.exec("DELETE FROM mirror_groups", [])?;
        self.exec("DELETE FROM mirror_members", [])?;
        Ok(())
    }

    /// Applies a (possibly partial) user object; an object that arrives is not deleted.
    pub fn apply_user(&self, id: &str, patch: &Map<String, Value>) -> Result<()> {
        let mut props = self.props_of("mirror_users", id)?.unwrap_or_default();
        merge(&mut props, patch);
        let text = serde_json::to_string(&props).unwrap_or_default();
        let (hash, manager) = key_of(&props, &text);
        self.exec(
            "INSERT INTO mirror_users (id, props, soft_deleted, props_hash, manager)
             VALUES (?1, ?2, 0, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET props = excluded.props, soft_deleted = 0,
                 props_hash = excluded.props_hash, manager = excluded.manager",
            params![id, text, hash, manager],
        )?;
        Ok(())
    }

    /// Soft delete keeps the row (and memberships); hard delete forgets the user.
    pub fn remove_user(&self, id: &str, hard: bool) -> Result<()> {
        if hard {
            self.exec("DELETE FROM mirror_users WHERE id = ?1", [id])?;
            self.exec("DELETE FROM mirror_members WHERE member_id = ?1", [id])?;
        } else {
            self.exec(
                "UPDATE mirror_users SET soft_deleted = 1 WHERE id = ?1",
                [id],
            )?;
        }
        Ok(())
    }

    /// Applies a (possibly partial) group object.
    pub fn apply_group(&self, id: &str, patch: &Map<String, Value>) -> Result<()> {
        let mut props = self.props_of("mirror_groups", id)?.unwrap_or_default();
        merge(&mut props, patch);
        self.exec(
            "INSERT INTO mirror_groups (id, props) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE SET props = excluded.props",
            params![id, Value::Object(props).to_string()],
        )?;
        Ok(())
    }

    /// Forgets a group, its memberships and its nesting in other groups.
    pub fn remove_group(&self, id: &str) -> Result<()> {
        self.exec("DELETE FROM mirror_groups WHERE id = ?1", [id])?;
        self.exec(
            "DELETE FROM mirror_members WHERE group_id = ?1 OR member_id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Records a direct member (`member_type`: user, group or other).
    pub fn add_member(&self, group_id: &str, member_id: &str, member_type: &str) -> Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO mirror_members (group_id, member_id, member_type) VALUES (?1, ?2, ?3)",
            params![group_id, member_id, member_type],
        )?;
        Ok(())
    }

    /// Removes a direct member.
    pub fn remove_member(&self, group_id: &str, member_id: &str) -> Result<()> {
        self.exec(
            "DELETE FROM mirror_members WHERE group_id = ?1 AND member_id = ?2",
            params![group_id, member_id],
        )?;
        Ok(())
    }

    /// Replaces the app's assignments (re-listed in full every cycle: Graph has no delta for
    /// them), writing only what changed since the last listing.
    pub fn set_assignments(&self, assignments: &[(String, String)]) -> Result<()> {
        // the listing against the stored rows, both in id order, without copying them
        let mut fresh: Vec<(&str, &str)> = assignments
            .iter()
            .map(|(id, kind)| (id.as_str(), kind.as_str()))
            .collect();
        fresh.sort_unstable();
        fresh.dedup_by_key(|(id, _)| *id);
        let (mut stale, mut stored, mut at) = (Vec::new(), vec![false; fresh.len()], 0);
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT principal_id, principal_type FROM assignments ORDER BY principal_id",
                )
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                let id = text(row, 0).map_err(|e| self.err(e))?;
                let kind = text(row, 1).map_err(|e| self.err(e))?;
                while at < fresh.len() && fresh[at].0 < id {
                    at += 1;
                }
                match fresh.get(at) {
                    Some(&f) if f == (id, kind) => stored[at] = true,
                    _ => stale.push(id.to_string()),
                }
            }
        }
        for id in &stale {
            self.exec("DELETE FROM assignments WHERE principal_id = ?1", [id])?;
        }
        let added = fresh.iter().zip(&stored).filter(|(_, stored)| !**stored);
        for ((id, kind), _) in added {
            self.exec(
                "INSERT OR REPLACE INTO assignments (principal_id, principal_type) VALUES (?1, ?2)",
                params![id, kind],
            )?;
        }
        Ok(())
    }

    /// Stores the round's new delta link, in the same transaction as its changes.
    pub fn set_delta_link(&self, resource: &str, link: &str, select: &str) -> Result<()> {
        self.exec(
            "INSERT INTO delta_links (resource, link, select_list, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(resource) DO UPDATE SET link = excluded.link,
                 select_list = excluded.select_list, updated_at = excluded.updated_at",
            params![resource, link, select, now()],
        )?;
        Ok(())
    }

    /// Makes the whole read durable at once.
    pub fn commit(mut self) -> Result<()> {
        self.open = false;
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| classify(&self.state_path, e))
    }
}

impl Drop for ReadTxn<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn state() -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(&dir.path().join("s.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn partial_patches_merge_and_null_clears() {
        let (_d, mut s) = state();
        let tx = s.begin_read().unwrap();
        tx.apply_user(
            "u1",
            &obj(json!({"id": "u1", "displayName": "A", "jobTitle": "X"})),
        )
        .unwrap();
        tx.apply_user(
            "u1",
            &obj(json!({"id": "u1", "jobTitle": null, "mail": "a@x"})),
        )
        .unwrap();
        tx.commit().unwrap();
        let m = s.load_mirror().unwrap();
        assert_eq!(
            m.users["u1"].props,
            obj(json!({"displayName": "A", "mail": "a@x"}))
        );
    }

    #[test]
    fn an_uncommitted_read_changes_nothing() {
        let (_d, mut s) = state();
        let tx = s.begin_read().unwrap();
        tx.apply_user("u1", &obj(json!({"displayName": "A"})))
            .unwrap();
        tx.set_delta_link("users", "L1", "displayName").unwrap();
        tx.commit().unwrap();
        {
            let tx = s.begin_read().unwrap();
            tx.reset_users().unwrap();
            tx.set_delta_link("users", "L2", "displayName").unwrap();
            // dropped without commit: a failed read
        }
        assert_eq!(s.load_mirror().unwrap().users.len(), 1);
        assert_eq!(s.delta_link("users").unwrap().unwrap().0, "L1");
    }

    #[test]
    fn deletes_and_memberships() {
        let (_d, mut s) = state();
        let tx = s.begin_read().unwrap();
        tx.apply_user("u1", &obj(json!({"displayName": "A"})))
            .unwrap();
        tx.apply_user("u2", &obj(json!({"displayName": "B"})))
            .unwrap();
        tx.apply_group("g1", &obj(json!({"displayName": "G"})))
            .unwrap();
        tx.add_member("g1", "u1", "user").unwrap();
        tx.add_member("g1", "u2", "user").unwrap();
        tx.add_member("g1", "g2", "group").unwrap();
        tx.remove_user("u1", false).unwrap();
        tx.remove_user("u2", true).unwrap();
        tx.set_assignments(&[("g1".into(), "Group".into()), ("u1".into(), "User".into())])
            .unwrap();
        tx.commit().unwrap();
        let m = s.load_mirror().unwrap();
        assert!(m.users["u1"].soft_deleted);
        assert!(!m.users.contains_key("u2"));
        assert_eq!(m.groups["g1"].user_members, ["u1".to_string()].into());
        assert_eq!(m.groups["g1"].group_members, ["g2".to_string()].into());
        assert!(m.assigned_groups.contains("g1") && m.assigned_users.contains("u1"));
        let tx = s.begin_read().unwrap();
        tx.apply_user("u1", &obj(json!({"displayName": "A2"})))
            .unwrap();
        tx.remove_group("g1").unwrap();
        tx.commit().unwrap();
        let m = s.load_mirror().unwrap();
        assert!(
            !m.users["u1"].soft_deleted,
            "a restored user arrives as an object"
        );
        assert!(m.groups.is_empty());
    }

    #[test]
    fn a_new_assignment_listing_replaces_the_old_one() {
        let (_d, mut s) = state();
        let listing = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let tx = s.begin_read().unwrap();
        tx.set_assignments(&listing(&[("g1", "Group"), ("u1", "User"), ("x", "User")]))
            .unwrap();
        tx.commit().unwrap();
        let tx = s.begin_read().unwrap();
        // in no order, one principal listed twice (two app roles), one new before all
        let next = [
            ("x", "Group"),
            ("u2", "User"),
            ("u1", "User"),
            ("u2", "User"),
            ("a0", "User"),
        ];
        tx.set_assignments(&listing(&next)).unwrap();
        tx.commit().unwrap();
        let m = s.load_directory().unwrap();
        let set = |ids: &[&str]| ids.iter().map(|i| i.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(m.assigned_users, set(&["a0", "u1", "u2"]));
        assert_eq!(m.assigned_groups, set(&["x"]));
    }
}
