//! A CNI request as the runtime makes it: environment variables (`KEY=VALUE` lines) and,
//! after the first empty line, the network configuration on stdin. Parsed with
//! weft-cni's `CniEnv::from_lookup` and `NetConf::parse`; every failure must be a
//! `CniError` whose JSON form is valid, never a panic.
#![no_main]

use weft_cni::spec::{CniEnv, NetConf};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
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
    if let Err(e) = CniEnv::from_lookup(lookup) {
        let json = e.to_json("1.0.0");
        assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{json}");
    }
    match NetConf::parse(stdin) {
        Ok((conf, _)) => drop(conf),
        Err(e) => {
            let json = e.to_json("1.0.0");
            assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{json}");
        }
    }
});
