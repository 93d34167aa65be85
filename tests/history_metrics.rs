//! `history` answers "when and why was this user changed or deactivated", its retention,
//! `status` pointing at it, and the Prometheus endpoint of `run` (issue 7).

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{binary, edit_config, run_binary, Harness};
use entra_here_sync::demo::upn;
use entra_here_sync::sim::ScimFaults;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_create_update_and_deactivation_with_what_changed_and_why() {
    let h = Harness::new("").await;
    let id = h.add_user(1);
    h.sim.graph.assign(&id);
    assert_eq!(h.sync().await.users_created, 1);
    h.sim
        .graph
        .update_user(&id, json!({"jobTitle": "Senior Engineer"}));
    assert_eq!(h.sync().await.users_updated, 1);
    h.sim.graph.unassign(&id);
    assert_eq!(h.sync().await.users_deactivated, 1);

    let out = run_binary(&h, &["history", &upn(1)]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let heads: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(heads.len(), 3, "{text}");
    for (line, op) in heads
        .iter()
        .zip(["create_user", "update_user", "deactivate_user"])
    {
        assert!(line.contains(op) && line.contains(&upn(1)), "{op}: {line}");
        assert!(line.contains(&id), "{line}");
    }
    assert!(
        text.contains("title: \"Engineer\" → \"Senior Engineer\""),
        "old → new: {text}"
    );
    assert!(
        text.contains("why: no longer assigned to the app"),
        "why: {text}"
    );
    assert!(text.contains("active: true → false"), "{text}");

    let out = run_binary(&h, &["history", &id, "--json"]).await;
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let ops = doc["operations"].as_array().unwrap();
    let names: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
    assert_eq!(names, ["create_user", "update_user", "deactivate_user"]);
    assert_eq!(ops[0]["changes"]["userName"], json!(upn(1)));
    assert_eq!(
        ops[1]["changes"]["title"],
        json!({"old": "Engineer", "new": "Senior Engineer"})
    );
    assert_eq!(
        ops[2]["changes"]["active"],
        json!({"old": true, "new": false})
    );
    assert!(ops[2]["changes"]["reason"]
        .as_str()
        .unwrap()
        .contains("no longer assigned"));
    assert!(ops.iter().all(|o| o["at"].as_str().unwrap().ends_with('Z')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_objects_point_at_history_and_old_history_is_pruned() {
    let h = Harness::new("").await;
    edit_config(&h, "[state]\n", "[state]\nhistory_days = 30\n");
    let (ok, bad) = (h.add_user(1), h.add_user(2));
    h.sim.graph.assign(&ok);
    h.sim.graph.assign(&bad);
    h.sim.scim.set_faults(ScimFaults {
        fail_user_names: [upn(2)].into(),
        ..ScimFaults::default()
    });
    assert_eq!(h.sync().await.exit_code, 3);
    let out = run_binary(&h, &["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("entra-here-sync history {bad}")),
        "status names the history command: {text}"
    );
    let out = run_binary(&h, &["history", &bad]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("create_user") && text.contains("error:"),
        "{text}"
    );

    let path = h.config().state.path;
    let old = chrono::Utc::now().timestamp() - 31 * 86_400;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO operations (run_id, at, entra_id, kind, name, op, changes) VALUES (NULL, ?1, 'gone', 'user', 'gone@x', 'create_user', '{}')",
        [old],
    )
    .unwrap();
    drop(conn);
    assert_eq!(h.state().history("gone").unwrap().len(), 1);
    h.sim.scim.set_faults(ScimFaults::default());
    assert_eq!(h.sync().await.exit_code, 0);
    let state = h.state();
    assert!(
        state.history("gone").unwrap().is_empty(),
        "older than history_days"
    );
    assert_eq!(state.history(&ok).unwrap().len(), 1, "recent history stays");
}

/// One sample of the exposition: (name, labels, value).
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the text exposition line by line; panics on a line that is not a sample,
/// a comment or empty.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                (name.to_string(), parse_labels(body))
            }
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        out.push((name, labels, value));
    }
    out
}

fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "quoted label value in {body}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn scrape(url: &str) -> Option<(String, String)> {
    let resp = reqwest::get(url).await.ok()?;
    let ctype = resp
        .headers()
        .get("content-type")?
        .to_str()
        .ok()?
        .to_string();
    Some((ctype, resp.text().await.ok()?))
}

/// Scrapes until `done` holds for the parsed samples (the daemon cycles every second).
async fn scrape_until(url: &str, what: &str, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let t0 = Instant::now();
    loop {
        if let Some((_, text)) = scrape(url).await {
            let samples = parse_exposition(&text);
            if done(&samples) {
                return samples;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_endpoint_serves_prometheus_text_and_counters_follow_cycles() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra =
        format!("\n[schedule]\nevery = \"1s\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let h = Harness::new(&extra).await;
    let ids: Vec<String> = (1..=3).map(|i| h.add_user(i)).collect();
    ids.iter().for_each(|id| h.sim.graph.assign(id));
    let mut c = binary(&h);
    c.arg("run")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _daemon = Daemon(c.spawn().expect("daemon starts"));
    let url = format!("http://127.0.0.1:{port}/metrics");

    let ok = |s: &[Sample]| value(s, "entra_here_sync_cycles_total", &[("result", "ok")]);
    let first = scrape_until(&url, "a first cycle", |s| ok(s).is_some_and(|n| n >= 1.0)).await;
    let created = [("kind", "create_user"), ("result", "ok")];
    assert_eq!(
        value(&first, "entra_here_sync_operations_total", &created),
        Some(3.0)
    );
    let (ctype, text) = scrape(&url).await.expect("scrape");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(
        text.contains("# TYPE entra_here_sync_cycles counter"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let cycles_before = ok(&first).unwrap();

    h.sim
        .graph
        .update_user(&ids[0], json!({"jobTitle": "Architect"}));
    let updated = [("kind", "update_user"), ("result", "ok")];
    let after = scrape_until(&url, "the update's cycle", |s| {
        value(s, "entra_here_sync_operations_total", &updated) == Some(1.0)
    })
    .await;
    let cycles = ok(&after).unwrap();
    assert!(cycles > cycles_before, "{cycles} > {cycles_before}");
    assert_eq!(
        value(&after, "entra_here_sync_operations_total", &created),
        Some(3.0),
        "counters only grow by what cycles did"
    );
    assert_eq!(
        value(&after, "entra_here_sync_cycle_duration_seconds_count", &[]),
        Some(cycles),
        "one duration observation per cycle"
    );
    let scim = value(&after, "entra_here_sync_scim_requests_total", &[]).unwrap();
    assert!(scim >= 4.0, "3 creates + 1 update: {scim}");
    assert!(value(&after, "entra_here_sync_graph_requests_total", &[]).unwrap() > 0.0);
    assert_eq!(
        value(&after, "entra_here_sync_brake_engaged", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&after, "entra_here_sync_escrow_objects", &[]),
        Some(0.0)
    );
    let last = value(
        &after,
        "entra_here_sync_last_success_timestamp_seconds",
        &[],
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - last).abs() < 120.0, "{last} vs {now}");
    let age = value(
        &after,
        "entra_here_sync_delta_link_age_seconds",
        &[("resource", "users")],
    )
    .expect("delta link age");
    assert!((0.0..120.0).contains(&age), "{age}");
}
