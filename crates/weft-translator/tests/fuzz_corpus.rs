//! Replays the committed `annotations` fuzz corpus (fuzz/corpus/annotations) through the
//! fuzz target's dispatch (first byte picks the parser, the rest is the value), so every
//! `cargo test` run covers it without a fuzzer: errors, never panics.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::PathBuf;

/// The fuzz target's body: true if the parser accepted the value.
#[path = "../../../fuzz/bodies/annotations.rs"]
mod target;
use target::run;

#[test]
fn every_annotation_corpus_input_parses_or_fails_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/annotations");
    let (mut seen, mut accepted) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        seen += 1;
        let ok = std::panic::catch_unwind(|| run(&data))
            .unwrap_or_else(|_| panic!("corpus input {} panics", path.display()));
        accepted += usize::from(ok);
    }
    assert!(seen >= 5, "the committed corpus is missing");
    // The seeds are real annotations: most of them are valid.
    assert!(accepted >= 5, "only {accepted} of {seen} corpus inputs accepted");
}
