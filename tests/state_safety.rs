//! Secrets and the state file (issue 5): nothing secret reaches the output or the state
//! even at `trace`; one process at a time; a state from a newer release or a garbage file
//! is refused with a message that says what to do.

mod common;

use common::{edit_config, run_binary, Harness};
use entra_here_sync::state::State;

/// Users 1–6 assigned directly, 7–10 through an assigned group.
fn small_tenant(h: &Harness) {
    let users: Vec<String> = (1..=10).map(|i| h.add_user(i)).collect();
    for u in &users[..6] {
        h.sim.graph.assign(u);
    }
    let members: Vec<&str> = users[6..].iter().map(String::as_str).collect();
    let g = h.sim.graph.add_group("Browser Users", &members);
    h.sim.graph.assign(&g);
}

/// The secret itself plus its long pieces (a JWT's segments), so a partial leak is found too.
fn needles(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_string()];
    out.extend(
        secret
            .split('.')
            .filter(|p| p.len() >= 16 && *p != secret)
            .map(str::to_string),
    );
    out
}

fn assert_free_of(what: &str, haystack: &[u8], secrets: &[(String, String)]) {
    for (name, secret) in secrets {
        for needle in needles(secret) {
            let found = haystack
                .windows(needle.len())
                .any(|w| w == needle.as_bytes());
            assert!(!found, "{what} contains the {name} (or a piece of it)");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_json_and_state_hold_no_secret() {
    let h = Harness::new("").await;
    edit_config(&h, "level = \"warn\"", "level = \"trace\"");
    small_tenant(&h);
    let first = run_binary(&h, &["sync"]).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    h.add_user(11);
    let id = h.sim.graph.user_ids().pop().unwrap();
    h.sim.graph.assign(&id);
    // a reader keeps the WAL from being checkpointed away when the binary exits
    let reader = h.state();
    let second = run_binary(&h, &["sync", "--json"]).await;
    assert!(second.status.success());
    let summary: serde_json::Value =
        serde_json::from_slice(&second.stdout).expect("stdout is one JSON object");
    assert_eq!(summary["users_created"], 1, "{summary}");
    let trace = String::from_utf8_lossy(&first.stderr);
    assert!(
        trace.contains("TRACE") || trace.contains("DEBUG"),
        "the run really logged at trace level"
    );

    let mut secrets = vec![
        (
            "Graph client secret".to_string(),
            h.sim.graph.client_secret(),
        ),
        ("SCIM JWT".to_string(), h.sim.scim.token()),
    ];
    let issued = h.sim.graph.issued_tokens();
    assert!(!issued.is_empty());
    for t in issued {
        secrets.push(("Graph access token".to_string(), t));
    }
    for (label, out) in [("first sync", &first), ("sync --json", &second)] {
        assert_free_of(&format!("{label} stdout"), &out.stdout, &secrets);
        assert_free_of(&format!("{label} stderr"), &out.stderr, &secrets);
    }
    let state = h.config().state.path;
    let mut files = 0;
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("state.db") {
            files += 1;
            assert_free_of(&name, &std::fs::read(&path).unwrap(), &secrets);
        }
    }
    assert!(
        files >= 2 && state.exists(),
        "state file and its WAL were searched"
    );
    drop(reader);
    let status = run_binary(&h, &["status", "--json"]).await;
    assert_free_of("status --json", &status.stdout, &secrets);
    let history = run_binary(&h, &["history", &entra_here_sync::demo::upn(1)]).await;
    assert_free_of("history", &history.stdout, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance_is_refused_while_the_state_is_held() {
    let h = Harness::new("").await;
    small_tenant(&h);
    let held = State::open(&h.config().state.path).expect("first writer");
    let out = run_binary(&h, &["sync"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(h.sim.scim.request_log().is_empty(), "nothing pushed");
    drop(held);
    let out = run_binary(&h, &["sync"]).await;
    assert!(out.status.success(), "the lock goes with its holder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_from_a_newer_release_is_refused() {
    let h = Harness::new("").await;
    small_tenant(&h);
    let path = h.config().state.path;
    drop(State::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let out = run_binary(&h, &["sync"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("schema version 99") && stderr.contains("upgrade"),
        "{stderr}"
    );
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(h.sim.scim.request_log().is_empty(), "nothing pushed");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 99, "the newer state is left as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_state_file_is_refused_with_the_way_to_start_over() {
    let h = Harness::new("").await;
    small_tenant(&h);
    let path = h.config().state.path;
    let garbage = "this is not an entra-here-sync state file\n".repeat(200);
    std::fs::write(&path, &garbage).unwrap();
    for args in [&["sync"][..], &["status"][..]] {
        let out = run_binary(&h, args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{args:?} names the file: {stderr}"
        );
        assert!(
            stderr.contains("start over") && stderr.contains("move it aside"),
            "{args:?} says how to start over: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        garbage,
        "the file is left for the operator"
    );
    assert!(h.sim.scim.request_log().is_empty(), "nothing pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_from_the_previous_schema_is_upgraded_without_planning_anyone_again() {
    let h = Harness::new("").await;
    small_tenant(&h);
    assert_eq!(h.sync().await.exit_code, 0);
    // back to schema version 3: no stored fingerprints beside the mirrored users
    let path = h.config().state.path;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP INDEX mirror_users_plan; DROP INDEX snapshot_users_plan;
         ALTER TABLE mirror_users DROP COLUMN manager;
         ALTER TABLE mirror_users DROP COLUMN props_hash;
         PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(conn);
    let changed = h.sim.graph.user_ids()[2].clone();
    h.sim
        .graph
        .update_user(&changed, serde_json::json!({"jobTitle": "Pilot"}));
    h.sim.scim.clear_log();
    let summary = h.sync().await;
    assert_eq!(summary.exit_code, 0, "{:?}", summary.error);
    assert_eq!(
        (
            summary.users_created,
            summary.users_updated,
            summary.users_deactivated
        ),
        (0, 1, 0),
        "only the changed user is pushed"
    );
    assert_eq!(h.scim_writes().len(), 1, "{:?}", h.scim_writes());
    let mut keys = 0;
    h.state()
        .for_each_user_key(|k| {
            keys += 1;
            assert!(k.mirror.is_some_and(|m| m.props_hash.is_some()), "{k:?}");
        })
        .unwrap();
    assert_eq!(keys, 10);
    h.sim.scim.clear_log();
    assert_eq!(h.sync().await.exit_code, 0);
    assert!(h.scim_writes().is_empty(), "{:?}", h.scim_writes());
}
