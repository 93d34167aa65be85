//! Unit tests of `mapping`: the `$select` a mapping asks Graph for, and the mapping
//! examples documented in `config.example.toml`.

use std::path::Path;

use super::tests::{ent, full_user, obj, overrides};
use super::*;
use crate::config::Config;
use serde_json::json;

// ------------------------------------------------------------------------ $select

#[test]
fn select_lists_exactly_the_mapped_properties() {
    let m = Mapping::default();
    let want = [
        "accountEnabled",
        "businessPhones",
        "city",
        "country",
        "department",
        "displayName",
        "employeeId",
        "givenName",
        "jobTitle",
        "mail",
        "mailNickname",
        "manager",
        "mobilePhone",
        "postalCode",
        "preferredLanguage",
        "state",
        "streetAddress",
        "surname",
        "userPrincipalName",
    ];
    assert_eq!(m.user_select(&[]), want);
    let with_scope = m.user_select(&["officeLocation".to_string()]);
    assert!(
        with_scope.contains(&"officeLocation".to_string()),
        "scope filters add theirs"
    );
    assert_eq!(m.group_select(), vec!["displayName", "members"]);
    let m = overrides(
        "[user]\nnickName = \"extension_0123456789abcdef0123456789abcdef_costCenter\"\n[group]\ndescription = \"description\"\n",
    )
    .unwrap();
    assert!(m
        .user_select(&[])
        .contains(&"extension_0123456789abcdef0123456789abcdef_costCenter".to_string()));
    assert_eq!(
        m.group_select(),
        vec!["description", "displayName", "members"]
    );
}

// ------------------------------------------------------------------ config.example.toml

const EXAMPLE: &str = include_str!("../config.example.toml");

#[test]
fn config_example_mapping_sections_parse_when_uncommented() {
    let start = EXAMPLE
        .find("# [mapping.user]")
        .expect("the example documents [mapping.user]");
    let uncommented: Vec<&str> = EXAMPLE[start..]
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .or_else(|| l.strip_prefix('#'))
                .unwrap_or(l)
        })
        .collect();
    let text = format!("{}{}\n", &EXAMPLE[..start], uncommented.join("\n"));
    let cfg = Config::parse(&text, Path::new("config.example.toml")).expect("parses");
    assert_eq!(
        (cfg.mapping.user.len(), cfg.mapping.group.len()),
        (5, 1),
        "{:?}",
        cfg.mapping
    );
    let m = Mapping::from_config(&cfg.mapping).expect("the examples are valid overrides");
    assert!(!m.manager);
    let mut u = full_user();
    u.insert(
        "onPremisesExtensionAttributes".into(),
        json!({"extensionAttribute1": "EXT-1"}),
    );
    u.insert("mail".into(), json!("Ana@Contoso.Example"));
    let a = m.map_user("id", &u);
    assert_eq!(a["externalId"], json!("EXT-1"));
    assert!(!a.contains_key("title"));
    assert_eq!(a[&ent("organization")], json!("Contoso"));
    assert_eq!(
        a["emails[type eq \"work\"].value"],
        json!("ana@contoso.example")
    );
    let g = m.map_group("g", &obj(json!({"displayName": "Sales"})));
    assert_eq!(g["displayName"], json!("Entra: Sales"));
}

/// The TOML values a documentation line starts with (`{ a = 1 } / { b = 2 }  text`).
fn leading_values(mut rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let parses =
            |n: usize| toml::from_str::<toml::Table>(&format!("x = {}", &rest[..n])).is_ok();
        let Some(end) = (1..=rest.len())
            .filter(|n| rest.is_char_boundary(*n))
            .find(|n| parses(*n))
        else {
            return out;
        };
        out.push(rest[..end].to_string());
        match rest[end..].strip_prefix(" / ") {
            Some(next) => rest = next,
            None => return out,
        }
    }
}

#[test]
fn config_example_value_forms_all_parse() {
    let block_start = EXAMPLE
        .find("The value is one of:")
        .expect("documented forms");
    let block_end = block_start + EXAMPLE[block_start..].find("# [mapping.user]").unwrap();
    let mut forms = Vec::new();
    for line in EXAMPLE[block_start..block_end].lines().skip(1) {
        let Some(rest) = line.strip_prefix("#   ").filter(|r| !r.starts_with(' ')) else {
            continue; // continuation lines of the explanations
        };
        forms.extend(leading_values(rest));
    }
    assert_eq!(forms.len(), 8, "{forms:?}");
    let property_examples = [
        "\"department\"",
        "\"onPremisesExtensionAttributes.extensionAttribute1\"",
        "\"extension_0123456789abcdef0123456789abcdef_costCenter\"",
    ];
    for form in &forms {
        let candidates: Vec<&str> = if form == "\"graphProperty\"" {
            property_examples.to_vec()
        } else {
            vec![form.as_str()]
        };
        for c in candidates {
            let m = overrides(&format!("[user]\nnickName = {c}\n"))
                .unwrap_or_else(|e| panic!("{c}: {e}"));
            let mapped = m.user_paths().any(|p| p == "nickName");
            assert_eq!(mapped, c != "false", "{c}");
        }
    }
}
