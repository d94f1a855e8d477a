//! Interop: linedee against peers no one here wrote (issue 7).
//!
//! - `local`: the product document's Python examples (boto3) and the AWS CLI against a real
//!   `linedee local`, with only `endpoint_url` and path-style addressing added.
//! - `moto`: the SDK against moto's S3 server: submit, multipart with `ld_code`, task output
//!   and state, export, refreshing credentials.
//! - `serve`: `linedee serve` on moto's S3 and SQS, with a real bucket notification: the
//!   product document's workflows, cancel and retry through the bucket, the bucket
//!   dashboard, start-up checks and bad input; `serve_dynos`: the dyno runner on the fake
//!   Heroku API; `serve_race`: replicas racing on duplicated events (the embedded store as
//!   S3); `serve_failover`: kill -9 of a replica mid-run; `serve_check`: `linedee cloud check`
//!   and `setup`; `serve_probe`: the check's live items and retention of finished runs;
//!   `serve_rotate`: credentials rotated into config vars (moto STS and IAM).
//!
//! The Python tools are pinned in `requirements.txt` and installed into a venv by `setup-venv`
//! (`.ci/test` runs it first; the tests run it too, so a bare `cargo test` works).

#![allow(clippy::unwrap_used)]

mod local;
mod moto;
mod serve;
mod serve_check;
mod serve_dynos;
mod serve_failover;
mod serve_probe;
mod serve_race;
mod serve_rotate;
mod support;
