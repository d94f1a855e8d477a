//! Reading workflow JSON text: serde_json's parser, minus what it lets through quietly.
//!
//! serde_json keeps the last of two fields with the same name, so `{"cmd": "a", "cmd": "b"}`
//! would run `b` and drop `a` without a word; [`StrictValue`] refuses the duplicate instead,
//! with its line and column. And a leading byte-order mark, which serde_json reports as
//! "expected value at line 1 column 1", gets a message that says what it is.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// Parses JSON text into a value, refusing duplicate fields and a byte-order mark.
pub(crate) fn parse(text: &str) -> Result<Value> {
    if text.starts_with('\u{feff}') {
        return Err(Error::Json {
            line: 1,
            column: 1,
            message: "the text starts with a byte-order mark (U+FEFF); save it as UTF-8 \
                      without a BOM"
                .to_owned(),
        });
    }
    let mut de = serde_json::Deserializer::from_str(text);
    StrictValue::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v.0))
        .map_err(|e| Error::Json {
            line: e.line(),
            column: e.column(),
            message: syntax_message(&e),
        })
}

/// serde_json's message without its " at line L column C", which [`Error::Json`] reports
/// separately.
fn syntax_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    }
}

/// A JSON value whose objects have no duplicate field, at any depth.
pub(crate) struct StrictValue(pub(crate) Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> DeserializeSeed<'de> for StrictVisitor {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

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
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
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

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(StrictVisitor)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "field {key:?} appears twice in the same object; each field may appear once"
                )));
            }
            let value = map.next_value_seed(StrictVisitor)?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn values_parse_as_serde_json_parses_them() {
        let text = r#"{"a": [1, -2, 3.5, true, null, "x\u00e9"], "b": {"c": {}}, "d": []}"#;
        let ours = parse(text).unwrap();
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_duplicate_field_is_refused_with_its_line_and_column() {
        assert_eq!(
            err("{\"run\": [\n  {\"cmd\": \"a\", \"cmd\": \"b\"}\n]}"),
            "workflow is not valid JSON (line 2, column 20): field \"cmd\" appears twice in the \
             same object; each field may appear once"
        );
    }

    #[test]
    fn the_same_field_in_different_objects_is_fine() {
        parse(r#"{"run": [{"cmd": "a"}, {"cmd": "b"}]}"#).unwrap();
    }

    #[test]
    fn a_byte_order_mark_is_named() {
        assert_eq!(
            err("\u{feff}{\"run\": []}"),
            "workflow is not valid JSON (line 1, column 1): the text starts with a byte-order \
             mark (U+FEFF); save it as UTF-8 without a BOM"
        );
    }

    #[test]
    fn syntax_errors_keep_serde_json_messages() {
        assert_eq!(
            err("{\"run\": [}"),
            "workflow is not valid JSON (line 1, column 10): expected value"
        );
        assert_eq!(
            err("{} x"),
            "workflow is not valid JSON (line 1, column 4): trailing characters"
        );
        assert!(err(&"[".repeat(200)).contains("recursion limit exceeded"));
    }
}
