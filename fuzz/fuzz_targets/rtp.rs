#![no_main]
//! RTP/RTCP classification and the forwarding decision on arbitrary datagrams from arbitrary
//! sources on any port of a live session, with telephone-event parsing armed on leg A for a
//! payload type the input picks, and in-band detection and DTMF blocking as the input says:
//! never panics, never stops the real streams.
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use tandem_dataplane::api::{Codec, DtmfOptions, InbandAudio, LegIndex, LegParams};
use tandem_dataplane::rtp;
use tandem_dataplane::session::{Sessions, Verdict};

fuzz_target!(|data: &[u8]| {
    let _ = rtp::classify(data);
    let _ = rtp::classify_rtcp_port(data);
    let leg = |port: u16| LegParams {
        rtp: Some(SocketAddr::from(([10, 0, 0, 1], port))),
        rtcp: Some(SocketAddr::from(([10, 0, 0, 1], port + 1))),
        ..LegParams::default()
    };
    let mut t = Sessions::new(0, 2, 30000);
    t.activate(0, &leg(5000), &leg(6000), 0);
    let event_payload_type = data.get(1).map(|b| b & 0x7f);
    let flags = data.get(3).copied().unwrap_or(0);
    let options = DtmfOptions {
        event_payload_type,
        inband: data.get(2).filter(|_| flags & 2 != 0).map(|b| InbandAudio {
            payload_type: b & 0x7f,
            codec: if b & 0x80 != 0 {
                Codec::Pcma
            } else {
                Codec::Pcmu
            },
        }),
        // Blocking drops A's events: never the real stream's payload type (0) as one.
        block: flags & 4 != 0 && event_payload_type != Some(0),
        tones_to_other: None,
        events_to_other: None,
    };
    t.set_dtmf(0, LegIndex::A, &options).unwrap();
    // Playing to A holds back what B sends, never what A sends.
    t.set_playing(0, LegIndex::A, data.get(3).is_some_and(|b| b & 1 == 1));
    let mut good = vec![0u8; 172];
    good[0] = 0x80;
    let a = SocketAddr::from(([10, 0, 0, 1], 5000));
    let _ = t.on_packet(0, a, &good, 1);
    let slot = data.first().copied().unwrap_or(0) as u32 % 8;
    let src = SocketAddr::from(([192, 0, 2, data.get(1).copied().unwrap_or(0)], 9));
    let _ = t.on_packet(slot, src, data, 2);
    // The same bytes from A itself reach the DTMF parser when their payload type matches.
    let _ = t.on_packet(0, a, data, 2);
    t.drain_dtmf(|r| assert!(r.digit.is_ascii_alphanumeric() || "*#".contains(r.digit)));
    assert!(matches!(
        t.on_packet(0, a, &good, 3),
        Verdict::Forward { out_slot: 2, .. }
    ));
});
