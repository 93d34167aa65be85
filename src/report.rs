//! The cycle summary: one INFO log line, the `--json` object, the run-history row.

use serde::{Deserialize, Serialize};

use crate::plan::{Op, Plan};

/// What one cycle did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Summary {
    pub users_created: usize,
    pub users_updated: usize,
    pub users_deactivated: usize,
    pub users_reactivated: usize,
    pub groups_created: usize,
    pub groups_updated: usize,
    pub groups_deleted: usize,
    pub members_added: usize,
    pub members_removed: usize,
    /// Operations that failed this cycle (in escrow, retried later).
    pub failed: usize,
    /// In-scope objects with unusable source data.
    pub skipped: usize,
    /// Objects waiting in escrow, left alone this cycle.
    pub held: usize,
    /// Operations in the plan.
    pub planned: usize,
    pub graph_requests: u64,
    pub scim_requests: u64,
    /// SCIM requests by `METHOD Resource`, retries included.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub scim_requests_by_kind: std::collections::BTreeMap<String, u64>,
    /// The fewest SCIM requests that could carry out the plan (one per operation, member
    /// changes in full PATCHes): the yardstick of the benchmark's efficiency.
    pub minimal_requests: usize,
    pub duration_ms: u64,
    pub dry_run: bool,
    /// Resources read in full again because their delta link was refused.
    pub resynced: Vec<String>,
    pub exit_code: i32,
    /// Why the cycle stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Summary {
    /// Counts what a plan would do (dry run, brake messages).
    pub fn count_plan(&mut self, plan: &Plan) {
        for op in &plan.ops {
            match op {
                Op::CreateUser { .. } => self.users_created += 1,
                Op::UpdateUser {
                    reactivate: true, ..
                } => self.users_reactivated += 1,
                Op::UpdateUser { .. } => self.users_updated += 1,
                Op::SetManager { .. } => {}
                Op::DeactivateUser { .. } => self.users_deactivated += 1,
                Op::CreateGroup { .. } => self.groups_created += 1,
                Op::UpdateGroup { .. } => self.groups_updated += 1,
                Op::AddMembers { users, .. } => self.members_added += users.len(),
                Op::RemoveMembers { users, .. } => self.members_removed += users.len(),
                Op::DeleteGroup { .. } => self.groups_deleted += 1,
            }
        }
    }

    /// The one summary line per cycle (SPEC §1.7).
    pub fn log(&self) {
        let outcome = match self.exit_code {
            0 => "cycle complete",
            3 => "cycle complete with failures",
            4 => "cycle stopped by the safety brake",
            _ => "cycle failed",
        };
        let fields = format!(
            "created={} updated={} deactivated={} reactivated={} groups_created={} groups_updated={} groups_deleted={} members_added={} members_removed={} failed={} skipped={} held={} duration_ms={} graph_requests={} scim_requests={} dry_run={}",
            self.users_created,
            self.users_updated,
            self.users_deactivated,
            self.users_reactivated,
            self.groups_created,
            self.groups_updated,
            self.groups_deleted,
            self.members_added,
            self.members_removed,
            self.failed,
            self.skipped,
            self.held,
            self.duration_ms,
            self.graph_requests,
            self.scim_requests,
            self.dry_run
        );
        match self.exit_code {
            0 => tracing::info!(summary = %fields, "{outcome}"),
            3 => tracing::warn!(summary = %fields, "{outcome}"),
            _ => {
                tracing::error!(summary = %fields, error = self.error.as_deref().unwrap_or(""), "{outcome}")
            }
        }
    }

    /// A short human-readable form (demo output, `status`).
    pub fn one_line(&self) -> String {
        format!(
            "{} created, {} updated, {} deactivated, {} reactivated; groups {} created, {} updated, {} deleted; members +{} -{}; {} failed, {} skipped; {} Graph + {} SCIM requests in {} ms",
            self.users_created,
            self.users_updated,
            self.users_deactivated,
            self.users_reactivated,
            self.groups_created,
            self.groups_updated,
            self.groups_deleted,
            self.members_added,
            self.members_removed,
            self.failed,
            self.skipped,
            self.graph_requests,
            self.scim_requests,
            self.duration_ms
        )
    }
}

/// One line per planned operation, naming the object, for `--dry-run`.
pub fn plan_lines(plan: &Plan) -> Vec<String> {
    plan.ops
        .iter()
        .map(|op| {
            let detail = match op {
                Op::UpdateUser { changes, .. } | Op::UpdateGroup { changes, .. } => changes
                    .iter()
                    .map(|c| format!("{}: {} → {}", c.path, show(&c.old), show(&c.new)))
                    .collect::<Vec<_>>()
                    .join(", "),
                Op::AddMembers { users, .. } => format!("+{} member(s)", users.len()),
                Op::RemoveMembers { users, .. } => format!("-{} member(s)", users.len()),
                Op::SetManager { manager, .. } => {
                    format!("manager → {}", manager.as_deref().unwrap_or("(none)"))
                }
                _ => String::new(),
            };
            format!("{:<16} {}  {}", op.name(), op.object_name(), detail)
                .trim_end()
                .to_string()
        })
        .collect()
}

fn show(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(serde_json::Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    }
}
