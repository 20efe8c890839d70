//! Where the device's credential comes from: a static token (installations without an identity
//! provider), or the app's [`CredentialProvider`] (MSAL, AppAuth), asked on first connect, after
//! a 401 at connect and after the relay cuts a live socket for its credential.
//!
//! The provider returns a liaison device credential (one it kept from an earlier enrolment) or
//! the identity provider's access token, which the library exchanges once through
//! `POST /v1/enrol` (over the same TLS trust and pins as the socket) for a device credential.
//! The library keeps that credential in memory only and hands it to
//! [`CredentialProvider::issued`], so the app can keep it in the Keychain/Keystore and return it
//! as [`Credential::Device`] next time (no enrolment, no IdP round trip per app start). Nothing
//! here writes a credential to disk or a log.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::connect::{CONNECT_TIMEOUT, Failure, Refusal, auth_reason};

/// What the provider hands the library.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A liaison device credential (`lsn_...`), issued by an admin or an earlier enrolment.
    Device(String),
    /// An identity provider's access token, for `POST /v1/enrol`.
    IdpAccessToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Device(_) => "Credential::Device(..)",
            Self::IdpAccessToken(_) => "Credential::IdpAccessToken(..)",
        })
    }
}

/// Why the library asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialReason {
    /// First connection of this client: a kept device credential is fine.
    Initial,
    /// The relay refused the credential as expired or unknown: a new one is needed (a kept
    /// device credential is stale; acquire a fresh IdP token silently).
    Expired,
    /// The relay revoked the credential: only a fresh enrolment helps. Returning nothing (or
    /// the same credential) makes the library wipe the local records.
    Revoked,
}

/// A device credential the library got by enrolment, for the app to keep.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCredential {
    /// The secret: keep it in the Keychain/Keystore only.
    pub token: String,
    /// When it expires (ms since the epoch), if it does.
    pub expires_at_ms: Option<i64>,
}

impl std::fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredential").field("expires_at_ms", &self.expires_at_ms).finish_non_exhaustive()
    }
}

/// The provider could not produce a credential now (the IdP unreachable, say). Distinct from
/// "none" (`Ok(None)`): a failure is asked again after the backoff and never wipes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the credential provider failed")]
pub struct ProviderFailed;

/// The app's source of credentials (see the module docs for the contract).
///
/// Called from the client's task, one call at a time, never more than once per connection
/// attempt; a provider that blocks should do its work on its own thread (the ffi runs foreign
/// providers on a blocking thread). It must not show UI: return `Ok(None)` when the user has to
/// sign in interactively, and call the client's `retry_sign_in` once they did.
pub trait CredentialProvider: Send + Sync + std::fmt::Debug {
    /// A credential for the relay, `Ok(None)` if there is none (signed out).
    fn credential(&self, reason: CredentialReason) -> BoxFuture<'static, Result<Option<Credential>, ProviderFailed>>;

    /// A device credential issued by enrolment with a token from [`CredentialProvider::credential`].
    fn issued(&self, credential: IssuedCredential);
}

/// Why an enrolment failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EnrolFailure {
    /// 401 with the relay's reason code (`no-role` means the IdP gives the user no role).
    Refused(String),
    /// The connection or the relay failed (no wipe, retried after the backoff).
    Connect(Failure),
}

/// `https://host:port/v1/enrol` from the sync URL `wss://host:port/v1/sync`.
pub(super) fn enrol_url(sync_url: &str) -> Option<(String, u16, String)> {
    let rest = sync_url.strip_prefix("wss://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        (host, rest.strip_prefix(':').map_or(Some(443), |p| p.parse().ok())?)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, 443),
        }
    };
    Some((host.to_owned(), port, authority.to_owned()))
}

/// Exchanges an IdP access token for a device credential: one HTTPS POST to `/v1/enrol` over
/// `tls` (the socket's trust and pins), `Connection: close`, answer read whole (at most 64 KiB).
pub(super) async fn enrol(
    sync_url: &str,
    idp_token: &str,
    device: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<IssuedCredential, EnrolFailure> {
    let fail = |what: &str| EnrolFailure::Connect(Failure::Other(what.to_owned()));
    let (host, port, authority) = enrol_url(sync_url).ok_or_else(|| fail("the relay URL is not wss://"))?;
    let body = serde_json::json!({ "device": device }).to_string();
    let request = format!(
        "POST /v1/enrol HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {idp_token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| Failure::of_io(&e))?;
        let name =
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| Failure::Other("bad host".into()))?;
        let mut stream =
            tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| Failure::of_io(&e))?;
        stream.write_all(request.as_bytes()).await.map_err(|e| Failure::of_io(&e))?;
        stream.flush().await.map_err(|e| Failure::of_io(&e))?;
        let mut answer = Vec::new();
        let read = (&mut stream).take(64 * 1024).read_to_end(&mut answer).await;
        // A server that closes without close_notify still gave its whole answer.
        if let Err(e) = read
            && answer.is_empty()
        {
            return Err(Failure::of_io(&e));
        }
        Ok(answer)
    };
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, exchange)
        .await
        .map_err(|_| fail("timed out"))?
        .map_err(EnrolFailure::Connect)?;
    read_answer(&answer)
}

/// Reads the relay's answer to an enrolment.
fn read_answer(answer: &[u8]) -> Result<IssuedCredential, EnrolFailure> {
    let bad = || EnrolFailure::Connect(Failure::Other("the relay's enrolment answer is unreadable".into()));
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| bad())?;
    let body = &answer[split + 4..];
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let mut headers = tokio_tungstenite::tungstenite::http::HeaderMap::new();
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(n), Ok(v)) = (
                tokio_tungstenite::tungstenite::http::HeaderName::try_from(name.trim()),
                tokio_tungstenite::tungstenite::http::HeaderValue::try_from(value.trim()),
            )
        {
            headers.append(n, v);
        }
    }
    match status {
        201 | 200 => {
            let json: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad())?;
            let token = json.get("token").and_then(|t| t.as_str()).ok_or_else(bad)?.to_owned();
            Ok(IssuedCredential { token, expires_at_ms: json.get("expires_at").and_then(serde_json::Value::as_i64) })
        }
        401 => Err(EnrolFailure::Refused(auth_reason(&headers, Some(body)))),
        410 => Err(EnrolFailure::Connect(Failure::Gone)),
        other => Err(EnrolFailure::Connect(Failure::Other(format!("enrolment answered HTTP {other}")))),
    }
}

/// The reason code an enrolment refusal means "this user has no role any more": treated as a
/// revocation (the relay revoked every credential of the user).
pub(super) const NO_ROLE: &str = "no-role";

impl From<Refusal> for CredentialReason {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Revoked => Self::Revoked,
            Refusal::Missing | Refusal::Unknown | Refusal::Expired => Self::Expired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enrolment_url_follows_the_sync_url() {
        assert_eq!(
            enrol_url("wss://relay.example/v1/sync"),
            Some(("relay.example".into(), 443, "relay.example".into()))
        );
        assert_eq!(
            enrol_url("wss://127.0.0.1:8443/v1/sync"),
            Some(("127.0.0.1".into(), 8443, "127.0.0.1:8443".into()))
        );
        assert_eq!(enrol_url("wss://[::1]:8443/v1/sync"), Some(("::1".into(), 8443, "[::1]:8443".into())));
        assert_eq!(enrol_url("ws://plain/v1/sync"), None, "never an IdP token in clear");
    }

    #[test]
    fn enrolment_answers_read_as_a_credential_a_refusal_or_a_failure() {
        let ok =
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\r\n{\"token\":\"lsn_x\",\"expires_at\":42}";
        assert_eq!(read_answer(ok), Ok(IssuedCredential { token: "lsn_x".into(), expires_at_ms: Some(42) }));
        let no_role = b"HTTP/1.1 401 Unauthorized\r\n\r\n{\"error\":\"unauthorized\",\"reason\":\"no-role\"}";
        assert_eq!(read_answer(no_role), Err(EnrolFailure::Refused(NO_ROLE.into())));
        let gone = b"HTTP/1.1 410 Gone\r\n\r\n{}";
        assert_eq!(read_answer(gone), Err(EnrolFailure::Connect(Failure::Gone)));
        assert!(matches!(
            read_answer(b"HTTP/1.1 503 Unavailable\r\n\r\n"),
            Err(EnrolFailure::Connect(Failure::Other(_)))
        ));
        assert!(matches!(read_answer(b"garbage"), Err(EnrolFailure::Connect(Failure::Other(_)))));
        let issued = IssuedCredential { token: "lsn_secret".into(), expires_at_ms: None };
        assert!(!format!("{issued:?}{:?}", Credential::Device("lsn_secret".into())).contains("secret"));
    }
}
