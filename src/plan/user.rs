//! One user's desired state and the operation that brings HERE to it.

use std::borrow::Cow;

use serde_json::Value;

use super::{diff, managed, Op};
use crate::mapping::{AttrText, Attrs, Mapping, Props, SortedMapping};
use crate::state::SnapUser;

/// What the planner wants for one in-scope user.
pub(super) struct DesiredUser<'s> {
    pub(super) user_name: String,
    /// Mapped values sorted by path, without `active`.
    values: Vec<(&'s str, Cow<'s, str>)>,
    pub(super) active: bool,
    pub(super) manager: Option<String>,
}

impl DesiredUser<'_> {
    /// The attributes as a map, `active` included (to diff an update).
    fn attrs(&self) -> Attrs {
        let mut attrs: Attrs = self
            .values
            .iter()
            .map(|(path, v)| (path.to_string(), Value::String(v.to_string())))
            .collect();
        attrs.insert("active".into(), Value::Bool(self.active));
        attrs
    }

    /// The attributes as canonical text, `active` included.
    fn text(&self) -> AttrText {
        AttrText::from_values(&self.values, self.active)
    }
}

/// What the mapping makes of one in-scope user, or why their record cannot be provisioned.
pub(super) fn desired<'s>(
    mapping: &SortedMapping<'s>,
    id: &'s str,
    props: &'s impl Props,
) -> Result<DesiredUser<'s>, String> {
    let values = mapping.values(id, props);
    if let Some(reason) = bad_user_record(props, &values) {
        return Err(reason);
    }
    let user_name = values
        .iter()
        .find(|(path, _)| *path == "userName")
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| "the source of userName is empty".to_string())?;
    let active = props.value("accountEnabled").and_then(Value::as_bool) != Some(false);
    Ok(DesiredUser {
        user_name,
        values,
        active,
        manager: props.str("manager").map(str::to_string),
    })
}

pub(super) fn deactivate(id: &str, have: &SnapUser, reason: String) -> Op {
    let mut attrs = have.attrs.clone();
    attrs.insert("active".into(), Value::Bool(false));
    Op::DeactivateUser {
        entra_id: id.to_string(),
        scim_id: have.scim_id.clone(),
        user_name: have.user_name.clone(),
        attrs: AttrText::from_attrs(&attrs),
        reason,
    }
}

pub(super) fn user_op(
    id: &str,
    want: DesiredUser<'_>,
    pushed: Option<&SnapUser>,
    mapping: &Mapping,
    source: Option<i64>,
) -> Option<Op> {
    let Some(have) = pushed else {
        return want.active.then(|| Op::CreateUser {
            entra_id: id.to_string(),
            attrs: want.text(),
            user_name: want.user_name,
            source,
        });
    };
    match (have.active, want.active) {
        (true, false) => Some(deactivate(
            id,
            have,
            "disabled in Entra (accountEnabled = false)".into(),
        )),
        (false, false) => None,
        (was_active, true) => {
            let paths = mapping.user_paths().chain(["active"]);
            let attrs = want.attrs();
            let changes = diff(&attrs, &managed(&have.attrs, paths));
            (!changes.is_empty()).then(|| Op::UpdateUser {
                entra_id: id.to_string(),
                scim_id: have.scim_id.clone(),
                user_name: want.user_name,
                changes,
                attrs: AttrText::from_attrs(&attrs),
                reactivate: !was_active,
                source,
            })
        }
    }
}

/// Why a user's source record cannot be provisioned, if it can't.
fn bad_user_record(props: &impl Props, values: &[(&str, Cow<'_, str>)]) -> Option<String> {
    let upn = props.str("userPrincipalName").unwrap_or("");
    if upn.trim().is_empty() {
        return Some("no userPrincipalName".into());
    }
    if upn.chars().any(char::is_control) || upn.len() > 1024 {
        return Some("userPrincipalName has control characters or is over 1024 bytes".into());
    }
    values.iter().find_map(|(path, text)| {
        // printable ASCII (most values) has no control characters: no need to decode
        let printable = text.bytes().all(|b| (b' '..=b'~').contains(&b));
        (text.len() > 4096 || !printable && text.chars().any(|c| c.is_control() && c != '\n'))
            .then(|| format!("{path} is over 4096 bytes or has control characters"))
    })
}
