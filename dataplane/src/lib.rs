//! Tandem's data plane: thread-per-core, shared-nothing RTP/RTCP relay.
//!
//! Start with [`engine::DataPlane::start`]; talk to each core through its [`engine::CoreHandle`].
//! This crate depends on nothing from the control plane and never on an async runtime.

pub mod api;
pub mod io;
