//! SCIM `/Bulk` end to end against the simulator: limits respected, bulkId references for
//! new groups, per-operation failures and conflicts, a 413 split, and the switch.

mod common;

use common::{edit_config, verify_target, Harness};
use entra_here_sync::demo::upn;
use entra_here_sync::sim::{BulkSupport, ScimFaults, ScimRequest};
use serde_json::{json, Value};

/// Serves `/Bulk` with these limits (and advertises them).
fn bulk(h: &Harness, max_operations: usize, max_payload_size: usize) {
    h.sim.scim.set_faults(ScimFaults {
        bulk: Some(BulkSupport {
            max_operations,
            max_payload_size,
            advertised_payload_size: None,
        }),
        ..ScimFaults::default()
    });
}

/// `n` assigned users (0..n) and `groups` assigned groups of 5 consecutive users each.
fn tenant(h: &Harness, n: usize, groups: usize) -> (Vec<String>, Vec<String>) {
    let users: Vec<String> = (0..n).map(|i| h.add_user(i)).collect();
    users.iter().for_each(|u| h.sim.graph.assign(u));
    let gids = (0..groups)
        .map(|g| {
            let members: Vec<&str> = users
                .iter()
                .skip(g * 5)
                .take(5)
                .map(String::as_str)
                .collect();
            let gid = h.sim.graph.add_group(&format!("Team {g}"), &members);
            h.sim.graph.assign(&gid);
            gid
        })
        .collect();
    (users, gids)
}

fn bulk_requests(h: &Harness) -> Vec<ScimRequest> {
    h.sim
        .scim
        .request_log()
        .into_iter()
        .filter(|r| r.resource_type.as_deref() == Some("Bulk"))
        .collect()
}

fn operations(r: &ScimRequest) -> Vec<Value> {
    r.body
        .as_ref()
        .and_then(|b| b["Operations"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_travel_in_bulk_requests_within_max_operations() {
    let h = Harness::new("").await;
    bulk(&h, 40, 1 << 20);
    let (users, gids) = tenant(&h, 100, 4);
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.failed, s.users_created, s.groups_created),
        (0, 0, 100, 4),
        "{s:?}"
    );
    assert!(
        h.scim_writes().is_empty(),
        "no single writes: {:?}",
        h.scim_writes()
    );
    let requests = bulk_requests(&h);
    let sizes: Vec<usize> = requests.iter().map(|r| operations(r).len()).collect();
    assert!(sizes.iter().all(|n| *n <= 40), "maxOperations: {sizes:?}");
    // 100 user POSTs in 3 requests, then 4 group POSTs + 4 member PATCHes in 1
    assert_eq!(sizes.len(), 4, "{sizes:?}");
    assert_eq!(
        s.scim_requests, 5,
        "one ServiceProviderConfig read + 4 bulk"
    );
    verify_target(&h.sim, &[]);

    h.sim.scim.clear_log();
    let g = &h.sim.graph;
    g.update_user(&users[1], json!({"jobTitle": "Director"}));
    g.disable_user(&users[2]);
    g.remove_member(&gids[1], &users[6]);
    g.rename_group(&gids[3], "Team three");
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.failed, s.users_updated, s.users_deactivated),
        (0, 0, 1, 1),
        "{s:?}"
    );
    assert_eq!(s.members_removed, 2, "user 2 (disabled) and user 6: {s:?}");
    assert!(h.scim_writes().is_empty(), "{:?}", h.scim_writes());
    verify_target(&h.sim, &[]);

    let s = h.sync().await;
    assert_eq!((s.exit_code, s.scim_requests), (0, 0), "quiet: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_and_its_new_members_share_a_request_by_bulk_id() {
    let h = Harness::new("").await;
    bulk(&h, 1000, 1 << 20);
    let (users, _) = tenant(&h, 10, 1);
    assert_eq!(h.sync().await.exit_code, 0);
    h.sim.scim.clear_log();
    let newcomer = h.add_user(50);
    let gid = h
        .sim
        .graph
        .add_group("Newcomers", &[&newcomer, &users[7], &users[8]]);
    h.sim.graph.assign(&gid);
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.failed, s.groups_created, s.members_added),
        (0, 0, 1, 3),
        "{s:?}"
    );
    let requests = bulk_requests(&h);
    let ops: Vec<Value> = requests.iter().flat_map(operations).collect();
    let post = ops
        .iter()
        .find(|o| o["method"] == "POST" && o["path"] == "/Groups")
        .expect("group POST");
    let reference = format!("/Groups/bulkId:{}", post["bulkId"].as_str().unwrap());
    let same_request = requests.iter().any(|r| {
        let ops = operations(r);
        ops.iter().any(|o| o["path"] == "/Groups")
            && ops
                .iter()
                .any(|o| o["method"] == "PATCH" && o["path"] == json!(reference))
    });
    assert!(
        same_request,
        "members refer to the new group by bulkId: {ops:?}"
    );
    verify_target(&h.sim, &[]);
    let s = h.sync().await;
    assert_eq!(s.scim_requests, 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_go_to_escrow_and_conflicts_are_adopted_one_by_one() {
    let h = Harness::new("").await;
    bulk(&h, 1000, 1 << 20);
    let mut faults = h.sim.scim.faults();
    faults.fail_user_names.insert(upn(3));
    h.sim.scim.set_faults(faults);
    let existing = h.sim.scim.seed_user(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": upn(4).to_uppercase(), "active": false,
    }));
    let existing_group = h.sim.scim.seed_group(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Team 0", "members": [],
    }));
    tenant(&h, 10, 2);
    let s = h.sync().await;
    assert_eq!((s.exit_code, s.failed), (3, 1), "{s:?}");
    assert_eq!(s.users_created, 9, "one failure blocks nobody else: {s:?}");
    let failing = h.state().failures().unwrap();
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(failing[0].name, upn(3));
    let adopted = h.sim.scim.find_user(&upn(4)).expect("adopted user");
    assert_eq!(adopted["id"], json!(existing), "adopted, not duplicated");
    assert_eq!(
        adopted["active"],
        json!(true),
        "adoption PATCHed it to Entra's values"
    );
    let group = h.sim.scim.find_group("Team 0").expect("adopted group");
    assert_eq!(group["id"], json!(existing_group));
    assert_eq!(
        common::member_ids(&group).len(),
        4,
        "the adopted group's members were sent again with its id (all but the failing user)"
    );
    assert_eq!(h.sim.scim.groups().len(), 2, "no duplicate group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limit_is_respected_and_a_413_splits_the_request() {
    let h = Harness::new("").await;
    bulk(&h, 1000, 8_000);
    tenant(&h, 60, 0);
    let s = h.sync().await;
    assert_eq!((s.exit_code, s.users_created), (0, 60), "{s:?}");
    let requests = bulk_requests(&h);
    assert!(requests.len() > 2, "60 users do not fit in 8 kB");
    assert!(requests.iter().all(|r| r.status == 200), "no 413");

    // a server that advertises more than it accepts: its 413s split the request
    let h = Harness::new("").await;
    h.sim.scim.set_faults(ScimFaults {
        bulk: Some(BulkSupport {
            max_operations: 1000,
            max_payload_size: 8_000,
            advertised_payload_size: Some(1 << 20),
        }),
        ..ScimFaults::default()
    });
    tenant(&h, 60, 4);
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.failed, s.users_created, s.groups_created),
        (0, 0, 60, 4),
        "{s:?}"
    );
    let statuses: Vec<u16> = bulk_requests(&h).iter().map(|r| r.status).collect();
    assert!(statuses.contains(&413), "{statuses:?}");
    verify_target(&h.sim, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_off_it_sends_single_requests() {
    let h = Harness::new("").await;
    bulk(&h, 1000, 1 << 20);
    edit_config(&h, "[here]\n", "[here]\nbulk = false\n");
    tenant(&h, 6, 1);
    let s = h.sync().await;
    assert_eq!((s.exit_code, s.users_created), (0, 6), "{s:?}");
    assert!(bulk_requests(&h).is_empty());
    assert_eq!(
        s.scim_requests, 8,
        "6 user POSTs, a group POST, a member PATCH"
    );
}
