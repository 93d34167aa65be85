//! Run history, per-object operation history, escrow of failing objects, skipped objects.

use std::collections::BTreeSet;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

use super::{now, Result, State};

/// One pushed (or failed) operation, for `history`.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationLog {
    pub run_id: Option<i64>,
    pub entra_id: String,
    /// `user` or `group`.
    pub kind: &'static str,
    /// userName or group displayName at the time.
    pub name: String,
    pub op: String,
    /// Changed attributes: `{path: {"old": .., "new": ..}}` or member lists.
    pub changes: Value,
    pub scim_status: Option<u16>,
    pub error: Option<String>,
}

/// A row of `history`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryRow {
    pub at: String,
    pub run_id: Option<i64>,
    pub entra_id: String,
    pub kind: String,
    pub name: String,
    pub op: String,
    pub changes: Value,
    pub scim_status: Option<u16>,
    pub error: Option<String>,
}

/// An object in escrow.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailureRow {
    pub entra_id: String,
    pub kind: String,
    pub name: String,
    pub operation: String,
    pub error: String,
    pub attempts: i64,
    pub first_failed_at: String,
    pub next_try_at: String,
}

/// An object skipped for bad source data.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SkippedRow {
    pub entra_id: String,
    pub kind: String,
    pub reason: String,
}

/// A row of run history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub dry_run: bool,
    pub exit_code: Option<i64>,
    pub summary: Option<Value>,
    pub error: Option<String>,
}

/// Delay before the next attempt after `attempts` failures: the next cycle first (most
/// failures are transient), then 1 h, 6 h, 12 h and daily — Entra's escrow, compressed.
pub fn escrow_delay_secs(attempts: i64) -> i64 {
    match attempts {
        i64::MIN..=1 => 0,
        2 => 3600,
        3 => 6 * 3600,
        4 => 12 * 3600,
        _ => 24 * 3600,
    }
}

fn time_text(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn history_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryRow> {
    let changes: String = r.get(6)?;
    Ok(HistoryRow {
        at: time_text(r.get(0)?),
        run_id: r.get(1)?,
        entra_id: r.get(2)?,
        kind: r.get(3)?,
        name: r.get(4)?,
        op: r.get(5)?,
        changes: serde_json::from_str(&changes).unwrap_or(Value::Null),
        scim_status: r.get(7)?,
        error: r.get(8)?,
    })
}

pub(super) fn insert_operation(
    tx: &rusqlite::Connection,
    log: &OperationLog,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO operations (run_id, at, entra_id, kind, name, op, changes, scim_status, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        log.run_id,
        now(),
        log.entra_id,
        log.kind,
        log.name,
        log.op,
        log.changes.to_string(),
        log.scim_status,
        log.error
    ])?;
    Ok(())
}

impl State {
    /// Starts a run-history row.
    pub fn start_run(&mut self, dry_run: bool) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs (started_at, dry_run) VALUES (?1, ?2)",
                params![now(), dry_run as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Completes a run-history row.
    pub fn finish_run(
        &mut self,
        id: i64,
        exit_code: i32,
        summary: &Value,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, exit_code = ?3, summary = ?4, error = ?5 WHERE id = ?1",
                params![id, now(), exit_code, summary.to_string(), error],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The newest `limit` runs, newest first.
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunRow>> {
        let err = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, started_at, finished_at, dry_run, exit_code, summary, error
                 FROM runs ORDER BY id DESC LIMIT ?1",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                let summary: Option<String> = r.get(5)?;
                Ok(RunRow {
                    id: r.get(0)?,
                    started_at: time_text(r.get(1)?),
                    finished_at: r.get::<_, Option<i64>>(2)?.map(time_text),
                    dry_run: r.get::<_, i64>(3)? != 0,
                    exit_code: r.get(4)?,
                    summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
                    error: r.get(6)?,
                })
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    /// Records a failed operation: history row plus escrow entry with its next try.
    pub fn record_failure(&mut self, log: &OperationLog) -> Result<()> {
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        insert_operation(&tx, log).map_err(err)?;
        let attempts: i64 = tx
            .query_row(
                "SELECT attempts FROM failures WHERE entra_id = ?1",
                [&log.entra_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?
            .unwrap_or(0)
            + 1;
        let t = now();
        tx.execute(
            "INSERT INTO failures (entra_id, kind, name, operation, error, attempts, first_failed_at, last_failed_at, next_try_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
             ON CONFLICT(entra_id) DO UPDATE SET name = excluded.name, operation = excluded.operation,
                 error = excluded.error, attempts = excluded.attempts,
                 last_failed_at = excluded.last_failed_at, next_try_at = excluded.next_try_at",
            params![
                log.entra_id,
                log.kind,
                log.name,
                log.op,
                log.error.as_deref().unwrap_or("unknown error"),
                attempts,
                t,
                t + escrow_delay_secs(attempts)
            ],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Objects whose next try is still in the future (the planner leaves them alone).
    pub fn held_in_escrow(&self) -> Result<BTreeSet<String>> {
        let err = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare("SELECT entra_id FROM failures WHERE next_try_at > ?1")
            .map_err(err)?;
        let rows = stmt.query_map([now()], |r| r.get(0)).map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    /// Makes every escrowed object due now (`sync --full`).
    pub fn release_escrow(&mut self) -> Result<()> {
        self.conn
            .execute("UPDATE failures SET next_try_at = 0", [])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Everything in escrow, oldest failure first.
    pub fn failures(&self) -> Result<Vec<FailureRow>> {
        let err = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT entra_id, kind, name, operation, error, attempts, first_failed_at, next_try_at
                 FROM failures ORDER BY first_failed_at, entra_id",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(FailureRow {
                    entra_id: r.get(0)?,
                    kind: r.get(1)?,
                    name: r.get(2)?,
                    operation: r.get(3)?,
                    error: r.get(4)?,
                    attempts: r.get(5)?,
                    first_failed_at: time_text(r.get(6)?),
                    next_try_at: time_text(r.get(7)?),
                })
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    /// Replaces the list of skipped objects with this cycle's.
    pub fn set_skipped(&mut self, skipped: &[SkippedRow]) -> Result<()> {
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("DELETE FROM skipped", []).map_err(err)?;
        for s in skipped {
            tx.execute(
                "INSERT OR REPLACE INTO skipped (entra_id, kind, reason, seen_at) VALUES (?1, ?2, ?3, ?4)",
                params![s.entra_id, s.kind, s.reason, now()],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Objects skipped by the last cycle.
    pub fn skipped(&self) -> Result<Vec<SkippedRow>> {
        let err = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare("SELECT entra_id, kind, reason FROM skipped ORDER BY entra_id")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SkippedRow {
                    entra_id: r.get(0)?,
                    kind: r.get(1)?,
                    reason: r.get(2)?,
                })
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    /// Every operation for an object id, userName or group name, oldest first.
    pub fn history(&self, key: &str) -> Result<Vec<HistoryRow>> {
        let err = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT at, run_id, entra_id, kind, name, op, changes, scim_status, error FROM operations
                 WHERE entra_id = ?1 OR entra_id IN (SELECT entra_id FROM operations WHERE name = ?1 COLLATE NOCASE)
                 ORDER BY id",
            )
            .map_err(err)?;
        let rows = stmt.query_map([key], history_row).map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    /// Every operation one run recorded, in order (provisioning on demand prints them).
    pub fn run_operations(&self, run_id: i64) -> Result<Vec<HistoryRow>> {
        let err = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT at, run_id, entra_id, kind, name, op, changes, scim_status, error FROM operations
                 WHERE run_id = ?1 ORDER BY id",
            )
            .map_err(err)?;
        let rows = stmt.query_map([run_id], history_row).map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    /// Deletes operation history recorded before `cutoff` (Unix seconds), and finished runs
    /// started before it (`state.history_days`); returns the operation rows deleted.
    pub fn prune_history(&mut self, cutoff: i64) -> Result<usize> {
        let path = self.path.clone();
        let err = |e| super::classify(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let n = tx
            .execute("DELETE FROM operations WHERE at < ?1", [cutoff])
            .map_err(err)?;
        tx.execute(
            "DELETE FROM runs WHERE started_at < ?1 AND finished_at IS NOT NULL
                 AND id < (SELECT MAX(id) FROM runs)",
            [cutoff],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// (operation, succeeded, count) of the operations recorded by one run (metrics).
    pub fn operation_counts(&self, run_id: i64) -> Result<Vec<(String, bool, u64)>> {
        let err = |e| self.err(e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT op, error IS NULL, COUNT(*) FROM operations WHERE run_id = ?1
                 GROUP BY op, error IS NULL ORDER BY op",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? != 0,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    /// Counts for `status`: (users, active users, groups) in the snapshot.
    pub fn snapshot_sizes(&self) -> Result<(i64, i64, i64)> {
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM snapshot_users),
                        (SELECT COUNT(*) FROM snapshot_users WHERE active = 1),
                        (SELECT COUNT(*) FROM snapshot_groups)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| self.err(e))
    }

    /// A small persistent setting (e.g. the mapping fingerprint).
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Stores a small persistent setting.
    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failing(op: &str) -> OperationLog {
        OperationLog {
            run_id: Some(1),
            entra_id: "u1".into(),
            kind: "user",
            name: "a@x".into(),
            op: op.into(),
            changes: json!({}),
            scim_status: Some(400),
            error: Some("400 invalidValue".into()),
        }
    }

    #[test]
    fn escrow_grows_and_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("s.db")).unwrap();
        s.record_failure(&failing("create_user")).unwrap();
        assert!(
            s.held_in_escrow().unwrap().is_empty(),
            "first retry is the next cycle"
        );
        s.record_failure(&failing("create_user")).unwrap();
        assert!(s.held_in_escrow().unwrap().contains("u1"));
        let f = s.failures().unwrap();
        assert_eq!(f[0].attempts, 2);
        assert_eq!(
            s.history("A@X").unwrap().len(),
            2,
            "history by name is case-insensitive"
        );
        s.release_escrow().unwrap();
        assert!(s.held_in_escrow().unwrap().is_empty());
        assert!(escrow_delay_secs(3) < escrow_delay_secs(4));
    }

    #[test]
    fn runs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("s.db")).unwrap();
        let id = s.start_run(false).unwrap();
        s.finish_run(id, 3, &json!({"failed": 1}), Some("x"))
            .unwrap();
        let runs = s.recent_runs(5).unwrap();
        assert_eq!(runs[0].exit_code, Some(3));
        assert_eq!(runs[0].summary.as_ref().unwrap()["failed"], json!(1));
    }
}
