//! The engine crate's integration tests, in one binary (one link of the stack instead of one
//! per file).
//!
//! - `s3_api`: aws-sdk-s3 against the served store, every supported operation.
//! - `auth`: SigV4, rotating session credentials, expired tokens.
//! - `large_bodies`: bodies hashed on their own thread and spilled while they arrive.
//! - `inline_bodies`: small bodies in the index, larger ones in files, and between them.
//! - `multipart_bodies`: a completed upload read from its parts' files.
//! - `crash`: the store killed with SIGKILL while clients write, then restarted.

mod common;

mod auth;
mod crash;
mod inline_bodies;
mod large_bodies;
mod multipart_bodies;
mod s3_api;
