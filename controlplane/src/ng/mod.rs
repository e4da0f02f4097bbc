//! The rtpengine ng control protocol: `<cookie> <bencode or JSON dictionary>` over UDP.
//!
//! `request` types a dictionary, `cache` remembers replies by cookie, `handler` decides (sans-IO
//! apart from the injected `Media`), `server` is the UDP shell.

pub mod cache;
pub mod handler;
pub mod request;
pub mod server;

#[cfg(test)]
mod tests;
