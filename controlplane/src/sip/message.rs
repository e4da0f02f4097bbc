//! SIP messages: parse, inspect, build and print.
//!
//! Framing and header-name canonicalisation (compact forms such as `v:` and `i:`) come from
//! `ezk-sip-types`; the rest of the stack sees only the owned types here, so the parser crate can
//! be swapped behind this module. Every malformed input yields a [`ParseError`] — never a panic —
//! carrying enough of the message, where it could be read, for the caller to answer 400.

use std::fmt::Write as _;

/// Largest message we accept (UDP datagrams and TCP frames alike); RFC 3261 §18.1.1 keeps UDP
/// well below this, and a B2BUA has no business with larger bodies.
pub const MAX_MESSAGE_BYTES: usize = 65_535;
/// Header lines longer than this are an attack, not a SIP message.
pub const MAX_HEADER_LINE_BYTES: usize = 8_192;
pub const MAX_HEADERS: usize = 128;
/// RFC 3261 §8.1.1.5: CSeq must be below 2**31.
pub const MAX_CSEQ: u32 = (1 << 31) - 1;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Refer,
    Notify,
    Subscribe,
    Message,
    Other(String),
}

impl Method {
    pub fn parse(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: String },
    Response { code: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical (long-form) name, e.g. `Via` for `v`.
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub reason: String,
    /// What could be read, when it is enough to address a response (a request with Via, From,
    /// To, Call-ID and CSeq); the caller answers `400 <reason>` to it.
    pub partial: Option<Box<Message>>,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ParseError {}

fn fail(reason: impl Into<String>) -> ParseError {
    ParseError {
        reason: reason.into(),
        partial: None,
    }
}

/// Headers whose values are comma-separated lists (RFC 3261 §7.3.1); others (notably the auth
/// headers, whose parameters contain commas) are never split.
const LIST_HEADERS: [&str; 12] = [
    "Via",
    "Route",
    "Record-Route",
    "Contact",
    "Allow",
    "Supported",
    "Require",
    "Proxy-Require",
    "Unsupported",
    "Accept",
    "Allow-Events",
    "Path",
];

fn canonical_name(raw: &str) -> String {
    ezk_sip_types::Name::from(raw.to_string())
        .as_print_str()
        .to_string()
}

/// Splits a list header value on commas outside quotes and angle brackets.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut in_quotes, mut in_angle, mut escaped) = (0, false, false, false);
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

/// Where a message ends in a byte stream (TCP): `Ok(None)` until the head and the body announced
/// by Content-Length (mandatory on streams, RFC 3261 §18.3) have arrived.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    // Keep-alive CRLFs (RFC 5626) between messages are skipped by the caller.
    let Some(head_end) = find_head_end(buf) else {
        if buf.len() > MAX_MESSAGE_BYTES {
            return Err(fail("message head too large"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| fail("invalid UTF-8 in head"))?;
    let mut length = None;
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if canonical_name(name.trim()) == "Content-Length" {
                length = Some(
                    value
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| fail("bad Content-Length"))?,
                );
            }
        }
    }
    let length = length.ok_or_else(|| fail("Content-Length missing on a stream transport"))?;
    let total = head_end
        .checked_add(length)
        .filter(|&t| t <= MAX_MESSAGE_BYTES)
        .ok_or_else(|| fail("message too large"))?;
    Ok((buf.len() >= total).then_some(total))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
}

impl Message {
    /// Parses one complete message (a datagram, or a frame cut by [`stream_frame_len`]).
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        if buf.len() > MAX_MESSAGE_BYTES {
            return Err(fail("message too large"));
        }
        let mut parser = ezk_sip_types::msg::PullParser::new(buf, 0);
        let mut lines: Vec<&[u8]> = Vec::new();
        for line in &mut parser {
            let line = line.map_err(|_| fail("incomplete message head"))?;
            if lines.len() > MAX_HEADERS {
                return Err(fail("too many headers"));
            }
            lines.push(line);
        }
        let head_end = parser.head_end();
        let Some((first, header_lines)) = lines.split_first() else {
            return Err(fail("empty message"));
        };
        let first = std::str::from_utf8(first).map_err(|_| fail("invalid UTF-8 in start line"))?;
        let start = parse_start_line(first)?;

        let mut headers = Vec::with_capacity(header_lines.len());
        let mut first_error: Option<String> = None;
        for raw in header_lines {
            if raw.len() > MAX_HEADER_LINE_BYTES {
                first_error.get_or_insert_with(|| "header line too long".into());
                continue;
            }
            let Ok(line) = std::str::from_utf8(raw) else {
                first_error.get_or_insert_with(|| "invalid UTF-8 in header".into());
                continue;
            };
            let Some((name, value)) = line.split_once(':') else {
                first_error.get_or_insert_with(|| "header line without a colon".into());
                continue;
            };
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                first_error.get_or_insert_with(|| "malformed header name".into());
                continue;
            }
            // Folded continuation lines become single spaces (RFC 3261 §7.3.1).
            let value = value
                .split(['\r', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            headers.push(Header {
                name: canonical_name(name),
                value,
            });
        }

        // What we print always carries exactly one Content-Length: a message must leave room
        // for it within the limit, or what we relay could not be parsed again.
        let printed = headers
            .iter()
            .filter(|h| !h.name.eq_ignore_ascii_case("Content-Length"))
            .count()
            + 1;
        if printed > MAX_HEADERS {
            first_error.get_or_insert_with(|| "too many headers".into());
        }
        let mut body = buf.get(head_end..).unwrap_or_default().to_vec();
        let mut message = Message {
            start,
            headers,
            body: Vec::new(),
        };
        if first_error.is_none() {
            match message
                .get("Content-Length")
                .map(|v| v.trim().parse::<usize>())
            {
                None | Some(Ok(_)) => {}
                Some(Err(_)) => first_error = Some("bad Content-Length".into()),
            }
        }
        if let Some(Ok(length)) = message
            .get("Content-Length")
            .map(|v| v.trim().parse::<usize>())
        {
            if length > body.len() {
                first_error.get_or_insert_with(|| "Content-Length exceeds the body".into());
            } else {
                body.truncate(length);
            }
        }
        message.body = body;
        if first_error.is_none() {
            if let Err(reason) = message.validate() {
                first_error = Some(reason.into());
            }
        }
        match first_error {
            None => Ok(message),
            Some(reason) => {
                let respondable = message.is_request() && message.can_be_answered();
                Err(ParseError {
                    reason,
                    partial: respondable.then(|| Box::new(message)),
                })
            }
        }
    }

    /// Mandatory headers (RFC 3261 §8.1.1) and their basic syntax.
    fn validate(&self) -> Result<(), &'static str> {
        if self.get("Call-ID").is_none_or(|v| v.trim().is_empty()) {
            return Err("missing Call-ID");
        }
        if self.get("From").is_none() {
            return Err("missing From");
        }
        if self.get("To").is_none() {
            return Err("missing To");
        }
        let (_, cseq_method) = self.cseq().ok_or("missing or malformed CSeq")?;
        self.top_via().ok_or("missing or malformed Via")?;
        if let StartLine::Request { method, uri } = &self.start {
            if cseq_method != *method {
                return Err("CSeq method does not match the request method");
            }
            if let Some(mf) = self.get("Max-Forwards") {
                mf.trim()
                    .parse::<u8>()
                    .map_err(|_| "malformed Max-Forwards")?;
            }
            if !uri.contains(':') {
                return Err("malformed Request-URI");
            }
        }
        Ok(())
    }

    fn can_be_answered(&self) -> bool {
        self.top_via().is_some()
            && self.get("From").is_some()
            && self.get("To").is_some()
            && self.get("Call-ID").is_some()
            && self.get("CSeq").is_some()
    }

    pub fn request(method: Method, uri: impl Into<String>) -> Message {
        Message {
            start: StartLine::Request {
                method,
                uri: uri.into(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response to `req` (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq copied; a To tag
    /// added when given and the request had none.
    pub fn response_to(req: &Message, code: u16, to_tag: Option<&str>) -> Message {
        let mut res = Message {
            start: StartLine::Response {
                code,
                reason: reason_phrase(code).to_string(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        };
        for h in &req.headers {
            match h.name.as_str() {
                "Via" | "From" | "Call-ID" | "CSeq" => res.headers.push(h.clone()),
                "To" => {
                    let mut value = h.value.clone();
                    if let (Some(tag), None) = (to_tag, header_param(&h.value, "tag")) {
                        let _ = write!(value, ";tag={tag}");
                    }
                    res.headers.push(Header {
                        name: "To".into(),
                        value,
                    });
                }
                _ => {}
            }
        }
        res
    }

    pub fn with_reason(mut self, reason: &str) -> Message {
        if let StartLine::Response { reason: r, .. } = &mut self.start {
            *r = reason.replace(['\r', '\n'], " ");
        }
        self
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.push(Header {
            name: name.to_string(),
            value: value.into(),
        });
        self
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.remove(name);
        self.push(name, value)
    }

    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) {
        self.remove("Content-Type");
        if !body.is_empty() {
            self.push("Content-Type", content_type);
        }
        self.body = body;
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// First value of a header (the whole line for list headers).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of a header, list headers split into their elements, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let split = LIST_HEADERS.iter().any(|l| l.eq_ignore_ascii_case(name));
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .flat_map(move |h| {
                let parts: Vec<&str> = if split {
                    split_list(&h.value).collect()
                } else {
                    vec![h.value.trim()]
                };
                parts
            })
    }

    pub fn call_id(&self) -> &str {
        self.get("Call-ID").map(str::trim).unwrap_or_default()
    }

    pub fn cseq(&self) -> Option<(u32, Method)> {
        let value = self.get("CSeq")?;
        let mut parts = value.split_whitespace();
        let number: u32 = parts.next()?.parse().ok()?;
        let method = parts.next()?;
        if number > MAX_CSEQ || parts.next().is_some() || !method.bytes().all(is_token_byte) {
            return None;
        }
        Some((number, Method::parse(method)))
    }

    pub fn top_via(&self) -> Option<Via> {
        self.get_all("Via").next().and_then(Via::parse)
    }

    pub fn from_tag(&self) -> Option<&str> {
        self.get("From").and_then(|v| header_param(v, "tag"))
    }

    pub fn to_tag(&self) -> Option<&str> {
        self.get("To").and_then(|v| header_param(v, "tag"))
    }

    /// The URI inside the first Contact.
    pub fn contact_uri(&self) -> Option<&str> {
        self.get_all("Contact").next().map(name_addr_uri)
    }

    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type")
            .map(|v| v.split(';').next().unwrap_or(v).trim())
    }

    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    pub fn has_option_tag(&self, header: &str, tag: &str) -> bool {
        self.get_all(header).any(|t| t.eq_ignore_ascii_case(tag))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(out, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for h in &self.headers {
            if h.name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            let _ = write!(out, "{}: {}\r\n", h.name, h.value);
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Rewrites the top Via for the address the request really came from (RFC 3261 §18.2.1
    /// `received`, RFC 3581 `rport`): responses then reach a client behind NAT.
    pub fn stamp_received(&mut self, source: std::net::SocketAddr) {
        let Some(index) = self.headers.iter().position(|h| h.name == "Via") else {
            return;
        };
        let value = self.headers[index].value.clone();
        let mut elements: Vec<String> = split_list(&value).map(str::to_string).collect();
        let Some(top) = elements.first_mut() else {
            return;
        };
        let Some(via) = Via::parse(top) else { return };
        let ip = source.ip().to_string();
        let mut rebuilt = format!("SIP/2.0/{} {}", via.transport, via.host_port());
        let mut params: Vec<(String, Option<String>)> = via
            .params
            .into_iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("received"))
            .collect();
        let wants_rport = params.iter().any(|(k, _)| k.eq_ignore_ascii_case("rport"));
        if via.host != ip || wants_rport {
            params.push(("received".into(), Some(ip)));
        }
        for (k, v) in &mut params {
            if k.eq_ignore_ascii_case("rport") {
                *v = Some(source.port().to_string());
            }
        }
        for (k, v) in params {
            match v {
                Some(v) => {
                    let _ = write!(rebuilt, ";{k}={v}");
                }
                None => {
                    let _ = write!(rebuilt, ";{k}");
                }
            }
        }
        *top = rebuilt;
        self.headers[index].value = elements.join(", ");
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code
            .parse()
            .ok()
            .filter(|c| (100..700).contains(c))
            .ok_or_else(|| fail("malformed status line"))?;
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(fail("malformed request line"));
    };
    if version != "SIP/2.0" {
        return Err(fail("unsupported SIP version"));
    }
    if method.is_empty() || !method.bytes().all(is_token_byte) || uri.is_empty() {
        return Err(fail("malformed request line"));
    }
    Ok(StartLine::Request {
        method: Method::parse(method),
        uri: uri.to_string(),
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// One Via element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    pub fn parse(value: &str) -> Option<Via> {
        let rest = value.trim();
        let (protocol, rest) = rest.split_once(|c: char| c.is_ascii_whitespace())?;
        let mut proto = protocol.split('/');
        let (Some(name), Some(version), Some(transport), None) =
            (proto.next(), proto.next(), proto.next(), proto.next())
        else {
            return None;
        };
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || transport.is_empty() {
            return None;
        }
        let mut pieces = rest.trim().split(';');
        let sent_by = pieces.next()?.trim();
        let (host, port) = split_host_port(sent_by)?;
        let params = pieces
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
                None => (p.trim().to_string(), None),
            })
            .collect();
        Some(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch")
    }

    pub fn host_port(&self) -> String {
        match self.port {
            Some(p) if self.host.contains(':') => format!("[{}]:{p}", self.host),
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// Where responses go (RFC 3261 §18.2.2 with RFC 3581): received/rport when present.
    pub fn response_target(&self) -> Option<std::net::SocketAddr> {
        let host = self.param("received").unwrap_or(&self.host);
        let ip: std::net::IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
        let port = self
            .param("rport")
            .and_then(|p| p.parse().ok())
            .or(self.port)
            .unwrap_or(5060);
        Some(std::net::SocketAddr::new(ip, port))
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            if host.is_empty() {
                return None;
            }
            Some((host.to_string(), Some(port.parse().ok()?)))
        }
        _ if s.is_empty() => None,
        _ => Some((s.to_string(), None)),
    }
}

/// A parameter of a name-addr header (From/To/Contact), outside the `<...>` URI.
pub fn header_param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let after_uri = match value.find('>') {
        Some(end) => &value[end + 1..],
        // addr-spec form: parameters after the URI belong to the header.
        None => value.split_once(';').map(|(_, p)| p).unwrap_or(""),
    };
    after_uri
        .split(';')
        .map(|p| {
            let p = p.trim();
            match p.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => (p, ""),
            }
        })
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The URI of a name-addr or addr-spec (`"Bob" <sip:bob@x>;tag=1` → `sip:bob@x`).
pub fn name_addr_uri(value: &str) -> &str {
    let value = value.trim();
    if let (Some(start), Some(end)) = (value.find('<'), value.find('>')) {
        if start < end {
            return value[start + 1..end].trim();
        }
    }
    value.split(';').next().unwrap_or(value).trim()
}

/// The parts of a `sip:`/`sips:` URI that routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl SipUri {
    pub fn parse(uri: &str) -> Option<SipUri> {
        let rest = uri
            .strip_prefix("sip:")
            .or_else(|| uri.strip_prefix("sips:"))?;
        let rest = rest.split('?').next().unwrap_or(rest);
        let mut pieces = rest.split(';');
        let user_host = pieces.next()?;
        let (user, host_port) = match user_host.rsplit_once('@') {
            Some((u, h)) => (Some(u.split(':').next().unwrap_or(u).to_string()), h),
            None => (None, user_host),
        };
        let (host, port) = split_host_port(host_port)?;
        let params = pieces
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (p.to_string(), None),
            })
            .collect();
        Some(SipUri {
            user: user.filter(|u| !u.is_empty()),
            host,
            port,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Where to send a request for this URI when the host is an IP literal (we do no DNS).
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        let ip: std::net::IpAddr = self.host.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, self.port.unwrap_or(5060)))
    }

    pub fn transport(&self) -> &str {
        self.param("transport").unwrap_or("udp")
    }
}

pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Unknown",
    }
}
