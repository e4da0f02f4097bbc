//! Typed identifiers. The control plane maps names (queue "sales", agent "alice") to these;
//! the ACD only ever sees numbers, so lookups are cheap and nothing is parsed here.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id!(
    /// A tenant (BPO customer); queues and agents belong to exactly one.
    TenantId
);
id!(
    /// A queue.
    QueueId
);
id!(
    /// An agent (a person, with one voice channel).
    AgentId
);
id!(
    /// A contact (one caller's journey through queues, chosen by the shell).
    ContactId
);

/// A skill; proficiencies are stored in a dense table indexed by this, so ids stay below
/// `AcdConfig::max_skills`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SkillId(pub u16);

/// A break/pause reason code; the control plane maps codes to names ("lunch", "training").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u32);

impl ReasonCode {
    /// Set by the ACD when an agent missed `max_no_answer` offers in a row.
    pub const AUTO_PAUSE_NO_ANSWER: ReasonCode = ReasonCode(u32::MAX);
    /// Set by a supervisor's forced break when no reason was given.
    pub const SUPERVISOR: ReasonCode = ReasonCode(u32::MAX - 1);
}

/// Hasher for the id maps: ids are assigned by our own control plane (not by callers), so a
/// multiplicative hash is enough and costs one instruction where SipHash costs ~20 ns per lookup
/// on the routing path.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<IdHasher>>;
