//! Replays the committed `cni_request` fuzz corpus (fuzz/corpus/cni_request: `KEY=VALUE`
//! environment lines, an empty line, then the network configuration) through the fuzz
//! target's path, `CniEnv::from_lookup` and `NetConf::parse`, so every `cargo test` run
//! covers it without a fuzzer: every failure is a CNI error with valid JSON, never a panic.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::PathBuf;

/// The fuzz target's body: (environment accepted, config accepted).
#[path = "../../../fuzz/bodies/cni_request.rs"]
mod target;
use target::run;

#[test]
fn every_cni_request_corpus_input_parses_or_fails_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/cni_request");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        seen += 1;
        let res = std::panic::catch_unwind(|| run(&data));
        assert!(res.is_ok(), "corpus input {} panics", path.display());
    }
    assert!(seen >= 5, "the committed corpus is missing");
}

#[test]
fn the_add_seed_is_a_valid_request_and_the_bad_ones_are_not() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/cni_request");
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    assert_eq!(run(&read("add")), (true, true));
    assert!(!run(&read("bad_version")).1);
    assert!(!run(&read("not_json")).1);
}
