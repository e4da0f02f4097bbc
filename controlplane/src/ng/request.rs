//! Typing an ng request: from a bencode (or JSON) dictionary to the fields the handler uses.
//! Every key Kamailio's and OpenSIPS's rtpengine modules send is accepted; keys we don't act on
//! are ignored, as rtpengine ignores what it doesn't know. A key we use with the wrong type is an
//! error naming the key.

use super::codecs::CodecRequest;
use crate::bencode::Value;
use std::borrow::Cow;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Ping,
    Offer,
    Answer,
    Delete,
    Query,
    List,
    Statistics,
    PlayDtmf,
    BlockDtmf,
    UnblockDtmf,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Offer => "offer",
            Command::Answer => "answer",
            Command::Delete => "delete",
            Command::Query => "query",
            Command::List => "list",
            Command::Statistics => "statistics",
            Command::PlayDtmf => "play DTMF",
            Command::BlockDtmf => "block DTMF",
            Command::UnblockDtmf => "unblock DTMF",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub command: Command,
    pub call_id: Option<&'a str>,
    pub from_tag: Option<&'a str>,
    pub to_tag: Option<&'a str>,
    pub sdp: Option<&'a str>,
    pub flags: Vec<&'a str>,
    pub replace: Vec<&'a str>,
    pub ice: Option<&'a str>,
    pub transport_protocol: Option<&'a str>,
    /// `received-from: [family, address]`: the source of the SIP message carrying the SDP.
    pub received_from: Option<IpAddr>,
    pub supports: Vec<&'a str>,
    /// `list`: most call-ids to return.
    pub limit: Option<i64>,
    /// `codec: {transcode: [...], strip: [...], mask: [...], offer: [...], accept: [...]}`,
    /// plus the flag forms `codec-transcode-NAME`, `codec-strip-NAME`, `codec-mask-NAME`,
    /// `codec-offer-NAME`, `codec-accept-NAME`.
    pub codec: CodecRequest,
    /// `play DTMF`: the key and how to play it.
    pub dtmf: PlayDtmf,
}

/// `play DTMF`'s keys, with rtpengine's defaults and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayDtmf {
    /// `code` (or `digit`): 0–15 or one of `0`-`9`, `*`, `#`, `A`-`D`; `None` when absent.
    pub code: Option<char>,
    /// ms, 100–5000, default 250.
    pub duration_ms: u16,
    /// -dB (`volume` is dB, 0 loudest; a positive value counts as negative), default 8.
    pub volume: u8,
    /// ms between keys, 100–5000, default 100.
    pub pause_ms: u16,
}

impl Default for PlayDtmf {
    fn default() -> Self {
        PlayDtmf {
            code: None,
            duration_ms: 250,
            volume: 8,
            pause_ms: 100,
        }
    }
}

/// An integer key, given as an integer or a decimal string.
fn integer(dict: &Value<'_>, key: &str) -> Result<Option<i64>, RequestError> {
    match dict.get(key) {
        None => Ok(None),
        Some(Value::Int(n)) => Ok(Some(*n)),
        Some(v) => v
            .as_str()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| RequestError(format!("'{key}' must be an integer"))),
    }
}

fn play_dtmf(dict: &Value<'_>) -> Result<PlayDtmf, RequestError> {
    let mut p = PlayDtmf::default();
    let bad_code = || RequestError("'code' must be 0-15 or one of 0-9, *, #, A-D".into());
    let code = dict.get("code").or_else(|| dict.get("digit"));
    p.code = match code {
        None => None,
        Some(Value::Int(n)) => {
            let event = u8::try_from(*n).map_err(|_| bad_code())?;
            Some(tandem_media::rfc4733::dtmf_digit(event).ok_or_else(bad_code)?)
        }
        Some(v) => {
            let s = v.as_str().ok_or_else(bad_code)?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if tandem_media::rfc4733::dtmf_event(c).is_some() => {
                    Some(c.to_ascii_uppercase())
                }
                // A number written as a string ("11").
                _ => {
                    let event: u8 = s.parse().map_err(|_| bad_code())?;
                    Some(tandem_media::rfc4733::dtmf_digit(event).ok_or_else(bad_code)?)
                }
            }
        }
    };
    if let Some(d) = integer(dict, "duration")? {
        p.duration_ms = d.clamp(100, 5000) as u16;
    }
    if let Some(v) = integer(dict, "volume")? {
        p.volume = v.unsigned_abs().min(63) as u8;
    }
    if let Some(d) = integer(dict, "pause")? {
        p.pause_ms = d.clamp(100, 5000) as u16;
    }
    Ok(p)
}

impl Request<'_> {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    pub fn replaces(&self, what: &str) -> bool {
        self.replace.iter().any(|f| f.eq_ignore_ascii_case(what))
    }

    pub fn supports(&self, what: &str) -> bool {
        self.supports.iter().any(|f| f.eq_ignore_ascii_case(what))
    }

    /// The call-id, required by every call-level command.
    pub fn require_call_id(&self) -> Result<&str, RequestError> {
        self.call_id
            .filter(|c| !c.is_empty())
            .ok_or_else(|| RequestError("No call-id in message".into()))
    }
}

fn string<'v>(dict: &'v Value<'_>, key: &str) -> Result<Option<&'v str>, RequestError> {
    match dict.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| RequestError(format!("'{key}' must be a UTF-8 string"))),
    }
}

/// A list of strings; a single string counts as a list of one, as rtpengine allows.
fn strings<'v>(dict: &'v Value<'_>, key: &str) -> Result<Vec<&'v str>, RequestError> {
    let wrong = || RequestError(format!("'{key}' must be a list of strings"));
    match dict.get(key) {
        None => Ok(Vec::new()),
        Some(Value::List(items)) => items.iter().map(|i| i.as_str().ok_or_else(wrong)).collect(),
        Some(v) => v.as_str().map(|s| vec![s]).ok_or_else(wrong),
    }
}

/// Parses a decoded request dictionary.
pub fn parse<'v>(dict: &'v Value<'_>) -> Result<Request<'v>, RequestError> {
    if dict.as_dict().is_none() {
        return Err(RequestError("request is not a dictionary".into()));
    }
    let command = match string(dict, "command")? {
        None => return Err(RequestError("No command in message".into())),
        Some(c) => match c.to_ascii_lowercase().as_str() {
            "ping" => Command::Ping,
            "offer" => Command::Offer,
            "answer" => Command::Answer,
            "delete" => Command::Delete,
            "query" => Command::Query,
            "list" => Command::List,
            "statistics" => Command::Statistics,
            "play dtmf" => Command::PlayDtmf,
            "block dtmf" => Command::BlockDtmf,
            "unblock dtmf" => Command::UnblockDtmf,
            _ => return Err(RequestError(format!("Unrecognized command '{c}'"))),
        },
    };
    let received_from = match dict.get("received-from") {
        None => None,
        Some(v) => {
            let bad = || RequestError("'received-from' must be [family, address]".into());
            let list = v.as_list().ok_or_else(bad)?;
            let addr = list.get(1).and_then(Value::as_str).ok_or_else(bad)?;
            Some(addr.parse().map_err(|_| bad())?)
        }
    };
    let limit = match dict.get("limit") {
        None => None,
        Some(Value::Int(n)) => Some(*n),
        Some(v) => Some(
            v.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| RequestError("'limit' must be an integer".into()))?,
        ),
    };
    let flags = strings(dict, "flags")?;
    let mut codec = CodecRequest::default();
    if let Some(c) = dict.get("codec") {
        if c.as_dict().is_none() {
            return Err(RequestError("'codec' must be a dictionary".into()));
        }
        let owned = |l: Vec<&str>| l.into_iter().map(str::to_string).collect::<Vec<_>>();
        codec.transcode = owned(strings(c, "transcode")?);
        codec.strip = owned(strings(c, "strip")?);
        codec.mask = owned(strings(c, "mask")?);
        codec.offer = owned(strings(c, "offer")?);
        codec.accept = owned(strings(c, "accept")?);
    }
    for f in &flags {
        let lower = f.to_ascii_lowercase();
        for (prefix, list) in [
            ("codec-transcode-", &mut codec.transcode),
            ("codec-strip-", &mut codec.strip),
            ("codec-mask-", &mut codec.mask),
            ("codec-offer-", &mut codec.offer),
            ("codec-accept-", &mut codec.accept),
        ] {
            if lower.starts_with(prefix) {
                list.push(f[prefix.len()..].to_string());
            }
        }
    }
    Ok(Request {
        command,
        call_id: string(dict, "call-id")?,
        from_tag: string(dict, "from-tag")?,
        to_tag: string(dict, "to-tag")?,
        sdp: string(dict, "sdp")?,
        flags,
        replace: strings(dict, "replace")?,
        ice: string(dict, "ICE")?,
        transport_protocol: string(dict, "transport-protocol")?,
        received_from,
        supports: strings(dict, "supports")?,
        limit,
        codec,
        // Only `play DTMF` reads these keys: others may carry them for their own reasons.
        dtmf: if command == Command::PlayDtmf {
            play_dtmf(dict)?
        } else {
            PlayDtmf::default()
        },
    })
}

/// Converts a JSON request body into the same dictionary a bencode body decodes to.
pub fn from_json(body: &[u8]) -> Result<Value<'static>, RequestError> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| RequestError(format!("invalid JSON: {e}")))?;
    fn convert(v: serde_json::Value, depth: usize) -> Result<Value<'static>, RequestError> {
        if depth > crate::bencode::MAX_DEPTH {
            return Err(RequestError("JSON nested too deeply".into()));
        }
        Ok(match v {
            serde_json::Value::Null => Value::Bytes(Cow::Borrowed(b"")),
            serde_json::Value::Bool(b) => Value::Int(b as i64),
            serde_json::Value::Number(n) => Value::Int(
                n.as_i64()
                    .ok_or_else(|| RequestError("JSON numbers must be integers".into()))?,
            ),
            serde_json::Value::String(s) => Value::string(s),
            serde_json::Value::Array(a) => Value::List(
                a.into_iter()
                    .map(|i| convert(i, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(o) => Value::Dict(
                o.into_iter()
                    .map(|(k, v)| Ok((Cow::Owned(k.into_bytes()), convert(v, depth + 1)?)))
                    .collect::<Result<_, RequestError>>()?,
            ),
        })
    }
    convert(json, 0)
}

/// Converts a reply dictionary to JSON, for clients that spoke JSON.
pub fn to_json(v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Bytes(b) => serde_json::Value::from(String::from_utf8_lossy(b).into_owned()),
        Value::List(l) => serde_json::Value::Array(l.iter().map(to_json).collect()),
        Value::Dict(d) => serde_json::Value::Object(
            d.iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::decode;

    #[test]
    fn accepts_every_key_kamailio_sends() {
        let wire = b"d8:supportsl10:load limite3:sdp4:v=0\n3:ICE6:remove7:replacel6:origin18:session-connectione7:call-id17:1-22163@127.0.0.113:received-froml3:IP49:127.0.0.1e8:from-tag15:22163SIPpTag0917:command5:offere";
        let v = decode(wire).unwrap();
        let r = parse(&v).unwrap();
        assert_eq!(r.command, Command::Offer);
        assert_eq!(r.call_id, Some("1-22163@127.0.0.1"));
        assert_eq!(r.from_tag, Some("22163SIPpTag091"));
        assert!(r.replaces("origin") && r.replaces("session-connection"));
        assert_eq!(r.ice, Some("remove"));
        assert!(r.supports("load limit"));
        assert_eq!(r.received_from, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn wrong_types_name_the_key() {
        let v = decode(b"d7:command5:offer7:call-idi5ee").unwrap();
        assert_eq!(parse(&v).unwrap_err().0, "'call-id' must be a UTF-8 string");
        let v = decode(b"d7:command5:offer5:flagsli1eee").unwrap();
        assert!(parse(&v).unwrap_err().0.contains("'flags'"));
        let v = decode(b"d7:command5:dancee").unwrap();
        assert_eq!(parse(&v).unwrap_err().0, "Unrecognized command 'dance'");
        let v = decode(b"d4:call1:xe").unwrap();
        assert_eq!(parse(&v).unwrap_err().0, "No command in message");
        let v = decode(b"li1ee").unwrap();
        assert!(parse(&v).is_err());
        let v = decode(b"d7:command5:offer13:received-froml3:IP43:bogee").unwrap();
        assert!(parse(&v).unwrap_err().0.contains("received-from"));
    }

    #[test]
    fn codec_dictionary_and_flags() {
        let v = decode(
            b"d7:command5:offer5:codecd9:transcodel4:opuse5:strip4:PCMUe5:flagsl15:codec-mask-G722ee",
        )
        .unwrap();
        let r = parse(&v).unwrap();
        assert_eq!(r.codec.transcode, ["opus"]);
        assert_eq!(r.codec.strip, ["PCMU"]);
        assert_eq!(r.codec.mask, ["G722"]);
        let v = decode(b"d7:command5:offer5:codeci1ee").unwrap();
        assert_eq!(parse(&v).unwrap_err().0, "'codec' must be a dictionary");
        let v = from_json(br#"{"command":"offer","codec":{"transcode":["PCMA","opus"]}}"#).unwrap();
        assert_eq!(parse(&v).unwrap().codec.transcode, ["PCMA", "opus"]);
        let v = from_json(
            br#"{"command":"offer","codec":{"offer":["G729","PCMA"],"accept":["PCMU"]},"flags":["codec-offer-G722"]}"#,
        )
        .unwrap();
        let r = parse(&v).unwrap();
        assert_eq!(r.codec.offer, ["G729", "PCMA", "G722"]);
        assert_eq!(r.codec.accept, ["PCMU"]);
    }

    #[test]
    fn json_requests_type_the_same() {
        let v = from_json(
            br#"{"command":"offer","call-id":"c1","flags":["trust-address"],"replace":"origin"}"#,
        )
        .unwrap();
        let r = parse(&v).unwrap();
        assert_eq!(r.call_id, Some("c1"));
        assert!(r.has_flag("trust-address") && r.replaces("origin"));
        assert!(from_json(b"{nope").is_err());
        assert!(from_json(b"{\"a\":1.5}").is_err());
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(from_json(deep.as_bytes()).is_err());
    }
}
