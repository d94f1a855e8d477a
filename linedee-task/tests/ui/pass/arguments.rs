use std::time::Duration;

use linedee_task::__private::Machine;
use linedee_task::{ld_task, TaskContext};

#[ld_task(name = "resize-2")]
async fn named(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task(machine = "Standard-2X")]
async fn big(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task(timeout = 30)]
async fn quick(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task(no_output)]
async fn fire_and_forget(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task(retries = 5)]
async fn flaky(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task(name = "all-of-them", machine = "performance-l", timeout = 86400, no_output = true, retries = 0,)]
fn everything(_ctx: &TaskContext) -> anyhow::Result<()> {
    Ok(())
}

fn main() {
    assert_eq!(named::task().cmd, "resize-2");
    assert_eq!(big::task().machine, Machine::Standard2x);
    assert_eq!(quick::task().timeout_duration(), Duration::from_secs(30));
    assert!(fire_and_forget::task().no_output);
    assert_eq!(flaky::task().retries, Some(5));

    let all = everything::task();
    assert_eq!(all.cmd, "all-of-them");
    assert_eq!(all.machine, Machine::PerformanceL);
    assert_eq!(all.timeout, 86400);
    assert!(all.no_output);
    assert_eq!(all.retries, Some(0));

    let spec = linedee_task::tasks()
        .into_iter()
        .find(|d| d.fn_name == "everything")
        .unwrap()
        .spec;
    assert_eq!(spec.machine, Some("performance-l"));
    assert_eq!(linedee_task::tasks().len(), 6);
}
