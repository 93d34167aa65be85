//! The pushed snapshot: what HERE has acknowledged, keyed by Entra object id.
//!
//! Every acknowledged SCIM operation is recorded by [`State::record`] in its own
//! transaction, together with its history row and the end of any escrow entry, so a kill
//! at any moment loses no acknowledgement and repeats nothing HERE already has.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::{history::OperationLog, now, MirrorUser, Result, State};
use crate::mapping::{AttrText, Attrs};

/// A user HERE knows about.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapUser {
    pub scim_id: String,
    pub user_name: String,
    pub active: bool,
    /// The last pushed mapped attributes (SCIM path → value), `active` included.
    pub attrs: Attrs,
    /// Entra id of the manager last pushed as the reference.
    pub manager: Option<String>,
}

/// A group HERE knows about.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapGroup {
    pub scim_id: String,
    pub display_name: String,
    pub attrs: Attrs,
    /// Entra ids of the members HERE acknowledged.
    pub members: BTreeSet<String>,
}

/// Everything HERE has acknowledged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub users: BTreeMap<String, SnapUser>,
    pub groups: BTreeMap<String, SnapGroup>,
}

impl Snapshot {
    /// The SCIM id HERE gave a user, if pushed.
    pub fn user_scim_id(&self, entra_id: &str) -> Option<&str> {
        self.users.get(entra_id).map(|u| u.scim_id.as_str())
    }
}

/// Entra id → SCIM id of users and of groups.
pub type ScimIds = (HashMap<String, String>, HashMap<String, String>);

/// Above this many objects, reading every SCIM id of a table beats looking each one up.
const SCIM_ID_LOOKUPS: usize = 20_000;

/// One user as the state holds it, still as stored text: the planner parses only what it
/// must (most users of a no-change cycle need no parsing at all).
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: String,
    /// The mirrored Entra properties (JSON text), when Entra has the user.
    pub props: Option<String>,
    /// The fingerprint of `props` the mirror stored with them ([`super::fingerprint`]):
    /// the planner need not hash the text again. `None`: not stored (it is computed).
    pub props_hash: Option<i64>,
    pub soft_deleted: bool,
    pub pushed: Option<PushedRow>,
}

/// The snapshot side of a [`UserRow`].
#[derive(Debug, Clone, PartialEq)]
pub struct PushedRow {
    pub scim_id: String,
    pub user_name: String,
    pub active: bool,
    /// The pushed attributes (JSON text).
    pub attrs: String,
    pub manager: Option<String>,
    /// Fingerprint of the properties the pushed attributes were planned from.
    pub source_hash: Option<i64>,
}

impl UserRow {
    /// The mirror side, parsed.
    pub fn mirror(&self) -> Option<MirrorUser> {
        self.props.as_ref().map(|p| MirrorUser {
            props: serde_json::from_str(p).unwrap_or_default(),
            soft_deleted: self.soft_deleted,
        })
    }
}

impl PushedRow {
    /// The snapshot side, parsed.
    pub fn snap_user(&self) -> SnapUser {
        SnapUser {
            scim_id: self.scim_id.clone(),
            user_name: self.user_name.clone(),
            active: self.active,
            attrs: parse_attrs(&self.attrs),
            manager: self.manager.clone(),
        }
    }
}

/// One acknowledged change to the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// A user was created, adopted or updated; `attrs` is now what HERE holds.
    User {
        entra_id: String,
        scim_id: String,
        user_name: String,
        active: bool,
        attrs: AttrText,
        /// Fingerprint of the Entra properties these attributes were planned from
        /// (`None` when HERE's copy no longer follows them, e.g. after a deactivation).
        source: Option<i64>,
    },
    /// A user's manager reference was set or cleared.
    Manager {
        entra_id: String,
        manager: Option<String>,
    },
    /// A group was created, adopted or renamed.
    Group {
        entra_id: String,
        scim_id: String,
        display_name: String,
        attrs: Attrs,
    },
    /// Members were added to a group.
    MembersAdded { group: String, users: Vec<String> },
    /// Members were removed from a group.
    MembersRemoved { group: String, users: Vec<String> },
    /// A group was deleted in HERE.
    GroupDeleted { entra_id: String },
}

impl Ack {
    /// The Entra id of the object this acknowledgement is about.
    pub fn entra_id(&self) -> &str {
        match self {
            Ack::User { entra_id, .. }
            | Ack::Manager { entra_id, .. }
            | Ack::Group { entra_id, .. }
            | Ack::GroupDeleted { entra_id } => entra_id,
            Ack::MembersAdded { group, .. } | Ack::MembersRemoved { group, .. } => group,
        }
    }
}

fn attrs_json(attrs: &Attrs) -> String {
    serde_json::to_string(attrs).unwrap_or_else(|_| "{}".into())
}

fn parse_attrs(text: &str) -> Attrs {
    serde_json::from_str::<BTreeMap<String, Value>>(text).unwrap_or_default()
}

impl State {
    /// Loads the whole snapshot (tests and small tools; cycles stream users instead).
    pub fn load_snapshot(&self) -> Result<Snapshot> {
        let mut snap = Snapshot {
            groups: self.load_snapshot_groups()?,
            ..Snapshot::default()
        };
        self.for_each_user(|id, _, pushed| {
            if let Some(u) = pushed {
                snap.users.insert(id.to_string(), u);
            }
        })?;
        Ok(snap)
    }

    /// The pushed groups with their members (small enough to hold whole).
    pub fn load_snapshot_groups(&self) -> Result<BTreeMap<String, SnapGroup>> {
        let err = |e| self.err(e);
        let mut groups = BTreeMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT entra_id, scim_id, display_name, attrs FROM snapshot_groups")
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let attrs: String = r.get(3).map_err(err)?;
            groups.insert(
                r.get(0).map_err(err)?,
                SnapGroup {
                    scim_id: r.get(1).map_err(err)?,
                    display_name: r.get(2).map_err(err)?,
                    attrs: parse_attrs(&attrs),
                    members: BTreeSet::new(),
                },
            );
        }
        let mut stmt = self
            .conn
            .prepare("SELECT group_entra_id, user_entra_id FROM snapshot_members")
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let gid: String = r.get(0).map_err(err)?;
            if let Some(g) = groups.get_mut(&gid) {
                g.members.insert(r.get(1).map_err(err)?);
            }
        }
        Ok(groups)
    }

    /// Calls `f` once per user known to the mirror or the snapshot, with both sides, one
    /// row at a time: planning a large tenant never holds every user in memory.
    pub fn for_each_user(
        &self,
        mut f: impl FnMut(&str, Option<MirrorUser>, Option<SnapUser>),
    ) -> Result<()> {
        self.for_each_user_row(|row| {
            f(
                &row.id,
                row.mirror(),
                row.pushed.as_ref().map(PushedRow::snap_user),
            )
        })
    }

    /// Like [`State::for_each_user`], with both sides still as stored text, so a planner can
    /// recognise an unchanged user without parsing it.
    pub fn for_each_user_row(&self, mut f: impl FnMut(UserRow)) -> Result<()> {
        let err = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT m.id, m.props, m.soft_deleted, s.scim_id, s.user_name, s.active, s.attrs, s.manager, s.source_hash, m.props_hash
                 FROM mirror_users m LEFT JOIN snapshot_users s ON s.entra_id = m.id
                 UNION ALL
                 SELECT s.entra_id, NULL, 0, s.scim_id, s.user_name, s.active, s.attrs, s.manager, s.source_hash, NULL
                 FROM snapshot_users s
                 WHERE NOT EXISTS (SELECT 1 FROM mirror_users m WHERE m.id = s.entra_id)",
            )
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let pushed = match r.get_ref(3).map_err(err)? {
                rusqlite::types::ValueRef::Null => None,
                _ => Some(super::scan::pushed_row_at(r, 3).map_err(err)?),
            };
            f(UserRow {
                id: r.get(0).map_err(err)?,
                props: r.get(1).map_err(err)?,
                props_hash: r.get(9).map_err(err)?,
                soft_deleted: r.get::<_, i64>(2).unwrap_or(0) != 0,
                pushed,
            });
        }
        Ok(())
    }

    /// Remembers the fingerprints of users HERE already holds exactly as planned.
    pub fn remember_sources(&mut self, sources: &[(String, i64)]) -> Result<()> {
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE snapshot_users SET source_hash = ?2 WHERE entra_id = ?1")
                .map_err(err)?;
            for (id, hash) in sources {
                stmt.execute(params![id, hash]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// The pushed user with this Entra id, or else with this userName (case-insensitive),
    /// if HERE has acknowledged one (provisioning on demand looks one user up).
    pub fn snapshot_user(
        &self,
        entra_id: &str,
        user_name: &str,
    ) -> Result<Option<(String, SnapUser)>> {
        let err = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT entra_id, scim_id, user_name, active, attrs, manager FROM snapshot_users
                 WHERE entra_id = ?1 OR user_name = ?2 COLLATE NOCASE
                 ORDER BY entra_id = ?1 DESC LIMIT 1",
            )
            .map_err(err)?;
        let mut rows = stmt.query([entra_id, user_name]).map_err(err)?;
        let Some(r) = rows.next().map_err(err)? else {
            return Ok(None);
        };
        let attrs: String = r.get(4).map_err(err)?;
        let user = SnapUser {
            scim_id: r.get(1).map_err(err)?,
            user_name: r.get(2).map_err(err)?,
            active: r.get::<_, i64>(3).map_err(err)? != 0,
            attrs: parse_attrs(&attrs),
            manager: r.get(5).map_err(err)?,
        };
        Ok(Some((r.get(0).map_err(err)?, user)))
    }

    /// Entra id → SCIM id of the pushed users and groups among `users` and `groups` (the
    /// objects a push names): looked up one by one when they are few, else all read at once.
    pub fn scim_ids_of(&self, users: &BTreeSet<&str>, groups: &BTreeSet<&str>) -> Result<ScimIds> {
        let mut out = ScimIds::default();
        let tables = [
            ("snapshot_users", users, &mut out.0),
            ("snapshot_groups", groups, &mut out.1),
        ];
        for (table, wanted, map) in tables {
            if wanted.len() > SCIM_ID_LOOKUPS {
                self.all_scim_ids(table, map)?;
                continue;
            }
            let err = |e| self.err(e);
            let sql = format!("SELECT scim_id FROM {table} WHERE entra_id = ?1");
            let mut stmt = self.conn.prepare_cached(&sql).map_err(err)?;
            for id in wanted {
                let scim_id: Option<String> =
                    stmt.query_row([id], |r| r.get(0)).optional().map_err(err)?;
                if let Some(scim_id) = scim_id {
                    map.insert(id.to_string(), scim_id);
                }
            }
        }
        Ok(out)
    }

    fn all_scim_ids(&self, table: &str, map: &mut HashMap<String, String>) -> Result<()> {
        let sql = format!("SELECT entra_id, scim_id FROM {table}");
        let pairs = super::mirror::text_pairs(&self.conn, &sql).map_err(|e| self.err(e))?;
        map.extend(pairs);
        Ok(())
    }

    /// Records one acknowledged operation: snapshot, history row and escrow release, atomically.
    pub fn record(&mut self, ack: &Ack, log: &OperationLog) -> Result<()> {
        self.record_many(&[(ack.clone(), log.clone())])
    }

    /// Records acknowledged operations that arrived together, in one transaction.
    pub fn record_many(&mut self, acks: &[(Ack, OperationLog)]) -> Result<()> {
        if acks.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        for (ack, log) in acks {
            apply_ack(&tx, ack).map_err(err)?;
            super::history::insert_operation(&tx, log).map_err(err)?;
            tx.prepare_cached("DELETE FROM failures WHERE entra_id = ?1")
                .and_then(|mut s| s.execute([ack.entra_id()]))
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

fn apply_ack(tx: &rusqlite::Transaction<'_>, ack: &Ack) -> rusqlite::Result<()> {
    let t = now();
    match ack {
        Ack::User {
            entra_id,
            scim_id,
            user_name,
            active,
            attrs,
            source,
        } => {
            tx.prepare_cached(
                "INSERT INTO snapshot_users (entra_id, scim_id, user_name, active, attrs, updated_at, source_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(entra_id) DO UPDATE SET scim_id = excluded.scim_id,
                     user_name = excluded.user_name, active = excluded.active,
                     attrs = excluded.attrs, updated_at = excluded.updated_at,
                     source_hash = excluded.source_hash",
            )?
            .execute(params![entra_id, scim_id, user_name, *active as i64, attrs.as_str(), t, source])?;
        }
        Ack::Manager { entra_id, manager } => {
            tx.prepare_cached(
                "UPDATE snapshot_users SET manager = ?2, updated_at = ?3 WHERE entra_id = ?1",
            )?
            .execute(params![entra_id, manager, t])?;
        }
        Ack::Group {
            entra_id,
            scim_id,
            display_name,
            attrs,
        } => {
            tx.prepare_cached(
                "INSERT INTO snapshot_groups (entra_id, scim_id, display_name, attrs, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(entra_id) DO UPDATE SET scim_id = excluded.scim_id,
                     display_name = excluded.display_name, attrs = excluded.attrs,
                     updated_at = excluded.updated_at",
            )?
            .execute(params![
                entra_id,
                scim_id,
                display_name,
                attrs_json(attrs),
                t
            ])?;
        }
        Ack::MembersAdded { group, users } => {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO snapshot_members (group_entra_id, user_entra_id) VALUES (?1, ?2)",
            )?;
            for u in users {
                stmt.execute(params![group, u])?;
            }
        }
        Ack::MembersRemoved { group, users } => {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM snapshot_members WHERE group_entra_id = ?1 AND user_entra_id = ?2",
            )?;
            for u in users {
                stmt.execute(params![group, u])?;
            }
        }
        Ack::GroupDeleted { entra_id } => {
            tx.execute(
                "DELETE FROM snapshot_groups WHERE entra_id = ?1",
                [entra_id],
            )?;
            tx.execute(
                "DELETE FROM snapshot_members WHERE group_entra_id = ?1",
                [entra_id],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log() -> OperationLog {
        OperationLog {
            run_id: None,
            entra_id: "u1".into(),
            kind: "user",
            name: "a@x".into(),
            op: "create_user".into(),
            changes: json!({}),
            scim_status: Some(201),
            error: None,
        }
    }

    #[test]
    fn acknowledgements_build_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("s.db")).unwrap();
        let attrs: Attrs = [("userName".to_string(), json!("a@x"))].into();
        s.record(
            &Ack::User {
                entra_id: "u1".into(),
                scim_id: "s1".into(),
                user_name: "a@x".into(),
                active: true,
                attrs: AttrText::from_attrs(&attrs),
                source: None,
            },
            &log(),
        )
        .unwrap();
        s.record(
            &Ack::Manager {
                entra_id: "u1".into(),
                manager: Some("u9".into()),
            },
            &log(),
        )
        .unwrap();
        s.record(
            &Ack::Group {
                entra_id: "g1".into(),
                scim_id: "sg".into(),
                display_name: "G".into(),
                attrs: Attrs::new(),
            },
            &log(),
        )
        .unwrap();
        s.record(
            &Ack::MembersAdded {
                group: "g1".into(),
                users: vec!["u1".into(), "u2".into()],
            },
            &log(),
        )
        .unwrap();
        s.record(
            &Ack::MembersRemoved {
                group: "g1".into(),
                users: vec!["u2".into()],
            },
            &log(),
        )
        .unwrap();
        let snap = s.load_snapshot().unwrap();
        assert_eq!(snap.users["u1"].attrs, attrs);
        assert_eq!(snap.users["u1"].manager.as_deref(), Some("u9"));
        assert_eq!(snap.groups["g1"].members, ["u1".to_string()].into());
        s.record(
            &Ack::GroupDeleted {
                entra_id: "g1".into(),
            },
            &log(),
        )
        .unwrap();
        assert!(s.load_snapshot().unwrap().groups.is_empty());
    }

    #[test]
    fn scim_ids_of_named_objects_are_the_same_looked_up_or_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("s.db")).unwrap();
        for id in ["u1", "u2", "u3"] {
            let ack = Ack::User {
                entra_id: id.into(),
                scim_id: format!("s-{id}"),
                user_name: format!("{id}@x"),
                active: true,
                attrs: AttrText::from_attrs(&Attrs::new()),
                source: None,
            };
            s.record(&ack, &log()).unwrap();
        }
        let few: BTreeSet<&str> = ["u1", "u3", "new"].into();
        let (users, groups) = s.scim_ids_of(&few, &BTreeSet::new()).unwrap();
        let expected: HashMap<String, String> = [("u1", "s-u1"), ("u3", "s-u3")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .into();
        assert_eq!((users, groups.len()), (expected, 0));
        let names: Vec<String> = (0..=SCIM_ID_LOOKUPS).map(|i| format!("n{i}")).collect();
        let many: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let (users, _) = s.scim_ids_of(&many, &BTreeSet::new()).unwrap();
        assert_eq!(users.len(), 3, "past the lookup limit every id is read");
    }
}
