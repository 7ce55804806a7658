//! The `annotations` fuzz target's body, shared with its corpus replay test
//! (crates/weft-translator/tests/fuzz_corpus.rs): the first byte picks the parser, the
//! rest is the annotation value. Errors, never panics.

use weft_translator::annotations as a;

/// True if the parser accepted the value.
pub fn run(data: &[u8]) -> bool {
    let Some((&which, rest)) = data.split_first() else {
        return false;
    };
    let Ok(value) = std::str::from_utf8(rest) else {
        return false;
    };
    let object = "Pod default/fuzz";
    match which % 4 {
        0 => a::parse_bool(object, "opencontrail.org/ip_fabric_snat", value).is_ok(),
        1 => a::parse_flat_dict(object, "opencontrail.org/network", value).is_ok(),
        2 => a::parse_network_ref(object, "opencontrail.org/network", value).is_ok(),
        _ => a::parse_network_selections(object, "default", value).is_ok(),
    }
}
