//! Shared harness of the end-to-end tests: the simulator, a config pointing at it, and
//! checks of what the simulated HERE holds against what Entra says should be there.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use entra_here_sync::config::Config;
use entra_here_sync::cycle::{run_cycle, CycleOptions, Quiet};
use entra_here_sync::demo::{upn, user_props};
use entra_here_sync::report::Summary;
use entra_here_sync::sim::Simulator;
use entra_here_sync::state::State;
use serde_json::{json, Value};

/// A simulator plus a temporary directory holding config, secrets and state.
pub struct Harness {
    pub sim: Simulator,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Harness {
    /// Starts the simulator and writes a config for it (`extra` is appended verbatim).
    pub async fn new(extra: &str) -> Harness {
        let sim = Simulator::start().await.expect("simulator starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path =
            entra_here_sync::demo::write_config(dir.path(), &sim, extra).expect("config");
        Harness {
            sim,
            dir,
            config_path,
        }
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).expect("config loads")
    }

    /// One cycle through the library, as `sync` runs it.
    pub async fn sync_with(&self, opts: CycleOptions) -> Summary {
        let cfg = self.config();
        let mut state = State::open(&cfg.state.path).expect("state opens");
        let stop = AtomicBool::new(false);
        run_cycle(
            &cfg,
            &mut state,
            &opts,
            &stop,
            &mut std::io::sink(),
            &mut Quiet,
        )
        .await
    }

    pub async fn sync(&self) -> Summary {
        self.sync_with(CycleOptions::default()).await
    }

    pub fn state(&self) -> State {
        State::open_read_only(&self.config().state.path).expect("state readable")
    }

    /// Adds user `i` of the demo shape (every mapped property set).
    pub fn add_user(&self, i: usize) -> String {
        self.sim.graph.add_user(&upn(i), user_props(i))
    }

    /// SCIM writes (POST/PUT/PATCH/DELETE on Users or Groups) since the log was cleared.
    pub fn scim_writes(&self) -> Vec<String> {
        self.sim
            .scim
            .request_log()
            .iter()
            .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
            .filter(|r| matches!(r.resource_type.as_deref(), Some("Users") | Some("Groups")))
            .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
            .collect()
    }

    /// POSTs to /Users answered 201, by userName (lower case).
    pub fn user_posts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.sim.scim.request_log() {
            if r.method == "POST" && r.resource_type.as_deref() == Some("Users") && r.status == 201
            {
                let name = r
                    .body
                    .as_ref()
                    .and_then(|b| b["userName"].as_str())
                    .unwrap_or("")
                    .to_lowercase();
                *out.entry(name).or_insert(0) += 1;
            }
        }
        out
    }
}

/// What HERE must hold: every in-scope user with Entra's `accountEnabled` as `active`;
/// every user in `deactivated` (Entra ids, by UPN) present with `active=false`; no other
/// users; every assigned group with exactly its in-scope active members.
pub fn verify_target(sim: &Simulator, deactivated: &[&str]) {
    let (scope, groups) = sim.graph.expected_scope();
    let users = sim.scim.users();
    let mut by_name: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for u in &users {
        by_name
            .entry(u["userName"].as_str().unwrap_or("").to_lowercase())
            .or_default()
            .push(u);
    }
    let dups: Vec<_> = by_name
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(dups.is_empty(), "duplicate SCIM users: {dups:?}");
    let mut expected_names = BTreeSet::new();
    let mut active_ids = BTreeMap::new();
    for id in &scope {
        let props = sim.graph.user(id).expect("in-scope user exists");
        let name = props["userPrincipalName"].as_str().unwrap().to_lowercase();
        let su = by_name
            .get(&name)
            .unwrap_or_else(|| panic!("in-scope user {name} missing in SCIM"))[0];
        let enabled = props["accountEnabled"] != json!(false);
        assert_eq!(su["active"], json!(enabled), "{name} active");
        assert_eq!(
            su["displayName"], props["displayName"],
            "{name} displayName"
        );
        assert_eq!(su["title"], props["jobTitle"], "{name} title");
        assert_eq!(su["externalId"], props["mailNickname"], "{name} externalId");
        assert_eq!(
            su["name"]["givenName"], props["givenName"],
            "{name} givenName"
        );
        expected_names.insert(name);
        if enabled {
            active_ids.insert(id.clone(), su["id"].as_str().unwrap().to_string());
        }
    }
    for name in deactivated {
        let name = name.to_lowercase();
        let su = by_name
            .get(&name)
            .unwrap_or_else(|| panic!("deactivated user {name} was removed from SCIM"))[0];
        assert_eq!(su["active"], json!(false), "{name} must be inactive");
        expected_names.insert(name);
    }
    let extra: Vec<_> = by_name
        .keys()
        .filter(|k| !expected_names.contains(*k))
        .collect();
    assert!(extra.is_empty(), "unexpected SCIM users: {extra:?}");
    let scim_groups = sim.scim.groups();
    assert_eq!(
        scim_groups.len(),
        groups.len(),
        "group count: {scim_groups:?}"
    );
    for gid in &groups {
        let g = scim_groups
            .iter()
            .find(|g| g["externalId"] == json!(gid))
            .unwrap_or_else(|| panic!("assigned group {gid} missing in SCIM"));
        let want: BTreeSet<String> = sim
            .graph
            .group_members(gid)
            .iter()
            .filter_map(|m| active_ids.get(m).cloned())
            .collect();
        let got = member_ids(g);
        assert_eq!(got, want, "members of group {}", g["displayName"]);
    }
}

/// The binary under test, pointed at the harness config, with `RUST_LOG` unset so the
/// config's `log.level` decides.
pub fn binary(h: &Harness) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_entra-here-sync"));
    c.arg("--config")
        .arg(&h.config_path)
        .env_remove("RUST_LOG")
        .env_remove("ENTRA_HERE_SYNC_CONFIG");
    c
}

/// Runs the binary to completion off the async runtime (the simulator keeps serving).
pub async fn run_binary(h: &Harness, args: &[&str]) -> std::process::Output {
    let mut c = binary(h);
    c.args(args);
    tokio::task::spawn_blocking(move || c.output().expect("binary runs"))
        .await
        .expect("join")
}

/// Rewrites one line of the generated config (e.g. the `[log]` level or `[here]` limits,
/// which `Harness::new(extra)` cannot set twice).
pub fn edit_config(h: &Harness, from: &str, to: &str) {
    let text = std::fs::read_to_string(&h.config_path).expect("config readable");
    assert!(text.contains(from), "config has no {from:?}");
    std::fs::write(&h.config_path, text.replace(from, to)).expect("config written");
}

/// The SCIM ids of a SCIM group's members.
pub fn member_ids(group: &Value) -> BTreeSet<String> {
    group["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["value"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
