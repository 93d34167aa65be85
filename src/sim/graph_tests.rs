//! Loopback tests of the fake Graph: token endpoint, delta rounds, expiry, faults, listings.

use serde_json::{json, Value};

use crate::sim::{DeltaExpiry, GraphFaults, GraphSim};

thread_local! {
    /// One client per test thread: building a client (TLS roots) costs more than a request.
    static CLIENT: reqwest::Client = reqwest::Client::new();
}

fn client() -> reqwest::Client {
    CLIENT.with(reqwest::Client::clone)
}

async fn token_with(sim: &GraphSim, form: &[(&str, &str)]) -> (u16, Value) {
    let url = format!("{}/{}/oauth2/v2.0/token", sim.base_url(), sim.tenant_id());
    let r = client().post(url).form(form).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn token(sim: &GraphSim) -> String {
    let (id, secret) = (sim.client_id(), sim.client_secret());
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", id.as_str()),
        ("client_secret", secret.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let (status, body) = token_with(sim, &form).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn get(url: &str, tok: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = client().get(url).bearer_auth(tok).send().await.unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, r.json().await.unwrap_or(Value::Null), h)
}

/// Follows nextLinks to the deltaLink; returns (items, pages, deltaLink).
async fn round(url: &str, tok: &str) -> (Vec<Value>, Vec<Value>, String) {
    let (mut items, mut pages, mut next) = (vec![], vec![], url.to_string());
    loop {
        let (s, body, _) = get(&next, tok).await;
        assert_eq!(s, 200, "{body}");
        let has_next = body.get("@odata.nextLink").is_some();
        assert_ne!(
            has_next,
            body.get("@odata.deltaLink").is_some(),
            "exactly one link"
        );
        items.extend(body["value"].as_array().unwrap().iter().cloned());
        pages.push(body.clone());
        if !has_next {
            return (
                items,
                pages,
                body["@odata.deltaLink"].as_str().unwrap().into(),
            );
        }
        next = body["@odata.nextLink"].as_str().unwrap().to_string();
    }
}

fn by_id<'a>(items: &'a [Value], id: &str) -> Vec<&'a Value> {
    items.iter().filter(|v| v["id"] == id).collect()
}

#[tokio::test]
async fn token_endpoint_issues_and_rejects() {
    let sim = GraphSim::start().await.unwrap();
    let tok = token(&sim).await;
    assert_eq!(tok.split('.').count(), 3);
    assert_eq!(sim.issued_tokens(), vec![tok.clone()]);
    let id = sim.client_id();
    let scope = ("scope", "https://graph.microsoft.com/.default");
    let grant = ("grant_type", "client_credentials");
    let bad = [
        grant,
        ("client_id", id.as_str()),
        ("client_secret", "nope"),
        scope,
    ];
    let (s, body) = token_with(&sim, &bad).await;
    assert_eq!((s, body["error"].as_str()), (401, Some("invalid_client")));
    assert_eq!(body["error_codes"], json!([7000215]));
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215"));
    let bad_scope = [
        grant,
        ("client_id", id.as_str()),
        ("scope", "User.Read.All"),
    ];
    assert_eq!(
        token_with(&sim, &bad_scope).await.1["error"],
        "invalid_scope"
    );
    let wrong_app = [grant, ("client_id", "x"), ("client_secret", "y"), scope];
    assert_eq!(
        token_with(&sim, &wrong_app).await.1["error_codes"],
        json!([700016])
    );
    // HTTP Basic is accepted as well.
    let url = format!("{}/{}/oauth2/v2.0/token", sim.base_url(), sim.tenant_id());
    let r = client()
        .post(&url)
        .basic_auth(sim.client_id(), Some(sim.client_secret()))
        .form(&[grant, scope])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let other = format!("{}/not-my-tenant/oauth2/v2.0/token", sim.base_url());
    let r = client().post(other).form(&[grant]).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_codes"], json!([90002]));
    // reject_secret makes even the right secret fail.
    sim.set_faults(GraphFaults {
        reject_secret: true,
        ..Default::default()
    });
    let secret = sim.client_secret();
    let good = [
        grant,
        ("client_id", id.as_str()),
        ("client_secret", secret.as_str()),
        scope,
    ];
    assert_eq!(token_with(&sim, &good).await.0, 401);
}

#[tokio::test]
async fn certificate_assertion_is_checked_structurally() {
    let sim = GraphSim::start().await.unwrap();
    let id = sim.client_id();
    let enc = |v: Value| crate::sim::b64url(v.to_string().as_bytes());
    let exp = chrono::Utc::now().timestamp() + 600;
    let aud = format!(
        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
        sim.tenant_id()
    );
    let claims = enc(json!({"aud": aud, "iss": id, "sub": id, "exp": exp, "jti": "1"}));
    let good = format!(
        "{}.{claims}.c2ln",
        enc(json!({"alg": "PS256", "x5t#S256": "abc"}))
    );
    let bad = format!("{}.{claims}.c2ln", enc(json!({"alg": "PS256"})));
    for (jwt, want) in [(good, 200), (bad, 401)] {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", id.as_str()),
            ("scope", "https://graph.microsoft.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", jwt.as_str()),
        ];
        assert_eq!(token_with(&sim, &form).await.0, want);
    }
}

#[tokio::test]
async fn graph_requires_valid_unexpired_bearer() {
    let sim = GraphSim::start().await.unwrap();
    let url = format!("{}/v1.0/users/delta", sim.base_url());
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    sim.set_faults(GraphFaults {
        token_ttl_secs: Some(0),
        ..Default::default()
    });
    let dead = token(&sim).await;
    let (s, body, _) = get(&url, &dead).await;
    assert_eq!(s, 401);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("token is expired"));
    let log = sim.request_log();
    assert!(!log[0].authorization_present && log.last().unwrap().authorization_present);
}

#[tokio::test]
async fn first_round_pages_empty_page_and_member_slices() {
    let sim = GraphSim::start().await.unwrap();
    let ids: Vec<String> = (0..7)
        .map(|i| sim.add_user(&format!("u{i}@contoso.com"), json!({})))
        .collect();
    sim.delete_user(&ids[6], false);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let big = sim.add_group("Big", &refs);
    let empty = sim.add_group("Empty", &[]);
    let tok = token(&sim).await;
    let (users, pages, link) = round(&format!("{}/v1.0/users/delta", sim.base_url()), &tok).await;
    assert_eq!(users.len(), 6, "soft-deleted user is absent");
    assert!(by_id(&users, &ids[6]).is_empty());
    assert!(pages.len() >= 3);
    assert_eq!(pages[1]["value"], json!([]), "empty page after the first");
    assert!(pages[1]["@odata.nextLink"]
        .as_str()
        .unwrap()
        .contains("$skiptoken="));
    assert!(link.contains("/v1.0/users/delta?$deltatoken="));
    let url = format!(
        "{}/v1.0/groups/microsoft.graph.delta?$select=displayName,members",
        sim.base_url()
    );
    let (groups, _, _) = round(&url, &tok).await;
    let slices = by_id(&groups, &big);
    assert_eq!(slices.len(), 2, "6 visible members split 5 + 1");
    let n: Vec<usize> = slices
        .iter()
        .map(|g| g["members@delta"].as_array().unwrap().len())
        .collect();
    assert_eq!(n, vec![5, 1]);
    assert!(slices.iter().all(|g| g["displayName"] == "Big"));
    assert_eq!(
        slices[0]["members@delta"][0]["@odata.type"],
        "#microsoft.graph.user"
    );
    let e = by_id(&groups, &empty);
    assert_eq!(e.len(), 1);
    assert!(e[0].get("members@delta").is_none());
}

#[tokio::test]
async fn later_round_partial_updates_removals_and_members() {
    let sim = GraphSim::start().await.unwrap();
    let u: Vec<String> = (0..6)
        .map(|i| {
            sim.add_user(
                &format!("p{i}@contoso.com"),
                json!({"jobTitle": "Dev", "city": "Oslo"}),
            )
        })
        .collect();
    let g = sim.add_group("G", &[&u[0], &u[4], &u[5]]);
    let tok = token(&sim).await;
    let base = sim.base_url();
    let users_url =
        format!("{base}/v1.0/users/delta?$select=displayName,jobTitle,accountEnabled,manager");
    let (_, _, ulink) = round(&users_url, &tok).await;
    let (_, _, glink) = round(
        &format!("{base}/v1.0/groups/delta?$select=displayName,members"),
        &tok,
    )
    .await;
    sim.update_user(&u[0], json!({"jobTitle": "CTO"}));
    sim.update_user(&u[1], json!({"city": "Rome"}));
    sim.update_user(&u[2], json!({"jobTitle": null}));
    sim.delete_user(&u[3], false);
    sim.delete_user(&u[4], true);
    sim.remove_member(&g, &u[5]);
    sim.add_member(&g, &u[1]);
    sim.set_manager(&u[0], Some(&u[1]));
    sim.set_manager(&u[0], None);
    let (items, _, _) = round(&ulink, &tok).await;
    let a = by_id(&items, &u[0]);
    assert_eq!(a[0], &json!({"id": u[0], "jobTitle": "CTO"}));
    assert_eq!(a[1]["manager@delta"][0]["id"], json!(u[1]));
    assert_eq!(a[2]["manager@delta"][0]["@removed"]["reason"], "deleted");
    assert!(
        by_id(&items, &u[1]).is_empty(),
        "unselected prop change is invisible"
    );
    assert_eq!(
        by_id(&items, &u[2])[0],
        &json!({"id": u[2], "jobTitle": null})
    );
    assert_eq!(by_id(&items, &u[3])[0]["@removed"]["reason"], "changed");
    assert_eq!(by_id(&items, &u[4])[0]["@removed"]["reason"], "deleted");
    let (groups, _, _) = round(&glink, &tok).await;
    let refs: Vec<&Value> = by_id(&groups, &g)
        .iter()
        .flat_map(|e| e["members@delta"].as_array().unwrap().iter())
        .collect();
    let removed = |id: &str| {
        refs.iter()
            .any(|r| r["id"] == id && r["@removed"]["reason"] == "deleted")
    };
    assert!(removed(&u[4]) && removed(&u[5]));
    assert!(refs
        .iter()
        .any(|r| r["id"] == json!(u[1]) && r.get("@removed").is_none()));
    assert!(
        !refs.iter().any(|r| r["id"] == json!(u[3])),
        "soft delete keeps membership"
    );
    // Restore: the user comes back as a full object.
    sim.restore_user(&u[3]);
    let (items, _, _) = round(&format!("{base}/v1.0/users/delta?$deltatoken=latest"), &tok).await;
    assert!(items.is_empty(), "latest returns no data");
    let (items, _, _) = round(&ulink, &tok).await;
    let back = by_id(&items, &u[3]);
    assert_eq!(back.last().unwrap()["displayName"], "p3");
}

#[tokio::test]
async fn expired_links_answer_410_or_400() {
    let sim = GraphSim::start().await.unwrap();
    sim.add_user("a@contoso.com", json!({}));
    let tok = token(&sim).await;
    let url = format!("{}/v1.0/users/delta?$select=displayName", sim.base_url());
    let (_, _, link) = round(&url, &tok).await;
    sim.expire_delta_links(DeltaExpiry::Gone410);
    let (s, body, headers) = get(&link, &tok).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (410, Some("resyncRequired"))
    );
    let loc = headers["location"].to_str().unwrap();
    assert!(
        loc.starts_with(&sim.base_url())
            && loc.ends_with("/v1.0/users/delta?$select=displayName&$deltatoken=")
    );
    let (_, _, link2) = round(loc, &tok).await;
    sim.expire_delta_links(DeltaExpiry::SyncStateNotFound400);
    let (s, body, _) = get(&link2, &tok).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("syncStateNotFound"))
    );
    let bogus = format!("{}/v1.0/users/delta?$deltatoken=nope", sim.base_url());
    assert_eq!(get(&bogus, &tok).await.0, 400);
}

#[tokio::test]
async fn select_filter_and_mid_read_failure() {
    let sim = GraphSim::start().await.unwrap();
    let ids: Vec<String> = (0..9)
        .map(|i| {
            sim.add_user(
                &format!("s{i}@contoso.com"),
                json!({"jobTitle": "X", "department": "D"}),
            )
        })
        .collect();
    sim.set_manager(&ids[0], Some(&ids[1]));
    let tok = token(&sim).await;
    let base = sim.base_url();
    let (items, _, _) = round(
        &format!("{base}/v1.0/users/delta?$select=displayName,manager"),
        &tok,
    )
    .await;
    assert!(items
        .iter()
        .all(|v| v.get("jobTitle").is_none() && v.get("displayName").is_some()));
    assert_eq!(
        by_id(&items, &ids[0])[0]["manager@delta"][0]["id"],
        json!(ids[1])
    );
    let (s, body, _) = get(&format!("{base}/v1.0/users/delta?$select=bogus"), &tok).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("Request_BadRequest"))
    );
    let f = format!(
        "{base}/v1.0/users/delta?$filter=id eq '{}' or id eq '{}'",
        ids[2], ids[3]
    );
    let (items, _, _) = round(&f, &tok).await;
    assert_eq!(items.len(), 2);
    let (s, body, _) = get(
        &format!("{base}/v1.0/users/delta?$filter=startswith(displayName,'a')"),
        &tok,
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("Request_UnsupportedQuery"))
    );
    sim.set_faults(GraphFaults {
        fail_delta_after_pages: Some(2),
        ..Default::default()
    });
    let (s, first, _) = get(&format!("{base}/v1.0/users/delta"), &tok).await;
    assert_eq!(s, 200);
    let (s, second, _) = get(first["@odata.nextLink"].as_str().unwrap(), &tok).await;
    assert_eq!(s, 200);
    assert_eq!(
        get(second["@odata.nextLink"].as_str().unwrap(), &tok)
            .await
            .0,
        500
    );
}

#[tokio::test]
async fn throttling_assignments_and_lookups() {
    let sim = GraphSim::start().await.unwrap();
    let users: Vec<String> = (0..6)
        .map(|i| sim.add_user(&format!("Z{i}@Contoso.com"), json!({})))
        .collect();
    let g = sim.add_group("Assigned", &[&users[0], &users[1]]);
    let nested = sim.add_group("Nested", &[&users[2]]);
    sim.add_member(&g, &nested);
    sim.assign(&g);
    for u in &users[3..6] {
        sim.assign(u);
    }
    sim.delete_user(&users[5], false);
    let tok = token(&sim).await;
    let base = sim.base_url();
    let sp = sim.service_principal_id();
    let (s, body, _) = get(&format!("{base}/v1.0/servicePrincipals/{sp}"), &tok).await;
    assert_eq!(
        (s, body["appId"].as_str()),
        (200, Some(sim.client_id().as_str()))
    );
    let (s, body, _) = get(&format!("{base}/v1.0/servicePrincipals/nope"), &tok).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("Request_ResourceNotFound"))
    );
    // one per page: the hidden last assignment must not leave an empty page behind, and
    // every nextLink keeps the `$select`
    let mut next = format!(
        "{base}/v1.0/servicePrincipals/{sp}/appRoleAssignedTo?$top=1&$select=principalId,principalType"
    );
    let mut all = vec![];
    loop {
        let (_, body, _) = get(&next, &tok).await;
        let page = body["value"].as_array().unwrap();
        assert_eq!(page.len(), 1, "{body}");
        assert_eq!(page[0].as_object().unwrap().len(), 2, "{body}");
        all.extend(page.iter().cloned());
        match body["@odata.nextLink"].as_str() {
            Some(n) => next = n.to_string(),
            None => break,
        }
    }
    assert_eq!(
        all.len(),
        3,
        "group + 2 live users; soft-deleted user's assignment hidden"
    );
    assert!(all
        .iter()
        .any(|a| a["principalType"] == "Group" && a["principalId"] == json!(g)));
    let (scope_users, scope_groups) = sim.expected_scope();
    assert_eq!(
        scope_users.len(),
        4,
        "users 0,1 via group, 3,4 direct; nested user 2 excluded"
    );
    assert!(!scope_users.contains(&users[2]) && scope_groups.contains(&g));
    let (s, body, _) = get(
        &format!("{base}/v1.0/users/z0@contoso.COM?$select=displayName"),
        &tok,
    )
    .await;
    assert_eq!((s, body["id"].as_str()), (200, Some(users[0].as_str())));
    assert!(body.get("userPrincipalName").is_none());
    let (_, body, _) = get(&format!("{base}/v1.0/users/{}/memberOf", users[0]), &tok).await;
    assert_eq!(body["value"][0]["id"], json!(g));
    let (_, body, _) = get(&format!("{base}/v1.0/groups/{g}/members"), &tok).await;
    assert_eq!(body["value"].as_array().unwrap().len(), 3);
    sim.set_faults(GraphFaults {
        rate_429: 1.0,
        retry_after_secs: 7,
        ..Default::default()
    });
    let (s, _, headers) = get(&format!("{base}/v1.0/groups/{g}"), &tok).await;
    assert_eq!((s, headers["retry-after"].to_str().unwrap()), (429, "7"));
    assert_eq!(
        token(&sim).await.split('.').count(),
        3,
        "token endpoint is not throttled"
    );
}
