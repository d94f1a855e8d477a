use linedee_task::{ld_task, TaskContext};

#[ld_task(timout = 30)]
async fn typo(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task(machine = "huge")]
async fn bad_machine(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

#[ld_task(timeout = "30")]
async fn bad_timeout(_ctx: TaskContext) -> anyhow::Result<()> {
    Ok(())
}

fn main() {
    // The functions are still emitted, so using them is not an extra error.
    let _ = typo;
}
