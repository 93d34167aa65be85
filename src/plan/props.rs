//! A user's stored Entra properties parsed without copying: strings borrow the stored text
//! (unless escaped), anything else becomes a JSON value. Mapping a user from these needs
//! a few allocations instead of a map of owned keys and values.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::mapping::Props;

/// One user's top-level properties, in stored order (a repeated key: the last one counts,
/// as in a parsed map).
pub(super) struct RowProps<'t> {
    entries: Vec<(Cow<'t, str>, Prop<'t>)>,
}

enum Prop<'t> {
    Str(Cow<'t, str>),
    Other(Value),
}

impl<'t> RowProps<'t> {
    /// Parses stored properties; `None` unless they are a JSON object.
    pub(super) fn parse(text: &'t str) -> Option<RowProps<'t>> {
        serde_json::from_str(text).ok()
    }

    fn get(&self, name: &str) -> Option<&Prop<'t>> {
        self.entries
            .iter()
            .rev()
            // the first byte rejects most keys of the same length without a `memcmp`
            .find(|(k, _)| k.as_bytes().first() == name.as_bytes().first() && k == name)
            .map(|(_, v)| v)
    }

    /// The same properties as a parsed map (the scoping filter reads that).
    pub(super) fn to_map(&self) -> Map<String, Value> {
        self.entries
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Prop::Str(s) => Value::String(s.to_string()),
                    Prop::Other(v) => v.clone(),
                };
                (k.to_string(), v)
            })
            .collect()
    }
}

impl Props for RowProps<'_> {
    fn str(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Prop::Str(s) => Some(s),
            Prop::Other(_) => None,
        }
    }

    fn value(&self, name: &str) -> Option<&Value> {
        match self.get(name)? {
            Prop::Str(_) => None,
            Prop::Other(v) => Some(v),
        }
    }
}

impl<'de> Deserialize<'de> for RowProps<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RowProps<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(Cow<str>, Prop)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Text(k)) = map.next_key()? {
                    entries.push((k, map.next_value()?));
                }
                Ok(RowProps { entries })
            }
        }
        d.deserialize_map(V)
    }
}

/// A key: borrowed unless escaped.
struct Text<'t>(Cow<'t, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ValueVisitor).and_then(|p| match p {
            Prop::Str(s) => Ok(Text(s)),
            Prop::Other(_) => Err(serde::de::Error::custom("expected a string")),
        })
    }
}

impl<'de> Deserialize<'de> for Prop<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Prop<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Prop::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Prop::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Prop::Str(Cow::Owned(v)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Prop::Other(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Prop::Other(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Prop::Other(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Prop::Other(Value::from(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Prop::Other(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Prop::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Prop::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_a_map() {
        let text = r#"{"a":"x","b":["1",2],"c":{"d":"e"},"e":"q\"uote","f":true,"g":null,"h":1.5,"a":"last"}"#;
        let props = RowProps::parse(text).unwrap();
        let map: Map<String, Value> = serde_json::from_str(text).unwrap();
        assert_eq!(props.to_map(), map);
        assert_eq!(props.str("a"), Some("last"));
        assert_eq!(props.str("e"), Some("q\"uote"));
        assert_eq!(props.value("f"), Some(&Value::Bool(true)));
        assert!(RowProps::parse("[1]").is_none());
        assert!(RowProps::parse("{").is_none());
    }
}
