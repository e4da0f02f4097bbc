//! Events (calls offered, answered, ended; registrations) for WebSocket clients and webhooks.
//!
//! Every event gets a sequence number and is kept in a ring for the last minutes. A client
//! that reconnects with `?cursor=<last seq it saw>` is sent what it missed from the ring, then
//! the live stream; if the ring no longer reaches back that far it is told so with a `gap`
//! message rather than silently missing events.

use super::{ApiError, ApiState, Principal, EVERYONE};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub at_ms: i64,
    pub tenant: String,
    /// `call.offered`, `call.answered`, `call.ended`, `registration.changed`, `acd.<kind>`,
    /// `monitor.<change>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
}

pub struct EventHub {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Event>>,
    keep: Duration,
}

struct Ring {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    next_seq: u64,
}

impl EventHub {
    pub fn new(capacity: usize, keep: Duration) -> EventHub {
        EventHub {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.min(4096)),
                capacity,
                next_seq: 1,
            }),
            live: broadcast::channel(4096).0,
            keep,
        }
    }

    pub fn publish(&self, tenant: &str, kind: &str, data: serde_json::Value) -> u64 {
        let at_ms = crate::storage::now_ms();
        let Ok(mut ring) = self.ring.lock() else {
            return 0;
        };
        let event = Arc::new(Event {
            seq: ring.next_seq,
            at_ms,
            tenant: tenant.to_string(),
            kind: kind.to_string(),
            data,
        });
        ring.next_seq += 1;
        let horizon = at_ms - self.keep.as_millis() as i64;
        while ring.events.len() >= ring.capacity
            || ring.events.front().is_some_and(|e| e.at_ms < horizon)
        {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // Sent under the lock, so live order is sequence order.
        let _ = self.live.send(event.clone());
        event.seq
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// Events after `cursor` (all tenants; callers filter), and whether some were already
    /// dropped from the ring.
    pub fn since(&self, cursor: u64) -> (Vec<Arc<Event>>, bool) {
        let Ok(ring) = self.ring.lock() else {
            return (Vec::new(), true);
        };
        let oldest = ring.events.front().map_or(ring.next_seq, |e| e.seq);
        let gap = cursor + 1 < oldest && cursor != 0;
        let events = ring
            .events
            .iter()
            .filter(|e| e.seq > cursor)
            .cloned()
            .collect();
        (events, gap)
    }

    pub fn last_seq(&self) -> u64 {
        self.ring.lock().map(|r| r.next_seq - 1).unwrap_or(0)
    }
}

#[derive(Debug, Deserialize)]
pub struct EventQuery {
    /// Last sequence number the client saw; absent = only new events.
    pub cursor: Option<u64>,
    /// System administrators: one tenant's events only.
    pub tenant: Option<String>,
    /// For browsers, which cannot set headers on a WebSocket.
    #[allow(dead_code)]
    pub access_token: Option<String>,
}

/// `GET /api/v1/events` (WebSocket): the caller's tenant's events as JSON text messages.
pub async fn websocket(
    State(state): State<ApiState>,
    who: Principal,
    super::Params(q): super::Params<EventQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let tenant = match (&who.tenant, q.tenant) {
        (Some(own), _) => {
            who.require(own, EVERYONE)?;
            Some(own.clone())
        }
        (None, t) if who.is_system_admin() => t,
        (None, _) => return Err(ApiError::forbidden()),
    };
    let cursor = q.cursor.unwrap_or_else(|| state.events.last_seq());
    let hub = state.events.clone();
    Ok(upgrade.on_upgrade(move |socket| stream(socket, hub, tenant, cursor)))
}

async fn stream(mut socket: WebSocket, hub: Arc<EventHub>, tenant: Option<String>, cursor: u64) {
    let mine = |e: &Event| tenant.as_deref().is_none_or(|t| t == e.tenant);
    // Subscribe before replaying, so nothing falls between the two.
    let mut live = hub.subscribe();
    let mut last = cursor;
    let (backlog, gap) = hub.since(cursor);
    if gap && send_gap(&mut socket, cursor).await.is_err() {
        return;
    }
    for e in backlog.iter().filter(|e| mine(e)) {
        if send(&mut socket, e).await.is_err() {
            return;
        }
        last = e.seq;
    }
    if let Some(e) = backlog.last() {
        last = last.max(e.seq);
    }
    loop {
        tokio::select! {
            event = live.recv() => match event {
                Ok(e) => {
                    if e.seq <= last {
                        continue;
                    }
                    last = e.seq;
                    if mine(&e) && send(&mut socket, &e).await.is_err() {
                        return;
                    }
                }
                // Too slow for the live stream: catch up from the ring.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let (missed, gap) = hub.since(last);
                    if gap && send_gap(&mut socket, last).await.is_err() {
                        return;
                    }
                    for e in missed.iter() {
                        last = e.seq;
                        if mine(e) && send(&mut socket, e).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send(socket: &mut WebSocket, e: &Event) -> Result<(), axum::Error> {
    let text = serde_json::to_string(e).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

async fn send_gap(socket: &mut WebSocket, after: u64) -> Result<(), axum::Error> {
    let text = serde_json::json!({"type": "gap", "after": after,
        "message": "events after this cursor are no longer kept; resynchronise from the REST API"})
    .to_string();
    socket.send(Message::Text(text.into())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_order_and_reports_gaps() {
        let hub = EventHub::new(3, Duration::from_secs(600));
        for i in 0..5 {
            hub.publish("acme", "call.ended", serde_json::json!({ "i": i }));
        }
        let (events, gap) = hub.since(3);
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert!(!gap);
        let (events, gap) = hub.since(1);
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert!(gap, "seq 2 was dropped");
        assert_eq!(hub.last_seq(), 5);
    }
}
