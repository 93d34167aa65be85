//! Table-style tests of the pure planner. Worlds are built with [`W`] and changed with
//! scripted steps ([`act`]); snapshots are made by acknowledging a plan with [`apply`]
//! (what push + `State::record` do), so "synced" means HERE holds what the plan asked for.

use super::*;
use crate::mapping::AttrText;
use crate::mapping::{AttrMapping, Source, ENTERPRISE};
use crate::state::{MirrorGroup, MirrorUser, SnapGroup, SnapUser};
use serde_json::{json, Map};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Merges `extra` into user `id`'s props (null removes a property).
fn patch(m: &mut MirrorData, id: &str, extra: Value) {
    let props = &mut m.users.get_mut(id).unwrap().props;
    for (k, v) in obj(extra) {
        if v.is_null() {
            props.remove(&k);
        } else {
            props.insert(k, v);
        }
    }
}

fn group<'a>(m: &'a mut MirrorData, gid: &str) -> &'a mut MirrorGroup {
    m.groups.get_mut(gid).unwrap()
}

/// Applies directory changes written as `verb id [arg]`, separated by `; `.
fn act(m: &mut MirrorData, script: &str) {
    for step in script.split("; ") {
        let w: Vec<&str> = step.splitn(3, ' ').collect();
        let (verb, id, arg) = (w[0], w[1].to_string(), w.get(2).copied().unwrap_or(""));
        match verb {
            "disable" | "enable" => patch(m, &id, json!({ "accountEnabled": verb == "enable" })),
            "set" => {
                let (k, v) = arg.split_once('=').unwrap();
                patch(m, &id, json!({ k: v }));
            }
            "unset" => patch(m, &id, json!({ arg: null })),
            "assign" => _ = m.assigned_users.insert(id),
            "unassign" => _ = m.assigned_users.remove(&id),
            "join" => _ = group(m, arg).user_members.insert(id),
            "leave" => _ = group(m, arg).user_members.remove(&id),
            "soft" | "restore" => m.users.get_mut(&id).unwrap().soft_deleted = verb == "soft",
            "hard" => {
                m.users.remove(&id);
                let groups = m.groups.values_mut();
                groups.for_each(|g| _ = g.user_members.remove(&id));
            }
            "unassign_group" => _ = m.assigned_groups.remove(&id),
            "delete_group" => _ = m.groups.remove(&id),
            "rename_group" => group(m, &id).props = obj(json!({"displayName": arg})),
            other => panic!("unknown step {other}"),
        }
    }
}

/// A mirror builder.
#[derive(Clone, Default)]
struct W(MirrorData);

impl W {
    /// An enabled user with a UPN and displayName, plus `extra` (null removes).
    fn user(mut self, id: &str, extra: Value) -> Self {
        let props = obj(json!({"userPrincipalName": format!("{id}@x.example"),
            "displayName": format!("User {id}"), "accountEnabled": true}));
        let soft_deleted = false;
        let u = MirrorUser {
            props,
            soft_deleted,
        };
        self.0.users.insert(id.into(), u);
        patch(&mut self.0, id, extra);
        self
    }
    fn assign(mut self, id: &str) -> Self {
        self.0.assigned_users.insert(id.into());
        self
    }
    fn group(mut self, gid: &str, users: &[&str], nested: &[&str]) -> Self {
        let props = obj(json!({"displayName": format!("Group {gid}")}));
        let (user_members, group_members) = (set(users), set(nested));
        let g = MirrorGroup {
            props,
            user_members,
            group_members,
        };
        self.0.groups.insert(gid.into(), g);
        self
    }
    fn assign_group(mut self, gid: &str) -> Self {
        self.0.assigned_groups.insert(gid.into());
        self
    }
}

/// u1 assigned directly (manager u2); u2, u3 direct members of assigned g1.
fn base() -> MirrorData {
    let w = W::default().user("u1", json!({"manager": "u2"}));
    let w = w.assign("u1").user("u2", json!({})).user("u3", json!({}));
    w.group("g1", &["u2", "u3"], &[]).assign_group("g1").0
}

fn opts(members: GroupMembers, delete: bool) -> PlanOptions {
    PlanOptions {
        group_members: members,
        delete_groups_out_of_scope: delete,
    }
}

fn run_with(m: &MirrorData, s: &Snapshot, held: &[&str], o: &PlanOptions) -> Plan {
    plan(m, s, &Mapping::default(), &set(held), o)
}

fn run(m: &MirrorData, s: &Snapshot) -> Plan {
    run_with(m, s, &[], &opts(GroupMembers::Direct, true))
}

fn snap_group(id: &str, display_name: String, attrs: Attrs) -> SnapGroup {
    let (scim_id, members) = (format!("s-{id}"), BTreeSet::new());
    SnapGroup {
        scim_id,
        display_name,
        attrs,
        members,
    }
}

/// Records every op of `p` as acknowledged, the way push does.
fn apply(s: &mut Snapshot, p: &Plan) {
    for op in p.ops.clone() {
        let (id, name) = (op.entra_id().to_string(), op.object_name().to_string());
        match op {
            Op::CreateUser { attrs, .. } => {
                let attrs = attrs.attrs();
                let u = SnapUser {
                    scim_id: format!("s-{id}"),
                    user_name: name,
                    active: attrs["active"] == json!(true),
                    attrs,
                    manager: None,
                };
                s.users.insert(id, u);
            }
            Op::UpdateUser { attrs, .. } => {
                let u = s.users.get_mut(&id).unwrap();
                (u.user_name, u.active, u.attrs) = (name, true, attrs.attrs());
            }
            Op::DeactivateUser { attrs, .. } => {
                let u = s.users.get_mut(&id).unwrap();
                (u.active, u.attrs) = (false, attrs.attrs());
            }
            Op::SetManager { manager, .. } => s.users.get_mut(&id).unwrap().manager = manager,
            Op::CreateGroup { attrs, .. } => {
                _ = s.groups.insert(id.clone(), snap_group(&id, name, attrs))
            }
            Op::UpdateGroup { attrs, .. } => {
                let g = s.groups.get_mut(&id).unwrap();
                (g.display_name, g.attrs) = (name, attrs);
            }
            Op::AddMembers { users, .. } => s.groups.get_mut(&id).unwrap().members.extend(users),
            Op::RemoveMembers { users, .. } => {
                let have = &mut s.groups.get_mut(&id).unwrap().members;
                users.iter().for_each(|u| assert!(have.remove(u)));
            }
            Op::DeleteGroup { .. } => assert!(s.groups.remove(&id).is_some()),
        }
    }
}

fn synced(m: &MirrorData) -> Snapshot {
    let mut s = Snapshot::default();
    let p = run(m, &s);
    apply(&mut s, &p);
    s
}

/// Syncs `base()`, applies `script` to the mirror, and plans again.
fn after(script: &str) -> (MirrorData, Snapshot, Plan) {
    let mut m = base();
    let snap = synced(&m);
    act(&mut m, script);
    let p = run(&m, &snap);
    (m, snap, p)
}

fn scim(op: &Op) -> &str {
    match op {
        Op::UpdateUser { scim_id, .. } | Op::DeactivateUser { scim_id, .. } => scim_id,
        Op::UpdateGroup { scim_id, .. } | Op::DeleteGroup { scim_id, .. } => scim_id,
        _ => panic!("no SCIM id: {op:?}"),
    }
}

/// The ops as `name id` in plan order, comma-separated: one-line expectations.
fn ops(p: &Plan) -> String {
    let words = p
        .ops
        .iter()
        .map(|o| format!("{} {}", o.name(), o.entra_id()));
    words.collect::<Vec<_>>().join(", ")
}

fn named<'a>(p: &'a Plan, name: &str) -> Vec<&'a Op> {
    p.ops.iter().filter(|o| o.name() == name).collect()
}

/// The member ids of an AddMembers/RemoveMembers.
fn users(op: &Op) -> Vec<&str> {
    match op {
        Op::AddMembers { users, .. } | Op::RemoveMembers { users, .. } => {
            users.iter().map(String::as_str).collect()
        }
        _ => panic!("not a member op: {op:?}"),
    }
}

fn changes(op: &Op) -> &[Change] {
    match op {
        Op::UpdateUser { changes, .. } | Op::UpdateGroup { changes, .. } => changes,
        _ => panic!("not an update: {op:?}"),
    }
}

fn attrs(op: &Op) -> Attrs {
    match op {
        Op::CreateUser { attrs, .. } | Op::UpdateUser { attrs, .. } => attrs.attrs(),
        Op::DeactivateUser { attrs, .. } => attrs.attrs(),
        Op::CreateGroup { attrs, .. } | Op::UpdateGroup { attrs, .. } => attrs.clone(),
        _ => panic!("no attrs: {op:?}"),
    }
}

fn group_attrs(name: &str, id: &str) -> Attrs {
    let pairs = [("displayName", name), ("externalId", id)];
    pairs.map(|(k, v)| (k.to_string(), json!(v))).into()
}

/// A change; `Value::Null` stands for "absent".
fn ch(path: &str, old: Value, new: Value) -> Change {
    let some = |v: Value| (!v.is_null()).then_some(v);
    Change {
        path: path.into(),
        old: some(old),
        new: some(new),
    }
}

#[test]
fn initial_plan_then_applied_snapshot_plans_nothing() {
    let m = base();
    let first = run(&m, &Snapshot::default());
    let want = "create_user u1, create_user u2, create_user u3, set_manager u1, \
                create_group g1, add_members g1";
    assert_eq!(ops(&first), want);
    let snap = synced(&m);
    assert_eq!(run(&m, &snap), Plan::default(), "nothing changed");
}

#[test]
fn create_user_and_group_carry_mapped_attributes() {
    let p = run(&base(), &Snapshot::default());
    assert_eq!(p.ops[0].object_name(), "u1@x.example");
    let a = attrs(&p.ops[0]);
    assert_eq!(a["userName"], json!("u1@x.example"));
    assert_eq!(a["displayName"], json!("User u1"));
    assert_eq!(a["active"], json!(true));
    assert!(!a.contains_key("title"), "empty source omitted");
    assert_eq!(p.ops[4].object_name(), "Group g1");
    assert_eq!(attrs(&p.ops[4]), group_attrs("Group g1", "g1"));
    assert_eq!(users(&p.ops[5]), ["u2", "u3"]);
}

#[test]
fn update_user_lists_only_changed_attributes() {
    let extra = json!({"jobTitle": "Dev", "mobilePhone": "+1", "mail": "a@x"});
    let mut m = W::default().user("u1", extra).assign("u1").0;
    let snap = synced(&m);
    let new = json!({"displayName": "Ana", "jobTitle": "Lead", "mobilePhone": null,
        "department": "R&D", "userPrincipalName": "ana@x.example"});
    patch(&mut m, "u1", new);
    let p = run(&m, &snap);
    assert_eq!(ops(&p), "update_user u1");
    let Op::UpdateUser { reactivate, .. } = p.ops[0] else {
        panic!()
    };
    assert!(!reactivate);
    let u = &p.ops[0];
    assert_eq!((scim(u), u.object_name()), ("s-u1", "ana@x.example"));
    let mobile = "phoneNumbers[type eq \"mobile\"].value";
    let dept = format!("{ENTERPRISE}:department");
    let want = [
        ch("displayName", json!("User u1"), json!("Ana")),
        ch(mobile, json!("+1"), Value::Null),
        ch("title", json!("Dev"), json!("Lead")),
        ch(&dept, Value::Null, json!("R&D")),
        ch("userName", json!("u1@x.example"), json!("ana@x.example")),
    ];
    assert_eq!(changes(&p.ops[0]), want, "emptied = removed");
    let a = attrs(&p.ops[0]);
    assert!(!a.contains_key(mobile));
    assert_eq!(a["emails[type eq \"work\"].value"], json!("a@x"));
}

#[test]
fn reactivation_when_user_comes_back() {
    let cases = [
        ("disable u1", "enable u1", "u1", "reactivate_user u1"),
        ("unassign u1", "assign u1", "u1", "reactivate_user u1"),
        ("soft u1", "restore u1", "u1", "reactivate_user u1"),
        (
            "leave u3 g1",
            "join u3 g1",
            "u3",
            "reactivate_user u3, add_members g1",
        ),
    ];
    for (off, on, id, want) in cases {
        let mut m = base();
        let mut snap = synced(&m);
        act(&mut m, off);
        let p = run(&m, &snap);
        assert!(ops(&p).contains(&format!("deactivate_user {id}")), "{off}");
        apply(&mut snap, &p);
        assert!(!snap.users[id].active, "{off}");
        act(&mut m, on);
        let p = run(&m, &snap);
        assert_eq!(ops(&p), want, "{on}");
        let Op::UpdateUser { reactivate, .. } = p.ops[0] else {
            panic!()
        };
        assert!(reactivate, "{on}");
        let active = ch("active", json!(false), json!(true));
        assert_eq!(changes(&p.ops[0]), [active], "{on}");
        apply(&mut snap, &p);
        assert_eq!(run(&m, &snap), Plan::default(), "{on}: settled");
    }
}

#[test]
fn disabled_never_pushed_user_is_not_created_nor_a_member() {
    let mut m = base();
    act(&mut m, "disable u3");
    let p = run(&m, &Snapshot::default());
    assert!(!ops(&p).contains("u3"), "{:?}", p.ops);
    assert_eq!(users(named(&p, "add_members")[0]), ["u2"]);
}

#[test]
fn inactive_user_out_of_scope_gets_no_op() {
    let mut m = base();
    let mut snap = synced(&m);
    act(&mut m, "disable u1");
    let p = run(&m, &snap);
    apply(&mut snap, &p);
    for step in ["disable u1", "unassign u1", "soft u1", "hard u1"] {
        act(&mut m, step);
        assert_eq!(run(&m, &snap), Plan::default(), "inactive, {step}");
    }
}

#[test]
fn manager_reference_set_changed_and_cleared() {
    let cases = [
        ("set u1 manager=u3", Some("u3")),
        ("unset u1 manager", None),
        ("disable u2", None),
        ("leave u2 g1", None),
        ("hard u2", None),
        ("set u1 manager=zz", None),
    ];
    for (script, want) in cases {
        let (_, _, p) = after(script);
        let [op @ Op::SetManager { manager, .. }] = &named(&p, "set_manager")[..] else {
            panic!("{script}: {:?}", p.ops)
        };
        assert_eq!(manager.as_deref(), want, "{script}");
        assert_eq!(op.entra_id(), "u1");
        assert_eq!(op.stage(), Stage::Managers);
    }
}

#[test]
fn no_manager_op_when_switched_off_or_user_disabled() {
    let no_mgr = Mapping {
        manager: false,
        ..Mapping::default()
    };
    let o = opts(GroupMembers::Direct, true);
    let p = plan(&base(), &Snapshot::default(), &no_mgr, &BTreeSet::new(), &o);
    assert!(named(&p, "set_manager").is_empty() && !p.ops.is_empty());
    let mut m = base();
    act(&mut m, "disable u1");
    assert!(named(&run(&m, &Snapshot::default()), "set_manager").is_empty());
}

#[test]
fn group_rename_and_member_diffs() {
    let mut m = W(base()).user("u4", json!({})).0;
    let snap = synced(&m);
    // u2 stays in scope (assigned directly): only its membership changes
    act(&mut m, "rename_group g1 Sales; leave u2 g1; join u4 g1");
    act(&mut m, "assign u2");
    let p = run(&m, &snap);
    let want = "create_user u4, update_group g1, add_members g1, remove_members g1";
    assert_eq!(ops(&p), want);
    assert_eq!(scim(&p.ops[1]), "s-g1");
    let names: Vec<&str> = p.ops[1..].iter().map(Op::object_name).collect();
    assert_eq!(names, ["Sales"; 3]);
    let rename = ch("displayName", json!("Group g1"), json!("Sales"));
    assert_eq!(changes(&p.ops[1]), [rename]);
    assert_eq!(attrs(&p.ops[1]), group_attrs("Sales", "g1"));
    assert_eq!(users(&p.ops[2]), ["u4"]);
    assert_eq!(users(&p.ops[3]), ["u2"]);
}

#[test]
fn group_deletion_when_unassigned_or_deleted_unless_switched_off() {
    let both = "delete_group g1; unassign_group g1";
    let cases = ["unassign_group g1", both, "delete_group g1"];
    for script in cases {
        let (m, snap, p) = after(script);
        let gone = "deactivate_user u2, deactivate_user u3";
        let want = format!("set_manager u1, delete_group g1, {gone}");
        assert_eq!(ops(&p), want, "{script}: no member removals first");
        let d = named(&p, "delete_group")[0];
        assert_eq!((scim(d), d.object_name()), ("s-g1", "Group g1"));
        assert_eq!((p.group_deletions(), p.deactivations()), (1, 2));
        let keep = run_with(&m, &snap, &[], &opts(GroupMembers::Direct, false));
        assert_eq!(ops(&keep), format!("set_manager u1, {gone}"), "{script}");
    }
}

/// a: direct; b: in assigned g1; c: in unassigned g2; d: in g3 nested in g1; e: in g4
/// nested in g3, and g4 nests g1 back (cycle); g5 nests itself; g0 is missing;
/// "sp1" is no user.
fn scope_world() -> MirrorData {
    let mut w = W::default();
    for id in ["a", "b", "c", "d", "e", "x"] {
        w = w.user(id, json!({}));
    }
    let w = w.assign("a").group("g1", &["b", "sp1"], &["g3", "g5"]);
    let w = w
        .group("g2", &["c"], &[])
        .group("g3", &["d"], &["g4", "g0"]);
    let w = w.group("g4", &["e"], &["g1"]).group("g5", &[], &["g5"]);
    w.assign_group("g1").0
}

#[test]
fn scope_direct_and_transitive() {
    let m = scope_world();
    let cases = [
        (GroupMembers::Direct, "a b", "b"),
        (GroupMembers::Transitive, "a b d e", "b d e"),
    ];
    for (mode, want, group) in cases {
        let want_set: BTreeSet<String> = want.split(' ').map(String::from).collect();
        assert_eq!(users_in_scope(&m, mode), want_set, "{mode:?}");
        let p = run_with(&m, &Snapshot::default(), &[], &opts(mode, true));
        let created = named(&p, "create_user").into_iter().map(Op::entra_id);
        assert_eq!(created.collect::<Vec<_>>().join(" "), want, "{mode:?}");
        // nested groups get no HERE group of their own; sp1 (no user) is no member
        let group_ops = p.ops.iter().filter(|o| o.kind() == "group");
        let group_ids: Vec<&str> = group_ops.map(Op::entra_id).collect();
        assert_eq!(group_ids, ["g1", "g1"], "{mode:?}");
        assert_eq!(users(named(&p, "add_members")[0]).join(" "), group);
    }
    let t = GroupMembers::Transitive;
    let all = set(&["b", "d", "e", "sp1"]);
    assert_eq!(group_users(&m, "g4", t), all, "cycle");
    assert_eq!(group_users(&m, "g5", t), set(&[]), "self-nesting");
    assert_eq!(group_users(&m, "g4", GroupMembers::Direct), set(&["e"]));
}

#[test]
fn skipped_user_is_reported_and_never_deactivated() {
    let long = "y".repeat(5000);
    let cases = [
        (json!({"userPrincipalName": null}), "no userPrincipalName"),
        (json!({"userPrincipalName": "  "}), "no userPrincipalName"),
        (json!({"userPrincipalName": "a\u{7}@x"}), "control"),
        (json!({ "displayName": long }), "displayName is over 4096"),
        (json!({"jobTitle": "a\tb"}), "title is over 4096 bytes or"),
    ];
    for (bad, reason) in cases {
        // never pushed: reported, not created
        let mut m = base();
        patch(&mut m, "u3", bad.clone());
        let p = run(&m, &Snapshot::default());
        assert_eq!(p.skipped.len(), 1, "{bad}");
        let row = &p.skipped[0];
        assert_eq!((row.entra_id.as_str(), row.kind.as_str()), ("u3", "user"));
        assert!(row.reason.contains(reason), "{bad}: {}", row.reason);
        assert!(!ops(&p).contains("create_user u3"), "{bad}");
        // already pushed: no update, no deactivation
        let mut m = base();
        let snap = synced(&m);
        patch(&mut m, "u1", bad.clone());
        let p = run(&m, &snap);
        assert_eq!(p.skipped[0].entra_id, "u1", "{bad}");
        assert_eq!(ops(&p), "", "{bad}");
    }
    let mut m = base();
    act(&mut m, "unset u1 userPrincipalName; unassign u1");
    let p = run(&m, &Snapshot::default());
    assert!(p.skipped.is_empty(), "out of scope: not reported");
}

#[test]
fn group_without_display_name_is_skipped_not_deleted() {
    let no_name = |m: &mut MirrorData| group(m, "g1").props = Map::new();
    let mut m = base();
    no_name(&mut m);
    let p = run(&m, &Snapshot::default());
    let row = SkippedRow {
        entra_id: "g1".into(),
        kind: "group".into(),
        reason: "no displayName".into(),
    };
    assert_eq!(p.skipped, std::slice::from_ref(&row));
    let want = "create_user u1, create_user u2, create_user u3, set_manager u1";
    assert_eq!(ops(&p), want, "no group op");
    let mut m = base();
    let snap = synced(&m);
    no_name(&mut m);
    let p = run(&m, &snap);
    assert_eq!((ops(&p), p.skipped), (String::new(), vec![row]));
}

#[test]
fn held_users_get_no_operation_and_are_counted() {
    let o = opts(GroupMembers::Direct, true);
    let p = run_with(&base(), &Snapshot::default(), &["u1"], &o);
    assert!(!ops(&p).contains("u1"), "{:?}", p.ops);
    assert_eq!((p.held, p.ops.len()), (1, 4));
    let cases = ["set u1 displayName=New", "set u1 manager=u3", "disable u1"];
    let cases = cases
        .into_iter()
        .chain(["unassign u1", "soft u1", "hard u1"]);
    for script in cases {
        let (m, snap, free) = after(script);
        assert!(ops(&free).contains("u1"), "{script}: not held");
        let p = run_with(&m, &snap, &["u1"], &o);
        assert_eq!((ops(&p), p.held), (String::new(), 1), "{script}");
    }
}

#[test]
fn held_groups_get_no_operation_and_are_counted() {
    let o = opts(GroupMembers::Direct, true);
    let p = run_with(&base(), &Snapshot::default(), &["g1"], &o);
    assert!(!ops(&p).contains("g1"), "{:?}", p.ops);
    assert_eq!(p.held, 1);
    let (m, snap, _) = after("rename_group g1 Sales; unassign_group g1");
    let p = run_with(&m, &snap, &["g1"], &o);
    assert_eq!(p.group_deletions(), 0, "held group deleted: {:?}", p.ops);
}

#[test]
fn user_name_override_with_empty_source_is_skipped() {
    let mut mapping = Mapping::default();
    mapping.user.retain(|a| a.scim_path != "userName");
    mapping.user.push(AttrMapping {
        scim_path: "userName".into(),
        source: Source::Property("mail".into()),
    });
    let m = W::default().user("u1", json!({})).assign("u1").0; // has a UPN, no mail
    let o = opts(GroupMembers::Direct, true);
    let p = plan(&m, &Snapshot::default(), &mapping, &BTreeSet::new(), &o);
    assert_eq!((p.skipped.len(), ops(&p)), (1, String::new()));
}

#[test]
fn ops_are_ordered_by_stage_and_deterministic() {
    let w = W(base()).user("u5", json!({})).assign("u5");
    let mut m = w.group("g2", &["u5"], &[]).assign_group("g2").0;
    let mut snap = synced(&base());
    snap.groups
        .insert("g9".into(), snap_group("g9", "Old".into(), Attrs::new()));
    act(&mut m, "set u1 displayName=Renamed; set u1 manager=u5");
    act(&mut m, "rename_group g1 Sales; leave u3 g1");
    let p = run(&m, &snap);
    let want = "update_user u1, create_user u5, set_manager u1, create_group g2, \
                update_group g1, add_members g2, remove_members g1, delete_group g9, \
                deactivate_user u3";
    assert_eq!(ops(&p), want, "by stage, then by name");
    use Stage::*;
    let stages: Vec<Stage> = p.ops.iter().map(Op::stage).collect();
    let order = [Users, Users, Managers, Groups, Groups, MemberAdds];
    let rest = [MemberRemovals, GroupDeletions, Deactivations];
    assert_eq!(stages, [&order[..], &rest[..]].concat());
    for _ in 0..3 {
        assert_eq!(run(&m, &snap), p, "same input → same plan");
    }
}

#[test]
fn counts_of_deactivations_and_group_deletions() {
    let empty = Plan::default();
    assert_eq!((empty.deactivations(), empty.group_deletions()), (0, 0));
    let (m, snap, p) = after("unassign_group g1; disable u1");
    assert_eq!((p.deactivations(), p.group_deletions()), (3, 1));
    let keep = run_with(&m, &snap, &[], &opts(GroupMembers::Direct, false));
    assert_eq!((keep.deactivations(), keep.group_deletions()), (3, 0));
}

#[path = "scope_tests.rs"]
mod scope_tests;
