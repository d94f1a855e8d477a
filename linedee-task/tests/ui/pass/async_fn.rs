use linedee_task::{ld_task, Json, TaskContext};

#[ld_task]
async fn process_image(ctx: TaskContext) -> anyhow::Result<Json<String>> {
    Ok(Json(ctx.task_id().to_owned()))
}

fn main() {
    // The typed handle: cmd is the derived name, the defaults are the engine's.
    let task = process_image::task();
    assert_eq!(task.cmd, "process-image");
    assert_eq!(task.machine, linedee_task::__private::Machine::Basic);
    assert_eq!(task.timeout, 60);
    assert!(!task.no_output);
    assert_eq!(task.retries, None);

    // Registered through inventory.
    let defs = linedee_task::tasks();
    assert_eq!(defs.len(), 1);
    assert_eq!(defs[0].spec.name, "process-image");
    assert_eq!(defs[0].fn_name, "process_image");
    assert!(matches!(defs[0].handler, linedee_task::Handler::Async(_)));

    // The function is still callable.
    let ctx = TaskContext::from_line_d(r#"{"task_id":"r.0.0"}"#).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let Json(id) = rt.block_on(process_image(ctx)).unwrap();
    assert_eq!(id, "r.0.0");
}
