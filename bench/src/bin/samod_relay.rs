//! `samod-relay`: the samod peer of the benchmark. A samod 0.16 repo with its filesystem storage
//! (the automerge-repo-storage-nodefs layout) behind an axum WebSocket endpoint, plain or TLS.
//! No authentication and no access control: it relays every document to whoever asks.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::IntoResponse;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "samod-relay", about = "a samod 0.16 sync server with filesystem storage")]
struct Args {
    /// Storage directory.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// PEM certificate and key: serve wss instead of ws.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Run documents on a rayon pool of this many threads (samod's `threadpool` feature)
    /// instead of as tasks on the async runtime (samod's default).
    #[arg(long)]
    threads: Option<usize>,
}

async fn upgrade(State(acceptor): State<samod::AcceptorHandle>, ws: WebSocketUpgrade) -> impl IntoResponse {
    ws.max_message_size(64 * 1024 * 1024).on_upgrade(move |socket| async move {
        if let Err(e) = acceptor.accept_axum(socket, None) {
            tracing::warn!(error = ?e, "repo stopped; connection dropped");
        }
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.data).context("creating the data directory")?;
    // A sync server: answers what peers ask, announces nothing (like automerge-repo's sync server).
    let repo = samod::Repo::build_tokio()
        .with_storage(samod::storage::TokioFilesystemStorage::new(&args.data))
        .with_share_policy(samod::ShareConfig::read_write().with_announce(false))
        .with_peer_id(samod::PeerId::from("samod-relay"));
    let repo = match args.threads {
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().context("thread pool")?;
            repo.with_concurrency(samod::ConcurrencyConfig::Threadpool(pool))
        }
        None => repo,
    };
    let repo = repo.load().await;
    let acceptor = repo.make_acceptor(samod::Url::parse("ws://samod-relay/")?).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let app = axum::Router::new().fallback(upgrade).with_state(acceptor).into_make_service();
    let handle = axum_server::Handle::new();
    let scheme = if args.cert.is_some() { "wss" } else { "ws" };
    let server = {
        let handle = handle.clone();
        match (args.cert, args.key) {
            (Some(cert), Some(key)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await.context("TLS files")?;
                tokio::spawn(async move { axum_server::bind_rustls(args.listen, tls).handle(handle).serve(app).await })
            }
            _ => tokio::spawn(async move { axum_server::bind(args.listen).handle(handle).serve(app).await }),
        }
    };
    let addr = handle.listening().await.context("cannot listen")?;
    println!("samod relay listening on {scheme}://{addr}/");
    tokio::select! {
        r = server => { r.context("server task")?.context("server")?; }
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => { s.recv().await; }
                Err(_) => std::future::pending::<()>().await,
            }
        } => {}
    }
    repo.stop().await;
    Ok(())
}
