//! Graph object → SCIM attributes, as data.
//!
//! A mapping is a list of (SCIM attribute path, source expression) pairs. Mapped
//! attributes are kept *flat* — `name.givenName`, `emails[type eq "work"].value` — so that
//! the planner can diff two resources attribute by attribute and the SCIM client can turn
//! each difference into one PATCH operation with the right path. Entra's default mapping
//! for a non-gallery SCIM app (SPEC §4) is the default; operators override or extend it
//! in `[mapping.user]` / `[mapping.group]`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::config::MappingConfig;

#[path = "mapping_text.rs"]
mod text;
pub use text::AttrText;

/// SCIM attribute path → value, for the attributes a mapping produces.
pub type Attrs = BTreeMap<String, Value>;

/// Where a mapping reads an object's Graph properties from: the parsed map, or a user's
/// stored text parsed no further than the planner needs.
pub trait Props {
    /// The top-level property `name`, when it is a string.
    fn str(&self, name: &str) -> Option<&str>;
    /// The top-level property `name` as JSON (strings may be left to [`Props::str`]).
    fn value(&self, name: &str) -> Option<&Value>;
}

impl Props for Map<String, Value> {
    fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    fn value(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

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
        apply_overrides(
            &mut m.user,
            &cfg.user,
            "user",
            USER_PROPERTIES,
            USER_RESERVED,
        )?;
        apply_overrides(
            &mut m.group,
            &cfg.group,
            "group",
            GROUP_PROPERTIES,
            GROUP_RESERVED,
        )?;
        let manager = cfg
            .user
            .iter()
            .find(|(p, _)| p.eq_ignore_ascii_case(MANAGER_PATH));
        if let Some((_, v)) = manager {
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

    /// The user mapping sorted by path, to map many users (see [`SortedMapping`]).
    pub fn sorted_user(&self) -> SortedMapping<'_> {
        SortedMapping::new(&self.user)
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
    SortedMapping::new(list)
        .values(id, props)
        .into_iter()
        .map(|(path, v)| (path.to_string(), Value::String(v.into_owned())))
        .collect()
}

/// A mapping sorted by SCIM path (stably: of two mappings of one path, the later one
/// still wins). The planner sorts once per plan rather than once per user.
#[derive(Debug, Clone)]
pub struct SortedMapping<'m> {
    attrs: Vec<&'m AttrMapping>,
}

impl<'m> SortedMapping<'m> {
    pub fn new(list: &'m [AttrMapping]) -> SortedMapping<'m> {
        let mut attrs: Vec<&AttrMapping> = list.iter().collect();
        attrs.sort_by(|a, b| a.scim_path.cmp(&b.scim_path));
        SortedMapping { attrs }
    }

    /// The values the mapping makes of one object, sorted by path and borrowed where they
    /// can be (a path mapped twice keeps its last non-empty value, as a map would): the
    /// planner turns them into a map only to diff an update.
    pub fn values<'s>(&self, id: &'s str, props: &'s impl Props) -> Vec<(&'s str, Cow<'s, str>)>
    where
        'm: 's,
    {
        let mut out: Vec<(&str, Cow<str>)> = Vec::with_capacity(self.attrs.len());
        for &a in &self.attrs {
            let Some(v) = a.source.eval(id, props) else {
                continue;
            };
            match out.last_mut() {
                Some(last) if last.0 == a.scim_path => last.1 = v,
                _ => out.push((a.scim_path.as_str(), v)),
            }
        }
        out
    }
}

impl Source {
    /// The value, or `None` when the source is empty (the attribute is then omitted).
    pub fn eval<'s>(&'s self, id: &'s str, props: &'s impl Props) -> Option<Cow<'s, str>> {
        let out = match self {
            Source::Property(name) => property_text(props, name),
            Source::ObjectId => Some(Cow::Borrowed(id)),
            Source::Constant(c) => Some(Cow::Borrowed(c.as_str())),
            Source::Join { separator, parts } => {
                let texts: Vec<Cow<str>> = parts.iter().filter_map(|p| p.eval(id, props)).collect();
                (!texts.is_empty()).then(|| Cow::Owned(texts.join(separator.as_str())))
            }
            Source::FirstOf(list) => list.iter().find_map(|s| s.eval(id, props)),
            Source::Lower(s) => s.eval(id, props).map(|v| Cow::Owned(v.to_lowercase())),
            Source::Upper(s) => s.eval(id, props).map(|v| Cow::Owned(v.to_uppercase())),
            Source::Affix {
                prefix,
                suffix,
                inner,
            } => inner
                .eval(id, props)
                .map(|v| Cow::Owned(format!("{prefix}{v}{suffix}"))),
        };
        out.filter(|v| !is_blank(v))
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

/// Whether `text` is empty or white space; a visible ASCII first byte (most values) settles
/// it without decoding.
fn is_blank(text: &str) -> bool {
    !text.as_bytes().first().is_some_and(u8::is_ascii_graphic) && text.trim().is_empty()
}

/// A property as text: strings as they are, numbers and booleans printed, arrays by their
/// first element, nested objects by a dotted path (`onPremisesExtensionAttributes.extensionAttribute1`).
fn property_text<'p>(props: &'p impl Props, name: &str) -> Option<Cow<'p, str>> {
    if !name.bytes().any(|b| b == b'.') {
        if let Some(s) = props.str(name) {
            return Some(Cow::Borrowed(s));
        }
    }
    let mut parts = name.split('.');
    let mut value = props.value(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    if let Value::Array(items) = value {
        value = items.first()?;
    }
    match value {
        Value::String(s) => Some(Cow::Borrowed(s.as_str())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        _ => None,
    }
}

/// User attributes an override may not set, with the reason.
const USER_RESERVED: &[(&str, &str)] = &[
    ("active", "is set from accountEnabled and scope (false when disabled, deleted or out of scope); it cannot be mapped"),
    ("id", "is assigned by HERE"),
    ("meta", "is maintained by HERE"),
    ("schemas", "is derived from the mapped attributes"),
    ("groups", "is read-only in SCIM: assign the Entra group to the app instead"),
];

/// Group attributes an override may not set, with the reason.
const GROUP_RESERVED: &[(&str, &str)] = &[
    ("members", "comes from the group's in-scope members"),
    ("id", "is assigned by HERE"),
    ("meta", "is maintained by HERE"),
    ("schemas", "is derived from the mapped attributes"),
];

/// Applies `[mapping.<kind>]`. SCIM attribute names are case-insensitive, so an override
/// replaces the default of the same path in any letter case (keeping the default's
/// spelling), and two spellings of one path are an error.
fn apply_overrides(
    list: &mut Vec<AttrMapping>,
    overrides: &BTreeMap<String, toml::Value>,
    kind: &'static str,
    known: &[&str],
    reserved: &[(&str, &str)],
) -> Result<(), MappingError> {
    let mut seen: BTreeMap<String, &String> = BTreeMap::new();
    for (path, spec) in overrides {
        let err = |message: String| MappingError {
            kind,
            path: path.clone(),
            message,
        };
        crate::scim::path::ScimPath::parse(path).map_err(|e| err(e.to_string()))?;
        if let Some(first) = seen.insert(path.to_ascii_lowercase(), path) {
            return Err(err(format!(
                "also given as {first:?}; SCIM attribute names are case-insensitive"
            )));
        }
        if let Some((_, why)) = reserved.iter().find(|(r, _)| r.eq_ignore_ascii_case(path)) {
            return Err(err((*why).to_string()));
        }
        let scim_path = list
            .iter()
            .find(|a| a.scim_path.eq_ignore_ascii_case(path))
            .map_or_else(|| path.clone(), |a| a.scim_path.clone());
        list.retain(|a| !a.scim_path.eq_ignore_ascii_case(path));
        if path.eq_ignore_ascii_case(MANAGER_PATH) {
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
        list.push(AttrMapping { scim_path, source });
    }
    check_conflicts(list, kind)
}

/// A whole attribute (`name`) cannot be mapped next to one of its parts (`name.givenName`,
/// or `emails` next to `emails[type eq "work"].value`): one would overwrite the other.
fn check_conflicts(list: &[AttrMapping], kind: &'static str) -> Result<(), MappingError> {
    use crate::scim::path::ScimPath;
    let parsed: Vec<(&str, ScimPath)> = list
        .iter()
        .filter_map(|a| Some((a.scim_path.as_str(), ScimPath::parse(&a.scim_path).ok()?)))
        .collect();
    for (i, (pa, a)) in parsed.iter().enumerate() {
        for (pb, b) in &parsed[i + 1..] {
            if a.top_level() != b.top_level() {
                continue;
            }
            let (whole, part) = match (a.is_whole_attribute(), b.is_whole_attribute()) {
                (true, _) => (pa, pb),
                (_, true) => (pb, pa),
                _ => continue,
            };
            return Err(MappingError {
                kind,
                path: whole.to_string(),
                message: format!(
                    "sets the whole attribute, which conflicts with the mapping of {part:?}; switch one of them off"
                ),
            });
        }
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

/// Whether `name` is a Graph user property this tool can `$select` and read (a listed
/// property, `onPremisesExtensionAttributes.extensionAttribute1..15` or a directory
/// extension); the scope filters use the same rule as the mapping.
pub fn is_user_property(name: &str) -> bool {
    USER_PROPERTIES.contains(&name) || is_extension_attribute(name) || is_directory_extension(name)
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
#[path = "mapping_config_tests.rs"]
mod config_tests;
#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
