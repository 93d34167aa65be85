//! Validation of `[[sync.scope_filter]]`: the clauses are compiled here, at load, so an
//! unknown operator, a bad regex or a missing value is a config error naming the key and
//! the line of *that* clause (exit 2), never a surprise in the middle of a cycle.

use super::{ConfigError, ScopeClause, Validator};
use crate::plan::filter::ScopeFilter;

/// The array-of-tables header the clauses live under.
const SECTION: &str = "sync.scope_filter";

impl Validator<'_> {
    pub(super) fn scope_filter(&self, clauses: &[ScopeClause]) -> Result<ScopeFilter, ConfigError> {
        ScopeFilter::compile(clauses).map_err(|e| ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: format!("{SECTION}[{}].{}", e.index + 1, e.key),
            line: line_of_nth(self.text, SECTION, e.index, e.key),
            message: e.message,
        })
    }
}

/// The 1-based line of `key` inside the `index`-th (0-based) `[[section]]` table; the
/// table's header line when the key is absent; `section = [...]` written inline, or 1.
pub(super) fn line_of_nth(text: &str, section: &str, index: usize, key: &str) -> usize {
    let mut seen = 0usize;
    let mut inside = false;
    let mut header = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            let name = t
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(|c| c == '[' || c == ']')
                .trim();
            let is_table = t.starts_with("[[") && name == section;
            if inside {
                break;
            }
            if is_table {
                if seen == index {
                    inside = true;
                    header = Some(i + 1);
                }
                seen += 1;
            }
            continue;
        }
        let name = t.split('=').next().unwrap_or("").trim().trim_matches('"');
        if inside && t.contains('=') && name == key {
            return i + 1;
        }
    }
    header.unwrap_or_else(|| {
        let (parent, leaf) = section.rsplit_once('.').unwrap_or(("", section));
        super::line_of(text, parent, leaf)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[sync]\nmax_deactivations = 5\n\n[[sync.scope_filter]]\nattribute = \"department\"\noperator = \"EQUALS\"\nvalue = \"Sales\"\n\n[[sync.scope_filter]]  # second\nattribute = \"jobTitle\"\noperator = \"IS NOT NULL\"\n\n[state]\npath = \"x\"\n";

    #[test]
    fn finds_the_key_of_the_right_clause() {
        assert_eq!(line_of_nth(TEXT, SECTION, 0, "value"), 7);
        assert_eq!(line_of_nth(TEXT, SECTION, 1, "operator"), 11);
        assert_eq!(
            line_of_nth(TEXT, SECTION, 1, "value"),
            9,
            "absent key: the clause's header"
        );
    }
}
