#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sextant_fuzzing::otlp_json(data));
