//! The product document's three workflows, built with the typed builder.
//!
//! `cargo run -p linedee-example-workflows` prints each as the JSON line^d receives.

use std::time::Duration;

use linedee::{Machine, Task, TaskGroup, Workflow};

/// "Quickstart with Python": two steps that only echo, with `no_output`.
pub fn starter() -> Workflow {
    Workflow::new()
        .title("Example 2-step workflow")
        .step(
            Task::new(r#"bash -c 'echo "Do Step 1"'"#)
                .machine(Machine::Basic)
                .no_output(),
        )
        .step(
            Task::new(r#"bash -c 'echo "Do Step 2"'"#)
                .machine(Machine::Basic)
                .no_output(),
        )
}

/// "Defining Workflows in JSON": a task, then a parallel `get_data` group.
pub fn get_data() -> Workflow {
    Workflow::new()
        .title("Workflow title")
        .step(
            Task::new("process_image")
                .name("First task to run")
                .machine(Machine::Standard2x)
                .option("dir", "out")
                .option("model_preset", "model-preset"),
        )
        .step(
            TaskGroup::new(
                ["posts", "users", "comments"]
                    .map(|endpoint| Task::new("get_data").option("endpoint", endpoint)),
            )
            .name("Run a parallel Task Group"),
        )
}

/// "Attach Workflows to Your Media and Data Files": `process_image` with a 30 s timeout.
pub fn process_media() -> Workflow {
    Workflow::new().title("Process media files").step(
        Task::new("process_image")
            .machine(Machine::Basic)
            .timeout(Duration::from_secs(30)),
    )
}

fn main() {
    for (name, wf) in [
        ("starter", starter()),
        ("get_data", get_data()),
        ("process_media", process_media()),
    ] {
        if let Err(e) = wf.validate() {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
        println!("# {name}\n{}", wf.to_json_pretty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_workflows_match_the_product_document() {
        assert_eq!(
            starter().to_json(),
            r#"{"title":"Example 2-step workflow","run":[{"cmd":"bash -c 'echo \"Do Step 1\"'","no_output":true},{"cmd":"bash -c 'echo \"Do Step 2\"'","no_output":true}]}"#
        );
        let wf = get_data();
        wf.validate().unwrap();
        assert_eq!(wf.run[1].tasks().len(), 3);
        assert_eq!(wf.run[1].name(), Some("Run a parallel Task Group"));
        assert_eq!(
            process_media().to_json(),
            r#"{"title":"Process media files","run":[{"cmd":"process_image","timeout":30}]}"#
        );
        // Each survives the trip through JSON and metadata unchanged.
        for wf in [starter(), get_data(), process_media()] {
            assert_eq!(Workflow::parse(&wf.to_json()).unwrap(), wf);
            assert_eq!(Workflow::parse(&wf.to_metadata_json()).unwrap(), wf);
        }
    }
}
