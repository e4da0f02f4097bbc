//! SIP parser: any bytes give a message or an error (never a panic); what parses prints back to
//! something that parses the same; stream framing never panics either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tandem_controlplane::sip::message::{stream_frame_len, Message};

fuzz_target!(|data: &[u8]| {
    let _ = stream_frame_len(data);
    if let Ok(m) = Message::parse(data) {
        let again = Message::parse(&m.to_bytes()).expect("printed message parses");
        assert_eq!(again.start, m.start);
        let _ = (m.top_via(), m.cseq(), m.from_tag(), m.to_tag(), m.contact_uri());
    }
});
