//! End-to-end checks of the attribute mapping (issue 3): Entra's default mapping on the wire,
//! minimal PATCHes, operator overrides and mapping changes, the manager reference, `$select`,
//! and Entra's PATCH dialect — against the simulated Graph tenant and simulated HERE.

mod common;

use common::Harness;
use entra_here_sync::mapping::{Mapping, MANAGER_PATH};
use entra_here_sync::sim::{GraphRequest, ScimRequest};
use serde_json::{json, Value};

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const ZOE: &str = "zoe.aeroskobing@contoso.example";

/// Every property the default mapping reads (non-ASCII text included), plus one it does not.
fn full_props() -> Value {
    json!({
        "displayName": "Zoë Ærøskøbing-李", "givenName": "Zoë", "surname": "Ærøskøbing-李",
        "mail": "zoe@contoso.example", "jobTitle": "Ingénieure", "mailNickname": "zoe",
        "preferredLanguage": "da-DK", "businessPhones": ["+45 3333 0100", "+45 3333 0101"],
        "mobilePhone": "+45 2020 0199", "streetAddress": "Strøget 1", "city": "København",
        "state": "Hovedstaden", "postalCode": "1160", "country": "DK", "employeeId": "E-4711",
        "department": "R&D", "accountEnabled": true, "officeLocation": "Building 7"
    })
}

/// What HERE must hold for `full_props` (SPEC §4), minus `id`/`meta`.
fn expected_full(manager_scim_id: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENT],
        "userName": ZOE,
        "active": true,
        "displayName": "Zoë Ærøskøbing-李",
        "title": "Ingénieure",
        "emails": [{"type": "work", "value": "zoe@contoso.example"}],
        "preferredLanguage": "da-DK",
        "name": {"givenName": "Zoë", "familyName": "Ærøskøbing-李", "formatted": "Zoë Ærøskøbing-李"},
        "externalId": "zoe",
        "phoneNumbers": [{"type": "mobile", "value": "+45 2020 0199"}, {"type": "work", "value": "+45 3333 0100"}],
        "addresses": [{
            "type": "work", "streetAddress": "Strøget 1", "locality": "København",
            "region": "Hovedstaden", "postalCode": "1160", "country": "DK"
        }],
        ENT: {"employeeNumber": "E-4711", "department": "R&D", "manager": {"value": manager_scim_id}}
    })
}

/// A SCIM user without the server-assigned `id` and `meta`.
fn without_server_fields(mut u: Value) -> Value {
    let o = u.as_object_mut().expect("a SCIM user is an object");
    o.remove("id");
    o.remove("meta");
    u
}

fn scim_id(h: &Harness, user_name: &str) -> String {
    let u = h
        .sim
        .scim
        .find_user(user_name)
        .unwrap_or_else(|| panic!("{user_name} in HERE"));
    u["id"].as_str().unwrap().to_string()
}

/// Write requests (POST/PUT/PATCH/DELETE) since the log was cleared.
fn writes(h: &Harness) -> Vec<ScimRequest> {
    let log = h.sim.scim.request_log();
    log.into_iter().filter(|r| r.method != "GET").collect()
}

/// The operations of a PATCH body.
fn ops_of(r: &ScimRequest) -> Vec<Value> {
    r.body
        .as_ref()
        .and_then(|b| b["Operations"].as_array().cloned())
        .unwrap_or_default()
}

/// Asserts that the writes are exactly one PATCH per (SCIM user id, operation), in any order.
fn assert_one_op_patches(h: &Harness, want: &[(String, Value)]) {
    let mut got: Vec<(String, Vec<Value>)> = writes(h)
        .iter()
        .map(|r| {
            assert_eq!((r.method.as_str(), r.status), ("PATCH", 200), "{r:?}");
            (r.path.clone(), ops_of(r))
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(String, Vec<Value>)> = want
        .iter()
        .map(|(id, op)| (format!("/Users/{id}"), vec![op.clone()]))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
}

fn user_delta_reads(h: &Harness) -> Vec<GraphRequest> {
    let log = h.sim.graph.request_log();
    log.into_iter()
        .filter(|r| r.path == "/v1.0/users/delta")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_default_attribute_arrives_exactly_and_one_change_is_one_operation() {
    let h = Harness::new("").await;
    let boss = h.add_user(1);
    let zoe = h.sim.graph.add_user(ZOE, full_props());
    h.sim.graph.set_manager(&zoe, Some(&boss));
    h.sim.graph.assign(&zoe);
    h.sim.graph.assign(&boss);
    let s = h.sync().await;
    assert_eq!((s.exit_code, s.users_created, s.failed), (0, 2, 0), "{s:?}");
    let boss_scim = scim_id(&h, &entra_here_sync::demo::upn(1));
    let mut want = expected_full(&boss_scim);
    assert_eq!(
        without_server_fields(h.sim.scim.find_user(ZOE).unwrap()),
        want
    );

    h.sim
        .graph
        .update_user(&zoe, json!({"jobTitle": "Arkitekt"}));
    h.sim.scim.clear_log();
    let s = h.sync().await;
    assert_eq!((s.exit_code, s.users_updated), (0, 1), "{s:?}");
    let op = json!({"op": "replace", "path": "title", "value": "Arkitekt"});
    assert_one_op_patches(&h, &[(scim_id(&h, ZOE), op)]);
    want["title"] = json!("Arkitekt");
    assert_eq!(
        without_server_fields(h.sim.scim.find_user(ZOE).unwrap()),
        want
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptied_sources_are_removed_in_here() {
    let h = Harness::new("").await;
    let zoe = h.sim.graph.add_user(ZOE, full_props());
    h.sim.graph.assign(&zoe);
    assert_eq!(h.sync().await.exit_code, 0);
    let id = scim_id(&h, ZOE);

    h.sim.graph.update_user(&zoe, json!({"mobilePhone": null}));
    h.sim.scim.clear_log();
    assert_eq!(h.sync().await.users_updated, 1);
    let op = json!({"op": "remove", "path": "phoneNumbers[type eq \"mobile\"]"});
    assert_one_op_patches(&h, &[(id.clone(), op)]);

    h.sim.graph.update_user(
        &zoe,
        json!({"surname": null, "department": "", "city": null}),
    );
    h.sim.scim.clear_log();
    assert_eq!(h.sync().await.users_updated, 1);
    let patches = writes(&h);
    assert_eq!(patches.len(), 1, "one PATCH for the user: {patches:?}");
    let mut ops = ops_of(&patches[0]);
    ops.sort_by_key(|o| o["path"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        ops,
        vec![
            json!({"op": "remove", "path": "addresses[type eq \"work\"].locality"}),
            json!({"op": "remove", "path": "name.familyName"}),
            json!({"op": "replace", "path": "name.formatted", "value": "Zoë"}),
            json!({"op": "remove", "path": format!("{ENT}:department")}),
        ]
    );
    let u = h.sim.scim.find_user(ZOE).unwrap();
    assert_eq!(
        u["phoneNumbers"],
        json!([{"type": "work", "value": "+45 3333 0100"}])
    );
    assert_eq!(u["name"], json!({"givenName": "Zoë", "formatted": "Zoë"}));
    assert_eq!(u[ENT], json!({"employeeNumber": "E-4711"}));
    assert!(u["addresses"][0].get("locality").is_none(), "{u}");
    assert_eq!(u["addresses"][0]["postalCode"], json!("1160"));

    let gone = json!({"streetAddress": null, "state": null, "postalCode": null, "country": null});
    h.sim.graph.update_user(&zoe, gone);
    h.sim.scim.clear_log();
    assert_eq!(h.sync().await.users_updated, 1);
    let op = json!({"op": "remove", "path": "addresses[type eq \"work\"]"});
    assert_one_op_patches(&h, &[(id, op)]);
    let u = h.sim.scim.find_user(ZOE).unwrap();
    assert!(u.get("addresses").is_none(), "no {{type: work}} husk: {u}");
}

const OVERRIDES_V1: &str = r#"
[mapping.user]
externalId = "onPremisesExtensionAttributes.extensionAttribute1"
"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:organization" = { constant = "Contoso" }
displayName = { join = ["surname", "givenName"], separator = ", " }
"#;

/// V1 with the organization read from a Graph property that V1 did not `$select`.
const OVERRIDES_V2: &str = r#"
[mapping.user]
externalId = "onPremisesExtensionAttributes.extensionAttribute1"
"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:organization" = { upper = "companyName" }
displayName = { join = ["surname", "givenName"], separator = ", " }
"#;

fn mapping_of(extra: &str) -> Mapping {
    let text = extra.replace("[mapping.user]", "[user]");
    Mapping::from_config(&toml::from_str(&text).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_apply_and_a_mapping_change_repushes_only_that_attribute() {
    let h = Harness::new(OVERRIDES_V1).await;
    let mut users = Vec::new();
    for i in 1..=4 {
        let mut props = entra_here_sync::demo::user_props(i);
        props["onPremisesExtensionAttributes"] = json!({"extensionAttribute1": format!("EXT-{i}")});
        props["companyName"] = json!("Contoso Ltd");
        users.push(h.sim.graph.add_user(&entra_here_sync::demo::upn(i), props));
    }
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let group = h.sim.graph.add_group("Browser Users", &refs);
    h.sim.graph.assign(&group);
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.users_created, s.members_added),
        (0, 4, 4),
        "{s:?}"
    );
    let select = |h: &Harness| user_delta_reads(h)[0].query["$select"].clone();
    assert_eq!(
        select(&h),
        mapping_of(OVERRIDES_V1).user_select(&[]).join(",")
    );
    let mut ids = Vec::new();
    for i in 1..=4 {
        let u = h
            .sim
            .scim
            .find_user(&entra_here_sync::demo::upn(i))
            .unwrap();
        assert_eq!(
            u["externalId"],
            json!(format!("EXT-{i}")),
            "extension attribute"
        );
        assert_eq!(u[ENT]["organization"], json!("Contoso"), "constant");
        assert_eq!(
            u["displayName"],
            json!(format!("Family{i}, Given{i}")),
            "expression"
        );
        assert_eq!(
            u["name"]["formatted"],
            json!(format!("Given{i} Family{i}")),
            "defaults stay"
        );
        ids.push(u["id"].as_str().unwrap().to_string());
    }

    entra_here_sync::demo::write_config(h.dir.path(), &h.sim, OVERRIDES_V2).unwrap();
    h.sim.scim.clear_log();
    h.sim.graph.clear_log();
    let s = h.sync().await;
    assert_eq!((s.exit_code, s.failed), (0, 0), "{s:?}");
    assert_eq!(
        (s.users_updated, s.users_created, s.users_deactivated),
        (4, 0, 0),
        "{s:?}"
    );
    assert_eq!(
        (s.members_added, s.members_removed, s.groups_updated),
        (0, 0, 0),
        "{s:?}"
    );
    let reads = user_delta_reads(&h);
    assert!(
        !reads[0].query.contains_key("$deltatoken"),
        "a new $select means a full read: {reads:?}"
    );
    assert_eq!(
        select(&h),
        mapping_of(OVERRIDES_V2).user_select(&[]).join(",")
    );
    let path = format!("{ENT}:organization");
    let want: Vec<(String, Value)> = ids
        .iter()
        .map(|id| {
            (
                id.clone(),
                json!({"op": "replace", "path": path, "value": "CONTOSO LTD"}),
            )
        })
        .collect();
    assert_one_op_patches(&h, &want);
    for (i, id) in ids.iter().enumerate() {
        let u = h
            .sim
            .scim
            .find_user(&entra_here_sync::demo::upn(i + 1))
            .unwrap();
        assert_eq!(
            (&u["id"], &u["active"]),
            (&json!(id), &json!(true)),
            "not re-created, still active"
        );
        assert_eq!(u[ENT]["organization"], json!("CONTOSO LTD"));
    }
    let g = h.sim.scim.find_group("Browser Users").unwrap();
    assert_eq!(g["members"].as_array().map(Vec::len), Some(4));

    h.sim.scim.clear_log();
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.scim_requests),
        (0, 0),
        "the new mapping is settled: {s:?}"
    );

    let off = OVERRIDES_V2.replace("displayName = {", "title = false\ndisplayName = {");
    entra_here_sync::demo::write_config(h.dir.path(), &h.sim, &off).unwrap();
    h.sim.scim.clear_log();
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.scim_requests),
        (0, 0),
        "switched off: left alone in HERE: {s:?}"
    );
    let u = h
        .sim
        .scim
        .find_user(&entra_here_sync::demo::upn(1))
        .unwrap();
    assert_eq!(u["title"], json!("Engineer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_reference_follows_the_manager_in_and_out_of_scope() {
    let h = Harness::new("").await;
    let a = h.add_user(1);
    let b = h.add_user(2);
    h.sim.graph.set_manager(&b, Some(&a));
    h.sim.graph.assign(&a);
    h.sim.graph.assign(&b);
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.users_created, s.failed),
        (0, 2, 0),
        "both new in one cycle: {s:?}"
    );
    let (a_scim, b_scim) = (
        scim_id(&h, &entra_here_sync::demo::upn(1)),
        scim_id(&h, &entra_here_sync::demo::upn(2)),
    );
    let manager = |h: &Harness| {
        h.sim
            .scim
            .find_user(&entra_here_sync::demo::upn(2))
            .unwrap()[ENT]
            .get("manager")
            .cloned()
    };
    assert_eq!(manager(&h), Some(json!({"value": a_scim})));
    assert!(h
        .sim
        .scim
        .find_user(&entra_here_sync::demo::upn(1))
        .unwrap()[ENT]
        .get("manager")
        .is_none());

    h.sim.graph.unassign(&a);
    h.sim.scim.clear_log();
    let s = h.sync().await;
    assert_eq!((s.exit_code, s.users_deactivated), (0, 1), "{s:?}");
    assert_eq!(manager(&h), None, "a manager out of scope is removed");
    let b_ops: Vec<Value> = writes(&h)
        .iter()
        .filter(|r| r.path == format!("/Users/{b_scim}"))
        .flat_map(ops_of)
        .collect();
    assert_eq!(b_ops, vec![json!({"op": "remove", "path": MANAGER_PATH})]);
    assert_eq!(
        h.sim
            .scim
            .find_user(&entra_here_sync::demo::upn(1))
            .unwrap()["active"],
        json!(false)
    );

    h.sim.graph.assign(&a);
    let s = h.sync().await;
    assert_eq!((s.exit_code, s.users_reactivated), (0, 1), "{s:?}");
    assert_eq!(
        manager(&h),
        Some(json!({"value": a_scim})),
        "back in scope, set again"
    );

    h.sim.graph.set_manager(&b, None);
    let s = h.sync().await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert_eq!(manager(&h), None, "cleared in Entra, cleared in HERE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_asks_graph_for_exactly_the_mapped_properties() {
    let h = Harness::new("").await;
    let u = h.add_user(1);
    h.sim.graph.assign(&u);
    assert_eq!(h.sync().await.exit_code, 0);
    let first = user_delta_reads(&h)
        .into_iter()
        .next()
        .expect("a users/delta read");
    let select = first.query.get("$select").cloned().unwrap_or_default();
    assert_eq!(select, Mapping::default().user_select(&[]).join(","));
    let want =
        "accountEnabled,businessPhones,city,country,department,displayName,employeeId,givenName,\
                jobTitle,mail,mailNickname,manager,mobilePhone,postalCode,preferredLanguage,state,\
                streetAddress,surname,userPrincipalName";
    assert_eq!(select, want);
    assert!(!select.split(',').any(|p| p == "officeLocation"));
    let groups = h
        .sim
        .graph
        .request_log()
        .into_iter()
        .find(|r| r.path == "/v1.0/groups/delta")
        .expect("a groups/delta read");
    assert_eq!(
        groups.query.get("$select").map(String::as_str),
        Some("displayName,members")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_patch_dialect_is_accepted_for_updates_deactivation_and_members() {
    let h = Harness::new("").await;
    let cfg = std::fs::read_to_string(&h.config_path).unwrap();
    assert!(cfg.contains("[here]\n"));
    std::fs::write(
        &h.config_path,
        cfg.replace("[here]\n", "[here]\npatch_style = \"entra\"\n"),
    )
    .unwrap();
    let (a, b) = (h.add_user(1), h.add_user(2));
    let g = h
        .sim
        .graph
        .add_group("Browser Users", &[a.as_str(), b.as_str()]);
    h.sim.graph.assign(&g);
    assert_eq!(h.sync().await.exit_code, 0);
    let (a_scim, b_scim) = (
        scim_id(&h, &entra_here_sync::demo::upn(1)),
        scim_id(&h, &entra_here_sync::demo::upn(2)),
    );

    h.sim.graph.update_user(
        &a,
        json!({"jobTitle": "Architect", "mobilePhone": "+1 555 0199"}),
    );
    h.sim.graph.disable_user(&b);
    h.sim.scim.clear_log();
    let s = h.sync().await;
    assert_eq!(
        (
            s.exit_code,
            s.failed,
            s.users_updated,
            s.users_deactivated,
            s.members_removed
        ),
        (0, 0, 1, 1, 1),
        "{s:?}"
    );
    let ops_for = |id: &str| -> Vec<Value> {
        writes(&h)
            .iter()
            .filter(|r| r.path == format!("/Users/{id}"))
            .flat_map(ops_of)
            .collect()
    };
    let mut a_ops = ops_for(&a_scim);
    a_ops.sort_by_key(|o| o["path"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        a_ops,
        vec![
            json!({"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0199"}),
            json!({"op": "Replace", "path": "title", "value": "Architect"}),
        ]
    );
    assert_eq!(
        ops_for(&b_scim),
        vec![json!({"op": "Replace", "path": "active", "value": "False"})]
    );
    let member_ops: Vec<Value> = writes(&h)
        .iter()
        .filter(|r| r.path.starts_with("/Groups/"))
        .flat_map(ops_of)
        .collect();
    assert_eq!(
        member_ops,
        vec![json!({"op": "Remove", "path": "members", "value": [{"value": b_scim}]})]
    );
    let ua = h
        .sim
        .scim
        .find_user(&entra_here_sync::demo::upn(1))
        .unwrap();
    assert_eq!(
        (&ua["title"], &ua["phoneNumbers"][1]["value"]),
        (&json!("Architect"), &json!("+1 555 0199")),
        "{ua}"
    );
    assert_eq!(
        h.sim
            .scim
            .find_user(&entra_here_sync::demo::upn(2))
            .unwrap()["active"],
        json!(false)
    );
    let members = h.sim.scim.find_group("Browser Users").unwrap()["members"].clone();
    let values: Vec<&Value> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["value"])
        .collect();
    assert_eq!(values, vec![&json!(a_scim)]);

    h.sim.graph.enable_user(&b);
    h.sim.scim.clear_log();
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.users_reactivated, s.members_added),
        (0, 1, 1),
        "{s:?}"
    );
    assert_eq!(
        ops_for(&b_scim),
        vec![json!({"op": "Replace", "path": "active", "value": "True"})]
    );
    assert_eq!(
        h.sim
            .scim
            .find_user(&entra_here_sync::demo::upn(2))
            .unwrap()["active"],
        json!(true)
    );
}
