//! SCIM PATCH operations (RFC 7644 §3.5.2) applied to a copy of a resource: paths `attr`,
//! `a.b`, `attr[filter]`, `attr[filter].sub`, URN-qualified (enterprise extension), and path-less
//! add/replace with an object value (dotted keys, URN keys, nested extension object).

use serde_json::{Map, Value};

use crate::sim::scim::{ScimError, ENT_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
use crate::sim::scim_filter::{self, Filter};

/// Multi-valued attributes (add appends, remove-with-value removes listed values).
const MULTI: &[&str] = &[
    "emails",
    "phonenumbers",
    "addresses",
    "members",
    "groups",
    "roles",
    "entitlements",
    "photos",
    "ims",
    "x509certificates",
];

/// PATCH operation kinds (`op` is case-insensitive on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Add,
    Replace,
    Remove,
}

impl Kind {
    /// Parses `op` case-insensitively (Entra sends `Add`/`Replace`/`Remove`).
    pub(crate) fn parse(op: &str) -> Option<Kind> {
        match op.to_ascii_lowercase().as_str() {
            "add" => Some(Kind::Add),
            "replace" => Some(Kind::Replace),
            "remove" => Some(Kind::Remove),
            _ => None,
        }
    }
}

fn err(scim_type: &'static str, detail: String) -> ScimError {
    ScimError::new(400, Some(scim_type), detail)
}

/// Existing key matching `name` case-insensitively, or `name` itself.
fn key_of(m: &Map<String, Value>, name: &str) -> String {
    m.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_$-".contains(c))
}

/// A parsed path `attr[filter].sub` (filter and sub optional).
struct Path<'a> {
    attr: &'a str,
    filter: Option<&'a str>,
    sub: Option<&'a str>,
}

fn parse_path(p: &str) -> Result<Path<'_>, ScimError> {
    let bad = || err("invalidPath", format!("Invalid path '{p}'."));
    let (attr, filter, sub) = match p.find('[') {
        Some(i) => {
            let close = p.rfind(']').filter(|c| *c > i).ok_or_else(bad)?;
            let after = &p[close + 1..];
            let sub = match after {
                "" => None,
                s => Some(s.strip_prefix('.').ok_or_else(bad)?),
            };
            (&p[..i], Some(&p[i + 1..close]), sub)
        }
        None => match p.split_once('.') {
            Some((a, s)) => (a, None, Some(s)),
            None => (p, None, None),
        },
    };
    if !valid_name(attr) || sub.is_some_and(|s| !valid_name(s)) {
        return Err(bad());
    }
    Ok(Path { attr, filter, sub })
}

/// Applies one operation to `res` (a copy; the caller discards it on error).
pub(crate) fn apply(
    res: &mut Map<String, Value>,
    kind: Kind,
    path: Option<&str>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let path = path.map(str::trim).filter(|p| !p.is_empty());
    let Some(path) = path else {
        if kind == Kind::Remove {
            return Err(err("noTarget", "'remove' requires a path.".into()));
        }
        let Some(Value::Object(obj)) = value else {
            return Err(err(
                "invalidSyntax",
                "A path-less add/replace needs an object value.".into(),
            ));
        };
        for (k, v) in obj {
            let is_ent = k.eq_ignore_ascii_case(ENT_SCHEMA);
            let is_core =
                k.eq_ignore_ascii_case(USER_SCHEMA) || k.eq_ignore_ascii_case(GROUP_SCHEMA);
            match v {
                Value::Object(inner) if is_ent || is_core => {
                    for (k2, v2) in inner {
                        let p = if is_ent {
                            format!("{ENT_SCHEMA}:{k2}")
                        } else {
                            k2.clone()
                        };
                        apply(res, kind, Some(&p), Some(v2))?;
                    }
                }
                _ if k.eq_ignore_ascii_case("schemas") => {}
                _ => apply(res, kind, Some(k), Some(v))?,
            }
        }
        return Ok(());
    };
    if kind != Kind::Remove && value.is_none() {
        return Err(err(
            "invalidSyntax",
            format!("Operation on '{path}' requires a value."),
        ));
    }
    // add/replace with null means "unassign" (RFC 7643 §2.5).
    let (kind, value) = match value {
        Some(Value::Null) => (Kind::Remove, None),
        v => (kind, v),
    };
    if path.eq_ignore_ascii_case(ENT_SCHEMA) {
        if kind == Kind::Remove {
            let k = key_of(res, ENT_SCHEMA);
            res.remove(&k);
            return Ok(());
        }
        let Some(Value::Object(inner)) = value else {
            return Err(err(
                "invalidValue",
                "The extension value must be an object.".into(),
            ));
        };
        for (k2, v2) in inner {
            apply(res, kind, Some(&format!("{ENT_SCHEMA}:{k2}")), Some(v2))?;
        }
        return Ok(());
    }
    let (ent, rest) = scim_filter::strip_urn(path);
    if !ent && rest.to_ascii_lowercase().starts_with("urn:") {
        return Err(err(
            "invalidPath",
            format!("Unknown schema in path '{path}'."),
        ));
    }
    let p = parse_path(rest)?;
    if p.attr.eq_ignore_ascii_case("id") || p.attr.eq_ignore_ascii_case("meta") {
        return Err(err(
            "mutability",
            format!("Attribute '{}' is readOnly.", p.attr),
        ));
    }
    if !ent {
        return apply_at(res, kind, &p, value);
    }
    let ek = key_of(res, ENT_SCHEMA);
    let mut ext = match res.remove(&ek) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let r = apply_at(&mut ext, kind, &p, value);
    if !ext.is_empty() {
        res.insert(ek, Value::Object(ext));
        add_schema(res);
    }
    r
}

fn add_schema(res: &mut Map<String, Value>) {
    let k = key_of(res, "schemas");
    let entry = res.entry(k).or_insert_with(|| Value::Array(vec![]));
    if let Value::Array(a) = entry {
        if !a.iter().any(|s| {
            s.as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(ENT_SCHEMA))
        }) {
            a.push(Value::String(ENT_SCHEMA.into()));
        }
    }
}

fn apply_at(
    cont: &mut Map<String, Value>,
    kind: Kind,
    p: &Path<'_>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let key = key_of(cont, p.attr);
    if let Some(ftext) = p.filter {
        return apply_filtered(cont, &key, kind, ftext, p, value);
    }
    if let Some(sub) = p.sub {
        match (kind, cont.get_mut(&key)) {
            (Kind::Remove, Some(Value::Object(c))) => {
                let sk = key_of(c, sub);
                c.remove(&sk);
                if c.is_empty() {
                    cont.remove(&key);
                }
            }
            (Kind::Remove, Some(Value::Array(list))) => {
                for e in list.iter_mut().filter_map(Value::as_object_mut) {
                    let sk = key_of(e, sub);
                    e.remove(&sk);
                }
            }
            (Kind::Remove, _) => {}
            (_, Some(Value::Array(list))) => {
                for e in list.iter_mut().filter_map(Value::as_object_mut) {
                    let sk = key_of(e, sub);
                    e.insert(sk, value.cloned().unwrap_or(Value::Null));
                }
            }
            (_, Some(Value::Object(c))) => {
                let sk = key_of(c, sub);
                c.insert(sk, value.cloned().unwrap_or(Value::Null));
            }
            (_, _) => {
                let mut c = Map::new();
                c.insert(sub.to_string(), value.cloned().unwrap_or(Value::Null));
                cont.insert(key, Value::Object(c));
            }
        }
        return Ok(());
    }
    let multi = MULTI.contains(&p.attr.to_ascii_lowercase().as_str());
    if kind == Kind::Remove {
        match (multi, value, cont.get_mut(&key)) {
            (true, Some(Value::Array(drop)), Some(Value::Array(list))) => {
                let gone: Vec<&Value> = drop.iter().filter_map(|d| d.get("value")).collect();
                list.retain(|e| !e.get("value").is_some_and(|v| gone.contains(&v)));
            }
            _ => {
                cont.remove(&key);
            }
        }
        return Ok(());
    }
    let Some(value) = value else {
        return Ok(());
    };
    if multi {
        let vals: Vec<Value> = match value {
            Value::Array(a) => a.clone(),
            v => vec![v.clone()],
        };
        match cont.get_mut(&key) {
            Some(Value::Array(list)) if kind == Kind::Add => {
                for v in vals {
                    let dup = list.iter().any(|e| {
                        e == &v
                            || (p.attr.eq_ignore_ascii_case("members")
                                && e.get("value") == v.get("value"))
                    });
                    if !dup {
                        list.push(v);
                    }
                }
            }
            _ => {
                cont.insert(key, Value::Array(vals));
            }
        }
        return Ok(());
    }
    match (cont.get_mut(&key), value) {
        (Some(Value::Object(old)), Value::Object(new)) => {
            for (k, v) in new {
                let sk = key_of(old, k);
                old.insert(sk, v.clone());
            }
        }
        _ => {
            cont.insert(key, value.clone());
        }
    }
    Ok(())
}

fn apply_filtered(
    cont: &mut Map<String, Value>,
    key: &str,
    kind: Kind,
    ftext: &str,
    p: &Path<'_>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let filter: Filter = scim_filter::parse(ftext)
        .map_err(|_| err("invalidPath", format!("Invalid filter in path [{ftext}].")))?;
    let prefix = p.attr.to_ascii_lowercase();
    let mut list = match cont.remove(key) {
        Some(Value::Array(a)) => a,
        _ => vec![],
    };
    let hit = |e: &Value| e.is_object() && filter.eval(e, &prefix);
    let result = (|| {
        if kind == Kind::Remove {
            match p.sub {
                Some(sub) => {
                    for e in list
                        .iter_mut()
                        .filter(|e| hit(e))
                        .filter_map(Value::as_object_mut)
                    {
                        let sk = key_of(e, sub);
                        e.remove(&sk);
                    }
                }
                None => list.retain(|e| !hit(e)),
            }
            return Ok(());
        }
        if !list.iter().any(hit) {
            if kind == Kind::Replace {
                return Err(err(
                    "noTarget",
                    format!("No value of '{}' matches filter [{ftext}].", p.attr),
                ));
            }
            let Some((a, v)) = filter.simple_eq() else {
                return Err(err(
                    "noTarget",
                    format!("Cannot add through filter [{ftext}]."),
                ));
            };
            let mut new = Map::new();
            new.insert(a.to_string(), v.clone());
            list.push(Value::Object(new));
        }
        for e in list
            .iter_mut()
            .filter(|e| hit(e))
            .filter_map(Value::as_object_mut)
        {
            match (p.sub, value) {
                (Some(sub), Some(v)) => {
                    let sk = key_of(e, sub);
                    e.insert(sk, v.clone());
                }
                (None, Some(Value::Object(obj))) => {
                    for (k, v) in obj {
                        let sk = key_of(e, k);
                        e.insert(sk, v.clone());
                    }
                }
                _ => {
                    return Err(err(
                        "invalidValue",
                        format!("Value for '{}' must be an object.", p.attr),
                    ));
                }
            }
        }
        Ok(())
    })();
    if !list.is_empty() {
        cont.insert(key.to_string(), Value::Array(list));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(res: Value, ops: &[(&str, Option<&str>, Option<Value>)]) -> Result<Value, ScimError> {
        let mut m = res.as_object().cloned().unwrap_or_default();
        for (op, path, v) in ops {
            apply(&mut m, Kind::parse(op).unwrap(), *path, v.as_ref())?;
        }
        Ok(Value::Object(m))
    }

    #[test]
    fn paths_filters_urns_and_pathless_values() {
        let start = json!({"userName": "a", "emails": [{"type": "work", "value": "old@x"}], "name": {"givenName": "A"}});
        let out = run(
            start.clone(),
            &[
                (
                    "Replace",
                    Some(r#"emails[type eq "work"].value"#),
                    Some(json!("new@x")),
                ),
                (
                    "add",
                    Some(r#"phoneNumbers[type eq "mobile"].value"#),
                    Some(json!("+1")),
                ),
                ("replace", Some("name.familyName"), Some(json!("B"))),
                (
                    "Add",
                    Some(&format!("{ENT_SCHEMA}:department")),
                    Some(json!("Ops")),
                ),
                (
                    "replace",
                    None,
                    Some(json!({"displayName": "D", "name.givenName": "Z",
                ENT_SCHEMA: {"employeeNumber": "7"}})),
                ),
            ],
        )
        .unwrap();
        assert_eq!(out["emails"], json!([{"type": "work", "value": "new@x"}]));
        assert_eq!(
            out["phoneNumbers"],
            json!([{"type": "mobile", "value": "+1"}])
        );
        assert_eq!(out["name"], json!({"givenName": "Z", "familyName": "B"}));
        assert_eq!(
            out[ENT_SCHEMA],
            json!({"department": "Ops", "employeeNumber": "7"})
        );
        assert_eq!(out["displayName"], "D");
        assert!(out["schemas"]
            .as_array()
            .unwrap()
            .contains(&json!(ENT_SCHEMA)));
        let e = run(
            start.clone(),
            &[(
                "replace",
                Some(r#"emails[type eq "home"].value"#),
                Some(json!("h")),
            )],
        );
        assert_eq!(e.err().map(|e| e.scim_type), Some(Some("noTarget")));
        let e = run(start.clone(), &[("remove", None, None)]);
        assert_eq!(e.err().map(|e| e.scim_type), Some(Some("noTarget")));
        let e = run(start, &[("replace", Some("id"), Some(json!("x")))]);
        assert_eq!(e.err().map(|e| e.scim_type), Some(Some("mutability")));
    }

    #[test]
    fn members_add_dedupes_and_remove_by_filter_or_list() {
        let g = json!({"displayName": "G", "members": [{"value": "a"}, {"value": "b"}]});
        let out = run(
            g,
            &[
                (
                    "add",
                    Some("members"),
                    Some(json!([{"value": "b"}, {"value": "c"}, {"value": "d"}])),
                ),
                ("remove", Some(r#"members[value eq "a"]"#), None),
                (
                    "Remove",
                    Some("members"),
                    Some(json!([{"$ref": null, "value": "c"}])),
                ),
            ],
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "b"}, {"value": "d"}]));
    }
}
