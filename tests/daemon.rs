//! The daemon (`run`) as operators run it: the real binary against the simulator in this
//! process — schedule, changes between cycles, SIGTERM mid-cycle, quarantine backoff,
//! overrun warning, SIGHUP reload and the systemd notifications (issue 4).

mod common;

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{binary, edit_config, verify_target, Harness};
use entra_here_sync::demo::upn;
use entra_here_sync::sim::ScimFaults;
use entra_here_sync::state::State;

/// A running `entra-here-sync run`, its log (stderr) in a file.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(h: &Harness, name: &str, env: &[(&str, String)]) -> Daemon {
        let log = h.dir.path().join(format!("{name}.log"));
        let mut c = binary(h);
        c.arg("run")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            c.env(k, v);
        }
        Daemon {
            child: c.spawn().expect("daemon starts"),
            log,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (without blocking the runtime that serves the simulator) for the exit.
    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                panic!("daemon did not exit within {limit:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// (runs started, runs finished) from the state, read-only while the daemon holds it.
fn runs(h: &Harness) -> (usize, usize) {
    let path = h.dir.path().join("state.db");
    match State::open_read_only(&path).and_then(|s| s.recent_runs(1000)) {
        Ok(r) => (r.len(), r.iter().filter(|r| r.exit_code.is_some()).count()),
        Err(_) => (0, 0),
    }
}

async fn wait_for(what: &str, d: &Daemon, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; daemon log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn add_assigned(h: &Harness, range: std::ops::Range<usize>) {
    for i in range {
        let id = h.add_user(i);
        h.sim.graph.assign(&id);
    }
}

fn verbose(h: &Harness) {
    edit_config(h, "level = \"warn\"", "level = \"info\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_cycles_carry_changes_and_sigterm_mid_cycle_exits_cleanly() {
    let h = Harness::new("\n[schedule]\nevery = \"2s\"\n").await;
    verbose(&h);
    add_assigned(&h, 1..6);
    let mut d = Daemon::start(&h, "first", &[]);
    wait_for("the first cycle", &d, Duration::from_secs(20), || {
        runs(&h).1 >= 1
    })
    .await;
    assert_eq!(h.sim.scim.users().len(), 5);
    // a change in Entra between cycles reaches HERE on the next tick
    add_assigned(&h, 6..7);
    wait_for("the newcomer in HERE", &d, Duration::from_secs(15), || {
        h.sim.scim.find_user(&upn(6)).is_some()
    })
    .await;
    // the newcomer is in HERE a moment before its cycle records its end
    wait_for("the second cycle's end", &d, Duration::from_secs(5), || {
        runs(&h).1 >= 2
    })
    .await;
    // `status` works while the daemon holds the state
    let st = binary(&h)
        .args(["status", "--json"])
        .output()
        .expect("status");
    assert!(st.status.success(), "{st:?}");
    let doc: serde_json::Value = serde_json::from_slice(&st.stdout).expect("JSON");
    assert_eq!(doc["writer_active"], serde_json::json!(true), "{doc}");

    // a slow cycle: SIGTERM lets the requests in flight finish, then exits 0
    h.sim.scim.set_faults(ScimFaults {
        latency_ms: 1500,
        ..ScimFaults::default()
    });
    add_assigned(&h, 7..87);
    wait_for(
        "the slow cycle's first creates",
        &d,
        Duration::from_secs(20),
        || h.sim.scim.users().len() > 6,
    )
    .await;
    let t0 = Instant::now();
    d.signal("TERM");
    let status = d.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());
    assert!(t0.elapsed() < Duration::from_secs(10));
    let log = d.log();
    assert!(log.contains("stopping"), "{log}");
    let created = h.sim.scim.users().len();
    assert!(created < 86, "the push stopped mid-cycle ({created} users)");

    // the next start resumes: everything arrives, nothing twice
    h.sim.scim.set_faults(ScimFaults::default());
    let before = runs(&h).1;
    let mut d = Daemon::start(&h, "second", &[]);
    wait_for("the resumed cycle", &d, Duration::from_secs(30), || {
        runs(&h).1 > before && h.sim.scim.users().len() == 86
    })
    .await;
    d.signal("TERM");
    assert!(d.exit_within(Duration::from_secs(10)).await.success());
    let posts = h.user_posts();
    assert_eq!(posts.len(), 86, "{posts:?}");
    assert_each_created_once(&posts);
    verify_target(&h.sim, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_longer_than_the_grace_are_abandoned_and_repeated_once_next_start() {
    let h = Harness::new("").await;
    verbose(&h);
    add_assigned(&h, 1..11);
    h.sim.scim.set_faults(ScimFaults {
        latency_ms: 30_000,
        ..ScimFaults::default()
    });
    let mut d = Daemon::start(&h, "hung", &[]);
    wait_for("the push to start", &d, Duration::from_secs(20), || {
        h.sim
            .graph
            .request_log()
            .iter()
            .any(|r| r.path.contains("groups/delta"))
            && runs(&h).0 == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    d.signal("TERM");
    let status = d.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(d.log().contains("abandoned"), "{}", d.log());

    h.sim.scim.set_faults(ScimFaults::default());
    let mut d = Daemon::start(&h, "after", &[]);
    wait_for("the repeated cycle", &d, Duration::from_secs(30), || {
        runs(&h).1 >= 1 && h.sim.scim.users().len() == 10
    })
    .await;
    d.signal("INT");
    assert!(d.exit_within(Duration::from_secs(10)).await.success());
    let posts = h.user_posts();
    assert_each_created_once(&posts);
    verify_target(&h.sim, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quarantine_backs_off_and_overruns_are_warned() {
    let h = Harness::new("\n[schedule]\nevery = \"2s\"\n").await;
    verbose(&h);
    add_assigned(&h, 1..26);
    h.sim.scim.set_faults(ScimFaults {
        fail_user_names: (1..26).map(upn).collect::<BTreeSet<_>>(),
        ..ScimFaults::default()
    });
    let d = Daemon::start(&h, "quarantine", &[]);
    wait_for("the quarantined cycle", &d, Duration::from_secs(20), || {
        runs(&h).1 >= 1
    })
    .await;
    let level = State::open_read_only(&h.dir.path().join("state.db"))
        .map(|s| entra_here_sync::cycle::quarantine_level(&s))
        .expect("state");
    assert_eq!(level, 1, "the cycle was quarantined; log:\n{}", d.log());
    // without the backoff the tick at 2 s would start the next cycle
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        runs(&h).0,
        1,
        "no cycle during the backoff; log:\n{}",
        d.log()
    );
    wait_for(
        "the cycle after the backoff",
        &d,
        Duration::from_secs(8),
        || runs(&h).0 >= 2,
    )
    .await;
    let log = d.log();
    assert!(
        log.contains("backing off") && log.contains("next_cycle_in=4s"),
        "{log}"
    );
    drop(d);

    // a cycle longer than the interval: warned, and the next one follows it
    let h = Harness::new("\n[schedule]\nevery = \"1s\"\n").await;
    verbose(&h);
    add_assigned(&h, 1..4);
    h.sim.scim.set_faults(ScimFaults {
        latency_ms: 1600,
        ..ScimFaults::default()
    });
    let mut d = Daemon::start(&h, "overrun", &[]);
    wait_for("two cycles", &d, Duration::from_secs(20), || {
        runs(&h).1 >= 2
    })
    .await;
    d.signal("TERM");
    assert!(d.exit_within(Duration::from_secs(10)).await.success());
    let log = d.log();
    assert!(
        log.contains("WARN") && log.contains("took longer than the schedule's interval"),
        "{log}"
    );
}

/// Collects what the daemon sends to `NOTIFY_SOCKET`, one entry per line.
fn notify_listener(path: &Path) -> Arc<Mutex<Vec<String>>> {
    let sock = UnixDatagram::bind(path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    let mut v = sink.lock().unwrap();
                    v.extend(text.lines().map(str::to_string));
                }
                Err(_) if Arc::strong_count(&sink) == 1 => return,
                Err(_) => {}
            }
        }
    });
    got
}

fn count(got: &Arc<Mutex<Vec<String>>>, prefix: &str) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn systemd_notifications_and_sighup_reload() {
    let h = Harness::new("\n[schedule]\nevery = \"1h\"\n").await;
    verbose(&h);
    add_assigned(&h, 1..4);
    let socket = h.dir.path().join("notify.sock");
    let got = notify_listener(&socket);
    let env = [
        ("NOTIFY_SOCKET", socket.display().to_string()),
        ("WATCHDOG_USEC", "400000".to_string()),
    ];
    let mut d = Daemon::start(&h, "notify", &env);
    wait_for(
        "READY=1 and a cycle's STATUS=",
        &d,
        Duration::from_secs(20),
        || count(&got, "READY=1") >= 1 && count(&got, "STATUS=last cycle ok") >= 1,
    )
    .await;
    wait_for("WATCHDOG=1 pings", &d, Duration::from_secs(5), || {
        count(&got, "WATCHDOG=1") >= 3
    })
    .await;
    let status = got
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.starts_with("STATUS=last cycle ok"))
        .cloned()
        .unwrap();
    assert!(status.contains("3 created"), "{status}");

    // SIGHUP with a new schedule: RELOADING=1, READY=1, and the new schedule runs
    edit_config(&h, "every = \"1h\"", "every = \"1s\"");
    d.signal("HUP");
    wait_for(
        "RELOADING=1 then READY=1",
        &d,
        Duration::from_secs(5),
        || count(&got, "RELOADING=1") >= 1 && count(&got, "READY=1") >= 2,
    )
    .await;
    wait_for(
        "a cycle on the new schedule",
        &d,
        Duration::from_secs(10),
        || runs(&h).1 >= 2,
    )
    .await;

    // an invalid config is refused and the daemon goes on with the old one
    let good = std::fs::read_to_string(&h.config_path).unwrap();
    std::fs::write(&h.config_path, format!("{good}\n[bogus]\nx = 1\n")).unwrap();
    d.signal("HUP");
    wait_for("the refusal", &d, Duration::from_secs(5), || {
        d.log().contains("reload refused")
    })
    .await;
    let n = runs(&h).1;
    wait_for(
        "cycles with the old config",
        &d,
        Duration::from_secs(10),
        || runs(&h).1 > n,
    )
    .await;
    // a changed state.path is kept until a restart, with a warning
    let moved = good.replace("state.db", "elsewhere.db");
    std::fs::write(&h.config_path, moved).unwrap();
    d.signal("HUP");
    wait_for("the restart warning", &d, Duration::from_secs(5), || {
        d.log().contains("apply only at start")
    })
    .await;
    let log = d.log();
    assert!(log.contains("ERROR") && log.contains("bogus"), "{log}");
    assert!(log.contains("state.path"), "{log}");

    d.signal("TERM");
    assert!(d.exit_within(Duration::from_secs(10)).await.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&got, "STOPPING=1"), 1, "{:?}", got.lock().unwrap());
    assert!(!h.dir.path().join("elsewhere.db").exists());
    let lines = got.lock().unwrap().clone();
    let ready = lines.iter().position(|l| l == "READY=1").unwrap();
    let stopping = lines.iter().position(|l| l == "STOPPING=1").unwrap();
    assert!(ready < stopping, "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cron_schedules_and_run_on_start_false() {
    // an invalid cron is a configuration error naming the key
    let h = Harness::new("\n[schedule]\ncron = \"every 40 minutes\"\n").await;
    let out = binary(&h).arg("run").output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("schedule.cron"), "{stderr}");
    assert!(
        !h.dir.path().join("state.db").exists(),
        "nothing opened before the config is valid"
    );

    // a cron fires cycles; run_on_start = false waits for the first firing
    let h = Harness::new("\n[schedule]\ncron = \"*/3 * * * * *\"\nrun_on_start = false\n").await;
    add_assigned(&h, 1..3);
    let mut d = Daemon::start(&h, "cron", &[]);
    wait_for("two cron cycles", &d, Duration::from_secs(15), || {
        runs(&h).1 >= 2
    })
    .await;
    d.signal("TERM");
    assert!(d.exit_within(Duration::from_secs(10)).await.success());

    let h = Harness::new("\n[schedule]\nevery = \"4s\"\nrun_on_start = false\n").await;
    add_assigned(&h, 1..3);
    let mut d = Daemon::start(&h, "late", &[]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(runs(&h).0, 0, "no cycle at start; log:\n{}", d.log());
    wait_for(
        "the first scheduled cycle",
        &d,
        Duration::from_secs(6),
        || runs(&h).1 >= 1,
    )
    .await;
    d.signal("TERM");
    assert!(d.exit_within(Duration::from_secs(10)).await.success());
}

/// Every userName was POSTed with a 201 exactly once (no duplicate creates).
fn assert_each_created_once(posts: &std::collections::BTreeMap<String, usize>) {
    let twice: Vec<_> = posts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "POSTed with 201 more than once: {twice:?}"
    );
}
