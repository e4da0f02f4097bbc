//! The call-record writer: takes finished calls from the SIP shell, commits them to storage in
//! groups, then answers each job (releasing the held replies) and publishes `call.ended`.

use crate::api::events::EventHub;
use crate::sip::b2bua::CallRecord;
use crate::sip::server::CdrJob;
use crate::storage::{new_id, CallRecordRow, Storage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Jobs waiting for the writer; beyond it a record is counted as dropped (never expected: at
/// 3,000 calls/s a group commit every few milliseconds keeps this nearly empty).
pub const QUEUE: usize = 65_536;
/// Most records in one transaction.
const GROUP: usize = 512;

/// A call's per-leg media counters and reception quality as call records show them (API and
/// `/calls`), and `transcoding`: the codec of each leg when the data plane transcoded between
/// them (`{"caller": "PCMA", "callee": "G722"}`), `null` when it relayed as it is.
pub fn media_json(
    m: &tandem_dataplane::api::SessionStats,
    transcoded: Option<&[String; 2]>,
) -> serde_json::Value {
    let leg = |i: usize| {
        serde_json::json!({
            "rtp_packets_received": m.legs[i].rtp.packets,
            "rtp_bytes_received": m.legs[i].rtp.bytes,
            "rtcp_packets_received": m.legs[i].rtcp.packets,
            "quality": crate::quality::json(&m.legs[i].quality),
        })
    };
    let transcoding = transcoded
        .map(|[caller, callee]| serde_json::json!({ "caller": caller, "callee": callee }));
    serde_json::json!({ "caller": leg(0), "callee": leg(1), "transcoding": transcoding })
}

pub fn row(r: &CallRecord) -> CallRecordRow {
    let media = r
        .media
        .as_ref()
        .and_then(|m| serde_json::value::to_raw_value(&media_json(m, r.transcoded.as_ref())).ok());
    let duration_ms = r
        .answered_unix_ms
        .map_or(0, |a| r.ended_unix_ms.saturating_sub(a)) as i64;
    CallRecordRow {
        id: new_id(),
        tenant: r.tenant.clone(),
        direction: r.direction.to_string(),
        caller: r.caller.clone(),
        dialled: r.dialled.clone(),
        target: r.target.clone(),
        caller_call_id: r.a_call_id.clone(),
        callee_call_id: r.b_call_id.clone(),
        started_ms: r.started_unix_ms as i64,
        answered_ms: r.answered_unix_ms.map(|v| v as i64),
        ended_ms: r.ended_unix_ms as i64,
        setup_ms: r.setup_ms.map(|v| v as i64),
        duration_ms,
        disposition: r.disposition.as_str().to_string(),
        final_code: r.final_code as i64,
        ended_by: r.ended_by.to_string(),
        codecs: r.codecs.clone(),
        media,
    }
}

pub async fn run_writer(storage: Storage, mut jobs: mpsc::Receiver<CdrJob>, events: Arc<EventHub>) {
    let mut batch: Vec<CdrJob> = Vec::with_capacity(GROUP);
    loop {
        if jobs.recv_many(&mut batch, GROUP).await == 0 {
            return;
        }
        let rows: Vec<CallRecordRow> = batch.iter().map(|j| row(&j.record)).collect();
        let mut wait = Duration::from_millis(50);
        // A record is never given up on: storage that is down is retried until it is back.
        while let Err(e) = storage.insert_call_records(&rows).await {
            tracing::error!(
                "storing {} call records failed: {e}; retrying in {wait:?}",
                rows.len()
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        for (job, row) in batch.drain(..).zip(rows) {
            let _ = job.done.send(());
            let tenant = row.tenant.clone();
            events.publish(
                &tenant,
                "call.ended",
                serde_json::to_value(&row).unwrap_or_default(),
            );
        }
    }
}
