//! [`MemoryHints`]: several nodes in one process, sharing a [`MemoryHub`], for tests of what
//! consumes hints (no database, no loss but the one a test asks for with
//! [`MemoryHub::resync`]).

use tokio::sync::broadcast;

use super::{Arrival, Hint, HintError, HintReceiver, Hints, NodeId, events_channel};

/// What every node of one in-process cluster publishes to.
#[derive(Debug, Clone)]
pub struct MemoryHub {
    events: broadcast::Sender<Arrival>,
}

impl Default for MemoryHub {
    fn default() -> Self {
        Self { events: events_channel() }
    }
}

impl MemoryHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new node on this hub, with an id of its own.
    pub fn node(&self) -> MemoryHints {
        MemoryHints { node: NodeId::random(), events: self.events.clone() }
    }

    /// Tells every receiver that hints were lost, as a listener's reconnect does.
    pub fn resync(&self) {
        // No receiver: nobody to tell.
        let _ = self.events.send(Arrival::Resync);
    }
}

/// One node of a [`MemoryHub`].
#[derive(Debug)]
pub struct MemoryHints {
    node: NodeId,
    events: broadcast::Sender<Arrival>,
}

impl MemoryHints {
    pub fn node(&self) -> NodeId {
        self.node
    }
}

impl Hints for MemoryHints {
    fn publish(&self, hints: &[Hint]) -> Result<(), HintError> {
        for hint in hints {
            // No receiver on any node: nobody to tell.
            let _ = self.events.send(Arrival::Hint { from: self.node, hint: *hint });
        }
        Ok(())
    }

    fn subscribe(&self) -> HintReceiver {
        HintReceiver::new(self.events.subscribe(), self.node)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use liaison_core::DocumentId;

    use super::super::HintEvent;
    use super::*;

    fn doc(n: u8, version: u64) -> Hint {
        Hint::Doc { id: DocumentId::from_bytes([n; 16]), version }
    }

    async fn next(receiver: &mut HintReceiver) -> HintEvent {
        let event = tokio::time::timeout(Duration::from_secs(5), receiver.recv()).await;
        event.expect("no hint event within 5 s").expect("the channel stopped")
    }

    #[tokio::test]
    async fn each_node_receives_the_others_hints_and_never_its_own() {
        let hub = MemoryHub::new();
        let (a, b) = (hub.node(), hub.node());
        assert_ne!(a.node(), b.node());
        let (mut a_events, mut b_events) = (a.subscribe(), b.subscribe());
        assert_eq!(next(&mut a_events).await, HintEvent::Resync, "a new receiver starts with a resync");
        assert_eq!(next(&mut b_events).await, HintEvent::Resync);

        a.publish(&[doc(1, 7), Hint::Security]).unwrap();
        assert_eq!(next(&mut b_events).await, HintEvent::Hint(doc(1, 7)));
        assert_eq!(next(&mut b_events).await, HintEvent::Hint(Hint::Security));
        b.publish(&[doc(2, 1)]).unwrap();
        // A's own hints were sent first: had A received them, they would come before B's.
        assert_eq!(next(&mut a_events).await, HintEvent::Hint(doc(2, 1)));

        hub.resync();
        assert_eq!(next(&mut a_events).await, HintEvent::Resync);
        assert_eq!(next(&mut b_events).await, HintEvent::Resync);
    }

    #[tokio::test]
    async fn a_receiver_that_falls_behind_is_told_to_resync() {
        let hub = MemoryHub::new();
        let (a, b) = (hub.node(), hub.node());
        let mut b_events = b.subscribe();
        assert_eq!(next(&mut b_events).await, HintEvent::Resync);
        let many: Vec<Hint> = (0..super::super::EVENTS_CAPACITY as u64 + 10).map(|v| doc(3, v)).collect();
        a.publish(&many).unwrap();
        assert_eq!(next(&mut b_events).await, HintEvent::Resync, "the oldest hints were dropped");
        assert!(matches!(next(&mut b_events).await, HintEvent::Hint(Hint::Doc { .. })), "then the rest flow");
        drop((a, b, hub));
        while let Some(event) = b_events.recv().await {
            assert!(matches!(event, HintEvent::Hint(_)));
        }
    }
}
