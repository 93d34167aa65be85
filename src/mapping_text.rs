//! Attributes as compact JSON text, written without serde where a large plan writes many:
//! a tenant's initial plan writes one text per user.

use std::borrow::Cow;

use super::Attrs;

/// Attributes as canonical JSON text (keys sorted). A plan holds one per created or
/// changed user; as text they take a fraction of the parsed map's memory, and they go to
/// the snapshot as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrText(Box<str>);

impl AttrText {
    /// Serialises attributes (a `BTreeMap`, so the text is canonical).
    pub fn from_attrs(attrs: &Attrs) -> AttrText {
        AttrText(
            serde_json::to_string(attrs)
                .unwrap_or_else(|_| "{}".into())
                .into(),
        )
    }

    /// Serialises mapped values (sorted by path, as [`super::SortedMapping::values`] returns
    /// them) with `active`: the text [`AttrText::from_attrs`] gives for the same attributes,
    /// without building their map (a large tenant's initial plan creates every user).
    pub fn from_values(values: &[(&str, Cow<'_, str>)], active: bool) -> AttrText {
        let size: usize = values.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
        let mut out = String::with_capacity(size + 64);
        let mut active = Some(if active { "true" } else { "false" });
        for (path, value) in values {
            if *path == "active" {
                continue;
            }
            if *path > "active" {
                if let Some(a) = active.take() {
                    push_entry(&mut out, "active", a);
                }
            }
            push_entry(&mut out, path, "");
            push_json_str(&mut out, value);
        }
        if let Some(a) = active {
            push_entry(&mut out, "active", a);
        }
        out.push('}');
        AttrText(out.into())
    }

    /// The attributes back as a map.
    pub fn attrs(&self) -> Attrs {
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Appends `"key":` and then `json` (already JSON text) to an object being written.
fn push_entry(out: &mut String, key: &str, json: &str) {
    out.push(if out.is_empty() { '{' } else { ',' });
    push_json_str(out, key);
    out.push(':');
    out.push_str(json);
}

/// Appends `text` as a JSON string, escaped exactly as serde_json escapes it. Text is
/// copied in runs between the bytes that need an escape (most values have none).
fn push_json_str(out: &mut String, text: &str) {
    out.push('"');
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(i) = next_escape(bytes, start) {
        // escaped bytes are ASCII, so `i` is a character boundary
        out.push_str(&text[start..i]);
        push_escape(out, bytes[i]);
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// Whether JSON escapes `b`: a quote, a backslash or a control character.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The first byte at or after `from` that JSON escapes, eight bytes per step: a word is
/// checked with the "has a zero byte" bit trick, which never misses one, and only a word
/// that may hold one is searched byte by byte.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    // a byte below `n` (n ≤ 0x80) sets its high bit; zero bytes are those below 1
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * n as u64) & !w & HIGH != 0;
    let mut at = from;
    while let Some(word) = bytes.get(at..at + 8) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let w = u64::from_le_bytes(eight);
        if below(w, 0x20)
            || below(w ^ (ONES * b'"' as u64), 1)
            || below(w ^ (ONES * b'\\' as u64), 1)
        {
            break;
        }
        at += 8;
    }
    let rest = bytes.get(at..)?;
    rest.iter().position(|&b| needs_escape(b)).map(|i| at + i)
}

/// Appends serde_json's escape of `b` (one of [`needs_escape`]'s bytes).
fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        0x08 => "\\b",
        b'\t' => "\\t",
        b'\n' => "\\n",
        0x0c => "\\f",
        b'\r' => "\\r",
        _ => "",
    };
    if !short.is_empty() {
        out.push_str(short);
        return;
    }
    out.push_str("\\u00");
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xf)] as char);
}
