//! The documents of a run, made once and written into each relay's own storage format before
//! it starts (not pushed through the protocol: 100,000 documents that way would take longer
//! than the measurement, and would measure seeding, not serving).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use automerge::ChangeHash;
use liaison_core::model::{EngagementPlan, NewDocument, create_document};
use liaison_core::storage::{KvStore, SledKv};
use liaison_core::store::{Durability, StoreOptions, SystemClock};
use liaison_core::{DocStore, DocumentId, Identity, Role};
use sha2::{Digest, Sha256};

/// The tenant every benchmark device belongs to.
pub const TENANT: &str = "bench";

/// Team of device `i`: teams of five.
pub fn team_of(device: usize) -> usize {
    device / 5
}

pub fn team_name(team: usize) -> String {
    format!("t{team}")
}

pub fn device_name(i: usize) -> String {
    format!("d{i}")
}

/// One seeded document.
#[derive(Debug, Clone)]
pub struct SeedDoc {
    pub id: DocumentId,
    pub team: usize,
    pub bytes: Vec<u8>,
    pub heads: Vec<ChangeHash>,
}

/// A liaison engagement plan (so liaison's relay accepts it; the peers store any document),
/// with some notes so documents are not trivially small.
pub fn make_doc(team: usize, n: usize) -> Result<SeedDoc> {
    let who = Identity {
        tenant: TENANT.into(),
        user: format!("lead-{team}"),
        device: "seeder".into(),
        role: Role::Msl,
        install: [0; 8],
    };
    let kol = DocumentId::random();
    let mut plan = EngagementPlan::new(&kol, format!("FY2027 plan {n} of team {team}"));
    plan.notes = autosurgeon::Text::with_value(format!(
        "Plan {n}. Discuss the phase III data and the biomarker sub-study; agree follow-ups with the \
         department; check advisory board availability for Q3. "
    ));
    let new = NewDocument { team: team_name(team), retention_class: "standard".into() };
    let doc = create_document(&who, &new, &plan, 1_780_000_000_000).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(SeedDoc { id: DocumentId::random(), team, bytes: doc.save(), heads: doc.get_heads() })
}

/// `per_team` documents for each of `teams` teams, made on all cores.
pub fn make_docs(teams: usize, per_team: usize) -> Result<Vec<SeedDoc>> {
    let jobs: Vec<(usize, usize)> = (0..teams).flat_map(|t| (0..per_team).map(move |n| (t, n))).collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = jobs.len().div_ceil(threads).max(1);
    let mut out = Vec::with_capacity(jobs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|&(t, n)| make_doc(t, n)).collect::<Result<Vec<_>>>()))
            .collect();
        for h in handles {
            out.extend(h.join().map_err(|_| anyhow::anyhow!("a seeding thread panicked"))??);
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(out)
}

/// Writes documents in the automerge-repo filesystem layout that both
/// `@automerge/automerge-repo-storage-nodefs` and samod's `FilesystemStorage` read:
/// `DIR/<first two chars of id>/<rest of id>/snapshot/<sha-256 of the bytes>`.
pub fn write_nodefs(dir: &Path, docs: &[SeedDoc]) -> Result<()> {
    for d in docs {
        let id = d.id.to_string();
        let (a, b) = id.split_at(2);
        let path = dir.join(a).join(b).join("snapshot");
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let name: String = Sha256::digest(&d.bytes).iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(path.join(name), &d.bytes).context("writing a seeded document")?;
    }
    Ok(())
}

/// Prepares a liaison relay data directory on sled: see [`prepare_liaison`].
pub fn prepare_liaison_sled(data_dir: &Path, devices: usize, docs: &[SeedDoc]) -> Result<HashMap<String, String>> {
    std::fs::create_dir_all(data_dir)?;
    let kv = Arc::new(SledKv::open(&data_dir.join("db")).context("opening the relay's database")?);
    prepare_liaison(kv, devices, docs)
}

/// Prepares a liaison relay's store (sled, or a PostgreSQL database every node of a cluster
/// shares): the tenant, teams, one MSL user per team, a token per device (issued in bulk
/// through the relay's own identity store, not 1,000 CLI runs), and the documents through the
/// relay's own document store. Returns device name to token. The caller drops `kv` before a
/// relay opens the store.
pub fn prepare_liaison(kv: Arc<dyn KvStore>, devices: usize, docs: &[SeedDoc]) -> Result<HashMap<String, String>> {
    // The relay's own identity (see liaison_server::open_data); deferred flushes, one at the end.
    let identity = Identity {
        tenant: liaison_server::auth::SYSTEM_TENANT.into(),
        user: "relay".into(),
        device: "liaison-relay".into(),
        role: Role::Admin,
        install: [0; 8],
    };
    // As the relay opens it: no screen indexes.
    let options = StoreOptions { durability: Durability::Deferred, screen_indexes: false, ..StoreOptions::default() };
    let store = DocStore::with_kv(kv.clone(), identity, Arc::new(SystemClock), options)?;
    for d in docs {
        store.merge_remote(&d.id, &d.bytes)?;
    }
    store.flush()?;
    let auth = liaison_server::auth::AuthStore::new(kv.clone());
    let now = liaison_server::now_ms();
    auth.add_tenant(TENANT, now)?;
    let teams = devices.div_ceil(5);
    let mut tokens = HashMap::new();
    for t in 0..teams {
        auth.add_team(TENANT, &team_name(t))?;
        auth.put_user(TENANT, &format!("msl-{t}"), liaison_server::auth::RoleName::Msl, &[team_name(t)])?;
    }
    for i in 0..devices {
        let (_, secret) = auth.issue_token(TENANT, &format!("msl-{}", team_of(i)), &device_name(i), None, now)?;
        tokens.insert(device_name(i), secret);
    }
    kv.flush()?;
    Ok(tokens)
}
