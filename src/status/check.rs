//! `check`: validates the configuration, then tries Graph and HERE the way a cycle will,
//! one ✓/✗ line per check with what to do about a ✗. Exit 0 only if every check passes.
//! It writes nothing anywhere: no state file, no lock file, nothing to HERE.

use crate::config::{Config, GraphConfig, GraphCredential, SecretSource};
use crate::cycle::exit;
use crate::graph::{GraphClient, GraphError};
use crate::scim::{BulkLimits, ScimClient, ScimError};

/// The Graph application permissions a cycle needs (SPEC §1.2).
const PERMISSIONS: &str = "Application.Read.All, User.Read.All and GroupMember.Read.All";

/// Prints the lines and remembers whether all passed.
struct Report {
    ok: bool,
}

impl Report {
    fn line(&mut self, pass: bool, what: &str, detail: impl AsRef<str>) {
        self.ok &= pass;
        println!(
            "{} {what}: {}",
            if pass { "✓" } else { "✗" },
            detail.as_ref()
        );
    }

    fn skipped(&mut self, what: &str, why: &str) {
        self.ok = false;
        println!("- {what}: not checked ({why})");
    }
}

/// `check`.
pub async fn check(cfg: &Config) -> i32 {
    let mut r = Report { ok: true };
    match crate::daemon::schedule::validate(&cfg.schedule.when) {
        Ok(()) => r.line(true, "config", format!("{} is valid", cfg.path.display())),
        Err(e) => r.line(false, "config", format!("{}: {e}", cfg.path.display())),
    }
    graph_checks(cfg, &mut r).await;
    match ScimClient::new(&cfg.here) {
        Err(e) => r.line(false, "HERE token", e.to_string()),
        Ok(scim) => match scim.probe().await {
            Ok(config) => r.line(
                true,
                "HERE SCIM",
                format!(
                    "{} accepted the token (GET /ServiceProviderConfig); {}",
                    cfg.here.base_url,
                    bulk_use(&config, cfg.here.bulk)
                ),
            ),
            Err(e) => r.line(false, "HERE SCIM", scim_reason(&e, cfg)),
        },
    }
    state_check(cfg, &mut r);
    if r.ok {
        exit::OK
    } else {
        exit::RUNTIME
    }
}

/// How pushes will travel, from what HERE advertises and `here.bulk`.
fn bulk_use(config: &serde_json::Value, enabled: bool) -> String {
    match (BulkLimits::from_service_provider_config(config), enabled) {
        (Some(b), true) => format!(
            "/Bulk used: up to {} operations and {} bytes per request",
            b.max_operations, b.max_payload_size
        ),
        (Some(_), false) => "/Bulk advertised but switched off (here.bulk = false)".into(),
        (None, _) => "no /Bulk advertised: one request per operation".into(),
    }
}

async fn graph_checks(cfg: &Config, r: &mut Report) {
    let graph = match GraphClient::new(&cfg.graph, cfg.here.timeout) {
        Ok(g) => g,
        Err(e) => {
            r.line(false, "Graph credential", graph_reason(&e, &cfg.graph, ""));
            return;
        }
    };
    if let Err(e) = graph.check_token().await {
        r.line(false, "Graph token", graph_reason(&e, &cfg.graph, ""));
        for what in ["service principal", "assignments", "users", "groups"] {
            r.skipped(what, "needs a Graph token");
        }
        return;
    }
    r.line(
        true,
        "Graph token",
        format!(
            "issued to app {} in tenant {}",
            cfg.graph.client_id, cfg.graph.tenant_id
        ),
    );
    match graph.service_principal().await {
        Ok(sp) => r.line(
            true,
            "service principal",
            format!(
                "{:?} ({})",
                sp["displayName"].as_str().unwrap_or("?"),
                cfg.graph.service_principal_id
            ),
        ),
        Err(e) => r.line(
            false,
            "service principal",
            graph_reason(&e, &cfg.graph, "Application.Read.All"),
        ),
    }
    match graph.assignments().await {
        Ok(a) if a.is_empty() => r.line(
            true,
            "assignments",
            "readable, but nothing is assigned to the enterprise application yet: assign users or groups (Enterprise applications → the app → Users and groups), or nothing will be synced",
        ),
        Ok(a) => {
            let groups = a.iter().filter(|(_, kind)| kind == "Group").count();
            r.line(
                true,
                "assignments",
                format!("{} user(s) and {groups} group(s) assigned", a.len() - groups),
            )
        }
        Err(e) => r.line(
            false,
            "assignments",
            graph_reason(&e, &cfg.graph, "Application.Read.All"),
        ),
    }
    let probes = [
        (
            "users",
            "users/delta?$select=id,userPrincipalName",
            "User.Read.All",
        ),
        (
            "groups",
            "groups/delta?$select=id,displayName,members",
            "GroupMember.Read.All",
        ),
    ];
    for (what, path, permission) in probes {
        match graph.get(&graph.url(path), false).await {
            Ok(_) => r.line(true, what, format!("readable ({permission})")),
            Err(e) => r.line(false, what, graph_reason(&e, &cfg.graph, permission)),
        }
    }
}

/// The AADSTS error number in an Entra token error, e.g. `7000215`.
fn aadsts(description: &str) -> Option<&str> {
    let at = description.find("AADSTS")? + "AADSTS".len();
    let digits = description[at..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(&description[at..], |end| &description[at..at + end]);
    (!digits.is_empty()).then_some(digits)
}

/// The config key that holds the Graph credential, for messages.
fn credential_key(g: &GraphConfig) -> String {
    match &g.credential {
        GraphCredential::Secret(SecretSource::File(p)) => {
            format!("graph.client_secret_file ({})", p.display())
        }
        GraphCredential::Secret(SecretSource::Env(v)) => {
            format!("graph.client_secret_env (${v})")
        }
        GraphCredential::Certificate { .. } => {
            "graph.certificate_file and graph.private_key_file".into()
        }
    }
}

/// An operator-grade reason for a Graph failure: what was refused and what to change.
/// `permission` is the application permission the failed request needs ("" for none).
pub fn graph_reason(e: &GraphError, g: &GraphConfig, permission: &str) -> String {
    match e {
        GraphError::Auth { code, description } => {
            let first = description
                .split(" Trace ID:")
                .next()
                .unwrap_or(description)
                .trim();
            let key = credential_key(g);
            let advice = match aadsts(description) {
                Some("7000215") => format!("the client secret is wrong: check {key}; it must hold the secret's Value (not its Secret ID) of a current secret of app {}", g.client_id),
                Some("7000222") => format!("the client secret has expired: add a new one under App registrations → Certificates & secrets and put it in {key}"),
                Some("700016") => format!("no application {} in tenant {}: check graph.client_id (the Application (client) ID) and graph.tenant_id", g.client_id, g.tenant_id),
                Some("90002" | "900023" | "90013") => format!("tenant {} not found: check graph.tenant_id (the Directory (tenant) ID) and graph.cloud", g.tenant_id),
                Some("700027" | "700024" | "7000274" | "7000277") => format!("the certificate was refused: upload the certificate in {key} to the app registration (Certificates & secrets) and check that the key matches it"),
                Some("7000112") => format!("application {} is disabled in tenant {}", g.client_id, g.tenant_id),
                _ => format!("check graph.tenant_id, graph.client_id and {key}"),
            };
            let code = aadsts(description)
                .map(|n| format!("AADSTS{n}"))
                .unwrap_or_else(|| code.clone());
            format!("Entra refused the token ({code}): {advice}. Entra said: {first}")
        }
        GraphError::Credential(m) => format!("{m}; fix {}", credential_key(g)),
        GraphError::Transport { url, detail } => format!(
            "cannot reach {url}: {detail}. Check DNS, the firewall or proxy (outbound https to {} and {}), and graph.cloud",
            g.authority_url.host_str().unwrap_or("?"),
            g.graph_url.host_str().unwrap_or("?")
        ),
        GraphError::Http {
            status: 403,
            code,
            url,
            ..
        } => format!(
            "Graph answered 403 {code} on {url}: grant the app registration the Microsoft Graph application permission {} (API permissions → Add a permission → Application permissions), then \"Grant admin consent\"; a cycle needs {PERMISSIONS}",
            if permission.is_empty() { PERMISSIONS } else { permission }
        ),
        GraphError::Http {
            status: 404, url, ..
        } if url.contains("servicePrincipals") => format!(
            "Graph answered 404 on {url}: graph.service_principal_id = {} is not a service principal in tenant {}; use the enterprise application's Object ID (Enterprise applications → the app → Overview), not the app registration's",
            g.service_principal_id, g.tenant_id
        ),
        other => other.to_string(),
    }
}

/// An operator-grade reason for a SCIM failure.
pub fn scim_reason(e: &ScimError, cfg: &Config) -> String {
    match e {
        ScimError::Transport { detail, .. } => format!(
            "cannot reach {}: {detail}. Check here.base_url, DNS and that outbound https is allowed",
            cfg.here.base_url
        ),
        ScimError::Http { status: 404, .. } => format!(
            "{} answered 404 for /ServiceProviderConfig: check here.base_url (https://TENANT.is.here.io/scim/api/v2)",
            cfg.here.base_url
        ),
        other => other.to_string(),
    }
}

/// Looks at the state file without opening it for writing (nothing is created).
fn state_check(cfg: &Config, r: &mut Report) {
    let path = &cfg.state.path;
    let busy = match super::writer_active(path) {
        Some(true) => "; in use by a running instance now (the daemon or a sync)",
        _ => "",
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    r.line(
                        false,
                        "state",
                        format!(
                            "{} has mode {mode:o}: it holds the directory mirror; chmod 600 it",
                            path.display()
                        ),
                    );
                    return;
                }
            }
            r.line(
                true,
                "state",
                format!(
                    "{} exists ({} KiB){busy}",
                    path.display(),
                    meta.len() / 1024
                ),
            );
        }
        Ok(_) => r.line(
            false,
            "state",
            format!("state.path {} is not a file", path.display()),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => r.line(
            true,
            "state",
            format!(
                "{} does not exist yet; the first cycle creates it (with mode 0600)",
                path.display()
            ),
        ),
        Err(e) => r.line(
            false,
            "state",
            format!(
                "{}: {e}; the service user must be able to read and write it",
                path.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_says_how_pushes_will_travel() {
        let advertised = serde_json::json!({"bulk": {"supported": true,
            "maxOperations": 1000, "maxPayloadSize": 1048576}});
        assert_eq!(
            bulk_use(&advertised, true),
            "/Bulk used: up to 1000 operations and 1048576 bytes per request"
        );
        assert!(bulk_use(&advertised, false).contains("here.bulk = false"));
        assert!(bulk_use(&serde_json::json!({}), true).starts_with("no /Bulk"));
    }

    fn graph_cfg() -> GraphConfig {
        GraphConfig {
            tenant_id: "tid".into(),
            client_id: "cid".into(),
            service_principal_id: "spid".into(),
            credential: GraphCredential::Secret(SecretSource::File("/run/s".into())),
            authority_url: url::Url::parse("https://login.microsoftonline.com").unwrap(),
            graph_url: url::Url::parse("https://graph.microsoft.com").unwrap(),
        }
    }

    #[test]
    fn wrong_secret_names_the_aadsts_code_and_the_key() {
        let e = GraphError::Auth {
            code: "invalid_client".into(),
            description:
                "AADSTS7000215: Invalid client secret provided. Trace ID: x Correlation ID: y"
                    .into(),
        };
        let m = graph_reason(&e, &graph_cfg(), "");
        assert!(m.contains("AADSTS7000215"), "{m}");
        assert!(m.contains("check graph.client_secret_file (/run/s)"), "{m}");
        assert!(!m.contains("Trace ID"), "{m}");
    }

    #[test]
    fn forbidden_names_the_permission_to_grant() {
        let e = GraphError::Http {
            status: 403,
            code: "Authorization_RequestDenied".into(),
            message: "Insufficient privileges".into(),
            url: "https://graph.microsoft.com/v1.0/servicePrincipals/spid".into(),
            hint: "",
        };
        let m = graph_reason(&e, &graph_cfg(), "Application.Read.All");
        assert!(m.contains("grant the app registration the Microsoft Graph application permission Application.Read.All"), "{m}");
        assert!(m.contains("admin consent"), "{m}");
        let e = GraphError::Http {
            status: 404,
            code: "Request_ResourceNotFound".into(),
            message: String::new(),
            url: "https://graph.microsoft.com/v1.0/servicePrincipals/spid".into(),
            hint: "",
        };
        assert!(graph_reason(&e, &graph_cfg(), "").contains("Object ID"));
    }

    #[test]
    fn aadsts_numbers_are_extracted() {
        assert_eq!(aadsts("AADSTS700016: x"), Some("700016"));
        assert_eq!(aadsts("no code"), None);
        assert_eq!(aadsts("AADSTS"), None);
    }
}
