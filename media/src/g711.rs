//! G.711 µ-law and A-law by table lookup.
//!
//! The four tables are computed at compile time from the segment/quantisation rules of
//! ITU-T G.711 (`const fn`s below), so a sample costs one shift, one add and one load. The
//! encoders follow the behaviour of the classic Sun reference implementation that Python's
//! `audioop` also uses: µ-law quantises `sample >> 2` (14 bits), A-law `sample >> 3` (13 bits).
//! `tests/data/g711_audioop.txt` holds audioop's answers for all 65536 samples and 256 codes;
//! the tests below compare bit for bit.

/// Which companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law (PCMU, RTP payload type 0): North America, Japan.
    Ulaw,
    /// A-law (PCMA, RTP payload type 8): everywhere else.
    Alaw,
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP_14: i32 = 8159;

/// µ-law code for a 14-bit two's-complement value (`-8192..=8191`).
const fn ulaw_from_14(v: i32) -> u8 {
    // µ-law transmits the one's complement of sign/segment/mantissa.
    let (mut mag, mask) = if v < 0 { (-v, 0x7f) } else { (v, 0xff) };
    if mag > ULAW_CLIP_14 {
        mag = ULAW_CLIP_14;
    }
    mag += ULAW_BIAS >> 2;
    // Segment: smallest s with mag <= 64 * 2^s - 1.
    let mut seg = 0;
    while seg < 8 && mag > (0x40 << seg) - 1 {
        seg += 1;
    }
    if seg >= 8 {
        return (0x7f ^ mask) as u8;
    }
    let code = (seg << 4) | ((mag >> (seg + 1)) & 0x0f);
    (code ^ mask) as u8
}

/// A-law code for a 13-bit two's-complement value (`-4096..=4095`).
const fn alaw_from_13(v: i32) -> u8 {
    // A-law inverts the even bits (0x55) and carries the sign in bit 7 (set = positive).
    let (mag, mask) = if v >= 0 { (v, 0xd5) } else { (-v - 1, 0x55) };
    let mut seg = 0;
    while seg < 8 && mag > (0x20 << seg) - 1 {
        seg += 1;
    }
    if seg >= 8 {
        return (0x7f ^ mask) as u8;
    }
    let shift = if seg < 2 { 1 } else { seg };
    let code = (seg << 4) | ((mag >> shift) & 0x0f);
    (code ^ mask) as u8
}

const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code as i32;
    let t = (((u & 0x0f) << 3) + ULAW_BIAS) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }) as i16
}

const fn alaw_to_linear(code: u8) -> i16 {
    let a = (code ^ 0x55) as i32;
    let mant = (a & 0x0f) << 4;
    let seg = (a & 0x70) >> 4;
    let t = match seg {
        0 => mant + 8,
        1 => mant + 0x108,
        _ => (mant + 0x108) << (seg - 1),
    };
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const ULAW_ENC_LEN: usize = 1 << 14;
const ALAW_ENC_LEN: usize = 1 << 13;

/// Indexed by `(sample >> 2) + 8192`.
static ULAW_ENCODE: [u8; ULAW_ENC_LEN] = {
    let mut t = [0u8; ULAW_ENC_LEN];
    let mut i = 0;
    while i < ULAW_ENC_LEN {
        t[i] = ulaw_from_14(i as i32 - (ULAW_ENC_LEN as i32 / 2));
        i += 1;
    }
    t
};

/// Indexed by `(sample >> 3) + 4096`.
static ALAW_ENCODE: [u8; ALAW_ENC_LEN] = {
    let mut t = [0u8; ALAW_ENC_LEN];
    let mut i = 0;
    while i < ALAW_ENC_LEN {
        t[i] = alaw_from_13(i as i32 - (ALAW_ENC_LEN as i32 / 2));
        i += 1;
    }
    t
};

static ULAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_to_linear(i as u8);
        i += 1;
    }
    t
};

static ALAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_to_linear(i as u8);
        i += 1;
    }
    t
};

/// µ-law code of one linear sample.
#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    // (sample >> 2) is in -8192..=8191, so the index is in 0..16384: in bounds by construction.
    ULAW_ENCODE[((sample >> 2) as i32 + (ULAW_ENC_LEN as i32 / 2)) as usize]
}

/// A-law code of one linear sample.
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    // (sample >> 3) is in -4096..=4095, so the index is in 0..8192.
    ALAW_ENCODE[((sample >> 3) as i32 + (ALAW_ENC_LEN as i32 / 2)) as usize]
}

/// Linear sample of one µ-law code.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

/// Linear sample of one A-law code.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

impl Law {
    /// Encodes `min(pcm.len(), out.len())` samples; returns how many.
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) -> usize {
        let n = pcm.len().min(out.len());
        match self {
            Law::Ulaw => {
                for (o, &s) in out[..n].iter_mut().zip(&pcm[..n]) {
                    *o = ulaw_encode(s);
                }
            }
            Law::Alaw => {
                for (o, &s) in out[..n].iter_mut().zip(&pcm[..n]) {
                    *o = alaw_encode(s);
                }
            }
        }
        n
    }

    /// Decodes `min(codes.len(), out.len())` codes; returns how many.
    pub fn decode(self, codes: &[u8], out: &mut [i16]) -> usize {
        let n = codes.len().min(out.len());
        let table = match self {
            Law::Ulaw => &ULAW_DECODE,
            Law::Alaw => &ALAW_DECODE,
        };
        for (o, &c) in out[..n].iter_mut().zip(&codes[..n]) {
            *o = table[c as usize];
        }
        n
    }

    /// The code for silence (linear 0): µ-law 0xFF, A-law 0xD5.
    pub fn silence(self) -> u8 {
        match self {
            Law::Ulaw => ulaw_encode(0),
            Law::Alaw => alaw_encode(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REFERENCE: &str = include_str!("../tests/data/g711_audioop.txt");

    fn line(name: &str) -> impl Iterator<Item = &'static str> {
        let l = REFERENCE
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("reference file lacks {name}"));
        l.split_whitespace().skip(1)
    }

    fn decode_reference(name: &str) -> Vec<i16> {
        line(name).map(|v| v.parse().unwrap()).collect()
    }

    /// Expands "first_sample:code" runs into one code per sample -32768..=32767.
    fn encode_reference(name: &str) -> Vec<u8> {
        let runs: Vec<(i32, u8)> = line(name)
            .map(|r| {
                let (s, c) = r.split_once(':').unwrap();
                (s.parse().unwrap(), c.parse().unwrap())
            })
            .collect();
        assert_eq!(runs[0].0, -32768);
        let mut out = Vec::with_capacity(65536);
        for (i, &(start, code)) in runs.iter().enumerate() {
            let end = runs.get(i + 1).map_or(32768, |r| r.0);
            assert!(end > start, "runs ascend");
            out.extend(std::iter::repeat_n(code, (end - start) as usize));
        }
        assert_eq!(out.len(), 65536);
        out
    }

    #[test]
    fn ulaw_decode_matches_audioop_for_all_256_codes() {
        let want = decode_reference("ulaw2lin");
        assert_eq!(want.len(), 256);
        for c in 0..=255u8 {
            assert_eq!(ulaw_decode(c), want[c as usize], "code {c:#04x}");
        }
    }

    #[test]
    fn alaw_decode_matches_audioop_for_all_256_codes() {
        let want = decode_reference("alaw2lin");
        assert_eq!(want.len(), 256);
        for c in 0..=255u8 {
            assert_eq!(alaw_decode(c), want[c as usize], "code {c:#04x}");
        }
    }

    #[test]
    fn ulaw_encode_matches_audioop_for_all_65536_samples() {
        let want = encode_reference("lin2ulaw");
        for s in i16::MIN..=i16::MAX {
            assert_eq!(
                ulaw_encode(s),
                want[(s as i32 + 32768) as usize],
                "sample {s}"
            );
        }
    }

    #[test]
    fn alaw_encode_matches_audioop_for_all_65536_samples() {
        let want = encode_reference("lin2alaw");
        for s in i16::MIN..=i16::MAX {
            assert_eq!(
                alaw_encode(s),
                want[(s as i32 + 32768) as usize],
                "sample {s}"
            );
        }
    }

    #[test]
    fn silence_codes() {
        assert_eq!(Law::Ulaw.silence(), 0xff);
        assert_eq!(Law::Alaw.silence(), 0xd5);
    }

    #[test]
    fn slice_helpers_stop_at_the_shorter_buffer() {
        let pcm = [0i16, 1000, -1000, 32767];
        let mut codes = [0u8; 3];
        assert_eq!(Law::Alaw.encode(&pcm, &mut codes), 3);
        let mut back = [0i16; 8];
        assert_eq!(Law::Alaw.decode(&codes, &mut back), 3);
        assert_eq!(back[3..], [0; 5]);
    }

    proptest! {
        /// Every code decodes to a value that encodes back to the same code, except µ-law's
        /// negative zero (0x7F decodes to 0, which encodes as 0xFF).
        #[test]
        fn code_round_trips(c in any::<u8>()) {
            prop_assert_eq!(alaw_encode(alaw_decode(c)), c);
            let back = ulaw_encode(ulaw_decode(c));
            prop_assert!(back == c || (c == 0x7f && back == 0xff));
        }

        /// Encoding then decoding is monotonic and stays close: the error is within half a
        /// quantisation step of the segment, bounded by 1/16 of the magnitude plus the
        /// smallest step.
        #[test]
        fn sample_round_trip_error_is_bounded(s in any::<i16>()) {
            let mag = (s as i32).abs();
            let u = ulaw_decode(ulaw_encode(s)) as i32;
            prop_assert!((u - s as i32).abs() <= mag / 16 + 8 || mag > 32124 - 1024);
            let a = alaw_decode(alaw_encode(s)) as i32;
            prop_assert!((a - s as i32).abs() <= mag / 16 + 16);
        }

        #[test]
        fn encoding_is_monotonic(a in any::<i16>(), b in any::<i16>()) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(ulaw_decode(ulaw_encode(lo)) <= ulaw_decode(ulaw_encode(hi)));
            prop_assert!(alaw_decode(alaw_encode(lo)) <= alaw_decode(alaw_encode(hi)));
        }
    }
}
