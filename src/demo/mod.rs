//! `demo`: a complete initial cycle and an incremental one against the built-in
//! simulated Graph tenant and simulated HERE, with a temporary state file. It runs the
//! same engine as `sync`, so it doubles as the newcomer's first command and the
//! benchmark's driver.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::DemoArgs;
mod bench;

pub use bench::{memory_mb, peak_rss_mb};

use crate::cycle::exit;
use crate::sim::{GraphSim, Simulator};

/// The shape of a simulated tenant.
#[derive(Debug, Clone, Copy)]
pub struct TenantSpec {
    pub users: usize,
    pub groups: usize,
    /// Direct user members per group.
    pub members_per_group: usize,
}

/// Ids of what `populate` created.
#[derive(Debug, Clone, Default)]
pub struct Tenant {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// The UPN of simulated user `i`.
pub fn upn(i: usize) -> String {
    format!("user{i:06}@contoso.example")
}

/// Graph properties of simulated user `i` (every mapped property set).
pub fn user_props(i: usize) -> serde_json::Value {
    let department = ["R&D", "Sales", "Support", "Finance"][i % 4];
    json!({
        "displayName": format!("User {i:06}"), "givenName": format!("Given{i}"),
        "surname": format!("Family{i}"), "mail": upn(i), "jobTitle": "Engineer",
        "mailNickname": format!("user{i:06}"), "preferredLanguage": "en-US",
        "department": department,
        "employeeId": format!("{}", 100_000 + i), "businessPhones": [format!("+1 555 {:07}", i)],
        "city": "Springfield", "country": "US", "accountEnabled": true
    })
}

/// Fills the simulated tenant: every group assigned with `members_per_group` members
/// spread over the first 95 % of users, every tenth user assigned directly, and the last
/// 5 % of users not assigned at all (they must never reach HERE).
pub fn populate(graph: &GraphSim, spec: TenantSpec) -> Tenant {
    let users: Vec<String> = (0..spec.users)
        .map(|i| graph.add_user(&upn(i), user_props(i)))
        .collect();
    let pool = (spec.users * 95 / 100).max(1).min(users.len());
    let mut groups = Vec::new();
    for g in 0..spec.groups {
        let members: Vec<&str> = (0..spec.members_per_group.min(pool))
            .map(|k| users[(g * spec.members_per_group + k) % pool].as_str())
            .collect();
        let gid = graph.add_group(&format!("Browser Group {g:04}"), &members);
        graph.assign(&gid);
        groups.push(gid);
    }
    for u in users.iter().take(pool).step_by(10) {
        graph.assign(u);
    }
    Tenant { users, groups }
}

/// Writes a config (and its two secret files) pointing at the simulator.
pub fn write_config(dir: &Path, sim: &Simulator, extra: &str) -> std::io::Result<PathBuf> {
    let secret = dir.join("graph-client-secret");
    let token = dir.join("here-scim-token");
    write_private(&secret, &sim.graph.client_secret())?;
    write_private(&token, &sim.scim.token())?;
    let text = format!(
        "[graph]\ntenant_id = {:?}\nclient_id = {:?}\nservice_principal_id = {:?}\nclient_secret_file = {:?}\nauthority_url = {:?}\ngraph_url = {:?}\n\n\
         [here]\nbase_url = {:?}\ntoken_file = {:?}\nmax_concurrency = 16\nmax_requests_per_second = 10000\n\n\
         [state]\npath = {:?}\n\n[log]\ntarget = \"stderr\"\nlevel = \"warn\"\n{extra}",
        sim.graph.tenant_id(),
        sim.graph.client_id(),
        sim.graph.service_principal_id(),
        secret,
        sim.graph.base_url(),
        sim.graph.base_url(),
        sim.scim.base_url(),
        token,
        dir.join("state.db"),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{content}\n"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// A little of everything an incremental cycle handles; returns what changed, for display.
pub fn churn(graph: &GraphSim, tenant: &Tenant) -> Vec<String> {
    let n = tenant.users.len();
    let mut said = Vec::new();
    if n < 40 || tenant.groups.is_empty() {
        return said;
    }
    for i in [3, 13, 23] {
        graph.update_user(&tenant.users[i], json!({"jobTitle": "Senior Engineer"}));
    }
    said.push("3 users got a new jobTitle".to_string());
    graph.disable_user(&tenant.users[5]);
    said.push(format!("{} was disabled", upn(5)));
    graph.delete_user(&tenant.users[7], false);
    said.push(format!("{} was deleted", upn(7)));
    let newcomer = graph.add_user(&upn(n), user_props(n));
    graph.add_member(&tenant.groups[0], &newcomer);
    said.push(format!("{} joined {}", upn(n), "Browser Group 0000"));
    graph.rename_group(&tenant.groups[0], "Browser Group 0000 (renamed)");
    said.push("Browser Group 0000 was renamed".to_string());
    said
}

/// Changes about `percent` % of the tenant's users for a benchmark's incremental cycle:
/// most get a new jobTitle, some are disabled, some join, some leave a group. Returns the
/// number of users changed.
pub fn churn_percent(
    graph: &GraphSim,
    tenant: &mut Tenant,
    percent: f64,
    members_per_group: usize,
) -> usize {
    let n = tenant.users.len();
    let k = ((n as f64 * percent / 100.0).round() as usize)
        .max(1)
        .min(n);
    let (updates, disables, joins) = (k * 6 / 10, k / 10, k * 2 / 10);
    let leaves = k - updates - disables - joins;
    for i in 0..updates {
        graph.update_user(
            &tenant.users[(i * 7) % n],
            json!({"jobTitle": "Senior Engineer"}),
        );
    }
    for i in 0..disables {
        graph.disable_user(&tenant.users[(i * 13 + 1) % n]);
    }
    for i in 0..joins {
        let index = tenant.users.len();
        let id = graph.add_user(&upn(index), user_props(index));
        if let Some(g) = tenant.groups.get(i % tenant.groups.len().max(1)) {
            graph.add_member(g, &id);
        }
        tenant.users.push(id);
    }
    let pool = (n * 95 / 100).max(1);
    for g in 0..leaves.min(tenant.groups.len()) {
        let member = &tenant.users[(g * members_per_group) % pool];
        graph.remove_member(&tenant.groups[g], member);
    }
    k
}

/// Runs the demo (and the benchmark, with its options); returns the exit code.
pub async fn run(args: &DemoArgs) -> i32 {
    let result = if args.serve_simulator {
        bench::serve(args).await
    } else {
        bench::run(args).await
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("entra-here-sync demo: {e}");
            exit::RUNTIME
        }
    }
}
