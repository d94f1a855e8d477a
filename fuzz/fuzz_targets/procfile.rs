#![no_main]
//! The engine's Procfile and `.env` parsers.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linedee_engine::fuzzing::procfile(data));
