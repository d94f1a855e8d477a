//! linedee's integration tests, in one binary (one link of the client instead of one per file).
//!
//! - `faults`: the client under faults injected with wiremock (single requests).
//! - `upload_faults`: uploads under faults, multipart included.
//! - `providers`: the Heroku credential providers.

mod common;
mod faults;
mod providers;
mod upload_faults;
