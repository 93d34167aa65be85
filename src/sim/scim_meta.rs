//! SCIM discovery endpoints (RFC 7643 §5-7): `/ServiceProviderConfig`, `/Schemas`,
//! `/ResourceTypes`, so a client can read capabilities (patch, filter.maxResults, bulk) at startup.

use serde_json::{json, Value};

use crate::sim::scim::{
    ScimError, ENT_SCHEMA, GROUP_SCHEMA, LIST_SCHEMA, MAX_RESULTS, USER_SCHEMA,
};
use crate::sim::scim_store::Store;

/// Answers a discovery path, or `None` when `top` is not a discovery endpoint.
pub(crate) fn discovery(
    s: &Store,
    top: &str,
    id: Option<&str>,
    segs: usize,
) -> Option<Result<Value, ScimError>> {
    let items = match top {
        "ServiceProviderConfig" if segs == 1 => return Some(Ok(service_provider_config(s))),
        "Schemas" => schemas(),
        "ResourceTypes" => resource_types(&s.base_url),
        _ => return None,
    };
    Some(match (id, segs) {
        (None, _) => Ok(
            json!({"schemas": [LIST_SCHEMA], "totalResults": items.len(), "startIndex": 1,
            "itemsPerPage": items.len(), "Resources": items}),
        ),
        (Some(id), 2) => items
            .into_iter()
            .find(|i| i["id"] == id)
            .ok_or_else(|| ScimError::new(404, None, format!("Resource {id} not found."))),
        _ => Err(ScimError::new(404, None, "Endpoint not found.")),
    })
}

fn service_provider_config(s: &Store) -> Value {
    let bulk = match &s.faults.bulk {
        Some(b) => {
            let payload = b.advertised_payload_size.unwrap_or(b.max_payload_size);
            json!({"supported": true, "maxOperations": b.max_operations, "maxPayloadSize": payload})
        }
        None => json!({"supported": false, "maxOperations": 0, "maxPayloadSize": 0}),
    };
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://resources.here.io/docs/guide/admins/integrations/scim-ms-entra",
        "patch": {"supported": true},
        "bulk": bulk,
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{"type": "oauthbearertoken", "name": "OAuth Bearer Token",
            "description": "Authentication scheme using the OAuth Bearer Token Standard", "primary": true}],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{}/ServiceProviderConfig", s.base_url)},
    })
}

fn resource_types(base: &str) -> Vec<Value> {
    let rt = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
    vec![
        json!({"schemas": [rt], "id": "User", "name": "User", "endpoint": "/Users", "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": ENT_SCHEMA, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}}),
        json!({"schemas": [rt], "id": "Group", "name": "Group", "endpoint": "/Groups", "schema": GROUP_SCHEMA,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")}}),
    ]
}

/// One attribute definition.
fn attr(
    name: &str,
    typ: &str,
    multi: bool,
    unique: &str,
    exact: bool,
    sub: Option<Vec<Value>>,
) -> Value {
    let mut a = json!({"name": name, "type": typ, "multiValued": multi, "required": false,
        "caseExact": exact, "mutability": "readWrite", "returned": "default", "uniqueness": unique});
    if let Some(sub) = sub {
        a["subAttributes"] = Value::Array(sub);
    }
    a
}

fn s(name: &str) -> Value {
    attr(name, "string", false, "none", false, None)
}

fn schemas() -> Vec<Value> {
    let mv = || {
        Some(vec![
            s("value"),
            s("type"),
            attr("primary", "boolean", false, "none", false, None),
        ])
    };
    let mut user_name = attr("userName", "string", false, "server", false, None);
    user_name["required"] = json!(true);
    let mut display = attr("displayName", "string", false, "server", false, None);
    display["required"] = json!(true);
    let address_subs = [
        "type",
        "streetAddress",
        "locality",
        "region",
        "postalCode",
        "country",
        "formatted",
    ];
    let member_subs = vec![
        attr("value", "string", false, "none", true, None),
        attr("$ref", "reference", false, "none", false, None),
        s("display"),
        s("type"),
    ];
    let docs = [
        (
            USER_SCHEMA,
            "User",
            "User Account",
            vec![
                user_name,
                s("displayName"),
                s("title"),
                s("preferredLanguage"),
                attr("externalId", "string", false, "none", true, None),
                attr("active", "boolean", false, "none", false, None),
                attr(
                    "name",
                    "complex",
                    false,
                    "none",
                    false,
                    Some(vec![s("formatted"), s("givenName"), s("familyName")]),
                ),
                attr("emails", "complex", true, "none", false, mv()),
                attr("phoneNumbers", "complex", true, "none", false, mv()),
                attr(
                    "addresses",
                    "complex",
                    true,
                    "none",
                    false,
                    Some(address_subs.iter().map(|n| s(n)).collect()),
                ),
            ],
        ),
        (
            GROUP_SCHEMA,
            "Group",
            "Group",
            vec![
                display,
                attr("externalId", "string", false, "none", true, None),
                attr("members", "complex", true, "none", false, Some(member_subs)),
            ],
        ),
        (
            ENT_SCHEMA,
            "EnterpriseUser",
            "Enterprise User",
            vec![
                s("employeeNumber"),
                s("department"),
                s("costCenter"),
                s("organization"),
                s("division"),
                attr(
                    "manager",
                    "complex",
                    false,
                    "none",
                    false,
                    Some(vec![s("value"), s("displayName")]),
                ),
            ],
        ),
    ];
    docs.into_iter()
        .map(|(id, name, desc, attrs)| {
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"], "id": id, "name": name,
                "description": desc, "attributes": attrs, "meta": {"resourceType": "Schema"}})
        })
        .collect()
}
