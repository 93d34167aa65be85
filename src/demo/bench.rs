//! The demo's cycles and the benchmark's measurements: an initial cycle, an incremental
//! one after some churn, and a no-change cycle, each with its wall time, requests, the
//! ideal time (fewest SCIM requests × latency / concurrency), efficiency and peak RSS.
//!
//! With `--sim-process` the simulator runs in a child process (`demo --serve-simulator`),
//! so the peak RSS reported is the sync engine's alone.

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::AtomicBool;

use serde::Serialize;
use serde_json::json;

use super::{churn, churn_percent, populate, write_config, Tenant, TenantSpec};
use crate::cli::DemoArgs;
use crate::config::Config;
use crate::cycle::{run_cycle, CycleOptions, Quiet};
use crate::report::Summary;
use crate::sim::{BulkSupport, GraphFaults, ScimFaults, Simulator};

/// The simulated HERE's `maxPayloadSize` when `--bulk-max-operations` is given (1 MiB, as
/// scim2-server advertises).
const BULK_PAYLOAD: usize = 1_048_576;
use crate::state::State;

type Fallible<T> = Result<T, Box<dyn Error>>;

/// One cycle's measurements.
#[derive(Debug, Serialize)]
struct Measured {
    cycle: &'static str,
    summary: Summary,
    changed_objects: usize,
    scim_requests_per_changed_object: Option<f64>,
    /// SCIM requests ÷ the single-request count of the plan (bulk packs many into one).
    round_trip_share: Option<f64>,
    ideal_ms: f64,
    efficiency: Option<f64>,
    peak_rss_mb: f64,
    state_bytes: u64,
}

/// Where the simulated tenant lives.
enum Sim {
    InProcess(Box<Simulator>, Tenant),
    Child(Child, ChildStdin, BufReader<ChildStdout>),
}

impl Sim {
    /// Applies the churn for the incremental cycle; returns what changed, for display.
    fn churn(&mut self, args: &DemoArgs) -> Fallible<Vec<String>> {
        match self {
            Sim::InProcess(sim, tenant) => Ok(apply_churn(sim, tenant, args)),
            Sim::Child(..) => self.ask("churn", "CHANGED "),
        }
    }

    /// (users, active users, groups) in the simulated HERE.
    fn here_counts(&mut self) -> Fallible<(usize, usize, usize)> {
        match self {
            Sim::InProcess(sim, _) => Ok(counts(sim)),
            Sim::Child(..) => self.ask("report", "REPORT "),
        }
    }

    /// One command to the simulator process and its JSON answer.
    fn ask<T: serde::de::DeserializeOwned>(&mut self, command: &str, answer: &str) -> Fallible<T> {
        let Sim::Child(_, stdin, stdout) = self else {
            return Err("the simulator runs in this process".into());
        };
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let said = line
            .strip_prefix(answer)
            .ok_or("simulator process stopped")?;
        Ok(serde_json::from_str(said.trim())?)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Sim::Child(child, _, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spec(args: &DemoArgs) -> TenantSpec {
    TenantSpec {
        users: args.users.max(1),
        groups: args.groups,
        members_per_group: args
            .members_per_group
            .unwrap_or_else(|| (args.users / args.groups.max(1)).clamp(1, 50)),
    }
}

async fn start_simulator(args: &DemoArgs) -> Fallible<(Simulator, Tenant)> {
    let sim = Simulator::start().await?;
    sim.graph.set_faults(GraphFaults {
        page_size: args.page_size,
        ..GraphFaults::default()
    });
    sim.scim.set_faults(ScimFaults {
        latency_ms: args.latency_ms,
        bulk: args.bulk_max_operations.map(|max_operations| BulkSupport {
            max_operations,
            max_payload_size: BULK_PAYLOAD,
            advertised_payload_size: None,
        }),
        ..ScimFaults::default()
    });
    let tenant = populate(&sim.graph, spec(args));
    Ok((sim, tenant))
}

fn apply_churn(sim: &Simulator, tenant: &mut Tenant, args: &DemoArgs) -> Vec<String> {
    match args.churn {
        Some(percent) => {
            let n = churn_percent(&sim.graph, tenant, percent, spec(args).members_per_group);
            vec![format!("{n} users changed ({percent} % churn)")]
        }
        None => churn(&sim.graph, tenant),
    }
}

fn counts(sim: &Simulator) -> (usize, usize, usize) {
    let users = sim.scim.users();
    let active = users.iter().filter(|u| u["active"] == json!(true)).count();
    (users.len(), active, sim.scim.groups().len())
}

/// `demo --serve-simulator`: the simulator for a benchmark in another process. Prints
/// `READY <config>`, then answers `churn` and `report` lines on stdin until it closes.
pub async fn serve(args: &DemoArgs) -> Fallible<i32> {
    let dir = args.dir.clone().ok_or("--serve-simulator needs --dir")?;
    let (sim, mut tenant) = start_simulator(args).await?;
    let config = write_config(&dir, &sim, "")?;
    println!("READY {}", config.display());
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "churn" => println!("CHANGED {}", json!(apply_churn(&sim, &mut tenant, args))),
            "report" => println!("REPORT {}", json!(counts(&sim))),
            _ => {}
        }
    }
    Ok(0)
}

fn spawn_child(args: &DemoArgs, dir: &Path) -> Fallible<(Sim, PathBuf)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["demo", "--serve-simulator", "--dir"])
        .arg(dir)
        .args([
            "--users",
            &args.users.to_string(),
            "--groups",
            &args.groups.to_string(),
        ])
        .args(["--latency-ms", &args.latency_ms.to_string()]);
    if let Some(k) = args.members_per_group {
        cmd.args(["--members-per-group", &k.to_string()]);
    }
    if let Some(p) = args.page_size {
        cmd.args(["--page-size", &p.to_string()]);
    }
    if let Some(c) = args.churn {
        cmd.args(["--churn", &c.to_string()]);
    }
    if let Some(n) = args.bulk_max_operations {
        cmd.args(["--bulk-max-operations", &n.to_string()]);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let config = line
        .strip_prefix("READY ")
        .ok_or("the simulator process did not start")?;
    let config = PathBuf::from(config.trim());
    Ok((Sim::Child(child, stdin, stdout), config))
}

/// Applies the benchmark's concurrency and lifts the rate limit so latency is the only brake.
fn tune(config: &Path, args: &DemoArgs) -> Fallible<()> {
    let text = std::fs::read_to_string(config)?;
    let concurrency = args.concurrency.unwrap_or(16);
    let text = text
        .replace(
            "max_concurrency = 16",
            &format!("max_concurrency = {concurrency}"),
        )
        .replace(
            "max_requests_per_second = 10000",
            "max_requests_per_second = 1000000",
        );
    std::fs::write(config, text)?;
    Ok(())
}

/// Runs the demo's three cycles and prints them.
pub async fn run(args: &DemoArgs) -> Fallible<i32> {
    let dir = std::env::temp_dir().join(format!("entra-here-sync-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = cycles(args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn cycles(args: &DemoArgs, dir: &Path) -> Fallible<i32> {
    let (mut sim, config) = if args.sim_process {
        spawn_child(args, dir)?
    } else {
        let (sim, tenant) = start_simulator(args).await?;
        let config = write_config(dir, &sim, "")?;
        (Sim::InProcess(Box::new(sim), tenant), config)
    };
    tune(&config, args)?;
    let cfg = Config::load(&config)?;
    let mut state = State::open(&cfg.state.path)?;
    if !args.json {
        let s = spec(args);
        println!(
            "simulated tenant: {} users, {} assigned groups of {} members{}; simulated HERE latency {} ms, concurrency {}",
            s.users,
            s.groups,
            s.members_per_group,
            if args.sim_process { " (simulator in a child process)" } else { "" },
            args.latency_ms,
            cfg.here.max_concurrency
        );
    }
    let mut measured = Vec::new();
    let mut changes = Vec::new();
    for name in ["initial", "incremental", "no-change"] {
        if name == "incremental" {
            changes = sim.churn(args)?;
        }
        let m = measure(name, &cfg, &mut state, args).await;
        if !args.json {
            print_measured(&m, &changes);
        }
        measured.push(m);
    }
    let (users, active, groups) = sim.here_counts()?;
    if args.json {
        let doc = json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "users": args.users, "groups": args.groups,
            "members_per_group": spec(args).members_per_group,
            "latency_ms": args.latency_ms, "concurrency": cfg.here.max_concurrency,
            "cycles": measured, "changes": changes,
            "here": {"users": users, "active_users": active, "groups": groups},
        });
        println!("{doc}");
    } else {
        println!("HERE now holds {users} users ({active} active) and {groups} groups");
    }
    Ok(measured
        .iter()
        .map(|m| m.summary.exit_code)
        .max()
        .unwrap_or(0))
}

async fn measure(name: &'static str, cfg: &Config, state: &mut State, args: &DemoArgs) -> Measured {
    let stop = AtomicBool::new(false);
    let opts = CycleOptions::default();
    let summary = run_cycle(cfg, state, &opts, &stop, &mut std::io::sink(), &mut Quiet).await;
    let changed = summary.users_created
        + summary.users_updated
        + summary.users_deactivated
        + summary.users_reactivated
        + summary.groups_created
        + summary.groups_updated
        + summary.groups_deleted;
    let concurrency = cfg.here.max_concurrency.max(1) as f64;
    let ideal_ms = summary.minimal_requests as f64 * args.latency_ms as f64 / concurrency;
    let wall = summary.duration_ms as f64;
    Measured {
        cycle: name,
        changed_objects: changed,
        round_trip_share: (summary.minimal_requests > 0)
            .then(|| summary.scim_requests as f64 / summary.minimal_requests as f64),
        scim_requests_per_changed_object: (changed > 0)
            .then(|| summary.scim_requests as f64 / changed as f64),
        ideal_ms,
        // the ideal counts single requests: it says nothing about a bulk push
        efficiency: (ideal_ms > 0.0 && wall > 0.0 && args.bulk_max_operations.is_none())
            .then(|| ideal_ms / wall),
        peak_rss_mb: peak_rss_mb(),
        state_bytes: state_bytes(&cfg.state.path),
        summary,
    }
}

fn print_measured(m: &Measured, changes: &[String]) {
    if m.cycle == "incremental" && !changes.is_empty() {
        println!("changes in Entra: {}", changes.join("; "));
    }
    println!("{} cycle: {}", m.cycle, m.summary.one_line());
    if let Some(e) = &m.summary.error {
        println!("  error: {e}");
    }
    let kinds: Vec<String> = m
        .summary
        .scim_requests_by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let efficiency = m
        .efficiency
        .map(|e| format!(", efficiency {e:.2}"))
        .unwrap_or_default();
    let share = m
        .round_trip_share
        .map(|r| format!("; {:.2} % of the single-request count", r * 100.0))
        .unwrap_or_default();
    let per_object = m
        .scim_requests_per_changed_object
        .map(|r| format!("; {r:.3} SCIM requests per changed object"))
        .unwrap_or_default();
    println!(
        "  SCIM requests: {}{per_object}{share}; ideal {:.0} ms{efficiency}; peak RSS {:.0} MB; state {:.1} MB",
        if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") },
        m.ideal_ms,
        m.peak_rss_mb,
        m.state_bytes as f64 / 1e6
    );
}

/// The process's peak resident set size so far (Linux `VmHWM`), in MB.
pub fn peak_rss_mb() -> f64 {
    memory_mb("VmHWM:")
}

/// One memory figure of `/proc/self/status` (e.g. `VmRSS:`), in MB; 0 where there is none.
pub fn memory_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn state_bytes(path: &Path) -> u64 {
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path.to_path_buf()) + size(PathBuf::from(wal))
}
