//! Unit tests of `decode.rs`.

use super::*;

fn problems(json: &str) -> Vec<String> {
    decode_str(json)
        .unwrap()
        .1
        .into_iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn a_typo_is_an_error_with_a_suggestion() {
    let p = problems(r#"{"run":[{"cmd":"x","timout":30}]}"#);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("run[0].timout: unknown field `timout` (did you mean `timeout`?)"),
        "{p:?}"
    );
}

#[test]
fn shortened_and_lengthened_names_get_suggestions() {
    for (given, expected) in [
        ("retry", Some("retries")),
        ("wait", Some("wait_for")),
        ("time", Some("timeout")),
        ("timeout_secs", Some("timeout")),
        ("Machine", Some("machine")),
        ("env", None),
        ("x", None),
    ] {
        assert_eq!(closest(given, TASK_FIELDS), expected, "{given}");
    }
}

#[test]
fn every_structural_problem_is_reported_at_once() {
    let p = problems(
        r#"{"title":7,"run":[{"cmd":"a","timeout":"60"},{"parallel":[{"cmd":"b","options":[1]},{"nope":1}]},{"x":1}]}"#,
    );
    let joined = p.join("\n");
    for needle in [
        "title: expected a string, got a number",
        "run[0].timeout: expected a whole number of seconds, got a string",
        "run[1].parallel[0].options[0]: expected a `name=value` string, got a number",
        "run[1].parallel[1].nope: unknown field",
        "run[1].parallel[1].cmd: missing required field `cmd`",
        "run[2]: expected a task (with `cmd`) or a task group (with `parallel`)",
        "run[2].x: unknown field `x`; task or task group fields are: name, cmd,",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
    assert_eq!(p.len(), 7, "{joined}");
}

#[test]
fn null_means_absent_for_optional_fields_only() {
    assert!(
        problems(r#"{"title":null,"run":[{"cmd":"a","name":null,"timeout":null,"retries":null}]}"#)
            .is_empty()
    );
    assert_eq!(problems(r#"{"run":[{"cmd":null,"name":"x"}]}"#).len(), 1);
    assert_eq!(
        problems(r#"{"run":null}"#),
        ["run: missing required field `run` (a list of tasks and task groups)"]
    );
}

#[test]
fn missing_run_and_wrong_root() {
    assert_eq!(
        problems("{}"),
        ["run: missing required field `run` (a list of tasks and task groups)"]
    );
    assert_eq!(
        problems("[]"),
        ["$: expected a workflow (an object), got a list"]
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    match decode_str("{\n  \"run\": [,]\n}") {
        Err(crate::Error::Json {
            line,
            column,
            message,
        }) => {
            assert_eq!((line, column), (2, 11));
            assert!(message.contains("expected value"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn negative_and_fractional_numbers_are_rejected() {
    let p = problems(r#"{"run":[{"cmd":"a","timeout":-1,"wait_for":1.5}]}"#).join("\n");
    assert!(
        p.contains("run[0].timeout: expected a whole number of seconds, got -1 (negative)"),
        "{p}"
    );
    assert!(
        p.contains("run[0].wait_for: expected a whole number of seconds, got 1.5"),
        "{p}"
    );
}

fn checked(json: &str) -> Vec<String> {
    decode_and_check_str(json)
        .unwrap()
        .1
        .into_iter()
        .map(|p| p.to_string())
        .collect()
}

/// Regression (bad-workflow corpus): a step or task dropped for a structural problem
/// shifted the semantic problems of the ones after it to the wrong path, and made a
/// non-empty `run` or group look empty.
#[test]
fn semantic_problems_keep_their_document_paths() {
    assert_eq!(
        checked(r#"{"run":[{"x":1},{"cmd":"a","timeout":0}]}"#),
        [
            "run[0]: expected a task (with `cmd`) or a task group (with `parallel`), found neither",
            "run[0].x: unknown field `x`; task or task group fields are: name, cmd, machine, timeout, options, no_output, wait_for, retries, parallel",
            "run[1].timeout: expected 1 to 86400 seconds, got 0",
        ]
    );
    let p = checked(r#"{"run":[{"parallel":[7,{"cmd":"b","options":["PORT=1"]}]}]}"#);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p[0].starts_with("run[0].parallel[0]: expected a task (an object)"));
    assert!(p[1].starts_with("run[0].parallel[1].options[0]: option name `PORT`"));
    // Without structural problems, the same as `validate::check`.
    let json = r#"{"run":[{"cmd":" ","retries":101},{"parallel":[]},{"parallel":[{"cmd":"c","wait_for":86401}]}]}"#;
    let (wf, problems) = decode_and_check_str(json).unwrap();
    assert_eq!(problems, crate::validate::check(&wf));
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

/// Regression (fuzz target `workflow`): an unknown field named `""` had the empty path;
/// a name that is not an identifier is quoted, so no path is empty or ambiguous.
#[test]
fn odd_field_names_get_quoted_paths() {
    // serde_json orders an object's keys.
    let p = problems(r#"{"":7,"run":[{"cmd":"x","a.b":1,"[0]":2}]}"#);
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p[0].starts_with(r#"$[""]: unknown field ``"#), "{p:#?}");
    assert!(
        p[1].starts_with(r#"run[0]["[0]"]: unknown field `[0]`"#),
        "{p:#?}"
    );
    assert!(
        p[2].starts_with(r#"run[0]["a.b"]: unknown field `a.b`"#),
        "{p:#?}"
    );
}

/// Regression (bad-workflow corpus): `{"paralel": […]}` said only "found neither".
#[test]
fn a_step_with_neither_gets_typo_suggestions() {
    let p = checked(r#"{"run":[{"name":"Fetch","paralel":[{"cmd":"x"}]}]}"#);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p[0].ends_with("found neither"), "{p:#?}");
    assert!(
        p[1].starts_with("run[0].paralel: unknown field `paralel` (did you mean `parallel`?)"),
        "{p:#?}"
    );
}

#[test]
fn nested_groups_and_unknown_machines() {
    let p = problems(r#"{"run":[{"parallel":[{"parallel":[]}]},{"cmd":"a","machine":"huge"}]}"#)
        .join("\n");
    assert!(
        p.contains("run[0].parallel[0]: task groups cannot be nested"),
        "{p}"
    );
    assert!(
        p.contains("run[1].machine: unknown machine \"huge\"; expected one of: eco, basic"),
        "{p}"
    );
}
