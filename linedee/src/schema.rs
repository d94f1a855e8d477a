//! The JSON Schema of the workflow format, generated from the types by schemars.
//!
//! A copy is committed at `schema/workflow.schema.json`; a test keeps it in sync.

use crate::workflow::Workflow;

/// The JSON Schema (draft 2020-12) of a workflow.
///
/// ```
/// let schema = linedee::schema();
/// assert_eq!(schema["title"], "line^d workflow");
/// assert!(schema["required"].as_array().unwrap().iter().any(|r| r == "run"));
/// ```
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Workflow)).unwrap_or_default()
}

/// The schema as pretty JSON text with a trailing newline, as committed.
pub fn schema_json() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn committed_schema_is_in_sync() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/workflow.schema.json");
        let generated = super::schema_json();
        if std::env::var_os("LINEDEE_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "schema/workflow.schema.json is out of date; regenerate it with `LINEDEE_BLESS=1 cargo test -p linedee schema`"
        );
    }
}
