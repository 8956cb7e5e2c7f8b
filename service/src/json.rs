//! JSON text from clients (node `params`, `data_inputs`), parsed strictly, and JSON text for
//! the wire, written in one allocation.
//!
//! RFC 8259 leaves duplicate object keys undefined, and `serde_json` keeps the last one, so
//! `{"output_rate": 16000, "output_rate": 8000}` would silently run at 8000 Hz. Here a duplicate
//! key at any depth is an error that names the key.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `text`, refusing duplicate object keys.
///
/// ```
/// # use remotemedia::json::parse;
/// assert!(parse(r#"{"a": {"b": 1}}"#).is_ok());
/// let err = parse(r#"{"a": 1, "a": 2}"#).unwrap_err().to_string();
/// assert!(err.starts_with("duplicate key `a`"), "{err}");
/// ```
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict::deserialize(&mut de)?.0;
    de.end()?;
    Ok(value)
}

/// `value` as compact JSON text. The buffer starts at 256 bytes, which holds the metadata
/// strings of a result (`output_metadata`, `custom_metrics`) without growing:
/// `serde_json::to_string` starts at 128 and regrows for most of them.
pub fn to_text(value: &impl serde::Serialize) -> String {
    let mut buf = Vec::with_capacity(256);
    match serde_json::to_writer(&mut buf, value) {
        // serde_json writes UTF-8 only.
        Ok(()) => String::from_utf8(buf).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A JSON value whose objects had no duplicate keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}` (each key may appear once)",
                    crate::text::quoted(&key)
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        let err = parse(r#"{"output_rate": 16000, "output_rate": 8000}"#).unwrap_err().to_string();
        assert!(err.contains("duplicate key `output_rate`"), "{err}");
        let err = parse(r#"[{"x": {"y": 1, "y": 1}}]"#).unwrap_err().to_string();
        assert!(err.contains("duplicate key `y`"), "{err}");
    }

    #[test]
    fn everything_else_parses_as_serde_json_does() {
        let text = r#"{"a": [1, -2, 3.5, 18446744073709551776, "s", null, true], "b": {"c": {}}}"#;
        assert_eq!(parse(text).unwrap(), serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(parse("  7 ").unwrap(), json!(7));
        assert!(parse("{} x").is_err());
    }
}
