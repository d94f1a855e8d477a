//! The end-to-end tests, in one binary: the whole stack (client, engine, CLI support) is
//! linked once rather than once per file. Each module is one area; run one with a filter,
//! e.g. `cargo test -p linedee-tests --test it crash::`.

mod bad_workflows;
mod cli_runs;
mod crash;
mod dashboard;
mod engine;
mod fake_heroku;
mod faults;
mod fuzz_corpus;
#[path = "../interop/main.rs"]
mod interop;
mod overview;
mod secrets;
mod security;
