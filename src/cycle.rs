//! One sync cycle, strictly in order: read → plan → brake → push → report.
//!
//! The whole plan exists before the first SCIM request, so the mass-deactivation brake
//! sees every deactivation of the cycle, and a failed Graph read never becomes a plan.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use crate::config::{Config, ConfigError};
use crate::graph::{read_directory, GraphClient, GraphError};
use crate::mapping::Mapping;
use crate::plan::{Plan, PlanOptions, Planner};
use crate::push::{push, PushContext, PushError};
use crate::report::{plan_lines, Summary};
use crate::scim::ScimClient;
use crate::state::{KeyBatch, SnapGroup, State, StateError, UserKey};

/// Exit codes (SPEC §2).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Runtime error: Graph/SCIM unreachable, auth failed, state unusable.
    pub const RUNTIME: i32 = 1;
    /// Usage or configuration error.
    pub const CONFIG: i32 = 2;
    /// Cycle completed but some objects failed.
    pub const PARTIAL: i32 = 3;
    /// Safety brake: nothing pushed.
    pub const BRAKE: i32 = 4;
}

/// How this cycle runs.
#[derive(Debug, Clone, Default)]
pub struct CycleOptions {
    /// Plan and print; write nothing to HERE or to the snapshot.
    pub dry_run: bool,
    /// Ignore stored delta links and release escrow.
    pub full: bool,
    /// The operator's one-time override of the brake.
    pub allow_mass_deactivation: bool,
}

/// Why a cycle could not complete.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error("{0}")]
    Mapping(String),
}

impl CycleError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            CycleError::Config(_) | CycleError::Mapping(_) => exit::CONFIG,
            _ => exit::RUNTIME,
        }
    }
}

/// Callbacks for progress display (interactive `sync`).
pub trait Progress: Send {
    /// Delta pages read so far.
    fn pages(&mut self, _pages: usize) {}
    /// Operations finished out of the plan's total.
    fn pushed(&mut self, _done: usize, _total: usize) {}
}

/// Progress that shows nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// Runs one cycle and returns its summary (errors are inside, with their exit code).
/// Plan lines of a dry run go to `plan_out`.
pub async fn run_cycle(
    cfg: &Config,
    state: &mut State,
    opts: &CycleOptions,
    stop: &AtomicBool,
    plan_out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> Summary {
    let started = Instant::now();
    let mut summary = Summary {
        dry_run: opts.dry_run,
        ..Summary::default()
    };
    let run_id = state.start_run(opts.dry_run).ok();
    let result = cycle(
        cfg,
        state,
        opts,
        stop,
        plan_out,
        progress,
        &mut summary,
        run_id.unwrap_or(0),
    )
    .await;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(code) => summary.exit_code = code,
        Err(e) => {
            summary.exit_code = e.exit_code();
            tracing::error!(error = %e, "cycle aborted");
            summary.error = Some(e.to_string());
        }
    }
    summary.log();
    if let Some(id) = run_id {
        let json = serde_json::to_value(&summary).unwrap_or_default();
        if let Err(e) = state.finish_run(id, summary.exit_code, &json, summary.error.as_deref()) {
            tracing::error!(error = %e, "cannot record the run in the state");
        }
    }
    if !opts.dry_run {
        prune_history(cfg, state);
    }
    summary
}

/// Applies `state.history_days`: history older than that is deleted at the end of a cycle.
fn prune_history(cfg: &Config, state: &mut State) {
    if cfg.state.history_days == 0 {
        return;
    }
    let cutoff = crate::state::now() - i64::from(cfg.state.history_days) * 86_400;
    match state.prune_history(cutoff) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            rows = n,
            history_days = cfg.state.history_days,
            "pruned operation history older than state.history_days"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot prune the operation history"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn cycle(
    cfg: &Config,
    state: &mut State,
    opts: &CycleOptions,
    stop: &AtomicBool,
    plan_out: &mut dyn Write,
    progress: &mut dyn Progress,
    summary: &mut Summary,
    run_id: i64,
) -> Result<i32, CycleError> {
    let started = Instant::now();
    let mapping =
        Mapping::from_config(&cfg.mapping).map_err(|e| CycleError::Mapping(e.to_string()))?;
    let graph = GraphClient::new(&cfg.graph, cfg.here.timeout)?;
    let scim = std::sync::Arc::new(ScimClient::new(&cfg.here)?);
    if opts.full && !opts.dry_run {
        state.release_escrow()?;
    }
    // what HERE acknowledged does not change while Graph is read: load it meanwhile
    let snapshot_side = state.reader()?.map(|reader| {
        tokio::task::spawn_blocking(move || {
            let loaded = load_snapshot_side(&reader);
            (reader, loaded)
        })
    });
    let read = read_directory(
        &graph,
        state,
        &mapping.user_select(&scope_attributes(cfg)),
        &mapping.group_select(),
        opts.full,
        |pages| progress.pages(pages),
    )
    .await;
    summary.graph_requests = graph.request_count();
    let read = read?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        pages = read.pages,
        entries = read.entries,
        "Graph read committed"
    );
    summary.resynced = read.resynced.iter().map(|s| s.to_string()).collect();
    let ((snapshot_groups, held), reader) = match snapshot_side {
        Some(task) => match task.await {
            Ok((reader, loaded)) => (loaded?, Some(reader)),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => (load_snapshot_side(state)?, None), // the runtime is shutting down
        },
        None => (load_snapshot_side(state)?, None),
    };
    // the users' keys are read on the second connection while the directory loads here
    let keys = KeyScan::start(reader);
    let directory = state.load_directory()?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "groups, assignments and escrow loaded"
    );
    let options = PlanOptions {
        group_members: cfg.sync.group_members,
        delete_groups_out_of_scope: cfg.sync.delete_groups_out_of_scope,
    };
    let mut planner = Planner::new(&directory, &snapshot_groups, &mapping, &held, &options)
        .with_scope_filter(cfg.sync.scope_filter.clone());
    plan_users(state, keys, &mut planner)?;
    let plan = planner.finish();
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        operations = plan.ops.len(),
        "plan ready"
    );
    // a large directory takes a while to free: another thread does it while the push starts
    std::thread::spawn(move || drop((directory, snapshot_groups)));
    summary.skipped = plan.skipped.len();
    summary.held = plan.held;
    summary.planned = plan.ops.len();
    summary.minimal_requests = plan.minimal_requests(cfg.here.max_members_per_patch);
    for s in &plan.skipped {
        tracing::warn!(entra_id = %s.entra_id, kind = %s.kind, reason = %s.reason, "skipped: source record cannot be provisioned");
    }
    if opts.dry_run {
        return Ok(print_plan(&plan, cfg, opts, plan_out, summary));
    }
    state.set_skipped(&plan.skipped)?;
    state.remember_sources(&plan.sources)?;
    if let Some(code) = brake(&plan, cfg, opts, summary) {
        return Ok(code);
    }
    let ctx = PushContext::new(cfg, scim.clone(), &mapping, run_id, stop);
    let pushed = push(&ctx, plan.ops, state, summary, &mut |d, t| {
        progress.pushed(d, t)
    })
    .await;
    summary.scim_requests = scim.request_count();
    summary.scim_requests_by_kind = scim.request_counts();
    if let Err(PushError::Quarantined { .. }) = &pushed {
        state.set_setting(QUARANTINE_KEY, &(quarantine_level(state) + 1).to_string())?;
        // the failures were HERE's, not the objects': retry them all once HERE recovers
        state.release_escrow()?;
    } else if pushed.is_ok() && quarantine_level(state) != 0 {
        state.set_setting(QUARANTINE_KEY, "0")?;
    }
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "push finished"
    );
    pushed?;
    Ok(if summary.failed > 0 {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

/// The snapshot's groups and the objects held in escrow: the acknowledged side a plan
/// starts from besides the users.
fn load_snapshot_side(
    state: &State,
) -> Result<(BTreeMap<String, SnapGroup>, BTreeSet<String>), StateError> {
    Ok((state.load_snapshot_groups()?, state.held_in_escrow()?))
}

/// Where a plan's user keys come from: a scan running on a second connection, or the
/// writer's own connection when there is none (an in-memory state).
pub(crate) enum KeyScan {
    Background {
        batches: Receiver<KeyBatch>,
        scan: std::thread::JoinHandle<Result<usize, StateError>>,
    },
    Inline,
}

/// Key batches a background scan may read ahead of the planner (~128k users, ~20 MB).
const QUEUED_KEY_BATCHES: usize = 128;

impl KeyScan {
    /// Starts reading every user's key on another thread; what the read committed is final.
    fn start(reader: Option<State>) -> KeyScan {
        let Some(reader) = reader else {
            return KeyScan::Inline;
        };
        let (sender, batches) = std::sync::mpsc::sync_channel(QUEUED_KEY_BATCHES);
        let scan = std::thread::spawn(move || {
            // a planner that gave up has dropped the receiver: the rest goes nowhere
            reader.user_key_batches(|batch| drop(sender.send(batch)))
        });
        KeyScan::Background { batches, scan }
    }
}

/// Plans every user: those a key settles straight from the narrow indexes, the others
/// from their whole rows.
pub(crate) fn plan_users(
    state: &State,
    keys: KeyScan,
    planner: &mut Planner<'_>,
) -> Result<(), StateError> {
    let mut unsettled = Vec::new();
    let mut settle = |key: &UserKey<'_>| {
        if !planner.settled(key) {
            unsettled.push(key.id.to_string());
        }
    };
    let total = match keys {
        KeyScan::Inline => state.for_each_user_key(&mut settle)?,
        KeyScan::Background { batches, scan } => {
            for batch in batches {
                batch.keys().for_each(|key| settle(&key));
            }
            scan.join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))?
        }
    };
    tracing::debug!(users = total, unsettled = unsettled.len(), "user keys read");
    state.for_each_user_row_in(&unsettled, total, |row| planner.user_row(row))
}

/// Setting that counts consecutive quarantined cycles (the daemon backs off by it).
pub const QUARANTINE_KEY: &str = "quarantine_level";

/// Consecutive quarantined cycles so far (0 when healthy).
pub fn quarantine_level(state: &State) -> u32 {
    state
        .setting(QUARANTINE_KEY)
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Graph user properties the scope filters read (they must be in `$select`).
pub fn scope_attributes(cfg: &Config) -> Vec<String> {
    cfg.sync.scope_filter.properties()
}

/// The mass-deactivation brake (SPEC §1.5): `Some(4)` when the plan must not run.
fn brake(plan: &Plan, cfg: &Config, opts: &CycleOptions, summary: &mut Summary) -> Option<i32> {
    let (users, groups) = (plan.deactivations(), plan.group_deletions());
    let tripped = users > cfg.sync.max_deactivations || groups > cfg.sync.max_group_deletions;
    if !tripped {
        return None;
    }
    if opts.allow_mass_deactivation {
        tracing::warn!(
            deactivations = users,
            group_deletions = groups,
            "safety brake overridden by --allow-mass-deactivation"
        );
        return None;
    }
    let message = format!(
        "safety stop: the plan deactivates {users} users (sync.max_deactivations = {}) and deletes {groups} groups (sync.max_group_deletions = {}); nothing was pushed. Check the assignments in Entra, run `entra-here-sync sync --dry-run` to see the plan, then `entra-here-sync sync --allow-mass-deactivation` once if it is intended",
        cfg.sync.max_deactivations, cfg.sync.max_group_deletions
    );
    tracing::error!(deactivations = users, group_deletions = groups, "{message}");
    summary.count_plan(plan);
    summary.error = Some(message);
    Some(exit::BRAKE)
}

fn print_plan(
    plan: &Plan,
    cfg: &Config,
    opts: &CycleOptions,
    out: &mut dyn Write,
    summary: &mut Summary,
) -> i32 {
    summary.count_plan(plan);
    let mut text = String::new();
    for line in plan_lines(plan) {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str(&format!(
        "plan: {} operation(s): {} users to create, {} to update, {} to reactivate, {} to deactivate; {} groups to create, {} to update, {} to delete; {} members to add, {} to remove; {} skipped, {} waiting in escrow (dry run: nothing was written)\n",
        plan.ops.len(),
        summary.users_created,
        summary.users_updated,
        summary.users_reactivated,
        summary.users_deactivated,
        summary.groups_created,
        summary.groups_updated,
        summary.groups_deleted,
        summary.members_added,
        summary.members_removed,
        plan.skipped.len(),
        plan.held
    ));
    let _ = out.write_all(text.as_bytes());
    let mut scratch = Summary::default();
    match brake(plan, cfg, opts, &mut scratch) {
        Some(code) => {
            summary.error = scratch.error;
            code
        }
        None => exit::OK,
    }
}
