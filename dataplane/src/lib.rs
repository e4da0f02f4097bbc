//! Tandem's data plane: thread-per-core, shared-nothing RTP/RTCP relay, with playback,
//! transcoding (G.711 ↔ Opus), supervisor monitoring (listen, whisper, barge) per session and
//! small conferences mixed on a core.
//!
//! Start with [`engine::DataPlane::start`]; talk to each core through its [`engine::CoreHandle`]
//! (commands in, events out, over bounded SPSC rings). This crate depends on nothing from the
//! control plane and never on an async runtime.

pub mod api;
pub mod clip;
pub mod conference;
mod core;
pub mod dtmf;
pub mod engine;
pub mod io;
pub mod mix;
pub mod monitor;
pub mod playback;
pub mod quality;
pub mod repacketise;
pub mod rtcp;
pub mod rtp;
pub mod session;
pub mod stats;
pub mod timer;
pub mod transcode;

pub use clip::Clip;
pub use engine::{Config, CoreHandle, DataPlane};
