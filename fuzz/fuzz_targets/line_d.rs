#![no_main]
//! The task side's `line_D` parser and its round trip.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linedee_task::fuzzing::line_d(data));
