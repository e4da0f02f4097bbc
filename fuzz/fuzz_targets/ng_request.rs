#![no_main]
//! An ng datagram body, bencode or JSON, typed into a request: errors, never panics.
use libfuzzer_sys::fuzz_target;
use tandem_controlplane::{bencode, ng::request};

fuzz_target!(|data: &[u8]| {
    if data.first() == Some(&b'{') {
        if let Ok(v) = request::from_json(data) {
            let _ = request::parse(&v);
            let _ = request::to_json(&v);
        }
    } else if let Ok(v) = bencode::decode(data) {
        let _ = request::parse(&v);
    }
});
