//! What the relay's actor has queued for one connection, bounded in bytes and in frames.
//!
//! A client that stops reading must not pin memory: every frame queued counts its bytes until
//! the connection task has written it; past `max_bytes` (or the frame count) the actor cuts the
//! connection. Cutting wakes the connection task even while it is blocked writing to a socket
//! nobody reads, so its task and everything it holds end at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};

/// What the actor tells a connection task.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Vec<u8>),
    Close(u16, String),
}

/// The actor's end.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    queued: Arc<AtomicUsize>,
    cut: Arc<Notify>,
    ended: Arc<AtomicBool>,
    /// Messages the relay invited (see [`Outbox::invite`]).
    invited: Arc<AtomicU64>,
    max_bytes: usize,
}

/// The connection task's end.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Outgoing>,
    queued: Arc<AtomicUsize>,
    cut: Arc<Notify>,
    ended: Arc<AtomicBool>,
    invited: Arc<AtomicU64>,
}

/// A new outbox holding at most `max_frames` frames and `max_bytes` bytes of them.
pub fn outbox(max_frames: usize, max_bytes: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(max_frames.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(Notify::new());
    let ended = Arc::new(AtomicBool::new(false));
    let invited = Arc::new(AtomicU64::new(0));
    let outbox = Outbox {
        tx,
        queued: queued.clone(),
        cut: cut.clone(),
        ended: ended.clone(),
        invited: invited.clone(),
        max_bytes,
    };
    (outbox, OutboxReceiver { rx, queued, cut, ended, invited })
}

impl Outbox {
    /// Queues a frame; `false` (and nothing queued) when the client is too slow for it.
    pub fn frame(&self, frame: Vec<u8>) -> bool {
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        // One frame larger than the bound still goes when nothing else waits (a large
        // document to an honest device); behind others it waits for room.
        if before > 0 && before.saturating_add(len) > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if self.tx.try_send(Outgoing::Frame(frame)).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Asks the task to send a close frame after what is queued; if the queue is full, cuts.
    pub fn close(&self, code: u16, reason: &str) {
        if self.tx.try_send(Outgoing::Close(code, reason.to_owned())).is_err() {
            self.cut();
        }
    }

    /// Ends the connection task now, whatever it is doing; queued frames are dropped.
    pub fn cut(&self) {
        self.cut.notify_one();
    }

    /// Whether the actor is the first to end the connection (see [`OutboxReceiver::first_to_end`]).
    pub fn first_to_end(&self) -> bool {
        !self.ended.swap(true, Ordering::AcqRel)
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The relay asked the device to sync `n` more messages' worth (catalog entries it listed):
    /// those messages do not count against the connection's message rate.
    pub fn invite(&self, n: u64) {
        self.invited.fetch_add(n, Ordering::AcqRel);
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
        self.cut.clone()
    }

    /// Whether the connection's task is the first to end the connection: `true` once, to
    /// whichever end asks first, so a close is counted once under one reason.
    pub fn first_to_end(&self) -> bool {
        !self.ended.swap(true, Ordering::AcqRel)
    }

    /// Spends one invited message, if any is left.
    pub fn take_invited(&self) -> bool {
        self.invited.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }

    fn account(&self, m: &Option<Outgoing>) {
        if let Some(Outgoing::Frame(f)) = m {
            self.queued.fetch_sub(f.len(), Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invited_messages_are_spent_once() {
        let (out, rx) = outbox(1, 1);
        assert!(!rx.take_invited());
        out.invite(2);
        assert!(rx.take_invited() && rx.take_invited());
        assert!(!rx.take_invited());
    }

    #[tokio::test]
    async fn frames_are_bounded_in_bytes_and_freed_when_taken() {
        let (out, mut rx) = outbox(100, 10);
        assert!(out.frame(vec![0; 6]));
        assert!(!out.frame(vec![0; 6]), "12 bytes would pass the 10-byte bound");
        assert_eq!(out.queued_bytes(), 6);
        assert!(out.frame(vec![0; 4]));
        assert!(matches!(rx.recv().await, Some(Outgoing::Frame(f)) if f.len() == 6));
        assert_eq!(out.queued_bytes(), 4);
        assert!(out.frame(vec![0; 6]));
    }

    #[tokio::test]
    async fn one_large_frame_goes_alone_but_not_behind_others() {
        let (out, _rx) = outbox(100, 10);
        assert!(out.frame(vec![0; 50]), "alone, a frame over the bound still goes");
        assert!(!out.frame(vec![0; 1]), "nothing more while it waits");
    }

    #[tokio::test]
    async fn frames_are_bounded_in_count() {
        let (out, _rx) = outbox(2, 1 << 20);
        assert!(out.frame(vec![1]));
        assert!(out.frame(vec![2]));
        assert!(!out.frame(vec![3]));
        assert_eq!(out.queued_bytes(), 2);
    }

    #[test]
    fn only_the_first_end_to_end_a_connection_counts_it() {
        let (out, rx) = outbox(1, 1);
        assert!(out.first_to_end());
        assert!(!rx.first_to_end());
        assert!(!out.first_to_end());
        let (out, rx) = outbox(1, 1);
        assert!(rx.first_to_end());
        assert!(!out.first_to_end());
    }

    #[tokio::test]
    async fn a_close_on_a_full_queue_cuts() {
        let (out, rx) = outbox(1, 1 << 20);
        assert!(out.frame(vec![1]));
        out.close(4013, "client too slow");
        // The cut is remembered until the task looks.
        let cut = rx.cut_signal();
        tokio::time::timeout(std::time::Duration::from_secs(5), cut.notified()).await.expect("cut");
    }
}
