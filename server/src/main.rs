//! `liaison-relay`: serve, check the configuration, and administer a data directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use liaison_server::auth::RoleName;
use liaison_server::config::{Config, LogFormat, TlsMode};
use liaison_server::now_ms;

#[derive(Parser, Debug)]
#[command(name = "liaison-relay", version, about = "liaison's sync relay for field medical teams")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// Configuration file (TOML). LIAISON_* environment variables override it; flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (default ./liaison-data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8443).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve plain WebSocket without TLS (loopback addresses only).
    #[arg(long)]
    plain: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the relay.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Once listening, write where the relay serves (URLs, certificate fingerprint) to this
        /// file as JSON, atomically.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Check the configuration and exit.
    CheckConfig(Common),
    /// Create or upgrade the PostgreSQL schema (`[storage] backend = "postgres"`); run it before
    /// `serve` after installing or upgrading the relay. Safe to run again, and by several nodes.
    Migrate(Common),
    /// Administer a data directory while the relay is stopped (use the admin API while it runs).
    Admin {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: Admin,
    },
}

#[derive(Subcommand, Debug)]
enum Admin {
    /// Add a tenant (a pharma client).
    AddTenant { tenant: String },
    /// Add a team (territory) to a tenant.
    AddTeam {
        #[arg(long)]
        tenant: String,
        team: String,
    },
    /// Add or replace a user with a role and teams.
    PutUser {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        role: RoleName,
        #[arg(long = "team")]
        teams: Vec<String>,
        user: String,
    },
    /// Issue a device token (printed once).
    IssueToken {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        device: String,
        /// Lifetime in seconds (default: limits.default_token_ttl_secs; at most
        /// limits.max_token_ttl_secs).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// List tokens (never their secrets).
    ListTokens {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a token by id.
    RevokeToken { id: String },
    /// Counts of tenants, users, tokens and documents.
    Stats,
    /// Erase a document (GDPR / APPI): delete it and tombstone its id; devices that sync it
    /// later are told to delete their copy.
    PurgeDocument { id: String },
    /// Export every document of a tenant into DEST (contract end).
    ExportTenant { tenant: String, dest: PathBuf },
    /// Erase every document of a tenant and revoke its credentials (after exporting).
    PurgeTenant { tenant: String },
    /// List tenants, with when they were purged.
    ListTenants,
    /// Copy the data directory's database into DEST (use the admin API while the relay runs).
    Backup { dest: PathBuf },
    /// Restore a backup into the data directory, which must hold no database yet, then carry
    /// out again every revocation, erasure and purge of the security ledger (refused without
    /// a ledger that continues the one the backup was taken with).
    Restore {
        #[arg(long)]
        from: PathBuf,
        /// The relay's security ledger (default: the configured `ledger_path`).
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
    /// Carry out again every revocation, erasure and purge of these security ledgers, oldest
    /// first: after restoring a PostgreSQL dump or base backup, with the ledger of every relay
    /// that ran on the database (each node of a cluster keeps its own). Every relay on the
    /// database must be stopped.
    ReapplyLedger {
        /// A ledger file; repeat for each relay's.
        #[arg(long = "ledger", required = true)]
        ledgers: Vec<PathBuf>,
    },
}

fn load(common: &Common) -> Result<Config> {
    let env = |k: &str| std::env::var(k).ok();
    let mut config = Config::load(common.config.as_deref(), &env)?;
    if let Some(d) = &common.data {
        config.data_dir = d.clone();
    }
    if let Some(l) = common.listen {
        config.listen = l;
    }
    if common.plain {
        config.tls = TlsMode::Plain;
    }
    config.validate()?;
    Ok(config)
}

fn init_logs(format: LogFormat) {
    // automerge instruments its decoders with INFO spans whose fields the formatter renders
    // on every received change: ~6% of the relay's CPU under load. Its warnings still show.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,automerge=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { common, ready_file } => {
            let config = load(&common)?;
            init_logs(config.log_format);
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
            rt.block_on(liaison_server::run(config, ready_file.as_deref()))
        }
        Command::CheckConfig(common) => {
            let config = load(&common)?;
            println!(
                "configuration is valid:\n{}",
                toml::to_string_pretty(&config).context("cannot show the configuration")?
            );
            Ok(())
        }
        Command::Migrate(common) => {
            let config = load(&common)?;
            init_logs(config.log_format);
            if config.storage.backend != liaison_server::config::Backend::Postgres {
                anyhow::bail!("migrate is for backend = \"postgres\"; a sled data directory needs no migration");
            }
            let migrated = liaison_server::storage::migrate(&config.storage)?;
            if migrated.from == migrated.to {
                println!("the schema is up to date (version {})", migrated.to);
            } else {
                println!("the schema went from version {} to {}", migrated.from, migrated.to);
            }
            Ok(())
        }
        Command::Admin { common, action: Admin::Restore { from, ledger } } => {
            let config = load(&common)?;
            liaison_server::backup::supported(config.storage.backend)?;
            let ledger = ledger.unwrap_or_else(|| config.ledger_path());
            let entries = liaison_server::backup::restore_database(&from, &config.data_dir, &ledger)?;
            // The restored relay goes on appending to its configured ledger.
            if ledger != config.ledger_path() && !config.ledger_path().exists() {
                std::fs::copy(&ledger, config.ledger_path()).context("cannot copy the ledger")?;
            }
            let data = liaison_server::open_data(&config)?;
            // Carried out again without new ledger entries: they are in the ledger already.
            let auth = liaison_server::auth::AuthStore::new(data.kv.clone());
            let n = liaison_server::backup::reapply(&data.store, &auth, &entries)?;
            data.store.flush()?;
            println!(
                "restored {} into {}; {n} ledger entries carried out again",
                from.display(),
                config.data_dir.display()
            );
            Ok(())
        }
        Command::Admin { common, action: Admin::ReapplyLedger { ledgers } } => {
            let mut config = load(&common)?;
            // Alone on the database (the one-relay lock, not a node's share of it): a node
            // running meanwhile would go on holding copies of what is erased here.
            config.storage.cluster = false;
            let mut entries = Vec::new();
            for path in &ledgers {
                entries.extend(liaison_server::ledger::read(path)?);
            }
            // One history out of several nodes' (each act is idempotent; the order matters only
            // for a token revoked and its tenant purged, which both end revoked).
            entries.sort_by_key(|e| e.at_ms);
            let data = liaison_server::open_data(&config)?;
            // Carried out again without new ledger entries: they are in the ledgers already.
            let auth = liaison_server::auth::AuthStore::new(data.kv.clone());
            let n = liaison_server::backup::reapply(&data.store, &auth, &entries)?;
            data.store.flush()?;
            println!("{n} ledger entries from {} ledgers carried out again", ledgers.len());
            Ok(())
        }
        Command::Admin { common, action } => {
            let config = load(&common)?;
            if matches!(action, Admin::Backup { .. }) {
                // Before opening the store: on PostgreSQL the answer is PostgreSQL's tools, also
                // while a relay holds the database.
                liaison_server::backup::supported(config.storage.backend)?;
            }
            let liaison_server::Data { store, auth, ledger, .. } = liaison_server::open_data(&config)?;
            match action {
                Admin::AddTenant { tenant } => {
                    auth.add_tenant(&tenant, now_ms())?;
                    println!("tenant {tenant} added");
                }
                Admin::AddTeam { tenant, team } => {
                    auth.add_team(&tenant, &team)?;
                    println!("team {team} added to {tenant}");
                }
                Admin::PutUser { tenant, role, teams, user } => {
                    auth.put_user(&tenant, &user, role, &teams)?;
                    println!("user {user} of {tenant} saved");
                }
                Admin::IssueToken { tenant, user, device, ttl_secs } => {
                    let (rec, secret) = auth.issue_token(&tenant, &user, &device, ttl_secs, now_ms())?;
                    println!("token id: {}", rec.id);
                    println!("token: {secret}");
                    eprintln!("this is the only time the token is shown; it is stored as a hash");
                }
                Admin::ListTokens { tenant } => {
                    for t in auth.tokens(tenant.as_deref())? {
                        let state = if t.revoked_at.is_some() { "revoked" } else { "active" };
                        println!("{}\t{}\t{}\t{}\t{state}", t.id, t.tenant, t.user, t.device);
                    }
                }
                Admin::RevokeToken { id } => {
                    auth.revoke_token(&id, now_ms())?;
                    println!("token {id} revoked");
                }
                Admin::PurgeDocument { id } => {
                    let doc: liaison_core::DocumentId = id.parse().map_err(|_| anyhow::anyhow!("not a document id"))?;
                    let now = now_ms();
                    ledger.append(
                        now,
                        liaison_server::ledger::LedgerEvent::DocumentErased { document: doc.to_string() },
                    )?;
                    liaison_server::erasure::erase_stored(&store, &doc, now)?;
                    println!("document {id} erased; devices are told to delete their copy when they next sync it");
                }
                Admin::ExportTenant { tenant, dest } => {
                    if dest.exists() {
                        anyhow::bail!("{} already exists; choose a new directory", dest.display());
                    }
                    std::fs::create_dir_all(&dest).context("cannot create the export directory")?;
                    let n = liaison_server::contract::export_tenant(&store, &tenant, &dest)?;
                    println!("exported {n} documents of {tenant} into {}", dest.display());
                }
                Admin::PurgeTenant { tenant } => {
                    let now = now_ms();
                    auth.tenant(&tenant)?.context("no such tenant")?;
                    ledger.append(now, liaison_server::ledger::LedgerEvent::TenantPurged { tenant: tenant.clone() })?;
                    let docs = liaison_server::erasure::purge_stored(&store, &auth, &tenant, now)?;
                    println!("tenant {tenant} purged: {} documents erased, credentials revoked", docs.len());
                }
                Admin::ListTenants => {
                    for t in auth.tenants()? {
                        let state = t.purged_at.map_or_else(|| "active".to_owned(), |at| format!("purged at {at}"));
                        println!("{}\t{state}", t.tenant);
                    }
                }
                Admin::Backup { dest } => {
                    let m =
                        liaison_server::backup::backup_stopped(store.kv().as_ref(), ledger.path(), &dest, now_ms())?;
                    println!("backed up {} entries into {}", m.entries, dest.display());
                }
                Admin::Restore { .. } | Admin::ReapplyLedger { .. } => unreachable!("handled above"),
                Admin::Stats => {
                    let tenants = auth.tenants()?;
                    println!("tenants: {}", tenants.len());
                    println!("tokens: {}", auth.tokens(None)?.len());
                    println!("documents: {}", store.all_documents()?.len());
                }
            }
            store.flush()?;
            Ok(())
        }
    }
}
