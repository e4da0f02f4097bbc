//! io_uring backend (being written).

use super::{Backend, BackendParams};
use std::io;

pub struct Uring;

impl Uring {
    pub fn new(_params: BackendParams) -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring backend not built yet",
        ))
    }
}

impl Backend for Uring {
    fn name(&self) -> &'static str {
        "uring"
    }
    fn open(&mut self, _slot: u32, _addr: std::net::SocketAddr) -> io::Result<()> {
        unreachable!()
    }
    fn close(&mut self, _slot: u32) {}
    fn connect(&mut self, _slot: u32, _peer: Option<std::net::SocketAddr>) -> io::Result<()> {
        unreachable!()
    }
    fn receive(
        &mut self,
        _rx: &mut super::RxBatch,
        _timeout: Option<std::time::Duration>,
    ) -> io::Result<()> {
        unreachable!()
    }
    fn send(&mut self, _tx: &mut super::TxBatch) -> super::SendReport {
        unreachable!()
    }
}
