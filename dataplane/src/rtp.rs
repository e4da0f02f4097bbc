//! Borrowed views that classify a datagram as RTP, RTCP or garbage without copying it.
//!
//! The relay only needs to know which it is and that the header is sane, so this is a handful of
//! bounds checks, written out here because it runs for every packet (measured: a few ns).

/// What a datagram on a media port turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rtp,
    Rtcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    TooShort,
    BadVersion,
    /// CSRC list, header extension or padding run past the end of the datagram.
    BadLength,
    /// RTCP packet type outside 192..=223, or an RTCP length word that does not fit.
    BadRtcp,
}

/// RTCP packet types live in 192..=223 (RFC 5761 §4: this is what makes mux demultiplexable).
fn is_rtcp_type(second_byte: u8) -> bool {
    (192..=223).contains(&second_byte)
}

/// Classifies a datagram received on an RTP port (which may carry muxed RTCP).
pub fn classify(data: &[u8]) -> Result<Kind, Malformed> {
    if data.len() < 4 {
        return Err(Malformed::TooShort);
    }
    if data[0] >> 6 != 2 {
        return Err(Malformed::BadVersion);
    }
    if is_rtcp_type(data[1]) {
        check_rtcp(data).map(|()| Kind::Rtcp)
    } else {
        check_rtp(data).map(|()| Kind::Rtp)
    }
}

/// Validates a datagram received on an RTCP port.
pub fn classify_rtcp_port(data: &[u8]) -> Result<Kind, Malformed> {
    if data.len() < 4 {
        return Err(Malformed::TooShort);
    }
    if data[0] >> 6 != 2 {
        return Err(Malformed::BadVersion);
    }
    check_rtcp(data).map(|()| Kind::Rtcp)
}

/// The payload of a datagram that [`classify`] accepts as RTP: after the CSRCs and the header
/// extension, before the padding. `None` for anything else. (Apart from `check_rtp`, which stays
/// as lean as the relay needs: this runs only for telephone events.)
pub fn rtp_payload(data: &[u8]) -> Option<&[u8]> {
    if classify(data) != Ok(Kind::Rtp) {
        return None;
    }
    // Valid RTP: the header, extension and padding all fit, as `check_rtp` verified.
    let mut start = 12 + 4 * (data[0] & 0x0f) as usize;
    if data[0] & 0x10 != 0 {
        let ext = data.get(start..start + 4)?;
        start += 4 + 4 * u16::from_be_bytes([ext[2], ext[3]]) as usize;
    }
    let mut end = data.len();
    if data[0] & 0x20 != 0 {
        end -= data[data.len() - 1] as usize;
    }
    data.get(start..end)
}

fn check_rtp(data: &[u8]) -> Result<(), Malformed> {
    if data.len() < 12 {
        return Err(Malformed::TooShort);
    }
    let csrc_count = (data[0] & 0x0f) as usize;
    let mut header = 12 + 4 * csrc_count;
    if data[0] & 0x10 != 0 {
        // Header extension: 4-byte preamble whose second half counts 32-bit words.
        let ext = data.get(header..header + 4).ok_or(Malformed::BadLength)?;
        header += 4 + 4 * u16::from_be_bytes([ext[2], ext[3]]) as usize;
    }
    if header > data.len() {
        return Err(Malformed::BadLength);
    }
    if data[0] & 0x20 != 0 {
        let pad = data[data.len() - 1] as usize;
        if pad == 0 || header + pad > data.len() {
            return Err(Malformed::BadLength);
        }
    }
    Ok(())
}

/// Walks a compound RTCP packet: every part must be version 2, an RTCP type, and fit exactly.
fn check_rtcp(data: &[u8]) -> Result<(), Malformed> {
    let mut at = 0;
    while at < data.len() {
        let part = &data[at..];
        if part.len() < 4 {
            return Err(Malformed::TooShort);
        }
        if part[0] >> 6 != 2 {
            return Err(Malformed::BadVersion);
        }
        if !is_rtcp_type(part[1]) {
            return Err(Malformed::BadRtcp);
        }
        let words = u16::from_be_bytes([part[2], part[3]]) as usize;
        let len = 4 + 4 * words;
        if len > part.len() {
            return Err(Malformed::BadRtcp);
        }
        at += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rtp(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x80;
        p[1] = 8;
        p
    }

    #[test]
    fn classifies_plain_rtp_and_rtcp() {
        assert_eq!(classify(&rtp(172)), Ok(Kind::Rtp));
        // Receiver report with no report blocks: 8 bytes, length word 1.
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert_eq!(classify(&rr), Ok(Kind::Rtcp));
        assert_eq!(classify_rtcp_port(&rr), Ok(Kind::Rtcp));
        let mut compound = rr.to_vec();
        compound.extend_from_slice(&[0x81, 202, 0, 0]);
        assert_eq!(classify(&compound), Ok(Kind::Rtcp));
    }

    #[test]
    fn rejects_broken_headers() {
        assert_eq!(classify(&[0x80, 0]), Err(Malformed::TooShort));
        assert_eq!(classify(&rtp(11)), Err(Malformed::TooShort));
        let mut v1 = rtp(172);
        v1[0] = 0x40;
        assert_eq!(classify(&v1), Err(Malformed::BadVersion));
        let mut csrc = rtp(20);
        csrc[0] = 0x8f; // 15 CSRCs need 72 bytes
        assert_eq!(classify(&csrc), Err(Malformed::BadLength));
        let mut ext = rtp(16);
        ext[0] = 0x90;
        ext[14] = 0xff;
        assert_eq!(classify(&ext), Err(Malformed::BadLength));
        let mut pad = rtp(20);
        pad[0] = 0xa0;
        pad[19] = 0;
        assert_eq!(classify(&pad), Err(Malformed::BadLength));
        let bad_len = [0x80, 201, 0, 9, 0, 0, 0, 1];
        assert_eq!(classify(&bad_len), Err(Malformed::BadRtcp));
        assert_eq!(classify_rtcp_port(&rtp(172)), Err(Malformed::BadRtcp));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = classify(&data);
            let _ = classify_rtcp_port(&data);
            prop_assert_eq!(rtp_payload(&data).is_some(), classify(&data) == Ok(Kind::Rtp));
        }

        #[test]
        fn valid_rtp_with_extension_and_padding(csrcs in 0usize..16, ext_words in 0u16..8, payload in 0usize..200, pad in 1u8..32) {
            let mut p = vec![0x80 | 0x30 | csrcs as u8, 0];
            p.resize(12 + 4 * csrcs, 0);
            p.extend_from_slice(&[0xbe, 0xde]);
            p.extend_from_slice(&ext_words.to_be_bytes());
            p.resize(p.len() + 4 * ext_words as usize + payload, 0);
            p.resize(p.len() + pad as usize, 0);
            *p.last_mut().unwrap() = pad;
            prop_assert_eq!(classify(&p), Ok(Kind::Rtp));
            prop_assert_eq!(rtp_payload(&p).map(<[u8]>::len), Some(payload));
        }
    }
}
