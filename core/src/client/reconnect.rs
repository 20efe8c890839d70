//! The loop that owns the connection: get a credential (static, or from the app's provider,
//! exchanged by enrolment if it is an IdP token), connect, run the session, and after it ends
//! decide: reconnect now (a new credential), back off (jittered, doubling, cut short by a
//! network change or `retry_sign_in`), or stop (revoked, retired) after wiping the local records.

use std::time::Duration;

use tokio::sync::mpsc;

use super::auth::{Answer, Verdict};
use super::connect::{Failure, connect};
use super::credentials::{Credential, CredentialReason, EnrolFailure, enrol};
use super::{Cmd, ConnState, Driver, Ended, Network, SyncProblem, WipeReason, now_ms};

/// How long the app's provider may take before it counts as failed.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(60);

/// What the loop does after an attempt.
enum Next {
    /// Try again at once (a new credential came, or the network changed).
    Now,
    /// Wait, then try again.
    Backoff,
    /// Stopped: revoked or retired.
    Halt,
    Shutdown,
}

impl Driver {
    pub(super) async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut attempt: u32 = 0;
        loop {
            if self.halted {
                // Revoked or retired: nothing is tried (no socket, no provider call) until the
                // app asks to sign in again.
                match cmds.recv().await {
                    None | Some(Cmd::Shutdown) => return,
                    Some(c) => self.offline_cmd(c).await,
                }
                attempt = 0;
                continue;
            }
            if self.network != Network::Up {
                let down = self.network == Network::Down;
                self.publish(|s| {
                    s.state = ConnState::Offline;
                    s.next_attempt_ms = None;
                    s.problem = down.then_some(SyncProblem::NoNetwork);
                });
                match cmds.recv().await {
                    None | Some(Cmd::Shutdown) => return,
                    Some(c) => self.offline_cmd(c).await,
                }
                continue;
            }
            self.publish(|s| {
                s.state = ConnState::Connecting;
                s.next_attempt_ms = None;
            });
            match self.attempt(&mut cmds, &mut attempt).await {
                Next::Now => continue,
                Next::Shutdown => return,
                Next::Halt => continue,
                Next::Backoff => {}
            }
            if !self.back_off(&mut cmds, &mut attempt).await {
                return;
            }
        }
    }

    /// One attempt: a credential, a connection, a session.
    async fn attempt(&mut self, cmds: &mut mpsc::UnboundedReceiver<Cmd>, attempt: &mut u32) -> Next {
        let token = match self.auth.next() {
            Ok(token) => token.to_owned(),
            Err(Verdict::Ask(reason)) => return self.ask(reason).await,
            Err(verdict) => return self.verdict(verdict).await,
        };
        let route = self.store.route().ok().flatten();
        let ended = match connect(&self.options.url, &token, route.as_deref(), self.tls.clone()).await {
            Ok((ws, given)) => {
                *attempt = 0;
                if let Some(given) = given.filter(|g| route.as_ref() != Some(g))
                    && let Err(e) = self.store.set_route(&given)
                {
                    tracing::warn!(error = %e, "cannot keep the relay's routing key");
                }
                self.auth.connected();
                self.session(ws, cmds).await
            }
            Err(Failure::Unauthorized(refusal)) => {
                self.refused_by = (Some(401), None);
                let verdict = self.auth.refused(refusal);
                return self.verdict(verdict).await;
            }
            Err(failure) => return self.failed(failure).await,
        };
        self.publish(|s| s.state = ConnState::Offline);
        match ended {
            Ended::Shutdown => Next::Shutdown,
            Ended::Network(n) => {
                self.network = n;
                Next::Now
            }
            Ended::Refused(refusal) if self.auth.confirms_closes() => {
                // No provider to ask: reconnect, and the relay's 401 decides.
                self.lost(format!("closed by the relay: credential {refusal:?}").to_lowercase());
                Next::Backoff
            }
            Ended::Refused(refusal) => {
                tracing::info!(?refusal, "the relay closed the connection for its credential");
                self.refused_by = (None, Some(super::CLOSE_AUTH));
                let verdict = self.auth.refused(refusal);
                self.verdict(verdict).await
            }
            Ended::Lost(why) => {
                self.lost(why);
                Next::Backoff
            }
        }
    }

    fn lost(&mut self, why: String) {
        tracing::info!(reason = %why, "connection to the relay lost");
        self.publish(|s| {
            s.last_error = Some(why);
            s.problem = None;
        });
    }

    /// Asks the provider (exchanging an IdP token by enrolment); its answer goes to the state
    /// machine.
    async fn ask(&mut self, reason: CredentialReason) -> Next {
        let Some(provider) = self.options.credentials.clone() else {
            return self.verdict(Verdict::Unauthorized(super::AuthProblem::NoCredential)).await;
        };
        tracing::info!(?reason, "asking the app for a credential");
        let answer = match tokio::time::timeout(PROVIDER_TIMEOUT, provider.credential(reason)).await {
            Ok(Ok(Some(Credential::Device(token)))) => Answer::Credential(token),
            Ok(Ok(Some(Credential::IdpAccessToken(idp)))) => {
                match enrol(&self.options.url, &idp, &self.options.peer_id, self.tls.clone()).await {
                    Ok(issued) => {
                        tracing::info!("enrolled: the relay issued a device credential");
                        let token = issued.token.clone();
                        provider.issued(issued);
                        Answer::Credential(token)
                    }
                    Err(EnrolFailure::Refused(code)) => {
                        tracing::info!(reason = %code, "the relay refused the identity provider's token");
                        self.refused_by = (Some(401), None);
                        Answer::EnrolmentRefused(code)
                    }
                    Err(EnrolFailure::Connect(failure)) => {
                        let _ = self.auth.answered(reason, Answer::Failed);
                        return self.failed(failure).await;
                    }
                }
            }
            Ok(Ok(None)) => Answer::Nothing,
            Ok(Err(_)) | Err(_) => Answer::Failed,
        };
        match self.auth.answered(reason, answer) {
            None => Next::Now,
            Some(verdict) => self.verdict(verdict).await,
        }
    }

    /// Carries out what the state machine decided.
    async fn verdict(&mut self, verdict: Verdict) -> Next {
        let (http_status, close_code) = self.refused_by;
        match verdict {
            Verdict::Ask(_) => Next::Now,
            Verdict::Unauthorized(reason) => {
                let problem = SyncProblem::Unauthorized { http_status, close_code, reason };
                tracing::info!(problem = %problem, "no working credential");
                let text = problem.to_string();
                self.publish(|s| {
                    s.problem = Some(problem);
                    s.last_error = Some(text);
                    s.state = ConnState::Offline;
                });
                Next::Backoff
            }
            Verdict::Revoked => {
                let problem = SyncProblem::Revoked { http_status, close_code, wiped: true };
                self.wipe(WipeReason::Revoked, problem).await;
                Next::Halt
            }
        }
    }

    /// A connection (or enrolment) that failed for a reason other than the credential.
    async fn failed(&mut self, failure: Failure) -> Next {
        let (problem, text) = match failure {
            Failure::Gone => {
                self.wipe(WipeReason::Retired, SyncProblem::Retired).await;
                return Next::Halt;
            }
            Failure::Tls => (Some(SyncProblem::TlsUntrusted), "TLS failed (certificate not trusted?)".to_owned()),
            Failure::NoRoute => (Some(SyncProblem::NoNetwork), "network error: no route to the relay".to_owned()),
            Failure::Unauthorized(r) => (None, format!("the relay refused the credential ({r:?})")),
            Failure::Other(text) => (None, text),
        };
        tracing::info!(reason = %text, "cannot connect to the relay");
        self.publish(|s| {
            s.problem = problem;
            s.last_error = Some(text);
            s.state = ConnState::Offline;
        });
        Next::Backoff
    }

    /// Jittered exponential backoff, interrupted by commands (a network change or
    /// `retry_sign_in` retries now). `false` on shutdown.
    async fn back_off(&mut self, cmds: &mut mpsc::UnboundedReceiver<Cmd>, attempt: &mut u32) -> bool {
        let base = self.options.backoff_min.saturating_mul(1 << (*attempt).min(16)).min(self.options.backoff_max);
        let jitter = f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 255.0;
        let delay = base.mul_f64(0.5 + 0.5 * jitter);
        *attempt = attempt.saturating_add(1);
        self.auth.backed_off();
        let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let next_attempt_ms = now_ms().saturating_add(i64::try_from(retry_in_ms).unwrap_or(i64::MAX));
        self.publish(|s| {
            s.state = ConnState::Offline;
            s.next_attempt_ms = Some(next_attempt_ms);
            // Unauthorized, TLS and no-network keep their problem; the rest is backing off.
            if matches!(s.problem, None | Some(SyncProblem::BackingOff { .. })) {
                s.problem = Some(SyncProblem::BackingOff { retry_in_ms, next_attempt_ms });
            }
        });
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                c = cmds.recv() => match c {
                    None | Some(Cmd::Shutdown) => return false,
                    Some(Cmd::Network(n)) => {
                        self.network = n;
                        *attempt = 0;
                        return true;
                    }
                    Some(Cmd::RetrySignIn) => {
                        self.retry_sign_in();
                        *attempt = 0;
                        return true;
                    }
                    Some(c) => self.offline_cmd(c).await,
                }
            }
        }
    }

    /// The app asks to sign in again: the provider is asked afresh, a halted client resumes.
    pub(super) fn retry_sign_in(&mut self) {
        self.auth.retry();
        self.halted = false;
        self.refused_by = (None, None);
        self.publish(|s| s.problem = None);
    }
}
