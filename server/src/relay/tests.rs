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
    let (out, mut out_rx) = outbox(16, 1 << 20);
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
    let (out, out_rx) = outbox(16, 1 << 20);
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
