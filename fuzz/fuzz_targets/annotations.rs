//! Pod and namespace annotations (weft-translator's annotation parsers): the first byte
//! picks the parser, the rest is the annotation value. Errors, never panics.
#![no_main]

#[path = "../bodies/annotations.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = body::run(data);
});
