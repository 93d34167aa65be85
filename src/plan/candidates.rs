//! The users a plan may provision, with what it decided about each.

use rustc_hash::FxHashMap;

use super::{scope, Decided};
use crate::config::GroupMembers;
use crate::state::MirrorData;

/// Users assigned directly or through an assigned group (existence is checked per user),
/// ids borrowed from the mirror. Each id is hashed to a slot once: a user worked out on
/// another thread comes back with its slot, and recording the decision needs no second
/// lookup in a table of a million ids.
pub(super) struct Candidates<'a> {
    slots: FxHashMap<&'a str, u32>,
    decided: Vec<Decided>,
}

impl<'a> Candidates<'a> {
    /// The candidates of the mirror's assignments (see [`super::scope_candidates`]),
    /// nothing decided yet.
    pub(super) fn of(mirror: &'a MirrorData, members: GroupMembers) -> Candidates<'a> {
        let groups = mirror
            .assigned_groups
            .iter()
            .filter_map(|g| mirror.groups.get(g));
        let most =
            mirror.assigned_users.len() + groups.map(|g| g.user_members.len()).sum::<usize>();
        let mut out = Candidates {
            slots: FxHashMap::default(),
            decided: Vec::with_capacity(most),
        };
        out.slots.reserve(most);
        for id in &mirror.assigned_users {
            out.add(id);
        }
        for gid in &mirror.assigned_groups {
            if let Some(group) = mirror.groups.get(gid) {
                scope::for_each_group_user(mirror, gid, group, members, |id| out.add(id));
            }
        }
        out
    }

    fn add(&mut self, id: &'a str) {
        let next = self.decided.len() as u32;
        if *self.slots.entry(id).or_insert(next) == next {
            self.decided.push(Decided::default());
        }
    }

    /// The user's slot, if a candidate.
    pub(super) fn slot(&self, id: &str) -> Option<u32> {
        self.slots.get(id).copied()
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.slots.contains_key(id)
    }

    /// What the plan decided so far (nothing, for a user that is not a candidate).
    pub(super) fn get(&self, id: &str) -> Decided {
        self.slot(id)
            .map(|s| self.decided[s as usize])
            .unwrap_or_default()
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Decided> {
        let slot = self.slot(id)?;
        Some(&mut self.decided[slot as usize])
    }

    /// The decision in a slot [`Candidates::slot`] gave.
    pub(super) fn at(&mut self, slot: u32) -> &mut Decided {
        &mut self.decided[slot as usize]
    }
}
