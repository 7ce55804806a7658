//! The `cni_request` fuzz target's body, shared with its corpus replay test
//! (crates/weft-cni/tests/fuzz_corpus.rs): `KEY=VALUE` environment lines, an empty line,
//! then the network configuration on stdin, parsed with `CniEnv::from_lookup` and
//! `NetConf::parse`. Every failure must be a `CniError` whose JSON form is valid.

use weft_cni::spec::{CniEnv, NetConf};

/// (environment accepted, configuration accepted).
pub fn run(data: &[u8]) -> (bool, bool) {
    let split = data.windows(2).position(|w| w == b"\n\n");
    let (env_part, stdin) = match split {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &b""[..]),
    };
    let env_text = String::from_utf8_lossy(env_part);
    let vars: Vec<(String, String)> = env_text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |k: &str| vars.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let env_ok = match CniEnv::from_lookup(lookup) {
        Ok(_) => true,
        Err(e) => {
            let json = e.to_json("1.0.0");
            assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{json}");
            false
        }
    };
    let conf_ok = match NetConf::parse(stdin) {
        Ok(_) => true,
        Err(e) => {
            let json = e.to_json("1.0.0");
            assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{json}");
            false
        }
    };
    (env_ok, conf_ok)
}
