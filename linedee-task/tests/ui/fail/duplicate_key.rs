use linedee_task::{ld_task, TaskContext};

#[ld_task(timeout = 30, retries = 1, timeout = 60)]
async fn twice(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

fn main() {}
