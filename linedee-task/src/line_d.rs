//! Parses `line_D` (protocol §2.4) into [`linedee::LineD`], with errors that name the field.
//!
//! Rules: the value is a JSON object; `task_id` is a non-empty string; every other known
//! field is optional and `null` counts as absent; unknown fields are ignored.

use std::collections::BTreeMap;

use linedee::LineD;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Parses the text of `line_D`.
pub(crate) fn parse(raw: &str) -> Result<LineD> {
    let value: Value = serde_json::from_str(raw).map_err(|err| Error::LineDSyntax {
        line: err.line(),
        column: err.column(),
        message: strip_position(&err.to_string()),
    })?;
    let Value::Object(map) = value else {
        return Err(field_error("$", "a JSON object", Some(&value)));
    };
    let task_id = match map.get("task_id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        other => return Err(field_error("task_id", "a non-empty string", other)),
    };
    let mut line_d = LineD::new(task_id);
    line_d.run_id = string(&map, "run_id")?;
    line_d.attempt = match present(&map, "attempt") {
        None => None,
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n >= 1 => Some(n),
            _ => return Err(field_error("attempt", "a whole number from 1", Some(v))),
        },
    };
    line_d.workflow_title = string(&map, "workflow_title")?;
    line_d.task_name = string(&map, "task_name")?;
    line_d.cmd = string(&map, "cmd")?;
    line_d.machine = string(&map, "machine")?;
    line_d.timeout = match present(&map, "timeout") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => return Err(field_error("timeout", "whole seconds", Some(v))),
        },
    };
    line_d.options = options(&map)?;
    line_d.bucket = string(&map, "bucket")?;
    line_d.trigger_key = string(&map, "trigger_key")?;
    line_d.trigger_etag = string(&map, "trigger_etag")?;
    line_d.output_key = string(&map, "output_key")?;
    Ok(line_d)
}

/// The field's value, `null` counting as absent.
fn present<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    map.get(field).filter(|v| !v.is_null())
}

fn string(map: &Map<String, Value>, field: &'static str) -> Result<Option<String>> {
    match present(map, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(field_error(field, "a string", Some(other))),
    }
}

fn options(map: &Map<String, Value>) -> Result<BTreeMap<String, String>> {
    match present(map, "options") {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(opts)) => opts
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(field_error(
                    &format!("options.{k}"),
                    "a string",
                    Some(other),
                )),
            })
            .collect(),
        Some(other) => Err(field_error(
            "options",
            "an object of strings, e.g. {\"dir\":\"out\"}",
            Some(other),
        )),
    }
}

fn field_error(field: &str, expected: &'static str, found: Option<&Value>) -> Error {
    Error::LineDField {
        field: field.to_owned(),
        expected,
        found: describe(found),
    }
}

/// `string "abc"`, `number 1.5`, `an object` … short enough for one line.
fn describe(value: Option<&Value>) -> String {
    let shown = |v: &Value| {
        let text = v.to_string();
        if text.chars().count() > 40 {
            format!("{}…", text.chars().take(40).collect::<String>())
        } else {
            text
        }
    };
    match value {
        None => "nothing".to_owned(),
        Some(Value::Null) => "null".to_owned(),
        Some(v @ Value::Bool(_)) => format!("boolean {}", shown(v)),
        Some(v @ Value::Number(_)) => format!("number {}", shown(v)),
        Some(v @ Value::String(_)) => format!("string {}", shown(v)),
        Some(Value::Array(_)) => "an array".to_owned(),
        Some(Value::Object(_)) => "an object".to_owned(),
    }
}

/// serde_json appends " at line L column C"; the error carries those separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"{"task_id":"01JDX3Q7ZK6Q.1.0","run_id":"01JDX3Q7ZK6Q","attempt":1,
 "workflow_title":"Process media files","task_name":"Resize","cmd":"process_image",
 "machine":"basic","timeout":30,"options":{"dir":"out"},
 "bucket":"ld-private-x","trigger_key":"in/img/example_img.jpg",
 "trigger_etag":"\"9b2cf535f27731c974343645a3985328\"","output_key":"out/01JDX3Q7ZK6Q.1.0"}"#;

    fn err(raw: &str) -> String {
        parse(raw).expect_err(raw).to_string()
    }

    #[test]
    fn parses_the_spec_example() {
        let l = parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(l.task_id, "01JDX3Q7ZK6Q.1.0");
        assert_eq!(l.run_id.as_deref(), Some("01JDX3Q7ZK6Q"));
        assert_eq!(l.attempt, Some(1));
        assert_eq!(l.workflow_title.as_deref(), Some("Process media files"));
        assert_eq!(l.task_name.as_deref(), Some("Resize"));
        assert_eq!(l.cmd.as_deref(), Some("process_image"));
        assert_eq!(l.machine.as_deref(), Some("basic"));
        assert_eq!(l.timeout, Some(30));
        assert_eq!(l.options.get("dir").map(String::as_str), Some("out"));
        assert_eq!(l.bucket.as_deref(), Some("ld-private-x"));
        assert_eq!(l.trigger_key.as_deref(), Some("in/img/example_img.jpg"));
        assert_eq!(
            l.trigger_etag.as_deref(),
            Some("\"9b2cf535f27731c974343645a3985328\"")
        );
        assert_eq!(l.output_key.as_deref(), Some("out/01JDX3Q7ZK6Q.1.0"));
    }

    #[test]
    fn only_task_id_is_needed_and_unknown_fields_and_nulls_are_ignored() {
        let l = parse(r#"{"task_id":"r.0.0","future":{"x":[1]},"run_id":null}"#).unwrap();
        assert_eq!(l, LineD::new("r.0.0"));
    }

    #[test]
    fn task_id_is_required_and_non_empty() {
        assert_eq!(
            err(r#"{"run_id":"r"}"#),
            "`line_D` field `task_id`: expected a non-empty string, found nothing"
        );
        assert_eq!(
            err(r#"{"task_id":" "}"#),
            "`line_D` field `task_id`: expected a non-empty string, found string \" \""
        );
        assert_eq!(
            err(r#"{"task_id":7}"#),
            "`line_D` field `task_id`: expected a non-empty string, found number 7"
        );
    }

    #[test]
    fn malformed_fields_are_named() {
        assert_eq!(
            err(r#"{"task_id":"t","attempt":"x"}"#),
            "`line_D` field `attempt`: expected a whole number from 1, found string \"x\""
        );
        assert_eq!(
            err(r#"{"task_id":"t","attempt":0}"#),
            "`line_D` field `attempt`: expected a whole number from 1, found number 0"
        );
        assert_eq!(
            err(r#"{"task_id":"t","timeout":1.5}"#),
            "`line_D` field `timeout`: expected whole seconds, found number 1.5"
        );
        assert_eq!(
            err(r#"{"task_id":"t","trigger_key":["a"]}"#),
            "`line_D` field `trigger_key`: expected a string, found an array"
        );
        assert_eq!(
            err(r#"{"task_id":"t","options":{"dir":1}}"#),
            "`line_D` field `options.dir`: expected a string, found number 1"
        );
        assert!(err(r#"{"task_id":"t","options":["dir=out"]}"#).contains("field `options`"));
    }

    #[test]
    fn not_an_object_or_not_json() {
        assert_eq!(
            err("[1]"),
            "`line_D` field `$`: expected a JSON object, found an array"
        );
        assert_eq!(
            err("{\"task_id\":"),
            "`line_D` is not valid JSON (line 1, column 11): EOF while parsing a value"
        );
    }

    #[test]
    fn long_values_are_shortened() {
        let raw = format!(r#"{{"task_id":"t","attempt":"{}"}}"#, "x".repeat(100));
        let msg = err(&raw);
        assert!(msg.ends_with("…"), "{msg}");
        assert!(msg.len() < 120, "{msg}");
    }
}
