//! The transaction layer, registrar and B2BUA fed hostile datagram sequences with time moving
//! on: no input may panic them. Datagrams are separated by 0xFF 0xFF in the fuzz input; the byte
//! after each separator advances the clock by that many hundred milliseconds. Numbers starting
//! with 3 go to an ACD queue (with a logged-in agent whose phone is not registered, so offers
//! are refused and callers wait, exit on max-wait or hang up).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_controlplane::sip::b2bua::{Action, Engine, MediaOp, Now};
use tandem_controlplane::sip::config::{RouteConfig, SipConfig, TenantConfig, TrunkConfig};
use tandem_controlplane::sip::metrics::SipMetrics;
use tandem_controlplane::sip::queues::{AcdOp, AgentAction, AgentDef, MembershipDef, QueueDef};
use tandem_controlplane::sip::transaction::{Peer, Transport};
use tandem_dataplane::api::SessionId;

fuzz_target!(|data: &[u8]| {
    let cfg = SipConfig {
        tenants: vec![TenantConfig { name: "t".into(), domain: "t.test".into(), max_calls: Some(5), country_code: Some("44".into()), transcode: None }],
        trunks: vec![TrunkConfig { name: "k".into(), tenant: "t".into(), address: "10.0.0.2:5060".parse().unwrap(), allow: vec!["10.0.0.1".into()], username: None, password: None, register: false, register_expires_s: 600, dtmf: Default::default() }],
        routes: vec![
            RouteConfig { tenant: "t".into(), pattern: "3*".into(), target: "queue:q".into() },
            RouteConfig { tenant: "t".into(), pattern: "*".into(), target: "trunk:k".into() },
        ],
        queues: vec![QueueDef { max_wait_s: Some(3), ..QueueDef::new("t", "q") }],
        agents: vec![AgentDef {
            tenant: "t".into(),
            name: "a".into(),
            user: "a".into(),
            skills: vec![],
            queues: vec![MembershipDef { queue: "q".into(), tier: 0, delay_s: 0, weight: 1 }],
        }],
        options_ping_s: 1,
        ..SipConfig::default()
    };
    let t0 = Instant::now();
    let mut engine = Engine::new(cfg, "192.0.2.1".parse().unwrap(), [1; 32], t0, Arc::new(SipMetrics::default()));
    let start = Now { mono: t0, unix_ms: 1_700_000_000_000 };
    let login = AcdOp::Agent { agent: "a".into(), action: AgentAction::Login };
    engine.acd_request(start, "t", login).expect("the agent logs in");
    let mut ms = 0u64;
    let peers = [
        Peer { transport: Transport::Udp, addr: "10.0.0.1:5060".parse().unwrap() },
        Peer { transport: Transport::Udp, addr: "10.0.0.2:5060".parse().unwrap() },
        Peer { transport: Transport::Tcp, addr: "10.0.0.3:5060".parse().unwrap() },
    ];
    let mut slot = 0u32;
    for (i, chunk) in data.split(|&b| b == 0xff).enumerate() {
        let (step, datagram) = chunk.split_first().map_or((0, chunk), |(s, d)| (*s, d));
        ms += u64::from(step) * 100;
        let now = Now { mono: t0 + Duration::from_millis(ms), unix_ms: 1_700_000_000_000 + ms };
        engine.receive(now, datagram, peers[i % peers.len()]);
        engine.on_timer(now);
        let actions: Vec<Action> = engine.drain().collect();
        for action in actions {
            if let Action::Media(MediaOp::Create { call, .. }) = action {
                slot += 1;
                let id = SessionId { core: 0, slot, generation: 1 };
                engine.media_created(now, call, Ok((id, [30000, 30004])));
            }
        }
        engine.drain().for_each(drop);
    }
});
