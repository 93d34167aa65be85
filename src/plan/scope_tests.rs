//! Planner tests of scope decisions: why users leave scope (the reasons `history` shows)
//! and the attribute scoping filter applied to the plan.

use super::*;
use crate::config::ScopeClause;
use crate::plan::filter::ScopeFilter;

#[test]
fn deactivation_reasons() {
    let cases = [
        ("disable u1", "u1", "disabled in Entra"),
        ("unassign u1", "u1", "no longer assigned"),
        ("soft u1", "u1", "soft delete"),
        ("hard u1", "u1", "deleted in Entra"),
        (
            "unset u1 userPrincipalName; unassign u1",
            "u1",
            "no longer assigned",
        ),
        ("leave u3 g1", "u3", "no longer assigned"),
        ("disable u3", "u3", "disabled in Entra"),
        ("soft u3", "u3", "soft delete"),
        ("hard u3", "u3", "deleted in Entra"),
    ];
    for (script, id, why) in cases {
        let (_, snap, p) = after(script);
        let want = match id {
            "u3" => "remove_members g1, deactivate_user u3",
            _ => "deactivate_user u1",
        };
        assert_eq!(ops(&p), want, "{script}");
        assert_eq!((p.deactivations(), p.group_deletions()), (1, 0));
        let mut was = snap.users[id].attrs.clone();
        was.insert("active".into(), json!(false));
        let deactivate = Op::DeactivateUser {
            entra_id: id.into(),
            scim_id: format!("s-{id}"),
            user_name: format!("{id}@x.example"),
            attrs: AttrText::from_attrs(&was),
            reason: match p.ops.last() {
                Some(Op::DeactivateUser { reason, .. }) => reason.clone(),
                _ => String::new(),
            },
        };
        assert_eq!(p.ops.last(), Some(&deactivate), "{script}");
        let Some(Op::DeactivateUser { reason, .. }) = p.ops.last() else {
            panic!("{script}: no deactivation")
        };
        assert!(reason.contains(why), "{script}: reason {reason:?}");
        if id == "u3" {
            assert_eq!(users(&p.ops[0]), ["u3"], "{script}: only active members");
        }
    }
}

fn filter(attribute: &str, operator: &str, value: Option<&str>) -> ScopeFilter {
    let clause = ScopeClause {
        attribute: attribute.into(),
        operator: operator.into(),
        value: value.map(str::to_string),
        group: None,
    };
    ScopeFilter::compile(&[clause]).unwrap()
}

fn run_filtered(m: &MirrorData, s: &Snapshot, f: &ScopeFilter) -> Plan {
    let (mapping, held) = (Mapping::default(), BTreeSet::new());
    let o = opts(GroupMembers::Direct, true);
    let mut planner = Planner::new(m, &s.groups, &mapping, &held, &o).with_scope_filter(f.clone());
    let ids: BTreeSet<&String> = m.users.keys().chain(s.users.keys()).collect();
    for id in ids {
        planner.user(id, m.users.get(id), s.users.get(id));
    }
    planner.finish()
}

#[test]
fn filtered_out_user_is_not_created_and_not_a_member() {
    let mut m = base();
    act(
        &mut m,
        "set u1 department=Sales; set u2 department=sales; set u3 department=Marketing",
    );
    let f = filter("department", "EQUALS", Some("SALES"));
    let p = run_filtered(&m, &Snapshot::default(), &f);
    let created: Vec<&str> = named(&p, "create_user")
        .iter()
        .map(|o| o.entra_id())
        .collect();
    assert_eq!(created, ["u1", "u2"], "case-insensitive EQUALS");
    let added = named(&p, "add_members");
    assert_eq!(users(added[0]), ["u2"], "u3 is filtered out of g1 too");
}

#[test]
fn user_leaving_the_filter_is_deactivated_with_the_clause_as_reason() {
    let mut m = base();
    act(
        &mut m,
        "set u1 department=Sales; set u2 department=Sales; set u3 department=Sales",
    );
    let f = filter("department", "EQUALS", Some("Sales"));
    let snap = synced(&m);
    assert_eq!(run_filtered(&m, &snap, &f), Plan::default(), "settled");
    act(&mut m, "set u3 department=Marketing");
    let p = run_filtered(&m, &snap, &f);
    assert_eq!(ops(&p), "remove_members g1, deactivate_user u3");
    assert_eq!(p.deactivations(), 1, "the brake counts it");
    let Some(Op::DeactivateUser { reason, .. }) = p.ops.last() else {
        panic!("no deactivation")
    };
    assert!(
        reason.contains("clause 1") && reason.contains("\"Marketing\""),
        "{reason}"
    );
}
