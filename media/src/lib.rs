//! Tandem's media DSP: the per-frame building blocks of the data plane's media pipeline.
//!
//! Every type here is sans-IO and clock-free: frames and timestamps go in, results come out.
//! State (tables, scratch buffers, histories) is allocated when a value is constructed; the
//! per-frame methods never allocate (`tests/no_alloc.rs` checks it with a counting allocator).
//! The data-plane cores use [`g711`] (playback frames), [`rfc4733`] (DTMF events) and [`clip`]
//! (the clips they play, read at start); the rest is not wired into them yet.
#![forbid(unsafe_code)]

pub mod clip;
mod clip_ogg;
pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod g722;
pub mod mixer;
pub mod quality;
pub mod resample;
pub mod rfc4733;
pub mod tones;
