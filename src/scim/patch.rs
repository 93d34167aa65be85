//! PATCH bodies (RFC 7644 §3.5.2): minimal attribute updates and membership changes, in
//! the RFC's form or in the form Entra's provisioning client sends by default.

use serde::Deserialize;
use serde_json::{json, Value};

use super::path::ScimPath;
use crate::plan::Change;

/// The PatchOp message schema.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Which dialect of PATCH the target expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchStyle {
    /// RFC 7644: lowercase ops, boolean `active`, member removal by path filter.
    #[default]
    Rfc7644,
    /// Entra's default client: `Add`/`Replace`/`Remove`, `"active": "False"`.
    Entra,
}

impl PatchStyle {
    fn op(self, name: &str) -> String {
        match self {
            PatchStyle::Rfc7644 => name.to_string(),
            PatchStyle::Entra => {
                let mut c = name.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            }
        }
    }

    fn value(self, path: &str, v: &Value) -> Value {
        match (self, path, v) {
            (PatchStyle::Entra, "active", Value::Bool(b)) => {
                Value::String(if *b { "True" } else { "False" }.into())
            }
            _ => v.clone(),
        }
    }
}

/// One PATCH operation per changed attribute: `add` when it was absent (a `replace`
/// through a filter that matches nothing is an error on strict servers), `replace` when
/// it changed, `remove` when its source became empty.
pub fn attribute_ops(changes: &[Change], style: PatchStyle) -> Vec<Value> {
    changes
        .iter()
        .map(|c| match (&c.old, &c.new) {
            (_, None) => {
                let path = ScimPath::parse(&c.path)
                    .map(|p| p.removal_path(&c.path))
                    .unwrap_or_else(|_| c.path.clone());
                json!({"op": style.op("remove"), "path": path})
            }
            (None, Some(v)) => {
                json!({"op": style.op("add"), "path": c.path, "value": style.value(&c.path, v)})
            }
            (Some(_), Some(v)) => {
                json!({"op": style.op("replace"), "path": c.path, "value": style.value(&c.path, v)})
            }
        })
        .collect()
}

/// Sets or clears the enterprise `manager` reference.
pub fn manager_op(manager_scim_id: Option<&str>, style: PatchStyle) -> Value {
    match manager_scim_id {
        Some(id) => {
            json!({"op": style.op("replace"), "path": crate::mapping::MANAGER_PATH, "value": {"value": id}})
        }
        None => json!({"op": style.op("remove"), "path": crate::mapping::MANAGER_PATH}),
    }
}

/// Adds members (SCIM ids) in one operation.
pub fn add_members_op(ids: &[String], style: PatchStyle) -> Value {
    let members: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    json!({"op": style.op("add"), "path": "members", "value": members})
}

/// Removes members: one `members[value eq "id"]` operation each (strict servers refuse a
/// value list); Entra's dialect uses the value list.
pub fn remove_members_ops(ids: &[String], style: PatchStyle) -> Vec<Value> {
    match style {
        PatchStyle::Rfc7644 => ids
            .iter()
            .map(|id| {
                let literal = serde_json::to_string(id).unwrap_or_default();
                json!({"op": "remove", "path": format!("members[value eq {literal}]")})
            })
            .collect(),
        PatchStyle::Entra => {
            let members: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
            vec![json!({"op": "Remove", "path": "members", "value": members})]
        }
    }
}

/// The PatchOp message around some operations.
pub fn body(ops: Vec<Value>) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": ops})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, old: Option<Value>, new: Option<Value>) -> Change {
        Change {
            path: path.into(),
            old,
            new,
        }
    }

    #[test]
    fn add_replace_remove_by_previous_state() {
        let ops = attribute_ops(
            &[
                change("title", None, Some(json!("Eng"))),
                change("displayName", Some(json!("A")), Some(json!("B"))),
                change("emails[type eq \"work\"].value", Some(json!("a@x")), None),
            ],
            PatchStyle::Rfc7644,
        );
        assert_eq!(
            ops[0],
            json!({"op": "add", "path": "title", "value": "Eng"})
        );
        assert_eq!(
            ops[1],
            json!({"op": "replace", "path": "displayName", "value": "B"})
        );
        assert_eq!(
            ops[2],
            json!({"op": "remove", "path": "emails[type eq \"work\"]"})
        );
    }

    #[test]
    fn entra_dialect_capitalises_and_stringifies_active() {
        let ops = attribute_ops(
            &[change("active", Some(json!(true)), Some(json!(false)))],
            PatchStyle::Entra,
        );
        assert_eq!(
            ops[0],
            json!({"op": "Replace", "path": "active", "value": "False"})
        );
        let rfc = attribute_ops(
            &[change("active", Some(json!(true)), Some(json!(false)))],
            PatchStyle::Rfc7644,
        );
        assert_eq!(rfc[0]["value"], json!(false));
    }

    #[test]
    fn member_removal_uses_the_path_filter() {
        let ops = remove_members_ops(&["a\"b".into(), "c".into()], PatchStyle::Rfc7644);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0]["path"], json!("members[value eq \"a\\\"b\"]"));
        assert!(ops[0].get("value").is_none());
        let add = add_members_op(&["x".into()], PatchStyle::Rfc7644);
        assert_eq!(add["value"], json!([{"value": "x"}]));
    }
}
