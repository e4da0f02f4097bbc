//! The tenant's live calls as the engine has them, asked for through the API
//! (`AcdOp::Calls`): what a supervisor needs to pick a call to monitor, and what a wallboard
//! shows of calls in progress. Read from the engine's state alone; the shell adds each leg's
//! media quality from the data plane (`server.rs`) before it answers.

use super::super::queues::{AcdRefusal, AcdReply, LiveCallView, LiveLegView};
use super::*;

impl Engine {
    /// The live calls of `tenant` in the order they started, or the one `call` names (by its
    /// id, or a queued call by its contact id, as the monitor endpoint takes it).
    pub(super) fn live_calls(
        &self,
        tenant: &str,
        call: Option<u64>,
    ) -> Result<AcdReply, AcdRefusal> {
        let Some(named) = call else {
            let mut ids: Vec<CallId> = self
                .calls
                .iter()
                .filter(|(_, c)| c.tenant == tenant)
                .map(|(&id, _)| id)
                .collect();
            ids.sort_unstable();
            let views = ids
                .into_iter()
                .filter_map(|id| self.live_call(id))
                .collect();
            return Ok(AcdReply::Calls(views));
        };
        let id = self.call_of(ContactId(named));
        self.calls
            .get(&id)
            .filter(|c| c.tenant == tenant)
            .and_then(|_| self.live_call(id))
            .map(|view| AcdReply::Calls(vec![view]))
            .ok_or_else(|| AcdRefusal::NotFound(format!("no call {named}")))
    }

    fn live_call(&self, id: CallId) -> Option<LiveCallView> {
        let c = self.calls.get(&id)?;
        let state = match c.state {
            _ if c.awaiting_agent() => "queued",
            CallState::Media | CallState::Dialling => "ringing",
            // An SDP from the callee before its answer is early media.
            CallState::Calling if c.sdp[1].is_empty() => "ringing",
            CallState::Calling => "early",
            CallState::Queued => "queued",
            CallState::Answered => "answered",
            CallState::Ending => "ending",
        };
        let queue = c.queue.as_ref();
        let [a, b] = c.transcoding.leg_codecs();
        let leg = |codec: Option<&str>| LiveLegView {
            codec: codec.map(str::to_string),
            quality: None,
        };
        Some(LiveCallView {
            call: id,
            state: state.into(),
            direction: c.direction.into(),
            target: if c.awaiting_agent() {
                String::new()
            } else {
                c.target_uri.clone()
            },
            from: c.caller.clone(),
            to: c.dialled.clone(),
            queue: queue.and_then(|q| self.cc.queue_name(q.queue)),
            agent: queue
                .and_then(|q| q.agent)
                .and_then(|a| self.cc.agent_info.get(&a))
                .map(|info| info.name.clone()),
            started_unix_ms: c.started_unix_ms,
            answered_unix_ms: c.answered_unix_ms,
            legs: [leg(a), leg(b)],
            transcoded: c.transcoding.plan().is_some(),
            monitor: self.monitor_view(id),
        })
    }

    /// The data-plane session of a live call (its legs' quality is queried there).
    pub fn call_session(&self, call: CallId) -> Option<SessionId> {
        self.calls.get(&call)?.session
    }
}
