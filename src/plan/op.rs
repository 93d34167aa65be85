//! The operations a plan is made of, in the stages the push runs them.

use serde_json::Value;

use crate::mapping::{AttrText, Attrs};

/// One attribute difference.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// One operation against HERE. Members are Entra ids; SCIM ids are resolved at push time,
/// after the users they name exist.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `attrs` are the user's attributes as canonical JSON (compact: a plan may hold
    /// one of these per user of a large tenant).
    CreateUser {
        entra_id: String,
        user_name: String,
        attrs: AttrText,
        /// Fingerprint of the Entra properties `attrs` came from (recorded on success).
        source: Option<i64>,
    },
    /// Attribute changes; `reactivate` when the user comes back (active false → true).
    UpdateUser {
        entra_id: String,
        scim_id: String,
        user_name: String,
        changes: Vec<Change>,
        attrs: AttrText,
        reactivate: bool,
        /// Fingerprint of the Entra properties `attrs` came from (recorded on success).
        source: Option<i64>,
    },
    /// Sets or clears the manager reference (after both users exist).
    SetManager {
        entra_id: String,
        user_name: String,
        manager: Option<String>,
    },
    /// `reason` says why, for the log and `history` (unassigned, disabled, filtered out…).
    DeactivateUser {
        entra_id: String,
        scim_id: String,
        user_name: String,
        attrs: AttrText,
        reason: String,
    },
    CreateGroup {
        entra_id: String,
        display_name: String,
        attrs: Attrs,
    },
    UpdateGroup {
        entra_id: String,
        scim_id: String,
        display_name: String,
        changes: Vec<Change>,
        attrs: Attrs,
    },
    AddMembers {
        group: String,
        display_name: String,
        users: Vec<String>,
    },
    RemoveMembers {
        group: String,
        display_name: String,
        users: Vec<String>,
    },
    DeleteGroup {
        entra_id: String,
        scim_id: String,
        display_name: String,
    },
}

/// The push stages, in the order that can't break (architecture invariant 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Users,
    Managers,
    Groups,
    MemberAdds,
    MemberRemovals,
    GroupDeletions,
    Deactivations,
}

impl Op {
    /// Which stage this operation runs in.
    pub fn stage(&self) -> Stage {
        match self {
            Op::CreateUser { .. } | Op::UpdateUser { .. } => Stage::Users,
            Op::SetManager { .. } => Stage::Managers,
            Op::CreateGroup { .. } | Op::UpdateGroup { .. } => Stage::Groups,
            Op::AddMembers { .. } => Stage::MemberAdds,
            Op::RemoveMembers { .. } => Stage::MemberRemovals,
            Op::DeleteGroup { .. } => Stage::GroupDeletions,
            Op::DeactivateUser { .. } => Stage::Deactivations,
        }
    }

    /// The log name of the operation (`op=` field).
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateUser { .. } => "create_user",
            Op::UpdateUser {
                reactivate: true, ..
            } => "reactivate_user",
            Op::UpdateUser { .. } => "update_user",
            Op::SetManager { .. } => "set_manager",
            Op::DeactivateUser { .. } => "deactivate_user",
            Op::CreateGroup { .. } => "create_group",
            Op::UpdateGroup { .. } => "update_group",
            Op::AddMembers { .. } => "add_members",
            Op::RemoveMembers { .. } => "remove_members",
            Op::DeleteGroup { .. } => "delete_group",
        }
    }

    /// The Entra id of the object the operation changes.
    pub fn entra_id(&self) -> &str {
        match self {
            Op::CreateUser { entra_id, .. }
            | Op::UpdateUser { entra_id, .. }
            | Op::SetManager { entra_id, .. }
            | Op::DeactivateUser { entra_id, .. }
            | Op::CreateGroup { entra_id, .. }
            | Op::UpdateGroup { entra_id, .. }
            | Op::DeleteGroup { entra_id, .. } => entra_id,
            Op::AddMembers { group, .. } | Op::RemoveMembers { group, .. } => group,
        }
    }

    /// The userName or group displayName operators know the object by.
    pub fn object_name(&self) -> &str {
        match self {
            Op::CreateUser { user_name, .. }
            | Op::UpdateUser { user_name, .. }
            | Op::SetManager { user_name, .. }
            | Op::DeactivateUser { user_name, .. } => user_name,
            Op::CreateGroup { display_name, .. }
            | Op::UpdateGroup { display_name, .. }
            | Op::AddMembers { display_name, .. }
            | Op::RemoveMembers { display_name, .. }
            | Op::DeleteGroup { display_name, .. } => display_name,
        }
    }

    /// `user` or `group`.
    pub fn kind(&self) -> &'static str {
        match self.stage() {
            Stage::Users | Stage::Managers | Stage::Deactivations => "user",
            _ => "group",
        }
    }
}
