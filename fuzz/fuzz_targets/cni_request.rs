//! A CNI request as the runtime makes it: environment variables (`KEY=VALUE` lines) and,
//! after the first empty line, the network configuration on stdin. Parsed with
//! weft-cni's `CniEnv::from_lookup` and `NetConf::parse`; every failure must be a
//! `CniError` whose JSON form is valid, never a panic.
#![no_main]

#[path = "../bodies/cni_request.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = body::run(data);
});
