//! Hints between relays over PostgreSQL's `LISTEN`/`NOTIFY` (`storage::hints::PgHints`): two
//! nodes on one database hear each other and never themselves, many hints arrive whole,
//! hostile notifications are skipped, and after a lost listener (its backend killed, the server
//! restarted) a node is told to resync and then hears hints again. Each test has a database of
//! its own (`storage::testing`); every wait is bounded, so a broken channel fails, not hangs.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use liaison_core::DocumentId;
use liaison_server::config::{Backend, DbTls, Secret, StorageConfig};
use liaison_server::storage::hints::{self, Hint, HintEvent, HintReceiver, Hints as _, PgHints};
use liaison_server::storage::testing;

fn storage_at(url: String) -> StorageConfig {
    StorageConfig {
        backend: Backend::Postgres,
        url: Some(Secret::new(url)),
        pool_size: 2,
        tls: DbTls::Disable,
        ..StorageConfig::default()
    }
}

fn doc(n: u32, version: u64) -> Hint {
    let mut id = [0u8; 16];
    id[12..].copy_from_slice(&n.to_be_bytes());
    Hint::Doc { id: DocumentId::from_bytes(id), version }
}

/// The next event, within `seconds`.
async fn next_within(events: &mut HintReceiver, seconds: u64) -> HintEvent {
    let event = tokio::time::timeout(Duration::from_secs(seconds), events.recv()).await;
    event.unwrap_or_else(|_| panic!("no hint event within {seconds} s")).expect("the hint channel stopped")
}

async fn next(events: &mut HintReceiver) -> HintEvent {
    next_within(events, 5).await
}

/// Runs `sql` on the database at `url` with psql, off the runtime's workers.
async fn sql(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || testing::psql(&url, &sql)).await.unwrap().unwrap();
}

/// Ends the listener of `node` on this database, as an operator or a failover would.
async fn kill_listener(url: &str, node: &PgHints) {
    let database = url.rsplit_once('/').unwrap().1;
    let name = format!("{} {}", hints::pg::APPLICATION_NAME, node.node());
    sql(
        url,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' \
             AND application_name = '{name}'"
        ),
    )
    .await;
}

/// The PostgreSQL backend of `node`'s listener.
async fn listener_pid(url: &str, node: &PgHints) -> String {
    let query = format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{} {}'",
        hints::pg::APPLICATION_NAME,
        node.node()
    );
    let url = url.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql").arg(url).args(["-tAc", &query]).output().unwrap()
    })
    .await
    .unwrap();
    let pid = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()), "{pid:?}");
    pid
}

/// A backend stopped with SIGSTOP: ended and let go on drop, even when the test fails (a
/// stopped backend would hold up the server's shutdown).
struct StoppedBackend {
    url: String,
    pid: String,
}

impl StoppedBackend {
    fn stop(url: &str, pid: String) -> Self {
        let status = std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap();
        assert!(status.success(), "kill -STOP {pid}");
        Self { url: url.to_owned(), pid }
    }
}

impl Drop for StoppedBackend {
    fn drop(&mut self) {
        // Whatever it does with the query it holds, it does last.
        let _ = testing::psql(&self.url, &format!("SELECT pg_terminate_backend({})", self.pid));
        let _ = std::process::Command::new("kill").args(["-CONT", &self.pid]).status();
    }
}

/// Two nodes on one fresh database, each receiver past its first (initial) resync.
async fn two_nodes(storage: &StorageConfig) -> ((PgHints, HintReceiver), (PgHints, HintReceiver)) {
    let (a, b) = (PgHints::connect(storage).await.unwrap(), PgHints::connect(storage).await.unwrap());
    let (mut a_events, mut b_events) = (a.subscribe(), b.subscribe());
    assert_eq!(next(&mut a_events).await, HintEvent::Resync, "a receiver starts with a resync");
    assert_eq!(next(&mut b_events).await, HintEvent::Resync);
    ((a, a_events), (b, b_events))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_reach_the_other_node_and_never_their_sender() {
    let url = testing::fresh_database().unwrap();
    let ((a, mut a_events), (b, mut b_events)) = two_nodes(&storage_at(url.clone())).await;
    assert_ne!(a.node(), b.node());

    a.publish(&[doc(1, 1), doc(2, 5), Hint::Security, doc(1, 3)]).unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut b_events).await);
    }
    let expected = [Hint::Security, doc(1, 3), doc(2, 5)].map(HintEvent::Hint);
    assert_eq!(got, expected, "coalesced: a document's highest version, once");

    // A's own notifications reached its session before B's: had A kept them, they came first.
    b.publish(&[doc(3, 9)]).unwrap();
    assert_eq!(next(&mut a_events).await, HintEvent::Hint(doc(3, 9)));

    // Sent the way a store sends them in its commit's transaction: only a commit delivers.
    let send = |payloads: Vec<String>, end: &str| {
        let notifies: String =
            payloads.iter().map(|p| hints::pg::NOTIFY_SQL.replace("$1", &format!("'{p}'")) + ";").collect();
        format!("BEGIN; {notifies} {end};")
    };
    sql(&url, &send(a.payloads(&[doc(4, 1)]), "ROLLBACK")).await;
    sql(&url, &send(a.payloads(&[doc(5, 1)]), "COMMIT")).await;
    assert_eq!(next(&mut b_events).await, HintEvent::Hint(doc(5, 1)), "the rolled-back hint never left");

    // Anyone connected may NOTIFY: refused payloads are skipped, the listener stays.
    sql(&url, "NOTIFY liaison_hints, 'garbage'; NOTIFY liaison_hints, '1 zz d00:1'").await;
    a.publish(&[doc(6, 2)]).unwrap();
    assert_eq!(next(&mut b_events).await, HintEvent::Hint(doc(6, 2)), "no resync: the connection was kept");

    // Dropping a node closes its connection and ends its receivers.
    drop(b);
    let end = tokio::time::timeout(Duration::from_secs(5), b_events.recv()).await;
    assert_eq!(end.expect("the receiver did not end"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_hints_arrive_whole_over_several_notifications() {
    let url = testing::fresh_database().unwrap();
    let ((a, _a_events), (_b, mut b_events)) = two_nodes(&storage_at(url)).await;
    let sent: Vec<Hint> = (0..2000).map(|n| doc(n, u64::from(n) * 1_000_003)).collect();
    a.publish(&sent).unwrap();
    let mut received = BTreeMap::new();
    while received.len() < sent.len() {
        match next(&mut b_events).await {
            HintEvent::Hint(Hint::Doc { id, version }) => assert!(received.insert(id, version).is_none()),
            other => panic!("{other:?} after {} hints", received.len()),
        }
    }
    for hint in sent {
        let Hint::Doc { id, version } = hint else { unreachable!() };
        assert_eq!(received.get(&id), Some(&version));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_reconnects_resyncs_and_hears_again() {
    let url = testing::fresh_database().unwrap();
    let ((a, mut a_events), (b, mut b_events)) = two_nodes(&storage_at(url.clone())).await;

    kill_listener(&url, &b).await;
    assert_eq!(next(&mut b_events).await, HintEvent::Resync, "B missed what was sent while it reconnected");
    a.publish(&[doc(1, 1)]).unwrap();
    assert_eq!(next(&mut b_events).await, HintEvent::Hint(doc(1, 1)));

    // The sender's loss: what it published meanwhile is sent once it is back.
    kill_listener(&url, &a).await;
    a.publish(&[doc(2, 1), Hint::Security]).unwrap();
    assert_eq!(next(&mut a_events).await, HintEvent::Resync);
    let mut got = vec![next(&mut b_events).await, next(&mut b_events).await];
    got.sort_by_key(|event| format!("{event:?}"));
    assert_eq!(got, [HintEvent::Hint(doc(2, 1)), HintEvent::Hint(Hint::Security)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gone_silent_is_replaced_and_what_it_was_sending_is_sent_again() {
    let url = testing::fresh_database().unwrap();
    let ((a, mut a_events), (_b, mut b_events)) = two_nodes(&storage_at(url.clone())).await;
    // A's backend stops answering (a hung server, a network that drops packets): its socket
    // stays open, so only the missing answer tells.
    let stopped = StoppedBackend::stop(&url, listener_pid(&url, &a).await);
    a.publish(&[doc(7, 1)]).unwrap();
    assert_eq!(next_within(&mut a_events, 15).await, HintEvent::Resync, "A noticed the silence and reconnected");
    drop(stopped);
    assert_eq!(next(&mut b_events).await, HintEvent::Hint(doc(7, 1)), "the hint in flight was sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_resyncs_and_hints_flow_again() {
    // Its own instance: restarting the shared one would fail every other test.
    let pg = tokio::task::spawn_blocking(testing::PrivatePostgres::start).await.unwrap().unwrap();
    let storage = storage_at(pg.fresh_database().unwrap());
    let ((a, mut a_events), (_b, mut b_events)) = two_nodes(&storage).await;
    a.publish(&[doc(1, 1)]).unwrap();
    assert_eq!(next(&mut b_events).await, HintEvent::Hint(doc(1, 1)));

    let pg = tokio::task::spawn_blocking(move || pg.restart_fast().map(|()| pg)).await.unwrap().unwrap();
    // Up to 5 s between tries while the server is away.
    assert_eq!(next_within(&mut b_events, 20).await, HintEvent::Resync);
    assert_eq!(next_within(&mut a_events, 20).await, HintEvent::Resync);
    a.publish(&[doc(2, 2), Hint::Security]).unwrap();
    assert_eq!(next(&mut b_events).await, HintEvent::Hint(Hint::Security));
    assert_eq!(next(&mut b_events).await, HintEvent::Hint(doc(2, 2)));
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_uses_tls_as_the_store_does() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let (ours, theirs) = (ca("liaison test CA"), ca("another CA"));
    let server_key = KeyPair::generate().unwrap();
    let server_cert =
        CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&server_key, &ours).unwrap();
    let pg = tokio::task::spawn_blocking(testing::PrivatePostgres::start).await.unwrap().unwrap();
    pg.enable_tls(&server_cert.pem(), &server_key.serialize_pem()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (our_ca, their_ca) = (dir.path().join("ours.pem"), dir.path().join("theirs.pem"));
    std::fs::write(&our_ca, ours.pem()).unwrap();
    std::fs::write(&their_ca, theirs.pem()).unwrap();

    let url = pg.fresh_database().unwrap().replace("postgres@", "postgres:not-the-password@");
    let storage = StorageConfig { tls: DbTls::VerifyFull, ca_file: Some(our_ca), ..storage_at(url.clone()) };
    let ((a, _a_events), (_b, mut b_events)) = two_nodes(&storage).await;
    a.publish(&[doc(1, 1)]).unwrap();
    assert_eq!(next(&mut b_events).await, HintEvent::Hint(doc(1, 1)));

    let wrong = StorageConfig { ca_file: Some(their_ca), ..storage };
    let e = PgHints::connect(&wrong).await.unwrap_err().to_string();
    assert!(e.contains("cannot listen") && !e.contains("not-the-password"), "{e}");
}
