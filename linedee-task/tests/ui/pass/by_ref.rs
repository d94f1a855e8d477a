use linedee_task::{ld_task, Output, TaskContext};

#[ld_task]
async fn by_ref_async(ctx: &TaskContext) -> Result<Output, std::io::Error> {
    Ok(Output::bytes(ctx.task_id().to_owned()))
}

#[ld_task]
fn by_ref_sync(ctx: &linedee_task::TaskContext) -> anyhow::Result<()> {
    anyhow::ensure!(!ctx.task_id().is_empty(), "no task id");
    Ok(())
}

fn main() {
    assert_eq!(by_ref_async::task().cmd, "by-ref-async");
    assert_eq!(by_ref_sync::task().cmd, "by-ref-sync");
    let ctx = TaskContext::from_line_d(r#"{"task_id":"r.0.0"}"#).unwrap();
    by_ref_sync(&ctx).unwrap();
    let names: Vec<_> = linedee_task::tasks().iter().map(|d| d.spec.name).collect();
    assert_eq!(names, ["by-ref-async", "by-ref-sync"]);
}
