//! The catalog's side of the engine: the reserved catalog id, pages from our relay, notices to
//! one connection, and documents a device no longer needs to offer on every connection.

use super::{ConnId, ConnPhase, Engine, Event, Output, Side};
use crate::DocumentId;
use crate::sync::catalog::{CatalogRequest, catalog_doc, decode_page};
use crate::sync::wire::Message;

impl Engine {
    /// What a device asks for in its next `join` (its catalog position); `None` asks nothing.
    pub fn set_catalog_request(&mut self, request: Option<CatalogRequest>) {
        self.config.catalog = request;
    }

    /// Whether the peer on `conn` has asked about `doc` on this connection (it then hears of
    /// every change to it without a catalog page).
    pub fn is_syncing(&self, conn: ConnId, doc: &DocumentId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.touched.contains(doc))
    }

    /// A message on the reserved catalog id: a page from the relay we dialled is reported; a
    /// sync or request for the id is answered "unavailable" (no document has it); anything
    /// else is dropped, never forwarded and never loaded.
    pub(super) fn on_catalog_message(&mut self, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get(&conn) else { return };
        let ConnPhase::Ready(direct) = &c.phase else { return };
        match msg {
            Message::Ephemeral { sender_id, data, .. } => {
                if c.side != Side::Initiator || sender_id != direct.peer_id {
                    tracing::debug!(conn = conn.0, "dropping a catalog notice not sent by our relay");
                    return;
                }
                match decode_page(&data) {
                    Some(page) => self.out.push(Output::Event(Event::Catalog { conn, page })),
                    None => tracing::warn!(conn = conn.0, bytes = data.len(), "dropping a malformed catalog page"),
                }
            }
            Message::Request { .. } | Message::Sync { .. } => self.unavailable(conn, catalog_doc()),
            // The answer to a device that asked anyway.
            Message::DocUnavailable { .. } => self.on_unavailable(conn, catalog_doc()),
            _ => {}
        }
    }

    /// Sends a liaison notice (a catalog page) to one connection, on the catalog id.
    pub(super) fn on_send_notice(&mut self, conn: ConnId, data: Vec<u8>) {
        let Some(peer) = self.peer_of(conn) else { return };
        self.send_own_ephemeral(conn, peer.peer_id, catalog_doc(), data);
    }

    /// The relay has everything of `doc`: it need not be offered on the next connection (it
    /// still syncs on this one, and the catalog tells of later changes).
    pub(super) fn on_settled(&mut self, doc: DocumentId) {
        self.announced.remove(&doc);
        if let Some(d) = self.docs.get_mut(&doc) {
            d.announced = false;
        }
    }
}
