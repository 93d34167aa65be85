//! Reliability and safety (issue 5): transient faults, the mass-deactivation brake, a
//! Graph read that fails half-way, escrow, quarantine and Graph token refresh.
//! Crash safety is in `crash_safety.rs`; secrets and the state file in `state_safety.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{run_binary, verify_target, Harness};
use entra_here_sync::cycle::{quarantine_level, CycleOptions};
use entra_here_sync::demo::upn;
use entra_here_sync::sim::{GraphFaults, ScimFaults};
use serde_json::{json, Value};

/// Users `1..=n` assigned directly, except `group_from..=n`, which are the members of one
/// assigned group "Browser Users". Returns the Entra ids (index 0 unused) and the group id.
fn tenant(h: &Harness, n: usize, group_from: usize) -> (Vec<String>, String) {
    let mut u = vec![String::new()];
    for i in 1..=n {
        u.push(h.add_user(i));
    }
    for id in &u[1..group_from] {
        h.sim.graph.assign(id);
    }
    let members: Vec<&str> = u[group_from..].iter().map(String::as_str).collect();
    let g = h.sim.graph.add_group("Browser Users", &members);
    h.sim.graph.assign(&g);
    (u, g)
}

/// POSTs to /Users by userName (lower case): (status, whether the server created it).
/// A POST answered 500 after it was applied still names the resource it created.
fn user_posts(h: &Harness) -> BTreeMap<String, Vec<(u16, bool)>> {
    let mut out: BTreeMap<String, Vec<(u16, bool)>> = BTreeMap::new();
    for r in h.sim.scim.request_log() {
        if r.method == "POST" && r.resource_type.as_deref() == Some("Users") {
            let name = r.body.as_ref().and_then(|b| b["userName"].as_str());
            let name = name.unwrap_or_default().to_lowercase();
            let created = r.status == 201 || (r.status == 500 && r.resource_id.is_some());
            out.entry(name).or_default().push((r.status, created));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_converge_within_three_cycles_without_duplicates() {
    let h = Harness::new("").await;
    tenant(&h, 80, 41);
    h.sim.graph.set_faults(GraphFaults {
        rate_429: 0.10,
        retry_after_secs: 1,
        ..GraphFaults::default()
    });
    h.sim.scim.set_faults(ScimFaults {
        rate_500: 0.20,
        rate_429: 0.10,
        rate_500_after_commit: 0.05,
        retry_after_secs: 1,
        ..ScimFaults::default()
    });
    let mut codes = Vec::new();
    for _ in 0..3 {
        let s = h.sync().await;
        codes.push(s.exit_code);
        assert!(matches!(s.exit_code, 0 | 3), "cycle failed: {s:?}");
        if s.exit_code == 0 {
            break;
        }
    }
    assert_eq!(
        codes.last(),
        Some(&0),
        "not clean within 3 cycles: {codes:?}"
    );
    verify_target(&h.sim, &[]);

    let log = h.sim.scim.request_log();
    let count = |status: u16| log.iter().filter(|r| r.status == status).count();
    assert!(count(429) > 0 && count(500) > 0, "faults were injected");
    assert!(
        h.sim.graph.request_log().iter().any(|r| r.status == 429),
        "Graph throttled some reads"
    );
    let posts = user_posts(&h);
    let mut lost_answers = 0;
    for (name, tries) in &posts {
        let created = tries.iter().filter(|(_, c)| *c).count();
        assert_eq!(created, 1, "{name} was created {created} times: {tries:?}");
        if tries.iter().any(|(s, c)| *s == 500 && *c) {
            lost_answers += 1;
            assert!(
                tries.iter().any(|(s, _)| *s == 409),
                "{name}: its POST's answer was lost, so the retry must meet 409: {tries:?}"
            );
        }
        let adopted = log.iter().any(|r| {
            r.method == "GET"
                && r.query
                    .get("filter")
                    .is_some_and(|f| f.contains(name.as_str()))
        });
        if tries.iter().any(|(s, _)| *s == 409) {
            assert!(adopted, "{name}: a 409 is resolved by looking the user up");
        }
    }
    assert!(
        lost_answers > 0,
        "some POST answers were lost (rate_500_after_commit), exercising 409 adoption"
    );
    let clean = h.sync().await;
    assert_eq!((clean.exit_code, clean.planned), (0, 0), "{clean:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deactivation_brake_stops_everything_until_overridden() {
    let h = Harness::new("[sync]\nmax_deactivations = 5\n").await;
    let (u, g) = tenant(&h, 20, 6);
    assert_eq!(h.sync().await.exit_code, 0);
    verify_target(&h.sim, &[]);
    h.sim.graph.unassign(&g);
    for _ in 0..2 {
        h.sim.scim.clear_log();
        let s = h.sync().await;
        assert_eq!(s.exit_code, 4, "{s:?}");
        assert_eq!(
            s.users_deactivated, 15,
            "the summary names the numbers: {s:?}"
        );
        let e = s.error.as_deref().unwrap_or_default();
        assert!(e.contains("15") && e.contains("max_deactivations"), "{e}");
        assert!(h.sim.scim.request_log().is_empty(), "nothing pushed");
        assert!(
            h.sim
                .scim
                .users()
                .iter()
                .all(|x| x["active"] == json!(true)),
            "nobody deactivated"
        );
    }
    let s = h
        .sync_with(CycleOptions {
            allow_mass_deactivation: true,
            ..CycleOptions::default()
        })
        .await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert_eq!((s.users_deactivated, s.groups_deleted), (15, 1), "{s:?}");
    let gone: Vec<String> = (6..=20).map(upn).collect();
    let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
    verify_target(&h.sim, &gone);
    assert_eq!(u.len(), 21);
    let again = h.sync().await;
    assert_eq!(
        (again.exit_code, again.planned),
        (0, 0),
        "override applied once: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_read_failing_half_way_changes_nothing_and_is_repeated() {
    let h = Harness::new("").await;
    let (u, g) = tenant(&h, 12, 7);
    assert_eq!(h.sync().await.exit_code, 0);
    // changes on both delta rounds: users (new, updated, disabled) and groups (members)
    let newcomer = h.add_user(13);
    h.sim.graph.assign(&newcomer);
    h.sim
        .graph
        .update_user(&u[2], json!({"jobTitle": "Architect"}));
    h.sim.graph.disable_user(&u[3]);
    h.sim.graph.unassign(&u[4]);
    h.sim.graph.remove_member(&g, &u[8]);
    h.sim.graph.add_member(&g, &u[5]);
    let state_before = {
        let st = h.state();
        (
            st.load_mirror().unwrap(),
            st.delta_link("users").unwrap(),
            st.delta_link("groups").unwrap(),
            st.load_snapshot().unwrap(),
        )
    };
    assert!(state_before.1.is_some() && state_before.2.is_some());
    h.sim.graph.set_faults(GraphFaults {
        page_size: Some(1),
        fail_delta_after_pages: Some(4),
        ..GraphFaults::default()
    });
    h.sim.scim.clear_log();
    h.sim.graph.clear_log();
    let failed = h.sync().await;
    assert_eq!(failed.exit_code, 1, "{failed:?}");
    assert!(failed.error.is_some());
    assert!(
        h.sim.scim.request_log().is_empty(),
        "a failed read is never planned or pushed"
    );
    // the users round reached its new delta link; the groups round then failed
    let graph_log = h.sim.graph.request_log();
    let statuses = |p: &str| -> Vec<u16> {
        graph_log
            .iter()
            .filter(|r| r.path.ends_with(p))
            .map(|r| r.status)
            .collect()
    };
    let users_pages = statuses("/users/delta");
    assert!(
        users_pages.len() >= 2 && users_pages.iter().all(|s| *s == 200),
        "{users_pages:?}"
    );
    assert!(statuses("/groups/delta").contains(&500));
    let st = h.state();
    assert_eq!(
        st.load_mirror().unwrap(),
        state_before.0,
        "mirror untouched"
    );
    assert_eq!(st.delta_link("users").unwrap(), state_before.1);
    assert_eq!(st.delta_link("groups").unwrap(), state_before.2);
    assert_eq!(st.load_snapshot().unwrap(), state_before.3);
    drop(st);

    h.sim.graph.set_faults(GraphFaults::default());
    let s = h.sync().await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert_eq!(
        (s.users_created, s.users_deactivated, s.users_updated),
        (1, 3, 1),
        "newcomer; u3 disabled, u4 unassigned, u8 left the group; u2 retitled: {s:?}"
    );
    verify_target(&h.sim, &[&upn(3), &upn(4), &upn(8)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_user_is_escrowed_retried_then_held_and_listed() {
    let h = Harness::new("").await;
    tenant(&h, 8, 5);
    let bad = upn(3);
    h.sim.scim.set_faults(ScimFaults {
        fail_user_names: BTreeSet::from([bad.clone()]),
        ..ScimFaults::default()
    });
    let posts_for_bad = |h: &Harness| user_posts(h).get(&bad).map_or(0, Vec::len);

    let first = h.sync().await;
    assert_eq!((first.exit_code, first.failed), (3, 1), "{first:?}");
    assert_eq!(first.users_created, 7, "one failure blocks nobody else");
    assert_eq!(posts_for_bad(&h), 1);
    assert_eq!(h.state().failures().unwrap()[0].attempts, 1);

    let second = h.sync().await;
    assert_eq!((second.exit_code, second.failed), (3, 1), "{second:?}");
    assert_eq!(posts_for_bad(&h), 2, "retried on the next cycle");
    let f = h.state().failures().unwrap();
    assert_eq!((f.len(), f[0].attempts), (1, 2), "{f:?}");
    assert_eq!(f[0].name, bad);

    let third = h.sync().await;
    assert_eq!(posts_for_bad(&h), 2, "held: the next try is an hour away");
    assert_eq!(
        (third.held, third.failed, third.exit_code),
        (1, 0, 0),
        "{third:?}"
    );
    let next_try = chrono::DateTime::parse_from_rfc3339(&f[0].next_try_at).unwrap();
    assert!(
        next_try.timestamp() - chrono::Utc::now().timestamp() >= 3500,
        "next try {next_try} is at least an hour away"
    );

    let text = run_binary(&h, &["status"]).await;
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "{stdout}");
    assert!(
        stdout.contains(&bad),
        "status lists the failing user: {stdout}"
    );
    assert!(stdout.contains("failing objects: 1"), "{stdout}");
    let js = run_binary(&h, &["status", "--json"]).await;
    let doc: Value = serde_json::from_slice(&js.stdout).expect("status --json is JSON");
    let failing = doc["failing"].as_array().expect("failing list");
    assert_eq!(failing.len(), 1, "{doc}");
    assert_eq!(failing[0]["name"], json!(bad));
    assert_eq!(failing[0]["attempts"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_failing_quarantines_the_cycle_until_a_healthy_one() {
    let h = Harness::new("").await;
    // enough parallel operations that the 20 failures quarantine needs arrive together
    common::edit_config(&h, "max_concurrency = 16", "max_concurrency = 24");
    tenant(&h, 500, 401);
    h.sim.scim.set_faults(ScimFaults {
        reject_all_writes: true,
        ..ScimFaults::default()
    });
    let s = h.sync().await;
    assert_eq!(s.exit_code, 1, "{s:?}");
    let e = s.error.as_deref().unwrap_or_default();
    assert!(e.contains("quarantine"), "{e}");
    let requests = h.sim.scim.request_log().len();
    assert!(s.planned >= 500, "{s:?}");
    assert!(
        requests * 2 < s.planned,
        "pushing stopped early: {requests} SCIM requests for {} planned operations",
        s.planned
    );
    let touched = user_posts(&h).len();
    assert!(
        touched * 5 < s.planned,
        "{touched} users were tried before the push stopped"
    );
    assert_eq!(quarantine_level(&h.state()), 1);

    h.sim.scim.set_faults(ScimFaults::default());
    let healthy = h.sync().await;
    assert_eq!(healthy.exit_code, 0, "{healthy:?}");
    verify_target(&h.sim, &[]);
    assert_eq!(quarantine_level(&h.state()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_token_is_refreshed_during_a_long_read() {
    let h = Harness::new("").await;
    tenant(&h, 12, 7);
    h.sim.graph.set_faults(GraphFaults {
        token_ttl_secs: Some(2),
        latency_ms: 350,
        page_size: Some(1),
        ..GraphFaults::default()
    });
    let s = h.sync().await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    verify_target(&h.sim, &[]);
    let log = h.sim.graph.request_log();
    let reads = log.iter().filter(|r| r.path.starts_with("/v1.0")).count();
    assert!(
        reads as u64 * 350 >= 5000,
        "the read took at least 5 s ({reads} requests)"
    );
    let tokens = h.sim.graph.issued_tokens().len();
    assert!(tokens > 1, "the token was refreshed: {tokens} issued");
    assert!(
        log.iter().all(|r| r.status != 401),
        "refreshed before it expired, not after a 401"
    );
}
