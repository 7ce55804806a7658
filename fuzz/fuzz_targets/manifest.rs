//! Manifests: YAML/JSON text as `weft apply -f` reads it (weft-api's
//! `parse_manifest_text`), each document then decoded as a weft input object
//! (weft-model's `InputObject::from_value`). Bad input must be an error, never a panic.
#![no_main]

#[path = "../bodies/manifest.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = body::run(data, "fuzz.yaml");
});
