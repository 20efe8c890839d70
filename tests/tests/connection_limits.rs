//! End-to-end: the relay's HTTP connection limits. A client that stalls before its request head
//! ends is disconnected; connections beyond `max_http_connections` are closed at once; one token
//! opens at most `max_connections_per_token` WebSockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use liaison_core::client::{Trust, tls_config};
use liaison_e2e::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;
type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn relay_with(limits: &str) -> (tempfile::TempDir, Relay) {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("relay.toml");
    std::fs::write(&config, format!("[limits]\n{limits}")).unwrap();
    let relay = Relay::start(data.path(), &["--config", config.to_str().unwrap()]).unwrap();
    (data, relay)
}

fn addr(relay: &Relay) -> SocketAddr {
    relay.base.trim_start_matches("https://").parse().unwrap()
}

/// A TCP connection, not yet speaking TLS, that gives up reading after `WAIT`.
fn tcp(relay: &Relay) -> TcpStream {
    let tcp = TcpStream::connect(addr(relay)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp
}

/// A TLS connection to the relay, pinned to its certificate; the handshake is done.
fn tls(relay: &Relay) -> std::io::Result<TlsStream> {
    let config = Arc::new(tls_config(&Trust::PinnedKeys { pins: vec![relay.spki_pin] }).unwrap());
    let name = rustls::pki_types::ServerName::try_from("localhost".to_owned()).unwrap();
    let mut stream = rustls::StreamOwned::new(rustls::ClientConnection::new(config, name).unwrap(), tcp(relay));
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Reads until the relay closes the connection; returns what it sent, or `None` if it did not
/// close it within `WAIT`.
fn until_closed(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return None;
            }
            // A reset, or TCP closed without TLS's close_notify: closed all the same.
            Err(_) => return Some(received),
        }
    }
}

/// `GET /healthz` on an open connection, keeping it open; the answer proves the relay serves it.
fn healthz(stream: &mut TlsStream) -> std::io::Result<()> {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    stream.flush()?;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while !received.ends_with(b"\r\n\r\nok\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        received.extend_from_slice(&buf[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&received));
    Ok(())
}

/// Opens a connection and stops at some point before the request head ends.
type Stall = fn(&Relay) -> Box<dyn Read>;

#[test]
fn a_client_that_stalls_before_its_request_head_ends_is_disconnected() {
    let timeout = Duration::from_secs(1);
    let (_data, relay) = relay_with("header_read_timeout_secs = 1\n");
    // Each client stalls at a different point; all run at once.
    let stalls: [(&str, Stall); 4] = [
        ("half a request line", |relay| {
            let mut stream = tls(relay).unwrap();
            stream.write_all(b"GET /v1/sync HT").unwrap();
            stream.flush().unwrap();
            Box::new(stream)
        }),
        ("a request line without the headers' end", |relay| {
            let mut stream = tls(relay).unwrap();
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").unwrap();
            stream.flush().unwrap();
            Box::new(stream)
        }),
        ("nothing after the TLS handshake", |relay| Box::new(tls(relay).unwrap())),
        ("part of the HTTP/2 preface", |relay| {
            let mut stream = tls(relay).unwrap();
            stream.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
            stream.flush().unwrap();
            Box::new(stream)
        }),
    ];
    std::thread::scope(|scope| {
        let mut running = Vec::new();
        for (what, stall) in stalls {
            let relay = &relay;
            running.push(scope.spawn(move || {
                let started = Instant::now();
                let mut stream = stall(relay);
                let closed = until_closed(&mut stream);
                (what, closed, started.elapsed())
            }));
        }
        running.push(scope.spawn(|| {
            // No TLS handshake at all.
            let started = Instant::now();
            let mut stream = tcp(&relay);
            ("no TLS handshake", until_closed(&mut stream), started.elapsed())
        }));
        let mut failures = Vec::new();
        for client in running {
            let (what, closed, after) = client.join().unwrap();
            let Some(sent) = closed else {
                failures.push(format!("{what}: still open after {after:?}"));
                continue;
            };
            let sent = String::from_utf8_lossy(&sent);
            if after < timeout || after > timeout + Duration::from_secs(5) {
                failures.push(format!("{what}: closed after {after:?}"));
            } else if !sent.is_empty() {
                failures.push(format!("{what}: the relay sent {sent}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
    // A client that sends its request in time is served.
    assert_eq!(relay.get_text("/healthz"), "ok\n");
}

#[test]
fn connections_beyond_max_http_connections_are_closed_at_once() {
    // A long header timeout: a connection closed at once is refused, not timed out.
    let (_data, relay) = relay_with("max_connections = 2\nmax_http_connections = 3\nheader_read_timeout_secs = 60\n");
    let mut open: Vec<TlsStream> = (0..3).map(|_| tls(&relay).unwrap()).collect();
    for stream in &mut open {
        healthz(stream).unwrap();
    }

    // The fourth connection is closed before its TLS handshake can finish.
    let started = Instant::now();
    let refused = tls(&relay).and_then(|mut stream| healthz(&mut stream));
    assert!(refused.is_err(), "a fourth connection was served");
    assert!(started.elapsed() < Duration::from_secs(10), "refused only after {:?}", started.elapsed());
    for stream in &mut open {
        healthz(stream).expect("the open connections are still served");
    }

    // Once one closes, a new connection is served (the relay notices the close a moment later).
    drop(open.pop());
    let deadline = Instant::now() + WAIT;
    let mut served = loop {
        if let Ok(mut stream) = tls(&relay)
            && healthz(&mut stream).is_ok()
        {
            break stream;
        }
        assert!(Instant::now() < deadline, "no connection was served after one closed");
        std::thread::sleep(Duration::from_millis(20));
    };
    // On the connection just served: a new one could still find every slot taken (the relay
    // notices the loop's closed attempts a moment later).
    served.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut metrics = String::new();
    let _ = served.read_to_string(&mut metrics);
    assert!(
        metrics.contains("liaison_connections_closed_total{reason=\"too many http connections\"}"),
        "refusals are counted:\n{metrics}"
    );
}

async fn websocket(relay: &Relay, token: &str) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut req = relay.url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let tls = Arc::new(tls_config(&Trust::PinnedKeys { pins: vec![relay.spki_pin] }).unwrap());
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(connector)).await?;
    Ok(ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_opens_at_most_max_connections_per_token_websockets() {
    let data = tempfile::tempdir().unwrap();
    setup_tenant(data.path(), "pharma-a", "onc-east", &[("sato", "msl"), ("suzuki", "msl")]);
    let (_, sato) = issue(data.path(), "pharma-a", "sato", "sato-phone", &[]);
    let (_, suzuki) = issue(data.path(), "pharma-a", "suzuki", "suzuki-phone", &[]);
    let config = data.path().join("relay.toml");
    std::fs::write(&config, "[limits]\nmax_connections_per_token = 2\n").unwrap();
    let relay = Relay::start(data.path(), &["--config", config.to_str().unwrap()]).unwrap();

    let mut first = websocket(&relay, &sato).await.unwrap();
    let _second = websocket(&relay, &sato).await.unwrap();
    match websocket(&relay, &sato).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body, serde_json::json!({ "error": "too many connections for this token" }));
        }
        Ok(_) => panic!("a third WebSocket with one token was accepted"),
        Err(e) => panic!("the third WebSocket failed otherwise: {e}"),
    }
    // Another token is not affected.
    let _other = websocket(&relay, &suzuki).await.expect("another token connects");

    // When one of the token's sockets ends, the token may open another.
    first.send(tokio_tungstenite::tungstenite::Message::Close(None)).await.unwrap();
    tokio::time::timeout(WAIT, async { while first.next().await.is_some() {} }).await.unwrap();
    tokio::time::timeout(WAIT, async {
        // The relay releases the slot just after the socket closes: retry until it has.
        while websocket(&relay, &sato).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a slot was released when a socket ended");
}

/// A relay with `limits` over `n` seeded plans (see [`seed_plans_with`]), and sato's phone,
/// joined, having asked for all of them at once.
async fn sato_asks_for_seeded_plans(
    limits: &str,
    n: usize,
    bytes: usize,
) -> (tempfile::TempDir, Relay, raw::RawPeer, Vec<liaison_core::DocumentId>) {
    let data = tempfile::tempdir().unwrap();
    setup_tenant(data.path(), "pharma-a", "onc-east", &[("sato", "msl")]);
    let (_, sato) = issue(data.path(), "pharma-a", "sato", "sato-phone", &[]);
    let docs = seed_plans_with(data.path(), n, bytes);
    let config = data.path().join("relay.toml");
    std::fs::write(&config, format!("[limits]\n{limits}\n")).unwrap();
    let relay = Relay::start(data.path(), &["--config", config.to_str().unwrap()]).unwrap();
    let mut peer = raw::RawPeer::join(&relay, &sato, "sato-phone").await;
    for d in &docs {
        peer.request(*d).await;
    }
    (data, relay, peer, docs)
}

/// A counter or gauge of the relay's `/metrics`.
fn metric(relay: &Relay, name: &str) -> u64 {
    let metrics = relay.get_text("/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
}

/// Stores `n` engagement plans of sato's team in the (stopped) relay's data directory, each
/// with an attachment of `bytes` incompressible bytes if not 0 (a field of a newer app: kept and
/// synced).
fn seed_plans_with(data: &std::path::Path, n: usize, bytes: usize) -> Vec<liaison_core::DocumentId> {
    use liaison_core::model::EngagementPlan;
    use liaison_core::storage::MemoryKv;
    use liaison_core::store::{StoreOptions, SystemClock};
    use liaison_core::{DocStore, DocumentId, Identity, Role};
    let config = liaison_server::config::Config { data_dir: data.to_owned(), ..Default::default() };
    let relay = liaison_server::open_data(&config).unwrap();
    let sato = Identity {
        tenant: "pharma-a".into(),
        user: "sato".into(),
        device: "sato-phone".into(),
        role: Role::Msl,
        install: [1; 8],
    };
    let device =
        DocStore::with_kv(Arc::new(MemoryKv::new()), sato, Arc::new(SystemClock), StoreOptions::default()).unwrap();
    let kol = DocumentId::from_bytes([9; 16]);
    (0..n)
        .map(|i| {
            let doc = device.create("onc-east", &EngagementPlan::new(&kol, format!("plan {i}"))).unwrap();
            let mut saved = device.export(&doc).unwrap();
            if bytes > 0 {
                use automerge::transaction::Transactable;
                let mut am = automerge::AutoCommit::load(&saved).unwrap();
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ i as u64;
                let noise: Vec<u8> = (0..bytes)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                am.put(automerge::ROOT, "attachment", noise).unwrap();
                saved = am.save();
            }
            relay.store.merge_remote(&doc, &saved).unwrap();
            doc
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_asking_for_hundreds_of_documents_gets_them_all_while_few_load_at_once() {
    let (_data, relay, mut peer, docs) = sato_asks_for_seeded_plans("max_loading_documents = 3", 300, 0).await;
    let mut answered = std::collections::HashSet::new();
    while answered.len() < docs.len() {
        let doc = peer
            .until("a document's content", |m| match m {
                liaison_core::sync::wire::Message::Sync { document_id, .. } => Some(*document_id),
                _ => None,
            })
            .await;
        answered.insert(doc);
    }
    let peak = metric(&relay, "liaison_documents_loading_peak");
    assert!((1..=3).contains(&peak), "at most max_loading_documents load at once, saw {peak}");
}

/// A device asking at once for documents whose sync messages together pass its outbox is
/// paced, not cut: the relay generates a sync message only while the outbox has room and waits
/// for the device to read the rest. Three of 3 MiB against 1 MiB: before, the second message cut
/// it ("client too slow") on every reconnect, however fast it read. Three hundred small ones
/// against 16 KiB: dozens of rounds of waiting for room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_asking_for_more_than_its_outbox_holds_is_paced_not_cut() {
    for (limits, n, bytes) in [("max_outbox_bytes = 1048576", 3, 3 << 20), ("max_outbox_bytes = 16384", 300, 0)] {
        let (_data, relay, mut peer, docs) = sato_asks_for_seeded_plans(limits, n, bytes).await;
        let mut whole = std::collections::HashSet::new();
        while whole.len() < docs.len() {
            let doc = peer
                .until("a document's content", |m| match m {
                    liaison_core::sync::wire::Message::Sync { document_id, data, .. } if data.len() > bytes => {
                        Some(*document_id)
                    }
                    _ => None,
                })
                .await;
            whole.insert(doc);
        }
        let metrics = relay.get_text("/metrics");
        assert!(!metrics.contains("client too slow"), "{metrics}");
        assert!(metric(&relay, "liaison_backlogged_total") >= 1, "the outbox filled and the engine waited");
    }
}

/// Every limit of the sync socket, each hit once: its close code and reason, its count in
/// /metrics, and that time limits take their time (a lower bound as well as an upper one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sync_limit_closes_with_its_reason_and_is_counted() {
    let data = tempfile::tempdir().unwrap();
    setup_tenant(data.path(), "pharma-a", "onc-east", &[("mallory", "msl")]);
    let (_, token) = issue(data.path(), "pharma-a", "mallory", "m-laptop", &[]);
    let config = data.path().join("relay.toml");
    std::fs::write(
        &config,
        "[limits]\nidle_timeout_secs = 2\nhandshake_timeout_secs = 1\nmax_connections = 2\n\
         max_documents_per_connection = 5\nmessages_per_second = 20\nmessage_burst = 50\n",
    )
    .unwrap();
    let relay = Relay::start(data.path(), &["--config", config.to_str().unwrap()]).unwrap();

    // max_connections: the third WebSocket is refused before the upgrade.
    let first = raw::RawPeer::join(&relay, &token, "m-laptop").await;
    let second = raw::RawPeer::join(&relay, &token, "m-laptop").await;
    match websocket(&relay, &token).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        other => panic!("a third connection was not refused: {:?}", other.map(|_| ())),
    }
    drop((first, second));

    // The handshake timeout: not before it, and not long after.
    let started = Instant::now();
    let mut silent = raw::RawPeer {
        ws: retry_connect(&relay, &token).await,
        peer_id: "m-laptop".into(),
        relay_id: liaison_core::sync::wire::PeerId(String::new()),
    };
    assert_eq!(silent.closed().await, (1002, "handshake timeout".into()));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "closed after {took:?}");

    // The idle timeout: a joined peer that sends nothing.
    let started = Instant::now();
    let mut idle = joined(&relay, &token).await;
    assert_eq!(idle.closed().await, (4008, "idle timeout".into()));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(10), "closed after {took:?}");

    // Documents per connection: the sixth distinct document closes it.
    let mut greedy = joined(&relay, &token).await;
    for i in 0..6u8 {
        greedy.request(liaison_core::DocumentId::from_bytes([i + 1; 16])).await;
    }
    assert_eq!(greedy.closed().await, (4014, "too many documents on one connection".into()));

    // The message rate.
    let mut flood = joined(&relay, &token).await;
    let noise = liaison_core::sync::wire::Message::Unknown { type_name: "noise".into() }.encode();
    for _ in 0..200 {
        flood.send_frame(noise.clone()).await;
    }
    assert_eq!(flood.closed().await, (4029, "message rate exceeded".into()));

    let metrics = relay.get_text("/metrics");
    for reason in ["handshake timeout", "idle timeout", "too many documents on one connection", "message rate exceeded"]
    {
        assert!(
            metrics.contains(&format!("liaison_connections_closed_total{{reason=\"{reason}\"}} 1")),
            "{reason} is not counted once in:\n{metrics}"
        );
    }
}

/// Connects once the relay has noticed earlier connections closed (max_connections is low).
async fn retry_connect(relay: &Relay, token: &str) -> raw::Socket {
    let deadline = Instant::now() + WAIT;
    loop {
        match websocket(relay, token).await {
            Ok(ws) => return ws,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("cannot connect: {e}"),
        }
    }
}

/// A joined raw peer, connecting once there is room.
async fn joined(relay: &Relay, token: &str) -> raw::RawPeer {
    let mut p = raw::RawPeer {
        ws: retry_connect(relay, token).await,
        peer_id: "m-laptop".into(),
        relay_id: liaison_core::sync::wire::PeerId(String::new()),
    };
    p.send_frame(raw::join_frame("m-laptop")).await;
    match p.next().await {
        raw::Heard::Frame(liaison_core::sync::wire::Message::Peer { sender_id, .. }) => p.relay_id = sender_id,
        other => panic!("expected the relay's peer message, got {other:?}"),
    }
    p
}
