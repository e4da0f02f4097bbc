//! SIP: messages, transactions, registrar and the B2BUA (all sans-IO), and the socket shell
//! (UDP, TCP, TLS).

pub mod b2bua;
pub mod config;
pub mod digest;
pub mod message;
pub mod metrics;
pub mod queues;
pub mod registrar;
pub mod server;
pub mod tls;
pub mod transaction;

#[cfg(test)]
mod tests;
