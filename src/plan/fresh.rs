//! Users HERE does not have yet, worked out on two threads. A tenant's initial plan
//! creates every user, and parsing, mapping and writing the attribute text of each is
//! most of its work; it needs nothing of the planner but the mapping and the filter, so a
//! worker does it while the caller reads the next rows, and the caller does a chunk
//! itself whenever the worker is behind. The planner applies the results in the order the
//! rows came, so the plan is the one a single thread makes.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use super::filter::ScopeFilter;
use super::source_of;
use super::user::Fresh;
use crate::mapping::Mapping;

/// Rows handed over at a time: enough to make a hand-over cheap, few enough to hold.
const CHUNK: usize = 512;

/// Chunks waiting for the worker; with more, the caller works a chunk out itself.
const QUEUED: usize = 2;

/// A candidate HERE does not have, as the planner read it.
pub(super) struct FreshRow {
    /// The row's position in the stream (orders what is skipped).
    pub(super) seq: usize,
    /// Its candidate slot (see [`super::candidates`]).
    pub(super) slot: u32,
    /// The fingerprint of `props`.
    pub(super) props_hash: i64,
    pub(super) id: String,
    pub(super) props: String,
}

/// A row with what became of it and the fingerprint of its properties.
pub(super) type Done = (FreshRow, Fresh, i64);

/// What the worker needs of the planner: owned, as the thread outlives no borrow.
#[derive(Clone)]
pub(super) struct Context {
    pub(super) mapping: Mapping,
    pub(super) filter: ScopeFilter,
    pub(super) fingerprint: u64,
}

impl Context {
    /// Works out a chunk of rows (on the worker, or in place for a small plan).
    fn run(&self, rows: Vec<FreshRow>) -> Vec<Done> {
        let sorted = self.mapping.sorted_user();
        rows.into_iter()
            .map(|row| {
                let fresh = Fresh::of(&sorted, &self.filter, &row.id, &row.props);
                let source = source_of(row.props_hash, self.fingerprint);
                (row, fresh, source)
            })
            .collect()
    }
}

/// The worker thread and its queues.
struct Worker {
    jobs: SyncSender<Vec<FreshRow>>,
    done: Receiver<Vec<Done>>,
    thread: JoinHandle<()>,
}

/// A chunk on its way: worked out in place already, or by the worker (whose results come
/// back in the order the chunks were sent).
enum Pending {
    Here(Vec<Done>),
    Worker,
}

/// Chunks on their way before the caller waits for the oldest: bounds the results held
/// while the worker is slow.
const PENDING: usize = 8;

/// Rows collected into chunks, worked out on both threads: a chunk goes to the worker
/// when its queue has room, and is worked out in place otherwise, so neither thread idles
/// while the other has work. The worker starts with the first full chunk, so a small plan
/// (a test, provisioning on demand) starts no thread.
pub(super) struct Pipeline {
    context: Context,
    chunk: Vec<FreshRow>,
    worker: Option<Worker>,
    pending: VecDeque<Pending>,
}

impl Pipeline {
    pub(super) fn new(context: Context) -> Pipeline {
        Pipeline {
            context,
            chunk: Vec::new(),
            worker: None,
            pending: VecDeque::new(),
        }
    }

    /// Queues a row; returns the results finished so far, in row order.
    pub(super) fn push(&mut self, row: FreshRow) -> Vec<Done> {
        self.chunk.push(row);
        if self.chunk.len() < CHUNK {
            return Vec::new();
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        self.hand_over(chunk);
        self.ready(self.pending.len() >= PENDING)
    }

    /// Sends a chunk to the worker, or works it out here when the worker's queue is full
    /// (or the worker is gone: it panicked, and `finish` says so).
    fn hand_over(&mut self, chunk: Vec<FreshRow>) {
        let worker = self
            .worker
            .get_or_insert_with(|| spawn(self.context.clone()));
        let pending = match worker.jobs.try_send(chunk) {
            Ok(()) => Pending::Worker,
            Err(TrySendError::Full(chunk) | TrySendError::Disconnected(chunk)) => {
                Pending::Here(self.context.run(chunk))
            }
        };
        self.pending.push_back(pending);
    }

    /// The results at the front of the queue that are finished (`wait`: the oldest one
    /// at least, waiting for it).
    fn ready(&mut self, mut wait: bool) -> Vec<Done> {
        let mut out = Vec::new();
        while let Some(front) = self.pending.front_mut() {
            let done = match front {
                Pending::Here(done) => std::mem::take(done),
                Pending::Worker => {
                    let Some(worker) = &self.worker else { break };
                    let received = match wait {
                        true => worker.done.recv().ok(),
                        false => worker.done.try_recv().ok(),
                    };
                    match received {
                        Some(done) => done,
                        None => break,
                    }
                }
            };
            self.pending.pop_front();
            out.extend(done);
            wait = false;
        }
        out
    }

    /// Every remaining result, in row order, once the worker is done.
    pub(super) fn finish(mut self) -> Vec<Done> {
        let chunk = std::mem::take(&mut self.chunk);
        if self.worker.is_none() {
            return self.context.run(chunk);
        }
        self.pending
            .push_back(Pending::Here(self.context.run(chunk)));
        let mut out = Vec::new();
        while !self.pending.is_empty() {
            let before = self.pending.len();
            out.extend(self.ready(true));
            if self.pending.len() == before {
                break; // the worker is gone: its panic is raised below
            }
        }
        if let Some(Worker { jobs, thread, .. }) = self.worker.take() {
            drop(jobs);
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        out
    }
}

fn spawn(context: Context) -> Worker {
    let (jobs, queue) = mpsc::sync_channel::<Vec<FreshRow>>(QUEUED);
    let (results, done) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        for rows in queue {
            if results.send(context.run(rows)).is_err() {
                break;
            }
        }
    });
    Worker { jobs, done, thread }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{json, Value};

    use super::*;
    use crate::config::GroupMembers;
    use crate::plan::{Op, PlanOptions, Planner};
    use crate::state::{MirrorData, MirrorUser, Snapshot, UserRow};

    /// Users over several chunks: most to create, some disabled, unassigned, soft-deleted,
    /// filtered out or without a userPrincipalName.
    fn mirror(users: usize) -> MirrorData {
        let mut m = MirrorData::default();
        for i in 0..users {
            let id = format!("u{i:05}");
            let mut props = json!({"userPrincipalName": format!("{id}@x"), "displayName": id,
                "accountEnabled": i % 7 != 3, "department": if i % 11 == 5 { "Out" } else { "In" }});
            if i % 13 == 4 {
                props["userPrincipalName"] = Value::Null;
            }
            let props = props.as_object().cloned().unwrap_or_default();
            let soft_deleted = i % 17 == 9;
            m.users.insert(
                id.clone(),
                MirrorUser {
                    props,
                    soft_deleted,
                },
            );
            if i % 5 != 2 {
                m.assigned_users.insert(id);
            }
        }
        m
    }

    /// A plan made of stored rows (through the pipeline) is the plan made of the whole
    /// mirror, but for the fingerprints the rows carry.
    #[test]
    fn rows_worked_out_on_the_pipeline_plan_like_the_whole_mirror() {
        let m = mirror(CHUNK * 12 + 100);
        let mapping = Mapping::default();
        let held = BTreeSet::from(["u00010".to_string()]);
        let o = PlanOptions {
            group_members: GroupMembers::Direct,
            delete_groups_out_of_scope: true,
        };
        let clause = crate::config::ScopeClause {
            attribute: "department".into(),
            operator: "EQUALS".into(),
            value: Some("In".into()),
            group: None,
        };
        let filter = ScopeFilter::compile(&[clause]).unwrap();
        let snapshot = Snapshot::default();
        let whole = {
            let mut p = Planner::new(&m, &snapshot.groups, &mapping, &held, &o)
                .with_scope_filter(filter.clone());
            for (id, u) in &m.users {
                p.user(id, Some(u), None);
            }
            p.finish()
        };
        let mut rows =
            Planner::new(&m, &snapshot.groups, &mapping, &held, &o).with_scope_filter(filter);
        let fingerprint = rows.fingerprint;
        for (id, u) in &m.users {
            rows.user_row(UserRow {
                id: id.clone(),
                props: Some(Value::Object(u.props.clone()).to_string()),
                props_hash: None,
                soft_deleted: u.soft_deleted,
                pushed: None,
            });
        }
        let mut rows = rows.finish();
        for op in &mut rows.ops {
            if let Op::CreateUser {
                entra_id, source, ..
            } = op
            {
                let text = Value::Object(m.users[entra_id.as_str()].props.clone()).to_string();
                let hash = crate::state::fingerprint(&text) as i64;
                assert_eq!(source.take(), Some(source_of(hash, fingerprint)));
            }
        }
        assert!(whole.ops.len() > CHUNK && whole.skipped.len() > 10 && whole.held == 1);
        assert_eq!(rows, whole);
    }
}
