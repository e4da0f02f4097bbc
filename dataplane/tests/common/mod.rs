//! Helpers the data plane's socket tests share: waiting for a core's events, commands
//! answered, local phones, and a counting allocator (`counting_alloc`).
#![allow(dead_code)]

pub mod counting_alloc;
pub mod phone;

use std::net::UdpSocket;
use std::time::{Duration, Instant};
use tandem_dataplane::api::{Command, Event};
use tandem_dataplane::io::IoKind;
use tandem_dataplane::{Config, CoreHandle, DataPlane};

/// A data plane of one core on `io`, ports `port_min..port_min + 400`, room for 10 sessions.
pub fn start_one_core(io: IoKind, port_min: u16) -> (DataPlane, CoreHandle) {
    start_one_core_in(io, port_min, port_min + 399)
}

/// A data plane of one core on `io`, ports `port_min..=port_max`, room for 10 sessions.
pub fn start_one_core_in(io: IoKind, port_min: u16, port_max: u16) -> (DataPlane, CoreHandle) {
    start_core(Config {
        cores: Some(1),
        port_min,
        port_max,
        io,
        sessions_per_core: Some(10),
        ..Config::default()
    })
}

/// A data plane of `cfg` (one core), and that core.
pub fn start_core(cfg: Config) -> (DataPlane, CoreHandle) {
    let mut dp = DataPlane::start(&cfg).expect("start data plane");
    let core = dp.take_cores().pop().unwrap();
    (dp, core)
}

/// The next event, skipping none; `None` after `wait`.
pub fn next_event(core: &mut CoreHandle, wait: Duration) -> Option<Event> {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(ev) = core.events.pop() {
            return Some(ev);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn call(core: &mut CoreHandle, cmd: Command) -> Event {
    core.send(cmd).expect("ring has room");
    next_event(core, Duration::from_secs(5)).expect("core did not answer")
}

/// A local phone's socket, reads timing out after `read_timeout`.
pub fn endpoint_with(read_timeout: Duration) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s
}
