//! Operator commands that inspect rather than sync: `status` and `history` (from the
//! state file alone, read-only, so they work while the daemon runs and while Graph and
//! HERE are unreachable) and [`check`] (config, Graph and HERE access; writes nothing).

mod check;

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::Config;
use crate::cycle::{exit, quarantine_level};
use crate::state::State;

pub use check::check;

/// Delta links older than this get a warning: Graph expires them after 7 days.
const LINK_AGE_WARN_SECS: i64 = 6 * 24 * 3600;

fn open(cfg: &Config) -> Result<State, i32> {
    State::open_read_only(&cfg.state.path).map_err(|e| {
        eprintln!("entra-here-sync: {e}");
        exit::RUNTIME
    })
}

/// True when a writer (the daemon or a `sync`) holds the state's single-instance lock
/// now; `None` when that cannot be told. Only opens the lock file read-only and takes a
/// shared lock for an instant: it creates and writes nothing.
pub fn writer_active(state_path: &Path) -> Option<bool> {
    let mut lock = state_path.as_os_str().to_owned();
    lock.push(".lock");
    let file = match std::fs::File::open(PathBuf::from(lock)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Some(false)
        }
        Err(std::fs::TryLockError::WouldBlock) => Some(true),
        Err(_) => None,
    }
}

/// The warning for a delta link of this age, if it deserves one.
pub fn link_warning(age_secs: i64) -> Option<&'static str> {
    (age_secs > LINK_AGE_WARN_SECS).then_some(
        "older than 6 days: Graph expires delta links after 7 days, after which the next cycle re-reads everything (no spurious changes, but slower); make sure the daemon runs",
    )
}

/// `status [--json]`.
pub fn status(cfg: &Config, as_json: bool) -> i32 {
    let state = match open(cfg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let gathered = (|| -> Result<_, crate::state::StateError> {
        Ok((
            state.recent_runs(10)?,
            state.failures()?,
            state.skipped()?,
            state.delta_link_ages()?,
            state.snapshot_sizes()?,
        ))
    })();
    let (runs, failures, skipped, links, (users, active, groups)) = match gathered {
        Ok(g) => g,
        Err(e) => {
            eprintln!("entra-here-sync: {e}");
            return exit::RUNTIME;
        }
    };
    let writer = writer_active(&cfg.state.path);
    let quarantine = quarantine_level(&state);
    let mut warnings: Vec<String> = links
        .iter()
        .filter_map(|(r, age)| link_warning(*age).map(|w| format!("delta link {r} is {w}")))
        .collect();
    if quarantine > 0 {
        warnings.push(format!(
            "HERE failed most operations in the last {quarantine} cycle(s): the daemon backs off (interval × 2^{quarantine}, at most 24 h)"
        ));
    }
    if as_json {
        let links: Vec<_> = links
            .iter()
            .map(|(r, age)| json!({"resource": r, "age_secs": age, "stale": link_warning(*age).is_some()}))
            .collect();
        let doc = json!({
            "state": cfg.state.path,
            "writer_active": writer,
            "quarantine_level": quarantine,
            "runs": runs,
            "failing": failures,
            "skipped": skipped,
            "delta_links": links,
            "snapshot": {"users": users, "active_users": active, "groups": groups},
            "warnings": warnings,
        });
        println!("{doc}");
        return exit::OK;
    }
    println!("state: {}", cfg.state.path.display());
    let running = match writer {
        Some(true) => "in use by a running daemon (`run`) or `sync`",
        Some(false) => "no daemon or sync is using the state now",
        None => "cannot tell whether a daemon is running (lock file unreadable)",
    };
    println!("activity: {running}");
    println!("snapshot: {users} users ({active} active), {groups} groups");
    if links.is_empty() {
        println!("delta links: none yet (the next cycle reads everything)");
    }
    for (resource, age) in &links {
        let warn = link_warning(*age)
            .map(|w| format!("  WARNING: {w}"))
            .unwrap_or_default();
        println!("delta link {resource}: {}{warn}", age_text(*age));
    }
    if quarantine > 0 {
        println!(
            "WARNING: HERE failed most operations in the last {quarantine} cycle(s); the daemon backs off (interval × 2^{quarantine}, at most 24 h)"
        );
    }
    println!("last cycles (newest first):");
    if runs.is_empty() {
        println!("  none yet");
    }
    for (i, r) in runs.iter().enumerate() {
        let unfinished = if i == 0 && writer == Some(true) {
            "running now (or interrupted, if the daemon restarted since)"
        } else {
            "interrupted before it finished (what HERE acknowledged is kept)"
        };
        let summary = r
            .summary
            .as_ref()
            .and_then(|s| serde_json::from_value::<crate::report::Summary>(s.clone()).ok())
            .map(|s| s.one_line())
            .unwrap_or_else(|| unfinished.into());
        let dry = if r.dry_run { " (dry run)" } else { "" };
        let code = r
            .exit_code
            .map(|c| format!("exit {c}"))
            .unwrap_or_else(|| "no exit".into());
        println!("  #{} {} {code}{dry}: {summary}", r.id, r.started_at);
        if let Some(e) = &r.error {
            println!("      error: {e}");
        }
    }
    println!("failing objects: {}", failures.len());
    for f in &failures {
        println!(
            "  {} {} ({}) {}: {} — attempts {}, next try {} (see `entra-here-sync history {}`)",
            f.kind, f.name, f.entra_id, f.operation, f.error, f.attempts, f.next_try_at, f.entra_id
        );
    }
    println!("skipped objects: {}", skipped.len());
    for s in &skipped {
        println!("  {} {}: {}", s.kind, s.entra_id, s.reason);
    }
    exit::OK
}

fn age_text(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s old"),
        s if s < 7200 => format!("{} min old", s / 60),
        s if s < 172_800 => format!("{} h old", s / 3600),
        s => format!("{} days old", s / 86_400),
    }
}

/// `history <key> [--json]`.
pub fn history(cfg: &Config, key: &str, as_json: bool) -> i32 {
    let state = match open(cfg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rows = match state.history(key) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("entra-here-sync: {e}");
            return exit::RUNTIME;
        }
    };
    if as_json {
        println!("{}", json!({"key": key, "operations": rows}));
        return exit::OK;
    }
    if rows.is_empty() {
        println!("no operations recorded for {key:?}");
        return exit::OK;
    }
    for r in rows {
        let status = r
            .scim_status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{} {} {} {} (SCIM {status})",
            r.at, r.op, r.name, r.entra_id
        );
        if let Some(map) = r.changes.as_object() {
            let why = map.get("reason").and_then(|v| v.as_str());
            let why = why.filter(|_| r.op == "deactivate_user");
            if let Some(why) = why {
                println!("    why: {why}");
            }
            for (path, c) in map.iter().filter(|(p, _)| why.is_none() || *p != "reason") {
                match (c.get("old"), c.get("new")) {
                    (Some(old), Some(new)) => println!("    {path}: {old} → {new}"),
                    _ => println!("    {path}: {c}"),
                }
            }
        }
        if let Some(e) = r.error {
            println!("    error: {e}");
        }
    }
    exit::OK
}
