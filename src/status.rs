//! Operator commands that inspect rather than sync: `status` and `history` (from the
//! state file alone) and `check` (config, Graph and HERE access; writes nothing).

use serde_json::json;

use crate::config::Config;
use crate::cycle::exit;
use crate::graph::GraphClient;
use crate::scim::ScimClient;
use crate::state::State;

/// Delta links older than this get a warning: Graph expires them after 7 days.
const LINK_AGE_WARN_SECS: i64 = 6 * 24 * 3600;

fn open(cfg: &Config) -> Result<State, i32> {
    State::open_read_only(&cfg.state.path).map_err(|e| {
        eprintln!("entra-here-sync: {e}");
        exit::RUNTIME
    })
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
    if as_json {
        let links: Vec<_> = links
            .iter()
            .map(|(r, age)| json!({"resource": r, "age_secs": age, "stale": *age > LINK_AGE_WARN_SECS}))
            .collect();
        let doc = json!({
            "state": cfg.state.path,
            "runs": runs,
            "failing": failures,
            "skipped": skipped,
            "delta_links": links,
            "snapshot": {"users": users, "active_users": active, "groups": groups},
        });
        println!("{doc}");
        return exit::OK;
    }
    println!("state: {}", cfg.state.path.display());
    println!("snapshot: {users} users ({active} active), {groups} groups");
    for (resource, age) in &links {
        let warn = if *age > LINK_AGE_WARN_SECS {
            "  WARNING: Graph expires delta links after 7 days; the next cycle may need a full resync"
        } else {
            ""
        };
        println!("delta link {resource}: {}{warn}", age_text(*age));
    }
    println!("last cycles (newest first):");
    if runs.is_empty() {
        println!("  none yet");
    }
    for r in &runs {
        let summary = r
            .summary
            .as_ref()
            .and_then(|s| serde_json::from_value::<crate::report::Summary>(s.clone()).ok())
            .map(|s| s.one_line())
            .unwrap_or_else(|| "still running or interrupted".into());
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
            "  {} {} ({}) {}: {} — attempt {}, next try {} (see `entra-here-sync history {}`)",
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
            for (path, c) in map {
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

/// `check`: one line per check, exit 0 only if all pass.
pub async fn check(cfg: &Config) -> i32 {
    let mut ok = true;
    let mut line = |pass: bool, what: &str, detail: String| {
        ok &= pass;
        println!("{} {what}: {detail}", if pass { "✓" } else { "✗" });
    };
    line(true, "config", format!("{} is valid", cfg.path.display()));
    match GraphClient::new(&cfg.graph, cfg.here.timeout) {
        Err(e) => line(false, "Graph credential", e.to_string()),
        Ok(graph) => {
            match graph.check_token().await {
                Ok(()) => line(
                    true,
                    "Graph token",
                    format!("issued for tenant {}", cfg.graph.tenant_id),
                ),
                Err(e) => line(false, "Graph token", e.to_string()),
            }
            match graph.service_principal().await {
                Ok(sp) => line(
                    true,
                    "service principal",
                    format!(
                        "{} ({})",
                        sp["displayName"].as_str().unwrap_or("?"),
                        cfg.graph.service_principal_id
                    ),
                ),
                Err(e) => line(false, "service principal", e.to_string()),
            }
        }
    }
    match ScimClient::new(&cfg.here) {
        Err(e) => line(false, "HERE token", e.to_string()),
        Ok(scim) => match scim.probe().await {
            Ok(_) => line(
                true,
                "HERE SCIM",
                format!("{} answered GET /ServiceProviderConfig", cfg.here.base_url),
            ),
            Err(e) => line(false, "HERE SCIM", e.to_string()),
        },
    }
    if ok {
        exit::OK
    } else {
        exit::RUNTIME
    }
}
