//! The actor ends each connection once: counted once under one reason, one close to its task.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::testing;
use super::{ActorMsg, close};
use crate::outbox::{Outgoing, outbox};

#[tokio::test]
async fn a_revoked_client_is_closed_and_counted_once() {
    let relay = testing::start();
    let conn = relay.relay.next_conn();
    let (out, mut out_rx) = outbox(1 << 20);
    relay.relay.send(ActorMsg::Open { conn, principal: relay.principal.clone(), outbox: out }).await;
    relay.settled().await;
    assert_eq!(relay.metrics.connections_open.load(Ordering::Relaxed), 1);

    relay.data.auth.revoke_token(&relay.token_id, crate::now_ms()).unwrap();
    relay.relay.send(ActorMsg::Recheck).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), out_rx.recv()).await.unwrap();
    assert!(
        matches!(&closed, Some(Outgoing::Close(code, reason)) if *code == close::AUTH && reason == "credential revoked"),
        "{closed:?}"
    );
    // The next recheck (the actor's own tick, or this one) finds nothing more to close.
    relay.relay.send(ActorMsg::Recheck).await;
    relay.settled().await;
    assert_eq!(relay.closed("credential revoked"), 1);
    assert_eq!(relay.closed_total(), 1, "counted under one reason only:\n{}", relay.metrics.render());
    assert!(out_rx.try_recv().is_none(), "one close to the connection's task");
    assert!(!out_rx.first_to_end(), "the task does not count it again");

    // Its task then reports the end: nothing changes.
    relay.relay.send(ActorMsg::Closed { conn }).await;
    relay.settled().await;
    assert_eq!(relay.closed_total(), 1);
    assert_eq!(relay.metrics.connections_open.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_connection_its_task_ended_is_not_counted_by_the_actor() {
    let relay = testing::start();
    let conn = relay.relay.next_conn();
    let (out, out_rx) = outbox(1 << 20);
    relay.relay.send(ActorMsg::Open { conn, principal: relay.principal.clone(), outbox: out }).await;
    // The task ends it (say, idle timeout) and counts it; the actor then revokes it too.
    assert!(out_rx.first_to_end());
    relay.metrics.closed("idle timeout");
    relay.data.auth.revoke_token(&relay.token_id, crate::now_ms()).unwrap();
    relay.relay.send(ActorMsg::Recheck).await;
    relay.relay.send(ActorMsg::Closed { conn }).await;
    relay.settled().await;
    assert_eq!(relay.closed_total(), 1, "{}", relay.metrics.render());
    assert_eq!(relay.metrics.connections_open.load(Ordering::Relaxed), 0);
}

/// A client that does not read: once its outbox is full the actor cuts it ("client too slow")
/// rather than drop a frame, which would leave the device's sync silently broken.
#[tokio::test]
async fn a_client_whose_outbox_is_full_is_cut_and_counted() {
    use liaison_core::sync::wire::Message;
    let relay = testing::start();
    let conn = relay.relay.next_conn();
    // Room for one frame: the relay's answer to the join fills it.
    let (out, out_rx) = outbox(1);
    let cut = out_rx.cut_signal();
    relay.relay.send(ActorMsg::Open { conn, principal: relay.principal.clone(), outbox: out }).await;
    let device = relay.principal.device.clone();
    let join = Message::Join {
        sender_id: device.as_str().into(),
        supported_protocol_versions: vec!["1".into()],
        metadata: None,
    };
    let request = Message::Request {
        sender_id: device.as_str().into(),
        target_id: "liaison-relay".into(),
        document_id: liaison_core::DocumentId::from_bytes([7; 16]),
        data: Vec::new(),
    };
    for frame in [join.encode(), request.encode()] {
        let permit = relay.relay.inbound_permit(frame.len()).await;
        relay.relay.send(ActorMsg::Frame { conn, frame, permit }).await;
    }
    tokio::time::timeout(Duration::from_secs(10), cut.notified()).await.expect("the connection is cut");
    relay.settled().await;
    assert_eq!(relay.closed("client too slow"), 1, "{}", relay.metrics.render());
    assert_eq!(relay.closed_total(), 1);
}
