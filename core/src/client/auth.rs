//! The credential's state machine, without IO: which credential the next connection uses, and
//! what a refusal leads to (ask the provider, back off as unauthorized, or stop and wipe as
//! revoked). The driver (`mod.rs`) carries the verdicts out.
//!
//! Rules, each tested below:
//! - The provider is asked at most [`MAX_ASKS`] times between two successful connections, and
//!   once per connection attempt: a provider with nothing to give cannot make the client spin.
//! - Local records are wiped only when the relay said *revoked* (HTTP 401 `revoked`, close
//!   4001 `credential revoked`, or an enrolment refused with `no-role`) and no new credential
//!   came: the provider returned nothing, the same credential again, or there is no provider.
//!   Never on a network error, a provider failure, or an expired credential.

use super::connect::Refusal;
use super::credentials::CredentialReason;
use super::status::AuthProblem;

/// Provider calls at most between two successful connections.
pub(super) const MAX_ASKS: u32 = 2;

/// What a refusal leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Ask the provider for a new credential, telling it why.
    Ask(CredentialReason),
    /// No working credential: back off, then try (and ask) again.
    Unauthorized(AuthProblem),
    /// Revoked for good: wipe the local records and stop until the app retries sign-in.
    Revoked,
}

/// What the provider answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// A device credential (given, or obtained by enrolment).
    Credential(String),
    /// Nothing to give (signed out).
    Nothing,
    /// It failed (retried after the backoff).
    Failed,
    /// An IdP token the relay refused at enrolment, with its reason code.
    EnrolmentRefused(String),
}

/// The credential side of one client.
#[derive(Debug)]
pub(super) struct AuthState {
    /// Whether there is a provider to ask.
    has_provider: bool,
    /// The device credential in use (memory only).
    current: Option<String>,
    /// Provider calls since the last successful connection.
    asks: u32,
    /// The last refusal the relay gave, while unresolved.
    refusal: Option<Refusal>,
}

impl AuthState {
    /// `token`: a static credential (empty for none).
    pub(super) fn new(token: &str, has_provider: bool) -> Self {
        let current = (!token.is_empty()).then(|| token.to_owned());
        Self { has_provider, current, asks: 0, refusal: None }
    }

    /// The credential to connect with, or why there is none (ask the provider first, or give up).
    pub(super) fn next(&self) -> Result<&str, Verdict> {
        match (&self.current, self.refusal) {
            (Some(token), None) => Ok(token),
            (_, Some(refusal)) => Err(self.refused_verdict(refusal)),
            (None, None) if self.has_provider && self.asks < MAX_ASKS => Err(Verdict::Ask(CredentialReason::Initial)),
            (None, None) => Err(Verdict::Unauthorized(AuthProblem::NoCredential)),
        }
    }

    /// A connection succeeded: the provider may be asked afresh next time.
    pub(super) fn connected(&mut self) {
        self.asks = 0;
        self.refusal = None;
    }

    /// The relay refused the current credential (at connect or by closing a live socket).
    pub(super) fn refused(&mut self, refusal: Refusal) -> Verdict {
        self.refusal = Some(refusal);
        self.refused_verdict(refusal)
    }

    fn refused_verdict(&self, refusal: Refusal) -> Verdict {
        if self.has_provider && self.asks < MAX_ASKS {
            return Verdict::Ask(refusal.into());
        }
        match refusal {
            Refusal::Revoked => Verdict::Revoked,
            Refusal::Expired => Verdict::Unauthorized(AuthProblem::Expired),
            Refusal::Unknown => Verdict::Unauthorized(AuthProblem::Unknown),
            Refusal::Missing => Verdict::Unauthorized(AuthProblem::NoCredential),
        }
    }

    /// The provider answered (asked with `reason`): `None` to connect with the credential now,
    /// else what to report.
    pub(super) fn answered(&mut self, reason: CredentialReason, answer: Answer) -> Option<Verdict> {
        self.asks += 1;
        let revoked = reason == CredentialReason::Revoked;
        match answer {
            Answer::Credential(token) if self.refusal.is_some() && self.current.as_deref() == Some(token.as_str()) => {
                // The refused credential again: the provider has nothing new.
                Some(if revoked { Verdict::Revoked } else { Verdict::Unauthorized(AuthProblem::NoCredential) })
            }
            Answer::Credential(token) => {
                self.current = Some(token);
                self.refusal = None;
                None
            }
            Answer::Nothing if revoked => Some(Verdict::Revoked),
            Answer::Nothing => Some(Verdict::Unauthorized(AuthProblem::NoCredential)),
            Answer::Failed => Some(Verdict::Unauthorized(AuthProblem::ProviderFailed)),
            Answer::EnrolmentRefused(code) if code == super::credentials::NO_ROLE => Some(Verdict::Revoked),
            Answer::EnrolmentRefused(code) => Some(Verdict::Unauthorized(AuthProblem::EnrolmentRefused(code))),
        }
    }

    /// The app asked to sign in again (after an interactive sign-in, or after `Revoked`).
    pub(super) fn retry(&mut self) {
        self.asks = 0;
        self.refusal = None;
        if self.has_provider {
            // The refused credential is forgotten; the provider is asked first.
            self.current = None;
        }
    }

    /// Whether a live socket cut for its credential is first confirmed by reconnecting (no
    /// provider: the 401's reason decides) rather than by asking the provider.
    pub(super) fn confirms_closes(&self) -> bool {
        !self.has_provider
    }

    /// A new backoff period: one more provider call is allowed (at most one per attempt).
    pub(super) fn backed_off(&mut self) {
        self.asks = self.asks.min(MAX_ASKS - 1);
    }
}

#[cfg(test)]
mod tests;
