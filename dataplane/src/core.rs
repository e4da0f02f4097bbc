//! One data-plane core: its thread's loop, and everything it owns.
//!
//! The loop: drain commands → wait for datagrams (or the next timer tick, the next playback
//! frame, or a wake) → decide each packet's fate → queue the playback frames due → send the
//! batch → report DTMF keys → run due timers → publish counters. It never blocks on anything
//! but the backend's wait, never allocates after start, and never takes a lock.

use crate::api::{
    ClipSequence, Command, CoreError, Event, LegCodec, LegIndex, LegParams, MonitorMode, SessionId,
    PLAY_ONCE_ONLY,
};
use crate::clip::{law_of_payload_type, Clip};
use crate::conference::{Conferences, JoinError, MAX_MEMBERS};
use crate::io::{signal_eventfd, Backend, RxBatch, TxBatch};
use crate::monitor::{self, AttachError, Monitors};
use crate::playback::{Player, Players, MAX_BURST};
use crate::rtcp::{ntp_compact, write_report, Report, WallClock};
use crate::session::{Sessions, TimerAction, Verdict, PORTS_PER_SESSION};
use crate::stats::{CoreStats, Counters, DropReason};
use crate::timer::TimerWheel;
use crate::transcode::{Skip, Transcoder, Transcoders};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

/// How often each session's timer runs: inactivity and unlatch checks.
const SESSION_CHECK_NS: u64 = 1_000_000_000;
const WHEEL_TICK_NS: u64 = 100_000_000;
const WHEEL_SLOTS: usize = 64;
/// In `Core::to_mix`: the packet is for the mix only (not relayed), so one the mix cannot take
/// is a drop.
const MIX_ONLY: u32 = 1 << 31;
/// Binding retries on other slots when a port is taken by another process.
const BIND_ATTEMPTS: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct CoreConfig {
    pub id: u16,
    pub bind: IpAddr,
    /// First port of this core's range (even). Session `s` owns `base + 4s ..= base + 4s + 3`.
    pub base_port: u16,
    /// Sessions the slab holds (range length / 4).
    pub capacity: u32,
    /// Sessions admitted at once; more are refused with `load limit`.
    pub budget: u32,
    pub batch: usize,
    pub timeout_ms: u64,
    pub relatch_ms: u64,
    pub max_packet_age_ms: u64,
    /// Mean interval of our RTCP reports per transcoded leg (randomised ×0.5–1.5).
    pub rtcp_interval_ms: u64,
}

pub struct Core {
    cfg: CoreConfig,
    backend: Box<dyn Backend>,
    commands: rtrb::Consumer<Command>,
    events: rtrb::Producer<Event>,
    /// eventfd signalled when events were pushed (the control plane waits on it).
    notify_fd: RawFd,
    stats: Arc<CoreStats>,
    sessions: Sessions,
    /// Free session slots, oldest-freed first: a just-closed slot (and its ports) is reused last,
    /// so late datagrams for an ended call don't land in a new one.
    free: std::collections::VecDeque<u32>,
    wheel: TimerWheel,
    rx: RxBatch,
    tx: TxBatch,
    /// Kernel receive time of each datagram queued in `tx`, for the latency histogram.
    tx_rx_ns: Vec<u64>,
    /// Last SO_RXQ_OVFL value seen per socket, to count kernel drops as deltas.
    socket_drops: Box<[u32]>,
    counters: Counters,
    events_pushed: bool,
    /// The clips `Play` may name, encoded at start; shared read-only with the other cores.
    clips: Arc<[Arc<Clip>]>,
    players: Players,
    /// One slot per session leg, filled by `SetCodecs` when the legs' codecs differ.
    transcoders: Transcoders,
    /// Supervisors attached to calls, and their mixes.
    monitors: Monitors,
    conferences: Conferences,
    /// Packets of this batch to decode for a supervisor's mix once the relayed ones are sent:
    /// indices into `rx`, [`MIX_ONLY`] set for those that go nowhere else.
    to_mix: Vec<u32>,
    /// SplitMix64 state for playback SSRCs and initial sequence numbers and timestamps.
    rng: u64,
    /// A packet whose audio is replaced by silence (blocked DTMF) before it is transcoded.
    silenced: Box<[u8]>,
    /// One slot per session leg, filled by `SendDtmf`.
    dtmf_senders: crate::dtmf::Senders,
    /// When each leg of a transcoded session (`index * 2 + leg`) gets its next RTCP report.
    rtcp_timers: TimerWheel,
    /// NTP time for the reports, from the monotonic clock (no syscall per report).
    wall: WallClock,
    /// Our CNAME in every report: one per core, fixed at start.
    cname: Box<[u8]>,
}

pub(crate) fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Writes `packet` into `out` with its RTP payload replaced by the G.711 code `silence`
/// (blocked DTMF): header, sequence and timestamp stay, so the stream runs on unbroken.
fn silenced(packet: &[u8], silence: u8, out: &mut [u8]) -> Result<usize, ()> {
    let payload = crate::rtp::rtp_payload(packet).ok_or(())?;
    let out = out.get_mut(..packet.len()).ok_or(())?;
    out.copy_from_slice(packet);
    let start = payload.as_ptr() as usize - packet.as_ptr() as usize;
    out[start..start + payload.len()].fill(silence);
    Ok(packet.len())
}

/// Queues one mixed packet to leg `leg` of session `index`; false when it cannot go (no peer
/// address yet, or the leg is being played a clip, which it hears instead of the mix).
fn send_mixed(
    sessions: &Sessions,
    tx: &mut TxBatch,
    index: u32,
    leg: LegIndex,
    header: &[u8],
    payload: &[u8],
) -> bool {
    if sessions
        .get(index)
        .is_none_or(|s| s.legs[leg as usize].playing)
    {
        return false;
    }
    match sessions.play_target(index, leg) {
        Some((slot, dest)) => tx.push_played(slot, dest, header, payload),
        None => false,
    }
}

fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes a timespec we own; through the vDSO, no syscall.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Core {
    pub fn new(
        cfg: CoreConfig,
        backend: Box<dyn Backend>,
        commands: rtrb::Consumer<Command>,
        events: rtrb::Producer<Event>,
        notify_fd: RawFd,
        stats: Arc<CoreStats>,
        clips: Arc<[Arc<Clip>]>,
    ) -> Self {
        let slots = cfg.capacity * PORTS_PER_SESSION;
        let start_ns = monotonic_ns();
        // Distinct per core and per start; nothing depends on it but stream identities.
        let rng = realtime_ns() ^ (cfg.id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Core {
            players: Players::new(cfg.capacity),
            transcoders: Transcoders::new(cfg.capacity),
            monitors: Monitors::new(cfg.capacity),
            conferences: Conferences::new(cfg.capacity),
            to_mix: Vec::with_capacity(cfg.batch),
            clips,
            silenced: vec![0; crate::io::PACKET_CAPACITY].into_boxed_slice(),
            dtmf_senders: crate::dtmf::Senders::new(cfg.capacity),
            rng,
            rtcp_timers: TimerWheel::new(
                cfg.capacity as usize * 2,
                WHEEL_SLOTS,
                WHEEL_TICK_NS,
                start_ns,
            ),
            wall: WallClock::now(start_ns),
            cname: format!("tandem-{}-{:08x}", cfg.id, rng as u32 ^ (rng >> 32) as u32)
                .into_bytes()
                .into_boxed_slice(),
            sessions: Sessions::new(cfg.id, cfg.capacity, cfg.base_port),
            free: (0..cfg.capacity).collect(),
            wheel: TimerWheel::new(cfg.capacity as usize, WHEEL_SLOTS, WHEEL_TICK_NS, start_ns),
            rx: RxBatch::new(cfg.batch),
            tx: TxBatch::new(cfg.batch),
            tx_rx_ns: Vec::with_capacity(cfg.batch),
            socket_drops: vec![0; slots as usize].into_boxed_slice(),
            counters: Counters::default(),
            events_pushed: false,
            cfg,
            backend,
            commands,
            events,
            notify_fd,
            stats,
        }
    }

    /// Runs until a `Shutdown` command arrives or the command ring is abandoned.
    pub fn run(mut self) {
        loop {
            if !self.drain_commands() {
                break;
            }
            // Everything the last pass did becomes visible before the core may sleep.
            self.stats.publish(&self.counters);
            if self.events_pushed {
                self.events_pushed = false;
                signal_eventfd(self.notify_fd);
            }
            let now = monotonic_ns();
            let hint = [
                self.wheel.sleep_hint_ns(now),
                self.players.sleep_hint_ns(now),
                self.monitors.sleep_hint_ns(now),
                self.conferences.sleep_hint_ns(now),
                self.rtcp_timers.sleep_hint_ns(now),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = hint.map(Duration::from_nanos);
            if self.backend.receive(&mut self.rx, timeout).is_err() {
                // epoll/io_uring wait failed (EBADF would mean a bug): don't spin hot on it.
                std::thread::sleep(Duration::from_millis(1));
            }
            self.counters.loop_wakeups += 1;
            // A command that woke the core (or arrived while it waited) applies before the packets
            // received with it: the control plane sends a leg's new address before it lets the
            // peer know where to send (the 200 OK), so that peer's first packet must find it.
            if !self.drain_commands() {
                break;
            }
            let now = monotonic_ns();
            self.relay_batch(now);
            if !self.to_mix.is_empty() {
                // What was relayed leaves before anything is decoded for a supervisor.
                self.flush();
                self.feed_mix();
            }
            self.play(now);
            self.mix(now);
            self.send_reports(now);
            self.flush();
            self.report_dtmf();
            self.run_timers(now);
        }
        for index in 0..self.sessions.capacity() {
            if self.sessions.get(index).is_some() {
                self.close_session(index);
            }
        }
        self.stats.publish(&self.counters);
    }

    fn relay_batch(&mut self, now: u64) {
        let oldest_fresh_ns = realtime_ns().saturating_sub(self.cfg.max_packet_age_ms * 1_000_000);
        for i in 0..self.rx.len() {
            let meta = *self.rx.meta(i);
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += meta.len as u64;
            if let Some(total) = meta.socket_drops {
                let last = &mut self.socket_drops[meta.slot as usize];
                self.counters
                    .drop(DropReason::SocketOverflow, total.wrapping_sub(*last) as u64);
                *last = total;
            }
            if meta.truncated {
                self.counters.drop(DropReason::Truncated, 1);
                continue;
            }
            if meta.rx_realtime_ns != 0 && meta.rx_realtime_ns < oldest_fresh_ns {
                self.counters.drop(DropReason::Stale, 1);
                continue;
            }
            let verdict = self
                .sessions
                .on_packet(meta.slot, meta.src, self.rx.packet(i), now);
            match verdict {
                Verdict::Drop(reason) => self.counters.drop(reason, 1),
                Verdict::DropLatched { reason, latch } => {
                    self.latch(meta.slot, latch);
                    self.counters.drop(reason, 1);
                }
                Verdict::Forward {
                    out_slot,
                    dest,
                    latch,
                } => {
                    if let Some(peer) = latch {
                        self.latch(meta.slot, peer);
                    }
                    if self.tx.is_full() {
                        self.flush();
                    }
                    let packet = self.rx.packet(i);
                    let pushed = match self.sessions.blocked_tone() {
                        None => self.tx.push(out_slot, dest, packet),
                        Some(silence) => self
                            .tx
                            .push_with(out_slot, dest, |buf| silenced(packet, silence, buf))
                            .unwrap_or(false),
                    };
                    debug_assert!(pushed);
                    self.tx_rx_ns.push(meta.rx_realtime_ns);
                    self.send_dtmf_in(out_slot);
                    self.tap(meta.slot, i);
                }
                Verdict::Consumed { latch } => {
                    if let Some(peer) = latch {
                        self.latch(meta.slot, peer);
                    }
                    self.counters.rtcp_terminated += 1;
                }
                // The packet's slot names its session and leg, as `in_key` does.
                Verdict::Mix { latch, .. } => {
                    if let Some(peer) = latch {
                        self.latch(meta.slot, peer);
                    }
                    self.to_mix.push(i as u32 | MIX_ONLY);
                }
                Verdict::Transcode {
                    out_slot,
                    dest,
                    latch,
                    in_key,
                } => {
                    if let Some(peer) = latch {
                        self.latch(meta.slot, peer);
                    }
                    // Packets lost just before this one, stood in for by the decoder (Opus
                    // and G.729 senders, short gaps; the last one from this packet's in-band
                    // FEC behind Opus), go out first.
                    let missing = self.transcoders.missing(in_key, self.rx.packet(i)) as usize;
                    if self.tx.room() < missing + 1 {
                        self.flush();
                    }
                    for _ in 0..missing {
                        let (transcoders, next) = (&mut self.transcoders, self.rx.packet(i));
                        match self
                            .tx
                            .push_with(out_slot, dest, |buf| transcoders.conceal(in_key, next, buf))
                        {
                            Ok(true) => self.on_transcoded(in_key, meta.rx_realtime_ns, now),
                            // Repacketising: the audio is held for a later packet; DTX: the
                            // encoder sends nothing for it.
                            Err(Skip::Held | Skip::Untransmitted) => {}
                            // A batch smaller than the gap, or nothing to conceal with.
                            Ok(false) | Err(_) => break,
                        }
                    }
                    let mut packet = self.rx.packet(i);
                    if let Some(silence) = self.sessions.blocked_tone() {
                        // The tone must not reach the transcoder's output either.
                        let n = silenced(packet, silence, &mut self.silenced).unwrap_or(0);
                        packet = &self.silenced[..n];
                    }
                    let transcoders = &mut self.transcoders;
                    match self.tx.push_with(out_slot, dest, |buf| {
                        transcoders.process(in_key, packet, buf)
                    }) {
                        Ok(pushed) => {
                            debug_assert!(pushed);
                            self.send_dtmf_in(out_slot);
                            self.on_transcoded(in_key, meta.rx_realtime_ns, now);
                        }
                        Err(Skip::Held | Skip::Untransmitted) => {}
                        Err(_) => self.counters.drop(DropReason::Transcode, 1),
                    }
                    // Repacketising: the further packets this one finished (a 60 ms packet
                    // towards a 20 ms receiver makes three).
                    while self.transcoders.queued(in_key) > 0 {
                        if self.tx.is_full() {
                            self.flush();
                        }
                        let transcoders = &mut self.transcoders;
                        match self
                            .tx
                            .push_with(out_slot, dest, |buf| transcoders.pop(in_key, buf))
                        {
                            Ok(true) => self.on_transcoded(in_key, meta.rx_realtime_ns, now),
                            Ok(false) | Err(_) => break,
                        }
                    }
                    self.tap(meta.slot, i);
                }
            }
        }
    }

    /// Books the packet just queued from `key`'s transcoder: its receive time for the latency
    /// histogram, and what our stream sent (for our RTCP).
    fn on_transcoded(&mut self, key: u32, rx_realtime_ns: u64, now: u64) {
        self.tx_rx_ns.push(rx_realtime_ns);
        if let Some(packet) = self.tx.last() {
            self.transcoders.on_sent(key, packet, now);
        }
    }

    /// Queues the RTCP reports due at `now` (legs of transcoded sessions) and schedules each
    /// leg's next one.
    fn send_reports(&mut self, now: u64) {
        let mut due = [0u32; 256];
        loop {
            let n = self.rtcp_timers.take_due(now, &mut due);
            for &key in &due[..n] {
                if self.send_report(key, now) {
                    let next = now + self.rtcp_interval_ns();
                    self.rtcp_timers.schedule(key, next);
                }
            }
            if n < due.len() {
                break;
            }
        }
    }

    /// Queues our report to the peer of leg `key` (`index * 2 + leg`): an SR about our
    /// stream to it (an RR before we sent any), a block about its stream to us, our CNAME.
    /// False when we no longer originate what the leg hears (no more reports).
    fn send_report(&mut self, key: u32, now: u64) -> bool {
        let (index, leg) = (key / 2, crate::dtmf::leg_index(key));
        // What the leg hears: a clip played to it (G.711, 8 kHz), else a supervisor's mix,
        // else the other leg's transcoded stream.
        let (ssrc, sent, clock_hz) = if let Some(p) = self.players.find(key) {
            (p.ssrc, p.sent, 8_000)
        } else if let Some(mixed) = self.monitors.stream_to(index, leg) {
            mixed
        } else if let Some(mixed) = self.conferences.stream_to(index, leg) {
            mixed
        } else if let Some(t) = self.transcoders.get(key ^ 1) {
            (t.ssrc(), *t.sent(), t.out_clock_hz())
        } else {
            return false;
        };
        let Some((slot, dest)) = self.sessions.rtcp_target(index, leg) else {
            return true;
        };
        let ntp = self.wall.ntp(now);
        let sender = sent.sender_info(ntp, now, clock_hz);
        let block = self.sessions.report_block(index, leg, now);
        if self.tx.is_full() {
            self.flush();
        }
        let report = Report {
            ssrc,
            sender,
            block,
            cname: &self.cname,
        };
        let written = self
            .tx
            .push_generated_with(slot, dest, |buf| write_report(&report, buf).ok_or(()));
        if written == Ok(true) {
            self.counters.rtcp_sent += 1;
            if sender.is_some() {
                self.sessions
                    .on_our_sender_report(index, leg, ssrc, ntp_compact(ntp), now);
            }
        }
        true
    }

    /// Starts leg `key`'s reports unless they run already.
    fn arm_reports(&mut self, key: u32, now: u64) {
        if !self.rtcp_timers.is_scheduled(key) {
            let first = now + self.rtcp_interval_ns();
            self.rtcp_timers.schedule(key, first);
        }
    }

    /// The time to a leg's next report: the configured interval × a random 0.5–1.5 (RFC 3550
    /// §6.3), so reports of calls set up together spread out.
    fn rtcp_interval_ns(&mut self) -> u64 {
        let mean = self.cfg.rtcp_interval_ms * 1_000_000;
        mean / 2 + self.random() % mean
    }

    /// Queues the playback frames due at `now`: up to [`MAX_BURST`] per playing leg (after a
    /// stall the older ones are skipped), to the leg's latched or signalled address. Players
    /// that finished (play-once sequences past their last frame) are stopped and reported.
    fn play(&mut self, now: u64) {
        let due = self.players.due(now);
        if due == 0 {
            return;
        }
        let send = due.min(MAX_BURST).min(self.tx.capacity() as u32);
        // One reference count per pass, so the loop may borrow the core mutably.
        let clips = self.clips.clone();
        let mut any_finished = false;
        for i in 0..self.players.len() {
            if self.tx.room() < send as usize {
                self.flush();
            }
            let mut p = self.players.get(i);
            let frames_of = |c: u16| clips[c as usize].frames();
            match self.sessions.play_target(p.session(), p.leg()) {
                // No address for the peer yet: time passes for the stream all the same.
                None => p.skip(due, frames_of),
                Some((slot, dest)) => {
                    p.skip(due - send, frames_of);
                    for _ in 0..send {
                        if p.finished {
                            break;
                        }
                        let (header, clip, frame) = p.next_packet(frames_of);
                        let payload = clips[clip as usize].frame(p.law, frame);
                        let pushed = self.tx.push_played(slot, dest, &header, payload);
                        debug_assert!(pushed, "room was made above");
                        // Keys sent to a leg on hold music ride in the music's stream.
                        self.send_dtmf_in(slot);
                        if let Some(packet) = self.tx.last() {
                            let audio = packet[1] & 0x7f == p.payload_type;
                            p.sent.on_sent(packet, audio, now);
                        }
                    }
                }
            }
            any_finished |= p.finished;
            self.players.set(i, p);
        }
        if any_finished {
            self.end_finished_players(now);
        }
    }

    /// Stops every finished player as `StopPlay` would (relaying to its leg resumes) and
    /// reports `PlayDone`. `Players::stop` moves the last player into the freed place, so
    /// that place is looked at again.
    fn end_finished_players(&mut self, now: u64) {
        let mut i = 0;
        while i < self.players.len() {
            let p = self.players.get(i);
            if !p.finished {
                i += 1;
                continue;
            }
            let (index, leg) = (p.session(), p.leg());
            self.players.stop(p.key);
            self.sessions.set_playing(index, leg, false);
            let id = self.sessions.id(index);
            self.push_event(Event::PlayDone {
                id,
                leg,
                at_ns: now,
            });
        }
    }

    /// A packet relayed on a monitored call is also decoded for its supervisor's mix (listen,
    /// and the agent's voice in whisper), after the batch is sent.
    fn tap(&mut self, slot: u32, i: usize) {
        if self.monitors.is_empty() || slot % 2 == 1 {
            return;
        }
        if self.monitors.contains(slot / PORTS_PER_SESSION) {
            self.to_mix.push(i as u32);
        }
    }

    /// Decodes the batch's packets for the supervisors' mixes. A tapped packet the mix cannot
    /// take (an event, muxed RTCP) was relayed all the same, so that is no drop.
    fn feed_mix(&mut self) {
        for &entry in &self.to_mix {
            let i = (entry & !MIX_ONLY) as usize;
            let slot = self.rx.meta(i).slot;
            let (index, leg) = (
                slot / PORTS_PER_SESSION,
                (slot % PORTS_PER_SESSION / 2) as usize,
            );
            let fed = if self.conferences.contains(index) {
                self.conferences.feed(index, self.rx.packet(i))
            } else {
                self.monitors.feed(index, leg, self.rx.packet(i))
            };
            if fed.is_err() && entry & MIX_ONLY != 0 {
                self.counters.drop(DropReason::Mix, 1);
            }
        }
        self.to_mix.clear();
    }

    /// Mixes the supervisor and conference frames due at `now` (up to [`MAX_BURST`] per mix
    /// after a stall, as playback) and queues them to each listener of a mix.
    fn mix(&mut self, now: u64) {
        let due = self.monitors.due(now);
        if due > 0 {
            let frames = due.min(MAX_BURST);
            for i in 0..self.monitors.len() {
                self.monitors.skip(i, due - frames);
                for _ in 0..frames {
                    // A frame sends at most three packets (caller, agent, supervisor).
                    if self.tx.room() < 3 {
                        self.flush();
                    }
                    let (sessions, tx) = (&self.sessions, &mut self.tx);
                    self.monitors
                        .mix_frame(i, now, |index, leg, header, payload| {
                            send_mixed(sessions, tx, index, leg, header, payload)
                        });
                }
            }
        }
        let due = self.conferences.due(now);
        if due > 0 {
            let frames = due.min(MAX_BURST);
            for i in 0..self.conferences.len() {
                self.conferences.skip(i, due - frames);
                for _ in 0..frames {
                    if self.tx.room() < MAX_MEMBERS {
                        self.flush();
                    }
                    let (sessions, tx) = (&self.sessions, &mut self.tx);
                    self.conferences
                        .mix_frame(i, now, |index, leg, header, payload| {
                            send_mixed(sessions, tx, index, leg, header, payload)
                        });
                }
            }
        }
    }

    /// When DTMF keys are being sent to the leg of `out_slot`, lets its sender rewrite the
    /// packet just queued for it (one flag read otherwise).
    fn send_dtmf_in(&mut self, out_slot: u32) {
        let Some(key) = self.sessions.dtmf_sender_for(out_slot) else {
            return;
        };
        let senders = &mut self.dtmf_senders;
        let mut more = true;
        self.tx.rewrite_last(|buf, len| {
            let (len, busy) = senders.rewrite(key, buf, len);
            more = busy;
            len
        });
        if !more {
            self.sessions
                .set_sending_dtmf(key / 2, crate::dtmf::leg_index(key), false);
        }
    }

    /// Turns the DTMF keys the batch ended into events, and starts the keys it translated
    /// from telephone events to tones on their senders.
    fn report_dtmf(&mut self) {
        while let Some(t) = self.sessions.pop_translated_dtmf() {
            if self.dtmf_senders.sound(t) {
                self.sessions
                    .set_sending_dtmf(t.key / 2, crate::dtmf::leg_index(t.key), true);
            }
        }
        let events = &mut self.events;
        let counters = &mut self.counters;
        let mut pushed = false;
        self.sessions.drain_dtmf(|r| {
            let event = Event::Dtmf {
                id: r.id,
                leg: r.leg,
                digit: r.digit,
                duration_ms: r.duration_ms,
                source: r.source,
                at_ns: r.at_ns,
            };
            if events.push(event).is_err() {
                counters.events_lost += 1;
            } else {
                counters.dtmf_events += 1;
                pushed = true;
            }
        });
        self.events_pushed |= pushed;
        // Reports the session table could not queue are lost events.
        self.counters.events_lost += self.sessions.take_dtmf_overflow();
    }

    /// Connects the socket in `slot` to its newly latched peer.
    fn latch(&mut self, slot: u32, peer: SocketAddr) {
        if self.backend.connect(slot, Some(peer)).is_err() {
            self.sessions.connect_failed(slot);
        }
    }

    /// Hands the batch to the backend and books what it reports. Called every pass even with
    /// nothing queued: an asynchronous backend reports earlier sends' completions here.
    fn flush(&mut self) {
        let report = self.backend.send(&mut self.tx);
        // The kernel has the datagrams (or, for io_uring, will at the very next ring entry).
        let sent_at = realtime_ns();
        for &rx_ns in &self.tx_rx_ns {
            if rx_ns != 0 {
                self.counters.record_latency(sent_at.saturating_sub(rx_ns));
            }
        }
        self.tx_rx_ns.clear();
        self.counters.relayed_packets += (report.sent - report.played) as u64;
        self.counters.relayed_bytes += report.bytes - report.played_bytes;
        self.counters.played_packets += report.played as u64;
        self.counters.played_bytes += report.played_bytes;
        self.counters
            .drop(DropReason::SendFailed, report.failed as u64);
        self.counters
            .drop(DropReason::PeerUnreachable, report.unreachable as u64);
    }

    fn run_timers(&mut self, now: u64) {
        let timeout_ns = self.cfg.timeout_ms * 1_000_000;
        let relatch_ns = self.cfg.relatch_ms * 1_000_000;
        let mut due = [0u32; 256];
        // Collect first so the wheel is not borrowed while sockets are touched. Entries beyond
        // one pass's worth fire on the next round.
        loop {
            let n = self.wheel.take_due(now, &mut due);
            for &index in &due[..n] {
                let mut actions = [None; 4];
                self.sessions
                    .on_timer(index, now, timeout_ns, relatch_ns, &mut actions);
                let mut expired = false;
                for action in actions.into_iter().flatten() {
                    match action {
                        TimerAction::Unlatch { slot } => {
                            let _ = self.backend.connect(slot, None);
                        }
                        TimerAction::Expire { .. } => expired = true,
                    }
                }
                if expired {
                    let id = self.sessions.id(index);
                    let stats = self.close_session(index);
                    self.counters.sessions_timed_out += 1;
                    self.push_event(Event::TimedOut { id, stats });
                } else if self.sessions.get(index).is_some() {
                    self.wheel.schedule(index, now + SESSION_CHECK_NS);
                }
            }
            if n < due.len() {
                break;
            }
        }
    }

    /// Returns false when the core should stop.
    fn drain_commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.pop() {
            match cmd {
                Command::Shutdown => return false,
                Command::Create { token, a, b } => {
                    let event = match self.create(&a, &b) {
                        Ok((id, ports)) => Event::Created { token, id, ports },
                        Err(error) => Event::Failed { token, error },
                    };
                    self.push_event(event);
                }
                Command::Update {
                    token,
                    id,
                    leg,
                    params,
                } => {
                    let event = match self.sessions.resolve(id) {
                        Some(index) => {
                            for slot in self
                                .sessions
                                .update(index, leg, &params)
                                .into_iter()
                                .flatten()
                            {
                                let _ = self.backend.connect(slot, None);
                            }
                            Event::Updated { token }
                        }
                        None => Event::Failed {
                            token,
                            error: CoreError::UnknownSession,
                        },
                    };
                    self.push_event(event);
                }
                Command::Delete { token, id } => {
                    let event = match self.sessions.resolve(id) {
                        Some(index) => Event::Deleted {
                            token,
                            stats: self.close_session(index),
                        },
                        None => Event::Failed {
                            token,
                            error: CoreError::UnknownSession,
                        },
                    };
                    self.push_event(event);
                }
                Command::Play {
                    token,
                    id,
                    leg,
                    clip,
                    payload_type,
                } => {
                    let once = ClipSequence::EMPTY;
                    let event = match self.start_playing(id, leg, once, clip, payload_type) {
                        Ok(()) => Event::Updated { token },
                        Err(error) => Event::Failed { token, error },
                    };
                    self.push_event(event);
                }
                Command::PlaySequence {
                    token,
                    id,
                    leg,
                    once,
                    then,
                    payload_type,
                } => {
                    let event = match self.start_playing(id, leg, once, then, payload_type) {
                        Ok(()) => Event::Updated { token },
                        Err(error) => Event::Failed { token, error },
                    };
                    self.push_event(event);
                }
                Command::HoldRelay {
                    token,
                    id,
                    leg,
                    held,
                } => {
                    let event = match self.sessions.resolve(id) {
                        Some(index) => {
                            self.sessions.set_held(index, leg, held);
                            Event::Updated { token }
                        }
                        None => Event::Failed {
                            token,
                            error: CoreError::UnknownSession,
                        },
                    };
                    self.push_event(event);
                }
                Command::StopPlay { token, id, leg } => {
                    let event = match self.sessions.resolve(id) {
                        Some(index) => {
                            self.players.stop(Player::key(index, leg));
                            self.sessions.set_playing(index, leg, false);
                            Event::Updated { token }
                        }
                        None => Event::Failed {
                            token,
                            error: CoreError::UnknownSession,
                        },
                    };
                    self.push_event(event);
                }
                Command::SetDtmf {
                    token,
                    id,
                    leg,
                    options,
                } => {
                    let event = match self.sessions.resolve(id) {
                        Some(index) => match self.set_dtmf(index, leg, &options) {
                            Ok(()) => Event::Updated { token },
                            Err(error) => Event::Failed { token, error },
                        },
                        None => Event::Failed {
                            token,
                            error: CoreError::UnknownSession,
                        },
                    };
                    self.push_event(event);
                }
                Command::SendDtmf {
                    token,
                    id,
                    leg,
                    send,
                } => {
                    let event = match self.send_dtmf(id, leg, &send) {
                        Ok(()) => Event::Updated { token },
                        Err(error) => Event::Failed { token, error },
                    };
                    self.push_event(event);
                }
                Command::SetCodecs { token, id, codecs } => {
                    let event = match self.set_codecs(id, codecs) {
                        Ok(()) => Event::Updated { token },
                        Err(error) => Event::Failed { token, error },
                    };
                    self.push_event(event);
                }
                Command::AttachMonitor {
                    token,
                    id,
                    supervisor,
                    mode,
                    codecs,
                } => {
                    let result = self.attach_monitor(id, supervisor, mode, codecs);
                    self.answer(token, result);
                }
                Command::SetMonitorMode { token, id, mode } => {
                    let result = self.set_monitor_mode(id, mode);
                    self.answer(token, result);
                }
                Command::JoinConference {
                    token,
                    id,
                    conference,
                    codec,
                } => {
                    let result = self.join_conference(id, conference, codec);
                    self.answer(token, result);
                }
                Command::LeaveConference { token, id } => {
                    let result = match self.sessions.resolve(id) {
                        Some(index) if self.conferences.leave(index).is_some() => Ok(()),
                        Some(_) => Err(CoreError::ConferenceConflict),
                        None => Err(CoreError::UnknownSession),
                    };
                    self.answer(token, result);
                }
                Command::DetachMonitor { token, id } => {
                    let result = match self.sessions.resolve(id) {
                        Some(index) if self.detach_monitor(index) => Ok(()),
                        Some(_) => Err(CoreError::MonitorConflict),
                        None => Err(CoreError::UnknownSession),
                    };
                    self.answer(token, result);
                }
                Command::Query { token, id } => {
                    let event = match self.sessions.resolve(id) {
                        Some(index) => Event::Stats {
                            token,
                            stats: self.sessions.stats(index),
                        },
                        None => Event::Failed {
                            token,
                            error: CoreError::UnknownSession,
                        },
                    };
                    self.push_event(event);
                }
            }
        }
        !self.commands.is_abandoned() || !self.commands.is_empty()
    }

    fn start_playing(
        &mut self,
        id: SessionId,
        leg: LegIndex,
        once: ClipSequence,
        then: u16,
        payload_type: u8,
    ) -> Result<(), CoreError> {
        let index = self.sessions.resolve(id).ok_or(CoreError::UnknownSession)?;
        let known = |c: &u16| (*c as usize) < self.clips.len();
        let then_ok = known(&then) || (then == PLAY_ONCE_ONLY && !once.is_empty());
        if !then_ok || !once.as_slice().iter().all(known) {
            return Err(CoreError::UnknownClip);
        }
        let law = law_of_payload_type(payload_type).ok_or(CoreError::UnsupportedPayloadType)?;
        let key = Player::key(index, leg);
        let mut player = match self.players.find(key) {
            // Switching clips: the stream (SSRC, sequence, timestamps) carries on.
            Some(&playing) => Player {
                payload_type,
                law,
                marker: true,
                ..playing
            },
            None => {
                let r = self.random();
                let ts = self.random() as u32;
                Player::new(key, payload_type, law, r as u32, (r >> 32) as u16, ts)
            }
        };
        player.set_clips(once, then);
        let now = monotonic_ns();
        self.players.start(player, now);
        self.sessions.set_playing(index, leg, true);
        // The leg's peer hears a stream of ours: it gets our reports about it.
        self.arm_reports(key, now);
        Ok(())
    }

    /// `SetDtmf`: the leg's listening and blocking, and for `tones_to_other` (or
    /// `events_to_other`) the other leg's sender of tones (or events), allocated here (first,
    /// so a refusal changes nothing). Both at once are refused.
    fn set_dtmf(
        &mut self,
        index: u32,
        leg: LegIndex,
        options: &crate::api::DtmfOptions,
    ) -> Result<(), CoreError> {
        let other = Player::key(index, leg.other());
        match (options.tones_to_other, options.events_to_other) {
            (Some(_), Some(_)) => return Err(CoreError::UnsupportedCodec),
            (Some(audio), None) => self.dtmf_senders.prepare_tones(other, audio)?,
            (None, Some(events)) => self.dtmf_senders.prepare_events(other, events)?,
            (None, None) => {}
        }
        self.sessions
            .set_dtmf(index, leg, options)
            .map_err(|_| CoreError::UnsupportedCodec)
    }

    fn send_dtmf(
        &mut self,
        id: SessionId,
        leg: LegIndex,
        send: &crate::api::DtmfSend,
    ) -> Result<(), CoreError> {
        let index = self.sessions.resolve(id).ok_or(CoreError::UnknownSession)?;
        self.dtmf_senders.send(Player::key(index, leg), send)?;
        self.sessions.set_sending_dtmf(index, leg, true);
        Ok(())
    }

    /// Installs the session's transcoders (both directions) when its legs' codecs differ,
    /// or removes them. On failure the session keeps its previous plan.
    fn set_codecs(
        &mut self,
        id: SessionId,
        codecs: Option<[crate::api::LegCodec; 2]>,
    ) -> Result<(), CoreError> {
        let index = self.sessions.resolve(id).ok_or(CoreError::UnknownSession)?;
        if let Some(legs) = codecs {
            for (leg, c) in [LegIndex::A, LegIndex::B].into_iter().zip(legs) {
                let clock = c.codec.rtp_clock_hz();
                self.sessions
                    .set_signalled_media(index, leg, c.payload_type, clock);
            }
        }
        let pair = match codecs {
            Some([a, b]) if a.codec != b.codec => {
                let (ra, rb) = (self.random(), self.random());
                let a_to_b = Transcoder::new(a, b, ra).map_err(|_| CoreError::UnsupportedCodec)?;
                let b_to_a = Transcoder::new(b, a, rb).map_err(|_| CoreError::UnsupportedCodec)?;
                Some((a_to_b, b_to_a))
            }
            _ => None,
        };
        let on = pair.is_some();
        let (a_to_b, b_to_a) = pair.unzip();
        self.transcoders.set(index * 2, a_to_b);
        self.transcoders.set(index * 2 + 1, b_to_a);
        self.sessions.set_transcode(index, LegIndex::A, on);
        self.sessions.set_transcode(index, LegIndex::B, on);
        // Each leg gets reports of ours while transcoded (its peers' RTCP now ends here); a
        // leg no longer transcoded stops getting them at its next report unless it is played.
        if on {
            let now = monotonic_ns();
            self.arm_reports(index * 2, now);
            self.arm_reports(index * 2 + 1, now);
        }
        Ok(())
    }

    /// Attaches session `supervisor` (leg A: the supervisor's phone) to call `id` in `mode`.
    fn attach_monitor(
        &mut self,
        id: SessionId,
        supervisor: SessionId,
        mode: MonitorMode,
        codecs: [LegCodec; 3],
    ) -> Result<(), CoreError> {
        let index = self.sessions.resolve(id).ok_or(CoreError::UnknownSession)?;
        let sup = self
            .sessions
            .resolve(supervisor)
            .ok_or(CoreError::UnknownSession)?;
        if self.conferences.contains(index) || self.conferences.contains(sup) {
            return Err(CoreError::MonitorConflict);
        }
        let seeds = [self.random(), self.random(), self.random()];
        self.monitors
            .attach(index, sup, mode, codecs, seeds, monotonic_ns())
            .map_err(|e| match e {
                AttachError::Conflict => CoreError::MonitorConflict,
                AttachError::Codec => CoreError::UnsupportedCodec,
            })?;
        // A supervisor's session is its leg A alone: nothing may arrive on, or be relayed out
        // of, leg B's ports. Its leg A's RTP goes to the mix from now on, attached or not.
        let first = sup * PORTS_PER_SESSION;
        self.backend.close(first + 2);
        self.backend.close(first + 3);
        self.sessions.set_mixed(sup, LegIndex::A, true);
        self.apply_monitor_mode(index, mode);
        // The supervisor hears a mix of ours from now on.
        self.arm_reports(sup * 2, monotonic_ns());
        Ok(())
    }

    /// Session `id`'s leg A (the member's phone) joins conference `conference`.
    fn join_conference(
        &mut self,
        id: SessionId,
        conference: u32,
        codec: LegCodec,
    ) -> Result<(), CoreError> {
        let index = self.sessions.resolve(id).ok_or(CoreError::UnknownSession)?;
        if self.monitors.contains(index) {
            return Err(CoreError::ConferenceConflict);
        }
        let seed = self.random();
        let now = monotonic_ns();
        self.conferences
            .join(index, conference, codec, seed, now)
            .map_err(|e| match e {
                JoinError::Conflict => CoreError::ConferenceConflict,
                JoinError::Codec => CoreError::UnsupportedCodec,
            })?;
        // A member's session is its leg A alone, as a supervisor's.
        let first = index * PORTS_PER_SESSION;
        self.backend.close(first + 2);
        self.backend.close(first + 3);
        self.sessions.set_mixed(index, LegIndex::A, true);
        // The member hears our mix: it gets our reports about it (they stop by themselves
        // once it leaves).
        self.arm_reports(index * 2, now);
        Ok(())
    }

    fn set_monitor_mode(&mut self, id: SessionId, mode: MonitorMode) -> Result<(), CoreError> {
        let index = self.sessions.resolve(id).ok_or(CoreError::UnknownSession)?;
        self.monitors
            .set_mode(index, mode)
            .map_err(|_| CoreError::MonitorConflict)?;
        self.apply_monitor_mode(index, mode);
        Ok(())
    }

    /// Which of the call's legs go through the mix rather than the relay.
    fn apply_monitor_mode(&mut self, index: u32, mode: MonitorMode) {
        let [a, b] = monitor::mixed_legs(mode);
        self.sessions.set_mixed(index, LegIndex::A, a);
        self.sessions.set_mixed(index, LegIndex::B, b);
        // A call leg that hears the mix gets our reports about it (they stop by themselves
        // once it hears nothing of ours).
        let now = monotonic_ns();
        for leg in [LegIndex::A, LegIndex::B] {
            if self.monitors.stream_to(index, leg).is_some() {
                self.arm_reports(index * 2 + leg as u32, now);
            }
        }
    }

    /// Ends the monitor session `index` takes part in (as call or supervisor); false if none.
    /// The call is relayed plainly again.
    fn detach_monitor(&mut self, index: u32) -> bool {
        let Some((call, _supervisor)) = self.monitors.detach(index) else {
            return false;
        };
        self.sessions.set_mixed(call, LegIndex::A, false);
        self.sessions.set_mixed(call, LegIndex::B, false);
        true
    }

    /// SplitMix64.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn create(
        &mut self,
        a: &LegParams,
        b: &LegParams,
    ) -> Result<(crate::api::SessionId, [u16; 2]), CoreError> {
        if self.counters.sessions_active >= self.cfg.budget as u64 {
            self.counters.sessions_refused += 1;
            return Err(CoreError::LoadLimit);
        }
        let mut skipped = [0u32; BIND_ATTEMPTS];
        let mut n_skipped = 0;
        let result = loop {
            let Some(index) = self.free.pop_front() else {
                break Err(CoreError::PortsExhausted);
            };
            match self.open_sockets(index) {
                Ok(()) => break Ok(index),
                Err(()) => {
                    skipped[n_skipped] = index;
                    n_skipped += 1;
                    if n_skipped == BIND_ATTEMPTS {
                        break Err(CoreError::PortsExhausted);
                    }
                }
            }
        };
        // Slots whose ports another process holds go to the back of the line.
        for &index in &skipped[..n_skipped] {
            self.free.push_back(index);
        }
        let index = match result {
            Ok(i) => i,
            Err(e) => {
                self.counters.sessions_refused += 1;
                return Err(e);
            }
        };
        let now = monotonic_ns();
        let id = self.sessions.activate(index, a, b, now);
        self.wheel.schedule(index, now + SESSION_CHECK_NS);
        self.counters.sessions_active += 1;
        self.counters.sessions_created += 1;
        let first = self.cfg.base_port + (index * PORTS_PER_SESSION) as u16;
        Ok((id, [first, first + 2]))
    }

    fn open_sockets(&mut self, index: u32) -> Result<(), ()> {
        let first_slot = index * PORTS_PER_SESSION;
        for k in 0..PORTS_PER_SESSION {
            let slot = first_slot + k;
            let port = self.cfg.base_port + slot as u16;
            if self
                .backend
                .open(slot, SocketAddr::new(self.cfg.bind, port))
                .is_err()
            {
                for opened in first_slot..slot {
                    self.backend.close(opened);
                }
                return Err(());
            }
            self.socket_drops[slot as usize] = 0;
        }
        Ok(())
    }

    fn close_session(&mut self, index: u32) -> crate::api::SessionStats {
        for k in 0..PORTS_PER_SESSION {
            self.backend.close(index * PORTS_PER_SESSION + k);
        }
        self.wheel.cancel(index);
        self.players.stop(Player::key(index, LegIndex::A));
        self.players.stop(Player::key(index, LegIndex::B));
        self.transcoders.set(index * 2, None);
        self.transcoders.set(index * 2 + 1, None);
        self.rtcp_timers.cancel(index * 2);
        self.rtcp_timers.cancel(index * 2 + 1);
        self.detach_monitor(index);
        self.conferences.leave(index);
        self.dtmf_senders.clear(index * 2);
        self.dtmf_senders.clear(index * 2 + 1);
        self.free.push_back(index);
        self.counters.sessions_active -= 1;
        self.sessions.deactivate(index)
    }

    /// `Updated`, or `Failed` with the error.
    fn answer(&mut self, token: u64, result: Result<(), CoreError>) {
        self.push_event(match result {
            Ok(()) => Event::Updated { token },
            Err(error) => Event::Failed { token, error },
        });
    }

    fn push_event(&mut self, event: Event) {
        if self.events.push(event).is_err() {
            self.counters.events_lost += 1;
        } else {
            self.events_pushed = true;
        }
    }
}
