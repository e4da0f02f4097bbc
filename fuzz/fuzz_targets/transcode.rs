#![no_main]
//! The transcoder on any codec plan and any packets: it never panics, every packet it gives
//! out fits the buffer and carries our RTP header, and repacketising never leaves more queued
//! than it can hand out.
//!
//! Input: three bytes of plan (the sending leg's codec with its events and codec options, the
//! receiving leg's, and their ptimes),
//! then records of one control byte and a payload: the control byte's low 5 bits are the
//! payload length (times 8, so whole G.711/G.729 frames are reachable), the next bits pick the
//! payload type (the sender's audio, its events, anything else) and whether to ask for
//! concealment first. Sequence numbers and timestamps advance by the packet's duration, with
//! jumps, reordering and SSRC changes drawn from the payload's first byte.
use libfuzzer_sys::fuzz_target;
use tandem_dataplane::api::{Codec, CodecOptions, LegCodec};
use tandem_dataplane::transcode::{Skip, Transcoder, MAX_PCM_SAMPLES};

const CODECS: [Codec; 5] = [
    Codec::Pcmu,
    Codec::Pcma,
    Codec::G722,
    Codec::G729,
    Codec::Opus,
];
const PTIMES: [u8; 8] = [0, 10, 20, 30, 40, 60, 5, 70];

fn leg(selector: u8, ptime: u8) -> LegCodec {
    let codec = CODECS[selector as usize % CODECS.len()];
    let payload_type = match codec {
        Codec::Pcmu => 0,
        Codec::Pcma => 8,
        Codec::G722 => 9,
        Codec::G729 => 18,
        Codec::Opus => 111,
    };
    LegCodec {
        payload_type,
        codec,
        event_payload_type: (selector & 0x80 == 0).then_some(101),
        ptime_ms: PTIMES[ptime as usize % PTIMES.len()],
        // FEC and DTX (Opus), Annex B VAD (G.729) towards the leg; ignored elsewhere.
        options: CodecOptions {
            fec: selector & 0x40 != 0,
            dtx: selector & 0x20 != 0,
        },
    }
}

fn check(result: Result<usize, Skip>, out: &[u8]) {
    if let Ok(n) = result {
        assert!((12..=out.len()).contains(&n), "{n} bytes");
        assert_eq!(out[0], 0x80);
    }
}

fuzz_target!(|data: &[u8]| {
    let [from, to, ptimes, rest @ ..] = data else {
        return;
    };
    let (from, to) = (leg(*from, ptimes & 0x0f), leg(*to, ptimes >> 4));
    let Ok(mut t) = Transcoder::new(from, to, 0x1234_5678_9abc_def0) else {
        return;
    };
    let mut pcm = vec![0i16; 2 * MAX_PCM_SAMPLES];
    let mut out = vec![0u8; 1500];
    let (mut seq, mut ts, mut ssrc) = (1000u16, 50_000u32, 7u32);
    let mut rest = rest;
    while let [control, tail @ ..] = rest {
        let len = ((control & 0x1f) as usize * 8).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let pt = match (control >> 5) & 0x3 {
            0 | 1 => from.payload_type,
            2 => 101,
            _ => 13,
        };
        // The payload's first byte steers the header: a jump, a step back, a new stream.
        match payload.first().map(|b| b >> 5) {
            Some(0) => {
                seq = seq.wrapping_add(3);
                ts = ts.wrapping_add(480);
            }
            Some(1) => {
                seq = seq.wrapping_sub(2);
                ts = ts.wrapping_sub(320);
            }
            Some(2) => ssrc = ssrc.wrapping_add(1),
            _ => {}
        }
        let mut packet = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&ts.to_be_bytes());
        packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(payload);
        if control & 0x80 != 0 {
            for _ in 0..t.missing(&packet) {
                check(t.conceal(&mut pcm, &packet, &mut out), &out);
            }
        }
        check(t.process(&packet, &mut pcm, &mut out), &out);
        let mut drained = 0;
        while t.queued() > 0 {
            let r = t.pop(&mut out);
            assert!(r.is_ok(), "queued but not popped: {r:?}");
            check(r, &out);
            drained += 1;
            assert!(drained <= 16, "more queued than the queue holds");
        }
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(payload.len() as u32);
    }
});
