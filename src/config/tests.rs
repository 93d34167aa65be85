//! Unit tests of `config`.
use super::*;
use secrecy::ExposeSecret;

const MINIMAL: &str = r#"
[graph]
tenant_id = "t"
client_id = "c"
service_principal_id = "sp"
client_secret_env = "X_SECRET"

[here]
base_url = "https://acme.is.here.io/scim/api/v2"
token_file = "/run/credentials/token"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

#[test]
fn minimal_config_gets_spec_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.here.max_concurrency, 8);
    assert_eq!(c.here.max_requests_per_second, 50);
    assert_eq!(c.here.max_members_per_patch, 100);
    assert_eq!(c.here.timeout, Duration::from_secs(30));
    assert!(c.here.bulk, "bulk is used when HERE advertises it");
    assert_eq!(c.schedule.when, Schedule::Every(Duration::from_secs(2400)));
    assert!(c.schedule.run_on_start);
    assert_eq!(c.sync.max_deactivations, 500);
    assert_eq!(c.sync.max_group_deletions, 50);
    assert_eq!(c.sync.group_members, GroupMembers::Direct);
    assert!(c.sync.scope_filter.is_empty());
    assert_eq!(c.state.history_days, 400);
    assert_eq!(c.log.target, LogTarget::Syslog);
    assert_eq!(c.graph.graph_url.as_str(), "https://graph.microsoft.com/");
    assert_eq!(
        c.state.path,
        PathBuf::from("/var/lib/entra-here-sync/state.db")
    );
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = MINIMAL.replace("[here]", "[here]\nbogus_option = 1");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("bogus_option"), "{e}");
    assert!(e.contains("line 9"), "{e}");
}

#[test]
fn wrong_type_and_missing_key_are_named() {
    let text = MINIMAL.replace("[here]", "[here]\nmax_concurrency = \"eight\"");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("max_concurrency"), "{e}");
    let text = MINIMAL.replace("base_url = \"https://acme.is.here.io/scim/api/v2\"", "");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("base_url"), "{e}");
}

#[test]
fn http_is_refused_except_on_loopback() {
    let text = MINIMAL.replace("https://acme", "http://acme");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("here.base_url") && e.contains("line 9"), "{e}");
    for host in ["127.0.0.1:8080", "localhost", "[::1]:9"] {
        let text = MINIMAL.replace("https://acme.is.here.io", &format!("http://{host}"));
        assert!(parse(&text).is_ok(), "{host}");
    }
}

#[test]
fn clouds_pick_their_hosts_and_overrides_win() {
    let text = MINIMAL.replace("[here]", "cloud = \"usgov\"\n[here]");
    let c = parse(&text).unwrap();
    assert_eq!(c.graph.graph_url.as_str(), "https://graph.microsoft.us/");
    assert_eq!(
        c.graph.authority_url.as_str(),
        "https://login.microsoftonline.us/"
    );
    let text = MINIMAL.replace("[here]", "cloud = \"mars\"\n[here]");
    assert!(parse(&text)
        .unwrap_err()
        .to_string()
        .contains("graph.cloud"));
}

#[test]
fn exactly_one_credential_is_required() {
    let none = MINIMAL.replace("client_secret_env = \"X_SECRET\"", "");
    assert!(parse(&none).is_err());
    let both = MINIMAL.replace(
        "client_secret_env = \"X_SECRET\"",
        "client_secret_env = \"X\"\nclient_secret_file = \"/x\"",
    );
    assert!(parse(&both).is_err());
    let cert = MINIMAL.replace(
        "client_secret_env = \"X_SECRET\"",
        "certificate_file = \"/c.pem\"\nprivate_key_file = \"/k.pem\"",
    );
    assert!(matches!(
        parse(&cert).unwrap().graph.credential,
        GraphCredential::Certificate { .. }
    ));
}

#[test]
fn schedule_forms() {
    let every = MINIMAL.to_string() + "\n[schedule]\nevery = \"2s\"\n";
    assert_eq!(
        parse(&every).unwrap().schedule.when,
        Schedule::Every(Duration::from_secs(2))
    );
    let bad = MINIMAL.to_string() + "\n[schedule]\nevery = \"forty\"\n";
    assert!(parse(&bad)
        .unwrap_err()
        .to_string()
        .contains("schedule.every"));
    let both = MINIMAL.to_string() + "\n[schedule]\nevery = \"2s\"\ncron = \"0 * * * * *\"\n";
    assert!(parse(&both).is_err());
}

#[test]
fn secret_file_is_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s");
    std::fs::write(&p, "  s3cret\n").unwrap();
    let s = SecretSource::File(p)
        .read("graph.client_secret_file")
        .unwrap();
    assert_eq!(s.expose_secret(), "s3cret");
    let empty = dir.path().join("e");
    std::fs::write(&empty, "\n").unwrap();
    assert!(SecretSource::File(empty).read("k").is_err());
}
