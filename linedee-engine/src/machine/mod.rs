//! The run state machine: every rule of a run's life (steps in order, parallel groups,
//! retries and backoff, timeouts, `no_output`, `wait_for`, cancel, redrive, resume after a
//! crash) in one place, with no I/O, in the style of quinn-proto and rustls.
//!
//! A driver feeds [`Event`]s and the current time into [`Machine::handle`] together with the
//! run's [`RunRecord`]; the machine updates the record and returns the [`Effect`]s the driver
//! must carry out (start or stop an attempt, arm a timer, publish the status document, store a
//! log). The machine never reads a clock, spawns nothing and touches no file, so the same rules
//! drive the local engine (SQLite, process groups) and a cloud engine (S3, SQS, dynos).
//!
//! - `record`: the run's state, serialisable and versioned (a journal stores it as it is).
//! - `io`: the events in and the effects out.
//! - `run`: the machine's entry points and the rules for starting work; `outcome`: exits,
//!   outputs, timers, retries; `control`: ending, cancel, redrive, shutdown and restart.

mod control;
mod io;
mod outcome;
mod record;
mod run;
#[cfg(test)]
mod tests;

pub(crate) use io::{Effect, Event, Refused, StopReason, Timer};
pub(crate) use record::{Millis, RunRecord, Wait, now_ms};
pub(crate) use run::Machine;
