#![allow(clippy::unwrap_used)]

use super::*;

fn with_provider() -> AuthState {
    AuthState::new("", true)
}

#[test]
fn a_provider_is_asked_first_and_its_credential_used() {
    let mut auth = with_provider();
    assert_eq!(auth.next(), Err(Verdict::Ask(CredentialReason::Initial)));
    assert_eq!(auth.answered(CredentialReason::Initial, Answer::Credential("a".into())), None);
    assert_eq!(auth.next(), Ok("a"));
    auth.connected();
    assert_eq!(auth.next(), Ok("a"), "kept for the next connection");
}

#[test]
fn a_static_token_needs_no_provider_and_without_either_there_is_nothing_to_try() {
    assert_eq!(AuthState::new("tok", false).next(), Ok("tok"));
    assert_eq!(AuthState::new("", false).next(), Err(Verdict::Unauthorized(AuthProblem::NoCredential)));
    assert!(AuthState::new("tok", false).confirms_closes());
    assert!(!with_provider().confirms_closes());
}

#[test]
fn a_revocation_asks_the_provider_and_a_new_credential_connects() {
    let mut auth = AuthState::new("a", true);
    auth.connected();
    assert_eq!(auth.refused(Refusal::Revoked), Verdict::Ask(CredentialReason::Revoked));
    assert_eq!(auth.answered(CredentialReason::Revoked, Answer::Credential("b".into())), None);
    assert_eq!(auth.next(), Ok("b"));
}

#[test]
fn a_revocation_wipes_only_when_no_new_credential_comes() {
    for answer in [Answer::Nothing, Answer::Credential("a".into()), Answer::EnrolmentRefused("no-role".into())] {
        let mut auth = AuthState::new("a", true);
        auth.connected();
        assert_eq!(auth.refused(Refusal::Revoked), Verdict::Ask(CredentialReason::Revoked));
        assert_eq!(auth.answered(CredentialReason::Revoked, answer.clone()), Some(Verdict::Revoked), "{answer:?}");
    }
    // A failing provider (the IdP unreachable) never wipes: it is asked again later.
    let mut auth = AuthState::new("a", true);
    auth.refused(Refusal::Revoked);
    assert_eq!(
        auth.answered(CredentialReason::Revoked, Answer::Failed),
        Some(Verdict::Unauthorized(AuthProblem::ProviderFailed))
    );
    // Without a provider, the relay's "revoked" at connect is final.
    let mut alone = AuthState::new("a", false);
    assert_eq!(alone.refused(Refusal::Revoked), Verdict::Revoked);
}

#[test]
fn expired_or_unknown_credentials_never_wipe() {
    for refusal in [Refusal::Expired, Refusal::Unknown, Refusal::Missing] {
        let mut auth = AuthState::new("a", true);
        assert_eq!(auth.refused(refusal), Verdict::Ask(CredentialReason::Expired));
        for answer in [
            Answer::Nothing,
            Answer::Credential("a".into()),
            Answer::Failed,
            Answer::EnrolmentRefused("expired".into()),
        ] {
            let verdict = auth.answered(CredentialReason::Expired, answer.clone());
            assert!(matches!(verdict, Some(Verdict::Unauthorized(_))), "{refusal:?} {answer:?}: {verdict:?}");
        }
        let mut alone = AuthState::new("a", false);
        assert!(matches!(alone.refused(refusal), Verdict::Unauthorized(_)));
    }
}

#[test]
fn the_provider_is_asked_at_most_once_per_backoff_and_twice_between_connections() {
    let mut auth = AuthState::new("a", true);
    auth.refused(Refusal::Expired);
    let mut asks = 0;
    // A provider that keeps failing: each attempt may ask once, never more.
    for _attempt in 0..10 {
        while let Err(Verdict::Ask(reason)) = auth.next() {
            asks += 1;
            assert!(auth.answered(reason, Answer::Failed).is_some());
            if asks > 100 {
                panic!("the provider is asked in a loop");
            }
        }
        auth.backed_off();
    }
    assert!(asks <= 11, "asked {asks} times in 10 attempts");
    // A provider whose credentials the relay keeps refusing: asked at most MAX_ASKS times.
    let mut auth = AuthState::new("a", true);
    let mut verdict = auth.refused(Refusal::Expired);
    let mut asks = 0;
    while let Verdict::Ask(reason) = verdict {
        asks += 1;
        assert_eq!(auth.answered(reason, Answer::Credential(format!("t{asks}"))), None);
        verdict = auth.refused(Refusal::Expired);
    }
    assert_eq!(asks, MAX_ASKS);
    assert_eq!(verdict, Verdict::Unauthorized(AuthProblem::Expired));
}

#[test]
fn retrying_sign_in_asks_the_provider_afresh() {
    let mut auth = AuthState::new("a", true);
    auth.refused(Refusal::Revoked);
    auth.answered(CredentialReason::Revoked, Answer::Nothing);
    auth.retry();
    assert_eq!(auth.next(), Err(Verdict::Ask(CredentialReason::Initial)));
    let mut alone = AuthState::new("a", false);
    alone.refused(Refusal::Expired);
    alone.retry();
    assert_eq!(alone.next(), Ok("a"), "a static token is tried again");
}
