#![no_main]
//! SDP parsing and rewriting: errors, never panics; what we write parses again.
use libfuzzer_sys::fuzz_target;
use tandem_controlplane::sdp::{MediaRewrite, RewriteOptions, Sdp};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(sdp) = Sdp::parse(text) else { return };
    let rewrites: Vec<_> = (0..sdp.media.len())
        .map(|i| MediaRewrite { port: (i % 2 == 0).then_some(30000 + 4 * i as u16) })
        .collect();
    let out = sdp.rewrite(
        &rewrites,
        &RewriteOptions {
            address: Some("127.0.0.1".parse().unwrap()),
            replace_origin: true,
            transport_protocol: Some("RTP/AVP"),
            remove_ice: true,
        },
    );
    let again = Sdp::parse(&out).expect("our own output must parse");
    assert_eq!(again.media.len(), sdp.media.len());
});
