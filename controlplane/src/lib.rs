//! Tandem's control plane: the ng protocol server (so Kamailio/OpenSIPS can drive the data plane),
//! SIP (registrar and B2BUA with media anchored in the data plane), SDP rewriting, configuration
//! and Prometheus metrics.

pub mod acd_log;
pub mod api;
pub mod bencode;
pub mod cdr;
pub mod config;
pub mod http;
pub mod media;
pub mod metrics;
pub mod ng;
pub mod prompts;
pub mod quality;
pub mod sdp;
pub mod sip;
pub mod storage;
