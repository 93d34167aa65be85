//! One user's desired state and the operation that brings HERE to it.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::filter::ScopeFilter;
use super::props::RowProps;
use super::{diff, filtered, managed, Op, UserProps};
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

    /// What is left once HERE is known not to have the user: the attributes as canonical
    /// text (`active` included) when they are to be created, and no borrowed values.
    pub(super) fn into_new(self) -> NewUser {
        NewUser {
            attrs: self
                .active
                .then(|| AttrText::from_values(&self.values, true)),
            user_name: self.user_name,
            active: self.active,
            manager: self.manager,
        }
    }
}

/// What the planner wants for an in-scope user HERE does not have. Owned: it may be
/// worked out on another thread (see [`super::fresh`]).
pub(super) struct NewUser {
    pub(super) user_name: String,
    pub(super) active: bool,
    pub(super) manager: Option<String>,
    /// The attributes to create the user with; `None` for a disabled user (not created).
    attrs: Option<AttrText>,
}

impl NewUser {
    /// The operation that creates the user, unless disabled.
    pub(super) fn into_op(self, id: impl Into<String>, source: Option<i64>) -> Option<Op> {
        let attrs = self.attrs?;
        Some(Op::CreateUser {
            entra_id: id.into(),
            user_name: self.user_name,
            attrs,
            source,
        })
    }
}

/// What becomes of a candidate HERE does not have, from its stored properties alone
/// (candidacy is the planner's to check): pure, so it runs on another thread.
pub(super) enum Fresh {
    /// Left out by the scoping filter.
    Filtered,
    /// Why the record cannot be provisioned.
    Bad(String),
    New(NewUser),
}

impl Fresh {
    /// Works out a candidate from the text the state stores (text that is not a JSON
    /// object reads as no properties, as [`crate::state::UserRow::mirror`] reads it).
    pub(super) fn of(
        mapping: &SortedMapping<'_>,
        filter: &ScopeFilter,
        id: &str,
        text: &str,
    ) -> Fresh {
        match RowProps::parse(text) {
            Some(props) => Fresh::from_props(mapping, filter, id, &props),
            None => Fresh::from_props(mapping, filter, id, &Map::new()),
        }
    }

    fn from_props(
        mapping: &SortedMapping<'_>,
        filter: &ScopeFilter,
        id: &str,
        props: &impl UserProps,
    ) -> Fresh {
        if filtered(filter, props) {
            return Fresh::Filtered;
        }
        match desired(mapping, id, props) {
            Ok(want) => Fresh::New(want.into_new()),
            Err(reason) => Fresh::Bad(reason),
        }
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
        return want.into_new().into_op(id, source);
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
