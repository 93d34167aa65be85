//! The SQLite state: directory mirror, pushed snapshot, delta links, escrow of failing
//! objects, run history and the per-object operation history.
//!
//! One file, WAL mode, mode 0600. A writer holds an exclusive lock on `<state>.lock` for
//! its whole life so two daemons can never push from the same state; readers (`status`,
//! `history`) open the database read-only and need no lock.

mod fingerprint;
mod history;
mod key_batch;
mod mirror;
mod scan;
mod schema;
mod snapshot;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

pub use fingerprint::fingerprint;
pub use history::{escrow_delay_secs, FailureRow, HistoryRow, OperationLog, RunRow, SkippedRow};
pub use key_batch::KeyBatch;
pub use mirror::{MirrorData, MirrorGroup, MirrorUser, ReadTxn};
pub use scan::{MirrorKey, PushedKey, UserKey};
pub use snapshot::{Ack, PushedRow, ScimIds, SnapGroup, SnapUser, Snapshot, UserRow};

/// Anything that went wrong with the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite said no.
    #[error("state file {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The file or its directory could not be created or opened.
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process is using this state for writing.
    #[error("state file {path} is in use by another entra-here-sync process (lock {lock}); stop the other instance (systemctl stop entra-here-sync) or point state.path elsewhere")]
    Locked { path: PathBuf, lock: PathBuf },
    /// A newer release wrote this file.
    #[error("state file {path} has schema version {found}, this release understands up to {known}; upgrade entra-here-sync or start over by deleting the file")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// The file is not a usable SQLite database.
    #[error("state file {path} is corrupt or not an entra-here-sync state ({detail}); move it aside and run `entra-here-sync sync --full` to start over (existing HERE users are adopted, not duplicated)")]
    Corrupt { path: PathBuf, detail: String },
    /// `status`/`history` on a state that does not exist yet.
    #[error("state file {path} does not exist yet: no cycle has run with this configuration")]
    Missing { path: PathBuf },
}

/// Result alias for state operations.
pub type Result<T> = std::result::Result<T, StateError>;

/// An open state database.
pub struct State {
    conn: Connection,
    path: PathBuf,
    /// Held for the writer's lifetime; dropping it releases the single-instance lock.
    _lock: Option<File>,
}

impl State {
    /// Opens (creating if needed) the state for a writer: takes the lock, migrates.
    pub fn open(path: &Path) -> Result<State> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let lock_path = lock_path(path);
        let lock = open_private(&lock_path).map_err(io)?;
        if lock.try_lock().is_err() {
            return Err(StateError::Locked {
                path: path.to_path_buf(),
                lock: lock_path,
            });
        }
        open_private(path).map_err(io)?;
        let conn = Connection::open(path).map_err(|e| sqlite(path, e))?;
        let mut state = State {
            conn,
            path: path.to_path_buf(),
            _lock: Some(lock),
        };
        state.configure()?;
        schema::migrate(&mut state.conn, path)?;
        Ok(state)
    }

    /// A fresh, migrated state that lives in memory only (no file, no lock), for tests and
    /// fuzzing.
    pub fn open_in_memory() -> Result<State> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| sqlite(&path, e))?;
        let mut state = State {
            conn,
            path,
            _lock: None,
        };
        state
            .conn
            .execute_batch("PRAGMA foreign_keys=ON;")
            .map_err(|e| state.err(e))?;
        schema::migrate(&mut state.conn, &state.path)?;
        Ok(state)
    }

    /// Opens an existing state read-only (no lock; works while the daemon runs).
    pub fn open_read_only(path: &Path) -> Result<State> {
        if !path.exists() {
            return Err(StateError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = read_only_connection(path).map_err(|e| sqlite(path, e))?;
        let state = State {
            conn,
            path: path.to_path_buf(),
            _lock: None,
        };
        state
            .conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| state.err(e))?;
        schema::check_readable(&state.conn, path)?;
        Ok(state)
    }

    /// A second, read-only connection to this writer's file, for work a cycle can do on
    /// another thread (what HERE acknowledged does not change while Graph is read). It sees
    /// what is committed; `None` for an in-memory state, which no second connection reaches.
    pub fn reader(&self) -> Result<Option<State>> {
        if self.path == Path::new(":memory:") {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| self.err(e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| self.err(e))?;
        Ok(Some(State {
            conn,
            path: self.path.clone(),
            _lock: None,
        }))
    }

    fn configure(&mut self) -> Result<()> {
        let path = self.path.clone();
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| classify(&path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::Corrupt {
                path,
                detail: format!("cannot switch to WAL mode (got {mode})"),
            });
        }
        self.conn
            .execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
            .map_err(|e| classify(&self.path, e))?;
        self.conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The file this state lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> StateError {
        classify(&self.path, e)
    }
}

/// A read-only connection that creates no file. A WAL database that no process has open
/// has no `-wal` file; a plain read-only open would create `-wal` and `-shm`, owned by
/// the reader (e.g. root running `status`), which then locks the service user out. So
/// such a file is read as immutable; one with a `-wal` (a writer is running) is read
/// normally, through the writer's `-wal`/`-shm`.
fn read_only_connection(path: &Path) -> rusqlite::Result<Connection> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let uri = std::fs::canonicalize(path)
        .ok()
        .and_then(|p| url::Url::from_file_path(p).ok());
    match uri {
        Some(uri) if !Path::new(&wal).exists() => Connection::open_with_flags(
            format!("{uri}?immutable=1"),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        ),
        _ => Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY),
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Creates the file with mode 0600 if missing (and tightens an existing one).
fn open_private(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        let f = opts.open(path)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(f)
    }
    #[cfg(not(unix))]
    {
        opts.open(path)
    }
}

fn sqlite(path: &Path, source: rusqlite::Error) -> StateError {
    classify(path, source)
}

/// Turns "not a database"-style errors into the operator-facing `Corrupt` error.
fn classify(path: &Path, source: rusqlite::Error) -> StateError {
    if let rusqlite::Error::SqliteFailure(code, _) = &source {
        if matches!(
            code.code,
            rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
        ) {
            return StateError::Corrupt {
                path: path.to_path_buf(),
                detail: source.to_string(),
            };
        }
    }
    StateError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Seconds since the Unix epoch (all timestamps in the state).
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_is_refused_and_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.db");
        let _first = State::open(&p).unwrap();
        let second = State::open(&p);
        assert!(matches!(second, Err(StateError::Locked { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(State::open_read_only(&p).is_ok(), "readers need no lock");
    }

    #[test]
    fn garbage_file_is_reported_as_corrupt_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.db");
        std::fs::write(&p, vec![0x42u8; 8192]).unwrap();
        let e = State::open(&p).err().unwrap();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("--full"));
    }

    #[test]
    fn a_writers_reader_sees_what_is_committed_and_cannot_write() {
        assert!(State::open_in_memory().unwrap().reader().unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let mut writer = State::open(&dir.path().join("state.db")).unwrap();
        writer.set_setting("k", "1").unwrap();
        let mut reader = writer.reader().unwrap().unwrap();
        writer.set_setting("k", "2").unwrap();
        assert_eq!(reader.setting("k").unwrap().as_deref(), Some("2"));
        assert!(reader.set_setting("k", "3").is_err(), "read-only");
        assert_eq!(writer.setting("k").unwrap().as_deref(), Some("2"));
    }

    #[test]
    fn missing_state_for_readers() {
        let dir = tempfile::tempdir().unwrap();
        let e = State::open_read_only(&dir.path().join("none.db"))
            .err()
            .unwrap();
        assert!(matches!(e, StateError::Missing { .. }));
    }
}
