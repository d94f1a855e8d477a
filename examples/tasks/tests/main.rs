//! The example task app's tests, in one binary: the app as a real process against the
//! embedded store (`e2e`), and the README's first command (`quickstart`). `outputs.rs` is a
//! test binary of its own, because it is also a task app (`harness = false`).

mod e2e;
mod quickstart;
