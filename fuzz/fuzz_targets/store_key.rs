#![no_main]
//! Keys to paths: the SDK's export mapping and the store's key validation, body files and
//! listings.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    linedee::fuzzing::export_key(data);
    linedee_engine::fuzzing::store_keys(data);
});
