//! Replays the committed `bgp_decode` fuzz corpus (fuzz/corpus/bgp_decode, seeds plus
//! whatever the fuzzer found worth keeping) through the fuzz target's entry point,
//! `weft_bgp::codec::fuzz_stream`, so every `cargo test` run covers it without a fuzzer.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::PathBuf;

use weft_bgp::codec::fuzz_stream;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/bgp_decode");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_input_decodes_or_gets_a_notification_without_panicking() {
    let inputs = corpus();
    assert!(
        inputs.len() >= 10,
        "the committed corpus is missing: {} files",
        inputs.len()
    );
    for (name, data) in &inputs {
        let res = std::panic::catch_unwind(|| fuzz_stream(data));
        assert!(res.is_ok(), "corpus input {name} panics");
    }
}

#[test]
fn the_seeds_mean_what_their_names_say() {
    let inputs = corpus();
    let get = |n: &str| &inputs.iter().find(|(name, _)| name == n).unwrap().1;
    // A real GoBGP session stream: every message decodes, no NOTIFICATION.
    let (ok, errors) = fuzz_stream(get("gobgp_stream"));
    assert!(ok >= 5 && errors == 0, "gobgp_stream: {ok} ok, {errors} errors");
    // A broken marker makes the stream unusable: one NOTIFICATION, nothing decoded.
    assert_eq!(fuzz_stream(get("bad_marker")), (0, 1));
    assert_eq!(fuzz_stream(get("unknown_type")), (0, 1));
    assert_eq!(fuzz_stream(get("eor_ipv4")), (1, 0));
}
