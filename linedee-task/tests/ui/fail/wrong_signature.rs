use linedee_task::{ld_task, TaskContext};

#[ld_task]
async fn no_context() -> anyhow::Result<()> {
    Ok(())
}

#[ld_task]
async fn wrong_type(_path: String) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task]
async fn two_args(_ctx: TaskContext, _n: u32) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task]
fn no_result(_ctx: &mut TaskContext) {}

#[ld_task]
async fn generic<T>(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task]
async fn not_a_result(_ctx: TaskContext) -> u32 {
    1
}

fn main() {}
