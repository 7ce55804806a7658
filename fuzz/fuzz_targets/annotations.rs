//! Pod and namespace annotations (weft-translator's annotation parsers): the first byte
//! picks the parser, the rest is the annotation value. Errors, never panics.
#![no_main]

use weft_translator::annotations as a;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(rest) else {
        return;
    };
    let object = "Pod default/fuzz";
    match which % 4 {
        0 => drop(a::parse_bool(object, "opencontrail.org/ip_fabric_snat", value)),
        1 => drop(a::parse_flat_dict(object, "opencontrail.org/network", value)),
        2 => drop(a::parse_network_ref(object, "opencontrail.org/network", value)),
        _ => drop(a::parse_network_selections(object, "default", value)),
    }
});
