use linedee_task::{ld_task, TaskContext};

#[ld_task]
async fn counts(_ctx: TaskContext) -> anyhow::Result<u32> {
    Ok(3)
}

fn main() {}
