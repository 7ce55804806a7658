//! The `manifest` fuzz target's body, shared with its corpus replay test
//! (crates/weft-api/tests/fuzz_corpus.rs): YAML/JSON text as `weft apply -f` reads it
//! (weft-api's `parse_manifest_text`), each document then decoded as a weft input object
//! (weft-model's `InputObject::from_value`). Bad input must be an error, never a panic.

use weft_model::input::InputObject;

/// How many documents decoded as input objects (`name` is the file name in errors).
pub fn run(data: &[u8], name: &str) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    let mut objects = 0;
    for doc in weft_api::manifest::parse_manifest_text(text, name)
        .into_iter()
        .flatten()
    {
        if let Ok(obj) = InputObject::from_value(doc.object) {
            objects += 1;
            // What decodes must encode and decode again.
            let _ = InputObject::from_value(obj.to_value());
        }
    }
    objects
}
