#![no_main]
//! RFC 2047 decoding of metadata values, and run ids.
libfuzzer_sys::fuzz_target!(|data: &[u8]| linedee::fuzzing::rfc2047(data));
