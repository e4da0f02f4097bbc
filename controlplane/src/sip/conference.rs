//! Conference rooms: a route target `conference:<room>` answers each call routed there itself
//! and puts it in the tenant's room of that name, mixed on one data-plane core, where it hears
//! every other caller in the room and is heard by them.
//!
//! A room's id (`u32`, given out as calls first reach it; rooms are only those the routes
//! name) picks its core in the shell (`MediaOp::CreateInConference`), so every member's session
//! lives on the same core. Once the session is made, the caller is answered with our SDP (leg
//! A's port, the first codec of its offer the cores mix, and its telephone-event in that
//! codec's clock) and the session joins the room (`MediaOp::JoinConference`). The call is an
//! answered call with no leg B: BYE, media timeouts and the call record are the ordinary ones,
//! and deleting its session takes it out of the room (the core ends a room with its last
//! member). A join the core refuses ends the call with BYE.

use super::monitor::offered_leg_codec;
use super::transcoding::relayed_audio;
use super::*;
use crate::sdp::CodecEdit;

impl Engine {
    /// The id of `tenant`'s room `room`.
    pub(super) fn room_id(&mut self, tenant: &str, room: &str) -> u32 {
        let next = self.rooms.len() as u32;
        *self
            .rooms
            .entry((tenant.to_string(), room.to_string()))
            .or_insert(next)
    }

    /// A conference call's session is made: answer the caller and join the room (or refuse
    /// with 488 when its offer has no codec the cores mix).
    pub(super) fn answer_conference(&mut self, now: Now, call: CallId, conference: u32) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (offer, port, session) = (c.sdp[0].clone(), c.ports[0], c.session);
        let (Some(session), Some((codec, answer))) = (session, self.room_answer(&offer, port))
        else {
            self.fail_call(now, call, 488, Disposition::Failed, "system");
            return;
        };
        self.answer_with_our_sdp(now, call, answer);
        self.actions.push(Action::Media(MediaOp::JoinConference {
            call,
            session,
            conference,
            codec,
        }));
    }

    /// Our answer to a room member's `offer`: its first codec the cores mix (with its
    /// telephone-event, if offered) on leg A's `port`.
    fn room_answer(&self, offer: &str, port: u16) -> Option<(LegCodec, String)> {
        let codec = offered_leg_codec(offer, None)?;
        let sdp = Sdp::parse(offer).ok()?;
        let anchored = relayed_audio(&sdp)?;
        let keep: Vec<u8> = [Some(codec.payload_type), codec.event_payload_type]
            .into_iter()
            .flatten()
            .collect();
        let edit = CodecEdit {
            formats: keep.iter().map(u8::to_string).collect(),
            drop: sdp.media[anchored]
                .payload_formats()
                .iter()
                .map(|f| f.payload_type)
                .filter(|pt| !keep.contains(pt))
                .collect(),
            add: Vec::new(),
        };
        Some((
            codec,
            self.rewrite_parsed(&sdp, port, Some(anchored), Some(edit)),
        ))
    }

    /// The core answered a member's `JoinConference`: a refusal ends the call.
    pub fn conference_joined(&mut self, now: Now, call: CallId, result: Result<(), CoreError>) {
        if let Err(e) = result {
            tracing::warn!("call {call}: not joined to its room: {}", e.reason());
            if let Some(c) = self.calls.get_mut(&call) {
                c.ended_by = "system";
            }
            self.hang_up_both(now, call, None);
            self.pump(now);
        }
    }
}
