//! The UDP shell around [`NgHandler`]: one task, requests handled in arrival order (an answer
//! never overtakes its offer), core timeouts folded in between requests.

use super::handler::NgHandler;
use crate::media::{DataPlaneClient, TimedOut};
use crate::metrics::NgMetrics;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Largest ng datagram accepted (SDP offers with many codecs and ICE candidates fit easily).
const MAX_DATAGRAM: usize = 65_535;

pub async fn run(
    socket: UdpSocket,
    mut handler: NgHandler,
    media: Arc<DataPlaneClient>,
    mut timeouts: mpsc::Receiver<TimedOut>,
    metrics: Arc<NgMetrics>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                let unix_us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
                let handled = handler.handle(Instant::now(), unix_us, &buf[..n], &*media).await;
                if handled.cached {
                    metrics.cached.fetch_add(1, Relaxed);
                } else if handled.reply.is_none() {
                    metrics.unanswerable.fetch_add(1, Relaxed);
                } else {
                    metrics.count(handled.command, handled.ok);
                }
                if let Some(reply) = handled.reply {
                    if let Err(e) = socket.send_to(&reply, from).await {
                        tracing::debug!("ng reply to {from} failed: {e}");
                    }
                }
            }
            Some((id, _stats)) = timeouts.recv() => {
                handler.timed_out(id, &*media).await;
            }
        }
    }
}
