//! RFC 4733 telephone-event payloads (DTMF and other named events carried in RTP).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     event     |E|R| volume    |          duration             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`TelephoneEvent::parse`] takes the RTP payload (padding already removed) and returns an
//! error, never a panic, for anything that is not exactly one event. [`EventReceiver`] turns the
//! packet stream of one RTP source into one `Started` and one `Ended` per event, whatever the
//! retransmissions (three end packets are normal) and reordering.

use thiserror::Error;

/// Length of one telephone-event payload in bytes.
pub const EVENT_LEN: usize = 4;

/// Highest volume value: the field is 6 bits, in -dBm0.
pub const MAX_VOLUME: u8 = 63;

/// Why a payload could not be parsed or built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Rfc4733Error {
    /// The payload is not exactly [`EVENT_LEN`] bytes.
    #[error("telephone-event payload is {len} bytes, expected 4")]
    Length {
        /// The length seen.
        len: usize,
    },
    /// A volume above 63 cannot be encoded in the 6-bit field.
    #[error("volume {0} does not fit the 6-bit field")]
    Volume(u8),
    /// The output buffer is shorter than [`EVENT_LEN`].
    #[error("output buffer of {len} bytes is too small")]
    BufferTooSmall {
        /// The buffer's length.
        len: usize,
    },
}

/// One telephone event, as carried in one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    /// Event code (RFC 4733 §3.2: 0–9, 10 `*`, 11 `#`, 12–15 A–D, 16 flash; RFC 4734 for more).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level in -dBm0 (0 loudest, 63 quietest).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, from the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses one event. The reserved R bit is ignored, as RFC 4733 §2.3.3 asks of receivers.
    pub fn parse(payload: &[u8]) -> Result<Self, Rfc4733Error> {
        let &[event, flags, d0, d1] = payload else {
            return Err(Rfc4733Error::Length { len: payload.len() });
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// Writes the event into `out`; returns the bytes written ([`EVENT_LEN`]). R is sent as 0.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, Rfc4733Error> {
        if self.volume > MAX_VOLUME {
            return Err(Rfc4733Error::Volume(self.volume));
        }
        let Some(out) = out.get_mut(..EVENT_LEN) else {
            return Err(Rfc4733Error::BufferTooSmall { len: out.len() });
        };
        let [d0, d1] = self.duration.to_be_bytes();
        let flags = (if self.end { 0x80 } else { 0 }) | self.volume;
        out.copy_from_slice(&[self.event, flags, d0, d1]);
        Ok(EVENT_LEN)
    }

    /// The DTMF key this event stands for, if it is one of the 16 DTMF events.
    pub fn dtmf_digit(&self) -> Option<char> {
        dtmf_digit(self.event)
    }
}

const DTMF_KEYS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

/// The DTMF key of event code `event` (0–15), if any.
pub fn dtmf_digit(event: u8) -> Option<char> {
    DTMF_KEYS.get(event as usize).copied()
}

/// The event code of a DTMF key (`0`–`9`, `*`, `#`, `A`–`D`, lower case accepted).
pub fn dtmf_event(key: char) -> Option<u8> {
    let key = key.to_ascii_uppercase();
    DTMF_KEYS.iter().position(|&k| k == key).map(|p| p as u8)
}

/// What an [`EventReceiver`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReport {
    /// The first packet of a new event arrived.
    Started {
        /// Event code.
        event: u8,
        /// The event's RTP timestamp (its start).
        timestamp: u32,
    },
    /// The event ended: its end packet arrived, or a newer event replaced it (then `ended_by_end_bit`
    /// is false and `duration` is the last one seen).
    Ended {
        /// Event code.
        event: u8,
        /// The event's RTP timestamp (its start).
        timestamp: u32,
        /// Duration in RTP timestamp units.
        duration: u16,
        /// Whether the sender's end packet was seen.
        ended_by_end_bit: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    event: u8,
    duration: u16,
    ended: bool,
}

/// Reports each telephone event of one RTP source once when it starts and once when it ends.
///
/// Events are told apart by RTP timestamp (RFC 4733 §2.5.1.3): packets with the timestamp of
/// the current event update it, a newer timestamp starts a new event (ending the current one if
/// its end packets were lost), an older one is a late retransmission and is ignored.
#[derive(Debug, Default)]
pub struct EventReceiver {
    current: Option<Current>,
    queue: [Option<EventReport>; 3],
    queued: usize,
}

impl EventReceiver {
    /// A receiver with no event in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one parsed packet with its RTP timestamp. Drain [`Self::poll_report`] afterwards:
    /// one packet yields at most three reports (old event ended, new started, new ended).
    pub fn handle_packet(&mut self, timestamp: u32, ev: TelephoneEvent) {
        if let Some(cur) = &mut self.current {
            if cur.timestamp == timestamp {
                if cur.ended {
                    return; // retransmitted end packet
                }
                cur.duration = cur.duration.max(ev.duration);
                if ev.end {
                    cur.ended = true;
                    let report = ended(cur, true);
                    self.push(report);
                }
                return;
            }
            if (timestamp.wrapping_sub(cur.timestamp) as i32) < 0 {
                return; // a late packet of an earlier event
            }
            if !cur.ended {
                let report = ended(cur, false);
                self.push(report);
            }
        }
        let cur = Current {
            timestamp,
            event: ev.event,
            duration: ev.duration,
            ended: ev.end,
        };
        self.current = Some(cur);
        self.push(EventReport::Started {
            event: ev.event,
            timestamp,
        });
        if ev.end {
            self.push(ended(&cur, true));
        }
    }

    /// The next report, oldest first.
    pub fn poll_report(&mut self) -> Option<EventReport> {
        if self.queued == 0 {
            return None;
        }
        let first = self.queue[0].take();
        self.queue.rotate_left(1);
        self.queued -= 1;
        first
    }

    fn push(&mut self, r: EventReport) {
        // At most three pushes happen per packet and the caller drains between packets; if it
        // does not, the oldest report is dropped rather than growing.
        if self.queued == self.queue.len() {
            let _ = self.poll_report();
        }
        self.queue[self.queued] = Some(r);
        self.queued += 1;
    }
}

fn ended(cur: &Current, by_end_bit: bool) -> EventReport {
    EventReport::Ended {
        event: cur.event,
        timestamp: cur.timestamp,
        duration: cur.duration,
        ended_by_end_bit: by_end_bit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_rfc_example_digit_with_end_bit() {
        // Event 5, E=1, R=0, volume 10, duration 800 (100 ms at 8 kHz).
        let ev = TelephoneEvent::parse(&[5, 0x8a, 0x03, 0x20]).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(ev.dtmf_digit(), Some('5'));
    }

    #[test]
    fn reserved_bit_is_ignored_and_written_as_zero() {
        let ev = TelephoneEvent::parse(&[11, 0x40 | 0x3f, 0xff, 0xff]).unwrap();
        assert!(!ev.end);
        assert_eq!(
            (ev.volume, ev.duration, ev.dtmf_digit()),
            (63, 65535, Some('#'))
        );
        let mut out = [0u8; 4];
        ev.write(&mut out).unwrap();
        assert_eq!(out, [11, 0x3f, 0xff, 0xff]);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        for len in [0, 1, 3, 5, 8, 100] {
            let buf = vec![0u8; len];
            assert_eq!(
                TelephoneEvent::parse(&buf),
                Err(Rfc4733Error::Length { len })
            );
        }
    }

    #[test]
    fn write_rejects_bad_volume_and_short_buffer() {
        let mut ev = TelephoneEvent {
            event: 1,
            end: false,
            volume: 64,
            duration: 0,
        };
        assert_eq!(ev.write(&mut [0; 4]), Err(Rfc4733Error::Volume(64)));
        ev.volume = 10;
        assert_eq!(
            ev.write(&mut [0; 3]),
            Err(Rfc4733Error::BufferTooSmall { len: 3 })
        );
        let mut big = [0xeeu8; 6];
        assert_eq!(ev.write(&mut big), Ok(4));
        assert_eq!(big, [1, 10, 0, 0, 0xee, 0xee]);
    }

    #[test]
    fn dtmf_key_mapping() {
        for (i, k) in "0123456789*#ABCD".chars().enumerate() {
            assert_eq!(dtmf_event(k), Some(i as u8));
            assert_eq!(dtmf_digit(i as u8), Some(k));
        }
        assert_eq!(dtmf_event('b'), Some(13));
        assert_eq!(dtmf_event('x'), None);
        assert_eq!(dtmf_digit(16), None); // flash is an event but not a DTMF key
    }

    fn ev(event: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    fn drain(r: &mut EventReceiver) -> Vec<EventReport> {
        std::iter::from_fn(|| r.poll_report()).collect()
    }

    #[test]
    fn receiver_reports_start_and_end_once_despite_retransmitted_ends() {
        let mut r = EventReceiver::new();
        r.handle_packet(1000, ev(7, false, 160));
        r.handle_packet(1000, ev(7, false, 320));
        r.handle_packet(1000, ev(7, true, 480));
        r.handle_packet(1000, ev(7, true, 480));
        r.handle_packet(1000, ev(7, true, 480));
        assert_eq!(
            drain(&mut r),
            [
                EventReport::Started {
                    event: 7,
                    timestamp: 1000
                },
                EventReport::Ended {
                    event: 7,
                    timestamp: 1000,
                    duration: 480,
                    ended_by_end_bit: true
                }
            ]
        );
    }

    #[test]
    fn receiver_ends_an_event_whose_end_packets_were_lost() {
        let mut r = EventReceiver::new();
        r.handle_packet(1000, ev(1, false, 400));
        r.handle_packet(3000, ev(2, false, 160));
        let got = drain(&mut r);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1],
            EventReport::Ended {
                event: 1,
                timestamp: 1000,
                duration: 400,
                ended_by_end_bit: false
            }
        );
        assert_eq!(
            got[2],
            EventReport::Started {
                event: 2,
                timestamp: 3000
            }
        );
    }

    #[test]
    fn receiver_ignores_late_packets_of_earlier_events_across_timestamp_wrap() {
        let mut r = EventReceiver::new();
        r.handle_packet(u32::MAX - 100, ev(3, true, 800));
        r.handle_packet(500, ev(4, false, 160)); // newer: wrapped
        drain(&mut r);
        r.handle_packet(u32::MAX - 100, ev(3, true, 800));
        r.handle_packet(500, ev(4, false, 100)); // reordered update: duration keeps its maximum
        r.handle_packet(500, ev(4, true, 800));
        assert_eq!(
            drain(&mut r),
            [EventReport::Ended {
                event: 4,
                timestamp: 500,
                duration: 800,
                ended_by_end_bit: true
            }]
        );
    }

    #[test]
    fn receiver_single_end_packet_event() {
        let mut r = EventReceiver::new();
        r.handle_packet(42, ev(0, true, 800));
        assert_eq!(drain(&mut r).len(), 2);
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(data in proptest::collection::vec(any::<u8>(), 0..12)) {
            match TelephoneEvent::parse(&data) {
                Ok(e) => {
                    prop_assert_eq!(data.len(), 4);
                    let mut out = [0u8; 4];
                    prop_assert_eq!(e.write(&mut out), Ok(4));
                    // Everything survives except the reserved R bit.
                    let mut want = [data[0], data[1], data[2], data[3]];
                    want[1] &= !0x40;
                    prop_assert_eq!(out, want);
                }
                Err(err) => prop_assert_eq!(err, Rfc4733Error::Length { len: data.len() }),
            }
        }

        #[test]
        fn build_then_parse(event in any::<u8>(), end in any::<bool>(), volume in 0u8..=63, duration in any::<u16>()) {
            let e = TelephoneEvent { event, end, volume, duration };
            let mut out = [0u8; 4];
            e.write(&mut out).unwrap();
            prop_assert_eq!(TelephoneEvent::parse(&out), Ok(e));
        }

        /// Any packet sequence: every Ended follows its own Started, no event is started or
        /// ended twice, and the receiver never holds more than its bounded queue.
        #[test]
        fn receiver_reports_are_balanced(
            packets in proptest::collection::vec((0u32..6, 0u8..3, any::<bool>(), any::<u16>()), 0..60)
        ) {
            let mut r = EventReceiver::new();
            let mut started = std::collections::HashSet::new();
            let mut ended_set = std::collections::HashSet::new();
            for (ts, event, end, duration) in packets {
                r.handle_packet(ts * 1000, ev(event, end, duration));
                for rep in drain(&mut r) {
                    match rep {
                        EventReport::Started { timestamp, .. } => prop_assert!(started.insert(timestamp)),
                        EventReport::Ended { timestamp, .. } => {
                            prop_assert!(started.contains(&timestamp));
                            prop_assert!(ended_set.insert(timestamp));
                        }
                    }
                }
            }
        }
    }
}
