//! SCIM attribute paths (RFC 7644 §3.5.2 `attrPath` / `valuePath`) as the mapping uses
//! them, and the conversion between flat attributes and SCIM resources.
//!
//! Supported forms: `userName`, `name.givenName`, `emails[type eq "work"].value`, and
//! URN-qualified extension attributes such as
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`.

use serde_json::{Map, Value};

use crate::mapping::Attrs;

/// A parsed attribute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScimPath {
    /// `attr`, `attr.sub`, or `urn:...:attr[.sub]`.
    Attr {
        schema: Option<String>,
        attr: String,
        sub: Option<String>,
    },
    /// `attr[type eq "value"].sub` — one typed element of a multi-valued attribute.
    Typed {
        attr: String,
        type_value: String,
        sub: String,
    },
}

/// A path the mapping cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed SCIM attribute path {path:?}: {reason}")]
pub struct PathError {
    pub path: String,
    pub reason: &'static str,
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
}

impl ScimPath {
    /// Parses a mapping path.
    pub fn parse(path: &str) -> Result<ScimPath, PathError> {
        let err = |reason| PathError {
            path: path.to_string(),
            reason,
        };
        if let Some(open) = path.find('[') {
            let attr = &path[..open];
            let close = path[open..]
                .find(']')
                .map(|i| open + i)
                .ok_or_else(|| err("missing ']'"))?;
            let filter = &path[open + 1..close];
            let sub = path[close + 1..].strip_prefix('.').ok_or_else(|| {
                err("a filtered path needs a sub-attribute, e.g. emails[type eq \"work\"].value")
            })?;
            let mut words = filter.splitn(3, ' ');
            let (key, op, literal) = (
                words.next().unwrap_or(""),
                words.next().unwrap_or(""),
                words.next().unwrap_or("").trim(),
            );
            if !key.eq_ignore_ascii_case("type") || !op.eq_ignore_ascii_case("eq") {
                return Err(err(
                    "only filters of the form [type eq \"...\"] are supported",
                ));
            }
            let type_value: String = serde_json::from_str(literal)
                .map_err(|_| err("the filter value must be a double-quoted string"))?;
            if !valid_name(attr) || !valid_name(sub) {
                return Err(err("attribute names are letters, digits, '_' and '-'"));
            }
            return Ok(ScimPath::Typed {
                attr: attr.to_string(),
                type_value,
                sub: sub.to_string(),
            });
        }
        let (schema, rest) = if path.to_ascii_lowercase().starts_with("urn:") {
            let cut = path
                .rfind(':')
                .ok_or_else(|| err("missing attribute after the schema URN"))?;
            (Some(path[..cut].to_string()), &path[cut + 1..])
        } else {
            (None, path)
        };
        let mut parts = rest.splitn(2, '.');
        let attr = parts.next().unwrap_or("");
        let sub = parts.next();
        if !valid_name(attr) || sub.is_some_and(|s| !valid_name(s)) {
            return Err(err("attribute names are letters, digits, '_' and '-'"));
        }
        Ok(ScimPath::Attr {
            schema,
            attr: attr.to_string(),
            sub: sub.map(str::to_string),
        })
    }

    /// The typed element this path addresses (`emails[type eq "work"]` for
    /// `emails[type eq "work"].value`), as a path of its own; `None` for plain attributes.
    pub fn element_path(&self, original: &str) -> Option<String> {
        match self {
            ScimPath::Typed { .. } => original.find(']').map(|i| original[..=i].to_string()),
            ScimPath::Attr { .. } => None,
        }
    }

    /// Whether both paths address the same typed element (names and type compared
    /// case-insensitively, as SCIM does).
    pub fn same_element(&self, other: &ScimPath) -> bool {
        match (self, other) {
            (
                ScimPath::Typed {
                    attr, type_value, ..
                },
                ScimPath::Typed {
                    attr: a2,
                    type_value: t2,
                    ..
                },
            ) => attr.eq_ignore_ascii_case(a2) && type_value.eq_ignore_ascii_case(t2),
            _ => false,
        }
    }

    /// The top-level attribute the path writes into: (schema URN, attribute), lower-cased.
    pub fn top_level(&self) -> (Option<String>, String) {
        match self {
            ScimPath::Attr { schema, attr, .. } => (
                schema.as_ref().map(|s| s.to_ascii_lowercase()),
                attr.to_ascii_lowercase(),
            ),
            ScimPath::Typed { attr, .. } => (None, attr.to_ascii_lowercase()),
        }
    }

    /// Whether the path sets a whole top-level attribute (no sub-attribute, no filter).
    pub fn is_whole_attribute(&self) -> bool {
        matches!(self, ScimPath::Attr { sub: None, .. })
    }
}

fn key_of<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a String> {
    obj.keys().find(|k| k.eq_ignore_ascii_case(name))
}

fn child<'a>(obj: &'a mut Map<String, Value>, name: &str) -> &'a mut Value {
    let key = key_of(obj, name)
        .cloned()
        .unwrap_or_else(|| name.to_string());
    obj.entry(key).or_insert(Value::Null)
}

#[allow(clippy::unreachable)] // the value is made an object on the line before the match
fn as_object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// The value at `path` in a SCIM resource (case-insensitive names), if present.
pub fn extract(resource: &Value, path: &str) -> Option<Value> {
    let parsed = ScimPath::parse(path).ok()?;
    let obj = resource.as_object()?;
    let found = match parsed {
        ScimPath::Attr { schema, attr, sub } => {
            let container = match &schema {
                Some(urn) => obj.get(key_of(obj, urn)?)?.as_object()?,
                None => obj,
            };
            let v = container.get(key_of(container, &attr)?)?;
            match sub {
                Some(s) => v.as_object().and_then(|o| o.get(key_of(o, &s)?))?,
                None if attr == "manager" && schema.is_some() => match v {
                    Value::Object(o) => o.get(key_of(o, "value")?)?,
                    other => other,
                },
                None => v,
            }
        }
        ScimPath::Typed {
            attr,
            type_value,
            sub,
        } => {
            let list = obj.get(key_of(obj, &attr)?)?.as_array()?;
            let element = list.iter().filter_map(Value::as_object).find(|e| {
                key_of(e, "type")
                    .and_then(|k| e.get(k))
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case(&type_value))
            })?;
            element.get(key_of(element, &sub)?)?
        }
    };
    (!found.is_null()).then(|| found.clone())
}

/// Writes `value` at `path` into a resource under construction.
fn insert(resource: &mut Map<String, Value>, path: &ScimPath, value: Value) {
    match path {
        ScimPath::Attr { schema, attr, sub } => {
            let container = match schema {
                Some(urn) => as_object(child(resource, urn)),
                None => resource,
            };
            match sub {
                Some(s) => {
                    as_object(child(container, attr)).insert(s.clone(), value);
                }
                None if attr == "manager" && schema.is_some() => {
                    container.insert(attr.clone(), serde_json::json!({ "value": value }));
                }
                None => {
                    container.insert(attr.clone(), value);
                }
            }
        }
        ScimPath::Typed {
            attr,
            type_value,
            sub,
        } => {
            let list = child(resource, attr);
            if !list.is_array() {
                *list = Value::Array(Vec::new());
            }
            let Value::Array(items) = list else { return };
            let pos = items
                .iter()
                .position(|e| e.get("type").and_then(Value::as_str) == Some(type_value.as_str()));
            let element = match pos {
                Some(i) => &mut items[i],
                None => {
                    items.push(serde_json::json!({ "type": type_value }));
                    let last = items.len() - 1;
                    &mut items[last]
                }
            };
            as_object(element).insert(sub.clone(), value);
        }
    }
}

/// Builds the JSON resource for a POST from flat attributes, with its `schemas`.
pub fn build_resource(core_schema: &str, attrs: &Attrs) -> Value {
    let mut obj = Map::new();
    let mut schemas = vec![Value::String(core_schema.to_string())];
    for (path, value) in attrs {
        let Ok(parsed) = ScimPath::parse(path) else {
            continue;
        };
        if let ScimPath::Attr {
            schema: Some(urn), ..
        } = &parsed
        {
            if !schemas.iter().any(|s| s.as_str() == Some(urn)) {
                schemas.push(Value::String(urn.clone()));
            }
        }
        insert(&mut obj, &parsed, value.clone());
    }
    obj.insert("schemas".into(), Value::Array(schemas));
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department";

    #[test]
    fn parses_every_supported_form() {
        assert_eq!(
            ScimPath::parse("name.givenName").unwrap(),
            ScimPath::Attr {
                schema: None,
                attr: "name".into(),
                sub: Some("givenName".into())
            }
        );
        assert_eq!(
            ScimPath::parse("emails[type eq \"work\"].value").unwrap(),
            ScimPath::Typed {
                attr: "emails".into(),
                type_value: "work".into(),
                sub: "value".into()
            }
        );
        assert!(matches!(
            ScimPath::parse(DEPT).unwrap(),
            ScimPath::Attr { schema: Some(_), ref attr, .. } if attr == "department"
        ));
        for bad in [
            "",
            "emails[type eq work].value",
            "emails[type eq \"work\"]",
            "na me",
            "emails[value co \"x\"].value",
            "a]b[c",
            "emails]s[type eq \"work\"].value",
        ] {
            assert!(ScimPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bracket_closed_before_it_opens_is_an_error_not_a_panic() {
        // Found by the scim_response fuzz target: `]` before `[` sliced backwards.
        assert!(ScimPath::parse("emaiscimTypel]s[type eq \"work\"].value").is_err());
        assert_eq!(ScimPath::parse("x]y[").unwrap_err().reason, "missing ']'");
        let resource = json!({"emails": [{"type": "work", "value": "a"}]});
        assert_eq!(extract(&resource, "a]b[c"), None);
    }

    #[test]
    fn build_then_extract_round_trips() {
        let attrs: Attrs = [
            ("userName", json!("a@b.example")),
            ("active", json!(true)),
            ("name.givenName", json!("A")),
            ("emails[type eq \"work\"].value", json!("a@b.example")),
            ("addresses[type eq \"work\"].locality", json!("Lyon")),
            ("addresses[type eq \"work\"].country", json!("FR")),
            (DEPT, json!("R&D")),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                json!("m-1"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let r = build_resource("urn:ietf:params:scim:schemas:core:2.0:User", &attrs);
        assert_eq!(r["addresses"].as_array().unwrap().len(), 1, "{r}");
        assert_eq!(
            r["emails"],
            json!([{"type": "work", "value": "a@b.example"}])
        );
        assert_eq!(r["schemas"].as_array().unwrap().len(), 2);
        assert_eq!(
            r["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["manager"],
            json!({"value": "m-1"})
        );
        for (path, value) in &attrs {
            assert_eq!(extract(&r, path).as_ref(), Some(value), "{path}");
        }
        assert_eq!(extract(&r, "title"), None);
    }

    #[test]
    fn typed_paths_know_their_element() {
        let p = "emails[type eq \"work\"].value";
        let parsed = ScimPath::parse(p).unwrap();
        assert_eq!(
            parsed.element_path(p).as_deref(),
            Some("emails[type eq \"work\"]")
        );
        let other = ScimPath::parse("Emails[type eq \"Work\"].display").unwrap();
        assert!(parsed.same_element(&other));
        let home = ScimPath::parse("emails[type eq \"home\"].value").unwrap();
        assert!(!parsed.same_element(&home));
        let plain = ScimPath::parse("name.givenName").unwrap();
        assert_eq!(plain.element_path("name.givenName"), None);
        assert!(!plain.same_element(&plain));
        assert_eq!(
            ScimPath::parse(DEPT).unwrap().top_level(),
            (
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:user".into()),
                "department".into()
            )
        );
        assert!(ScimPath::parse("name").unwrap().is_whole_attribute());
        assert!(!plain.is_whole_attribute() && !parsed.is_whole_attribute());
        assert_eq!(parsed.top_level(), (None, "emails".into()));
    }
}
