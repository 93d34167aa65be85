//! Unit tests of `mapping`: Entra's default mapping (SPEC §4) attribute by attribute, empty
//! sources on create and on update (through `plan` and `patch::attribute_ops`), unicode,
//! and overrides (`$select` and `config.example.toml`: `mapping_config_tests.rs`).

use std::collections::BTreeSet;

use super::*;
use crate::config::GroupMembers;
use crate::plan::{plan, Op, Plan, PlanOptions};
use crate::scim::patch::{attribute_ops, PatchStyle};
use crate::scim::path::{build_resource, extract};
use crate::scim::USER_SCHEMA;
use crate::state::{MirrorData, MirrorGroup, MirrorUser, SnapGroup, SnapUser, Snapshot};
use serde_json::json;

pub(super) fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

pub(super) fn full_user() -> Map<String, Value> {
    obj(json!({
        "userPrincipalName": "ana.lima@contoso.example", "displayName": "Ana Lima",
        "givenName": "Ana", "surname": "Lima", "mail": "ana@contoso.example",
        "jobTitle": "Engineer", "mailNickname": "ana", "preferredLanguage": "pt-BR",
        "businessPhones": ["+1 555 0100", "+1 555 0101"], "mobilePhone": "+1 555 0199",
        "streetAddress": "1 Main St", "city": "Springfield", "state": "IL",
        "postalCode": "62701", "country": "US", "employeeId": "4711", "department": "R&D",
        "accountEnabled": true, "officeLocation": "B7", "companyName": "Contoso"
    }))
}

pub(super) fn ent(attr: &str) -> String {
    format!("{ENTERPRISE}:{attr}")
}

fn attrs_of(pairs: &[(&str, &str)]) -> Attrs {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

#[test]
fn default_user_mapping_matches_spec() {
    let a = Mapping::default().map_user("id1", &full_user());
    let want = attrs_of(&[
        ("userName", "ana.lima@contoso.example"),
        ("displayName", "Ana Lima"),
        ("title", "Engineer"),
        ("emails[type eq \"work\"].value", "ana@contoso.example"),
        ("preferredLanguage", "pt-BR"),
        ("name.givenName", "Ana"),
        ("name.familyName", "Lima"),
        ("name.formatted", "Ana Lima"),
        ("externalId", "ana"),
        ("phoneNumbers[type eq \"work\"].value", "+1 555 0100"),
        ("phoneNumbers[type eq \"mobile\"].value", "+1 555 0199"),
        ("addresses[type eq \"work\"].streetAddress", "1 Main St"),
        ("addresses[type eq \"work\"].locality", "Springfield"),
        ("addresses[type eq \"work\"].region", "IL"),
        ("addresses[type eq \"work\"].postalCode", "62701"),
        ("addresses[type eq \"work\"].country", "US"),
        (&ent("employeeNumber"), "4711"),
        (&ent("department"), "R&D"),
    ]);
    assert_eq!(
        a, want,
        "no more, no less: active and manager come from the planner"
    );
    let m = Mapping::default();
    assert!(m.manager, "the manager reference is on by default");
    assert_eq!(m, Mapping::from_config(&MappingConfig::default()).unwrap());
    let g = m.map_group("g-1", &obj(json!({"displayName": "Sales", "mail": "s@x"})));
    assert_eq!(
        g,
        attrs_of(&[("displayName", "Sales"), ("externalId", "g-1")])
    );
}

#[test]
fn default_resource_has_the_shape_entra_sends() {
    let mut a = Mapping::default().map_user("id1", &full_user());
    a.insert("active".into(), json!(true));
    let r = build_resource(USER_SCHEMA, &a);
    let want = json!({
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": "ana.lima@contoso.example", "active": true, "displayName": "Ana Lima",
        "title": "Engineer", "preferredLanguage": "pt-BR", "externalId": "ana",
        "emails": [{"type": "work", "value": "ana@contoso.example"}],
        "name": {"givenName": "Ana", "familyName": "Lima", "formatted": "Ana Lima"},
        "phoneNumbers": [{"type": "mobile", "value": "+1 555 0199"}, {"type": "work", "value": "+1 555 0100"}],
        "addresses": [{"type": "work", "streetAddress": "1 Main St", "locality": "Springfield",
                       "region": "IL", "postalCode": "62701", "country": "US"}],
        ENTERPRISE: {"employeeNumber": "4711", "department": "R&D"}
    });
    assert_eq!(r, want);
}

#[test]
fn name_formatted_joins_the_non_empty_names() {
    let m = Mapping::default();
    let cases = [
        (json!("Ana"), json!("Lima"), Some("Ana Lima")),
        (json!("Ana"), Value::Null, Some("Ana")),
        (json!("  "), json!("Lima"), Some("Lima")),
        (Value::Null, Value::Null, None),
        (
            json!("Zoë"),
            json!("Ærøskøbing-李"),
            Some("Zoë Ærøskøbing-李"),
        ),
    ];
    for (given, sur, want) in cases {
        let mut u = full_user();
        u.insert("givenName".into(), given.clone());
        u.insert("surname".into(), sur.clone());
        let a = m.map_user("id1", &u);
        assert_eq!(
            a.get("name.formatted").and_then(Value::as_str),
            want,
            "{given} {sur}"
        );
    }
}

#[test]
fn empty_sources_are_omitted_and_join_skips_empty_parts() {
    let mut u = full_user();
    u.insert("jobTitle".into(), Value::Null);
    u.insert("surname".into(), json!("  "));
    u.insert("businessPhones".into(), json!([]));
    u.remove("city");
    let a = Mapping::default().map_user("id1", &u);
    assert!(!a.contains_key("title"));
    assert!(!a.contains_key("name.familyName"));
    assert!(!a.contains_key("phoneNumbers[type eq \"work\"].value"));
    assert!(!a.contains_key("addresses[type eq \"work\"].locality"));
    assert_eq!(a["name.formatted"], json!("Ana"));
}

#[test]
fn unicode_survives_mapping_and_case_changes() {
    let mut u = full_user();
    u.insert("displayName".into(), json!("Zoë Ærøskøbing 李小龍"));
    u.insert("givenName".into(), json!("ZOË"));
    let a = Mapping::default().map_user("id1", &u);
    assert_eq!(a["displayName"], json!("Zoë Ærøskøbing 李小龍"));
    let m = overrides(
        "[user]\nnickName = { lower = \"givenName\" }\ntitle = { upper = \"displayName\" }\n",
    )
    .unwrap();
    let a = m.map_user("id1", &u);
    assert_eq!(a["nickName"], json!("zoë"));
    assert_eq!(a["title"], json!("ZOË ÆRØSKØBING 李小龍"));
    let r = build_resource(USER_SCHEMA, &a);
    assert_eq!(
        extract(&r, "displayName"),
        Some(json!("Zoë Ærøskøbing 李小龍"))
    );
}

// ------------------------------------------------- through the planner and the PATCH body

fn options() -> PlanOptions {
    PlanOptions {
        group_members: GroupMembers::Direct,
        delete_groups_out_of_scope: true,
    }
}

/// One assigned user `u1` and one assigned group `g1` holding it.
fn world(props: Map<String, Value>) -> MirrorData {
    let mut m = MirrorData::default();
    m.users.insert(
        "u1".into(),
        MirrorUser {
            props,
            soft_deleted: false,
        },
    );
    m.assigned_users.insert("u1".into());
    let group = MirrorGroup {
        props: obj(json!({"displayName": "Sales"})),
        user_members: BTreeSet::from(["u1".to_string()]),
        group_members: BTreeSet::new(),
    };
    m.groups.insert("g1".into(), group);
    m.assigned_groups.insert("g1".into());
    m
}

fn run(mapping: &Mapping, props: &Map<String, Value>, snap: &Snapshot) -> Plan {
    plan(
        &world(props.clone()),
        snap,
        mapping,
        &BTreeSet::new(),
        &options(),
    )
}

/// The snapshot after the initial plan for `props` was pushed.
fn pushed(mapping: &Mapping, props: &Map<String, Value>) -> Snapshot {
    let mut s = Snapshot::default();
    for op in run(mapping, props, &Snapshot::default()).ops {
        match op {
            Op::CreateUser {
                entra_id,
                user_name,
                attrs,
                ..
            } => {
                let u = SnapUser {
                    scim_id: "s-1".into(),
                    user_name,
                    active: true,
                    attrs: attrs.attrs(),
                    manager: None,
                };
                s.users.insert(entra_id, u);
            }
            Op::CreateGroup {
                entra_id,
                display_name,
                attrs,
            } => {
                let g = SnapGroup {
                    scim_id: "sg-1".into(),
                    display_name,
                    attrs,
                    members: BTreeSet::from(["u1".to_string()]),
                };
                s.groups.insert(entra_id, g);
            }
            _ => {}
        }
    }
    assert_eq!(s.users.len() + s.groups.len(), 2, "{s:?}");
    s
}

/// The PATCH operations for `u1` when its props go from `before` to `after`.
fn update_ops(
    mapping: &Mapping,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Vec<Value> {
    let p = run(mapping, after, &pushed(mapping, before));
    match &p.ops[..] {
        [Op::UpdateUser { changes, attrs, .. }] => {
            attribute_ops(changes, &attrs.attrs(), PatchStyle::Rfc7644)
        }
        [] => Vec::new(),
        other => panic!("expected one update_user, got {other:?}"),
    }
}

fn remove(path: &str) -> Value {
    json!({"op": "remove", "path": path})
}

#[test]
fn every_emptied_source_is_omitted_on_create_and_removed_on_update() {
    let m = Mapping::default();
    let addr = |s: &str| format!("addresses[type eq \"work\"].{s}");
    let replace = |p: &str, v: &str| json!({"op": "replace", "path": p, "value": v});
    let cases: Vec<(&str, Value, Vec<Value>)> = vec![
        ("displayName", Value::Null, vec![remove("displayName")]),
        ("jobTitle", Value::Null, vec![remove("title")]),
        (
            "mail",
            Value::Null,
            vec![remove("emails[type eq \"work\"]")],
        ),
        (
            "preferredLanguage",
            json!(""),
            vec![remove("preferredLanguage")],
        ),
        (
            "givenName",
            Value::Null,
            vec![replace("name.formatted", "Lima"), remove("name.givenName")],
        ),
        (
            "surname",
            json!(" "),
            vec![remove("name.familyName"), replace("name.formatted", "Ana")],
        ),
        ("mailNickname", Value::Null, vec![remove("externalId")]),
        (
            "businessPhones",
            json!([]),
            vec![remove("phoneNumbers[type eq \"work\"]")],
        ),
        (
            "mobilePhone",
            Value::Null,
            vec![remove("phoneNumbers[type eq \"mobile\"]")],
        ),
        (
            "streetAddress",
            Value::Null,
            vec![remove(&addr("streetAddress"))],
        ),
        ("city", Value::Null, vec![remove(&addr("locality"))]),
        ("state", Value::Null, vec![remove(&addr("region"))]),
        ("postalCode", Value::Null, vec![remove(&addr("postalCode"))]),
        ("country", Value::Null, vec![remove(&addr("country"))]),
        (
            "employeeId",
            Value::Null,
            vec![remove(&ent("employeeNumber"))],
        ),
        ("department", Value::Null, vec![remove(&ent("department"))]),
    ];
    let before = full_user();
    for (prop, empty, want) in cases {
        let mut after = before.clone();
        after.insert(prop.into(), empty);
        assert_eq!(update_ops(&m, &before, &after), want, "{prop} emptied");
        let created = run(&m, &after, &Snapshot::default());
        let Some(Op::CreateUser { attrs, .. }) = created.ops.first() else {
            panic!("{prop}: {created:?}");
        };
        let attrs = &attrs.attrs();
        let resource = build_resource(USER_SCHEMA, attrs);
        for op in &want {
            let path = op["path"].as_str().unwrap();
            if op["op"] == json!("remove") {
                assert!(
                    !attrs.keys().any(|k| k.starts_with(path)),
                    "{prop}: {path} sent on create"
                );
                assert_eq!(extract(&resource, path), None, "{prop}: {resource}");
            }
        }
    }
}

#[test]
fn emptied_parts_of_one_element_or_name_go_in_one_patch() {
    let m = Mapping::default();
    let before = full_user();
    let mut after = before.clone();
    for p in ["streetAddress", "city", "state", "postalCode", "country"] {
        after.insert(p.into(), Value::Null);
    }
    let ops = update_ops(&m, &before, &after);
    assert_eq!(
        ops,
        [remove("addresses[type eq \"work\"]")],
        "no {{type: work}} husk left"
    );
    let mut after = before.clone();
    after.insert("givenName".into(), Value::Null);
    after.insert("surname".into(), Value::Null);
    let ops = update_ops(&m, &before, &after);
    assert_eq!(
        ops,
        [
            remove("name.familyName"),
            remove("name.formatted"),
            remove("name.givenName")
        ]
    );
    let mut after = before.clone();
    after.insert("jobTitle".into(), json!("Staff Engineer"));
    let ops = update_ops(&m, &before, &after);
    assert_eq!(
        ops,
        [json!({"op": "replace", "path": "title", "value": "Staff Engineer"})]
    );
    assert_eq!(update_ops(&m, &before, &before), Vec::<Value>::new());
}

#[test]
fn mapping_changes_touch_only_the_changed_attribute() {
    let before = full_user();
    let snap = pushed(&Mapping::default(), &before);
    let changed = overrides("[user]\ntitle = { upper = \"jobTitle\" }\n").unwrap();
    let p = run(&changed, &before, &snap);
    let [Op::UpdateUser { changes, attrs, .. }] = &p.ops[..] else {
        panic!("{p:?}");
    };
    let ops = attribute_ops(changes, &attrs.attrs(), PatchStyle::Rfc7644);
    assert_eq!(
        ops,
        [json!({"op": "replace", "path": "title", "value": "ENGINEER"})]
    );

    let added = overrides("[user]\nnickName = \"companyName\"\n").unwrap();
    let p = run(&added, &before, &snap);
    let [Op::UpdateUser { changes, attrs, .. }] = &p.ops[..] else {
        panic!("{p:?}");
    };
    let ops = attribute_ops(changes, &attrs.attrs(), PatchStyle::Rfc7644);
    assert_eq!(
        ops,
        [json!({"op": "add", "path": "nickName", "value": "Contoso"})]
    );

    let off = overrides("[user]\ntitle = false\nexternalId = false\n[group]\nexternalId = false\n")
        .unwrap();
    let p = run(&off, &before, &snap);
    assert_eq!(
        p.ops,
        [],
        "a switched-off attribute is left alone in HERE, not removed"
    );
}

// ------------------------------------------------------------------------ overrides

pub(super) fn overrides(text: &str) -> Result<Mapping, MappingError> {
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
        json!({"extensionAttribute1": null, "extensionAttribute3": "E-3"}),
    );
    let a = m.map_user("id", &u);
    assert_eq!(a["externalId"], json!("E-3"));
    assert!(!a.contains_key("title"));
    assert_eq!(a[&ent("organization")], json!("Contoso"));
    assert_eq!(a["nickName"], json!("x-ana"));
    assert_eq!(
        m.user
            .iter()
            .filter(|a| a.scim_path == "externalId")
            .count(),
        1
    );
    let select = m.user_select(&[]);
    assert!(select.contains(&"onPremisesExtensionAttributes".to_string()));
    assert!(
        !select.contains(&"jobTitle".to_string()),
        "title is off: {select:?}"
    );
}

#[test]
fn override_paths_are_case_insensitive_like_scim() {
    let m = overrides("[user]\nDisplayName = \"mail\"\n\"EMAILS[type eq \\\"Work\\\"].value\" = \"userPrincipalName\"\n")
        .unwrap();
    let paths: Vec<&str> = m.user_paths().collect();
    assert_eq!(
        paths
            .iter()
            .filter(|p| p.eq_ignore_ascii_case("displayName"))
            .count(),
        1
    );
    assert!(
        paths.contains(&"displayName"),
        "the default's spelling is kept: {paths:?}"
    );
    assert!(
        paths.contains(&"emails[type eq \"work\"].value"),
        "{paths:?}"
    );
    let a = m.map_user("id", &full_user());
    assert_eq!(a["displayName"], json!("ana@contoso.example"));
    assert_eq!(
        a["emails[type eq \"work\"].value"],
        json!("ana.lima@contoso.example")
    );
    let e = overrides("[user]\ntitle = \"mail\"\nTitle = \"mail\"\n").unwrap_err();
    assert!(e.message.contains("case-insensitive"), "{e}");
    let m = overrides(&format!(
        "[user]\n\"{}\" = false\n",
        MANAGER_PATH.to_uppercase()
    ))
    .unwrap();
    assert!(!m.manager);
    assert!(!m.user_select(&[]).contains(&"manager".to_string()));
}

#[test]
fn reserved_and_conflicting_overrides_are_refused() {
    for (text, path) in [
        ("[user]\nactive = \"accountEnabled\"\n", "active"),
        ("[user]\nid = \"mail\"\n", "id"),
        ("[user]\nmeta = { constant = \"x\" }\n", "meta"),
        ("[user]\nGroups = \"department\"\n", "Groups"),
        ("[group]\nmembers = \"mail\"\n", "members"),
        ("[user]\nname = \"displayName\"\n", "name"),
        ("[user]\nemails = \"mail\"\n", "emails"),
        ("[user]\n\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager\" = \"mail\"\n",
         MANAGER_PATH),
    ] {
        let e = overrides(text).expect_err(text);
        assert_eq!(e.path, path, "{e}");
    }
    let e = overrides("[user]\nname = \"displayName\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("name.") && e.contains("conflicts"), "{e}");
    let ok = "[user]\nname = \"displayName\"\n\"name.givenName\" = false\n\"name.familyName\" = false\n\"name.formatted\" = false\n";
    assert!(
        overrides(ok).is_ok(),
        "a whole attribute is fine once its parts are off"
    );
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
    assert!(overrides("[group]\ndisplayName = false\n").is_err());
    assert!(overrides("[user]\ntitle = { constant = 3 }\n").is_err());
    assert!(overrides("[user]\ntitle = { bogus = \"x\" }\n").is_err());
    assert!(
        overrides("[user]\ntitle = \"onPremisesExtensionAttributes.extensionAttribute16\"\n")
            .is_err()
    );
    assert!(overrides(
        "[user]\nx = { property = \"extension_0123456789abcdef0123456789abcdef_costCenter\" }\n"
    )
    .is_ok());
}

#[test]
fn attribute_text_from_values_is_the_text_of_the_map() {
    let values: Vec<(&str, std::borrow::Cow<str>)> = vec![
        ("Zeta", "z".into()),
        ("accountName", "a\"b\\c\n\u{1}\u{7f}é/".into()),
        ("active", "ignored".into()),
        ("emails[type eq \"work\"].value", "e".into()),
        ("userName", "u@x".into()),
    ];
    for active in [true, false] {
        let mut attrs: Attrs = values
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        attrs.insert("active".into(), Value::Bool(active));
        assert_eq!(
            AttrText::from_values(&values, active),
            AttrText::from_attrs(&attrs)
        );
    }
    assert_eq!(
        AttrText::from_values(&[], true).as_str(),
        r#"{"active":true}"#
    );
}

#[test]
fn attribute_text_escapes_every_character_as_serde_json_does() {
    let mut texts: Vec<String> = (0u8..0x80).map(|b| (b as char).to_string()).collect();
    // escapes at every position of a word and its tail, in runs, next to multi-byte text
    for at in 0..20 {
        let mut t: String = "abcdefghijklmnopqrst".into();
        t.insert(at, '"');
        texts.push(t.clone());
        t.insert(at, '\u{1f}');
        texts.push(format!("é{t}\\\\ü"));
    }
    texts.push("\u{7f}\u{80}\u{2028}€😀".into());
    for text in texts {
        let values = [("k\"ey\n", std::borrow::Cow::from(text.as_str()))];
        let attrs: Attrs = [
            ("k\"ey\n".to_string(), Value::String(text.clone())),
            ("active".to_string(), Value::Bool(true)),
        ]
        .into();
        assert_eq!(
            AttrText::from_values(&values, true),
            AttrText::from_attrs(&attrs),
            "{text:?}"
        );
    }
}
