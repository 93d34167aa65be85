//! Attribute scoping filters (Entra's "scoping filters"): which assigned users are in scope
//! by their attributes. Pure: compiled once when the config loads (so a bad filter is a
//! config error, never a surprise mid-cycle), evaluated by the planner for every candidate.
//!
//! Semantics, as Entra's provisioning service applies them:
//!
//! - clauses of one filter group must all hold (AND); filter groups are OR-ed; no clause at
//!   all means every assigned user is in scope;
//! - string comparisons (`EQUALS`, `NOT EQUALS`, `Includes`, `Not Includes`) ignore case;
//!   `Includes` holds when the attribute is one of the comma-separated values;
//! - `REGEX MATCH` finds the pattern anywhere in the value (anchor it with `^…$` to match
//!   the whole value); it is case-sensitive unless the pattern starts with `(?i)`;
//! - `GREATER_THAN` / `LESS_THAN` compare integers; a value that is not an integer fails;
//! - every operator except `IS NULL` fails on an empty (null) attribute.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use crate::config::ScopeClause;

/// The operators of Entra's scoping filters (same names, so a filter copied from the
/// portal reads the same here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `EQUALS`: the whole value, ignoring case.
    Equals,
    /// `NOT EQUALS`: a non-empty value that differs, ignoring case.
    NotEquals,
    /// `IS TRUE`: the boolean true.
    IsTrue,
    /// `IS FALSE`: the boolean false.
    IsFalse,
    /// `IS NULL`: empty (absent, null or blank).
    IsNull,
    /// `IS NOT NULL`: not empty.
    IsNotNull,
    /// `REGEX MATCH`: the pattern is found in the value.
    RegexMatch,
    /// `NOT REGEX MATCH`: a non-empty value the pattern is not found in.
    NotRegexMatch,
    /// `GREATER_THAN`: an integer above the value.
    GreaterThan,
    /// `LESS_THAN`: an integer below the value.
    LessThan,
    /// `Includes`: one of the comma-separated values, ignoring case.
    Includes,
    /// `Not Includes`: a non-empty value that is none of them.
    NotIncludes,
}

/// Every operator with its canonical spelling (the one the docs and messages use).
const OPERATORS: &[(Operator, &str)] = &[
    (Operator::Equals, "EQUALS"),
    (Operator::NotEquals, "NOT EQUALS"),
    (Operator::IsTrue, "IS TRUE"),
    (Operator::IsFalse, "IS FALSE"),
    (Operator::IsNull, "IS NULL"),
    (Operator::IsNotNull, "IS NOT NULL"),
    (Operator::RegexMatch, "REGEX MATCH"),
    (Operator::NotRegexMatch, "NOT REGEX MATCH"),
    (Operator::GreaterThan, "GREATER_THAN"),
    (Operator::LessThan, "LESS_THAN"),
    (Operator::Includes, "Includes"),
    (Operator::NotIncludes, "Not Includes"),
];

/// Multi-valued Graph properties: Entra does not filter on them, so neither do we.
const MULTI_VALUED: &[&str] = &["businessPhones", "otherMails", "proxyAddresses"];

impl Operator {
    /// Parses an operator as the portal shows it; case, underscores and repeated spaces
    /// are forgiven (`NOT_EQUALS`, `not equals`, `Greater_Than` all work).
    pub fn parse(text: &str) -> Option<Operator> {
        let norm = |s: &str| {
            s.replace('_', " ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_ascii_uppercase()
        };
        let want = norm(text);
        OPERATORS
            .iter()
            .find(|(_, name)| norm(name) == want)
            .map(|(op, _)| *op)
    }

    /// The canonical spelling.
    pub fn name(self) -> &'static str {
        OPERATORS
            .iter()
            .find(|(op, _)| *op == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    /// Whether the clause needs a `value`.
    pub fn takes_value(self) -> bool {
        !matches!(
            self,
            Operator::IsTrue | Operator::IsFalse | Operator::IsNull | Operator::IsNotNull
        )
    }
}

/// What a clause compares against, prepared once.
#[derive(Debug, Clone)]
enum Test {
    /// No value (IS TRUE, IS FALSE, IS NULL, IS NOT NULL).
    Nothing,
    /// Lower-cased text (EQUALS, NOT EQUALS).
    Text(String),
    /// Lower-cased list (Includes, Not Includes).
    List(Vec<String>),
    /// REGEX MATCH, NOT REGEX MATCH.
    Pattern(Regex),
    /// GREATER_THAN, LESS_THAN.
    Number(i64),
}

/// One compiled clause.
#[derive(Debug, Clone)]
pub struct Clause {
    /// 1-based position in the config file (reasons name it: "clause 2").
    pub number: usize,
    /// The filter group it belongs to.
    pub group: u32,
    /// The Graph user property read (dotted for `onPremisesExtensionAttributes.*`).
    pub attribute: String,
    /// How the property is tested.
    pub operator: Operator,
    /// The value as written, for messages.
    pub value: Option<String>,
    test: Test,
}

/// A configuration mistake in one clause, for the config loader to place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// 0-based index of the clause in file order.
    pub index: usize,
    /// The offending key: `attribute`, `operator`, `value` or `group`.
    pub key: &'static str,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// The compiled scoping filter: groups of clauses, OR-ed; clauses in a group AND-ed.
#[derive(Debug, Clone, Default)]
pub struct ScopeFilter {
    groups: BTreeMap<u32, Vec<Clause>>,
}

impl ScopeFilter {
    /// Compiles `[[sync.scope_filter]]` clauses; the first mistake is returned.
    pub fn compile(clauses: &[ScopeClause]) -> Result<ScopeFilter, FilterError> {
        let mut groups: BTreeMap<u32, Vec<Clause>> = BTreeMap::new();
        for (index, c) in clauses.iter().enumerate() {
            let clause = compile_clause(index, c)?;
            groups.entry(clause.group).or_default().push(clause);
        }
        Ok(ScopeFilter { groups })
    }

    /// True when no clause is configured (every assigned user is in scope).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Top-level Graph properties the clauses read (they must be in `$select`).
    pub fn properties(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .clauses()
            .map(|c| c.attribute.split('.').next().unwrap_or("").to_string())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every clause, in group then file order.
    pub fn clauses(&self) -> impl Iterator<Item = &Clause> {
        self.groups.values().flatten()
    }

    /// Whether a user with these Graph properties is in scope.
    pub fn matches(&self, props: &Map<String, Value>) -> bool {
        self.is_empty()
            || self
                .groups
                .values()
                .any(|g| g.iter().all(|c| c.holds(props)))
    }

    /// `Ok` when in scope; otherwise why not, naming the failing clause of each group,
    /// e.g. `filtered out by clause 2 (department EQUALS "Sales"; department is "Marketing")`.
    pub fn check(&self, props: &Map<String, Value>) -> Result<(), String> {
        if self.matches(props) {
            return Ok(());
        }
        let failed: Vec<String> = self
            .groups
            .values()
            .filter_map(|g| g.iter().find(|c| !c.holds(props)))
            .map(|c| c.explain(props))
            .collect();
        Err(format!("filtered out by {}", failed.join(" and by ")))
    }
}

impl Clause {
    /// Whether the clause holds for these properties.
    pub fn holds(&self, props: &Map<String, Value>) -> bool {
        let value = attribute_text(props, &self.attribute);
        let Some(v) = value else {
            return self.operator == Operator::IsNull;
        };
        match (&self.test, self.operator) {
            (_, Operator::IsNull) => false,
            (_, Operator::IsNotNull) => true,
            (_, Operator::IsTrue) => v.eq_ignore_ascii_case("true"),
            (_, Operator::IsFalse) => v.eq_ignore_ascii_case("false"),
            (Test::Text(t), Operator::Equals) => v.to_lowercase() == *t,
            (Test::Text(t), Operator::NotEquals) => v.to_lowercase() != *t,
            (Test::List(l), Operator::Includes) => l.contains(&v.to_lowercase()),
            (Test::List(l), Operator::NotIncludes) => !l.contains(&v.to_lowercase()),
            (Test::Pattern(r), Operator::RegexMatch) => r.is_match(&v),
            (Test::Pattern(r), Operator::NotRegexMatch) => !r.is_match(&v),
            (Test::Number(n), Operator::GreaterThan) => {
                v.trim().parse::<i64>().is_ok_and(|x| x > *n)
            }
            (Test::Number(n), Operator::LessThan) => v.trim().parse::<i64>().is_ok_and(|x| x < *n),
            _ => false,
        }
    }

    /// The clause as operators wrote it: `department EQUALS "Sales"`.
    pub fn describe(&self) -> String {
        match &self.value {
            Some(v) => format!("{} {} {v:?}", self.attribute, self.operator.name()),
            None => format!("{} {}", self.attribute, self.operator.name()),
        }
    }

    fn explain(&self, props: &Map<String, Value>) -> String {
        let actual = match attribute_text(props, &self.attribute) {
            Some(v) => format!("{v:?}"),
            None => "empty".to_string(),
        };
        format!(
            "clause {} ({}; {} is {actual})",
            self.number,
            self.describe(),
            self.attribute
        )
    }
}

fn compile_clause(index: usize, c: &ScopeClause) -> Result<Clause, FilterError> {
    let err = |key, message: String| FilterError {
        index,
        key,
        message,
    };
    let attribute = c.attribute.trim();
    if MULTI_VALUED.contains(&attribute) {
        return Err(err(
            "attribute",
            format!("{attribute:?} is multi-valued; Entra's scoping filters (and these) do not filter on multi-valued properties"),
        ));
    }
    if !crate::mapping::is_user_property(attribute) || attribute == "onPremisesExtensionAttributes"
    {
        return Err(err(
            "attribute",
            format!(
                "unknown Graph user property {attribute:?}; use one of {}, onPremisesExtensionAttributes.extensionAttribute1..15 or extension_<appId>_<name>",
                crate::mapping::USER_PROPERTIES
                    .iter()
                    .filter(|p| !MULTI_VALUED.contains(p) && **p != "onPremisesExtensionAttributes")
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let operator = Operator::parse(&c.operator).ok_or_else(|| {
        let names: Vec<&str> = OPERATORS.iter().map(|(_, n)| *n).collect();
        err(
            "operator",
            format!(
                "unknown operator {:?}; use one of {}",
                c.operator,
                names.join(", ")
            ),
        )
    })?;
    let group = c.group.unwrap_or(1);
    if group == 0 {
        return Err(err("group", "filter groups are numbered from 1".into()));
    }
    let test = match (&c.value, operator.takes_value()) {
        (Some(_), false) => {
            return Err(err(
                "value",
                format!("{} takes no value; remove `value`", operator.name()),
            ))
        }
        (None, false) => Test::Nothing,
        (None, true) => return Err(err("value", format!("{} needs a `value`", operator.name()))),
        (Some(v), true) => value_test(operator, v).map_err(|m| err("value", m))?,
    };
    Ok(Clause {
        number: index + 1,
        group,
        attribute: attribute.to_string(),
        operator,
        value: c.value.clone(),
        test,
    })
}

fn value_test(operator: Operator, v: &str) -> Result<Test, String> {
    Ok(match operator {
        Operator::RegexMatch | Operator::NotRegexMatch => {
            let re = regex::RegexBuilder::new(v)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("{v:?} is not a valid regular expression: {e}"))?;
            Test::Pattern(re)
        }
        Operator::GreaterThan | Operator::LessThan => {
            let n = v.trim().parse::<i64>().map_err(|_| {
                format!(
                    "{} compares integers; {v:?} is not an integer",
                    operator.name()
                )
            })?;
            Test::Number(n)
        }
        Operator::Includes | Operator::NotIncludes => {
            let list: Vec<String> = v.split(',').map(|s| s.trim().to_lowercase()).collect();
            if list.iter().any(String::is_empty) {
                return Err(format!(
                    "{} takes a comma-separated list of values without empty entries, e.g. \"Sales, Marketing\"",
                    operator.name()
                ));
            }
            Test::List(list)
        }
        _ => {
            if v.is_empty() {
                return Err(format!(
                    "{} needs a non-empty value (use IS NULL to test for an empty attribute)",
                    operator.name()
                ));
            }
            Test::Text(v.to_lowercase())
        }
    })
}

/// A user property as text: strings as they are, numbers and booleans printed, nested
/// objects by a dotted path; empty text, null, arrays and objects count as empty.
pub fn attribute_text(props: &Map<String, Value>, name: &str) -> Option<String> {
    let mut parts = name.split('.');
    let mut value = props.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!text.trim().is_empty()).then_some(text)
}
