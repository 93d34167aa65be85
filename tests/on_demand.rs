//! Provisioning on demand (`sync --user`): the real binary against the simulator (issue 7).

mod common;

use common::{run_binary, Harness};
use entra_here_sync::demo::upn;
use serde_json::json;

/// Users 1–4 in the assigned group "Browser Users", 5 assigned directly; all synced.
async fn synced_tenant(h: &Harness) -> String {
    let members: Vec<String> = (1..=4).map(|i| h.add_user(i)).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let g = h.sim.graph.add_group("Browser Users", &refs);
    h.sim.graph.assign(&g);
    let direct = h.add_user(5);
    h.sim.graph.assign(&direct);
    let s = h.sync().await;
    assert_eq!((s.exit_code, s.users_created), (0, 5), "{s:?}");
    g
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_in_scope_user_is_created_alone_with_its_membership() {
    let h = Harness::new("").await;
    let g = synced_tenant(&h).await;
    let newcomer = h.add_user(6);
    h.sim.graph.add_member(&g, &newcomer);
    let links_before = h.state().delta_link("users").unwrap();
    h.sim.scim.clear_log();

    let dry = run_binary(&h, &["sync", "--user", &upn(6), "--dry-run"]).await;
    let text = stdout(&dry);
    assert_eq!(dry.status.code(), Some(0), "{text}");
    assert!(
        text.contains("create_user") && text.contains("dry run"),
        "{text}"
    );
    assert!(h.scim_writes().is_empty(), "a dry run writes nothing");

    let out = run_binary(&h, &["sync", "--user", &upn(6)]).await;
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    for step in ["read", "scope", "match", "action", "result"] {
        assert!(
            text.lines().any(|l| l.starts_with(step)),
            "no {step} step in:\n{text}"
        );
    }
    assert!(
        text.contains("in scope: member of assigned group \"Browser Users\""),
        "{text}"
    );
    assert!(
        text.contains("no HERE user with userName"),
        "the match in HERE was looked up: {text}"
    );
    let lookups = h
        .sim
        .scim
        .request_log()
        .iter()
        .filter(|r| r.method == "GET" && r.query.get("filter").is_some_and(|f| f.contains(&upn(6))))
        .count();
    assert!(lookups >= 1, "GET /Users?filter=userName eq … was sent");
    let group_scim = h.sim.scim.find_group("Browser Users").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        h.scim_writes(),
        vec![
            "POST /Users -> 201".to_string(),
            format!("PATCH /Groups/{group_scim} -> 204"),
        ],
        "exactly one POST /Users and its membership"
    );
    let created = h.sim.scim.find_user(&upn(6)).expect("created in HERE");
    let members = h.sim.scim.find_group("Browser Users").unwrap()["members"].clone();
    let ids: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["value"].as_str())
        .collect();
    assert_eq!(ids.len(), 5, "the other members are untouched: {members}");
    assert!(ids.contains(&created["id"].as_str().unwrap()));
    assert!(
        text.contains("create_user") && text.contains("done (SCIM 201)"),
        "{text}"
    );

    let state = h.state();
    assert_eq!(
        state.delta_link("users").unwrap(),
        links_before,
        "delta links untouched"
    );
    assert!(
        !state.load_mirror().unwrap().users.contains_key(&newcomer),
        "the mirror is left to the next cycle's delta read"
    );
    let history = state.history(&upn(6)).unwrap();
    assert_eq!(
        history[0].op, "create_user",
        "recorded like a cycle: {history:?}"
    );
    drop(state);

    h.sim.scim.clear_log();
    let next = h.sync().await;
    assert_eq!(next.exit_code, 0, "{next:?}");
    assert!(
        h.scim_writes().is_empty(),
        "the next cycle has nothing left to do"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_scope_unknown_and_disabled_users_write_nothing() {
    let h = Harness::new("").await;
    synced_tenant(&h).await;
    let outsider = h.add_user(7);
    let disabled = h.add_user(8);
    h.sim.graph.assign(&disabled);
    h.sim.graph.disable_user(&disabled);
    let sizes = h.state().snapshot_sizes().unwrap();
    h.sim.scim.clear_log();

    let out = run_binary(&h, &["sync", "--user", &upn(7)]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("OUT OF SCOPE: not assigned to the app"),
        "{text}"
    );
    assert!(text.contains("nothing was written"), "{text}");

    let out = run_binary(&h, &["sync", "--user", &disabled]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "by object id: {text}");
    assert!(text.contains("OUT OF SCOPE: disabled in Entra"), "{text}");

    let out = run_binary(&h, &["sync", "--user", "nobody@contoso.example"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("no user \"nobody@contoso.example\" in Entra"),
        "{}",
        stdout(&out)
    );

    assert!(h.scim_writes().is_empty(), "nothing pushed");
    let state = h.state();
    assert_eq!(state.snapshot_sizes().unwrap(), sizes, "snapshot unchanged");
    assert!(state.history(&outsider).unwrap().is_empty());
    assert!(state.history(&disabled).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_here_user_is_adopted_and_filtered_user_is_explained() {
    let extra = "\n[[sync.scope_filter]]\nattribute = \"department\"\noperator = \"Not Includes\"\nvalue = \"Finance, R&D\"\n";
    let h = Harness::new(extra).await;
    let ok = h.add_user(9); // Sales
    let finance = h.add_user(3); // Finance
    h.sim.graph.assign(&ok);
    h.sim.graph.assign(&finance);
    let seeded = h.sim.scim.seed_user(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": upn(9), "displayName": "Stale", "active": true
    }));
    h.sim.scim.clear_log();

    let out = run_binary(&h, &["sync", "--user", &upn(3)]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("OUT OF SCOPE: filtered out by clause 1 (department Not Includes \"Finance, R&D\"; department is \"Finance\")"),
        "{text}"
    );

    let out = run_binary(&h, &["sync", "--user", &upn(9)]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("HERE user {seeded}")) && text.contains("adopted"),
        "{text}"
    );
    assert!(text.contains("update_user"), "{text}");
    let posts = h.user_posts();
    assert!(posts.is_empty(), "adopted, not duplicated: {posts:?}");
    let u = h.sim.scim.find_user(&upn(9)).unwrap();
    assert_eq!(u["id"], json!(seeded));
    assert_eq!(u["displayName"], json!("User 000009"));
    let snap = h.state().load_snapshot().unwrap();
    assert_eq!(snap.users[&ok].scim_id, seeded, "linked in the snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitive_membership_is_read_through_nesting() {
    let h = Harness::new("\n[sync]\ngroup_members = \"transitive\"\n").await;
    let deep = h.add_user(1);
    let top = h.sim.graph.add_group("Top", &[]);
    let inner = h.sim.graph.add_group("Inner", &[&deep]);
    h.sim.graph.add_member(&top, &inner);
    h.sim.graph.assign(&top);
    let out = run_binary(&h, &["sync", "--user", &upn(1)]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("in scope: member of assigned group \"Top\""),
        "{text}"
    );
    let created = h.sim.scim.find_user(&upn(1)).expect("created");
    let group = h
        .sim
        .scim
        .find_group("Top")
        .expect("the assigned group is created");
    assert_eq!(group["members"][0]["value"], created["id"]);
    assert!(h.sim.scim.find_group("Inner").is_none());
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.users_created, s.members_added),
        (0, 0, 0),
        "{s:?}"
    );
}
