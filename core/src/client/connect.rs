//! Opening the WebSocket, and reading why it failed or closed: the relay's 401 reason
//! (`WWW-Authenticate: Bearer error="invalid_token", error_description="revoked"`, also in the
//! JSON body), 410 for a purged tenant, its close code 4001 with reason `credential revoked` or
//! `credential expired` on a live socket, a certificate not trusted, no route.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{ROUTE_HEADER, is_route_key};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The socket to the relay.
pub(super) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The relay's WebSocket close code for an authentication problem.
pub const CLOSE_AUTH: u16 = 4001;

/// How long opening a connection may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the relay refused a credential, as it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credential was sent.
    Missing,
    /// The relay does not know it (or an older relay gave no reason).
    Unknown,
    /// Its lifetime is over.
    Expired,
    /// An admin (or the IdP, at an enrolment) revoked it.
    Revoked,
}

impl Refusal {
    /// Reads the relay's reason code (`missing`, `unknown`, `expired`, `revoked`); an older
    /// relay gives none, which reads as `Unknown` (never as revoked: nothing is wiped on it).
    pub fn from_code(code: &str) -> Self {
        match code {
            "missing" => Self::Missing,
            "expired" => Self::Expired,
            "revoked" => Self::Revoked,
            _ => Self::Unknown,
        }
    }

    /// Reads the reason of a close frame with code [`CLOSE_AUTH`]: `None` for closes that are
    /// not about the credential (a peer id that does not match it, say).
    pub fn from_close_reason(reason: &str) -> Option<Self> {
        match reason {
            "credential revoked" => Some(Self::Revoked),
            "credential expired" => Some(Self::Expired),
            "credential no longer valid" => Some(Self::Unknown),
            _ => None,
        }
    }
}

/// Why a connection could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// 401, with the relay's reason.
    Unauthorized(Refusal),
    /// 410: the tenant was purged.
    Gone,
    /// The certificate was not trusted.
    Tls,
    /// No route to the relay (the network is down, whatever the app believes).
    NoRoute,
    /// Anything else, described without the request.
    Other(String),
}

impl Failure {
    pub(super) fn of(e: &WsError) -> Self {
        match e {
            WsError::Http(resp) if resp.status().as_u16() == 410 => Self::Gone,
            WsError::Http(resp) if resp.status().as_u16() == 401 => {
                Self::Unauthorized(Refusal::from_code(&auth_reason(resp.headers(), resp.body().as_deref())))
            }
            WsError::Tls(_) => Self::Tls,
            WsError::Io(io) => Self::of_io(io),
            other => Self::Other(describe(other)),
        }
    }

    pub(super) fn of_io(io: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match io.kind() {
            // tokio-rustls reports a rejected certificate as InvalidData during the handshake.
            K::InvalidData => Self::Tls,
            K::NetworkUnreachable | K::HostUnreachable | K::NetworkDown | K::AddrNotAvailable => Self::NoRoute,
            kind => Self::Other(format!("network error: {kind}")),
        }
    }
}

/// The reason code in a 401: `error_description` of `WWW-Authenticate`, else the body's
/// `reason`; empty if neither.
pub(super) fn auth_reason(headers: &tokio_tungstenite::tungstenite::http::HeaderMap, body: Option<&[u8]>) -> String {
    let from_header = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("error_description=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned);
    from_header
        .or_else(|| {
            let json: serde_json::Value = serde_json::from_slice(body?).ok()?;
            json.get("reason")?.as_str().map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Opens the WebSocket with `token` as bearer credential and `route` (the relay's routing key,
/// if one was kept) as [`ROUTE_HEADER`]. Returns the socket and the routing key the relay
/// answered with, if it sent a valid one.
pub(super) async fn connect(
    url: &str,
    token: &str,
    route: Option<&str>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(Ws, Option<String>), Failure> {
    let mut req = url.into_client_request().map_err(|_| Failure::Other("the relay URL is not valid".into()))?;
    let auth = format!("Bearer {token}")
        .parse()
        .map_err(|_| Failure::Other("the credential cannot be sent as an HTTP header".into()))?;
    req.headers_mut().insert("authorization", auth);
    if let Some(value) = route.filter(|r| is_route_key(r)).and_then(|r| r.parse().ok()) {
        req.headers_mut().insert(ROUTE_HEADER, value);
    }
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let connecting = tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(connector));
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((ws, response))) => {
            let given = response.headers().get(ROUTE_HEADER).and_then(|v| v.to_str().ok());
            Ok((ws, given.filter(|r| is_route_key(r)).map(str::to_owned)))
        }
        Ok(Err(e)) => Err(Failure::of(&e)),
        Err(_) => Err(Failure::Other("timed out".into())),
    }
}

/// Names a WebSocket failure (refused, TLS, HTTP status), never the request.
pub(super) fn describe(e: &WsError) -> String {
    match e {
        WsError::Http(resp) => format!("the relay answered HTTP {}", resp.status().as_u16()),
        WsError::Tls(_) => "TLS failed (certificate not trusted?)".into(),
        WsError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            "TLS failed (certificate not trusted?)".into()
        }
        WsError::Io(io) => format!("network error: {}", io.kind()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "connection closed".into(),
        WsError::Capacity(_) => "message too large".into(),
        WsError::Protocol(_) => "WebSocket protocol error".into(),
        _ => "connection failed".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, Response};

    use super::*;

    fn answer(status: u16, header: Option<&str>, body: &str) -> WsError {
        let mut resp = Response::new(Some(body.as_bytes().to_vec()));
        *resp.status_mut() = status.try_into().unwrap();
        if let Some(h) = header {
            resp.headers_mut().insert("www-authenticate", HeaderValue::from_str(h).unwrap());
        }
        WsError::Http(Box::new(resp))
    }

    #[test]
    fn a_401_names_its_reason_from_the_challenge_or_the_body_and_nothing_reads_as_revoked() {
        let challenge = |r: &str| format!("Bearer error=\"invalid_token\", error_description=\"{r}\"");
        let cases = [
            (answer(401, Some(&challenge("revoked")), ""), Failure::Unauthorized(Refusal::Revoked)),
            (answer(401, Some(&challenge("expired")), ""), Failure::Unauthorized(Refusal::Expired)),
            (
                answer(401, None, r#"{"error":"unauthorized","reason":"revoked"}"#),
                Failure::Unauthorized(Refusal::Revoked),
            ),
            // An older relay: no reason. Never read as revoked (nothing is wiped on it).
            (answer(401, None, r#"{"error":"unauthorized"}"#), Failure::Unauthorized(Refusal::Unknown)),
            (answer(401, None, "not json"), Failure::Unauthorized(Refusal::Unknown)),
            (answer(410, None, ""), Failure::Gone),
            (answer(503, None, ""), Failure::Other("the relay answered HTTP 503".into())),
        ];
        for (error, expected) in cases {
            assert_eq!(Failure::of(&error), expected);
        }
        assert_eq!(auth_reason(&HeaderMap::new(), None), "");
    }

    #[test]
    fn only_credential_closes_read_as_refusals() {
        assert_eq!(Refusal::from_close_reason("credential revoked"), Some(Refusal::Revoked));
        assert_eq!(Refusal::from_close_reason("credential expired"), Some(Refusal::Expired));
        assert_eq!(Refusal::from_close_reason("peer id does not match the credential"), None);
        assert_eq!(Refusal::from_close_reason("tenant purged"), None, "the reconnect reads 410");
    }

    #[test]
    fn no_route_is_no_network_and_bad_certificates_are_tls() {
        use std::io::{Error, ErrorKind};
        assert_eq!(Failure::of_io(&Error::from(ErrorKind::NetworkUnreachable)), Failure::NoRoute);
        assert_eq!(Failure::of_io(&Error::from(ErrorKind::HostUnreachable)), Failure::NoRoute);
        assert_eq!(Failure::of_io(&Error::from(ErrorKind::InvalidData)), Failure::Tls);
        assert!(matches!(Failure::of_io(&Error::from(ErrorKind::ConnectionRefused)), Failure::Other(_)));
    }

    #[tokio::test]
    async fn the_routing_key_goes_back_to_the_relay_and_only_a_valid_answer_is_kept() {
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response as Answer};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/sync", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut heard = Vec::new();
            for answer in ["0123456789abcdef", "NOT-A-KEY"] {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut sent = None;
                // The callback's signature is tungstenite's (its error is a whole response).
                #[allow(clippy::result_large_err)]
                let callback = |req: &Request, mut resp: Answer| {
                    sent = req.headers().get(ROUTE_HEADER).map(|v| v.to_str().unwrap().to_owned());
                    resp.headers_mut().insert(ROUTE_HEADER, HeaderValue::from_static(answer));
                    Ok(resp)
                };
                let ws = tokio_tungstenite::accept_hdr_async(tcp, callback).await.unwrap();
                heard.push(sent);
                drop(ws);
            }
            heard
        });
        let tls = Arc::new(crate::client::tls_config(&crate::client::Trust::System { pins: Vec::new() }).unwrap());
        let (_ws, given) = connect(&url, "token", None, tls.clone()).await.unwrap();
        assert_eq!(given.as_deref(), Some("0123456789abcdef"), "the relay's key is taken");
        let (_ws, given) = connect(&url, "token", given.as_deref(), tls).await.unwrap();
        assert_eq!(given, None, "a key that is not lowercase hex is not kept");
        let heard = server.await.unwrap();
        assert_eq!(heard, [None, Some("0123456789abcdef".to_owned())], "sent back on the next connection");
    }
}
