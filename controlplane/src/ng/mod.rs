//! The rtpengine ng control protocol: `<cookie> <bencode or JSON dictionary>` over UDP.
//!
//! `request` types a dictionary, `codecs` turns its `codec` dictionary into SDP edits and the
//! data plane's codec plan, `cache` remembers replies by cookie, `handler` decides (sans-IO
//! apart from the injected `Media`), `server` is the UDP shell.

pub mod cache;
pub mod codecs;
pub mod handler;
pub mod request;
pub mod server;

#[cfg(test)]
mod tests;
