//! Graph object → SCIM attributes, as data.
//!
//! A mapping is a list of (SCIM attribute path, source expression) pairs. Mapped
//! attributes are kept *flat* — `name.givenName`, `emails[type eq "work"].value` — so that
//! the planner can diff two resources attribute by attribute and the SCIM client can turn
//! each difference into one PATCH operation with the right path. Entra's default mapping
//! for a non-gallery SCIM app (SPEC §4) is the default; operators override or extend it
//! in `[mapping.user]` / `[mapping.group]`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::config::MappingConfig;

/// SCIM attribute path → value, for the attributes a mapping produces.
pub type Attrs = BTreeMap<String, Value>;

/// The enterprise extension schema URN (department, employeeNumber, manager).
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The SCIM path of the manager reference, resolved by the planner rather than the mapping.
pub const MANAGER_PATH: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";

/// Graph user properties a mapping may name (`$select`-able, tracked by delta).
pub const USER_PROPERTIES: &[&str] = &[
    "accountEnabled",
    "businessPhones",
    "city",
    "companyName",
    "country",
    "department",
    "displayName",
    "employeeId",
    "employeeType",
    "faxNumber",
    "givenName",
    "jobTitle",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "onPremisesExtensionAttributes",
    "onPremisesSamAccountName",
    "onPremisesImmutableId",
    "otherMails",
    "postalCode",
    "preferredLanguage",
    "proxyAddresses",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
];

/// Graph group properties a mapping may name.
pub const GROUP_PROPERTIES: &[&str] = &[
    "description",
    "displayName",
    "mail",
    "mailNickname",
    "securityEnabled",
];

/// Where one SCIM attribute's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Graph property; an array property yields its first element.
    Property(String),
    /// The Entra object id (groups' `externalId`).
    ObjectId,
    /// A fixed string.
    Constant(String),
    /// Non-empty parts joined with a separator (`name.formatted`).
    Join {
        separator: String,
        parts: Vec<Source>,
    },
    /// The first non-empty source.
    FirstOf(Vec<Source>),
    /// Lower-cased source.
    Lower(Box<Source>),
    /// Upper-cased source.
    Upper(Box<Source>),
    /// A source with a fixed prefix and suffix (only when the source is non-empty).
    Affix {
        prefix: String,
        suffix: String,
        inner: Box<Source>,
    },
}

/// One mapped attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrMapping {
    pub scim_path: String,
    pub source: Source,
}

/// The mapping for both object kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub user: Vec<AttrMapping>,
    pub group: Vec<AttrMapping>,
    /// Whether the manager reference is provisioned (needs `manager` read from Graph).
    pub manager: bool,
}

/// An operator's mapping override that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("`mapping.{kind}.\"{path}\"`: {message}")]
pub struct MappingError {
    pub kind: &'static str,
    pub path: String,
    pub message: String,
}

fn prop(name: &str) -> Source {
    Source::Property(name.to_string())
}

fn entry(path: &str, source: Source) -> AttrMapping {
    AttrMapping {
        scim_path: path.to_string(),
        source,
    }
}

impl Default for Mapping {
    /// Entra's default mapping for a non-gallery SCIM app (SPEC §4).
    fn default() -> Self {
        let work_address =
            |sub: &str, p: &str| entry(&format!("addresses[type eq \"work\"].{sub}"), prop(p));
        Mapping {
            user: vec![
                entry("userName", prop("userPrincipalName")),
                entry("displayName", prop("displayName")),
                entry("title", prop("jobTitle")),
                entry("emails[type eq \"work\"].value", prop("mail")),
                entry("preferredLanguage", prop("preferredLanguage")),
                entry("name.givenName", prop("givenName")),
                entry("name.familyName", prop("surname")),
                entry(
                    "name.formatted",
                    Source::Join {
                        separator: " ".into(),
                        parts: vec![prop("givenName"), prop("surname")],
                    },
                ),
                entry("externalId", prop("mailNickname")),
                entry(
                    "phoneNumbers[type eq \"work\"].value",
                    prop("businessPhones"),
                ),
                entry(
                    "phoneNumbers[type eq \"mobile\"].value",
                    prop("mobilePhone"),
                ),
                work_address("streetAddress", "streetAddress"),
                work_address("locality", "city"),
                work_address("region", "state"),
                work_address("postalCode", "postalCode"),
                work_address("country", "country"),
                entry(&format!("{ENTERPRISE}:employeeNumber"), prop("employeeId")),
                entry(&format!("{ENTERPRISE}:department"), prop("department")),
            ],
            group: vec![
                entry("displayName", prop("displayName")),
                entry("externalId", Source::ObjectId),
            ],
            manager: true,
        }
    }
}

impl Mapping {
    /// The default mapping with the operator's overrides applied.
    pub fn from_config(cfg: &MappingConfig) -> Result<Mapping, MappingError> {
        let mut m = Mapping::default();
        apply_overrides(&mut m.user, &cfg.user, "user", USER_PROPERTIES)?;
        apply_overrides(&mut m.group, &cfg.group, "group", GROUP_PROPERTIES)?;
        if let Some(v) = cfg.user.get(MANAGER_PATH) {
            m.manager = v.as_bool() != Some(false);
        }
        for required in ["userName"] {
            if !m.user.iter().any(|a| a.scim_path == required) {
                return Err(MappingError {
                    kind: "user",
                    path: required.into(),
                    message: "cannot be switched off: HERE matches users by it".into(),
                });
            }
        }
        if !m.group.iter().any(|a| a.scim_path == "displayName") {
            return Err(MappingError {
                kind: "group",
                path: "displayName".into(),
                message: "cannot be switched off: HERE matches groups by it".into(),
            });
        }
        Ok(m)
    }

    /// Graph user properties to `$select`: what the mapping reads plus what scope needs.
    pub fn user_select(&self, extra: &[String]) -> Vec<String> {
        let mut names: BTreeSet<String> = ["userPrincipalName", "accountEnabled"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for a in &self.user {
            a.source.properties(&mut names);
        }
        names.extend(extra.iter().cloned());
        if self.manager {
            names.insert("manager".into());
        }
        names.into_iter().collect()
    }

    /// Graph group properties to `$select` (always with `members`).
    pub fn group_select(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = ["displayName", "members"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for a in &self.group {
            a.source.properties(&mut names);
        }
        names.into_iter().collect()
    }

    /// SCIM attributes of a user (without `active` and `manager`, which need scope and state).
    pub fn map_user(&self, id: &str, props: &Map<String, Value>) -> Attrs {
        map_all(&self.user, id, props)
    }

    /// SCIM attributes of a group (without members).
    pub fn map_group(&self, id: &str, props: &Map<String, Value>) -> Attrs {
        map_all(&self.group, id, props)
    }

    /// Every SCIM path this mapping manages for users (to notice attributes to remove).
    pub fn user_paths(&self) -> impl Iterator<Item = &str> {
        self.user.iter().map(|a| a.scim_path.as_str())
    }
}

fn map_all(list: &[AttrMapping], id: &str, props: &Map<String, Value>) -> Attrs {
    list.iter()
        .filter_map(|a| {
            a.source
                .eval(id, props)
                .map(|v| (a.scim_path.clone(), Value::String(v)))
        })
        .collect()
}

impl Source {
    /// The value, or `None` when the source is empty (the attribute is then omitted).
    pub fn eval(&self, id: &str, props: &Map<String, Value>) -> Option<String> {
        let out = match self {
            Source::Property(name) => property_text(props, name),
            Source::ObjectId => Some(id.to_string()),
            Source::Constant(c) => Some(c.clone()),
            Source::Join { separator, parts } => {
                let texts: Vec<String> = parts.iter().filter_map(|p| p.eval(id, props)).collect();
                (!texts.is_empty()).then(|| texts.join(separator))
            }
            Source::FirstOf(list) => list.iter().find_map(|s| s.eval(id, props)),
            Source::Lower(s) => s.eval(id, props).map(|v| v.to_lowercase()),
            Source::Upper(s) => s.eval(id, props).map(|v| v.to_uppercase()),
            Source::Affix {
                prefix,
                suffix,
                inner,
            } => inner
                .eval(id, props)
                .map(|v| format!("{prefix}{v}{suffix}")),
        };
        out.filter(|v| !v.trim().is_empty())
    }

    fn properties(&self, out: &mut BTreeSet<String>) {
        match self {
            Source::Property(name) => {
                out.insert(name.split('.').next().unwrap_or(name).to_string());
            }
            Source::ObjectId | Source::Constant(_) => {}
            Source::Join { parts, .. } | Source::FirstOf(parts) => {
                parts.iter().for_each(|p| p.properties(out))
            }
            Source::Lower(s) | Source::Upper(s) | Source::Affix { inner: s, .. } => {
                s.properties(out)
            }
        }
    }
}

/// A property as text: strings as they are, numbers and booleans printed, arrays by their
/// first element, nested objects by a dotted path (`onPremisesExtensionAttributes.extensionAttribute1`).
fn property_text(props: &Map<String, Value>, name: &str) -> Option<String> {
    let mut parts = name.split('.');
    let mut value = props.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    if let Value::Array(items) = value {
        value = items.first()?;
    }
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn apply_overrides(
    list: &mut Vec<AttrMapping>,
    overrides: &BTreeMap<String, toml::Value>,
    kind: &'static str,
    known: &[&str],
) -> Result<(), MappingError> {
    for (path, spec) in overrides {
        let err = |message: String| MappingError {
            kind,
            path: path.clone(),
            message,
        };
        crate::scim::path::ScimPath::parse(path).map_err(|e| err(e.to_string()))?;
        list.retain(|a| &a.scim_path != path);
        if path == MANAGER_PATH {
            if spec.as_bool().is_none() {
                return Err(err(
                    "manager can only be switched on or off (true/false)".into()
                ));
            }
            continue;
        }
        if spec.as_bool() == Some(false) {
            continue;
        }
        let source = parse_source(spec, known).map_err(err)?;
        list.push(AttrMapping {
            scim_path: path.clone(),
            source,
        });
    }
    Ok(())
}

/// Parses one override: `"property"`, `false`, or a table with one of `constant`, `join`
/// (+ `separator`), `first_of`, `lower`, `upper`, `property` (+ `prefix`/`suffix`).
fn parse_source(spec: &toml::Value, known: &[&str]) -> Result<Source, String> {
    match spec {
        toml::Value::String(name) => property_source(name, known),
        toml::Value::Table(t) => {
            let allowed = ["constant", "join", "separator", "first_of", "lower", "upper", "property", "prefix", "suffix"];
            if let Some(bad) = t.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(format!("unknown key `{bad}`; use one of {}", allowed.join(", ")));
            }
            let text = |key: &str| -> Result<Option<String>, String> {
                match t.get(key) {
                    None => Ok(None),
                    Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(format!("`{key}` must be a string")),
                }
            };
            let list = |key: &str| -> Result<Option<Vec<Source>>, String> {
                match t.get(key) {
                    None => Ok(None),
                    Some(toml::Value::Array(items)) if !items.is_empty() => {
                        items.iter().map(|i| parse_source(i, known)).collect::<Result<_, _>>().map(Some)
                    }
                    Some(_) => Err(format!("`{key}` must be a non-empty list")),
                }
            };
            let base = if let Some(c) = text("constant")? {
                Source::Constant(c)
            } else if let Some(parts) = list("join")? {
                Source::Join {
                    separator: text("separator")?.unwrap_or_default(),
                    parts,
                }
            } else if let Some(parts) = list("first_of")? {
                Source::FirstOf(parts)
            } else if let Some(inner) = t.get("lower") {
                Source::Lower(Box::new(parse_source(inner, known)?))
            } else if let Some(inner) = t.get("upper") {
                Source::Upper(Box::new(parse_source(inner, known)?))
            } else if let Some(p) = text("property")? {
                property_source(&p, known)?
            } else {
                return Err("a table needs one of constant, join, first_of, lower, upper, property".into());
            };
            let (prefix, suffix) = (text("prefix")?, text("suffix")?);
            if prefix.is_none() && suffix.is_none() {
                return Ok(base);
            }
            Ok(Source::Affix {
                prefix: prefix.unwrap_or_default(),
                suffix: suffix.unwrap_or_default(),
                inner: Box::new(base),
            })
        }
        _ => Err("must be a Graph property name, false, or a table (constant, join, first_of, lower, upper, property)".into()),
    }
}

fn property_source(name: &str, known: &[&str]) -> Result<Source, String> {
    if name == "objectId" || name == "id" {
        return Ok(Source::ObjectId);
    }
    let valid =
        known.contains(&name) || is_extension_attribute(name) || is_directory_extension(name);
    if !valid {
        return Err(format!(
            "unknown Graph property {name:?}; use one of {}, onPremisesExtensionAttributes.extensionAttribute1..15 or extension_<appId>_<name>",
            known.join(", ")
        ));
    }
    Ok(Source::Property(name.to_string()))
}

fn is_extension_attribute(name: &str) -> bool {
    name.strip_prefix("onPremisesExtensionAttributes.extensionAttribute")
        .and_then(|n| n.parse::<u8>().ok())
        .is_some_and(|n| (1..=15).contains(&n))
}

fn is_directory_extension(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("extension_") else {
        return false;
    };
    let mut parts = rest.splitn(2, '_');
    let app = parts.next().unwrap_or("");
    let attr = parts.next().unwrap_or("");
    app.len() == 32
        && app.chars().all(|c| c.is_ascii_hexdigit())
        && !attr.is_empty()
        && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn full_user() -> Map<String, Value> {
        obj(json!({
            "userPrincipalName": "ana.lima@contoso.example", "displayName": "Ana Lima",
            "givenName": "Ana", "surname": "Lima", "mail": "ana@contoso.example",
            "jobTitle": "Engineer", "mailNickname": "ana", "preferredLanguage": "pt-BR",
            "businessPhones": ["+1 555 0100", "+1 555 0101"], "mobilePhone": "+1 555 0199",
            "streetAddress": "1 Main St", "city": "Springfield", "state": "IL",
            "postalCode": "62701", "country": "US", "employeeId": "4711", "department": "R&D",
            "accountEnabled": true
        }))
    }

    #[test]
    fn default_user_mapping_matches_spec() {
        let a = Mapping::default().map_user("id1", &full_user());
        let get = |p: &str| {
            a.get(p)
                .and_then(|v| v.as_str())
                .unwrap_or("<none>")
                .to_string()
        };
        assert_eq!(get("userName"), "ana.lima@contoso.example");
        assert_eq!(get("displayName"), "Ana Lima");
        assert_eq!(get("title"), "Engineer");
        assert_eq!(get("emails[type eq \"work\"].value"), "ana@contoso.example");
        assert_eq!(get("preferredLanguage"), "pt-BR");
        assert_eq!(get("name.givenName"), "Ana");
        assert_eq!(get("name.familyName"), "Lima");
        assert_eq!(get("name.formatted"), "Ana Lima");
        assert_eq!(get("externalId"), "ana");
        assert_eq!(get("phoneNumbers[type eq \"work\"].value"), "+1 555 0100");
        assert_eq!(get("phoneNumbers[type eq \"mobile\"].value"), "+1 555 0199");
        assert_eq!(get("addresses[type eq \"work\"].locality"), "Springfield");
        assert_eq!(get("addresses[type eq \"work\"].region"), "IL");
        assert_eq!(get(&format!("{ENTERPRISE}:employeeNumber")), "4711");
        assert_eq!(get(&format!("{ENTERPRISE}:department")), "R&D");
        assert!(
            !a.contains_key("active"),
            "active is decided by scope, not the mapping"
        );
    }

    #[test]
    fn empty_sources_are_omitted_and_join_skips_empty_parts() {
        let mut u = full_user();
        u.insert("jobTitle".into(), Value::Null);
        u.insert("surname".into(), json!("  "));
        u.insert("businessPhones".into(), json!([]));
        let a = Mapping::default().map_user("id1", &u);
        assert!(!a.contains_key("title"));
        assert!(!a.contains_key("name.familyName"));
        assert!(!a.contains_key("phoneNumbers[type eq \"work\"].value"));
        assert_eq!(a["name.formatted"], json!("Ana"));
    }

    #[test]
    fn unicode_survives() {
        let mut u = full_user();
        u.insert("displayName".into(), json!("Zoë Ærøskøbing 李小龍"));
        let a = Mapping::default().map_user("id1", &u);
        assert_eq!(a["displayName"], json!("Zoë Ærøskøbing 李小龍"));
    }

    #[test]
    fn group_mapping_uses_object_id_as_external_id() {
        let a = Mapping::default().map_group("g-1", &obj(json!({"displayName": "Sales"})));
        assert_eq!(a["displayName"], json!("Sales"));
        assert_eq!(a["externalId"], json!("g-1"));
    }

    #[test]
    fn select_lists_exactly_the_mapped_properties() {
        let m = Mapping::default();
        let s = m.user_select(&[]);
        for p in [
            "userPrincipalName",
            "accountEnabled",
            "givenName",
            "businessPhones",
            "manager",
        ] {
            assert!(s.contains(&p.to_string()), "{p} missing from {s:?}");
        }
        assert!(!s.contains(&"officeLocation".to_string()));
        assert_eq!(m.group_select(), vec!["displayName", "members"]);
    }

    fn overrides(text: &str) -> Result<Mapping, MappingError> {
        let cfg: MappingConfig = toml::from_str(text).unwrap();
        Mapping::from_config(&cfg)
    }

    #[test]
    fn overrides_replace_add_and_switch_off() {
        let m = overrides(
            r#"
[user]
externalId = "onPremisesExtensionAttributes.extensionAttribute3"
title = false
"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:organization" = { constant = "Contoso" }
nickName = { lower = { first_of = ["mailNickname", "givenName"] }, prefix = "x-" }
"#,
        )
        .unwrap();
        let mut u = full_user();
        u.insert(
            "onPremisesExtensionAttributes".into(),
            json!({"extensionAttribute3": "E-3"}),
        );
        let a = m.map_user("id", &u);
        assert_eq!(a["externalId"], json!("E-3"));
        assert!(!a.contains_key("title"));
        assert_eq!(a[&format!("{ENTERPRISE}:organization")], json!("Contoso"));
        assert_eq!(a["nickName"], json!("x-ana"));
        assert!(m
            .user_select(&[])
            .contains(&"onPremisesExtensionAttributes".to_string()));
    }

    #[test]
    fn bad_overrides_name_the_attribute() {
        let e = overrides("[user]\ntitle = \"jobTitel\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mapping.user.\"title\"") && e.contains("jobTitel"),
            "{e}"
        );
        let e = overrides("[user]\n\"emails[type eq work\" = \"mail\"\n").unwrap_err();
        assert_eq!(e.path, "emails[type eq work");
        assert!(overrides("[user]\nuserName = false\n").is_err());
        assert!(overrides("[user]\nx = { property = \"extension_0123456789abcdef0123456789abcdef_costCenter\" }\n").is_ok());
    }
}
