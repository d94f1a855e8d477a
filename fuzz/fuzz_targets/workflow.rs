#![no_main]
//! Workflow JSON: decoding, validation and the serialise/re-parse round trip.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linedee::fuzzing::workflow(data));
