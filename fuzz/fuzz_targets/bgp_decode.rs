//! BGP decoder: a byte stream from a peer through weft-bgp's session codec. It must never
//! panic; every malformed message gets a NOTIFICATION that encodes (see
//! `weft_bgp::codec::fuzz_stream` for the input layout).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = weft_bgp::codec::fuzz_stream(data);
});
