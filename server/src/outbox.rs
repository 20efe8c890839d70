//! What the relay's actor has queued for one connection, bounded in bytes.
//!
//! A client that stops reading must not pin memory: every frame queued counts its bytes (and a
//! little for the frame itself) until the connection task has written it. A frame is taken
//! while what waits before it is under `max_bytes`, so one connection holds at most `max_bytes`
//! and one frame more; past that the actor cuts the connection. Cutting wakes the connection
//! task even while it is blocked writing to a socket nobody reads, so its task and everything
//! it holds end at once.
//!
//! The engine is paced so that an honest device, however slow its network, is never cut: it
//! generates sync messages only while the outbox has room for them ([`Outbox::room`]: half the
//! bound, the other half left for presence and notices), and once it is backlogged the
//! connection task says when the outbox has drained ([`OutboxReceiver::room_due`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};

/// What a queued frame costs beyond its bytes (the frame's own allocation and queue slot).
const FRAME_OVERHEAD: usize = 64;

/// What the actor tells a connection task.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Vec<u8>),
    Close(u16, String),
}

/// The parts both ends share.
#[derive(Debug)]
struct Shared {
    queued: AtomicUsize,
    cut: Arc<Notify>,
    ended: AtomicBool,
    /// Messages the relay invited (see [`Outbox::invite`]).
    invited: AtomicU64,
    /// The engine waits for room: the task says when the outbox has drained.
    room_wanted: AtomicBool,
    max_bytes: usize,
}

/// The actor's end.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
}

/// The connection task's end.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
}

/// A new outbox holding at most `max_bytes` (and one frame more).
pub fn outbox(max_bytes: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        cut: Arc::new(Notify::new()),
        ended: AtomicBool::new(false),
        invited: AtomicU64::new(0),
        room_wanted: AtomicBool::new(false),
        max_bytes,
    });
    (Outbox { tx, shared: shared.clone() }, OutboxReceiver { rx, shared })
}

impl Outbox {
    /// Queues a frame; `false` (and nothing queued) when the client is too slow for it: what
    /// waits before it already reaches the bound.
    pub fn frame(&self, frame: Vec<u8>) -> bool {
        let cost = frame.len() + FRAME_OVERHEAD;
        let before = self.shared.queued.fetch_add(cost, Ordering::AcqRel);
        if before >= self.shared.max_bytes {
            self.shared.queued.fetch_sub(cost, Ordering::AcqRel);
            return false;
        }
        if self.tx.send(Outgoing::Frame(frame)).is_err() {
            self.shared.queued.fetch_sub(cost, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Asks the task to send a close frame after what is queued; if it is gone, cuts.
    pub fn close(&self, code: u16, reason: &str) {
        if self.tx.send(Outgoing::Close(code, reason.to_owned())).is_err() {
            self.cut();
        }
    }

    /// Ends the connection task now, whatever it is doing; queued frames are dropped.
    pub fn cut(&self) {
        self.shared.cut.notify_one();
    }

    /// Whether the actor is the first to end the connection (see [`OutboxReceiver::first_to_end`]).
    pub fn first_to_end(&self) -> bool {
        !self.shared.ended.swap(true, Ordering::AcqRel)
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// The relay asked the device to sync `n` more messages' worth (catalog entries it listed):
    /// those messages do not count against the connection's message rate.
    pub fn invite(&self, n: u64) {
        self.shared.invited.fetch_add(n, Ordering::AcqRel);
    }

    /// The room to give the engine for sync messages: half the bound, less what is queued, and
    /// at least one byte (one message) however small the bound.
    pub fn room(&self) -> usize {
        (self.shared.max_bytes / 2).saturating_sub(self.queued_bytes()).max(1)
    }

    /// The engine waits for room. `true` if the outbox has drained already (then the actor
    /// gives it); else the task will say once it has (`OutboxReceiver::room_due`): exactly one
    /// of the two does.
    pub fn want_room(&self) -> bool {
        self.shared.room_wanted.store(true, Ordering::SeqCst);
        self.shared.room_due()
    }
}

impl Shared {
    /// Drained to a quarter of the bound while the engine waits for room: `true` once.
    fn room_due(&self) -> bool {
        self.queued.load(Ordering::SeqCst) <= self.max_bytes / 4 && self.room_wanted.swap(false, Ordering::SeqCst)
    }
}

impl OutboxReceiver {
    /// The next message, or `None` when the actor is gone.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let m = self.rx.recv().await;
        self.account(&m);
        m
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let m = self.rx.try_recv().ok();
        self.account(&m);
        m
    }

    /// The signal the actor raises to cut the connection: `signal.notified().await` resolves
    /// once it did (a cut raised before anyone waits is kept).
    pub fn cut_signal(&self) -> Arc<Notify> {
        self.shared.cut.clone()
    }

    /// Whether the connection's task is the first to end the connection: `true` once, to
    /// whichever end asks first, so a close is counted once under one reason.
    pub fn first_to_end(&self) -> bool {
        !self.shared.ended.swap(true, Ordering::AcqRel)
    }

    /// Spends one invited message, if any is left.
    pub fn take_invited(&self) -> bool {
        self.shared.invited.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }

    /// Whether to tell the actor, after a write, that the engine may have room again: it waits
    /// for room and the outbox has drained to a quarter of its bound. `true` once per wait.
    pub fn room_due(&self) -> bool {
        self.shared.room_due()
    }

    fn account(&self, m: &Option<Outgoing>) {
        if let Some(Outgoing::Frame(f)) = m {
            self.shared.queued.fetch_sub(f.len() + FRAME_OVERHEAD, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invited_messages_are_spent_once() {
        let (out, rx) = outbox(1);
        assert!(!rx.take_invited());
        out.invite(2);
        assert!(rx.take_invited() && rx.take_invited());
        assert!(!rx.take_invited());
    }

    #[tokio::test]
    async fn frames_are_bounded_in_bytes_and_freed_when_taken() {
        let (out, mut rx) = outbox(100 + FRAME_OVERHEAD);
        assert!(out.frame(vec![0; 60]));
        assert!(out.frame(vec![0; 60]), "taken: what waits before it is under the bound");
        assert!(!out.frame(vec![0; 1]), "not now: what waits reaches the bound");
        assert_eq!(out.queued_bytes(), 120 + 2 * FRAME_OVERHEAD);
        assert!(matches!(rx.recv().await, Some(Outgoing::Frame(f)) if f.len() == 60));
        assert_eq!(out.queued_bytes(), 60 + FRAME_OVERHEAD);
        assert!(out.frame(vec![0; 6]));
    }

    #[tokio::test]
    async fn a_large_frame_goes_while_the_outbox_is_under_its_bound() {
        let (out, _rx) = outbox(10);
        assert!(out.frame(vec![0; 50]), "alone, a frame over the bound still goes");
        assert!(!out.frame(vec![0; 1]), "nothing more while it waits");
    }

    #[tokio::test]
    async fn room_is_half_the_bound_and_the_drained_outbox_says_so_once() {
        let (out, mut rx) = outbox(4_000);
        assert_eq!(out.room(), 2_000);
        assert!(out.want_room(), "empty: room at once");
        assert!(!rx.room_due(), "given by the actor, not again by the task");
        assert!(out.frame(vec![0; 2_000]));
        assert_eq!(out.room(), 1, "at least one message");
        assert!(!out.want_room(), "full: the task will say");
        assert!(!rx.room_due(), "not drained yet");
        assert!(matches!(rx.recv().await, Some(Outgoing::Frame(_))));
        assert!(rx.room_due(), "drained");
        assert!(!rx.room_due(), "once per wait");
    }

    #[test]
    fn only_the_first_end_to_end_a_connection_counts_it() {
        let (out, rx) = outbox(1);
        assert!(out.first_to_end());
        assert!(!rx.first_to_end());
        assert!(!out.first_to_end());
        let (out, rx) = outbox(1);
        assert!(rx.first_to_end());
        assert!(!out.first_to_end());
    }

    #[tokio::test]
    async fn a_cut_is_remembered_until_the_task_looks() {
        let (out, rx) = outbox(1 << 20);
        assert!(out.frame(vec![1]));
        out.cut();
        let cut = rx.cut_signal();
        tokio::time::timeout(std::time::Duration::from_secs(5), cut.notified()).await.expect("cut");
    }
}
