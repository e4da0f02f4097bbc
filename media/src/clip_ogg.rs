//! Ogg clips (hold music an operator supplies as `.ogg`): decoded once, when the clip is loaded,
//! to mono PCM at the stream's own rate; [`crate::clip::read_clip`] resamples it to 8 kHz.
//!
//! Both codecs are demuxed by `ogg`, and a file must hold one logical stream: a chained file
//! (streams one after another) or a multiplexed one is refused with an error saying so.
//! Ogg Vorbis is decoded by `lewton` (pure Rust) through its low-level API, with our own checks
//! in front of it (see "What lewton is trusted with" below); Ogg Opus (RFC 7845; with the `opus`
//! feature, which the data plane turns on) by libopus at 48 kHz: mono or stereo (channel
//! mapping family 0), the header's pre-skip dropped, its output gain applied. For both, the last
//! page's granule position trims the end.
//!
//! # What lewton is trusted with
//!
//! A memory allocation that fails aborts the process, so no count read from the file may size
//! an allocation unless the bytes behind it are there. lewton's `OggStreamReader` breaks that
//! (its comment-header reader reserves `comment_count` entries before reading any, and one
//! hostile file asked for 81 GB), so it is not used. What we call, and why each is bounded:
//!
//! - `ogg::PacketReader` reads a page into buffers sized by its own header (at most 255 segment
//!   lengths, at most 65,025 body bytes) and glues a packet spanning pages from bytes it has
//!   read; so a packet is never bigger than the file, which `read_clip_file` caps at 128 MiB.
//! - The comment header (vendor length, comment count, comment lengths) is never parsed: we only
//!   check that it is one (`0x03 "vorbis"`), as we need nothing from it.
//! - `lewton::header::read_header_ident` reads fixed fields; what it allocates is sized by the
//!   two block sizes, which it checks are 2^6..2^13. We add: 1 to [`MAX_VORBIS_CHANNELS`]
//!   channels, a rate in [`OGG_RATES_HZ`], and channels × the long block size below 2^16
//!   (lewton's residue-type-2 decoding multiplies them in 16 bits).
//! - `lewton::header::read_header_setup` runs only on a setup packet that [`check_vorbis_setup`]
//!   has walked first, bit for bit as the Vorbis I spec lays it out. Its allocations sized from
//!   the file are: per codebook, the codeword lengths (`entries` bytes, reserved before they
//!   are read), the Huffman tree (about two nodes per used entry), the VQ multiplicands
//!   (`lookup_values` u32s, reserved before they are read) and the VQ table (`entries` ×
//!   `dimensions` f32s, computed, not read). The walk refuses the setup unless every
//!   multiplicand's bits are in the packet, each codebook has
//!   ilog(dimensions) + ilog(entries) <= 24 (libvorbis's own rule), each VQ codebook at least
//!   one dimension, and the whole header's codebooks together claim at most
//!   [`MAX_CODEBOOK_ENTRIES`] entries and [`MAX_CODEBOOK_VQ_VALUES`] table values. Floors,
//!   residues, mappings and modes allocate by fields of at most 8 bits each (at most 64 of
//!   each, 31 partitions, 16 classes, 8 books a class, 65 floor points, 64 classifications,
//!   256 coupling steps, 255 channels), kilobytes in all. The walk also refuses what would make
//!   lewton panic or misread instead of returning an error: floor type 0 (only pre-1.0 encoders
//!   wrote it; lewton indexes past its codebooks on a book number equal to the count, and
//!   shifts an i32 by up to 63 bits), an ordered codebook whose lengths pass 32 (lewton's u8
//!   length would overflow), and a residue that uses the eighth cascade pass (lewton reads
//!   seven of the eight book numbers, so it would misread the rest of the header and panic on
//!   a book without a value table when decoding).
//! - `lewton::audio::read_audio_packet` allocates per packet by the block size (at most 8,192)
//!   times channels, the floor points and the residue partitions of that block: bounded by the
//!   checked headers, not by anything in the audio packet. Its work per packet is bounded by
//!   the block too, given two more rules of the walk: a floor's range may not pass half the
//!   long block (lewton draws the floor line out to the range's end, up to 2^15 points), and a
//!   residue's classbook has as many entries as class combinations (libvorbis's rule) and at
//!   most 24 dimensions (lewton spends that many steps per classbook read). The decoded length
//!   is checked against [`MAX_CLIP_SECONDS`] after every packet, and every packet but the first
//!   yields at least 32 samples, so the whole decoding is bounded by the clip length limit.
//! - Opus: the OpusHead fields we use are fixed-size; OpusTags is checked by its magic only and
//!   never parsed; each packet is decoded into one fixed 120 ms buffer.
//!
//! The property test in `clip.rs` and the `clip` fuzz target (run with a malloc limit) feed
//! hostile and mutated files through all of this.

use crate::clip::{ClipError, MAX_CLIP_SECONDS};
use lewton::audio::{read_audio_packet, PreviousWindowRight};
use lewton::header::{read_header_ident, read_header_setup};
use std::io::Cursor;

/// Sample rates an Ogg clip may have. Anything outside is refused: a hostile header could
/// otherwise claim a rate that makes resampling take minutes or the length limit meaningless.
pub(crate) const OGG_RATES_HZ: std::ops::RangeInclusive<u32> = 8_000..=96_000;

/// The most channels a Vorbis clip may have (7.1, the most Vorbis I defines an order for); they
/// are averaged to mono anyway.
pub(crate) const MAX_VORBIS_CHANNELS: u8 = 8;

/// The most codebook entries a Vorbis setup header may claim, all codebooks together. The
/// libvorbis file in our tests claims 10,821; this bounds the codeword lengths and Huffman
/// trees lewton builds to some tens of megabytes.
pub(crate) const MAX_CODEBOOK_ENTRIES: u64 = 1 << 20;

/// The most VQ table values (entries × dimensions of each codebook with a value table) a Vorbis
/// setup header may claim, all codebooks together: lewton computes them into f32 tables, 16 MiB
/// at this limit. The libvorbis file in our tests claims 60,260.
pub(crate) const MAX_CODEBOOK_VQ_VALUES: u64 = 1 << 22;

/// The Ogg packet reader over a file held in memory.
type Packets<'a> = ogg::PacketReader<Cursor<&'a [u8]>>;

/// The next packet of the file's one logical stream (`serial`, once known), or `None` at its end.
fn next_packet(
    reader: &mut Packets,
    serial: Option<u32>,
    codec: &str,
) -> Result<Option<ogg::Packet>, ClipError> {
    let packet = reader
        .read_packet()
        .map_err(|e| ClipError::Ogg(format!("{codec}: {e}")))?;
    match (&packet, serial) {
        (Some(p), Some(serial)) if p.stream_serial() != serial => Err(ClipError::Ogg(format!(
            "{codec}: more than one logical stream (chained or multiplexed), which is not played"
        ))),
        _ => Ok(packet),
    }
}

/// Decodes an Ogg Vorbis file held in memory: its rate and its samples, mixed down to mono.
pub(crate) fn decode_ogg_vorbis(bytes: &[u8]) -> Result<(u32, Vec<i16>), ClipError> {
    let broken = |what: String| ClipError::Ogg(format!("Vorbis: {what}"));
    let mut reader = ogg::PacketReader::new(Cursor::new(bytes));
    let first = next_packet(&mut reader, None, "Vorbis")?
        .ok_or_else(|| broken("no identification header".into()))?;
    let serial = Some(first.stream_serial());
    let ident = read_header_ident(&first.data).map_err(|e| broken(e.to_string()))?;
    let rate = ident.audio_sample_rate;
    if !OGG_RATES_HZ.contains(&rate) {
        return Err(broken(format!(
            "{rate} Hz: only {} to {} Hz is played",
            OGG_RATES_HZ.start(),
            OGG_RATES_HZ.end()
        )));
    }
    let channels = ident.audio_channels;
    if channels > MAX_VORBIS_CHANNELS {
        return Err(broken(format!(
            "{channels} channels: at most {MAX_VORBIS_CHANNELS} are played"
        )));
    }
    if (channels as u32) << ident.blocksize_1 > u16::MAX as u32 {
        return Err(broken(format!(
            "{channels} channels of {}-sample blocks: lewton counts them in 16 bits",
            1u32 << ident.blocksize_1
        )));
    }
    let comment = next_packet(&mut reader, serial, "Vorbis")?
        .ok_or_else(|| broken("no comment header".into()))?;
    if !comment.data.starts_with(b"\x03vorbis") {
        return Err(broken("the second packet is not a comment header".into()));
    }
    let setup_packet = next_packet(&mut reader, serial, "Vorbis")?
        .ok_or_else(|| broken("no setup header".into()))?;
    check_vorbis_setup(&setup_packet.data, ident.blocksize_1)
        .map_err(|e| broken(format!("setup header: {e}")))?;
    let setup = read_header_setup(
        &setup_packet.data,
        channels,
        (ident.blocksize_0, ident.blocksize_1),
    )
    .map_err(|e| broken(format!("setup header: {e}")))?;

    let limit = MAX_CLIP_SECONDS as usize * rate as usize;
    // The right half of the previous block, overlapped with the next one's left half: the first
    // audio packet only fills it and yields no samples.
    let mut overlap = PreviousWindowRight::new();
    let mut mono = Vec::new();
    let mut end_granule = None;
    while let Some(packet) = next_packet(&mut reader, serial, "Vorbis")? {
        let decoded = read_audio_packet(&ident, &setup, &packet.data, &mut overlap)
            .map_err(|e| broken(audio_error(e).into()))?;
        mix_down(&decoded, &mut mono);
        check_length(&mono, limit, rate)?;
        end_granule = Some(packet.absgp_page());
    }
    // The last page's granule position is the stream's length in samples: the final packet
    // decodes to a whole block, and what lies past that position is padding, not audio.
    trim_to_granule(&mut mono, end_granule);
    if mono.is_empty() {
        return Err(ClipError::Empty);
    }
    Ok((rate, mono))
}

/// What a lewton audio-packet error means (its own text for `AudioIsHeader` speaks of an
/// unsupported version).
fn audio_error(e: lewton::audio::AudioReadError) -> &'static str {
    use lewton::audio::AudioReadError::*;
    match e {
        EndOfPacket => "an audio packet ends early",
        AudioBadFormat => "an audio packet is malformed",
        AudioIsHeader => "a header packet among the audio packets",
        BufferNotAddressable => "an audio packet needs more memory than can be addressed",
    }
}

/// Reads a Vorbis packet bit by bit, least significant bit first (Vorbis I §2.1).
struct Bits<'a> {
    bytes: &'a [u8],
    /// Bits read so far.
    at: u64,
}

impl Bits<'_> {
    fn left(&self) -> u64 {
        self.bytes.len() as u64 * 8 - self.at
    }

    /// The next `count` (at most 32) bits as a number.
    fn read(&mut self, count: u32) -> Result<u32, String> {
        if u64::from(count) > self.left() {
            return Err("ends early".into());
        }
        let mut value = 0u32;
        for i in 0..count {
            let bit = (self.bytes[(self.at / 8) as usize] >> (self.at % 8)) & 1;
            value |= u32::from(bit) << i;
            self.at += 1;
        }
        Ok(value)
    }

    fn skip(&mut self, count: u64) -> Result<(), String> {
        if count > self.left() {
            return Err("ends early".into());
        }
        self.at += count;
        Ok(())
    }
}

/// The number of bits `value` needs (Vorbis I §9.2.1 `ilog`): 0 for 0.
fn ilog(value: u32) -> u32 {
    u32::BITS - value.leading_zeros()
}

/// The greatest `r` with `r^dimensions <= entries` (Vorbis I §9.2.3 `lookup1_values`), for
/// `dimensions >= 1`.
fn lookup1_values(entries: u32, dimensions: u32) -> u64 {
    let fits = |r: u64| {
        r.checked_pow(dimensions)
            .is_some_and(|p| p <= u64::from(entries))
    };
    let mut r = (f64::from(entries)).powf(1.0 / f64::from(dimensions)) as u64;
    while fits(r + 1) {
        r += 1;
    }
    while r > 0 && !fits(r) {
        r -= 1;
    }
    r
}

/// What a codebook's shape means to the rest of the setup header.
struct Codebook {
    entries: u32,
    dimensions: u32,
    /// Whether it has a VQ value table (residues may only use such codebooks).
    has_values: bool,
}

/// Walks a Vorbis setup header (Vorbis I §4.2.4) up to the end of its residues, checking what
/// lewton's `read_header_setup` would otherwise trust (see the module's documentation).
/// `long_block_bits` is the identification header's `blocksize_1` (log2 of the long block).
/// Returns what its codebooks claim in all.
pub(crate) fn check_vorbis_setup(
    packet: &[u8],
    long_block_bits: u8,
) -> Result<CodebookTotals, String> {
    if !packet.starts_with(b"\x05vorbis") {
        return Err("the third packet is not a setup header".into());
    }
    let mut bits = Bits {
        bytes: &packet[7..],
        at: 0,
    };
    let count = bits.read(8)? + 1;
    let (mut entries_total, mut values_total) = (0u64, 0u64);
    let mut codebooks = Vec::with_capacity(count as usize);
    for _ in 0..count {
        codebooks.push(check_codebook(
            &mut bits,
            &mut entries_total,
            &mut values_total,
        )?);
    }
    for _ in 0..bits.read(6)? + 1 {
        if bits.read(16)? != 0 {
            return Err("a time-domain transform other than 0".into());
        }
    }
    for _ in 0..bits.read(6)? + 1 {
        match bits.read(16)? {
            1 => check_floor1(&mut bits, count, long_block_bits)?,
            0 => return Err("floor type 0 (only pre-1.0 encoders wrote it) is not played".into()),
            other => return Err(format!("floor type {other}")),
        }
    }
    for _ in 0..bits.read(6)? + 1 {
        check_residue(&mut bits, &codebooks)?;
    }
    Ok(CodebookTotals {
        entries: entries_total,
        vq_values: values_total,
    })
}

/// What a setup header's codebooks claim, all together.
#[derive(Debug, PartialEq)]
pub(crate) struct CodebookTotals {
    /// Entries (codeword lengths, Huffman tree leaves).
    pub entries: u64,
    /// VQ table values (entries × dimensions of the codebooks with values).
    pub vq_values: u64,
}

/// Walks one codebook (Vorbis I §3.2.1), adding its entries and VQ table values to the totals.
fn check_codebook(
    bits: &mut Bits,
    entries_total: &mut u64,
    values_total: &mut u64,
) -> Result<Codebook, String> {
    if bits.read(24)? != 0x56_4342 {
        return Err("a codebook without its sync pattern".into());
    }
    let dimensions = bits.read(16)?;
    let entries = bits.read(24)?;
    if ilog(dimensions) + ilog(entries) > 24 {
        return Err(format!(
            "a codebook of {entries} entries of {dimensions} dimensions"
        ));
    }
    *entries_total += u64::from(entries);
    if *entries_total > MAX_CODEBOOK_ENTRIES {
        return Err(format!(
            "codebooks claim over {MAX_CODEBOOK_ENTRIES} entries"
        ));
    }
    if bits.read(1)? == 1 {
        // Ordered: runs of entries of one length, the length growing by one each run.
        let (mut entry, mut length) = (0, bits.read(5)? + 1);
        while entry < entries {
            if length > 32 {
                return Err("a codeword longer than 32 bits".into());
            }
            let run = bits.read(ilog(entries - entry))?;
            if run > entries - entry {
                return Err("an ordered codebook with more lengths than entries".into());
            }
            entry += run;
            length += 1;
        }
    } else {
        let sparse = bits.read(1)? == 1;
        for _ in 0..entries {
            if !sparse || bits.read(1)? == 1 {
                bits.read(5)?;
            }
        }
    }
    match bits.read(4)? {
        0 => Ok(Codebook {
            entries,
            dimensions,
            has_values: false,
        }),
        lookup @ (1 | 2) => {
            if dimensions == 0 {
                return Err("a VQ codebook of no dimensions".into());
            }
            *values_total += u64::from(entries) * u64::from(dimensions);
            if *values_total > MAX_CODEBOOK_VQ_VALUES {
                return Err(format!(
                    "codebooks claim over {MAX_CODEBOOK_VQ_VALUES} VQ values"
                ));
            }
            bits.skip(64)?; // minimum and delta value
            let value_bits = bits.read(4)? + 1;
            bits.read(1)?; // sequence flag
            let multiplicands = if lookup == 1 {
                lookup1_values(entries, dimensions)
            } else {
                u64::from(entries) * u64::from(dimensions)
            };
            bits.skip(multiplicands * u64::from(value_bits))?;
            Ok(Codebook {
                entries,
                dimensions,
                has_values: true,
            })
        }
        other => Err(format!("codebook lookup type {other}")),
    }
}

/// Walks a type 1 floor (Vorbis I §7.2.2) of a header with `codebooks` codebooks.
///
/// Its points' range may not pass half the long block: lewton renders the floor line out to the
/// range's end before cutting it to the block, and a floor is never wider than half a block, so
/// a wider range only lets a packet of a few bytes cost 2^15 samples of work per channel.
fn check_floor1(bits: &mut Bits, codebooks: u32, long_block_bits: u8) -> Result<(), String> {
    let bad_book = || Err("a floor names a codebook that is not there".into());
    let partitions = bits.read(5)?;
    let mut partition_classes = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        partition_classes.push(bits.read(4)? as usize);
    }
    let classes = partition_classes.iter().max().map_or(0, |&c| c + 1);
    let mut class_dimensions = Vec::with_capacity(classes);
    for _ in 0..classes {
        class_dimensions.push(bits.read(3)? + 1);
        let subclass_bits = bits.read(2)?;
        if subclass_bits > 0 && bits.read(8)? >= codebooks {
            return bad_book();
        }
        for _ in 0..1 << subclass_bits {
            // Stored plus one, 0 meaning none.
            if bits.read(8)? > codebooks {
                return bad_book();
            }
        }
    }
    bits.read(2)?; // multiplier
    let range_bits = bits.read(4)?;
    if range_bits >= u32::from(long_block_bits) {
        return Err(format!(
            "a floor over 2^{range_bits} points, wider than half a block of 2^{long_block_bits}"
        ));
    }
    let points: u32 = partition_classes.iter().map(|&c| class_dimensions[c]).sum();
    if points + 2 > 65 {
        return Err("a floor of more than 65 points".into());
    }
    bits.skip(u64::from(points) * u64::from(range_bits))
}

/// Walks one residue (Vorbis I §8.6.1).
fn check_residue(bits: &mut Bits, codebooks: &[Codebook]) -> Result<(), String> {
    let bad_book = || Err("a residue names a codebook that is not there or has no values".into());
    if bits.read(16)? > 2 {
        return Err("a residue type over 2".into());
    }
    let (begin, end) = (bits.read(24)?, bits.read(24)?);
    if begin > end {
        return Err("a residue that ends before it begins".into());
    }
    bits.read(24)?; // partition size
    let classifications = bits.read(6)? + 1;
    let Some(classbook) = codebooks.get(bits.read(8)? as usize) else {
        return bad_book();
    };
    // Each classbook entry names `dimensions` partitions' classes, so there must be as many
    // entries as class combinations (libvorbis's rule); and lewton spends `dimensions` steps
    // per entry read, however few partitions a block has, so at most 24 (what the rule allows
    // whenever there are two classes or more).
    let combinations = u64::from(classifications).checked_pow(classbook.dimensions);
    if classbook.dimensions > 24 || combinations.is_none_or(|c| c > u64::from(classbook.entries)) {
        return Err(format!(
            "a residue classbook of {} entries of {} dimensions for {classifications} classes",
            classbook.entries, classbook.dimensions
        ));
    }
    let mut cascades = Vec::with_capacity(classifications as usize);
    for _ in 0..classifications {
        let low = bits.read(3)?;
        let high = if bits.read(1)? == 1 { bits.read(5)? } else { 0 };
        let cascade = high << 3 | low;
        if cascade & 0x80 != 0 {
            return Err("a residue that uses the eighth cascade pass".into());
        }
        cascades.push(cascade);
    }
    for cascade in cascades {
        for pass in 0..7 {
            if cascade & 1 << pass != 0 {
                let book = codebooks.get(bits.read(8)? as usize);
                if !book.is_some_and(|b| b.has_values) {
                    return bad_book();
                }
            }
        }
    }
    Ok(())
}

/// Refuses `mono` (samples at `rate`) once it is longer than `limit` samples.
fn check_length(mono: &[i16], limit: usize, rate: u32) -> Result<(), ClipError> {
    if mono.len() > limit {
        return Err(ClipError::TooLong {
            seconds: (mono.len() / rate as usize) as u64,
        });
    }
    Ok(())
}

/// Cuts `mono` to the last page's granule position, where there was a page (a position past
/// the end cuts nothing).
fn trim_to_granule(mono: &mut Vec<i16>, end_granule: Option<u64>) {
    if let Some(end) = end_granule {
        mono.truncate(usize::try_from(end).unwrap_or(usize::MAX));
    }
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
    let head = next_packet(&mut reader, None, "Opus")?.ok_or_else(|| broken("no header".into()))?;
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
    let serial = Some(head.stream_serial());
    let tags =
        next_packet(&mut reader, serial, "Opus")?.ok_or_else(|| broken("no OpusTags".into()))?;
    if !tags.data.starts_with(b"OpusTags") {
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
    while let Some(packet) = next_packet(&mut reader, serial, "Opus")? {
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
        check_length(&mono, limit, OPUS_RATE_HZ)?;
        end_granule = Some(packet.absgp_page());
    }
    // The granule position counts the pre-skip too (RFC 7845 §4).
    trim_to_granule(&mut mono, end_granule);
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

/// 0.5 s of a 440 Hz sine at half scale, 44.1 kHz stereo Ogg Vorbis, written by
/// `sox -n -r 44100 -c 2 -C -1 sine440_stereo_44k1.ogg synth 0.5 sine 440 vol 0.5`.
#[cfg(test)]
pub(crate) const VORBIS_SINE_440: &[u8] = include_bytes!("../tests/data/sine440_stereo_44k1.ogg");

/// `file`'s Ogg packets, changed by `edit`, written into pages again with good checksums, so
/// that the damage reaches the decoder instead of stopping at the container's CRC.
#[cfg(test)]
pub(crate) fn edit_packets(file: &[u8], edit: impl FnOnce(&mut [ogg::Packet])) -> Vec<u8> {
    let mut packets = read_packets(file);
    edit(&mut packets);
    let mut out = Vec::new();
    write_packets(packets, 0, &mut out);
    out
}

/// Every packet of a good Ogg file.
#[cfg(test)]
fn read_packets(file: &[u8]) -> Vec<ogg::Packet> {
    let mut reader = ogg::PacketReader::new(Cursor::new(file));
    std::iter::from_fn(|| reader.read_packet().unwrap()).collect()
}

/// Appends `packets` to `out` as Ogg pages, their serial numbers XORed with `serial_change`,
/// each ending its page where it did.
#[cfg(test)]
fn write_packets(packets: Vec<ogg::Packet>, serial_change: u32, out: &mut Vec<u8>) {
    let mut writer = ogg::PacketWriter::new(out);
    for p in packets {
        use ogg::PacketWriteEndInfo::{EndPage, EndStream, NormalPacket};
        let end = match (p.last_in_stream(), p.last_in_page()) {
            (true, _) => EndStream,
            (false, true) => EndPage,
            _ => NormalPacket,
        };
        let (serial, granule) = (p.stream_serial() ^ serial_change, p.absgp_page());
        writer
            .write_packet(p.data.into_boxed_slice(), serial, end, granule)
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes bits least significant first, as Vorbis packs them.
    #[derive(Default)]
    struct BitWriter {
        bytes: Vec<u8>,
        at: u64,
    }

    impl BitWriter {
        fn put(&mut self, value: u64, count: u32) -> &mut Self {
            for i in 0..count {
                if self.at.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                if value >> i & 1 == 1 {
                    *self.bytes.last_mut().unwrap() |= 1 << (self.at % 8);
                }
                self.at += 1;
            }
            self
        }
    }

    /// A setup header of one codebook of `entries` entries, `dimensions` dimensions, all of
    /// codeword length 1 (ordered: one run, so a huge count costs a few bits), then VQ lookup
    /// `lookup` with 8-bit values, and nothing after it (the checks must stop before).
    fn setup_with_codebook(entries: u32, dimensions: u32, lookup: u64) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.put(0, 8) // one codebook
            .put(0x56_4342, 24)
            .put(dimensions.into(), 16)
            .put(entries.into(), 24)
            .put(1, 1) // ordered
            .put(0, 5) // first length 1
            .put(entries.into(), ilog(entries))
            .put(lookup, 4);
        if lookup > 0 {
            w.put(0, 64).put(7, 4).put(0, 1);
        }
        [&b"\x05vorbis"[..], &w.bytes].concat()
    }

    /// A setup header of one codebook (two entries, one dimension, no values), one type 1 floor
    /// of no partitions 2^8 wide, and one residue with `classes` classifications of `cascade`
    /// passes each, each pass naming codebook 0, then nothing.
    fn setup_with_residue(cascade: u64, floor_type: u64, classes: u64) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.put(0, 8)
            .put(0x56_4342, 24)
            .put(1, 16)
            .put(2, 24)
            .put(0, 1) // not ordered
            .put(0, 1) // not sparse
            .put(0, 5) // length 1
            .put(0, 5) // length 1
            .put(0, 4) // no values
            .put(0, 6) // one time-domain transform
            .put(0, 16)
            .put(0, 6) // one floor
            .put(floor_type, 16);
        w.put(0, 5).put(0, 2).put(8, 4); // floor 1: no partitions, multiplier, 2^8 wide
        w.put(0, 6) // one residue
            .put(0, 16)
            .put(0, 24)
            .put(0, 24)
            .put(0, 24)
            .put(classes - 1, 6)
            .put(0, 8); // classbook 0
        for _ in 0..classes {
            w.put(cascade & 7, 3).put(1, 1).put(cascade >> 3, 5);
        }
        for _ in 0..classes * u64::from(cascade.count_ones()) {
            w.put(0, 8);
        }
        [&b"\x05vorbis"[..], &w.bytes].concat()
    }

    /// The Vorbis test file with its setup header replaced, decoded.
    fn decode_with_setup(setup: Vec<u8>) -> Result<(u32, Vec<i16>), ClipError> {
        decode_ogg_vorbis(&edit_packets(VORBIS_SINE_440, |packets| {
            packets[2].data = setup
        }))
    }

    #[test]
    fn setup_headers_claiming_huge_codebooks_are_refused_before_lewton_reads_them() {
        let cases = [
            // 2^24 - 1 entries of 65535 dimensions: lewton would reserve 4 TiB for the VQ
            // table (and 64 MiB of lengths first), which aborts.
            ((0xff_ffff, 0xffff, 1), "entries"),
            // Within the entry limit, past libvorbis's ilog rule.
            (
                (1 << 19, 1 << 10, 2),
                "a codebook of 524288 entries of 1024 dimensions",
            ),
            // Within the ilog rule, past the VQ table limit.
            (((1 << 14) - 1, (1 << 9) - 1, 1), "VQ values"),
            // Lookup type 2 asks for 100 × 2 values of 8 bits that are not there.
            ((100, 2, 2), "ends early"),
            // Lookup type 1 of no dimensions: lewton's lookup1_values says u32::MAX.
            ((5, 0, 1), "no dimensions"),
            ((5, 1, 3), "lookup type 3"),
        ];
        for ((entries, dimensions, lookup), reason) in cases {
            let setup = setup_with_codebook(entries, dimensions, lookup);
            let err = check_vorbis_setup(&setup, 11).unwrap_err();
            assert!(err.contains(reason), "{entries} × {dimensions}: {err}");
            let err = decode_with_setup(setup).unwrap_err().to_string();
            assert!(
                err.contains("setup header") && err.contains(reason),
                "{err}"
            );
        }
    }

    #[test]
    fn setup_headers_lewton_would_panic_on_or_misread_are_refused() {
        // Pass 7 of a residue cascade: lewton reads only seven book numbers.
        let err = check_vorbis_setup(&setup_with_residue(0x80, 1, 1), 11).unwrap_err();
        assert!(err.contains("eighth cascade pass"), "{err}");
        // A residue book without a value table.
        let err = check_vorbis_setup(&setup_with_residue(0x01, 1, 1), 11).unwrap_err();
        assert!(err.contains("no values"), "{err}");
        // No cascade passes: the walk is content (lewton then finds no mappings, an error).
        assert!(check_vorbis_setup(&setup_with_residue(0, 1, 1), 11).is_ok());
        assert!(decode_with_setup(setup_with_residue(0, 1, 1)).is_err());
        // Three classes from a classbook of two one-dimensional entries.
        let err = check_vorbis_setup(&setup_with_residue(0, 1, 3), 11).unwrap_err();
        assert!(
            err.contains("classbook of 2 entries of 1 dimensions for 3 classes"),
            "{err}"
        );
        assert!(check_vorbis_setup(&setup_with_residue(0, 1, 2), 11).is_ok());
        // A setup header for blocks of at most 2^6 samples, with a floor 2^8 wide.
        let err = check_vorbis_setup(&setup_with_residue(0, 1, 1), 6).unwrap_err();
        assert!(err.contains("wider than half a block"), "{err}");
        let err = check_vorbis_setup(&setup_with_residue(0, 0, 1), 11).unwrap_err();
        assert!(err.contains("floor type 0"), "{err}");
        // An ordered codebook whose lengths run past 32 bits: 40 runs of no entries.
        let mut w = BitWriter::default();
        w.put(0, 8)
            .put(0x56_4342, 24)
            .put(1, 16)
            .put(1, 24)
            .put(1, 1)
            .put(0, 5);
        w.put(0, 40);
        let setup = [&b"\x05vorbis"[..], &w.bytes].concat();
        let err = check_vorbis_setup(&setup, 11).unwrap_err();
        assert!(err.contains("longer than 32 bits"), "{err}");
        // Not a setup header at all.
        let err = decode_with_setup(b"\x03vorbis".to_vec())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a setup header"), "{err}");
    }

    #[test]
    fn the_test_files_setup_header_passes_the_walk() {
        let mut reader = ogg::PacketReader::new(Cursor::new(VORBIS_SINE_440));
        let setup = (0..3)
            .map(|_| reader.read_packet().unwrap().unwrap())
            .last();
        // Its long blocks are 2^12 samples. What its codebooks claim is far below the limits.
        let totals = check_vorbis_setup(&setup.unwrap().data, 12).unwrap();
        assert_eq!(
            totals,
            CodebookTotals {
                entries: 10_821,
                vq_values: 60_260
            }
        );
    }

    #[test]
    fn lookup1_values_is_the_greatest_whole_root() {
        for entries in 0..300u32 {
            for dimensions in 1..12u32 {
                let brute = (0..=entries as u64)
                    .filter(|r| {
                        r.checked_pow(dimensions)
                            .is_some_and(|p| p <= entries as u64)
                    })
                    .max()
                    .unwrap();
                assert_eq!(lookup1_values(entries, dimensions), brute);
            }
        }
        assert_eq!(lookup1_values(0xff_ffff, 1), 0xff_ffff);
        assert_eq!(lookup1_values(0xff_ffff, 0xffff), 1);
        assert_eq!(lookup1_values(1 << 24, 2), 4096);
    }

    #[test]
    fn more_than_one_logical_stream_is_refused() {
        // The file, then the same stream again under another serial number: a chained file.
        let mut chained = VORBIS_SINE_440.to_vec();
        write_packets(read_packets(VORBIS_SINE_440), 1, &mut chained);
        let err = decode_ogg_vorbis(&chained).unwrap_err().to_string();
        assert!(err.contains("more than one logical stream"), "{err}");
    }
}
