//! The queue event writer: takes what the SIP engine's ACD reports, publishes each event on the
//! API's event hub at once (`acd.<kind>`: the WebSocket stream, webhooks; `acd.offer` is the
//! screen-pop) and stores it in `queue_events` in group commits, like the call-record writer.
//!
//! Publishing does not wait for the commit: a screen-pop is only useful while the phone rings,
//! and storage that is down must not stop the live stream. The log is still complete: storing
//! is retried until it succeeds.

use crate::api::events::EventHub;
use crate::sip::queues::AcdEvent;
use crate::storage::{QueueEventRow, Storage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most events in one transaction.
const GROUP: usize = 512;

pub async fn run_writer(
    storage: Storage,
    mut events: mpsc::UnboundedReceiver<AcdEvent>,
    hub: Arc<EventHub>,
) {
    let (rows_tx, rows) = mpsc::unbounded_channel();
    let store = tokio::spawn(store(storage, rows));
    while let Some(e) = events.recv().await {
        let row = QueueEventRow::from_event(&e);
        hub.publish(
            &row.tenant,
            &format!("acd.{}", row.kind),
            serde_json::to_value(&row).unwrap_or_default(),
        );
        if rows_tx.send(row).is_err() {
            break;
        }
    }
    drop(rows_tx);
    let _ = store.await;
}

async fn store(storage: Storage, mut rows: mpsc::UnboundedReceiver<QueueEventRow>) {
    let mut batch = Vec::with_capacity(GROUP);
    loop {
        if rows.recv_many(&mut batch, GROUP).await == 0 {
            return;
        }
        let mut wait = Duration::from_millis(50);
        while let Err(e) = storage.insert_queue_events(&batch).await {
            tracing::error!(
                "storing {} queue events failed: {e}; retrying in {wait:?}",
                batch.len()
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        batch.clear();
    }
}
