//! End-to-end cycles against the simulated Graph tenant and simulated HERE (issue 2).

mod common;

use common::{verify_target, Harness};
use entra_here_sync::cycle::CycleOptions;
use entra_here_sync::demo::upn;
use entra_here_sync::sim::DeltaExpiry;
use serde_json::json;

/// 30 users: 1–10 assigned directly (1 also in G1), 11–18 in G1, 19–25 in G2 (both
/// assigned), 26–30 only in G3, which is nested in G1 but not assigned.
struct Tenant {
    u: Vec<String>,
    g1: String,
    g2: String,
}

fn standard_tenant(h: &Harness) -> Tenant {
    let mut u = vec![String::new()];
    for i in 1..=30 {
        u.push(h.add_user(i));
    }
    let ids =
        |r: std::ops::RangeInclusive<usize>| -> Vec<&str> { r.map(|i| u[i].as_str()).collect() };
    let mut g1_members = ids(11..=18);
    g1_members.push(&u[1]);
    let g1 = h.sim.graph.add_group("Browser Users", &g1_members);
    let g2 = h.sim.graph.add_group("Browser Admins", &ids(19..=25));
    let g3 = h.sim.graph.add_group("Not Assigned", &ids(26..=30));
    h.sim.graph.add_member(&g1, &g3);
    for id in &u[1..=10] {
        h.sim.graph.assign(id);
    }
    h.sim.graph.assign(&g1);
    h.sim.graph.assign(&g2);
    Tenant { u, g1, g2 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_creates_exactly_the_scope() {
    let h = Harness::new("").await;
    standard_tenant(&h);
    let s = h.sync().await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert_eq!(s.users_created, 25);
    assert_eq!(s.groups_created, 2);
    verify_target(&h.sim, &[]);
    assert!(
        h.sim.scim.find_user(&upn(26)).is_none(),
        "members of an unassigned nested group stay out"
    );
    let lookups = h
        .sim
        .scim
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.query.contains_key("filter"))
        .count();
    assert_eq!(lookups, 0, "no GET before POST on an empty target");
}

/// Applies the incremental changes of issue 2; returns UPNs that must end up inactive.
fn incremental_changes(h: &Harness, t: &Tenant) -> Vec<String> {
    let g = &h.sim.graph;
    g.update_user(&t.u[3], json!({"jobTitle": "Senior Engineer"}));
    g.update_user(&t.u[4], json!({"displayName": "Temporary"}));
    g.update_user(&t.u[4], json!({"displayName": "Renamed Person"}));
    g.disable_user(&t.u[5]);
    g.unassign(&t.u[2]);
    g.delete_user(&t.u[6], false);
    g.delete_user(&t.u[7], true);
    let newcomer = h.add_user(31);
    g.add_member(&t.g1, &newcomer);
    g.remove_member(&t.g2, &t.u[19]);
    g.rename_group(&t.g2, "Browser Admins (renamed)");
    [2, 5, 6, 7, 19].iter().map(|i| upn(*i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sync_reflects_every_kind_of_change_then_goes_quiet() {
    let h = Harness::new("").await;
    let t = standard_tenant(&h);
    assert_eq!(h.sync().await.exit_code, 0);
    let ids_before: Vec<(String, String)> = h
        .sim
        .scim
        .users()
        .iter()
        .map(|u| {
            (
                u["userName"].as_str().unwrap().to_string(),
                u["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let inactive = incremental_changes(&h, &t);
    h.sim.scim.clear_log();
    let s = h.sync().await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert_eq!((s.users_created, s.users_deactivated), (1, 5), "{s:?}");
    let inactive: Vec<&str> = inactive.iter().map(String::as_str).collect();
    verify_target(&h.sim, &inactive);
    let posts = h.user_posts();
    assert_eq!(
        posts.keys().collect::<Vec<_>>(),
        vec![&upn(31)],
        "only the newcomer is POSTed"
    );
    for (name, id) in ids_before {
        let now = h.sim.scim.find_user(&name).expect("nobody is deleted");
        assert_eq!(now["id"], json!(id), "{name} was re-created");
    }
    let renamed = h
        .sim
        .scim
        .find_group("Browser Admins (renamed)")
        .expect("group renamed");
    assert_eq!(renamed["externalId"], json!(t.g2));
    let u3 = h.sim.scim.find_user(&upn(3)).unwrap();
    assert_eq!(u3["title"], json!("Senior Engineer"));
    assert_eq!(
        h.sim.scim.find_user(&upn(4)).unwrap()["displayName"],
        json!("Renamed Person")
    );

    h.sim.scim.clear_log();
    let third = h.sync().await;
    assert_eq!(third.exit_code, 0);
    assert_eq!(
        h.scim_writes(),
        Vec::<String>::new(),
        "a no-change cycle writes nothing"
    );
    assert_eq!(third.scim_requests, 0);
    let delta_reads: Vec<_> = h
        .sim
        .graph
        .request_log()
        .into_iter()
        .filter(|r| r.path.ends_with("/delta"))
        .collect();
    assert!(
        delta_reads
            .iter()
            .rev()
            .take(2)
            .all(|r| r.query.contains_key("$deltatoken")),
        "the third cycle reads through the stored delta links"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_on_fresh_state_writes_nothing() {
    let h = Harness::new("").await;
    standard_tenant(&h);
    let s = h
        .sync_with(CycleOptions {
            dry_run: true,
            ..CycleOptions::default()
        })
        .await;
    assert_eq!(s.exit_code, 0);
    assert!(s.dry_run);
    assert_eq!(s.users_created, 25, "the dry run reports what it would do");
    assert!(h.scim_writes().is_empty());
    let snap = h.state().snapshot_sizes().unwrap();
    assert_eq!(snap, (0, 0, 0), "the snapshot stays empty");
    let real = h.sync().await;
    assert_eq!(real.users_created, 25);
    verify_target(&h.sim, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_delta_links_resync_without_duplicates_or_deactivations() {
    for how in [DeltaExpiry::Gone410, DeltaExpiry::SyncStateNotFound400] {
        let h = Harness::new("").await;
        let t = standard_tenant(&h);
        assert_eq!(h.sync().await.exit_code, 0);
        h.sim
            .graph
            .update_user(&t.u[8], json!({"jobTitle": "Architect"}));
        h.sim.graph.expire_delta_links(how);
        h.sim.scim.clear_log();
        let s = h.sync().await;
        assert_eq!(s.exit_code, 0, "{s:?}");
        assert_eq!(s.resynced, vec!["users".to_string(), "groups".to_string()]);
        assert_eq!(
            (s.users_created, s.users_deactivated, s.users_updated),
            (0, 0, 1),
            "{s:?}"
        );
        assert!(
            h.user_posts().is_empty(),
            "no duplicate POST after a resync"
        );
        verify_target(&h.sim, &[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_user_is_adopted_not_duplicated() {
    let h = Harness::new("").await;
    let t = standard_tenant(&h);
    let seeded = h.sim.scim.seed_user(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": upn(1).to_uppercase(), "displayName": "Stale Name", "active": true
    }));
    let s = h.sync().await;
    assert_eq!((s.exit_code, s.failed), (0, 0), "{s:?}");
    verify_target(&h.sim, &[]);
    let u1 = h.sim.scim.find_user(&upn(1)).unwrap();
    assert_eq!(u1["id"], json!(seeded), "adopted, same SCIM id");
    assert_eq!(
        u1["userName"],
        json!(upn(1)),
        "userName corrected to the exact UPN"
    );
    assert_eq!(u1["displayName"], json!("User 000001"));
    let snap = h.state().load_snapshot().unwrap();
    assert_eq!(snap.users[&t.u[1]].scim_id, seeded);
}

#[test]
fn demo_command_runs_both_cycles() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_entra-here-sync"))
        .args(["demo", "--users", "60", "--groups", "3"])
        .output()
        .expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("initial cycle:") && stdout.contains("incremental cycle:"),
        "{stdout}"
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
}
