#![no_main]
//! Decoding never panics, and whatever decodes has a canonical encoding (sorted keys) that
//! decodes and re-encodes to itself.
use libfuzzer_sys::fuzz_target;
use tandem_controlplane::bencode;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = bencode::decode(data) {
        let canonical = bencode::encode(&v);
        let again = bencode::decode(&canonical).expect("our encoding decodes");
        assert_eq!(bencode::encode(&again), canonical);
    }
});
