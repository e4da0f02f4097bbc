//! Ogg clips (hold music an operator supplies as `.ogg`): decoded once, when the clip is loaded,
//! to mono PCM at the stream's own rate; [`crate::clip::read_clip`] resamples it to 8 kHz.
//!
//! Ogg Vorbis is decoded by `lewton` (pure Rust). A chained file (several Vorbis streams one
//! after another) is played whole as long as every link keeps the first one's rate.
//! Ogg Opus (RFC 7845; with the `opus` feature, which the data plane turns on) is demuxed by
//! `ogg` and decoded by libopus at 48 kHz: mono or stereo (channel mapping family 0), one
//! logical stream; the header's pre-skip is dropped, its output gain applied and the last
//! page's granule position trims the end.

use crate::clip::{ClipError, MAX_CLIP_SECONDS};
use std::io::Cursor;

/// Sample rates an Ogg clip may have. Anything outside is refused: a hostile header could
/// otherwise claim a rate that makes resampling take minutes or the length limit meaningless.
pub(crate) const OGG_RATES_HZ: std::ops::RangeInclusive<u32> = 8_000..=96_000;

/// Decodes an Ogg Vorbis file held in memory: its rate and its samples, mixed down to mono.
pub(crate) fn decode_ogg_vorbis(bytes: &[u8]) -> Result<(u32, Vec<i16>), ClipError> {
    let broken = |e: lewton::VorbisError| ClipError::Ogg(e.to_string());
    let mut stream =
        lewton::inside_ogg::OggStreamReader::new(Cursor::new(bytes)).map_err(broken)?;
    let rate = stream.ident_hdr.audio_sample_rate;
    if !OGG_RATES_HZ.contains(&rate) {
        return Err(ClipError::Ogg(format!(
            "Vorbis at {rate} Hz: only {} to {} Hz is played",
            OGG_RATES_HZ.start(),
            OGG_RATES_HZ.end()
        )));
    }
    let limit = MAX_CLIP_SECONDS as usize * rate as usize;
    let mut mono = Vec::new();
    // Where the current link of a chained file starts in `mono`, and its serial number.
    let (mut link_start, mut link_serial) = (0, stream.stream_serial());
    while let Some(channels) = stream.read_dec_packet().map_err(broken)? {
        if stream.stream_serial() != link_serial {
            (link_start, link_serial) = (mono.len(), stream.stream_serial());
        }
        if stream.ident_hdr.audio_sample_rate != rate {
            return Err(ClipError::Ogg(format!(
                "chained Vorbis changes rate from {rate} Hz to {} Hz",
                stream.ident_hdr.audio_sample_rate
            )));
        }
        mix_down(&channels, &mut mono);
        if mono.len() > limit {
            return Err(ClipError::TooLong {
                seconds: (mono.len() / rate as usize) as u64,
            });
        }
    }
    // The last page's granule position is the link's length in samples: the final packet
    // decodes to a whole block, and what lies past that position is padding, not audio.
    if let Some(end) = stream.get_last_absgp() {
        let end = usize::try_from(end).unwrap_or(usize::MAX);
        mono.truncate(link_start.saturating_add(end));
    }
    if mono.is_empty() {
        return Err(ClipError::Empty);
    }
    Ok((rate, mono))
}

/// Appends the average of `channels` (one sample vector per channel, as decoders hand them
/// out) to `mono`. A shorter channel counts as silence past its end.
pub(crate) fn mix_down(channels: &[Vec<i16>], mono: &mut Vec<i16>) {
    let Some(len) = channels.iter().map(Vec::len).max() else {
        return;
    };
    let count = channels.len() as i32;
    mono.extend((0..len).map(|i| {
        let sum: i32 = channels
            .iter()
            .map(|c| c.get(i).copied().unwrap_or(0) as i32)
            .sum();
        // The average of i16 values is an i16.
        (sum / count) as i16
    }));
}

/// Whether the first packet of an Ogg file is an Opus identification header (RFC 7845 §5.1):
/// it sits right after the first page's 27-byte header and its segment table.
pub(crate) fn is_ogg_opus(bytes: &[u8]) -> bool {
    let Some(&segments) = bytes.get(26) else {
        return false;
    };
    let start = 27 + segments as usize;
    bytes.get(start..start + 8) == Some(b"OpusHead")
}

/// The rate every Opus stream decodes at.
#[cfg(feature = "opus")]
pub(crate) const OPUS_RATE_HZ: u32 = 48_000;

/// Decodes an Ogg Opus file held in memory to mono PCM at [`OPUS_RATE_HZ`].
#[cfg(feature = "opus")]
pub(crate) fn decode_ogg_opus(bytes: &[u8]) -> Result<Vec<i16>, ClipError> {
    let broken = |what: String| ClipError::Ogg(format!("Opus: {what}"));
    let mut reader = ogg::PacketReader::new(Cursor::new(bytes));
    let next = |reader: &mut ogg::PacketReader<Cursor<&[u8]>>| {
        reader.read_packet().map_err(|e| broken(e.to_string()))
    };
    let head = next(&mut reader)?.ok_or_else(|| broken("no header".into()))?;
    let h = &head.data;
    // OpusHead: magic, version, channels, pre-skip, input rate, output gain, mapping family.
    if h.len() < 19 || !h.starts_with(b"OpusHead") || h[8] >> 4 != 0 {
        return Err(broken("not a version 0 OpusHead".into()));
    }
    let (channels, family) = (h[9], h[18]);
    if family != 0 || !(1..=2).contains(&channels) {
        return Err(broken(format!(
            "{channels} channel(s) in mapping family {family}: only mono and stereo are played"
        )));
    }
    let pre_skip = u16::from_le_bytes([h[10], h[11]]) as usize;
    let gain_db = i16::from_le_bytes([h[16], h[17]]) as f64 / 256.0;
    let serial = head.stream_serial();
    let tags = next(&mut reader)?.ok_or_else(|| broken("no OpusTags".into()))?;
    if tags.stream_serial() != serial || !tags.data.starts_with(b"OpusTags") {
        return Err(broken("the second packet is not OpusTags".into()));
    }
    let layout = if channels == 1 {
        opus::Channels::Mono
    } else {
        opus::Channels::Stereo
    };
    let mut decoder =
        opus::Decoder::new(OPUS_RATE_HZ, layout).map_err(|e| broken(e.to_string()))?;
    // 120 ms, the longest an Opus packet decodes to.
    let mut frame = vec![0i16; 5_760 * channels as usize];
    let limit = MAX_CLIP_SECONDS as usize * OPUS_RATE_HZ as usize + pre_skip;
    let mut mono = Vec::new();
    let mut end_granule = None;
    while let Some(packet) = next(&mut reader)? {
        if packet.stream_serial() != serial {
            return Err(broken(
                "more than one logical stream (chained or multiplexed)".into(),
            ));
        }
        let samples = decoder
            .decode(&packet.data, &mut frame, false)
            .map_err(|e| broken(e.to_string()))?;
        let decoded = &frame[..samples * channels as usize];
        if channels == 1 {
            mono.extend_from_slice(decoded);
        } else {
            mono.extend(
                decoded
                    .chunks_exact(2)
                    .map(|lr| ((lr[0] as i32 + lr[1] as i32) / 2) as i16),
            );
        }
        if mono.len() > limit {
            return Err(ClipError::TooLong {
                seconds: (mono.len() / OPUS_RATE_HZ as usize) as u64,
            });
        }
        end_granule = Some(packet.absgp_page());
    }
    // The granule position counts the pre-skip too (RFC 7845 §4).
    if let Some(end) = end_granule {
        mono.truncate(usize::try_from(end).unwrap_or(usize::MAX));
    }
    mono.drain(..pre_skip.min(mono.len()));
    if mono.is_empty() {
        return Err(ClipError::Empty);
    }
    if gain_db != 0.0 {
        let gain = 10f64.powf(gain_db / 20.0);
        for s in &mut mono {
            // `as` saturates: a gain past full scale clips instead of wrapping.
            *s = (*s as f64 * gain).round() as i16;
        }
    }
    Ok(mono)
}
