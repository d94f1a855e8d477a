// `crate = "…"` for an app that reaches linedee-task under another path.
mod deps {
    pub use linedee_task as ldt;
}

use deps::ldt::TaskContext;

#[deps::ldt::ld_task(crate = "crate::deps::ldt", timeout = 10)]
async fn renamed(_ctx: TaskContext) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {
    assert_eq!(renamed::task().cmd, "renamed");
    assert_eq!(renamed::task().timeout, 10);
    assert_eq!(deps::ldt::tasks()[0].spec.name, "renamed");
}
