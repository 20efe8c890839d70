//! One connection's life: frames from the relay go through the engine (those already received
//! together, so their writes share one flush), the app's commands become inputs, the engine's
//! outputs are carried out; and the commands that arrive while offline.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use automerge::ReadDoc;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::connect::{CLOSE_AUTH, Refusal, Ws, describe};
use super::{Cmd, ConnState, Driver, Ended, GROUP_FRAMES, Network, RefusedChange, now_ms};
use crate::DocumentId;
use crate::sync::engine::Event;
use crate::sync::store_tasks::execute_device_group;
use crate::sync::{ConnId, Input, Output, Side};

/// How a close frame from the relay ends the session: a credential refused (code 4001 with a
/// credential reason), or lost.
fn closed(frame: Option<CloseFrame>) -> Ended {
    match frame {
        Some(f) if u16::from(f.code) == CLOSE_AUTH => match Refusal::from_close_reason(f.reason.as_str()) {
            Some(refusal) => Ended::Refused(refusal),
            None => Ended::Lost(format!("closed by the relay: {}", f.reason)),
        },
        Some(f) => Ended::Lost(format!("closed by the relay: {}", f.reason)),
        None => Ended::Lost("closed by the relay".into()),
    }
}

impl Driver {
    pub(super) async fn offline_cmd(&mut self, c: Cmd) {
        let input = match c {
            Cmd::Network(n) => {
                self.network = n;
                None
            }
            Cmd::LocalChange(doc) => self.local_input(doc),
            Cmd::Announce(doc) => Some(Input::Announce { doc }),
            Cmd::Find(doc) => Some(Input::Find { doc }),
            Cmd::Subscribe(doc) => Some(Input::Announce { doc }),
            Cmd::Ephemeral(doc, data) => Some(Input::SendEphemeral { doc, data }),
            Cmd::DiscardRefused(doc) => self.discard_refused(doc),
            Cmd::RetrySignIn => {
                self.retry_sign_in();
                None
            }
            Cmd::Shutdown => None,
        };
        if let Some(input) = input {
            let _ = self.feed(None, ConnId(0), input).await;
        }
    }

    /// Takes the refused changes out of the stored document; the engine then drops its copy
    /// and loads the stored one again (`Erase` without notice, then `Announce`).
    fn discard_refused(&mut self, doc: DocumentId) -> Option<Input> {
        let hashes: Vec<automerge::ChangeHash> = self
            .shared
            .status
            .borrow()
            .refused
            .iter()
            .filter(|r| r.doc == doc)
            .flat_map(|r| r.hashes.iter().copied())
            .collect();
        match self.store.discard_changes(&doc, &hashes) {
            Ok(n) => tracing::info!(document = %doc, discarded = n, "discarded refused changes"),
            Err(e) => {
                tracing::error!(document = %doc, error = %e, "cannot discard refused changes");
                return None;
            }
        }
        self.publish(|s| s.refused.retain(|r| r.doc != doc));
        self.followups.push(Input::Announce { doc });
        Some(Input::Erase { doc, notify: false })
    }

    /// A local change: the engine takes the new changes, and the document is offered on this
    /// connection and every later one until the relay acknowledges it (`Settled`): a change
    /// made offline to a document synced earlier must go out when the network returns.
    fn local_input(&mut self, doc: DocumentId) -> Option<Input> {
        tracing::debug!(document = %doc, resident = self.engine.document(&doc).is_some(), "local change");
        match self.engine.document(&doc) {
            Some(am) => {
                let heads = am.get_heads();
                let changes = self.store.changes_since(&doc, &heads).ok();
                self.followups.push(Input::Announce { doc });
                changes.map(|changes| Input::LocalChanges { doc, changes })
            }
            None => Some(Input::Announce { doc }),
        }
    }

    pub(super) async fn session(&mut self, mut ws: Ws, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> Ended {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.publish(|s| {
            s.state = ConnState::Syncing;
            s.catalog_current = false;
            s.last_error = None;
            s.problem = None;
            s.next_attempt_ms = None;
        });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        self.catalog_reset();
        let request = self.catalog_request();
        self.engine.set_catalog_request(Some(request));
        if let Err(e) = self.feed(Some(&mut ws), conn, Input::Connected { conn, side: Side::Initiator }).await {
            return e;
        }
        let ended = loop {
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(WsMessage::Binary(b))) => {
                        // Frames already received go through the engine together, so their
                        // writes share one batch and one flush (a first sync is thousands).
                        let mut frames = vec![Input::Frame { conn, frame: b.to_vec() }];
                        let mut ended = None;
                        while frames.len() < GROUP_FRAMES {
                            match ws.next().now_or_never() {
                                Some(Some(Ok(WsMessage::Binary(b)))) => frames.push(Input::Frame { conn, frame: b.to_vec() }),
                                Some(Some(Ok(WsMessage::Close(f)))) => {
                                    ended = Some(closed(f));
                                    break;
                                }
                                Some(None) => {
                                    ended = Some(Ended::Lost("closed by the relay".into()));
                                    break;
                                }
                                Some(Some(Ok(_))) => {}
                                Some(Some(Err(e))) => {
                                    ended = Some(Ended::Lost(describe(&e)));
                                    break;
                                }
                                None => break,
                            }
                        }
                        if let Err(e) = self.feed_all(Some(&mut ws), conn, frames).await {
                            break e;
                        }
                        if let Some(e) = ended {
                            break e;
                        }
                    }
                    Some(Ok(WsMessage::Close(f))) => break closed(f),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Ended::Lost(describe(&e)),
                    None => break Ended::Lost("connection ended".into()),
                },
                c = cmds.recv() => {
                    let input = match c {
                        None | Some(Cmd::Shutdown) => break Ended::Shutdown,
                        Some(Cmd::Network(Network::Up) | Cmd::RetrySignIn) => continue,
                        Some(Cmd::Network(n)) => break Ended::Network(n),
                        Some(Cmd::LocalChange(doc)) => self.local_input(doc),
                        Some(Cmd::Announce(doc)) => Some(Input::Announce { doc }),
                        Some(Cmd::Find(doc)) => Some(Input::Find { doc }),
                        Some(Cmd::Subscribe(doc)) => Some(Input::Announce { doc }),
                        Some(Cmd::Ephemeral(doc, data)) => Some(Input::SendEphemeral { doc, data }),
                        Some(Cmd::DiscardRefused(doc)) => self.discard_refused(doc),
                    };
                    if let Some(input) = input
                        && let Err(e) = self.feed(Some(&mut ws), conn, input).await
                    {
                        break e;
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.feed(Some(&mut ws), conn, Input::Tick).await {
                        break e;
                    }
                }
            }
        };
        let _ = ws.close(None).await;
        let _ = self.engine.handle(now_ms(), Input::Disconnected { conn });
        ended
    }

    /// Runs one input through the engine and carries out what it says.
    pub(super) async fn feed(&mut self, ws: Option<&mut Ws>, conn: ConnId, input: Input) -> Result<(), Ended> {
        self.feed_all(ws, conn, vec![input]).await
    }

    /// Runs inputs through the engine and carries out what they say: frames are sent (flushed
    /// once per round), and the storage tasks of a round run together on a blocking thread,
    /// their writes as one batch with one flush, before their results go in as the next round.
    async fn feed_all(&mut self, mut ws: Option<&mut Ws>, conn: ConnId, inputs: Vec<Input>) -> Result<(), Ended> {
        let mut queue = VecDeque::from(inputs);
        loop {
            let mut tasks = Vec::new();
            let mut sent = false;
            while let Some(input) = queue.pop_front() {
                for out in self.engine.handle(now_ms(), input) {
                    match out {
                        Output::Send { frame, .. } => {
                            if let Some(ws) = ws.as_deref_mut() {
                                ws.feed(WsMessage::Binary(frame.into()))
                                    .await
                                    .map_err(|e| Ended::Lost(describe(&e)))?;
                                sent = true;
                            }
                        }
                        Output::Close { reason, .. } => return Err(Ended::Lost(format!("{reason:?}"))),
                        Output::Storage { task, op } => tasks.push((task, op)),
                        Output::Event(e) => self.on_event(conn, e),
                    }
                }
                queue.extend(self.followups.drain(..));
            }
            if sent && let Some(ws) = ws.as_deref_mut() {
                ws.flush().await.map_err(|e| Ended::Lost(describe(&e)))?;
            }
            if tasks.is_empty() {
                return Ok(());
            }
            let store = self.store.clone();
            let ids: Vec<crate::sync::TaskId> = tasks.iter().map(|(t, _)| *t).collect();
            let results = tokio::task::spawn_blocking(move || {
                let ops: Vec<_> = tasks.into_iter().map(|(_, op)| op).collect();
                execute_device_group(&store, &ops)
            })
            .await
            .unwrap_or_else(|_| vec![crate::sync::StorageResult::Failed("storage task panicked".into()); ids.len()]);
            queue.extend(ids.into_iter().zip(results).map(|(task, result)| Input::StorageDone { task, result }));
        }
    }

    fn on_event(&mut self, _conn: ConnId, e: Event) {
        match &e {
            Event::Catalog { page, .. } => self.on_catalog(page),
            Event::DocChanged { doc, .. } => self.catalog_progress(doc, false),
            Event::DocUnavailable { doc } => self.catalog_progress(doc, true),
            Event::PeerHeads { doc, heads, .. } if self.pending().contains(doc) && self.covered(doc, heads) => {
                self.followups.push(Input::Settled { doc: *doc });
                let pending = {
                    let mut p = self.pending();
                    p.remove(doc);
                    p.len()
                };
                let now = now_ms();
                self.publish(|s| {
                    s.pending_documents = pending;
                    if pending == 0 {
                        s.last_all_acknowledged_ms = Some(now);
                        s.state = ConnState::UpToDate;
                    }
                });
            }
            Event::RefusedByPeer { doc, hashes, code, message, .. } => {
                let r =
                    RefusedChange { doc: *doc, hashes: hashes.clone(), code: code.clone(), message: message.clone() };
                // A refused change will never be acknowledged: it is reported, not pending.
                let pending = {
                    let mut p = self.pending();
                    p.remove(doc);
                    p.len()
                };
                self.publish(|s| {
                    s.refused.push(r);
                    s.pending_documents = pending;
                });
            }
            // Erasure reaches the device: the local copy and its history go.
            Event::ErasedByPeer { doc, .. } => self.delete_local(doc, false),
            Event::PeerReady { .. } if self.pending().is_empty() => {
                self.publish(|s| s.state = ConnState::UpToDate);
            }
            _ => {}
        }
        let _ = self.events.send(e);
    }

    /// Whether the relay's heads include every local change of `doc`: each head of the local
    /// store must be an ancestor of the relay's heads. Ancestry is read from the engine's copy,
    /// which already holds what the relay sent (the store may still be writing it), while the
    /// store may hold an edit the engine has not been told about yet (then: not covered).
    /// When covered, the store's pending mark goes, unless a local write came meanwhile.
    fn covered(&self, doc: &DocumentId, relay_heads: &[automerge::ChangeHash]) -> bool {
        let Ok(local) = self.store.load(doc) else { return false };
        let graph = self.engine.document(doc).unwrap_or(&local);
        if !relay_heads.iter().all(|h| graph.get_change_by_hash(h).is_some()) {
            return false;
        }
        let unacknowledged: HashSet<automerge::ChangeHash> =
            graph.get_changes(relay_heads).iter().map(|c| c.hash()).collect();
        let covered =
            local.get_heads().iter().all(|h| graph.get_change_by_hash(h).is_some() && !unacknowledged.contains(h));
        tracing::debug!(document = %doc, covered, relay_heads = relay_heads.len(), "relay heads");
        covered
            // The mark's heads are in the copy just checked: the relay holds them.
            && match self.store.acknowledge(doc, |mark| mark.iter().all(|h| local.get_change_by_hash(h).is_some())) {
                Ok(removed) => removed,
                Err(e) => {
                    tracing::warn!(document = %doc, error = %e, "cannot record the acknowledgement");
                    false
                }
            }
    }
}
