//! Interoperability with an independent SCIM server: `scim2-server` from PyPI (a strict,
//! RFC-following in-memory implementation), fed by the simulated Graph tenant.
//!
//! The server is found through `$SCIM2_SERVER` or `scim2-server` on `PATH`. Outside CI the
//! test skips with a printed reason when it is absent; under `CI=true` absence fails.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{edit_config, member_ids, Harness};
use entra_here_sync::demo::upn;
use serde_json::{json, Value};

const TOKEN: &str = "interop-bearer-token-0123456789";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_server() -> Option<String> {
    if let Ok(p) = std::env::var("SCIM2_SERVER") {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("scim2-server"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

async fn start_server() -> Option<Server> {
    let Some(bin) = find_server() else {
        let why = "scim2-server not found (set SCIM2_SERVER or `pip install scim2-server`)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why}: required under CI"
        );
        eprintln!("SKIP interop_scim2: {why}");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .args([
            "--hostname",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--bearer-token",
            TOKEN,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}/v2"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if get(&server.base, "ServiceProviderConfig").await.is_some() {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("scim2-server did not answer on {} within 30 s", server.base);
}

async fn get(base: &str, path: &str) -> Option<Value> {
    let resp = reqwest::Client::new()
        .get(format!("{base}/{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?;
    resp.status().is_success().then_some(())?;
    resp.json().await.ok()
}

async fn list(base: &str, kind: &str) -> Vec<Value> {
    let page = get(base, &format!("{kind}?count=1000"))
        .await
        .expect("list answers");
    page["Resources"].as_array().cloned().unwrap_or_default()
}

/// Points the harness's config at the real server instead of the simulated SCIM.
fn retarget(h: &Harness, server: &Server) {
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let text = text.replace(&h.sim.scim.base_url(), &server.base);
    std::fs::write(&h.config_path, text).unwrap();
    std::fs::write(h.dir.path().join("here-scim-token"), format!("{TOKEN}\n")).unwrap();
}

fn user(users: &[Value], i: usize) -> &Value {
    users
        .iter()
        .find(|u| u["userName"] == json!(upn(i)))
        .unwrap_or_else(|| panic!("{} missing on scim2-server", upn(i)))
}

/// scim2-server advertises `/Bulk` (maxOperations 1000), so the default config sends bulk
/// requests; `here.bulk = false` sends one request per operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_and_incremental_sync_against_scim2_server() {
    interop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_and_incremental_bulk_sync_against_scim2_server() {
    interop(true).await;
}

/// Only bulk requests in bulk mode, none otherwise (the ServiceProviderConfig read aside).
fn assert_mode(s: &entra_here_sync::report::Summary, bulk: bool) {
    let kinds: Vec<&String> = s.scim_requests_by_kind.keys().collect();
    let writes = kinds.iter().filter(|k| !k.starts_with("GET")).count();
    let bulks = kinds.iter().filter(|k| *k == &"POST Bulk").count();
    match bulk {
        true => assert_eq!((writes, bulks), (1, 1), "{kinds:?}"),
        false => assert_eq!(bulks, 0, "{kinds:?}"),
    }
}

async fn interop(bulk: bool) {
    let Some(server) = start_server().await else {
        return;
    };
    let h = Harness::new("").await;
    retarget(&h, &server);
    if !bulk {
        edit_config(&h, "[here]\n", "[here]\nbulk = false\n");
    }
    let g = &h.sim.graph;
    let u: Vec<String> = (0..=12).map(|i| h.add_user(i)).collect();
    let members: Vec<&str> = (1..=8).map(|i| u[i].as_str()).collect();
    let g1 = g.add_group("Interop Users", &members);
    let g2 = g.add_group("Interop Admins", &[&u[9], &u[10]]);
    g.assign(&g1);
    g.assign(&g2);
    g.assign(&u[11]);
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.failed, s.users_created, s.groups_created),
        (0, 0, 11, 2),
        "{s:?}"
    );
    assert_mode(&s, bulk);
    let users = list(&server.base, "Users").await;
    assert_eq!(users.len(), 11, "users 1..=11 only");
    assert_eq!(user(&users, 3)["name"]["givenName"], json!("Given3"));
    assert_eq!(user(&users, 3)["active"], json!(true));
    let groups = list(&server.base, "Groups").await;
    let interop = groups
        .iter()
        .find(|x| x["displayName"] == json!("Interop Users"))
        .expect("group");
    let want: BTreeSet<String> = (1..=8)
        .map(|i| user(&users, i)["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(member_ids(interop), want);

    g.update_user(&u[2], json!({"jobTitle": "Director"}));
    g.disable_user(&u[3]);
    g.remove_member(&g1, &u[4]);
    g.rename_group(&g2, "Interop Admins (renamed)");
    let s = h.sync().await;
    assert_eq!((s.exit_code, s.failed), (0, 0), "{s:?}");
    assert_eq!(
        (s.users_updated, s.users_deactivated, s.groups_updated),
        (1, 2, 1),
        "{s:?}"
    );
    assert_mode(&s, bulk);
    let users = list(&server.base, "Users").await;
    assert_eq!(users.len(), 11, "nobody deleted or duplicated");
    assert_eq!(user(&users, 2)["title"], json!("Director"));
    assert_eq!(user(&users, 3)["active"], json!(false));
    assert_eq!(
        user(&users, 4)["active"],
        json!(false),
        "left scope: deactivated"
    );
    let groups = list(&server.base, "Groups").await;
    let interop = groups
        .iter()
        .find(|x| x["displayName"] == json!("Interop Users"))
        .expect("group");
    let want: BTreeSet<String> = [1, 2, 5, 6, 7, 8]
        .iter()
        .map(|i| user(&users, *i)["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        member_ids(interop),
        want,
        "removed by members[value eq] path filter"
    );
    assert!(groups
        .iter()
        .any(|x| x["displayName"] == json!("Interop Admins (renamed)")));
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.scim_requests),
        (0, 0),
        "third cycle is quiet: {s:?}"
    );
}
