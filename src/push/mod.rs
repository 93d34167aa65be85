//! Executes a plan against HERE: stage by stage in the order that can't break, with
//! bounded concurrency inside a stage, each acknowledgement committed to the snapshot the
//! moment it arrives, and each failure sent to escrow without stopping the others.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

mod bulk;
mod execute;

use serde_json::Value;

use execute::{execute, resolve, Unit};

use crate::plan::{Op, Stage};
use crate::report::Summary;
use crate::scim::{PatchStyle, ScimClient, ScimError};
use crate::state::{Ack, OperationLog, ScimIds, State, StateError};

/// What a request needs, owned (cheap to clone), so requests run on their own task while
/// the push records answers.
#[derive(Clone)]
pub(crate) struct Exec {
    pub(crate) client: Arc<ScimClient>,
    pub(crate) style: PatchStyle,
    pub(crate) max_members_per_patch: usize,
    pub(crate) max_concurrency: usize,
    /// Every user attribute path the mapping manages (to compare adopted users).
    pub(crate) managed_user_paths: Arc<[String]>,
}

/// What the push needs besides the plan.
pub struct PushContext<'a> {
    pub(crate) exec: Exec,
    /// Use `/Bulk` when HERE advertises it (`here.bulk`).
    pub bulk: bool,
    pub run_id: i64,
    /// Set by a shutdown request: no new operation starts, in-flight ones finish.
    pub stop: &'a AtomicBool,
}

impl<'a> PushContext<'a> {
    /// The context a configured cycle pushes with.
    pub fn new(
        cfg: &crate::config::Config,
        client: Arc<ScimClient>,
        mapping: &crate::mapping::Mapping,
        run_id: i64,
        stop: &'a AtomicBool,
    ) -> PushContext<'a> {
        let managed_user_paths = mapping
            .user_paths()
            .map(str::to_string)
            .chain(["active".to_string()])
            .collect();
        PushContext {
            exec: Exec {
                client,
                style: cfg.here.patch_style,
                max_members_per_patch: cfg.here.max_members_per_patch,
                max_concurrency: cfg.here.max_concurrency,
                managed_user_paths,
            },
            bulk: cfg.here.bulk,
            run_id,
            stop,
        }
    }
}

/// Why a push ended early.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// HERE refused our credentials; nothing else can succeed.
    #[error(transparent)]
    Unauthorized(ScimError),
    /// Most operations failed: HERE is unwell, so the cycle stops pushing (quarantine).
    #[error("quarantine: {failed} of {attempted} operations failed this cycle, most with: {dominant}; pushing stopped, the schedule backs off until a cycle succeeds")]
    Quarantined {
        failed: usize,
        attempted: usize,
        dominant: String,
    },
    /// The state could not record an acknowledgement.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Quarantine starts when at least this many operations ran ...
const QUARANTINE_MIN_OPERATIONS: usize = 20;
/// ... and at least this share of them failed (Entra uses 40 %).
const QUARANTINE_FAILURE_SHARE: f64 = 0.4;

/// Failure bookkeeping of one push, for the quarantine decision.
#[derive(Default)]
struct Health {
    attempted: usize,
    failed: usize,
    errors: HashMap<String, usize>,
}

impl Health {
    fn observe(&mut self, result: &Result<(Ack, u16), ScimError>) {
        self.attempted += 1;
        if let Err(e) = result {
            self.failed += 1;
            let key = match e {
                ScimError::Http {
                    status, scim_type, ..
                } => format!("{status} {}", scim_type.as_deref().unwrap_or(""))
                    .trim_end()
                    .to_string(),
                ScimError::Transport { detail, .. } => format!("unreachable: {detail}"),
                other => other.to_string(),
            };
            *self.errors.entry(key).or_insert(0) += 1;
        }
    }

    fn quarantined(&self) -> bool {
        self.attempted >= QUARANTINE_MIN_OPERATIONS
            && self.failed as f64 >= self.attempted as f64 * QUARANTINE_FAILURE_SHARE
    }

    fn verdict(&self) -> PushError {
        let dominant = self
            .errors
            .iter()
            .max_by_key(|(k, n)| (**n, std::cmp::Reverse((*k).clone())))
            .map(|(k, n)| format!("{k} ({n}x)"))
            .unwrap_or_default();
        PushError::Quarantined {
            failed: self.failed,
            attempted: self.attempted,
            dominant,
        }
    }
}

/// How a finished unit of work changes the summary.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tally {
    UserCreated,
    UserUpdated,
    UserReactivated,
    UserDeactivated,
    GroupCreated,
    GroupUpdated,
    GroupDeleted,
    MembersAdded(usize),
    MembersRemoved(usize),
    Quiet,
}

/// What an operation changed, for `history`. A created user's attributes stay text until
/// recorded: a bulk request's worth of them parsed would take ten times the memory.
#[derive(Debug, Default)]
pub(super) enum Changes {
    #[default]
    None,
    Json(Value),
    Created(crate::mapping::AttrText),
}

impl Changes {
    fn into_value(self) -> Value {
        match self {
            Changes::None => Value::Null,
            Changes::Json(v) => v,
            Changes::Created(text) => serde_json::from_str(text.as_str()).unwrap_or_default(),
        }
    }
}

/// One finished request (or request sequence) with what to record.
pub(super) struct Done {
    op: &'static str,
    entra_id: String,
    kind: &'static str,
    name: String,
    changes: Changes,
    result: Result<(Ack, u16), ScimError>,
    tally: Tally,
}

/// SCIM ids known so far (from the snapshot, then from this push's acknowledgements).
#[derive(Default)]
pub(super) struct Ids {
    users: HashMap<String, String>,
    groups: HashMap<String, String>,
}

impl Ids {
    fn learn(&mut self, ack: &Ack) {
        match ack {
            Ack::User {
                entra_id, scim_id, ..
            } => {
                self.users.insert(entra_id.clone(), scim_id.clone());
            }
            Ack::Group {
                entra_id, scim_id, ..
            } => {
                self.groups.insert(entra_id.clone(), scim_id.clone());
            }
            Ack::GroupDeleted { entra_id } => {
                self.groups.remove(entra_id);
            }
            _ => {}
        }
    }
}

/// Pushes the plan; returns early only when HERE refuses the token or the state fails.
/// With `/Bulk` advertised by HERE (and `here.bulk` on), each stage's requests travel in
/// bulk requests; otherwise one request per call.
pub async fn push(
    ctx: &PushContext<'_>,
    ops: Vec<Op>,
    state: &mut State,
    summary: &mut Summary,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(), PushError> {
    if ops.is_empty() {
        return Ok(()); // not even the SCIM ids need loading
    }
    // HERE's ServiceProviderConfig is asked for (on the runtime's threads) while the
    // snapshot is read here
    let probe = ctx.bulk.then(|| {
        let client = ctx.exec.client.clone();
        tokio::spawn(async move { client.bulk_limits().await })
    });
    let (users, groups) = named_ids(&ops, state)?;
    let bulk = match probe {
        Some(probe) => probe.await.unwrap_or_else(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None, // the runtime is shutting down: single requests
        }),
        None => None,
    };
    let refused = AtomicBool::new(false);
    let mut rec = Recorder {
        ctx,
        state,
        summary,
        progress,
        ids: Ids { users, groups },
        health: Health::default(),
        refused: &refused,
        denial: None,
        finished: 0,
        total: ops.len(),
    };
    for phase in phases(ops, bulk.is_some()) {
        if rec.stopped() {
            break;
        }
        let (started, stage, operations) =
            (std::time::Instant::now(), phase[0].stage(), phase.len());
        match &bulk {
            Some(limits) => bulk::push_phase(&mut rec, limits, phase).await?,
            None => {
                let exec = ctx.exec.clone();
                let work = units(phase, &rec.ids).map(move |unit| {
                    let exec = exec.clone();
                    async move { execute(&exec, unit).await }
                });
                rec.drain(Driver::start(work, ctx.exec.max_concurrency))
                    .await?;
            }
        }
        tracing::debug!(
            ?stage,
            operations,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stage pushed"
        );
        if let Some(e) = rec.denial.take() {
            return Err(PushError::Unauthorized(e));
        }
        if rec.health.quarantined() {
            return Err(rec.health.verdict());
        }
    }
    Ok(())
}

/// The SCIM ids HERE gave the objects the plan names (its own objects, managers and
/// members); the push learns the ids of the objects it creates from their answers.
fn named_ids(ops: &[Op], state: &State) -> Result<ScimIds, StateError> {
    let (mut users, mut groups) = (BTreeSet::new(), BTreeSet::new());
    for op in ops {
        match op.kind() {
            "user" => users.insert(op.entra_id()),
            _ => groups.insert(op.entra_id()),
        };
        match op {
            Op::SetManager {
                manager: Some(m), ..
            } => {
                users.insert(m);
            }
            Op::AddMembers { users: m, .. } | Op::RemoveMembers { users: m, .. } => {
                users.extend(m.iter().map(String::as_str));
            }
            _ => {}
        }
    }
    state.scim_ids_of(&users, &groups)
}

/// A phase's operations with the SCIM ids they refer to. Only managers and memberships
/// refer to other objects; the other phases (most of a large plan) are resolved as their
/// requests go out, so the plan's operations are never held twice.
fn units(phase: Vec<Op>, ids: &Ids) -> Box<dyn Iterator<Item = Unit> + Send> {
    let refers = |op: &Op| {
        matches!(
            op,
            Op::SetManager { .. } | Op::AddMembers { .. } | Op::RemoveMembers { .. }
        )
    };
    if phase.iter().any(refers) {
        let resolved: Vec<Unit> = phase.into_iter().map(|op| resolve(op, ids)).collect();
        Box::new(resolved.into_iter())
    } else {
        Box::new(phase.into_iter().map(|op| resolve(op, &Ids::default())))
    }
}

/// The plan cut at its stages, which run one after the other. In bulk mode new groups and
/// their first members travel together (the members refer to the group by `bulkId`).
fn phases(ops: Vec<Op>, bulk: bool) -> Vec<Vec<Op>> {
    let mut phases: Vec<(Stage, Vec<Op>)> = Vec::new();
    for op in ops {
        let stage = match op.stage() {
            Stage::MemberAdds if bulk => Stage::Groups,
            other => other,
        };
        match phases.last_mut() {
            Some((s, list)) if *s == stage => list.push(op),
            _ => phases.push((stage, vec![op])),
        }
    }
    phases.into_iter().map(|(_, list)| list).collect()
}

/// Records what the push's requests answer, as they answer.
pub(super) struct Recorder<'r, 'c> {
    ctx: &'r PushContext<'c>,
    state: &'r mut State,
    summary: &'r mut Summary,
    progress: &'r mut dyn FnMut(usize, usize),
    /// SCIM ids known so far: the snapshot's, then this push's acknowledgements.
    ids: Ids,
    health: Health,
    /// Set when HERE refused the token or the push is quarantined: nothing new starts.
    refused: &'r AtomicBool,
    denial: Option<ScimError>,
    finished: usize,
    total: usize,
}

impl Recorder<'_, '_> {
    fn stopped(&self) -> bool {
        self.ctx.stop.load(Ordering::Relaxed) || self.refused.load(Ordering::Relaxed)
    }

    /// Records each answer of `driver` as it arrives, until it ends or the push must stop.
    async fn drain(&mut self, mut driver: Driver) -> Result<(), PushError> {
        loop {
            let first = tokio::select! {
                answer = driver.answers.recv() => match answer {
                    Some(answer) => answer,
                    None => break,
                },
                () = tokio::time::sleep(STOP_POLL) => {
                    driver.halt_if(self.stopped());
                    continue;
                }
            };
            // everything already answered is recorded in one transaction: each
            // acknowledgement is still durable the moment it is handled, at a fraction
            // of the cost of a commit each
            let mut ready = vec![first];
            while ready.len() < RECORD_BATCH {
                match driver.answers.try_recv() {
                    Ok(more) => ready.push(more),
                    Err(_) => break,
                }
            }
            self.record(ready.into_iter().flatten().collect())?;
            driver.halt_if(self.stopped());
            if self.health.quarantined() {
                // HERE is unwell: abandon the in-flight retries too (dropping the driver
                // aborts them; an unacknowledged operation is simply planned again)
                self.refused.store(true, Ordering::Relaxed);
                break;
            }
        }
        Ok(())
    }

    /// Records finished calls: acknowledgements in one transaction, failures to escrow.
    fn record(&mut self, finished: Vec<Done>) -> Result<(), PushError> {
        self.finished += finished.len();
        let mut acked = Vec::new();
        for done in finished {
            if let Err(e @ ScimError::Unauthorized { .. }) = &done.result {
                self.refused.store(true, Ordering::Relaxed);
                self.denial.get_or_insert_with(|| e.clone());
                continue;
            }
            self.health.observe(&done.result);
            if done.result.is_ok() {
                acked.push(done);
            } else {
                record_failure(self.ctx, self.state, self.summary, done)?;
            }
        }
        record_acks(self.ctx, self.state, self.summary, &mut self.ids, acked)?;
        (self.progress)(self.finished.min(self.total), self.total);
        Ok(())
    }
}

/// Most answers recorded in one transaction (one concurrency window: a kill can then lose
/// at most this, the answers queued for recording, and the requests in flight).
const RECORD_BATCH: usize = 16;

/// How often a push waiting for answers looks at the shutdown flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Runs a push's requests on their own task, at most `limit` at a time, and hands their
/// answers over a channel: recording answers (SQLite) then never holds up the requests.
/// Dropping it aborts the requests still in flight.
struct Driver {
    answers: mpsc::Receiver<Vec<Done>>,
    halt: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Driver {
    fn start<W, F>(work: W, limit: usize) -> Driver
    where
        W: Iterator<Item = F> + Send + 'static,
        F: Future<Output = Vec<Done>> + Send + 'static,
    {
        let limit = limit.max(1);
        let halt = Arc::new(AtomicBool::new(false));
        let (sender, answers) = mpsc::channel(limit);
        let halted = halt.clone();
        let task = tokio::spawn(async move {
            let mut answered = futures::stream::iter(work)
                .take_while(move |_| std::future::ready(!halted.load(Ordering::Relaxed)))
                .buffer_unordered(limit);
            while let Some(done) = answered.next().await {
                if sender.send(done).await.is_err() {
                    break;
                }
            }
        });
        Driver {
            answers,
            halt,
            task,
        }
    }

    /// No new request starts once halted; those in flight finish and are recorded.
    fn halt_if(&self, halt: bool) {
        if halt {
            self.halt.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn operation_log(ctx: &PushContext<'_>, done: &mut Done) -> OperationLog {
    OperationLog {
        run_id: Some(ctx.run_id),
        entra_id: std::mem::take(&mut done.entra_id),
        kind: done.kind,
        name: std::mem::take(&mut done.name),
        op: done.op.to_string(),
        changes: std::mem::take(&mut done.changes).into_value(),
        scim_status: None,
        error: None,
    }
}

/// Commits acknowledged operations (one transaction), then logs and counts them.
fn record_acks(
    ctx: &PushContext<'_>,
    state: &mut State,
    summary: &mut Summary,
    ids: &mut Ids,
    acked: Vec<Done>,
) -> Result<(), StateError> {
    let mut rows = Vec::with_capacity(acked.len());
    let mut tallies = Vec::with_capacity(acked.len());
    for mut done in acked {
        let mut log = operation_log(ctx, &mut done);
        if let Ok((ack, status)) = done.result {
            log.scim_status = Some(status);
            tallies.push((done.op, done.tally));
            rows.push((ack, log));
        }
    }
    state.record_many(&rows)?;
    for ((ack, log), (op, t)) in rows.iter().zip(tallies) {
        ids.learn(ack);
        let scim_id = match ack {
            Ack::User { scim_id, .. } | Ack::Group { scim_id, .. } => scim_id.as_str(),
            _ => ids
                .users
                .get(&log.entra_id)
                .or(ids.groups.get(&log.entra_id))
                .map(String::as_str)
                .unwrap_or(""),
        };
        if log.kind == "user" {
            tracing::info!(op = %op, entra_id = %log.entra_id, scim_id = %scim_id, userName = %log.name, "pushed");
        } else {
            tracing::info!(op = %op, entra_id = %log.entra_id, scim_id = %scim_id, displayName = %log.name, "pushed");
        }
        tally(summary, t);
    }
    Ok(())
}

/// Sends a failed operation to escrow.
fn record_failure(
    ctx: &PushContext<'_>,
    state: &mut State,
    summary: &mut Summary,
    mut done: Done,
) -> Result<(), StateError> {
    let mut log = operation_log(ctx, &mut done);
    if let Err(e) = done.result {
        let (status, scim_type) = match &e {
            ScimError::Http {
                status, scim_type, ..
            } => (Some(*status), scim_type.clone()),
            _ => (None, None),
        };
        tracing::warn!(op = %done.op, entra_id = %log.entra_id, name = %log.name, status, scimType = scim_type.as_deref().unwrap_or(""), error = %e, "operation failed; retried next cycle");
        log.scim_status = status;
        log.error = Some(e.to_string());
        state.record_failure(&log)?;
        summary.failed += 1;
    }
    Ok(())
}

fn tally(s: &mut Summary, t: Tally) {
    match t {
        Tally::UserCreated => s.users_created += 1,
        Tally::UserUpdated => s.users_updated += 1,
        Tally::UserReactivated => s.users_reactivated += 1,
        Tally::UserDeactivated => s.users_deactivated += 1,
        Tally::GroupCreated => s.groups_created += 1,
        Tally::GroupUpdated => s.groups_updated += 1,
        Tally::GroupDeleted => s.groups_deleted += 1,
        Tally::MembersAdded(n) => s.members_added += n,
        Tally::MembersRemoved(n) => s.members_removed += n,
        Tally::Quiet => {}
    }
}
