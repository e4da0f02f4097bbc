//! Agent states and the one table of legal transitions.

use crate::ids::ReasonCode;

/// Where an agent is. Every state except `LoggedOut` has an exit: `Available` ends by routing
/// or the agent's own input, `Break` by Ready/Logout, `Reserved`/`Ringing` by the ring timeout,
/// `OnCall` by the hang-up, `WrapUp` by its timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentState {
    LoggedOut,
    Available,
    Break(ReasonCode),
    /// Chosen for a contact; the shell is setting up the offer (or dialling a callback).
    Reserved,
    /// The agent's device is alerting.
    Ringing,
    OnCall,
    WrapUp,
}

impl AgentState {
    /// Whether `self → to` is a legal transition.
    pub fn can_go(self, to: AgentState) -> bool {
        use AgentState::*;
        match (self, to) {
            (LoggedOut, Available | Break(_)) => true,
            (Available, Reserved | Break(_) | LoggedOut) => true,
            (Break(a), Break(b)) => a != b,
            (Break(_), Available | LoggedOut) => true,
            (Reserved, Ringing | OnCall | Available | Break(_) | LoggedOut) => true,
            (Ringing, OnCall | Available | Break(_) | LoggedOut) => true,
            (OnCall, WrapUp | Available | Break(_) | LoggedOut) => true,
            (WrapUp, Available | Break(_) | LoggedOut) => true,
            _ => false,
        }
    }

    /// Logged in and not on break: counts towards a queue's staffing.
    pub fn is_staffed(self) -> bool {
        !matches!(self, AgentState::LoggedOut | AgentState::Break(_))
    }

    pub fn name(self) -> &'static str {
        match self {
            AgentState::LoggedOut => "logged-out",
            AgentState::Available => "available",
            AgentState::Break(_) => "break",
            AgentState::Reserved => "reserved",
            AgentState::Ringing => "ringing",
            AgentState::OnCall => "on-call",
            AgentState::WrapUp => "wrap-up",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AgentState::*;
    use super::*;

    #[test]
    fn transition_table() {
        let r = ReasonCode(1);
        assert!(LoggedOut.can_go(Available));
        assert!(!LoggedOut.can_go(OnCall));
        assert!(!Available.can_go(OnCall), "an offer comes first");
        assert!(!Available.can_go(Available));
        assert!(Break(r).can_go(Break(ReasonCode(2))));
        assert!(!Break(r).can_go(Break(r)));
        assert!(!OnCall.can_go(Reserved));
        assert!(!WrapUp.can_go(OnCall));
        assert!(Ringing.can_go(LoggedOut));
    }
}
