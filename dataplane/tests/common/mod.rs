//! Helpers shared by the integration tests that include `mod common;`.

pub mod counting_alloc;
