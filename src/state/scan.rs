//! Users streamed to a planner in two passes: first every user's key — what tells whether
//! they changed since HERE acknowledged them — read from two narrow indexes in id order
//! without touching anyone's text; then whole rows for the users a key cannot settle.

use std::cmp::Ordering;

use rusqlite::{Row, Statement};

use super::{PushedRow, Result, State, UserRow};

/// What tells a planner whether a user changed, borrowed from the rows being read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UserKey<'r> {
    pub id: &'r str,
    /// The mirror side, when Entra has the user.
    pub mirror: Option<MirrorKey<'r>>,
    /// The snapshot side, when HERE has the user.
    pub pushed: Option<PushedKey<'r>>,
}

/// The mirror side of a [`UserKey`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MirrorKey<'r> {
    pub soft_deleted: bool,
    /// [`super::fingerprint`] of the properties text (`None` until first computed).
    pub props_hash: Option<i64>,
    /// The manager the properties name.
    pub manager: Option<&'r str>,
}

/// The snapshot side of a [`UserKey`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PushedKey<'r> {
    pub active: bool,
    /// Fingerprint of the properties the pushed attributes were planned from.
    pub source_hash: Option<i64>,
    /// The manager last pushed as the reference.
    pub manager: Option<&'r str>,
    pub user_name: &'r str,
}

impl PushedRow {
    /// This row as a key.
    pub fn key(&self) -> PushedKey<'_> {
        PushedKey {
            active: self.active,
            source_hash: self.source_hash,
            manager: self.manager.as_deref(),
            user_name: &self.user_name,
        }
    }
}

/// Below this share of all users (1 in 4), whole rows are looked up one by one; above it,
/// one scan of every row is cheaper.
const LOOKUP_SHARE: usize = 4;

impl State {
    /// Calls `f` with every user known to the mirror or the snapshot, in id order, as a
    /// key; returns how many there were. Reads two narrow indexes side by side, so a
    /// no-change cycle of a large tenant reads a fraction of the state file.
    pub fn for_each_user_key(&self, mut f: impl FnMut(&UserKey<'_>)) -> Result<usize> {
        let err = |e| self.err(e);
        let mut mirror = self
            .conn
            .prepare(
                "SELECT id, soft_deleted, props_hash, manager
                 FROM mirror_users INDEXED BY mirror_users_plan ORDER BY id",
            )
            .map_err(err)?;
        let mut pushed = self
            .conn
            .prepare(
                "SELECT entra_id, active, source_hash, manager, user_name
                 FROM snapshot_users INDEXED BY snapshot_users_plan ORDER BY entra_id",
            )
            .map_err(err)?;
        let mut mirror = mirror.query([]).map_err(err)?;
        let mut pushed = pushed.query([]).map_err(err)?;
        let (mut m, mut p) = (mirror.next().map_err(err)?, pushed.next().map_err(err)?);
        let mut count = 0;
        loop {
            let (mk, pk, id) = match (m, p) {
                (None, None) => return Ok(count),
                (Some(a), None) => (Some(a), None, text(a, 0).map_err(err)?),
                (None, Some(b)) => (None, Some(b), text(b, 0).map_err(err)?),
                (Some(a), Some(b)) => {
                    let (x, y) = (text(a, 0).map_err(err)?, text(b, 0).map_err(err)?);
                    match x.cmp(y) {
                        Ordering::Less => (Some(a), None, x),
                        Ordering::Greater => (None, Some(b), y),
                        Ordering::Equal => (Some(a), Some(b), x),
                    }
                }
            };
            let key = UserKey {
                id,
                mirror: mk.map(mirror_key).transpose().map_err(err)?,
                pushed: pk.map(pushed_key).transpose().map_err(err)?,
            };
            f(&key);
            count += 1;
            if mk.is_some() {
                m = mirror.next().map_err(err)?;
            }
            if pk.is_some() {
                p = pushed.next().map_err(err)?;
            }
        }
    }

    /// Calls `f` with the whole row of each user in `ids` out of `total` users (as
    /// [`State::for_each_user_key`] counted them): looked up one by one when they are few,
    /// else picked from one scan of every row.
    pub fn for_each_user_row_in(
        &self,
        ids: &[String],
        total: usize,
        mut f: impl FnMut(UserRow),
    ) -> Result<()> {
        if ids.len() * LOOKUP_SHARE > total {
            let wanted: rustc_hash::FxHashSet<&str> = ids.iter().map(String::as_str).collect();
            return self.for_each_user_row(|row| {
                if wanted.contains(row.id.as_str()) {
                    f(row)
                }
            });
        }
        let err = |e| self.err(e);
        let mut mirror = self
            .conn
            .prepare_cached(
                "SELECT props, soft_deleted, props_hash FROM mirror_users WHERE id = ?1",
            )
            .map_err(err)?;
        let mut pushed = self
            .conn
            .prepare_cached(
                "SELECT scim_id, user_name, active, attrs, manager, source_hash
                 FROM snapshot_users WHERE entra_id = ?1",
            )
            .map_err(err)?;
        for id in ids {
            let (props, soft_deleted, props_hash) = lookup(&mut mirror, id, |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?))
            })
            .map_err(err)?
            .unwrap_or((None, false, None));
            let pushed = lookup(&mut pushed, id, |r| pushed_row_at(r, 0)).map_err(err)?;
            f(UserRow {
                id: id.clone(),
                props,
                props_hash,
                soft_deleted,
                pushed,
            });
        }
        Ok(())
    }
}

pub(super) fn text<'r>(row: &'r Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    row.get_ref(i)?.as_str().map_err(Into::into)
}

fn opt_text<'r>(row: &'r Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    row.get_ref(i)?.as_str_or_null().map_err(Into::into)
}

fn mirror_key<'r>(row: &'r Row<'_>) -> rusqlite::Result<MirrorKey<'r>> {
    Ok(MirrorKey {
        soft_deleted: row.get::<_, i64>(1)? != 0,
        props_hash: row.get(2)?,
        manager: opt_text(row, 3)?,
    })
}

fn pushed_key<'r>(row: &'r Row<'_>) -> rusqlite::Result<PushedKey<'r>> {
    Ok(PushedKey {
        active: row.get::<_, i64>(1)? != 0,
        source_hash: row.get(2)?,
        manager: opt_text(row, 3)?,
        user_name: text(row, 4)?,
    })
}

/// The snapshot side of a whole row, from the columns `scim_id, user_name, active, attrs,
/// manager, source_hash` starting at `first`.
pub(super) fn pushed_row_at(r: &Row<'_>, first: usize) -> rusqlite::Result<PushedRow> {
    Ok(PushedRow {
        scim_id: r.get(first)?,
        user_name: r.get(first + 1)?,
        active: r.get::<_, i64>(first + 2)? != 0,
        attrs: r.get(first + 3)?,
        manager: r.get(first + 4)?,
        source_hash: r.get(first + 5)?,
    })
}

fn lookup<T>(
    stmt: &mut Statement<'_>,
    id: &str,
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let mut rows = stmt.query([id])?;
    rows.next()?.map(read).transpose()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::super::{fingerprint, schema, Ack, OperationLog};
    use super::*;
    use crate::mapping::AttrText;

    fn log(id: &str) -> OperationLog {
        OperationLog {
            run_id: None,
            entra_id: id.into(),
            kind: "user",
            name: id.into(),
            op: "create_user".into(),
            changes: Value::Null,
            scim_status: Some(201),
            error: None,
        }
    }

    /// Mirror: b, c (managed by b), d soft-deleted. Snapshot: a (only there), c (inactive).
    fn state() -> State {
        let mut s = State::open_in_memory().unwrap();
        let tx = s.begin_read().unwrap();
        for (id, props) in [
            ("c", json!({"userPrincipalName": "c@x", "manager": "b"})),
            ("b", json!({"userPrincipalName": "b@x"})),
            ("d", json!({"userPrincipalName": "d@x"})),
        ] {
            let props: Map<String, Value> = props.as_object().unwrap().clone();
            tx.apply_user(id, &props).unwrap();
        }
        tx.remove_user("d", false).unwrap();
        tx.commit().unwrap();
        for (id, active, source) in [("a", true, Some(7)), ("c", false, None)] {
            let ack = Ack::User {
                entra_id: id.into(),
                scim_id: format!("s-{id}"),
                user_name: format!("{id}@x"),
                active,
                attrs: AttrText::from_attrs(&Default::default()),
                source,
            };
            s.record(&ack, &log(id)).unwrap();
        }
        s
    }

    /// Every key as owned text, in the order read: (id, mirror, pushed).
    fn keys(s: &State) -> Vec<String> {
        let mut out = Vec::new();
        let total = s
            .for_each_user_key(|k| out.push(format!("{:?}", k)))
            .unwrap();
        assert_eq!(total, out.len());
        out
    }

    #[test]
    fn keys_merge_both_sides_in_id_order_with_the_fingerprint_of_the_stored_text() {
        let s = state();
        let mut seen = Vec::new();
        s.for_each_user_key(|k| {
            seen.push((
                k.id.to_string(),
                k.mirror
                    .map(|m| (m.soft_deleted, m.manager.map(str::to_string))),
                k.pushed
                    .map(|p| (p.active, p.source_hash, p.user_name.to_string())),
            ))
        })
        .unwrap();
        let none = None::<(bool, Option<String>)>;
        assert_eq!(
            seen,
            vec![
                (
                    "a".into(),
                    none.clone(),
                    Some((true, Some(7), "a@x".into()))
                ),
                ("b".into(), Some((false, None)), None),
                (
                    "c".into(),
                    Some((false, Some("b".into()))),
                    Some((false, None, "c@x".into()))
                ),
                ("d".into(), Some((true, None)), None),
            ]
        );
        let mut hashes = Vec::new();
        s.for_each_user_key(|k| hashes.push(k.mirror.and_then(|m| m.props_hash)))
            .unwrap();
        let mut texts = Vec::new();
        s.for_each_user_row_in(&["a".into(), "b".into(), "c".into(), "d".into()], 4, |r| {
            texts.push(r.props.as_deref().map(|t| fingerprint(t) as i64))
        })
        .unwrap();
        texts.sort();
        hashes.sort();
        assert_eq!(hashes, texts, "the stored fingerprint is the stored text's");
    }

    #[test]
    fn whole_rows_are_the_same_looked_up_or_scanned() {
        let s = state();
        let ids = vec!["a".to_string(), "c".to_string(), "d".to_string()];
        let collect = |total| {
            let mut rows = Vec::new();
            s.for_each_user_row_in(&ids, total, |r| rows.push(r))
                .unwrap();
            rows.sort_by(|x, y| x.id.cmp(&y.id));
            rows
        };
        let (looked_up, scanned) = (collect(1000), collect(3));
        assert_eq!(looked_up, scanned);
        let got: Vec<&str> = looked_up.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(got, ["a", "c", "d"]);
        assert!(looked_up[0].props.is_none() && looked_up[0].pushed.is_some());
        assert!(looked_up[2].soft_deleted && looked_up[2].pushed.is_none());
        for row in &looked_up {
            let text = row.props.as_deref().map(|t| fingerprint(t) as i64);
            assert_eq!(
                row.props_hash, text,
                "a row carries its text's stored fingerprint"
            );
        }
        assert!(looked_up[1].props_hash.is_some());
    }

    #[test]
    fn users_mirrored_before_the_fingerprint_column_get_it_once() {
        let mut s = state();
        let before = keys(&s);
        s.conn
            .execute(
                "UPDATE mirror_users SET props_hash = NULL, manager = NULL",
                [],
            )
            .unwrap();
        assert_ne!(keys(&s), before);
        let tx = s.conn.transaction().unwrap();
        schema::backfill_props_hash(&tx).unwrap();
        tx.commit().unwrap();
        assert_eq!(keys(&s), before);
    }
}
