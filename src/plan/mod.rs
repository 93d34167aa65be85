//! The planner: (mirror ∩ scope, snapshot, mapping) → ordered operations. Pure: no I/O.
//!
//! Desired state is recomputed from the mirror every cycle, so an interrupted or failed
//! push needs no recovery: the next plan contains whatever is still missing.

mod candidates;
pub mod filter;
mod fresh;
mod groups;
mod op;
mod props;
mod scope;
mod user;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashSet;
use serde_json::Value;

use crate::config::GroupMembers;
use crate::mapping::{Attrs, Mapping, Props, SortedMapping};
use crate::state::{
    fingerprint, MirrorData, MirrorKey, MirrorUser, PushedRow, SkippedRow, SnapGroup, SnapUser,
    Snapshot, UserKey, UserRow,
};
use candidates::Candidates;
use fresh::{Done, FreshRow, Pipeline};
pub use op::{Change, Op, Stage};
use user::{deactivate, desired, user_op, Fresh};

/// Settings the planner needs.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub group_members: GroupMembers,
    pub delete_groups_out_of_scope: bool,
}

/// The planner's output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// In-scope objects whose source data cannot be provisioned.
    pub skipped: Vec<SkippedRow>,
    /// Objects left alone because they wait in escrow.
    pub held: usize,
    /// Users HERE already holds exactly as planned, with the fingerprint of their Entra
    /// properties: remembering it lets the next cycle skip them unparsed while unchanged.
    pub sources: Vec<(String, i64)>,
}

impl Plan {
    /// Users the plan deactivates (the brake counts these).
    pub fn deactivations(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o, Op::DeactivateUser { .. }))
            .count()
    }

    /// The fewest SCIM requests that carry out this plan: one per operation, membership
    /// changes in PATCHes of `max_members_per_patch`.
    pub fn minimal_requests(&self, max_members_per_patch: usize) -> usize {
        let per_patch = max_members_per_patch.max(1);
        self.ops
            .iter()
            .map(|o| match o {
                Op::AddMembers { users, .. } | Op::RemoveMembers { users, .. } => {
                    users.len().div_ceil(per_patch)
                }
                _ => 1,
            })
            .sum()
    }

    /// Groups the plan deletes (the brake counts these).
    pub fn group_deletions(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o, Op::DeleteGroup { .. }))
            .count()
    }
}

/// What the plan decided about a candidate, for memberships and manager references.
#[derive(Debug, Clone, Copy, Default)]
struct Decided {
    /// Ends this plan active in HERE (group members and managers come from these).
    active: bool,
    /// Pushed and active, but skipped for bad source data: left as it is, memberships too.
    protected: bool,
}

/// A manager reference to decide once every user has been seen.
struct ManagerRef {
    entra_id: String,
    user_name: String,
    wanted: Option<String>,
    pushed: Option<String>,
}

/// The planner. Users pass one at a time ([`Planner::user`]) so a tenant of any size is
/// planned without holding every user in memory; groups, assignments and the snapshot's
/// groups are small and held whole. Pure: no I/O.
pub struct Planner<'a> {
    mirror: &'a MirrorData,
    snapshot_groups: &'a BTreeMap<String, SnapGroup>,
    mapping: &'a Mapping,
    /// The user mapping sorted once, for every user.
    user_mapping: SortedMapping<'a>,
    held: &'a BTreeSet<String>,
    options: &'a PlanOptions,
    /// Users assigned directly or through an assigned group, with what this plan decided.
    candidates: Candidates<'a>,
    /// Users declared active without being planned ([`Planner::assume_active`]).
    assumed: FxHashSet<String>,
    managers: Vec<ManagerRef>,
    /// The attribute scoping filter (empty: every candidate is in scope).
    filter: filter::ScopeFilter,
    /// Fingerprint of everything besides a user's properties that shapes their attributes.
    fingerprint: u64,
    /// The fingerprint of the user being planned, for its create/update operation.
    source: Option<i64>,
    /// Candidates HERE does not have, worked out on two threads ([`fresh`]).
    pipeline: Option<Pipeline>,
    /// Rows seen so far: a row's position, so results that come back from the pipeline
    /// take their place among the skipped rows.
    rows: usize,
    /// The position of the row each entry of `out.skipped` came from.
    skipped_rows: Vec<usize>,
    out: Plan,
}

impl<'a> Planner<'a> {
    /// A planner over the mirror's groups and assignments (`mirror.users` is not read).
    pub fn new(
        mirror: &'a MirrorData,
        snapshot_groups: &'a BTreeMap<String, SnapGroup>,
        mapping: &'a Mapping,
        held: &'a BTreeSet<String>,
        options: &'a PlanOptions,
    ) -> Planner<'a> {
        Planner {
            candidates: Candidates::of(mirror, options.group_members),
            mirror,
            snapshot_groups,
            mapping,
            user_mapping: mapping.sorted_user(),
            held,
            options,
            assumed: FxHashSet::default(),
            managers: Vec::new(),
            filter: filter::ScopeFilter::default(),
            fingerprint: fingerprint(&format!("{mapping:?}")),
            source: None,
            pipeline: None,
            rows: 0,
            skipped_rows: Vec::new(),
            out: Plan::default(),
        }
    }

    /// Applies the attribute scoping filter (`[[sync.scope_filter]]`): a candidate that
    /// does not match is out of scope, exactly like an unassigned user.
    pub fn with_scope_filter(mut self, filter: filter::ScopeFilter) -> Planner<'a> {
        self.fingerprint = fingerprint(&format!("{:?}{filter:?}", self.mapping));
        self.filter = filter;
        self
    }

    /// Declares a user active in HERE without planning it: a partial plan (provisioning on
    /// demand plans one user) keeps manager references to users it does not plan.
    pub fn assume_active(&mut self, id: &str) {
        match self.candidates.get_mut(id) {
            Some(d) => d.active = true,
            None => {
                self.assumed.insert(id.to_string());
            }
        }
    }

    /// What this plan decided about a user (nothing, for a user it does not plan).
    fn decided(&self, id: &str) -> Decided {
        decided(&self.candidates, &self.assumed, id)
    }

    /// Records a decision about a candidate (only candidates are planned into HERE).
    fn decide(&mut self, id: &str, f: impl FnOnce(&mut Decided)) {
        if let Some(d) = self.candidates.get_mut(id) {
            f(d);
        }
    }

    /// Why a user is out of scope, or `None` when in scope. Reasons are written only for
    /// users HERE has active (the others need none), so most users cost no allocation.
    fn out_of_scope<P: UserProps>(
        &self,
        id: &str,
        mirror: Option<(&P, bool)>,
    ) -> Option<OutOfScope> {
        let Some((props, soft_deleted)) = mirror else {
            return Some(OutOfScope::Deleted);
        };
        if soft_deleted {
            return Some(OutOfScope::SoftDeleted);
        }
        if !self.candidates.contains(id) {
            return Some(OutOfScope::NotAssigned);
        }
        filtered(&self.filter, props).then_some(OutOfScope::Filtered)
    }

    /// Records a row that cannot be provisioned, among the others in row order.
    fn skip(&mut self, row: usize, id: &str, reason: String) {
        let at = self.skipped_rows.partition_point(|&r| r <= row);
        self.skipped_rows.insert(at, row);
        let skipped = SkippedRow {
            entra_id: id.to_string(),
            kind: "user".into(),
            reason,
        };
        self.out.skipped.insert(at, skipped);
    }

    fn hold(&mut self, id: &str) -> bool {
        let held = self.held.contains(id);
        self.out.held += held as usize;
        held
    }

    /// Settles a user from their key alone when nothing about them can have changed: not
    /// wanted in HERE and not active there, or unchanged since HERE acknowledged them (same
    /// fingerprint of their properties, the mapping and the scope filter), still in scope,
    /// active and not in escrow. `false`: plan them from their row ([`Planner::user_row`]).
    pub fn settled(&mut self, key: &UserKey<'_>) -> bool {
        let pushed_active = key.pushed.is_some_and(|p| p.active);
        if !pushed_active && !self.candidates.contains(key.id) {
            return true;
        }
        let (Some(mirror), Some(have)) = (key.mirror, key.pushed) else {
            return false;
        };
        let source = mirror.props_hash.map(|h| source_of(h, self.fingerprint));
        let unchanged = !mirror.soft_deleted
            && have.active
            && have.source_hash.is_some()
            && have.source_hash == source
            && !self.held.contains(key.id);
        let candidate = match unchanged {
            true => self.candidates.get_mut(key.id),
            false => None,
        };
        let Some(decided) = candidate else {
            return false;
        };
        decided.active = true;
        self.refer_manager(key.id, have.user_name, mirror.manager, have.manager);
        true
    }

    /// Keeps an active user's manager reference (wanted by Entra, pushed to HERE) for
    /// [`Planner::finish`] to decide once every user is known.
    fn refer_manager(
        &mut self,
        id: &str,
        user_name: &str,
        wanted: Option<&str>,
        pushed: Option<&str>,
    ) {
        if self.mapping.manager && (wanted.is_some() || pushed.is_some()) {
            self.managers.push(ManagerRef {
                entra_id: id.to_string(),
                user_name: user_name.to_string(),
                wanted: wanted.map(str::to_string),
                pushed: pushed.map(str::to_string),
            });
        }
    }

    /// Plans one user as the state stores it (taken, so a new user's text moves to the
    /// thread that works it out); a settled user ([`Planner::settled`]) needs
    /// nothing but bookkeeping: no parsing, no mapping.
    pub fn user_row(&mut self, row: UserRow) {
        self.rows += 1;
        if row.pushed.is_none() {
            return self.fresh_row(row);
        }
        let props_hash = row_hash(&row);
        let key = UserKey {
            id: &row.id,
            mirror: row.props.as_deref().map(|text| MirrorKey {
                soft_deleted: row.soft_deleted,
                props_hash,
                // only a pushed user can be settled with a manager reference
                manager: row.pushed.as_ref().and_then(|_| manager_in(text)),
            }),
            pushed: row.pushed.as_ref().map(PushedRow::key),
        };
        if self.settled(&key) {
            return;
        }
        let source = props_hash.map(|h| source_of(h, self.fingerprint));
        let pushed = row.pushed.as_ref().map(PushedRow::snap_user);
        let before = self.out.ops.len();
        self.source = source;
        match row.props.as_deref().map(props::RowProps::parse) {
            Some(Some(props)) => {
                self.plan_user(&row.id, Some((&props, row.soft_deleted)), pushed.as_ref())
            }
            _ => self.user(&row.id, row.mirror().as_ref(), pushed.as_ref()),
        }
        self.source = None;
        let remember = match (source, &row.pushed) {
            (Some(hash), Some(have)) => have.source_hash != Some(hash) && have.active,
            _ => false,
        };
        let settled = self.out.ops.len() == before
            && self.decided(&row.id).active
            && !self.held.contains(&row.id);
        if let (true, true, Some(hash)) = (remember, settled, source) {
            self.out.sources.push((row.id.clone(), hash));
        }
    }

    /// A user HERE does not have: only a candidate Entra has (not soft-deleted) can come
    /// to anything, and is worked out on the pipeline.
    fn fresh_row(&mut self, row: UserRow) {
        let Some(slot) = self.candidates.slot(&row.id).filter(|_| !row.soft_deleted) else {
            return;
        };
        let (Some(props_hash), Some(props)) = (row_hash(&row), row.props) else {
            return;
        };
        let context = || fresh::Context {
            mapping: self.mapping.clone(),
            filter: self.filter.clone(),
            fingerprint: self.fingerprint,
        };
        let pipeline = self
            .pipeline
            .get_or_insert_with(|| Pipeline::new(context()));
        let done = pipeline.push(FreshRow {
            seq: self.rows,
            slot,
            props_hash,
            id: row.id,
            props,
        });
        self.apply(done);
    }

    /// Plans the candidates the pipeline worked out, in row order.
    fn apply(&mut self, done: Vec<Done>) {
        for (row, fresh, source) in done {
            match fresh {
                Fresh::Filtered => {}
                Fresh::Bad(reason) => self.skip(row.seq, &row.id, reason),
                Fresh::New(new) => {
                    if self.place(
                        &row.id,
                        Some(row.slot),
                        new.active,
                        &new.user_name,
                        new.manager.as_ref(),
                        None,
                    ) {
                        self.out.ops.extend(new.into_op(row.id, Some(source)));
                    }
                }
            }
        }
    }

    /// Records what the plan wants for an in-scope user: whether active, the manager
    /// reference. `false` when the user waits in escrow (no operation, then).
    /// `slot`: the user's candidate slot, when known.
    fn place(
        &mut self,
        id: &str,
        slot: Option<u32>,
        active: bool,
        user_name: &str,
        manager: Option<&String>,
        pushed: Option<&SnapUser>,
    ) -> bool {
        match (active, slot) {
            (true, Some(slot)) => self.candidates.at(slot).active = true,
            (true, None) => self.decide(id, |d| d.active = true),
            (false, _) => {}
        }
        if self.hold(id) {
            return false;
        }
        if active {
            let pushed_manager = pushed.and_then(|h| h.manager.as_deref());
            self.refer_manager(id, user_name, manager.map(String::as_str), pushed_manager);
        }
        true
    }

    /// Plans one user from what Entra says (`mirror`) and what HERE has (`pushed`).
    pub fn user(&mut self, id: &str, mirror: Option<&MirrorUser>, pushed: Option<&SnapUser>) {
        self.plan_user(id, mirror.map(|u| (&u.props, u.soft_deleted)), pushed);
    }

    /// [`Planner::user`] over either kind of properties, with the soft-delete flag.
    fn plan_user<P: UserProps>(
        &mut self,
        id: &str,
        mirror: Option<(&P, bool)>,
        pushed: Option<&SnapUser>,
    ) {
        let why = self.out_of_scope(id, mirror);
        let (Some((user, _)), None) = (mirror, why) else {
            if let Some(have) = pushed.filter(|h| h.active) {
                if !self.hold(id) {
                    let props = mirror.map(|(p, _)| p.map());
                    let reason = why.map(|w| w.text(&self.filter, props.as_deref()));
                    let op = deactivate(id, have, reason.unwrap_or_default());
                    self.out.ops.push(op);
                }
            }
            return;
        };
        let want = match desired(&self.user_mapping, id, user) {
            Ok(want) => want,
            Err(reason) => {
                self.skip(self.rows, id, reason);
                if pushed.is_some_and(|h| h.active) {
                    self.decide(id, |d| d.protected = true);
                }
                return;
            }
        };
        let (active, manager) = (want.active, want.manager.as_ref());
        if self.place(id, None, active, &want.user_name, manager, pushed) {
            let op = user_op(id, want, pushed, self.mapping, self.source);
            self.out.ops.extend(op);
        }
    }

    /// Completes the plan: manager references, groups and memberships, the order.
    pub fn finish(mut self) -> Plan {
        if let Some(pipeline) = self.pipeline.take() {
            let done = pipeline.finish();
            self.apply(done);
        }
        for m in std::mem::take(&mut self.managers) {
            let wanted = m.wanted.filter(|w| self.decided(w).active);
            let kept = m.pushed.as_ref().is_some_and(|p| self.decided(p).protected);
            if wanted != m.pushed && !kept {
                self.out.ops.push(Op::SetManager {
                    entra_id: m.entra_id,
                    user_name: m.user_name,
                    manager: wanted,
                });
            }
        }
        groups::plan_groups(&mut self);
        self.out.ops.sort_by(|a, b| {
            (a.stage(), a.object_name(), a.entra_id()).cmp(&(
                b.stage(),
                b.object_name(),
                b.entra_id(),
            ))
        });
        self.out
    }
}

/// What a plan decided about a user, from its candidates and the users assumed active.
fn decided(candidates: &Candidates<'_>, assumed: &FxHashSet<String>, id: &str) -> Decided {
    let mut d = candidates.get(id);
    d.active |= !assumed.is_empty() && assumed.contains(id);
    d
}

/// The fingerprint of a user's properties (`props_hash`) under everything else that shapes
/// their attributes (`context`: the mapping and the filter).
fn source_of(props_hash: i64, context: u64) -> i64 {
    props_hash ^ context.rotate_left(1) as i64
}

/// The fingerprint of a row's properties: the one stored with them, else computed.
fn row_hash(row: &UserRow) -> Option<i64> {
    let text = row.props.as_deref()?;
    Some(row.props_hash.unwrap_or_else(|| fingerprint(text) as i64))
}

/// The manager id in stored properties, without parsing them: they are compact JSON that
/// serde_json wrote, where `"manager":"` can only be the key (quotes in values are escaped).
fn manager_in(props: &str) -> Option<&str> {
    const KEY: &str = "\"manager\":\"";
    // `contains` rejects most users faster than `find` (a vectorised search)
    if !props.contains(KEY) {
        return None;
    }
    let start = props.find(KEY)? + KEY.len();
    let len = props[start..].find('"')?;
    Some(&props[start..start + len])
}

/// Plans from whole in-memory inputs (tests, small tenants); production streams users
/// through [`Planner`] instead.
pub fn plan(
    mirror: &MirrorData,
    snapshot: &Snapshot,
    mapping: &Mapping,
    held: &BTreeSet<String>,
    options: &PlanOptions,
) -> Plan {
    let mut planner = Planner::new(mirror, &snapshot.groups, mapping, held, options);
    let ids: BTreeSet<&String> = mirror.users.keys().chain(snapshot.users.keys()).collect();
    for id in ids {
        planner.user(id, mirror.users.get(id), snapshot.users.get(id));
    }
    planner.finish()
}

/// A user's properties as the planner reads them: through the mapping, or whole for the
/// scoping filter (rare: only with a filter, and for out-of-scope reasons).
trait UserProps: Props {
    fn map(&self) -> Cow<'_, serde_json::Map<String, Value>>;
}

impl UserProps for serde_json::Map<String, Value> {
    fn map(&self) -> Cow<'_, serde_json::Map<String, Value>> {
        Cow::Borrowed(self)
    }
}

impl UserProps for props::RowProps<'_> {
    fn map(&self) -> Cow<'_, serde_json::Map<String, Value>> {
        Cow::Owned(self.to_map())
    }
}

/// Whether the scoping filter leaves a user out.
fn filtered(filter: &filter::ScopeFilter, props: &impl UserProps) -> bool {
    !filter.is_empty() && !filter.matches(&props.map())
}

/// Why a user left scope (see [`Planner::out_of_scope`]).
#[derive(Debug, Clone, Copy)]
enum OutOfScope {
    Deleted,
    SoftDeleted,
    NotAssigned,
    Filtered,
}

impl OutOfScope {
    fn text(
        self,
        filter: &filter::ScopeFilter,
        props: Option<&serde_json::Map<String, Value>>,
    ) -> String {
        match self {
            OutOfScope::Deleted => "deleted in Entra".into(),
            OutOfScope::SoftDeleted => "deleted in Entra (soft delete, restorable)".into(),
            OutOfScope::NotAssigned => {
                "no longer assigned to the app (directly or through an assigned group)".into()
            }
            OutOfScope::Filtered => props
                .and_then(|p| filter.check(p).err())
                .unwrap_or_else(|| "filtered out by the scope filter".into()),
        }
    }
}

/// Attribute differences. `diff` compares every path; the planner compares only the paths
/// the mapping manages (see [`managed`]).
pub fn diff(desired: &Attrs, pushed: &Attrs) -> Vec<Change> {
    let paths: BTreeSet<&String> = desired.keys().chain(pushed.keys()).collect();
    paths
        .into_iter()
        .filter_map(|p| {
            let (new, old) = (desired.get(p), pushed.get(p));
            (new != old).then(|| Change {
                path: p.clone(),
                old: old.cloned(),
                new: new.cloned(),
            })
        })
        .collect()
}

/// The pushed attributes on the paths the mapping still manages. An attribute switched off
/// in the mapping is no longer managed: it is left as it is in HERE, not removed (as Entra
/// does when a mapping is deleted); only an attribute whose *source* became empty is removed.
fn managed<'a>(pushed: &Attrs, paths: impl IntoIterator<Item = &'a str>) -> Attrs {
    paths
        .into_iter()
        .filter_map(|p| pushed.get_key_value(p))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub use scope::{group_users, scope_candidates, users_in_scope};

#[cfg(test)]
mod tests;
