#![no_main]
//! RFC 4733 telephone-event payloads: parsing arbitrary bytes never panics, whatever parses
//! writes back to the same bytes (bar the reserved R bit), and the event receiver stays
//! balanced (one Ended per Started) for any packet sequence carved from the input.
use libfuzzer_sys::fuzz_target;
use tandem_media::rfc4733::{EventReceiver, EventReport, TelephoneEvent};

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = TelephoneEvent::parse(data) {
        let mut out = [0u8; 4];
        assert_eq!(ev.write(&mut out), Ok(4));
        assert_eq!(out, [data[0], data[1] & !0x40, data[2], data[3]]);
    }
    // Each 6-byte record: 2 bytes of timestamp, 4 of payload (any length error is skipped).
    let mut rx = EventReceiver::new();
    let mut open: Option<u32> = None;
    for rec in data.chunks(6) {
        let ts = u32::from(u16::from_be_bytes([rec[0], *rec.get(1).unwrap_or(&0)])) * 160;
        if let Ok(ev) = TelephoneEvent::parse(rec.get(2..).unwrap_or(&[])) {
            rx.handle_packet(ts, ev);
        }
        while let Some(r) = rx.poll_report() {
            match r {
                EventReport::Started { timestamp, .. } => {
                    assert!(open.replace(timestamp).is_none())
                }
                EventReport::Ended { timestamp, .. } => {
                    assert_eq!(open.take(), Some(timestamp));
                }
            }
        }
    }
});
