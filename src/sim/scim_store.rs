//! The fake SCIM service's resource store: create, replace, atomic PATCH, delete, list with
//! filter and paging, attribute projection, validation and case-insensitive uniqueness.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use crate::sim::scim::{
    Kind, ScimError, ScimFaults, ScimRequest, ENT_SCHEMA, LIST_SCHEMA, MAX_RESULTS, PATCH_SCHEMA,
};
use crate::sim::scim_filter::{self, get_ci};
use crate::sim::scim_patch::{self, Kind as PatchKind};
use crate::sim::Rng;

/// All resources plus logs and faults.
pub(crate) struct Store {
    pub(crate) rng: Rng,
    pub(crate) fault_rng: Rng,
    pub(crate) token: String,
    pub(crate) base_url: String,
    pub(crate) resources: HashMap<String, (Kind, Map<String, Value>)>,
    /// Insertion order of ids (listing order).
    pub(crate) order: Vec<String>,
    /// Lower-cased userName / displayName -> id, for uniqueness.
    names: HashMap<(Kind, String), String>,
    pub(crate) log: Vec<ScimRequest>,
    pub(crate) faults: ScimFaults,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn version(res: &Map<String, Value>) -> u64 {
    res.get("meta")
        .and_then(|m| m["version"].as_str())
        .and_then(|v| v.trim_start_matches("W/").trim_matches('"').parse().ok())
        .unwrap_or(0)
}

fn invalid(detail: String) -> ScimError {
    ScimError::new(400, Some("invalidValue"), detail)
}

impl Store {
    /// A store whose ids and bearer token derive from `seed`.
    pub(crate) fn new(seed: u64, base_url: String) -> Store {
        let mut rng = Rng::new(seed);
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let jti = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        let claims =
            json!({"sub": "SCIM_USER@EXAMPLE.COM", "tenant": "acme", "scope": "scim", "jti": jti});
        let token = rng.fake_jwt(&header, &claims);
        Store {
            fault_rng: Rng::new(seed.wrapping_mul(104_729).wrapping_add(3)),
            rng,
            token,
            base_url,
            resources: HashMap::new(),
            order: vec![],
            names: HashMap::new(),
            log: vec![],
            faults: ScimFaults::default(),
        }
    }

    /// All resources of a kind, in creation order.
    pub(crate) fn all(&self, kind: Kind) -> Vec<Value> {
        self.order
            .iter()
            .filter_map(|id| self.resources.get(id))
            .filter(|(k, _)| *k == kind)
            .map(|(_, r)| Value::Object(r.clone()))
            .collect()
    }

    /// A resource by its unique name (case-insensitive).
    pub(crate) fn find(&self, kind: Kind, name: &str) -> Option<Value> {
        let id = self.names.get(&(kind, name.to_lowercase()))?;
        self.resources
            .get(id)
            .map(|(_, r)| Value::Object(r.clone()))
    }

    /// Stores a resource without the HTTP checks (test setup); returns the id.
    pub(crate) fn seed(&mut self, kind: Kind, resource: Value) -> String {
        let mut res = match resource {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if !res.contains_key("schemas") {
            res.insert("schemas".into(), json!([kind.schema()]));
        }
        let id = self.new_id();
        res.insert("id".into(), json!(id));
        let _ = self.normalize(kind, &mut res, None);
        res.insert("meta".into(), self.meta(kind, &id, None, 1));
        self.put(kind, id.clone(), res);
        id
    }

    fn new_id(&mut self) -> String {
        format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64())
    }

    fn meta(&self, kind: Kind, id: &str, created: Option<Value>, version: u64) -> Value {
        let ts = now();
        json!({
            "resourceType": &kind.segment()[..kind.segment().len() - 1],
            "created": created.unwrap_or_else(|| json!(ts)),
            "lastModified": ts,
            "location": format!("{}/{}/{id}", self.base_url, kind.segment()),
            "version": format!("W/\"{version}\""),
        })
    }

    fn name_of(kind: Kind, res: &Map<String, Value>) -> String {
        res.get(kind.name_attr())
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_lowercase()
    }

    /// Stores (or overwrites) a resource and keeps the name index in step.
    fn put(&mut self, kind: Kind, id: String, res: Map<String, Value>) {
        if let Some((_, old)) = self.resources.get(&id) {
            let old_name = Store::name_of(kind, old);
            if self.names.get(&(kind, old_name.clone())) == Some(&id) {
                self.names.remove(&(kind, old_name));
            }
        } else {
            self.order.push(id.clone());
        }
        self.names
            .insert((kind, Store::name_of(kind, &res)), id.clone());
        self.resources.insert(id, (kind, res));
    }

    /// Looks a resource up by kind and id (404 otherwise).
    pub(crate) fn get(&self, kind: Kind, id: &str) -> Result<&Map<String, Value>, ScimError> {
        match self.resources.get(id) {
            Some((k, r)) if *k == kind => Ok(r),
            _ => Err(ScimError::new(
                404,
                None,
                format!("Resource {id} not found."),
            )),
        }
    }

    fn check_fail_names(&self, names: &[&Map<String, Value>]) -> Result<(), ScimError> {
        for r in names {
            let n = Store::name_of(Kind::Users, r);
            if self
                .faults
                .fail_user_names
                .iter()
                .any(|f| f.to_lowercase() == n)
            {
                return Err(invalid(format!(
                    "The value of userName '{n}' was rejected by the service provider."
                )));
            }
        }
        Ok(())
    }

    /// Coerces and checks a resource about to be stored; `old` is the stored version, if any.
    fn normalize(
        &self,
        kind: Kind,
        res: &mut Map<String, Value>,
        old: Option<&Map<String, Value>>,
    ) -> Result<(), ScimError> {
        let self_id = res
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = res
            .get(kind.name_attr())
            .and_then(Value::as_str)
            .unwrap_or("");
        if name.trim().is_empty() {
            return Err(invalid(format!(
                "Attribute '{}' is required.",
                kind.name_attr()
            )));
        }
        if let Some(other) = self.names.get(&(kind, name.to_lowercase())) {
            if *other != self_id {
                let what = if kind == Kind::Users { "User" } else { "Group" };
                let d = format!("{what} with {} '{name}' already exists.", kind.name_attr());
                return Err(ScimError::new(409, Some("uniqueness"), d));
            }
        }
        match kind {
            Kind::Users => self.normalize_user(res, old),
            Kind::Groups => self.normalize_group(res, &self_id),
        }
    }

    fn normalize_user(
        &self,
        res: &mut Map<String, Value>,
        old: Option<&Map<String, Value>>,
    ) -> Result<(), ScimError> {
        if let Some(Value::String(s)) = res.get("active") {
            // Entra's default client sends "True"/"False".
            let b = match s.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(invalid("Attribute 'active' must be a boolean.".into())),
            };
            res.insert("active".into(), json!(b));
        }
        if res.get("active").is_some_and(|a| !a.is_boolean()) {
            return Err(invalid("Attribute 'active' must be a boolean.".into()));
        }
        if res.get("name").is_some_and(|n| !n.is_object()) {
            return Err(invalid("Attribute 'name' must be complex.".into()));
        }
        for attr in ["emails", "phoneNumbers", "addresses"] {
            let Some(v) = get_ci(res, attr) else { continue };
            let Some(list) = v.as_array().filter(|l| l.iter().all(Value::is_object)) else {
                return Err(invalid(format!(
                    "Attribute '{attr}' must be a list of complex values."
                )));
            };
            let types: Vec<String> = list
                .iter()
                .filter_map(|e| e["type"].as_str())
                .map(str::to_lowercase)
                .collect();
            let unique: BTreeSet<&String> = types.iter().collect();
            if unique.len() != types.len() {
                return Err(invalid(format!(
                    "The 'type' sub-attribute values of '{attr}' must be unique."
                )));
            }
        }
        let ek = res
            .keys()
            .find(|k| k.eq_ignore_ascii_case(ENT_SCHEMA))
            .cloned();
        let Some(ek) = ek else { return Ok(()) };
        let old_mgr = old
            .and_then(|o| get_ci(o, ENT_SCHEMA))
            .and_then(|e| e.get("manager"))
            .cloned();
        let Some(ext) = res.get_mut(&ek).and_then(Value::as_object_mut) else {
            return Err(invalid(
                "The enterprise extension must be an object.".into(),
            ));
        };
        if let Some(Value::String(s)) = ext.get("manager") {
            let m = json!({ "value": s });
            ext.insert("manager".into(), m);
        }
        if let Some(m) = ext.get("manager").filter(|m| Some(*m) != old_mgr.as_ref()) {
            let id = m.get("value").and_then(Value::as_str).unwrap_or("");
            if self.get(Kind::Users, id).is_err() {
                return Err(invalid(format!("Manager '{id}' does not exist.")));
            }
        }
        Ok(())
    }

    fn normalize_group(
        &self,
        res: &mut Map<String, Value>,
        self_id: &str,
    ) -> Result<(), ScimError> {
        let members = match get_ci(res, "members") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(invalid("Attribute 'members' must be multi-valued.".into())),
        };
        res.retain(|k, _| !k.eq_ignore_ascii_case("members"));
        let mut out: Vec<Value> = vec![];
        for m in &members {
            let Some(v) = m.get("value").and_then(Value::as_str) else {
                return Err(invalid(
                    "Each member must be an object with a string 'value'.".into(),
                ));
            };
            let Some((kind, target)) = self.resources.get(v).filter(|_| v != self_id) else {
                return Err(invalid(format!("Member '{v}' does not exist.")));
            };
            if out.iter().any(|o| o["value"] == v) {
                continue;
            }
            let display = target
                .get("displayName")
                .or_else(|| target.get("userName"))
                .cloned();
            out.push(json!({
                "value": v,
                "display": display,
                "type": if *kind == Kind::Users { "User" } else { "Group" },
                "$ref": format!("{}/{}/{v}", self.base_url, kind.segment()),
            }));
        }
        res.insert("members".into(), Value::Array(out));
        Ok(())
    }

    fn require_schema(kind: Kind, body: &Map<String, Value>) -> Result<(), ScimError> {
        let ok = body
            .get("schemas")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter().any(|s| {
                    s.as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(kind.schema()))
                })
            });
        if ok {
            Ok(())
        } else {
            let d = format!("'schemas' must contain {}.", kind.schema());
            Err(ScimError::new(400, Some("invalidSyntax"), d))
        }
    }

    /// POST: validates and stores a new resource.
    pub(crate) fn create(
        &mut self,
        kind: Kind,
        body: &Value,
    ) -> Result<Map<String, Value>, ScimError> {
        let Some(body) = body.as_object() else {
            return Err(ScimError::new(
                400,
                Some("invalidSyntax"),
                "Request body must be a JSON object.",
            ));
        };
        Store::require_schema(kind, body)?;
        let mut res: Map<String, Value> = body
            .iter()
            .filter(|(k, _)| *k != "id" && *k != "meta")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if kind == Kind::Users {
            self.check_fail_names(&[&res])?;
        }
        self.normalize(kind, &mut res, None)?;
        let id = self.new_id();
        res.insert("id".into(), json!(id));
        res.insert("meta".into(), self.meta(kind, &id, None, 1));
        self.put(kind, id, res.clone());
        Ok(res)
    }

    /// PUT: replaces a resource wholesale.
    pub(crate) fn replace(
        &mut self,
        kind: Kind,
        id: &str,
        body: &Value,
    ) -> Result<Map<String, Value>, ScimError> {
        let old = self.get(kind, id)?.clone();
        let Some(body) = body.as_object() else {
            return Err(ScimError::new(
                400,
                Some("invalidSyntax"),
                "Request body must be a JSON object.",
            ));
        };
        Store::require_schema(kind, body)?;
        let mut res: Map<String, Value> = body
            .iter()
            .filter(|(k, _)| *k != "meta")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        res.insert("id".into(), json!(id));
        if kind == Kind::Users {
            self.check_fail_names(&[&res, &old])?;
        }
        self.normalize(kind, &mut res, Some(&old))?;
        let created = old.get("meta").map(|m| m["created"].clone());
        res.insert(
            "meta".into(),
            self.meta(kind, id, created, version(&old) + 1),
        );
        self.put(kind, id.to_string(), res.clone());
        Ok(res)
    }

    /// PATCH: applies all operations to a copy; on any error nothing changes.
    pub(crate) fn patch(
        &mut self,
        kind: Kind,
        id: &str,
        body: &Value,
    ) -> Result<Map<String, Value>, ScimError> {
        let old = self.get(kind, id)?.clone();
        let syntax = |d: &str| ScimError::new(400, Some("invalidSyntax"), d.to_string());
        let schemas_ok = body["schemas"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s == PATCH_SCHEMA));
        if !schemas_ok {
            return Err(syntax(
                "'schemas' must contain urn:ietf:params:scim:api:messages:2.0:PatchOp.",
            ));
        }
        let ops = body
            .get("Operations")
            .and_then(Value::as_array)
            .filter(|o| !o.is_empty())
            .ok_or_else(|| syntax("'Operations' must be a non-empty list."))?;
        let mut res = old.clone();
        for op in ops {
            let kind_op = op["op"].as_str().and_then(PatchKind::parse);
            let Some(k) = kind_op else {
                return Err(syntax(&format!("Unsupported op {}.", op["op"])));
            };
            let path = match op.get("path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) => Some(p.as_str()),
                Some(_) => {
                    return Err(ScimError::new(
                        400,
                        Some("invalidPath"),
                        "'path' must be a string.",
                    ))
                }
            };
            scim_patch::apply(&mut res, k, path, op.get("value"))?;
        }
        res.insert("id".into(), json!(id));
        if let Some(m) = old.get("meta") {
            res.insert("meta".into(), m.clone());
        }
        if kind == Kind::Users {
            self.check_fail_names(&[&res, &old])?;
        }
        self.normalize(kind, &mut res, Some(&old))?;
        let created = old.get("meta").map(|m| m["created"].clone());
        res.insert(
            "meta".into(),
            self.meta(kind, id, created, version(&old) + 1),
        );
        self.put(kind, id.to_string(), res.clone());
        Ok(res)
    }

    /// DELETE: removes the resource, its memberships and manager references to it.
    pub(crate) fn delete(&mut self, kind: Kind, id: &str) -> Result<(), ScimError> {
        let old = self.get(kind, id)?;
        let name = Store::name_of(kind, old);
        self.resources.remove(id);
        self.order.retain(|o| o != id);
        if self
            .names
            .get(&(kind, name.clone()))
            .is_some_and(|o| o == id)
        {
            self.names.remove(&(kind, name));
        }
        for (k, r) in self.resources.values_mut() {
            if *k == Kind::Groups {
                if let Some(Value::Array(ms)) = r.get_mut("members") {
                    ms.retain(|m| m["value"] != id);
                }
            }
            let ek = r
                .keys()
                .find(|k| k.eq_ignore_ascii_case(ENT_SCHEMA))
                .cloned();
            if let Some(ext) = ek
                .and_then(|ek| r.get_mut(&ek))
                .and_then(Value::as_object_mut)
            {
                if ext.get("manager").is_some_and(|m| m["value"] == id) {
                    ext.remove("manager");
                }
            }
        }
        Ok(())
    }

    /// GET list: filter, then 1-based `startIndex`/`count` paging (at most 50 per page).
    pub(crate) fn list(
        &self,
        kind: Kind,
        q: &BTreeMap<String, String>,
    ) -> Result<Value, ScimError> {
        let filter = match q.get("filter").map(|f| f.trim()).filter(|f| !f.is_empty()) {
            Some(f) => Some(scim_filter::parse(f)?),
            None => None,
        };
        let num = |k: &str, d: i64| -> Result<i64, ScimError> {
            q.get(k).map_or(Ok(d), |v| {
                v.trim()
                    .parse()
                    .map_err(|_| invalid(format!("'{k}' must be an integer.")))
            })
        };
        let start = num("startIndex", 1)?.max(1) as usize;
        let count = num("count", MAX_RESULTS as i64)?.clamp(0, MAX_RESULTS as i64) as usize;
        let items: Vec<Value> = self
            .all(kind)
            .into_iter()
            .filter(|r| filter.as_ref().is_none_or(|f| f.matches(r)))
            .collect();
        let page: Vec<Value> = items
            .iter()
            .skip(start - 1)
            .take(count)
            .map(|r| project(r, q))
            .collect();
        Ok(
            json!({"schemas": [LIST_SCHEMA], "totalResults": items.len(), "startIndex": start,
            "itemsPerPage": page.len(), "Resources": page}),
        )
    }
}

/// Applies `attributes` / `excludedAttributes` (top-level granularity; `id`, `schemas` always kept).
pub(crate) fn project(res: &Value, q: &BTreeMap<String, String>) -> Value {
    let Some(m) = res.as_object() else {
        return res.clone();
    };
    let top = |a: &str| -> String {
        let (ent, rest) = scim_filter::strip_urn(a.trim());
        if ent {
            ENT_SCHEMA.to_lowercase()
        } else {
            rest.split('.').next().unwrap_or("").to_lowercase()
        }
    };
    let list = |k: &str| -> Vec<String> {
        q.get(k)
            .map(|s| {
                s.split(',')
                    .filter(|a| !a.trim().is_empty())
                    .map(top)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (incl, excl) = (list("attributes"), list("excludedAttributes"));
    let keep = |k: &String| {
        let l = k.to_lowercase();
        if l == "id" || l == "schemas" {
            return true;
        }
        if !incl.is_empty() {
            return incl.contains(&l) || l == "meta";
        }
        !excl.contains(&l)
    };
    Value::Object(
        m.iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}
