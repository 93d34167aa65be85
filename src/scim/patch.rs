//! PATCH bodies (RFC 7644 §3.5.2): minimal attribute updates and membership changes, in
//! the RFC's form or in the form Entra's provisioning client sends by default.

use serde::Deserialize;
use serde_json::{json, Value};

use super::path::ScimPath;
use crate::mapping::Attrs;
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
/// it changed, `remove` when its source became empty. `desired` is the resource's full
/// mapped state after the change: a typed element (`emails[type eq "work"]`) none of whose
/// mapped sub-attributes remains is removed as a whole, in one operation, so no
/// `{type: "work"}` husk is left behind; while one remains, only the emptied ones go.
pub fn attribute_ops(changes: &[Change], desired: &Attrs, style: PatchStyle) -> Vec<Value> {
    let mut ops = Vec::new();
    let mut removed_elements: Vec<String> = Vec::new();
    for c in changes {
        match (&c.old, &c.new) {
            (_, None) => {
                let path = removal_path(&c.path, desired);
                if path != c.path {
                    if removed_elements.contains(&path) {
                        continue;
                    }
                    removed_elements.push(path.clone());
                }
                ops.push(json!({"op": style.op("remove"), "path": path}));
            }
            (None, Some(v)) => ops.push(
                json!({"op": style.op("add"), "path": c.path, "value": style.value(&c.path, v)}),
            ),
            (Some(_), Some(v)) => ops.push(
                json!({"op": style.op("replace"), "path": c.path, "value": style.value(&c.path, v)}),
            ),
        }
    }
    ops
}

/// The element of a typed path when nothing mapped is left in it, else the path itself.
fn removal_path(path: &str, desired: &Attrs) -> String {
    let Ok(parsed) = ScimPath::parse(path) else {
        return path.to_string();
    };
    let Some(element) = parsed.element_path(path) else {
        return path.to_string();
    };
    let remains = desired
        .keys()
        .filter_map(|k| ScimPath::parse(k).ok())
        .any(|k| k.same_element(&parsed));
    if remains {
        path.to_string()
    } else {
        element
    }
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

    fn attrs(paths: &[&str]) -> Attrs {
        paths.iter().map(|p| (p.to_string(), json!("x"))).collect()
    }

    #[test]
    fn add_replace_remove_by_previous_state() {
        let ops = attribute_ops(
            &[
                change("title", None, Some(json!("Eng"))),
                change("displayName", Some(json!("A")), Some(json!("B"))),
                change("emails[type eq \"work\"].value", Some(json!("a@x")), None),
                change("name.familyName", Some(json!("L")), None),
            ],
            &attrs(&["title", "displayName"]),
            PatchStyle::Rfc7644,
        );
        assert_eq!(
            ops,
            [
                json!({"op": "add", "path": "title", "value": "Eng"}),
                json!({"op": "replace", "path": "displayName", "value": "B"}),
                json!({"op": "remove", "path": "emails[type eq \"work\"]"}),
                json!({"op": "remove", "path": "name.familyName"}),
            ]
        );
    }

    #[test]
    fn a_typed_element_goes_whole_only_when_nothing_mapped_remains_in_it() {
        let city = "addresses[type eq \"work\"].locality";
        let zip = "addresses[type eq \"work\"].postalCode";
        let one = [change(city, Some(json!("Lyon")), None)];
        let kept = attribute_ops(&one, &attrs(&[zip]), PatchStyle::Rfc7644);
        assert_eq!(kept, [json!({"op": "remove", "path": city})]);
        let both = [
            change(city, Some(json!("Lyon")), None),
            change(zip, Some(json!("69001")), None),
        ];
        let home = "addresses[type eq \"home\"].locality";
        let gone = attribute_ops(&both, &attrs(&[home]), PatchStyle::Entra);
        assert_eq!(
            gone,
            [json!({"op": "Remove", "path": "addresses[type eq \"work\"]"})]
        );
        let mail = "emails[type eq \"work\"].value";
        let primary = "emails[type eq \"work\"].primary";
        let ops = attribute_ops(
            &[change(mail, Some(json!("a@x")), None)],
            &attrs(&[primary]),
            PatchStyle::Rfc7644,
        );
        assert_eq!(
            ops,
            [json!({"op": "remove", "path": mail})],
            "a mapped sibling stays"
        );
    }

    #[test]
    fn entra_dialect_capitalises_and_stringifies_active() {
        let ops = attribute_ops(
            &[change("active", Some(json!(true)), Some(json!(false)))],
            &Attrs::new(),
            PatchStyle::Entra,
        );
        assert_eq!(
            ops[0],
            json!({"op": "Replace", "path": "active", "value": "False"})
        );
        let rfc = attribute_ops(
            &[change("active", Some(json!(true)), Some(json!(false)))],
            &Attrs::new(),
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
