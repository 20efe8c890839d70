//! How the actor ends connections: one function, [`Actor::end`], for every close the actor
//! decides (revoked or expired credentials, a client too slow to read, the engine's own closes,
//! shutdown), so each connection is closed and counted once.

use liaison_core::sync::engine::CloseReason;
use liaison_core::sync::{ConnId, Input};

use super::{Actor, close};
use crate::auth::{AuthError, Principal};
use crate::now_ms;

/// How the actor ends a connection (see `Actor::end`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Ending {
    /// A close frame with this code and reason, after what is queued.
    Close(u16, &'static str),
    /// At once, dropping what is queued (the task may be blocked on the socket).
    Cut(&'static str),
}

pub(super) fn close_reason(r: &CloseReason) -> (u16, &'static str) {
    match r {
        CloseReason::Malformed(_) => (close::PROTOCOL, "malformed frame"),
        CloseReason::FrameTooLarge => (close::TOO_BIG, "frame too large"),
        CloseReason::ChangesTooLarge => (close::TOO_BIG, "changes too large"),
        CloseReason::Crashed => (close::INTERNAL, "changes could not be applied"),
        CloseReason::ProtocolViolation(_) => (close::PROTOCOL, "protocol violation"),
        CloseReason::UnsupportedVersion => (close::PROTOCOL, "unsupported protocol version"),
        CloseReason::HandshakeTimeout => (close::PROTOCOL, "handshake timeout"),
        CloseReason::TooManyDocuments => (close::LIMIT, "too many documents on one connection"),
        CloseReason::TooMuchWaiting => (close::LIMIT, "too much waiting for loads on one connection"),
        CloseReason::Rejected(r) => (close::AUTH, crate::policy::rejection_text(r)),
        CloseReason::PeerError(_) => (close::PROTOCOL, "peer reported an error"),
        CloseReason::PeerLeft => (close::GOING_AWAY, "peer left"),
        CloseReason::ByApplication(_) => (close::AUTH, "closed by the relay"),
        CloseReason::StoreUnavailable => (close::TRY_LATER, "store unavailable, try again later"),
    }
}

/// One connection's re-check: its principal as read, and what its token says now.
pub(super) type Checked = (ConnId, Principal, Result<Principal, AuthError>);

impl Actor {
    /// The one way the actor ends a connection: counted once under its reason (by whichever
    /// ends it first, the actor or the connection's task), told to the connection's task, and
    /// forgotten. `false` if it had ended already. The engine is not told: a caller whose
    /// engine still holds the connection says `Input::Disconnected`.
    pub(super) fn end(&mut self, conn: ConnId, ending: Ending) -> bool {
        let Some(outbox) = self.outboxes.remove(&conn) else { return false };
        let reason = match ending {
            Ending::Close(code, reason) => {
                outbox.close(code, reason);
                reason
            }
            Ending::Cut(reason) => {
                outbox.cut();
                reason
            }
        };
        if outbox.first_to_end() {
            self.metrics.closed(reason);
        }
        self.principals.remove(conn);
        self.unsubscribe(conn);
        self.metrics.connections_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// The connection's task ended (and counted its reason, if it had one).
    pub(super) fn forget(&mut self, conn: ConnId) {
        if self.outboxes.remove(&conn).is_some() {
            self.principals.remove(conn);
            self.unsubscribe(conn);
            self.metrics.connections_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            self.input(Input::Disconnected { conn });
        }
    }

    /// Re-checks every connection's token and grants now, on the actor: revoked or expired
    /// ones are closed, changed grants take effect on the live connection. For the moments
    /// that must act at once (a purge, an admin's change); the once-a-second re-check reads
    /// off the actor (`recheck_in_background`).
    pub(super) fn recheck(&mut self) {
        let now = now_ms();
        let checked: Vec<Checked> = self
            .principals
            .all()
            .into_iter()
            .map(|(conn, p)| {
                let r = self.auth.check_hash(&p.token_hash, now);
                (conn, p, r)
            })
            .collect();
        self.apply_recheck(checked);
    }

    /// The once-a-second re-check: the reads (several per connection; round trips on
    /// PostgreSQL, where a thousand devices made them most of the actor's second) run on a
    /// blocking thread and come back as `ActorMsg::Rechecked`. One at a time.
    pub(super) fn recheck_in_background(&mut self) {
        if self.rechecking {
            return;
        }
        self.rechecking = true;
        let (auth, tx, all) = (self.auth.clone(), self.tx.clone(), self.principals.all());
        tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let checked: Vec<Checked> = all
                .into_iter()
                .map(|(conn, p)| {
                    let r = auth.check_hash(&p.token_hash, now);
                    (conn, p, r)
                })
                .collect();
            let _ = tx.blocking_send(super::ActorMsg::Rechecked(checked));
        });
    }

    /// Acts on a re-check's results; a connection whose principal changed since it was read
    /// (it ended, or an immediate re-check already acted) is left for the next one.
    pub(super) fn apply_recheck(&mut self, checked: Vec<Checked>) {
        let mut changed = false;
        for (conn, p, result) in checked {
            if self.principals.get(conn).is_none_or(|now| now.token_hash != p.token_hash) {
                continue;
            }
            match result {
                Ok(fresh) => {
                    let current = self.principals.get(conn).unwrap_or(p);
                    if fresh.teams != current.teams || fresh.role != current.role || fresh.support != current.support {
                        self.principals.set(conn, fresh);
                        changed = true;
                    }
                }
                Err(e) => {
                    let why = match e {
                        AuthError::Revoked => "credential revoked",
                        AuthError::Expired => "credential expired",
                        AuthError::TenantPurged => "tenant purged",
                        _ => "credential no longer valid",
                    };
                    if self.end(conn, Ending::Close(close::AUTH, why)) {
                        self.input(Input::Disconnected { conn });
                    }
                }
            }
        }
        if changed {
            self.input(Input::AccessChanged { conn: None });
        }
    }
}
