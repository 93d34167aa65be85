//! The command line (SPEC §2): argument definitions and what each command does.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::cycle::{exit, run_cycle, CycleOptions};
use crate::state::State;

/// Keeps HERE Enterprise Browser's users and groups in step with one Microsoft Entra
/// enterprise application.
#[derive(Debug, Parser)]
#[command(name = "entra-here-sync", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "ENTRA_HERE_SYNC_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a daemon: a cycle at start, then on the schedule.
    Run,
    /// Run one cycle now, then exit.
    Sync(SyncArgs),
    /// Validate the configuration and test Graph and HERE access; writes nothing.
    Check,
    /// Show the last cycles, failing objects and snapshot sizes from the state file.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show every operation pushed for a user or group.
    History {
        /// userPrincipalName, Entra object id or group displayName.
        key: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Sync a simulated tenant into a simulated HERE: an initial and an incremental cycle.
    Demo(DemoArgs),
}

/// Options of `sync`.
#[derive(Debug, Args, Clone, Default)]
pub struct SyncArgs {
    /// Print the plan; write nothing to HERE or to the snapshot.
    #[arg(long)]
    pub dry_run: bool,
    /// Ignore stored delta links: read everything again.
    #[arg(long)]
    pub full: bool,
    /// Push even if the plan exceeds the mass-deactivation thresholds (this run only).
    #[arg(long)]
    pub allow_mass_deactivation: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Provision one user now (userPrincipalName or object id), printing each step.
    #[arg(long, value_name = "UPN_OR_ID", conflicts_with_all = ["full", "json", "allow_mass_deactivation"])]
    pub user: Option<String>,
}

/// Options of `demo` (the benchmark uses the same engine with more of them).
#[derive(Debug, Args, Clone, Default)]
pub struct DemoArgs {
    /// Users in the simulated tenant.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Groups in the simulated tenant (all assigned).
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// Direct members per group (default: users / groups, at most 50).
    #[arg(long)]
    pub members_per_group: Option<usize>,
    /// Latency the simulated HERE adds to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Parallel SCIM requests (here.max_concurrency; default 16).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Entries per simulated Graph delta page (default: small pages, 4 users / 2 groups).
    #[arg(long)]
    pub page_size: Option<usize>,
    /// Change this percentage of users before the incremental cycle (default: a fixed
    /// handful of illustrative changes).
    #[arg(long)]
    pub churn: Option<f64>,
    /// Let the simulated HERE advertise and serve SCIM `/Bulk` with this `maxOperations`
    /// (and a 1 MiB `maxPayloadSize`); without it, one request per operation.
    #[arg(long, value_name = "N")]
    pub bulk_max_operations: Option<usize>,
    /// Run the simulator in a child process, so the peak RSS is the engine's alone.
    #[arg(long)]
    pub sim_process: bool,
    /// Print the cycles' summaries and measurements as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Internal: serve the simulator for a `--sim-process` parent.
    #[arg(long, hide = true)]
    pub serve_simulator: bool,
    /// Internal: where `--serve-simulator` writes its config.
    #[arg(long, hide = true)]
    pub dir: Option<std::path::PathBuf>,
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let code = match &cli.command {
        Command::Demo(args) => {
            crate::logging::init_stderr("warn");
            runtime().block_on(crate::demo::run(args))
        }
        Command::Status { json } => with_config(&cli, |cfg| crate::status::status(cfg, *json)),
        Command::History { key, json } => {
            with_config(&cli, |cfg| crate::status::history(cfg, key, *json))
        }
        Command::Sync(args) => with_config(&cli, |cfg| sync(cfg, args)),
        Command::Check => with_config(&cli, |cfg| runtime().block_on(crate::status::check(cfg))),
        Command::Run => with_config(&cli, |cfg| {
            let rt = runtime();
            let code = rt.block_on(crate::daemon::run(cfg.clone()));
            // an abandoned in-flight request must not hold the exit
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            code
        }),
    };
    ExitCode::from(code as u8)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("entra-here-sync: cannot start the async runtime: {e}");
            std::process::exit(exit::RUNTIME)
        })
}

/// Loads the config (exit 2 on error), starts logging, then runs `f`.
fn with_config(cli: &Cli, f: impl FnOnce(&Config) -> i32) -> i32 {
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("entra-here-sync: {e}");
            return exit::CONFIG;
        }
    };
    if let Err(e) = crate::mapping::Mapping::from_config(&cfg.mapping) {
        eprintln!("entra-here-sync: config file {}: {e}", cfg.path.display());
        return exit::CONFIG;
    }
    if let Err(e) = crate::logging::init(&cfg.log) {
        eprintln!("entra-here-sync: {e}");
        return exit::CONFIG;
    }
    f(&cfg)
}

fn sync(cfg: &Config, args: &SyncArgs) -> i32 {
    let mut state = match State::open(&cfg.state.path) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the state");
            eprintln!("entra-here-sync: {e}");
            return exit::RUNTIME;
        }
    };
    if let Some(user) = &args.user {
        let mut stdout = std::io::stdout();
        let on_demand =
            crate::ondemand::provision_user(cfg, &mut state, user, args.dry_run, &mut stdout);
        return runtime().block_on(on_demand);
    }
    let opts = CycleOptions {
        dry_run: args.dry_run,
        full: args.full,
        allow_mass_deactivation: args.allow_mass_deactivation,
    };
    let stop = AtomicBool::new(false);
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    // with --json, stdout carries exactly one JSON object: the plan goes to stderr
    let plan_out: &mut dyn std::io::Write = if args.json { &mut stderr } else { &mut stdout };
    let interactive = !args.json && std::io::stderr().is_terminal();
    let mut bar = crate::progress::Bar::new(interactive);
    let summary = runtime().block_on(run_cycle(cfg, &mut state, &opts, &stop, plan_out, &mut bar));
    bar.finish();
    if args.json {
        println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    } else if !args.dry_run {
        eprintln!("{}", summary.one_line());
        if let Some(e) = &summary.error {
            eprintln!("entra-here-sync: {e}");
        }
    }
    summary.exit_code
}
