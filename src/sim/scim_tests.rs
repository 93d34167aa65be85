//! Loopback tests of the fake SCIM service: create/409/filter, PATCH paths and atomicity,
//! group membership, Bulk with bulkId references, faults, latency and the request log.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::sim::{BulkSupport, ScimFaults, ScimSim};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

struct C {
    sim: ScimSim,
    http: reqwest::Client,
}

impl C {
    async fn new() -> C {
        C {
            sim: ScimSim::start().await.unwrap(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let url = format!("{}{path}", self.sim.base_url());
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, url).bearer_auth(self.sim.token());
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        let r = rb.send().await.unwrap();
        let (s, h) = (r.status().as_u16(), r.headers().clone());
        let text = r.text().await.unwrap();
        (s, serde_json::from_str(&text).unwrap_or(Value::Null), h)
    }

    async fn user(&self, name: &str, extra: Value) -> String {
        let mut body = json!({"schemas": [USER, ENT], "userName": name, "active": true});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        let (s, b, _) = self.call("POST", "/Users", Some(body)).await;
        assert_eq!(s, 201, "{b}");
        b["id"].as_str().unwrap().to_string()
    }

    async fn patch(&self, path: &str, ops: Value) -> (u16, Value) {
        let (s, b, _) = self
            .call(
                "PATCH",
                path,
                Some(json!({"schemas": [PATCH], "Operations": ops})),
            )
            .await;
        (s, b)
    }
}

#[tokio::test]
async fn create_conflict_filter_and_paging() {
    let c = C::new().await;
    let r = c
        .http
        .get(format!("{}/Users", c.sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["status"], "401");
    let body = json!({"schemas": [USER], "userName": "Jane@X.com", "externalId": "Ext-1"});
    let (s, b, h) = c.call("POST", "/Users", Some(body)).await;
    assert_eq!(s, 201);
    assert_eq!(h["content-type"], "application/scim+json");
    let id = b["id"].as_str().unwrap().to_string();
    assert!(h["location"]
        .to_str()
        .unwrap()
        .ends_with(&format!("/scim/api/v2/Users/{id}")));
    assert_eq!(b["meta"]["resourceType"], "User");
    let (s, b, _) = c
        .call(
            "POST",
            "/Users",
            Some(json!({"schemas": [USER], "userName": "jane@x.COM"})),
        )
        .await;
    assert_eq!(
        (s, b["scimType"].as_str(), b["status"].as_str()),
        (409, Some("uniqueness"), Some("409"))
    );
    let (s, b, _) = c
        .call("POST", "/Users", Some(json!({"userName": "noschema"})))
        .await;
    assert_eq!((s, b["scimType"].as_str()), (400, Some("invalidSyntax")));
    for i in 0..5 {
        c.user(&format!("u{i}@x.com"), json!({})).await;
    }
    let q = |f: &str| format!("/Users?filter={}", urlencode(f));
    let (_, b, _) = c.call("GET", &q(r#"userName eq "JANE@x.com""#), None).await;
    assert_eq!(
        (b["totalResults"].as_u64(), b["Resources"][0]["id"].as_str()),
        (Some(1), Some(id.as_str()))
    );
    let (_, b, _) = c.call("GET", &q(r#"externalId eq "ext-1""#), None).await;
    assert_eq!(b["totalResults"], 0, "externalId is caseExact");
    let (_, b, _) = c
        .call(
            "GET",
            &q(r#"userName sw "u" and not (userName eq "u0@x.com")"#),
            None,
        )
        .await;
    assert_eq!(b["totalResults"], 4);
    let (s, b, _) = c.call("GET", &q(r#"userName eq "#), None).await;
    assert_eq!((s, b["scimType"].as_str()), (400, Some("invalidFilter")));
    let (_, b, _) = c
        .call(
            "GET",
            "/Users?startIndex=2&count=2&excludedAttributes=meta",
            None,
        )
        .await;
    assert_eq!(
        (
            b["totalResults"].as_u64(),
            b["itemsPerPage"].as_u64(),
            b["startIndex"].as_u64()
        ),
        (Some(6), Some(2), Some(2))
    );
    assert_eq!(b["Resources"][0]["userName"], "u0@x.com");
    assert!(b["Resources"][0].get("meta").is_none());
    let (_, b, _) = c
        .call("GET", &format!("/Users/{id}?attributes=userName"), None)
        .await;
    assert!(b.get("externalId").is_none() && b["userName"] == "Jane@X.com");
    assert_eq!(c.call("GET", "/Users/nope", None).await.0, 404);
    assert_eq!(c.sim.find_user("JANE@X.COM").unwrap()["id"], json!(id));
    let (_, spc, _) = c.call("GET", "/ServiceProviderConfig", None).await;
    assert_eq!(
        (
            spc["filter"]["maxResults"].as_u64(),
            spc["bulk"]["supported"].as_bool()
        ),
        (Some(50), Some(false))
    );
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn user_patch_paths_and_atomic_failure() {
    let c = C::new().await;
    let boss = c.user("boss@x.com", json!({})).await;
    let id = c
        .user(
            "a@x.com",
            json!({"emails": [{"type": "work", "value": "old@x.com", "primary": true}],
        "name": {"givenName": "A", "familyName": "B"}}),
        )
        .await;
    let path = format!("/Users/{id}");
    let (s, b) = c.patch(&path, json!([
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "new@x.com"},
        {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+4712345678"},
        {"op": "Replace", "path": "active", "value": "False"},
        {"op": "Add", "path": format!("{ENT}:department"), "value": "Sales"},
        {"op": "replace", "path": format!("{ENT}:manager"), "value": {"value": boss}},
        {"op": "replace", "value": {"name.givenName": "Z", "displayName": "Zed",
            format!("{ENT}:employeeNumber"): "42"}},
    ])).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["emails"],
        json!([{"type": "work", "value": "new@x.com", "primary": true}])
    );
    assert_eq!(b["phoneNumbers"][0]["value"], "+4712345678");
    assert_eq!(b["active"], json!(false), "string False coerced to boolean");
    assert_eq!(b[ENT]["department"], "Sales");
    assert_eq!(b[ENT]["manager"]["value"], json!(boss));
    assert_eq!(b[ENT]["employeeNumber"], "42");
    assert_eq!(b["name"], json!({"givenName": "Z", "familyName": "B"}));
    // Manager as a plain string id is accepted; an unknown manager is not.
    let (s, b) = c
        .patch(
            &path,
            json!([{"op": "replace", "path": format!("{ENT}:manager"), "value": boss}]),
        )
        .await;
    assert_eq!(
        (s, b[ENT]["manager"]["value"].as_str()),
        (200, Some(boss.as_str()))
    );
    let before = c.sim.find_user("a@x.com").unwrap();
    let (s, b) = c
        .patch(
            &path,
            json!([
                {"op": "replace", "path": "displayName", "value": "Changed"},
                {"op": "replace", "path": "emails[type eq \"home\"].value", "value": "h@x.com"},
            ]),
        )
        .await;
    assert_eq!((s, b["scimType"].as_str()), (400, Some("noTarget")));
    assert_eq!(
        c.sim.find_user("a@x.com").unwrap(),
        before,
        "failed PATCH changed nothing"
    );
    let (s, b) = c.patch(&path, json!([{"op": "remove"}])).await;
    assert_eq!((s, b["scimType"].as_str()), (400, Some("noTarget")));
    let (s, b) = c
        .patch(
            &path,
            json!([{"op": "add", "path": "emails", "value": [{"type": "work", "value": "dup@x"}]}]),
        )
        .await;
    assert_eq!(
        (s, b["scimType"].as_str()),
        (400, Some("invalidValue")),
        "duplicate work email type"
    );
    let (s, _) = c
        .patch(
            &path,
            json!([{"op": "replace", "path": "active", "value": "maybe"}]),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _, _) = c
        .call(
            "PATCH",
            &path,
            Some(json!({"Operations": [{"op": "add", "path": "title", "value": "x"}]})),
        )
        .await;
    assert_eq!(s, 400, "PatchOp schema required");
    let (s, b) = c
        .patch(
            &path,
            json!([{"op": "replace", "path": "userName", "value": "BOSS@x.com"}]),
        )
        .await;
    assert_eq!((s, b["scimType"].as_str()), (409, Some("uniqueness")));
}

#[tokio::test]
async fn group_members_add_remove_and_delete_cascade() {
    let c = C::new().await;
    let ids: Vec<String> = futures::future::join_all((0..4).map(|i| {
        let c = &c;
        async move { c.user(&format!("m{i}@x.com"), json!({})).await }
    }))
    .await;
    let (s, g, _) = c
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "Sales", "externalId": "gid"})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(g["members"], json!([]));
    let gpath = format!("/Groups/{}", g["id"].as_str().unwrap());
    let add: Vec<Value> = ids
        .iter()
        .map(|i| json!({"$ref": null, "value": i}))
        .collect();
    let (s, b) = c
        .patch(
            &gpath,
            json!([{"op": "Add", "path": "members", "value": add}]),
        )
        .await;
    assert_eq!(
        (s, b),
        (204, Value::Null),
        "group PATCH answers 204 without body"
    );
    let (_, b) = c
        .patch(
            &gpath,
            json!([{"op": "add", "path": "members", "value": [{"value": ids[0]}]}]),
        )
        .await;
    assert_eq!(b, Value::Null);
    let stored = c.sim.find_group("sales").unwrap();
    assert_eq!(
        stored["members"].as_array().unwrap().len(),
        4,
        "no duplicates"
    );
    assert_eq!(stored["members"][0]["type"], "User");
    assert_eq!(stored["members"][0]["display"], "m0@x.com");
    assert!(stored["members"][0]["$ref"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/Users/{}", ids[0])));
    c.patch(
        &gpath,
        json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", ids[1])}]),
    )
    .await;
    c.patch(
        &gpath,
        json!([{"op": "Remove", "path": "members", "value": [{"value": ids[2]}]}]),
    )
    .await;
    let members = |g: Value| -> BTreeSet<String> {
        g["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["value"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        members(c.sim.find_group("Sales").unwrap()),
        BTreeSet::from([ids[0].clone(), ids[3].clone()])
    );
    let (s, b) = c
        .patch(
            &gpath,
            json!([{"op": "add", "path": "members", "value": [{"value": "ghost"}]}]),
        )
        .await;
    assert_eq!((s, b["scimType"].as_str()), (400, Some("invalidValue")));
    let (s, _, _) = c.call("DELETE", &format!("/Users/{}", ids[0]), None).await;
    assert_eq!(s, 204);
    assert_eq!(
        c.call("GET", &format!("/Users/{}", ids[0]), None).await.0,
        404
    );
    assert_eq!(
        members(c.sim.find_group("Sales").unwrap()),
        BTreeSet::from([ids[3].clone()])
    );
    let (_, b, _) = c
        .call(
            "GET",
            "/Groups?excludedAttributes=members&filter=displayName%20eq%20%22SALES%22",
            None,
        )
        .await;
    assert_eq!(b["totalResults"], 1);
    assert!(b["Resources"][0].get("members").is_none());
    let (s, _, _) = c
        .call(
            "POST",
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "sales"})),
        )
        .await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn bulk_resolves_forward_bulk_id_references() {
    let c = C::new().await;
    let req = |ops: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops});
    let ops = json!([
        {"method": "POST", "bulkId": "g1", "path": "/Groups",
         "data": {"schemas": [GROUP], "displayName": "Team", "members": [{"value": "bulkId:u1"}]}},
        {"method": "POST", "bulkId": "u1", "path": "/Users", "data": {"schemas": [USER], "userName": "bulk@x.com"}},
        {"method": "POST", "bulkId": "u2", "path": "/Users", "data": {"schemas": [USER], "userName": "BULK@x.com"}},
        {"method": "PATCH", "path": "/Groups/bulkId:g1", "data": {"schemas": [PATCH],
         "Operations": [{"op": "replace", "path": "displayName", "value": "Team2"}]}},
    ]);
    let (s, _, _) = c.call("POST", "/Bulk", Some(req(ops.clone()))).await;
    assert_eq!(s, 501, "bulk is off unless configured");
    let bulk = BulkSupport {
        max_operations: 4,
        max_payload_size: 4096,
        advertised_payload_size: None,
    };
    c.sim.set_faults(ScimFaults {
        bulk: Some(bulk),
        ..Default::default()
    });
    let (_, spc, _) = c.call("GET", "/ServiceProviderConfig", None).await;
    assert_eq!(
        (
            spc["bulk"]["supported"].as_bool(),
            spc["bulk"]["maxOperations"].as_u64()
        ),
        (Some(true), Some(4))
    );
    let (s, b, _) = c.call("POST", "/Bulk", Some(req(ops))).await;
    assert_eq!(s, 200, "{b}");
    let res = b["Operations"].as_array().unwrap();
    let by = |id: &str| res.iter().find(|o| o["bulkId"] == id).unwrap().clone();
    assert_eq!(
        (by("u1")["status"].as_str(), by("g1")["status"].as_str()),
        (Some("201"), Some("201"))
    );
    assert_eq!(by("u2")["status"], "409");
    assert_eq!(by("u2")["response"]["scimType"], "uniqueness");
    let uid = c.sim.find_user("bulk@x.com").unwrap()["id"].clone();
    let team = c
        .sim
        .find_group("Team2")
        .expect("renamed by PATCH on /Groups/bulkId:g1");
    assert_eq!(team["members"][0]["value"], uid);
    assert_eq!(res.len(), 4);
    assert!(by("g1")["location"].as_str().unwrap().contains("/Groups/"));
    let five: Vec<Value> = (0..5)
        .map(|i| json!({"method": "DELETE", "path": format!("/Users/{i}")}))
        .collect();
    assert_eq!(c.call("POST", "/Bulk", Some(req(json!(five)))).await.0, 413);
    let big = json!([{"method": "POST", "bulkId": "x", "path": "/Users",
        "data": {"schemas": [USER], "userName": "y".repeat(5000)}}]);
    assert_eq!(c.call("POST", "/Bulk", Some(req(big))).await.0, 413);
}

#[tokio::test]
async fn faults_and_request_log() {
    let c = C::new().await;
    let seeded = c
        .sim
        .seed_user(json!({"schemas": [USER], "userName": "seed@x.com"}));
    c.sim.set_faults(ScimFaults {
        rate_500_after_commit: 1.0,
        ..Default::default()
    });
    let (s, _, _) = c
        .call(
            "POST",
            "/Users",
            Some(json!({"schemas": [USER], "userName": "ghost@x.com"})),
        )
        .await;
    assert_eq!(s, 500);
    assert!(
        c.sim.find_user("ghost@x.com").is_some(),
        "write committed despite the 500"
    );
    c.sim.set_faults(ScimFaults {
        reject_all_writes: true,
        ..Default::default()
    });
    let (s, _, _) = c
        .call(
            "POST",
            "/Users",
            Some(json!({"schemas": [USER], "userName": "no@x.com"})),
        )
        .await;
    assert_eq!(s, 500);
    assert!(c.sim.find_user("no@x.com").is_none());
    assert_eq!(
        c.call("GET", &format!("/Users/{seeded}"), None).await.0,
        200,
        "reads still work"
    );
    let names = BTreeSet::from(["Bad@X.com".to_string()]);
    c.sim.set_faults(ScimFaults {
        fail_user_names: names,
        ..Default::default()
    });
    let (s, b, _) = c
        .call(
            "POST",
            "/Users",
            Some(json!({"schemas": [USER], "userName": "bad@x.com"})),
        )
        .await;
    assert_eq!((s, b["scimType"].as_str()), (400, Some("invalidValue")));
    c.sim.set_faults(ScimFaults {
        rate_429: 1.0,
        retry_after_secs: 3,
        ..Default::default()
    });
    let (s, _, h) = c.call("GET", "/Users", None).await;
    assert_eq!((s, h["retry-after"].to_str().unwrap()), (429, "3"));
    assert_eq!(
        c.call("GET", "/ServiceProviderConfig", None).await.0,
        200,
        "discovery is never faulted"
    );
    c.sim.set_faults(ScimFaults {
        latency_ms: 30,
        ..Default::default()
    });
    let t0 = std::time::Instant::now();
    c.call("GET", "/Schemas", None).await;
    assert!(t0.elapsed() >= std::time::Duration::from_millis(30));
    let log = c.sim.request_log();
    assert_eq!(c.sim.write_count(), 3);
    assert_eq!((log[0].path.as_str(), log[0].status), ("/Users", 500));
    assert_eq!(
        log[0].resource_id.as_deref(),
        c.sim.find_user("ghost@x.com").unwrap()["id"].as_str()
    );
    assert_eq!(log[0].body.as_ref().unwrap()["userName"], "ghost@x.com");
    assert_eq!(log[3].resource_type.as_deref(), Some("Users"));
    c.sim.clear_log();
    assert!(c.sim.request_log().is_empty());
    // the latency holds the answer back, not the work: a client that stops waiting has
    // still created the user (its retry must meet 409 and adopt)
    c.sim.set_faults(ScimFaults {
        latency_ms: 5_000,
        ..Default::default()
    });
    let late = json!({"schemas": [USER], "userName": "late@x.com"});
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        c.call("POST", "/Users", Some(late)),
    )
    .await;
    assert!(gave_up.is_err(), "answered before its latency");
    assert!(c.sim.find_user("late@x.com").is_some());
    c.sim.set_faults(ScimFaults::default());
}
