//! SCIM filter expressions (RFC 7644 §3.4.2.2): `eq ne co sw ew gt ge lt le pr`, `and`/`or`/`not`,
//! grouping, value paths `emails[type eq "work"]` and Entra's `emails[type eq "work"].value eq "x"`.
//! Attribute names are case-insensitive; string comparison honours each attribute's caseExact.

use serde_json::{Map, Value};

use crate::sim::scim::{ScimError, ENT_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};

/// Attributes whose string values compare case-sensitively (lower-cased, URN stripped).
const CASE_EXACT: &[&str] = &[
    "id",
    "externalid",
    "members.value",
    "manager.value",
    "groups.value",
    "meta.version",
];

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A parsed filter.
#[derive(Debug)]
pub(crate) enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Present(String),
    Cmp {
        attr: String,
        op: Op,
        value: Value,
    },
    /// `attr[inner]`: some element of the multi-valued `attr` satisfies `inner`.
    ValuePath {
        attr: String,
        inner: Box<Filter>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBrack,
    RBrack,
    Str(String),
    Word(String),
}

fn invalid(text: &str) -> ScimError {
    ScimError::new(
        400,
        Some("invalidFilter"),
        format!("Invalid filter: {text}"),
    )
}

fn tokenize(text: &str) -> Result<Vec<Tok>, ScimError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' | '[' | ']' => {
                out.push(match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '[' => Tok::LBrack,
                    _ => Tok::RBrack,
                });
                i += 1;
            }
            '"' => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                if i >= chars.len() {
                    return Err(invalid(text));
                }
                let lit: String = chars[start..=i].iter().collect();
                let s: String = serde_json::from_str(&lit).map_err(|_| invalid(text))?;
                out.push(Tok::Str(s));
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"()[]\"".contains(chars[i]) {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat(&mut self, t: Tok) -> Result<(), ScimError> {
        if self.next() == Some(t) {
            Ok(())
        } else {
            Err(invalid(self.text))
        }
    }

    fn or(&mut self) -> Result<Filter, ScimError> {
        let mut e = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            e = Filter::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Filter, ScimError> {
        let mut e = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            e = Filter::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Filter, ScimError> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                self.eat(Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("not") => {
                self.eat(Tok::LParen)?;
                let e = self.or()?;
                self.eat(Tok::RParen)?;
                Ok(Filter::Not(Box::new(e)))
            }
            Some(Tok::Word(attr)) => {
                if self.toks.get(self.pos) == Some(&Tok::LBrack) {
                    self.pos += 1;
                    let inner = self.or()?;
                    self.eat(Tok::RBrack)?;
                    // Entra form: attr[filter].sub op value
                    let sub = match self.toks.get(self.pos) {
                        Some(Tok::Word(s)) if s.starts_with('.') && s.len() > 1 => {
                            Some(s[1..].to_string())
                        }
                        _ => None,
                    };
                    let inner = match sub {
                        None => inner,
                        Some(sub) => {
                            self.pos += 1;
                            let cmp = self.comparison(sub)?;
                            Filter::And(Box::new(inner), Box::new(cmp))
                        }
                    };
                    return Ok(Filter::ValuePath {
                        attr,
                        inner: Box::new(inner),
                    });
                }
                self.comparison(attr)
            }
            _ => Err(invalid(self.text)),
        }
    }

    fn comparison(&mut self, attr: String) -> Result<Filter, ScimError> {
        let Some(Tok::Word(op)) = self.next() else {
            return Err(invalid(self.text));
        };
        let op = match op.to_ascii_lowercase().as_str() {
            "pr" => return Ok(Filter::Present(attr)),
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "co" => Op::Co,
            "sw" => Op::Sw,
            "ew" => Op::Ew,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return Err(invalid(self.text)),
        };
        let value = match self.next() {
            Some(Tok::Str(s)) => Value::String(s),
            Some(Tok::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => serde_json::from_str::<serde_json::Number>(&w)
                    .map(Value::Number)
                    .map_err(|_| invalid(self.text))?,
            },
            _ => return Err(invalid(self.text)),
        };
        Ok(Filter::Cmp { attr, op, value })
    }
}

/// Parses a filter; any syntax error is `400 invalidFilter`.
pub(crate) fn parse(text: &str) -> Result<Filter, ScimError> {
    let mut p = Parser {
        toks: tokenize(text)?,
        pos: 0,
        text,
    };
    let f = p.or()?;
    if p.pos != p.toks.len() {
        return Err(invalid(text));
    }
    Ok(f)
}

/// Case-insensitive key lookup.
pub(crate) fn get_ci<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Splits a possibly URN-qualified attribute path into (is_enterprise, rest).
pub(crate) fn strip_urn(path: &str) -> (bool, &str) {
    let lower = path.to_ascii_lowercase();
    for urn in [USER_SCHEMA, GROUP_SCHEMA] {
        if lower.starts_with(&format!("{}:", urn.to_ascii_lowercase())) {
            return (false, &path[urn.len() + 1..]);
        }
    }
    if lower.starts_with(&format!("{}:", ENT_SCHEMA.to_ascii_lowercase())) {
        return (true, &path[ENT_SCHEMA.len() + 1..]);
    }
    (false, path)
}

/// All values at `path` (dotted, case-insensitive), flattening multi-valued attributes.
fn values(res: &Value, path: &str) -> Vec<Value> {
    let (ent, rest) = strip_urn(path);
    let root = match (ent, res) {
        (true, Value::Object(m)) => get_ci(m, ENT_SCHEMA).cloned().unwrap_or(Value::Null),
        _ => res.clone(),
    };
    let mut cur = vec![root];
    for seg in rest.split('.') {
        let mut next = vec![];
        for v in &cur {
            match v.as_object().and_then(|m| get_ci(m, seg)) {
                Some(Value::Array(a)) => next.extend(a.iter().cloned()),
                Some(Value::Null) | None => {}
                Some(x) => next.push(x.clone()),
            }
        }
        cur = next;
    }
    cur
}

fn case_exact(prefix: &str, attr: &str) -> bool {
    let (_, rest) = strip_urn(attr);
    let full = if prefix.is_empty() {
        rest.to_ascii_lowercase()
    } else {
        format!("{prefix}.{rest}").to_ascii_lowercase()
    };
    CASE_EXACT.contains(&full.as_str())
}

fn compare(v: &Value, op: Op, want: &Value, exact: bool) -> bool {
    use std::cmp::Ordering;
    let fold = |s: &str| {
        if exact {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let ord: Option<Ordering> = match (v, want) {
        (Value::String(a), Value::String(b)) => {
            let (a, b) = (fold(a), fold(b));
            match op {
                Op::Co => return a.contains(&b),
                Op::Sw => return a.starts_with(&b),
                Op::Ew => return a.ends_with(&b),
                _ => Some(a.cmp(&b)),
            }
        }
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match (op, ord) {
        (Op::Eq, Some(o)) => o == Ordering::Equal,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        _ => false,
    }
}

impl Filter {
    /// Whether a resource (or a multi-valued element) satisfies the filter.
    pub(crate) fn matches(&self, res: &Value) -> bool {
        self.eval(res, "")
    }

    /// Evaluates with `prefix` = the enclosing multi-valued attribute (for caseExact rules).
    pub(crate) fn eval(&self, res: &Value, prefix: &str) -> bool {
        match self {
            Filter::And(a, b) => a.eval(res, prefix) && b.eval(res, prefix),
            Filter::Or(a, b) => a.eval(res, prefix) || b.eval(res, prefix),
            Filter::Not(a) => !a.eval(res, prefix),
            Filter::Present(attr) => values(res, attr).iter().any(|v| match v {
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            }),
            Filter::Cmp { attr, op, value } => {
                let vals = values(res, attr);
                let exact = case_exact(prefix, attr);
                match (op, value) {
                    (Op::Eq, Value::Null) => vals.is_empty(),
                    (Op::Ne, Value::Null) => !vals.is_empty(),
                    (Op::Ne, _) => !vals.iter().any(|v| compare(v, Op::Eq, value, exact)),
                    _ => vals.iter().any(|v| compare(v, *op, value, exact)),
                }
            }
            Filter::ValuePath { attr, inner } => {
                let (_, rest) = strip_urn(attr);
                let p = rest.to_ascii_lowercase();
                values(res, attr).iter().any(|el| inner.eval(el, &p))
            }
        }
    }

    /// For `attr eq "v"` filters (used by PATCH add through an unmatched filter): (attr, v).
    pub(crate) fn simple_eq(&self) -> Option<(&str, &Value)> {
        match self {
            Filter::Cmp {
                attr,
                op: Op::Eq,
                value,
            } => Some((attr.as_str(), value)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(f: &str, r: &Value) -> bool {
        parse(f).map(|f| f.matches(r)).unwrap_or(false)
    }

    #[test]
    fn operators_case_rules_and_value_paths() {
        let r = json!({"id": "AbC", "userName": "Jane.Doe@X.com", "externalId": "Ext1", "active": true,
            "emails": [{"type": "work", "value": "j@x.com"}, {"type": "home", "value": "h@y.com"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Sales"}});
        assert!(m(r#"USERNAME eq "jane.doe@x.com""#, &r));
        assert!(!m(r#"externalId eq "ext1""#, &r), "externalId is caseExact");
        assert!(!m(r#"id eq "abc""#, &r));
        assert!(m(r#"userName sw "JANE" and active eq true"#, &r));
        assert!(m(r#"userName co "nope" or externalId pr"#, &r));
        assert!(m(r#"not (userName ew ".org")"#, &r));
        assert!(m(r#"emails[type eq "work" and value co "j@"]"#, &r));
        assert!(m(r#"emails[type eq "work"].value eq "J@X.COM""#, &r));
        assert!(!m(r#"emails[type eq "home"].value eq "j@x.com""#, &r));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "sales""#,
            &r
        ));
        assert!(m(r#"userName ne "other""#, &r));
        let q = json!({"userName": "say \"hi\""});
        assert!(m(r#"userName eq "say \"hi\"""#, &q));
        assert!(parse(r#"userName eq"#).is_err());
        assert!(parse(r#"userName xx "a""#).is_err());
        assert!(parse(r#"(userName eq "a""#).is_err());
    }
}
