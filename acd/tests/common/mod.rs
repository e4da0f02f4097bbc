//! Test harness: drives an `Acd` with a manual clock, collects outputs, checks invariants after
//! every step.
#![allow(dead_code)]

use tandem_acd::*;

pub const T: TenantId = TenantId(1);

pub fn queue(id: u64) -> QueueConfig {
    let mut q = QueueConfig::new(QueueId(id), T);
    q.reject_delay_ms = 0;
    q.no_answer_delay_ms = 0;
    q
}

pub fn agent(id: u64, queues: &[u64], skills: &[(u16, u8)]) -> AgentConfig {
    AgentConfig {
        id: AgentId(id),
        tenant: T,
        skills: skills.iter().map(|&(s, p)| (SkillId(s), p)).collect(),
        memberships: queues
            .iter()
            .map(|&q| Membership::new(QueueId(q)))
            .collect(),
    }
}

pub fn req(id: u64, queue: u64) -> ContactRequest {
    ContactRequest {
        id: ContactId(id),
        queue: QueueId(queue),
        priority: 0,
        skills: Vec::new(),
        data: vec![("account".into(), "42".into())],
        caller_key: None,
    }
}

pub struct H {
    pub acd: Acd,
    pub now: u64,
    pub out: Vec<Output>,
}

impl H {
    pub fn new(queues: Vec<QueueConfig>, agents: Vec<AgentConfig>) -> H {
        Self::with(AcdConfig {
            queues,
            agents,
            ..AcdConfig::default()
        })
    }

    pub fn with(cfg: AcdConfig) -> H {
        H {
            acd: Acd::new(cfg).expect("config"),
            now: 0,
            out: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.acd.poll_output() {
            self.out.push(o);
        }
        if let Err(e) = self.acd.check_invariants() {
            panic!("invariant broken at {} ms: {e}", self.now);
        }
    }

    pub fn try_do(&mut self, i: Input) -> Result<(), AcdError> {
        let r = self.acd.handle(self.now, i);
        self.drain();
        r
    }

    pub fn ok(&mut self, i: Input) {
        let dbg = format!("{i:?}");
        self.try_do(i).unwrap_or_else(|e| panic!("{dbg}: {e}"));
    }

    /// A run-time reconfiguration call at the current time, then the outputs and invariants.
    pub fn conf(
        &mut self,
        f: impl FnOnce(&mut Acd, u64) -> Result<(), AcdError>,
    ) -> Result<(), AcdError> {
        let r = f(&mut self.acd, self.now);
        self.drain();
        r
    }

    pub fn login(&mut self, a: u64) {
        self.ok(Input::Login { agent: AgentId(a) });
    }

    pub fn enter(&mut self, r: ContactRequest) {
        self.ok(Input::Enter(r));
    }

    /// Moves the clock to `now + ms`, firing every deadline on the way in order.
    pub fn advance(&mut self, ms: u64) {
        let target = self.now + ms;
        while let Some(at) = self.acd.poll_timeout() {
            if at > target {
                break;
            }
            self.now = self.now.max(at);
            self.acd.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
        self.acd.handle_timeout(target);
        self.drain();
    }

    pub fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// The (contact, agents) of every Offer since the last `take`.
    pub fn offers(&self) -> Vec<(u64, Vec<u64>)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Offer {
                    contact, agents, ..
                } => Some((contact.0, agents.iter().map(|a| a.0).collect())),
                _ => None,
            })
            .collect()
    }

    pub fn events(&self) -> Vec<EventKind> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e.kind.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn state(&self, a: u64) -> AgentState {
        self.acd.agent_status(AgentId(a)).unwrap().state
    }

    /// Answers and immediately hangs up `contact` on `agent` (wrap-up 0 returns it to Available).
    pub fn serve(&mut self, contact: u64, agent: u64) {
        self.ok(Input::Answer {
            agent: AgentId(agent),
            contact: ContactId(contact),
        });
        self.ok(Input::Hangup {
            contact: ContactId(contact),
            by: Party::Caller,
        });
    }
}
