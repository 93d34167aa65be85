//! Versioned schema migrations (`PRAGMA user_version`).

use std::path::Path;

use rusqlite::Connection;

use super::{classify, Result, StateError};

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the initial layout.
    r#"
CREATE TABLE mirror_users (
    id TEXT PRIMARY KEY,
    props TEXT NOT NULL,
    soft_deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE mirror_groups (
    id TEXT PRIMARY KEY,
    props TEXT NOT NULL
);
CREATE TABLE mirror_members (
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    member_type TEXT NOT NULL,
    PRIMARY KEY (group_id, member_id)
) WITHOUT ROWID;
CREATE TABLE assignments (
    principal_id TEXT PRIMARY KEY,
    principal_type TEXT NOT NULL
);
CREATE TABLE delta_links (
    resource TEXT PRIMARY KEY,
    link TEXT NOT NULL,
    select_list TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE snapshot_users (
    entra_id TEXT PRIMARY KEY,
    scim_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    active INTEGER NOT NULL,
    attrs TEXT NOT NULL,
    manager TEXT,
    updated_at INTEGER NOT NULL
);
CREATE TABLE snapshot_groups (
    entra_id TEXT PRIMARY KEY,
    scim_id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    attrs TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE snapshot_members (
    group_entra_id TEXT NOT NULL,
    user_entra_id TEXT NOT NULL,
    PRIMARY KEY (group_entra_id, user_entra_id)
) WITHOUT ROWID;
CREATE TABLE failures (
    entra_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    operation TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_failed_at INTEGER NOT NULL,
    last_failed_at INTEGER NOT NULL,
    next_try_at INTEGER NOT NULL
);
CREATE TABLE skipped (
    entra_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    seen_at INTEGER NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    dry_run INTEGER NOT NULL,
    exit_code INTEGER,
    summary TEXT,
    error TEXT
);
CREATE TABLE operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    at INTEGER NOT NULL,
    entra_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    op TEXT NOT NULL,
    changes TEXT NOT NULL,
    scim_status INTEGER,
    error TEXT
);
CREATE INDEX operations_by_object ON operations (entra_id, id);
CREATE INDEX operations_by_name ON operations (name COLLATE NOCASE, id);
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    // 2: history retention (`state.history_days`) prunes by time.
    r#"
CREATE INDEX operations_by_time ON operations (at);
"#,
    // 3: the fingerprint of the Entra properties a pushed user was last planned from, so
    // an unchanged user is recognised without parsing or mapping it again.
    r#"
ALTER TABLE snapshot_users ADD COLUMN source_hash INTEGER;
"#,
    // 4: what tells a planner whether a user changed, in indexes it can scan in id order
    // without reading anyone's text: the fingerprint of the mirrored properties and the
    // manager they name (filled in for existing rows by `backfill_props_hash`), and the
    // pushed side's fingerprint, active flag, manager and userName.
    r#"
ALTER TABLE mirror_users ADD COLUMN props_hash INTEGER;
ALTER TABLE mirror_users ADD COLUMN manager TEXT;
CREATE INDEX mirror_users_plan ON mirror_users (id, soft_deleted, props_hash, manager);
CREATE INDEX snapshot_users_plan
    ON snapshot_users (entra_id, active, source_hash, manager, user_name);
"#,
];

/// The migration after which mirrored users carry their fingerprint.
const PROPS_HASH_VERSION: usize = 4;

/// The schema version this release writes.
pub const CURRENT: i64 = MIGRATIONS.len() as i64;

fn version(conn: &Connection, path: &Path) -> Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| classify(path, e))
}

/// Brings a writer's database to the current version, one transaction per step.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let found = version(conn, path)?;
    if found > CURRENT {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found,
            known: CURRENT,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction().map_err(|e| classify(path, e))?;
        tx.execute_batch(sql).map_err(|e| classify(path, e))?;
        if i + 1 == PROPS_HASH_VERSION {
            backfill_props_hash(&tx).map_err(|e| classify(path, e))?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(|e| classify(path, e))?;
        tx.commit().map_err(|e| classify(path, e))?;
    }
    Ok(())
}

/// Gives users mirrored before migration 4 their fingerprint and manager (one pass, in the
/// migration's transaction).
pub(super) fn backfill_props_hash(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
    let mut read = tx.prepare("SELECT id, props FROM mirror_users")?;
    let mut write =
        tx.prepare("UPDATE mirror_users SET props_hash = ?2, manager = ?3 WHERE id = ?1")?;
    let mut rows = read.query([])?;
    while let Some(r) = rows.next()? {
        let (id, props): (String, String) = (r.get(0)?, r.get(1)?);
        let (hash, manager) = super::mirror::props_key(&props);
        write.execute(rusqlite::params![id, hash, manager])?;
    }
    Ok(())
}

/// A reader accepts only a schema it knows.
pub fn check_readable(conn: &Connection, path: &Path) -> Result<()> {
    let found = version(conn, path)?;
    if found > CURRENT {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found,
            known: CURRENT,
        });
    }
    if found == 0 {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            detail: "no entra-here-sync schema in it".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        {
            let c = Connection::open(&p).unwrap();
            c.pragma_update(None, "user_version", CURRENT + 1).unwrap();
        }
        let mut c = Connection::open(&p).unwrap();
        assert!(matches!(
            migrate(&mut c, &p),
            Err(StateError::TooNew { found, .. }) if found == CURRENT + 1
        ));
    }

    #[test]
    fn migration_is_idempotent() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c, Path::new(":memory:")).unwrap();
        migrate(&mut c, Path::new(":memory:")).unwrap();
        assert_eq!(version(&c, Path::new(":memory:")).unwrap(), CURRENT);
    }
}
