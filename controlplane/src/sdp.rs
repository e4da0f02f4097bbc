//! SDP (RFC 8866) as a relay needs it: find each media stream's peer address, and rewrite the
//! description so both sides send to us. Every line we do not own passes through untouched.
//!
//! Bounded and panic-free on hostile input: size, line and media-section limits, typed errors.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

pub const MAX_SDP_BYTES: usize = 64 * 1024;
pub const MAX_MEDIA: usize = 64;
pub const MAX_LINES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP larger than {MAX_SDP_BYTES} bytes")]
    TooLarge,
    #[error("SDP has more than {MAX_LINES} lines or {MAX_MEDIA} media sections")]
    TooMany,
    #[error("SDP is not valid UTF-8")]
    NotUtf8,
    #[error("SDP does not start with v=0")]
    NoVersion,
    #[error("line {line}: {what}")]
    BadLine { line: usize, what: &'static str },
}

/// One `m=` section as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    /// Connection address for this stream (media-level c=, else session-level).
    pub address: Option<IpAddr>,
    pub rtcp_port: Option<u16>,
    pub rtcp_address: Option<IpAddr>,
    pub rtcp_mux: bool,
    /// The `m=` line's formats (payload types for RTP), in preference order.
    pub formats: Vec<String>,
    /// `a=rtpmap:<pt> <encoding>`, e.g. `(111, "opus/48000/2")`.
    pub rtpmaps: Vec<(u8, String)>,
    /// `a=fmtp:<pt> <parameters>`.
    pub fmtps: Vec<(u8, String)>,
    /// `a=ptime:<ms>`, the packet duration the sender of this description wants to receive
    /// (whole milliseconds; a fractional one is left out).
    pub ptime_ms: Option<u32>,
}

/// A payload format of a media section, resolved through its rtpmap (or the RFC 3551 static
/// table for payload types without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub payload_type: u8,
    /// Encoding name as written (`PCMA`, `opus`, `telephone-event`).
    pub encoding: String,
    pub clock_hz: u32,
    /// The rtpmap's encoding parameters (channels for audio), if any.
    pub params: Option<String>,
    pub fmtp: Option<String>,
}

impl Format {
    /// `encoding` names this format (case-insensitive; `opus/48000` also checks the clock).
    pub fn is(&self, name: &str) -> bool {
        let mut parts = name.split('/');
        let enc = parts.next().unwrap_or("");
        let clock = parts.next().and_then(|c| c.parse::<u32>().ok());
        self.encoding.eq_ignore_ascii_case(enc) && clock.is_none_or(|c| c == self.clock_hz)
    }

    /// The `a=rtpmap` value after the payload type.
    pub fn rtpmap(&self) -> String {
        match &self.params {
            Some(p) => format!("{}/{}/{}", self.encoding, self.clock_hz, p),
            None => format!("{}/{}", self.encoding, self.clock_hz),
        }
    }
}

/// RFC 3551's static audio payload types that still occur.
fn static_format(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        _ => return None,
    })
}

impl Media {
    /// The section's RTP payload formats in `m=` order; formats that are neither static nor
    /// mapped by an rtpmap are left out.
    pub fn payload_formats(&self) -> Vec<Format> {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok().filter(|&pt| pt < 128))
            .filter_map(|pt| {
                let fmtp = self
                    .fmtps
                    .iter()
                    .find(|(p, _)| *p == pt)
                    .map(|(_, v)| v.clone());
                if let Some((_, map)) = self.rtpmaps.iter().find(|(p, _)| *p == pt) {
                    let mut parts = map.splitn(3, '/');
                    let encoding = parts.next()?.to_string();
                    let clock_hz = parts.next()?.parse().ok()?;
                    let params = parts.next().map(str::to_string);
                    return Some(Format {
                        payload_type: pt,
                        encoding,
                        clock_hz,
                        params,
                        fmtp,
                    });
                }
                let (name, clock_hz) = static_format(pt)?;
                Some(Format {
                    payload_type: pt,
                    encoding: name.to_string(),
                    clock_hz,
                    params: None,
                    fmtp,
                })
            })
            .collect()
    }
}

/// A change to one media section's payload formats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodecEdit {
    /// The new `m=` format list, in order.
    pub formats: Vec<String>,
    /// Payload types whose `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines are dropped.
    pub drop: Vec<u8>,
    /// Attribute lines added to the section (without `a=`), e.g. `rtpmap:96 opus/48000/2`.
    pub add: Vec<String>,
}

impl Media {
    /// Where the peer wants RTP. `None` for a disabled stream (port 0) or the old-style hold
    /// address 0.0.0.0.
    pub fn rtp_target(&self) -> Option<SocketAddr> {
        let ip = self.address.filter(|a| !a.is_unspecified())?;
        (self.port != 0).then(|| SocketAddr::new(ip, self.port))
    }

    pub fn rtcp_target(&self) -> Option<SocketAddr> {
        if self.rtcp_mux {
            return self.rtp_target();
        }
        let rtp = self.rtp_target()?;
        let port = self.rtcp_port.unwrap_or(rtp.port().wrapping_add(1));
        Some(SocketAddr::new(self.rtcp_address.unwrap_or(rtp.ip()), port))
    }
}

#[derive(Debug, Clone)]
pub struct Sdp<'a> {
    lines: Vec<&'a str>,
    /// Index of each section's `m=` line; the session section is `lines[..media_starts[0]]`.
    media_starts: Vec<usize>,
    pub media: Vec<Media>,
}

/// How to rewrite one media section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaRewrite {
    /// Our RTP port for this stream; `None` leaves the stream as it was (port 0 stays 0).
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Default)]
pub struct RewriteOptions<'a> {
    pub address: Option<IpAddr>,
    pub replace_origin: bool,
    pub transport_protocol: Option<&'a str>,
    /// Drop ICE attributes: the relay terminates the media path, so the peer's candidates are
    /// meaningless to the other side.
    pub remove_ice: bool,
}

fn ip_of(fields: &[&str]) -> Option<IpAddr> {
    // "IN IP4 1.2.3.4" (possibly "1.2.3.4/127" for multicast TTL)
    match fields {
        ["IN", "IP4" | "IP6", addr, ..] => addr.split('/').next()?.parse().ok(),
        _ => None,
    }
}

const ICE_ATTRIBUTES: [&str; 7] = [
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "candidate",
    "end-of-candidates",
    "remote-candidates",
];
const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];

fn attribute_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("a=")?;
    Some(rest.split(':').next().unwrap_or(rest))
}

/// `<name><pt> <rest>` → `(pt, rest)`; `None` when it is not that attribute or the payload
/// type is not a number below 128.
fn pt_attribute<'v>(value: &'v str, name: &str) -> Option<(u8, &'v str)> {
    let rest = value.strip_prefix(name)?;
    let (pt, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let pt = pt.parse::<u8>().ok().filter(|&p| p < 128)?;
    Some((pt, rest))
}

/// The payload type an `a=rtpmap`/`a=fmtp`/`a=rtcp-fb` line is about.
fn line_pt(line: &str) -> Option<u8> {
    let value = line.strip_prefix("a=")?;
    ["rtpmap:", "fmtp:", "rtcp-fb:"]
        .iter()
        .find_map(|name| pt_attribute(value, name))
        .map(|(pt, _)| pt)
}

impl<'a> Sdp<'a> {
    pub fn parse(text: &'a str) -> Result<Sdp<'a>, SdpError> {
        if text.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge);
        }
        let lines: Vec<&str> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.trim().is_empty())
            .collect();
        if lines.len() > MAX_LINES {
            return Err(SdpError::TooMany);
        }
        if lines.first().map(|l| l.trim()) != Some("v=0") {
            return Err(SdpError::NoVersion);
        }
        let mut session_address = None;
        let mut media: Vec<Media> = Vec::new();
        let mut media_starts = Vec::new();
        for (n, line) in lines.iter().enumerate() {
            let bad = |what| SdpError::BadLine { line: n + 1, what };
            if line.len() < 2 || line.as_bytes()[1] != b'=' {
                return Err(bad("not a type=value line"));
            }
            let value = &line[2..];
            let fields: Vec<&str> = value.split_ascii_whitespace().collect();
            match line.as_bytes()[0] {
                b'm' => {
                    if media.len() == MAX_MEDIA {
                        return Err(SdpError::TooMany);
                    }
                    let [kind, port, proto, ..] = fields[..] else {
                        return Err(bad("m= needs media, port and protocol"));
                    };
                    // "port/count" is legal; we relay the first port.
                    let port = port
                        .split('/')
                        .next()
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or(bad("m= port is not a number 0-65535"))?;
                    media_starts.push(n);
                    media.push(Media {
                        kind: kind.to_string(),
                        port,
                        proto: proto.to_string(),
                        address: session_address,
                        rtcp_port: None,
                        rtcp_address: None,
                        rtcp_mux: false,
                        formats: fields[3..].iter().map(|f| f.to_string()).collect(),
                        rtpmaps: Vec::new(),
                        fmtps: Vec::new(),
                        ptime_ms: None,
                    });
                }
                b'c' => {
                    let addr = ip_of(&fields).ok_or(bad("c= is not 'IN IP4|IP6 address'"))?;
                    match media.last_mut() {
                        Some(m) => m.address = Some(addr),
                        None => session_address = Some(addr),
                    }
                }
                b'a' => {
                    let Some(m) = media.last_mut() else { continue };
                    if let Some(rest) = value.strip_prefix("rtcp:") {
                        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
                        m.rtcp_port = Some(
                            f.first()
                                .and_then(|p| p.parse().ok())
                                .ok_or(bad("a=rtcp port is not a number"))?,
                        );
                        m.rtcp_address = ip_of(f.get(1..).unwrap_or(&[]));
                    } else if value == "rtcp-mux" {
                        m.rtcp_mux = true;
                    } else if let Some(ms) = value.strip_prefix("ptime:") {
                        m.ptime_ms = ms.trim().parse().ok();
                    } else if let Some((pt, rest)) = pt_attribute(value, "rtpmap:") {
                        m.rtpmaps.push((pt, rest.trim().to_string()));
                    } else if let Some((pt, rest)) = pt_attribute(value, "fmtp:") {
                        m.fmtps.push((pt, rest.trim().to_string()));
                    }
                }
                _ => {}
            }
        }
        Ok(Sdp {
            lines,
            media_starts,
            media,
        })
    }

    fn sections(&self) -> impl Iterator<Item = (Option<usize>, &[&'a str])> + '_ {
        let first = self
            .media_starts
            .first()
            .copied()
            .unwrap_or(self.lines.len());
        std::iter::once((None, &self.lines[..first])).chain(
            self.media_starts.iter().enumerate().map(|(i, &start)| {
                let end = self
                    .media_starts
                    .get(i + 1)
                    .copied()
                    .unwrap_or(self.lines.len());
                (Some(i), &self.lines[start..end])
            }),
        )
    }

    /// Writes the description with our address and ports. `rewrites[i]` applies to media `i`.
    pub fn rewrite(&self, rewrites: &[MediaRewrite], opts: &RewriteOptions<'_>) -> String {
        self.rewrite_with_codecs(rewrites, &[], opts)
    }

    /// [`Sdp::rewrite`], and `codecs[i]` (when present and `Some`) replaces the payload
    /// formats of relayed media section `i` (transcoding: codecs added, stripped or answered
    /// in another codec).
    pub fn rewrite_with_codecs(
        &self,
        rewrites: &[MediaRewrite],
        codecs: &[Option<CodecEdit>],
        opts: &RewriteOptions<'_>,
    ) -> String {
        let mut out =
            String::with_capacity(self.lines.iter().map(|l| l.len() + 2).sum::<usize>() + 128);
        let family = |a: IpAddr| if a.is_ipv4() { "IP4" } else { "IP6" };
        for (index, section) in self.sections() {
            let rewrite = index.and_then(|i| rewrites.get(i)).and_then(|r| r.port);
            let relayed = index.is_none() || rewrite.is_some();
            let edit = index
                .filter(|_| rewrite.is_some())
                .and_then(|i| codecs.get(i))
                .and_then(Option::as_ref);
            let mut has_direction = false;
            for line in section {
                if let (Some(edit), Some(pt)) = (edit, line_pt(line)) {
                    if edit.drop.contains(&pt) {
                        continue;
                    }
                }
                let attr = attribute_name(line);
                if opts.remove_ice && attr.is_some_and(|a| ICE_ATTRIBUTES.contains(&a)) {
                    continue;
                }
                if attr.is_some_and(|a| DIRECTIONS.contains(&a)) {
                    has_direction = true;
                }
                match (line.as_bytes()[0], opts.address) {
                    (b'o', Some(addr)) if opts.replace_origin && index.is_none() => {
                        let f: Vec<&str> = line[2..].split_ascii_whitespace().collect();
                        if f.len() >= 6 {
                            let _ = write!(
                                out,
                                "o={} {} {} IN {} {}\r\n",
                                f[0],
                                f[1],
                                f[2],
                                family(addr),
                                addr
                            );
                            continue;
                        }
                    }
                    (b'c', Some(addr)) if relayed => {
                        let _ = write!(out, "c=IN {} {}\r\n", family(addr), addr);
                        continue;
                    }
                    (b'm', _) if rewrite.is_some() => {
                        let f: Vec<&str> = line[2..].split_ascii_whitespace().collect();
                        let proto = opts.transport_protocol.unwrap_or(f[2]);
                        let _ = write!(out, "m={} {} {}", f[0], rewrite.unwrap_or(0), proto);
                        match edit {
                            Some(edit) => {
                                for fmt in &edit.formats {
                                    let _ = write!(out, " {fmt}");
                                }
                            }
                            None => {
                                for fmt in &f[3..] {
                                    let _ = write!(out, " {fmt}");
                                }
                            }
                        }
                        out.push_str("\r\n");
                        continue;
                    }
                    (b'a', _) if rewrite.is_some() && attr == Some("rtcp") => continue,
                    _ => {}
                }
                out.push_str(line);
                out.push_str("\r\n");
            }
            if let (Some(i), Some(port)) = (index, rewrite) {
                for line in edit.iter().flat_map(|e| &e.add) {
                    let _ = write!(out, "a={line}\r\n");
                }
                if !has_direction {
                    out.push_str("a=sendrecv\r\n");
                }
                let rtcp = if self.media[i].rtcp_mux {
                    port
                } else {
                    port.wrapping_add(1)
                };
                let _ = write!(out, "a=rtcp:{rtcp}\r\n");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KAMAILIO_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 17000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n";

    #[test]
    fn parses_kamailio_offer_and_rewrites_like_rtpengine() {
        let sdp = Sdp::parse(KAMAILIO_OFFER).unwrap();
        assert_eq!(sdp.media.len(), 1);
        let m = &sdp.media[0];
        assert_eq!(m.rtp_target(), Some("127.0.0.1:17000".parse().unwrap()));
        assert_eq!(m.rtcp_target(), Some("127.0.0.1:17001".parse().unwrap()));
        let out = sdp.rewrite(
            &[MediaRewrite { port: Some(30666) }],
            &RewriteOptions {
                address: Some("203.0.113.5".parse().unwrap()),
                replace_origin: true,
                remove_ice: true,
                ..Default::default()
            },
        );
        assert_eq!(
            out,
            "v=0\r\no=user1 53655765 2353687637 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
             m=audio 30666 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-11,16\r\na=sendrecv\r\na=rtcp:30667\r\n"
        );
    }

    #[test]
    fn reads_rtcp_mux_ice_and_media_level_connection() {
        let text = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=x\nc=IN IP4 10.0.0.1\nt=0 0\n\
                    m=audio 4000 UDP/TLS/RTP/SAVPF 111\nc=IN IP4 192.0.2.1\na=rtcp:4005 IN IP4 192.0.2.2\n\
                    a=ice-ufrag:abc\na=candidate:1 1 udp 1 192.0.2.1 4000 typ host\na=sendonly\n\
                    m=video 0 RTP/AVP 96\nm=audio 5000 RTP/AVP 0\na=rtcp-mux\n";
        let sdp = Sdp::parse(text).unwrap();
        assert_eq!(
            sdp.media[0].rtp_target(),
            Some("192.0.2.1:4000".parse().unwrap())
        );
        assert_eq!(
            sdp.media[0].rtcp_target(),
            Some("192.0.2.2:4005".parse().unwrap())
        );
        assert_eq!(sdp.media[1].rtp_target(), None);
        assert_eq!(
            sdp.media[2].rtcp_target(),
            Some("10.0.0.1:5000".parse().unwrap())
        );
        let out = sdp.rewrite(
            &[
                MediaRewrite { port: Some(30000) },
                MediaRewrite { port: None },
                MediaRewrite { port: Some(30004) },
            ],
            &RewriteOptions {
                address: Some("127.0.0.1".parse().unwrap()),
                transport_protocol: Some("RTP/AVP"),
                remove_ice: true,
                ..Default::default()
            },
        );
        assert!(
            out.contains(
                "m=audio 30000 RTP/AVP 111\r\nc=IN IP4 127.0.0.1\r\na=sendonly\r\na=rtcp:30001\r\n"
            ),
            "{out}"
        );
        assert!(out.contains("m=video 0 RTP/AVP 96\r\n"));
        assert!(
            out.contains("m=audio 30004 RTP/AVP 0\r\na=rtcp-mux\r\na=sendrecv\r\na=rtcp:30004\r\n")
        );
        assert!(!out.contains("candidate") && !out.contains("ice-ufrag"));
        assert!(
            out.contains("o=- 1 1 IN IP4 10.0.0.1\r\n"),
            "origin kept without replace-origin"
        );
    }

    #[test]
    fn rejects_hostile_sdp() {
        assert_eq!(Sdp::parse("").unwrap_err(), SdpError::NoVersion);
        assert_eq!(Sdp::parse("v=1\n").unwrap_err(), SdpError::NoVersion);
        assert!(matches!(
            Sdp::parse("v=0\nm=audio 99999 RTP/AVP 0\n"),
            Err(SdpError::BadLine { line: 2, .. })
        ));
        assert!(matches!(
            Sdp::parse("v=0\nm=audio\n"),
            Err(SdpError::BadLine { .. })
        ));
        assert!(matches!(
            Sdp::parse("v=0\nc=IN IP4 nonsense\n"),
            Err(SdpError::BadLine { .. })
        ));
        assert!(matches!(
            Sdp::parse("v=0\nhello\n"),
            Err(SdpError::BadLine { .. })
        ));
        assert_eq!(
            Sdp::parse(&"v=0\n".repeat(20_000)).unwrap_err(),
            SdpError::TooLarge
        );
        let many = format!("v=0\n{}", "m=audio 1 RTP/AVP 0\n".repeat(MAX_MEDIA + 1));
        assert_eq!(Sdp::parse(&many).unwrap_err(), SdpError::TooMany);
    }

    proptest! {
        #[test]
        fn never_panics(text in "(v=0\n)?([a-z]=[ -~]{0,40}\n){0,20}") {
            if let Ok(sdp) = Sdp::parse(&text) {
                let rewrites = vec![MediaRewrite { port: Some(40000) }; sdp.media.len()];
                let opts = RewriteOptions { address: Some("127.0.0.1".parse().unwrap()), replace_origin: true, transport_protocol: Some("RTP/AVP"), remove_ice: true };
                let _ = sdp.rewrite(&rewrites, &opts);
            }
        }

        /// What we write, we can read back, with our address and ports in it.
        #[test]
        fn rewritten_sdp_parses_to_our_address(ports in proptest::collection::vec(1u16..65000, 1..5), mux in any::<bool>()) {
            let mut text = String::from("v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=-\r\nc=IN IP4 10.1.1.1\r\nt=0 0\r\n");
            for p in &ports {
                text.push_str(&format!("m=audio {p} RTP/AVP 0\r\na=candidate:x\r\n"));
                if mux { text.push_str("a=rtcp-mux\r\n"); }
            }
            let sdp = Sdp::parse(&text).unwrap();
            let ours: Vec<_> = (0..ports.len()).map(|i| MediaRewrite { port: Some(30000 + 4 * i as u16) }).collect();
            let opts = RewriteOptions { address: Some("127.0.0.2".parse().unwrap()), replace_origin: true, remove_ice: true, ..Default::default() };
            let out = sdp.rewrite(&ours, &opts);
            let back = Sdp::parse(&out).unwrap();
            for (i, m) in back.media.iter().enumerate() {
                let port = 30000 + 4 * i as u16;
                prop_assert_eq!(m.rtp_target(), Some(SocketAddr::new("127.0.0.2".parse().unwrap(), port)));
                prop_assert_eq!(m.rtcp_target().unwrap().port(), if mux { port } else { port + 1 });
            }
            prop_assert!(!out.contains("candidate"));
        }
    }
}
