//! What operators touch besides the schedule: syslog output, `check`, `status` and the
//! example configuration (issue 4).

mod common;

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use common::{edit_config, run_binary, Harness};
use entra_here_sync::config::Config;
use entra_here_sync::demo::upn;
use entra_here_sync::sim::{GraphFaults, ScimFaults};
use serde_json::{json, Value};

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

fn add_assigned(h: &Harness, range: std::ops::Range<usize>) {
    for i in range {
        let id = h.add_user(i);
        h.sim.graph.assign(&id);
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`.
#[derive(Debug)]
struct Syslog {
    facility: u8,
    severity: u8,
    app: String,
    msg: String,
}

fn parse_5424(datagram: &[u8]) -> Syslog {
    let s = std::str::from_utf8(datagram).expect("UTF-8");
    let rest = s.strip_prefix('<').expect("starts with <PRI>");
    let (pri, rest) = rest.split_once('>').expect("PRI closes");
    let pri: u8 = pri.parse().expect("PRI is a number");
    let mut f = rest.splitn(7, ' ');
    let version = f.next().unwrap();
    let ts = f.next().unwrap();
    let host = f.next().unwrap();
    let app = f.next().unwrap().to_string();
    let procid = f.next().unwrap();
    let msgid = f.next().unwrap();
    let tail = f.next().unwrap();
    assert_eq!(version, "1", "{s}");
    chrono::DateTime::parse_from_rfc3339(ts).unwrap_or_else(|e| panic!("timestamp {ts}: {e}"));
    assert!(!host.is_empty() && !host.contains(' '), "{s}");
    assert!(procid.parse::<u32>().is_ok(), "PROCID {procid}");
    assert!(!msgid.is_empty());
    let msg = tail
        .strip_prefix("- ")
        .expect("no structured data")
        .to_string();
    Syslog {
        facility: pri >> 3,
        severity: pri & 7,
        app,
        msg,
    }
}

fn drain(sock: &UnixDatagram) -> Vec<Syslog> {
    sock.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(parse_5424(&buf[..n]));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_gets_rfc5424_operation_and_summary_lines_with_facility_and_severity() {
    let h = Harness::new("").await;
    let socket = h.dir.path().join("syslog.sock");
    let rx = UnixDatagram::bind(&socket).expect("bind");
    edit_config(
        &h,
        "target = \"stderr\"\nlevel = \"warn\"",
        &format!(
            "target = \"syslog\"\nlevel = \"info\"\nsyslog_facility = \"local3\"\nsyslog_socket = {:?}",
            socket
        ),
    );
    add_assigned(&h, 1..5);
    let bad = upn(4);
    h.sim.scim.set_faults(ScimFaults {
        fail_user_names: BTreeSet::from([bad.clone()]),
        ..ScimFaults::default()
    });
    let out = run_binary(&h, &["sync"]).await;
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));
    let msgs = drain(&rx);
    assert!(!msgs.is_empty());
    for m in &msgs {
        assert_eq!(m.facility, 19, "local3: {m:?}");
        assert_eq!(m.app, "entra-here-sync");
    }
    let created: Vec<_> = msgs
        .iter()
        .filter(|m| m.msg.contains("op=\"create_user\"") || m.msg.contains("op=create_user"))
        .collect();
    let ok: Vec<_> = created.iter().filter(|m| m.severity == 6).collect();
    assert_eq!(ok.len(), 3, "three creates at info: {msgs:#?}");
    for m in &ok {
        assert!(
            m.msg.contains("userName=") && m.msg.contains("scim_id="),
            "{m:?}"
        );
    }
    let failed: Vec<_> = created.iter().filter(|m| m.severity == 4).collect();
    assert_eq!(failed.len(), 1, "one failure at warning: {msgs:#?}");
    assert!(
        failed[0].msg.contains(&bad) && failed[0].msg.contains("400"),
        "{failed:?}"
    );
    let summary = msgs
        .iter()
        .find(|m| m.msg.contains("cycle complete with failures"))
        .expect("summary line");
    assert_eq!(summary.severity, 4);
    assert!(summary.msg.contains("created=3") && summary.msg.contains("failed=1"));

    // the failing object is retried next cycle; a clean cycle's summary is at info
    h.sim.scim.set_faults(ScimFaults::default());
    let out = run_binary(&h, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let msgs = drain(&rx);
    let summary = msgs
        .iter()
        .find(|m| m.msg.starts_with("cycle complete"))
        .expect("summary line");
    assert_eq!((summary.facility, summary.severity), (19, 6), "{summary:?}");
    assert!(summary.msg.contains("created=1"), "{summary:?}");
}

fn state_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("state.db"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_against_the_simulator_and_writes_nothing() {
    let h = Harness::new("").await;
    add_assigned(&h, 1..3);
    let out = run_binary(&h, &["check"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    for what in [
        "config",
        "Graph token",
        "service principal",
        "assignments",
        "users",
        "groups",
        "HERE SCIM",
        "state",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("✓ {what}:"))),
            "no ✓ {what}: {stdout}"
        );
    }
    assert!(!stdout.contains('✗'), "{stdout}");
    assert!(
        stdout.contains("no /Bulk advertised: one request per operation"),
        "{stdout}"
    );
    assert!(
        state_files(h.dir.path()).is_empty(),
        "check created state files"
    );
    let writes = h.scim_writes();
    assert!(writes.is_empty(), "check wrote to HERE: {writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_explains_a_refused_secret_and_exits_1() {
    let h = Harness::new("").await;
    h.sim.graph.set_faults(GraphFaults {
        reject_secret: true,
        ..GraphFaults::default()
    });
    let out = run_binary(&h, &["check"]).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("✗ Graph token:"))
        .unwrap_or_else(|| panic!("no ✗ Graph token line: {stdout}"));
    assert!(line.contains("AADSTS7000215"), "{line}");
    assert!(line.contains("check graph.client_secret_file"), "{line}");
    assert!(
        stdout.contains("✓ HERE SCIM"),
        "HERE is checked on its own: {stdout}"
    );

    // a wrong secret in the file: same reason
    h.sim.graph.set_faults(GraphFaults::default());
    let secret = h.dir.path().join("graph-client-secret");
    std::fs::write(&secret, "not-the-secret\n").unwrap();
    let out = run_binary(&h, &["check"]).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("✗ Graph token: Entra refused the token (AADSTS7000215)"),
        "{stdout}"
    );
    // a missing secret file names the path and the key
    std::fs::remove_file(&secret).unwrap();
    let out = run_binary(&h, &["check"]).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("✗ Graph credential") && stdout.contains("graph-client-secret"),
        "{stdout}"
    );
    assert!(state_files(h.dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_cycles_failing_objects_and_stale_delta_links() {
    let h = Harness::new("").await;
    add_assigned(&h, 1..6);
    let bad = upn(5);
    h.sim.scim.set_faults(ScimFaults {
        fail_user_names: BTreeSet::from([bad.clone()]),
        ..ScimFaults::default()
    });
    for _ in 0..2 {
        let out = run_binary(&h, &["sync"]).await;
        assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));
    }
    let files = |h: &Harness| {
        let mut f = state_files(h.dir.path());
        f.sort();
        f
    };
    let before = files(&h);
    assert!(!before.contains(&"state.db-wal".to_string()), "{before:?}");
    let out = run_binary(&h, &["status"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(files(&h), before, "status created files beside the state");
    assert!(
        stdout.contains("snapshot: 4 users (4 active), 0 groups"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no daemon or sync is using the state"),
        "{stdout}"
    );
    assert!(stdout.contains("#1 ") && stdout.contains("#2 "), "{stdout}");
    assert!(stdout.contains("failing objects: 1"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains(&bad))
        .expect("failing user listed");
    assert!(
        line.contains("attempts 2") && line.contains("next try 20"),
        "{line}"
    );
    assert!(!stdout.contains("WARNING"), "{stdout}");

    let out = run_binary(&h, &["status", "--json"]).await;
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(doc["runs"].as_array().unwrap().len(), 2);
    assert_eq!(
        doc["snapshot"],
        json!({"users": 4, "active_users": 4, "groups": 0})
    );
    let failing = doc["failing"].as_array().unwrap();
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0]["name"], json!(bad));
    assert_eq!(failing[0]["attempts"], json!(2));
    assert!(failing[0]["next_try_at"]
        .as_str()
        .is_some_and(|t| t.starts_with("20")));
    assert!(doc["delta_links"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["stale"] == json!(false)));

    // delta links older than 6 days are warned about
    let db = rusqlite::Connection::open(h.dir.path().join("state.db")).unwrap();
    db.execute(
        "UPDATE delta_links SET updated_at = updated_at - 7 * 86400",
        [],
    )
    .unwrap();
    drop(db);
    let out = run_binary(&h, &["status"]).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("7 days old  WARNING: older than 6 days"),
        "{stdout}"
    );
    let out = run_binary(&h, &["status", "--json"]).await;
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["delta_links"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["stale"] == json!(true)));
    assert!(!doc["warnings"].as_array().unwrap().is_empty());
}

#[test]
fn example_config_validates_with_its_secrets_stubbed() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
        .unwrap();
    let mut stubbed = text.clone();
    for name in ["graph-client-secret", "here-scim-token"] {
        let from = format!("/run/credentials/entra-here-sync.service/{name}");
        assert!(stubbed.contains(&from), "example names {from}");
        let to = dir.path().join(name);
        std::fs::write(&to, format!("{name}-value\n")).unwrap();
        stubbed = stubbed.replace(&from, &to.display().to_string());
    }
    let path = dir.path().join("config.toml");
    let cfg = Config::parse(&stubbed, &path).expect("config.example.toml validates");
    entra_here_sync::mapping::Mapping::from_config(&cfg.mapping).expect("mapping");
    entra_here_sync::daemon::schedule::validate(&cfg.schedule.when).expect("schedule");
    assert_eq!(
        cfg.schedule.when,
        entra_here_sync::config::Schedule::Every(std::time::Duration::from_secs(40 * 60))
    );
    use secrecy::ExposeSecret;
    let token = cfg.here.token.read("here.token").expect("token file read");
    assert_eq!(token.expose_secret(), "here-scim-token-value");
    match &cfg.graph.credential {
        entra_here_sync::config::GraphCredential::Secret(s) => {
            assert_eq!(
                s.read("graph.client_secret").unwrap().expose_secret(),
                "graph-client-secret-value"
            );
        }
        other => panic!("example uses a client secret, got {other:?}"),
    }
    // the example itself (unstubbed) parses too: secrets are only read when needed
    Config::parse(&text, &path).expect("unstubbed example parses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_sync_shows_progress_only_on_a_terminal() {
    let h = Harness::new("").await;
    add_assigned(&h, 1..9);
    h.sim.scim.set_faults(ScimFaults {
        latency_ms: 300,
        ..ScimFaults::default()
    });
    edit_config(&h, "max_concurrency = 16", "max_concurrency = 2");
    // not a terminal: log lines only, no progress
    let out = run_binary(&h, &["sync", "--dry-run"]).await;
    let (_, stderr) = text(&out);
    assert!(!stderr.contains("reading Entra"), "{stderr}");
    let out = run_binary(&h, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let (_, stderr) = text(&out);
    assert!(
        !stderr.contains("pushing to HERE") && !stderr.contains('\u{1b}'),
        "{stderr}"
    );

    // on a terminal (script(1) gives the binary a pty): the progress bar is drawn
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("script(1) is not installed; skipping the terminal half");
        return;
    }
    for i in 9..13 {
        let id = h.add_user(i);
        h.sim.graph.assign(&id);
    }
    let cmd = format!(
        "{} --config {} sync",
        env!("CARGO_BIN_EXE_entra-here-sync"),
        h.config_path.display()
    );
    let log = h.dir.path().join("typescript");
    let mut c = std::process::Command::new("script");
    c.args(["-qefc", &cmd])
        .arg(&log)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
    let out = tokio::task::spawn_blocking(move || c.output().expect("script runs"))
        .await
        .unwrap();
    let screen =
        std::fs::read_to_string(&log).unwrap_or_default() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("pushing to HERE"), "{screen}");
    assert!(screen.contains("/4 operation(s)"), "{screen}");
}
