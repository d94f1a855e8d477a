use linedee_task::{ld_task, TaskContext};

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct MyError;

/// A sync task taking its context by value.
#[ld_task]
pub fn count_lines(ctx: TaskContext) -> Result<(), MyError> {
    let _ = ctx.attempt();
    Ok(())
}

fn main() {
    assert_eq!(count_lines::task().cmd, "count-lines");
    let defs = linedee_task::tasks();
    assert!(matches!(defs[0].handler, linedee_task::Handler::Sync(_)));
    let ctx = TaskContext::from_line_d(r#"{"task_id":"r.0.0"}"#).unwrap();
    count_lines(ctx).unwrap();
}
