//! The README's main job: a relay on the embedded default (sled, a development TLS certificate
//! made on the fly, loopback) and two MSL devices that edit the same KOL plan offline and
//! converge through it, printing what happened.
//!
//! Run: `cargo run -p liaison-server --example relay_demo`

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use liaison_core::client::{ClientOptions, ConnState, SyncClient, SyncStatus, Trust, parse_spki_pin};
use liaison_core::model::*;
use liaison_core::storage::SledKv;
use liaison_core::store::{StoreOptions, SystemClock};
use liaison_core::{DocStore, DocumentId, Identity, Role};
use liaison_server::auth::RoleName;
use liaison_server::config::Config;

struct Device {
    name: String,
    store: Arc<DocStore>,
    client: Option<SyncClient>,
    options: ClientOptions,
}

impl Device {
    fn new(dir: &std::path::Path, who: Identity, options: ClientOptions) -> Result<Self> {
        let kv = SledKv::open(&dir.join(&who.device))?;
        let name = who.device.clone();
        let store = Arc::new(DocStore::with_kv(Arc::new(kv), who, Arc::new(SystemClock), StoreOptions::default())?);
        Ok(Self { name, store, client: None, options })
    }

    fn online(&mut self) -> Result<()> {
        self.client = Some(SyncClient::start(self.store.clone(), self.options.clone())?);
        Ok(())
    }

    fn offline(&mut self) {
        self.client = None;
    }

    fn client(&self) -> &SyncClient {
        self.client.as_ref().expect("online")
    }

    async fn until(&self, what: &str, cond: impl Fn(&SyncStatus) -> bool) -> Result<SyncStatus> {
        let mut rx = self.client().watch_status();
        let wait = async {
            loop {
                let s = rx.borrow_and_update().clone();
                if cond(&s) {
                    return Ok(s);
                }
                rx.changed().await?;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await.with_context(|| format!("{}: {what}", self.name))?
    }

    async fn until_store(&self, what: &str, check: impl Fn(&DocStore) -> bool) -> Result<()> {
        let mut events = self.client().events();
        let wait = async {
            while !check(&self.store) {
                let _ = events.recv().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await.with_context(|| format!("{}: {what}", self.name))
    }

    async fn synced(&self) -> Result<()> {
        self.until("everything acknowledged", |s| s.pending_documents == 0 && s.state == ConnState::UpToDate)
            .await
            .map(|_| ())
    }
}

fn show(d: &Device, plan: &DocumentId) -> Result<()> {
    let p: EngagementPlan = d.store.get(plan)?;
    println!("  [{}] title: {}", d.name, p.title);
    println!("  [{}] notes: {}", d.name, p.notes.as_str());
    for a in &p.activities {
        println!("  [{}]   {} - owner {} - {:?}", d.name, a.description, a.owner, a.status);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = Config { data_dir: dir.path().join("relay"), listen: "127.0.0.1:0".parse()?, ..Config::default() };
    let relay = liaison_server::start(config).await?;
    let (cert, fp) = relay.certificate.clone().context("the embedded default serves TLS")?;
    println!("Relay up at {} (sled data and a development certificate in {})", relay.url, dir.path().display());
    println!("  certificate {} with SHA-256 fingerprint {fp}", cert.display());

    // IT's part: a tenant, a team, two users, one token per device (shown once, stored hashed).
    let now = liaison_server::now_ms(); // tokens expire (default_token_ttl_secs) from now
    relay.auth.add_tenant("pharma-a", now)?;
    relay.auth.add_team("pharma-a", "oncology-kanto")?;
    relay.auth.put_user("pharma-a", "sato", RoleName::Msl, &["oncology-kanto".into()])?;
    relay.auth.put_user("pharma-a", "tanaka", RoleName::Manager, &["oncology-kanto".into()])?;
    let pin = parse_spki_pin(&liaison_server::tls::spki_pin(&cert)?).context("public-key pin")?;
    let mut devices = Vec::new();
    for (user, device, role) in [("sato", "sato-iphone", Role::Msl), ("tanaka", "tanaka-pixel", Role::Manager)] {
        let (_, token) = relay.auth.issue_token("pharma-a", user, device, None, now)?;
        let who =
            Identity { tenant: "pharma-a".into(), user: user.into(), device: device.into(), role, install: [0; 8] };
        let options = ClientOptions {
            url: relay.url.clone(),
            token,
            credentials: None,
            peer_id: device.into(),
            storage_id: format!("{device}-store"),
            trust: Trust::PinnedKeys { pins: vec![pin] },
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        };
        devices.push(Device::new(dir.path(), who, options)?);
    }
    let mut tanaka = devices.pop().context("two devices")?;
    let mut sato = devices.pop().context("two devices")?;
    sato.online()?;
    tanaka.online()?;
    println!("Two devices online: sato-iphone (MSL) and tanaka-pixel (manager), each with its own sled store.");

    // Sato records the KOL and the team's plan; the manager's tablet fetches the plan.
    let kol = sato.store.create(
        "oncology-kanto",
        &KolProfile {
            name_kana: Some("やまだ たろう".into()),
            ..KolProfile::new("山田 太郎", "東京大学医学部附属病院")
        },
    )?;
    let mut plan = EngagementPlan::new(&kol, "FY2027 engagement");
    plan.notes = "Interested in real-world data.".into();
    for (id, what) in [("act-1", "Share phase III results"), ("act-2", "Invite to advisory board")] {
        plan.activities.push(Activity {
            id: id.into(),
            description: what.into(),
            owner: "sato".into(),
            due: None,
            status: TaskStatus::Open,
        });
    }
    let plan = sato.store.create("oncology-kanto", &plan)?;
    sato.client().announce(kol);
    sato.client().announce(plan);
    sato.synced().await?;
    println!("\nsato created the KOL and the plan; the relay acknowledged both (stored and flushed).");
    tanaka.client().find(plan);
    tanaka.until_store("the plan arrives", |s| s.get::<EngagementPlan>(&plan).is_ok()).await?;
    println!("tanaka's tablet fetched the plan through the relay.");

    // Both lose signal and edit the same plan.
    sato.offline();
    tanaka.offline();
    println!("\nBoth devices go offline and edit the same plan:");
    sato.store.update(&plan, |p: &mut EngagementPlan| {
        p.notes.splice(0, 0, "[Sato] Asked about biomarker testing. ");
        p.activities[0].status = TaskStatus::Done;
    })?;
    println!("  sato: wrote in the notes and closed act-1");
    tanaka.store.update(&plan, |p: &mut EngagementPlan| {
        let end = p.notes.as_str().len();
        p.notes.splice(end, 0, " [田中] 次回は学会で面談予定。");
        p.activities[1].owner = "tanaka".into();
    })?;
    println!("  tanaka: wrote in the notes and took over act-2");
    show(&sato, &plan)?;
    show(&tanaka, &plan)?;

    // Signal returns: both sync through the relay and converge.
    sato.online()?;
    tanaka.online()?;
    sato.client().local_change(plan);
    tanaka.client().local_change(plan);
    let merged = |s: &DocStore| {
        s.get::<EngagementPlan>(&plan)
            .is_ok_and(|p| p.notes.as_str().contains("[Sato]") && p.notes.as_str().contains("[田中]"))
    };
    sato.until_store("tanaka's edits arrive", merged).await?;
    tanaka.until_store("sato's edits arrive", merged).await?;
    sato.synced().await?;
    tanaka.synced().await?;
    println!("\nBack online: both synced through the relay and hold the same plan:");
    show(&sato, &plan)?;
    show(&tanaka, &plan)?;
    let same = sato.store.load(&plan)?.get_heads() == tanaka.store.load(&plan)?.get_heads();
    println!("  identical on both devices: {same}");
    if !same {
        bail!("the devices did not converge");
    }

    // A submitted visit is locked on the relay too: the manager's edit comes back refused.
    let mut visit = Interaction::new(&kol, 1_790_000_000_000, Channel::InPerson);
    visit.summary = "Discussed renal dosing; requested a reprint.".into();
    let visit = sato.store.create("oncology-kanto", &visit)?;
    sato.store.submit::<Interaction>(&visit)?;
    sato.client().announce(visit);
    sato.synced().await?;
    tanaka.client().find(visit);
    tanaka.until_store("the visit arrives", |s| s.get::<Interaction>(&visit).is_ok()).await?;
    match tanaka.store.update(&visit, |i: &mut Interaction| i.summary.splice(0, 0, "edited ")) {
        Err(e) => println!("\ntanaka's edit of the submitted visit is refused on the tablet itself: {e}"),
        Ok(()) => bail!("a submitted record accepted an edit"),
    }
    println!("\nWho changed the plan:");
    for h in sato.store.history(&plan)? {
        let message = h.message.as_deref().unwrap_or("");
        let fields = if message.starts_with("create") { String::new() } else { format!(" ({})", h.fields.join(", ")) };
        println!("  {} on {}: {message}{fields}", h.user.as_deref().unwrap_or("?"), h.device.as_deref().unwrap_or("?"));
    }

    sato.offline();
    tanaka.offline();
    relay.shutdown().await?;
    println!("\nRelay stopped cleanly.");
    Ok(())
}
