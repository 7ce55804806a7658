//! Manifests: YAML/JSON text as `weft apply -f` reads it (weft-api's
//! `parse_manifest_text`), each document then decoded as a weft input object
//! (weft-model's `InputObject::from_value`). Bad input must be an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for doc in weft_api::manifest::parse_manifest_text(text, "fuzz.yaml")
        .into_iter()
        .flatten()
    {
        if let Ok(obj) = weft_model::input::InputObject::from_value(doc.object) {
            // What decodes must encode and decode again.
            let _ = weft_model::input::InputObject::from_value(obj.to_value());
        }
    }
});
