use linedee_task::{ld_task, TaskContext};

#[ld_task(name = "Process_Image")]
async fn process_image(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task]
async fn _private_helper(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task(name = "list")]
async fn listing(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

fn main() {}
