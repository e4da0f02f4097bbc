//! Bencode, as the ng protocol speaks it: a borrowing decoder that never panics on hostile input
//! and an encoder that writes dictionaries with sorted keys.
//!
//! Limits are explicit: nesting depth and element count are bounded so a crafted datagram cannot
//! exhaust the stack or memory.

use std::borrow::Cow;
use std::fmt;

/// Deepest nesting accepted. Real ng traffic nests four levels (delete stats); 32 is generous.
pub const MAX_DEPTH: usize = 32;
/// Most list/dict elements accepted in one document.
pub const MAX_ELEMENTS: usize = 65_536;

/// A dictionary entry: key bytes and value.
pub type Entry<'a> = (Cow<'a, [u8]>, Value<'a>);

#[derive(Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(Cow<'a, [u8]>),
    List(Vec<Value<'a>>),
    /// Keys in wire order; the decoder does not insist on sorted keys (Kamailio sends them sorted,
    /// other clients do not) but rejects duplicates.
    Dict(Vec<Entry<'a>>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unexpected end of input at byte {0}")]
    Eof(usize),
    #[error("unexpected byte {byte:#04x} at byte {at}")]
    Unexpected { byte: u8, at: usize },
    #[error("bad integer at byte {0}")]
    BadInt(usize),
    #[error("bad string length at byte {0}")]
    BadLength(usize),
    #[error("nesting deeper than {MAX_DEPTH} at byte {0}")]
    TooDeep(usize),
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("dictionary key is not a string at byte {0}")]
    KeyNotString(usize),
    #[error("duplicate dictionary key at byte {0}")]
    DuplicateKey(usize),
    #[error("{0} trailing bytes after the document")]
    Trailing(usize),
}

impl<'a> Value<'a> {
    pub fn bytes(b: impl Into<Cow<'a, [u8]>>) -> Self {
        Value::Bytes(b.into())
    }

    pub fn str(s: &'a str) -> Self {
        Value::Bytes(Cow::Borrowed(s.as_bytes()))
    }

    pub fn string(s: String) -> Value<'static> {
        Value::Bytes(Cow::Owned(s.into_bytes()))
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The value as UTF-8 text; `None` when it is not a string or not valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[Entry<'a>]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Looks a key up in a dictionary (linear: ng dictionaries have a few dozen keys at most).
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| k.as_ref() == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// Detaches the value from the buffer it was decoded from.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Int(i) => Value::Int(i),
            Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
            Value::List(l) => Value::List(l.into_iter().map(Value::into_owned).collect()),
            Value::Dict(d) => Value::Dict(
                d.into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::List(l) => f.debug_list().entries(l).finish(),
            Value::Dict(d) => f
                .debug_map()
                .entries(d.iter().map(|(k, v)| (String::from_utf8_lossy(k), v)))
                .finish(),
        }
    }
}

/// Builds a dictionary from `(key, value)` pairs; keys are sorted when encoded.
pub fn dict<'a>(pairs: impl IntoIterator<Item = (&'a str, Value<'a>)>) -> Value<'a> {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_bytes()), v))
            .collect(),
    )
}

/// Decodes exactly one document; trailing bytes are an error.
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    let mut d = Decoder {
        input,
        pos: 0,
        elements: 0,
    };
    let v = d.value(0)?;
    if d.pos != input.len() {
        return Err(DecodeError::Trailing(input.len() - d.pos));
    }
    Ok(v)
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    elements: usize,
}

impl<'a> Decoder<'a> {
    fn peek(&self) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Eof(self.pos))
    }

    fn count_element(&mut self) -> Result<(), DecodeError> {
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(DecodeError::TooManyElements);
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep(self.pos));
        }
        match self.peek()? {
            b'i' => self.int().map(Value::Int),
            b'0'..=b'9' => self.bytes().map(|b| Value::Bytes(Cow::Borrowed(b))),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    self.count_element()?;
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut items: Vec<(Cow<'a, [u8]>, Value<'a>)> = Vec::new();
                while self.peek()? != b'e' {
                    self.count_element()?;
                    let at = self.pos;
                    if !self.peek()?.is_ascii_digit() {
                        return Err(DecodeError::KeyNotString(at));
                    }
                    let key = self.bytes()?;
                    if items.iter().any(|(k, _)| k.as_ref() == key) {
                        return Err(DecodeError::DuplicateKey(at));
                    }
                    let v = self.value(depth + 1)?;
                    items.push((Cow::Borrowed(key), v));
                }
                self.pos += 1;
                Ok(Value::Dict(items))
            }
            byte => Err(DecodeError::Unexpected { byte, at: self.pos }),
        }
    }

    fn int(&mut self) -> Result<i64, DecodeError> {
        let start = self.pos;
        self.pos += 1; // 'i'
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'e')
            .ok_or(DecodeError::Eof(self.input.len()))?;
        let digits = &rest[..end];
        let valid = match digits {
            [] | [b'-'] => false,
            [b'-', b'0', ..] => false, // "-0" and "-05" are not canonical
            [b'0', _, ..] => false,    // leading zero
            [b'-', tail @ ..] | tail => tail.iter().all(u8::is_ascii_digit),
        };
        if !valid {
            return Err(DecodeError::BadInt(start));
        }
        // Safe: checked to be ASCII digits with an optional sign.
        let text = std::str::from_utf8(digits).map_err(|_| DecodeError::BadInt(start))?;
        let n = text
            .parse::<i64>()
            .map_err(|_| DecodeError::BadInt(start))?;
        self.pos += end + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let rest = &self.input[self.pos..];
        let colon = rest
            .iter()
            .take(20)
            .position(|&b| b == b':')
            .ok_or(DecodeError::BadLength(start))?;
        let digits = &rest[..colon];
        if digits.is_empty()
            || !digits.iter().all(u8::is_ascii_digit)
            || (digits.len() > 1 && digits[0] == b'0')
        {
            return Err(DecodeError::BadLength(start));
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(DecodeError::BadLength(start))?;
        let body_start = self.pos + colon + 1;
        let body_end = body_start
            .checked_add(len)
            .filter(|&e| e <= self.input.len())
            .ok_or(DecodeError::Eof(self.input.len()))?;
        self.pos = body_end;
        Ok(&self.input[body_start..body_end])
    }
}

/// Appends the encoding of `v` to `out`. Dictionary keys are written in sorted order, as bencode
/// requires.
pub fn encode_into(v: &Value<'_>, out: &mut Vec<u8>) {
    match v {
        Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::Bytes(b) => encode_bytes(b, out),
        Value::List(l) => {
            out.push(b'l');
            for item in l {
                encode_into(item, out);
            }
            out.push(b'e');
        }
        Value::Dict(d) => {
            let mut order: Vec<usize> = (0..d.len()).collect();
            order.sort_by(|&a, &b| d[a].0.cmp(&d[b].0));
            out.push(b'd');
            for i in order {
                encode_bytes(&d[i].0, out);
                encode_into(&d[i].1, out);
            }
            out.push(b'e');
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

pub fn encode(v: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_kamailio_ping() {
        let v = decode(b"d7:command4:pinge").unwrap();
        assert_eq!(v.get("command").and_then(Value::as_str), Some("ping"));
    }

    #[test]
    fn rejects_hostile_inputs() {
        for bad in [
            &b""[..],
            b"i",
            b"ie",
            b"i-e",
            b"i-0e",
            b"i03e",
            b"i99999999999999999999e",
            b"5:abc",
            b"99999999999999999999999:x",
            b"d3:keye",
            b"di1ei2ee",
            b"d1:ai1e1:ai2ee",
            b"x",
            b"i1ei2e",
            b"l",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "l".repeat(MAX_DEPTH + 2) + &"e".repeat(MAX_DEPTH + 2);
        assert_eq!(
            decode(deep.as_bytes()),
            Err(DecodeError::TooDeep(MAX_DEPTH + 1))
        );
    }

    #[test]
    fn encodes_sorted_keys() {
        let v = dict([("result", Value::str("pong")), ("a", Value::Int(-3))]);
        assert_eq!(encode(&v), b"d1:ai-3e6:result4:ponge");
    }

    fn arb_value() -> impl Strategy<Value = Value<'static>> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(|b| Value::Bytes(Cow::Owned(b))),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..8),
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Dict(
                    m.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trips(v in arb_value()) {
            let wire = encode(&v);
            prop_assert_eq!(decode(&wire).unwrap(), v);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
