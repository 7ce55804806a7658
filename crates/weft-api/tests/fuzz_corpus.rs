//! Replays the committed `manifest` fuzz corpus (fuzz/corpus/manifest) through the fuzz
//! target's path, `parse_manifest_text` then `InputObject::from_value`, so every
//! `cargo test` run covers it without a fuzzer: no input may panic.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::PathBuf;

/// The fuzz target's body: how many input objects decoded.
#[path = "../../../fuzz/bodies/manifest.rs"]
mod target;

#[test]
fn every_manifest_corpus_input_parses_or_fails_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/manifest");
    let mut seen = 0;
    let mut objects = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        seen += 1;
        let name = path.display().to_string();
        let res = std::panic::catch_unwind(|| target::run(&bytes, &name));
        objects += res.unwrap_or_else(|_| panic!("corpus input {name} panics"));
    }
    assert!(seen >= 3, "the committed corpus is missing");
    // The seeds include the project's examples, which are valid objects.
    assert!(objects >= 3, "only {objects} objects decoded from the corpus");
}
