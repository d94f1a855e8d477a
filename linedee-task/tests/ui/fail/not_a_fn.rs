use linedee_task::ld_task;

#[ld_task]
struct ProcessImage {
    width: u32,
}

fn main() {
    let p = ProcessImage { width: 1 };
    let _ = p.width;
}
