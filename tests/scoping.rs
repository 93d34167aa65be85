//! Attribute scoping filters and nested groups (issue 7): every operator as Entra documents
//! it, config errors that name key and line, users leaving the filter, and transitive
//! group membership end to end.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{run_binary, Harness};
use entra_here_sync::config::{Config, ScopeClause};
use entra_here_sync::cycle::CycleOptions;
use entra_here_sync::demo::upn;
use entra_here_sync::plan::filter::{Operator, ScopeFilter};
use serde_json::{json, Map, Value};

fn clause(attribute: &str, operator: &str, value: Option<&str>, group: Option<u32>) -> ScopeClause {
    ScopeClause {
        attribute: attribute.into(),
        operator: operator.into(),
        value: value.map(str::to_string),
        group,
    }
}

fn props(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// (attribute, operator, value, user properties, in scope?)
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Value,
    bool,
);

#[test]
fn every_operator_includes_and_excludes_as_entra_documents() {
    let no = json!({});
    let cases: Vec<Case> = vec![
        // EQUALS / NOT EQUALS: whole value, case-insensitive; empty never matches
        (
            "department",
            "EQUALS",
            Some("Sales"),
            json!({"department": "Sales"}),
            true,
        ),
        (
            "department",
            "EQUALS",
            Some("Sales"),
            json!({"department": "sALES"}),
            true,
        ),
        (
            "department",
            "EQUALS",
            Some("Sales"),
            json!({"department": "Sales EMEA"}),
            false,
        ),
        ("department", "EQUALS", Some("Sales"), no.clone(), false),
        (
            "department",
            "NOT EQUALS",
            Some("Sales"),
            json!({"department": "Marketing"}),
            true,
        ),
        (
            "department",
            "NOT EQUALS",
            Some("Sales"),
            json!({"department": "SALES"}),
            false,
        ),
        ("department", "NOT EQUALS", Some("Sales"), no.clone(), false),
        // IS TRUE / IS FALSE: booleans (and "true"/"false" text of extension attributes)
        (
            "accountEnabled",
            "IS TRUE",
            None,
            json!({"accountEnabled": true}),
            true,
        ),
        (
            "accountEnabled",
            "IS TRUE",
            None,
            json!({"accountEnabled": false}),
            false,
        ),
        ("accountEnabled", "IS TRUE", None, no.clone(), false),
        (
            "accountEnabled",
            "IS FALSE",
            None,
            json!({"accountEnabled": false}),
            true,
        ),
        (
            "accountEnabled",
            "IS FALSE",
            None,
            json!({"accountEnabled": true}),
            false,
        ),
        ("accountEnabled", "IS FALSE", None, no.clone(), false),
        (
            "onPremisesExtensionAttributes.extensionAttribute2",
            "IS TRUE",
            None,
            json!({"onPremisesExtensionAttributes": {"extensionAttribute2": "True"}}),
            true,
        ),
        // IS NULL / IS NOT NULL: absent, null and empty text are all empty
        ("jobTitle", "IS NULL", None, no.clone(), true),
        ("jobTitle", "IS NULL", None, json!({"jobTitle": null}), true),
        ("jobTitle", "IS NULL", None, json!({"jobTitle": ""}), true),
        (
            "jobTitle",
            "IS NULL",
            None,
            json!({"jobTitle": "Engineer"}),
            false,
        ),
        (
            "jobTitle",
            "IS NOT NULL",
            None,
            json!({"jobTitle": "Engineer"}),
            true,
        ),
        ("jobTitle", "IS NOT NULL", None, no.clone(), false),
        // REGEX MATCH / NOT REGEX MATCH: found anywhere (like .NET IsMatch); empty fails both
        (
            "userPrincipalName",
            "REGEX MATCH",
            Some(".*@contoso\\.com$"),
            json!({"userPrincipalName": "a@contoso.com"}),
            true,
        ),
        (
            "userPrincipalName",
            "REGEX MATCH",
            Some(".*@contoso\\.com$"),
            json!({"userPrincipalName": "a@fabrikam.com"}),
            false,
        ),
        (
            "employeeId",
            "REGEX MATCH",
            Some("([1-9][0-9])"),
            json!({"employeeId": "42"}),
            true,
        ),
        (
            "employeeId",
            "REGEX MATCH",
            Some("([1-9][0-9])"),
            json!({"employeeId": "7"}),
            false,
        ),
        (
            "employeeId",
            "REGEX MATCH",
            Some("^[0-9]+$"),
            no.clone(),
            false,
        ),
        (
            "userPrincipalName",
            "NOT REGEX MATCH",
            Some("@contoso\\.com$"),
            json!({"userPrincipalName": "a@fabrikam.com"}),
            true,
        ),
        (
            "userPrincipalName",
            "NOT REGEX MATCH",
            Some("@contoso\\.com$"),
            json!({"userPrincipalName": "a@contoso.com"}),
            false,
        ),
        (
            "userPrincipalName",
            "NOT REGEX MATCH",
            Some("@contoso\\.com$"),
            no.clone(),
            false,
        ),
        // GREATER_THAN / LESS_THAN: integers only
        (
            "employeeId",
            "GREATER_THAN",
            Some("1000"),
            json!({"employeeId": "1001"}),
            true,
        ),
        (
            "employeeId",
            "GREATER_THAN",
            Some("1000"),
            json!({"employeeId": "1000"}),
            false,
        ),
        (
            "employeeId",
            "GREATER_THAN",
            Some("1000"),
            json!({"employeeId": "E-2000"}),
            false,
        ),
        (
            "employeeId",
            "GREATER_THAN",
            Some("1000"),
            no.clone(),
            false,
        ),
        (
            "employeeId",
            "LESS_THAN",
            Some("1000"),
            json!({"employeeId": "999"}),
            true,
        ),
        (
            "employeeId",
            "LESS_THAN",
            Some("1000"),
            json!({"employeeId": "1000"}),
            false,
        ),
        (
            "employeeId",
            "LESS_THAN",
            Some("1000"),
            json!({"employeeId": 5}),
            true,
        ),
        // Includes / Not Includes: one of a comma-separated list, case-insensitive
        (
            "department",
            "Includes",
            Some("Sales, Marketing"),
            json!({"department": "marketing"}),
            true,
        ),
        (
            "department",
            "Includes",
            Some("Sales, Marketing"),
            json!({"department": "Sales"}),
            true,
        ),
        (
            "department",
            "Includes",
            Some("Sales, Marketing"),
            json!({"department": "Sal"}),
            false,
        ),
        (
            "department",
            "Includes",
            Some("Sales, Marketing"),
            json!({"department": "Support"}),
            false,
        ),
        (
            "department",
            "Includes",
            Some("Sales, Marketing"),
            no.clone(),
            false,
        ),
        (
            "department",
            "Not Includes",
            Some("Sales, Marketing"),
            json!({"department": "Support"}),
            true,
        ),
        (
            "department",
            "Not Includes",
            Some("Sales, Marketing"),
            json!({"department": "SALES"}),
            false,
        ),
        (
            "department",
            "Not Includes",
            Some("Sales, Marketing"),
            no.clone(),
            false,
        ),
    ];
    for (attribute, operator, value, user, want) in cases {
        let f = ScopeFilter::compile(&[clause(attribute, operator, value, None)]).unwrap();
        assert_eq!(
            f.matches(&props(user.clone())),
            want,
            "{attribute} {operator} {value:?} on {user}"
        );
        assert_eq!(f.check(&props(user.clone())).is_ok(), want);
    }
}

#[test]
fn operator_spellings_and_filter_groups() {
    for (text, op) in [
        ("NOT_EQUALS", Operator::NotEquals),
        ("not equals", Operator::NotEquals),
        ("Greater_Than", Operator::GreaterThan),
        ("REGEX_MATCH", Operator::RegexMatch),
        ("includes", Operator::Includes),
        ("NOT INCLUDES", Operator::NotIncludes),
        ("is  not  null", Operator::IsNotNull),
    ] {
        assert_eq!(Operator::parse(text), Some(op), "{text}");
    }
    // (department EQUALS Sales AND jobTitle IS NOT NULL) OR (employeeId GREATER_THAN 5000)
    let f = ScopeFilter::compile(&[
        clause("department", "EQUALS", Some("Sales"), None),
        clause("employeeId", "GREATER_THAN", Some("5000"), Some(2)),
        clause("jobTitle", "IS NOT NULL", None, Some(1)),
    ])
    .unwrap();
    assert_eq!(f.properties(), ["department", "employeeId", "jobTitle"]);
    let sales = json!({"department": "Sales", "jobTitle": "Rep", "employeeId": "1"});
    let untitled = json!({"department": "Sales", "employeeId": "1"});
    let senior = json!({"department": "R&D", "employeeId": "9000"});
    assert!(f.matches(&props(sales)));
    assert!(f.matches(&props(senior)));
    let why = f.check(&props(untitled)).unwrap_err();
    assert_eq!(
        why,
        "filtered out by clause 3 (jobTitle IS NOT NULL; jobTitle is empty) and by clause 2 (employeeId GREATER_THAN \"5000\"; employeeId is \"1\")"
    );
    assert!(
        ScopeFilter::compile(&[]).unwrap().matches(&Map::new()),
        "no clause: all in scope"
    );
}

const BASE: &str = "[graph]\ntenant_id = \"t\"\nclient_id = \"c\"\nservice_principal_id = \"sp\"\nclient_secret_env = \"X\"\n\n[here]\nbase_url = \"https://acme.is.here.io/scim/api/v2\"\ntoken_env = \"Y\"\n\n[[sync.scope_filter]]\nattribute = \"department\"\noperator = \"EQUALS\"\nvalue = \"Sales\"\n\n[[sync.scope_filter]]\n";

#[test]
fn invalid_clauses_are_config_errors_naming_key_and_line() {
    // the second clause starts at line 16
    let cases = [
        (
            "attribute = \"department\"\noperator = \"LIKE\"\nvalue = \"x\"\n",
            "sync.scope_filter[2].operator",
            18,
            "unknown operator \"LIKE\"",
        ),
        (
            "attribute = \"mail\"\noperator = \"REGEX MATCH\"\nvalue = \"(unclosed\"\n",
            "sync.scope_filter[2].value",
            19,
            "not a valid regular expression",
        ),
        (
            "attribute = \"mail\"\noperator = \"EQUALS\"\n",
            "sync.scope_filter[2].value",
            16,
            "EQUALS needs a `value`",
        ),
        (
            "attribute = \"accountEnabled\"\noperator = \"IS TRUE\"\nvalue = \"true\"\n",
            "sync.scope_filter[2].value",
            19,
            "IS TRUE takes no value",
        ),
        (
            "attribute = \"favouriteColour\"\noperator = \"IS NULL\"\n",
            "sync.scope_filter[2].attribute",
            17,
            "unknown Graph user property \"favouriteColour\"",
        ),
        (
            "attribute = \"otherMails\"\noperator = \"IS NULL\"\n",
            "sync.scope_filter[2].attribute",
            17,
            "multi-valued",
        ),
        (
            "attribute = \"employeeId\"\noperator = \"LESS_THAN\"\nvalue = \"ten\"\n",
            "sync.scope_filter[2].value",
            19,
            "not an integer",
        ),
        (
            "attribute = \"department\"\noperator = \"Includes\"\nvalue = \"Sales,,R&D\"\n",
            "sync.scope_filter[2].value",
            19,
            "without empty entries",
        ),
        (
            "attribute = \"department\"\noperator = \"IS NULL\"\ngroup = 0\n",
            "sync.scope_filter[2].group",
            19,
            "numbered from 1",
        ),
    ];
    for (second, key, line, message) in cases {
        let text = format!("{BASE}{second}");
        let e = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        assert!(
            e.contains(&format!("line {line}")),
            "{key} line {line}: {e}"
        );
        assert!(e.contains(message), "{message}: {e}");
    }
    let e = Config::parse(
        &format!("{BASE}attribute = \"x\"\nbogus = 1\n"),
        Path::new("c.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bogus"),
        "unknown keys in a clause are refused: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_regex_makes_the_binary_exit_2_naming_key_and_line() {
    let h = Harness::new("\n[[sync.scope_filter]]\nattribute = \"userPrincipalName\"\noperator = \"REGEX MATCH\"\nvalue = \"[a-z\"\n").await;
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("value = \"[a-z\""))
        .unwrap()
        + 1;
    for args in [
        &["sync"][..],
        &["sync", "--user", "x@y"][..],
        &["check"][..],
    ] {
        let out = run_binary(&h, args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("`sync.scope_filter[1].value`"), "{stderr}");
        assert!(
            stderr.contains(&format!("line {line}")),
            "line {line}: {stderr}"
        );
        assert!(stderr.contains("regular expression"), "{stderr}");
    }
    assert!(h.sim.scim.request_log().is_empty(), "nothing ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_whose_department_leaves_the_filter_is_deactivated_next_cycle() {
    let extra = "\n[sync]\nmax_deactivations = 0\n\n[[sync.scope_filter]]\nattribute = \"department\"\noperator = \"EQUALS\"\nvalue = \"sales\"\n";
    let h = Harness::new(extra).await;
    let ids: Vec<String> = (1..=8).map(|i| h.add_user(i)).collect();
    ids.iter().for_each(|id| h.sim.graph.assign(id));
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.users_created),
        (0, 2),
        "Sales: users 1 and 5: {s:?}"
    );
    assert!(
        h.sim.scim.find_user(&upn(2)).is_none(),
        "R&D is filtered out"
    );

    h.sim
        .graph
        .update_user(&ids[4], json!({"department": "Marketing"}));
    let braked = h.sync().await;
    assert_eq!(
        braked.exit_code, 4,
        "the brake counts filter deactivations: {braked:?}"
    );
    assert_eq!(
        h.sim.scim.find_user(&upn(5)).unwrap()["active"],
        json!(true)
    );

    let allowed = h
        .sync_with(CycleOptions {
            allow_mass_deactivation: true,
            ..CycleOptions::default()
        })
        .await;
    assert_eq!(
        (allowed.exit_code, allowed.users_deactivated),
        (0, 1),
        "{allowed:?}"
    );
    assert_eq!(
        h.sim.scim.find_user(&upn(5)).unwrap()["active"],
        json!(false)
    );
    assert_eq!(
        h.sim.scim.find_user(&upn(1)).unwrap()["active"],
        json!(true)
    );
    let history = h.state().history(&upn(5)).unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.op, "deactivate_user");
    let reason = last.changes["reason"].as_str().unwrap();
    assert!(
        reason.contains("clause 1") && reason.contains("\"Marketing\""),
        "{reason}"
    );

    h.sim
        .graph
        .update_user(&ids[4], json!({"department": "Sales"}));
    let back = h.sync().await;
    assert_eq!((back.exit_code, back.users_reactivated), (0, 1), "{back:?}");
}

/// HERE members (SCIM ids) of the group with this displayName.
fn here_members(h: &Harness, name: &str) -> Vec<String> {
    let g = h.sim.scim.find_group(name).expect("group in HERE");
    common::member_ids(&g).into_iter().collect()
}

fn scim_id(h: &Harness, i: usize) -> String {
    h.sim.scim.find_user(&upn(i)).expect("user in HERE")["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitive_members_two_levels_down_are_provisioned_and_leave_with_the_nesting() {
    let h = Harness::new("\n[sync]\ngroup_members = \"transitive\"\n").await;
    let (direct, deep) = (h.add_user(1), h.add_user(2));
    let top = h.sim.graph.add_group("Top", &[&direct]);
    let middle = h.sim.graph.add_group("Middle", &[]);
    let bottom = h.sim.graph.add_group("Bottom", &[&deep]);
    h.sim.graph.add_member(&top, &middle);
    h.sim.graph.add_member(&middle, &bottom);
    h.sim.graph.assign(&top);
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.users_created, s.groups_created),
        (0, 2, 1),
        "{s:?}"
    );
    let mut members = here_members(&h, "Top");
    members.sort();
    let mut want = vec![scim_id(&h, 1), scim_id(&h, 2)];
    want.sort();
    assert_eq!(
        members, want,
        "the deep member is listed in the assigned group"
    );
    assert!(
        h.sim.scim.find_group("Middle").is_none(),
        "nested groups get no HERE group"
    );

    // a nesting cycle (Top ⊂ Bottom ⊂ Middle ⊂ Top) must not loop
    h.sim.graph.add_member(&bottom, &top);
    let cycled = tokio::time::timeout(Duration::from_secs(60), h.sync())
        .await
        .expect("a nesting cycle terminates");
    assert_eq!(
        (
            cycled.exit_code,
            cycled.users_created,
            cycled.users_deactivated
        ),
        (0, 0, 0),
        "{cycled:?}"
    );
    assert_eq!(here_members(&h, "Top").len(), 2);

    h.sim.graph.remove_member(&middle, &bottom);
    let s = h.sync().await;
    assert_eq!(
        (s.exit_code, s.users_deactivated, s.members_removed),
        (0, 1, 1),
        "{s:?}"
    );
    assert_eq!(here_members(&h, "Top"), vec![scim_id(&h, 1)]);
    assert_eq!(
        h.sim.scim.find_user(&upn(2)).unwrap()["active"],
        json!(false)
    );
    let history = h.state().history(&upn(2)).unwrap();
    assert!(history.last().unwrap().changes["reason"]
        .as_str()
        .unwrap()
        .contains("no longer assigned"));
}

#[test]
fn the_documented_example_filter_parses_and_means_what_it_says() {
    let example = include_str!("../config.example.toml");
    let block: Vec<&str> = example
        .lines()
        .skip_while(|l| !l.starts_with("# [[sync.scope_filter]]"))
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim_start())
        .collect();
    assert!(block.len() >= 12, "{block:?}");
    let head = BASE.split("[[sync.scope_filter]]").next().unwrap();
    let text = format!("{head}{}\n", block.join("\n"));
    let cfg = Config::parse(&text, Path::new("c.toml")).expect("the example parses");
    let f = &cfg.sync.scope_filter;
    assert_eq!(f.clauses().count(), 3);
    let sales = json!({"department": "marketing", "accountEnabled": true});
    let disabled = json!({"department": "Sales", "accountEnabled": false});
    let contoso = json!({"department": "R&D", "userPrincipalName": "bo@contoso.com"});
    let other = json!({"department": "R&D", "userPrincipalName": "bo@contosoxcom.org"});
    assert!(f.matches(&props(sales)));
    assert!(!f.matches(&props(disabled)));
    assert!(f.matches(&props(contoso)));
    assert!(!f.matches(&props(other)));
}
