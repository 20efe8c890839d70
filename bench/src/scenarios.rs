//! The five workloads. Each runs against a [`Target`] and returns a [`Measured`]; the caller
//! measures the server process around it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use automerge::ChangeHash;
use liaison_core::DocumentId;
use tokio::sync::{Notify, Semaphore};

use crate::device::{Device, Event, Target, Wire};
use crate::seed::{SeedDoc, device_name, team_of};

/// Sizes of a run.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub devices: usize,
    /// Initial sync: documents each device pulls (its team's).
    pub docs_per_device: usize,
    /// Team editing: shared plans per team.
    pub plans_per_team: usize,
    /// Team editing: edits per second per device; 0 means closed loop (edit again once the last
    /// edit is visible at every teammate), which measures the most a relay sustains.
    pub rate: f64,
    pub duration: Duration,
    /// Reconnect storm: edits each device makes offline.
    pub offline_edits: usize,
    /// Idle scale: connections to open.
    pub idle_connections: usize,
    pub idle_hold: Duration,
    /// Cold store: documents stored, and the share of them clients touch.
    pub cold_docs: usize,
    pub cold_touch: f64,
    /// New phone: documents its team holds (2,000 KOLs, each with a plan and 20 interactions).
    pub phone_docs: usize,
    /// How long any phase may take before what is missing counts as errors.
    pub timeout: Duration,
    /// Pause after a relay starts, before measuring (start-up work, JIT).
    pub settle: Duration,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            devices: 1000,
            docs_per_device: 50,
            plans_per_team: 2,
            // An edit every 2 s from each of 1,000 devices (far above what an MSL types): the
            // most this 2-core machine carries with the load generator's 1,000 automerge
            // devices beside the relay. At 1/s both together saturate it (docs/benchmarks.md).
            rate: 0.5,
            duration: Duration::from_secs(30),
            offline_edits: 10,
            idle_connections: 10_000,
            idle_hold: Duration::from_secs(5),
            cold_docs: 100_000,
            cold_touch: 0.05,
            phone_docs: 44_000,
            timeout: Duration::from_secs(60),
            settle: Duration::from_secs(1),
        }
    }

    pub fn quick() -> Self {
        Self {
            devices: 20,
            docs_per_device: 10,
            plans_per_team: 2,
            rate: 2.0,
            duration: Duration::from_secs(3),
            offline_edits: 3,
            idle_connections: 100,
            idle_hold: Duration::from_secs(1),
            cold_docs: 1_000,
            cold_touch: 0.05,
            phone_docs: 2_000,
            timeout: Duration::from_secs(30),
            settle: Duration::from_millis(300),
        }
    }

    pub fn teams(&self) -> usize {
        self.devices.div_ceil(5)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    InitialSync,
    TeamEditing,
    TeamEditingMax,
    ReconnectStorm,
    IdleScale,
    ColdStore,
    NewPhone,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::InitialSync,
        Scenario::TeamEditing,
        Scenario::TeamEditingMax,
        Scenario::ReconnectStorm,
        Scenario::IdleScale,
        Scenario::ColdStore,
        Scenario::NewPhone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::InitialSync => "initial-sync",
            Scenario::TeamEditing => "team-editing",
            Scenario::TeamEditingMax => "team-editing-max",
            Scenario::ReconnectStorm => "reconnect-storm",
            Scenario::IdleScale => "idle-scale",
            Scenario::ColdStore => "cold-store",
            Scenario::NewPhone => "new-phone",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }

    /// The documents the relay holds before the scenario starts.
    pub fn seed(self, sizes: &Sizes) -> Result<Vec<SeedDoc>> {
        match self {
            Scenario::InitialSync => crate::seed::make_docs(sizes.teams(), sizes.docs_per_device),
            Scenario::TeamEditing | Scenario::TeamEditingMax | Scenario::ReconnectStorm => {
                crate::seed::make_docs(sizes.teams(), sizes.plans_per_team)
            }
            Scenario::IdleScale => Ok(Vec::new()),
            Scenario::ColdStore => crate::seed::make_docs(sizes.teams(), sizes.cold_docs.div_ceil(sizes.teams())),
            // Every document in team 0, the new phone's.
            Scenario::NewPhone => crate::seed::make_docs(1, sizes.phone_docs),
        }
    }
}

/// What the load generator saw.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Operations completed (documents pulled, edits visible, connections held...).
    pub ops: u64,
    pub unit: &'static str,
    pub wall: Duration,
    /// Latency samples in microseconds (what a sample is depends on the scenario).
    pub latencies_us: Vec<u64>,
    pub errors: u64,
    pub wire_bytes: u64,
    /// Scenario-specific figures, as (name, value).
    pub extra: Vec<(String, String)>,
    /// Server RSS sampled at the scenario's own point of interest (idle: all connected).
    pub rss_at_point: Option<u64>,
}

impl Measured {
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies_us, p).map(|us| us as f64 / 1000.0)
    }
}

pub fn percentile(samples: &[u64], p: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    Some(v[i.min(v.len() - 1)])
}

fn by_team(docs: &[SeedDoc]) -> HashMap<usize, Vec<SeedDoc>> {
    let mut m: HashMap<usize, Vec<SeedDoc>> = HashMap::new();
    for d in docs {
        m.entry(d.team).or_default().push(d.clone());
    }
    m
}

fn new_device(i: usize, wire: &Arc<Wire>) -> Device {
    let mut device = Device::new(&device_name(i), &device_name(i), i, wire.clone());
    // liaison's relay accepts only changes under the uploader's own actor ids (ARCHITECTURE.md,
    // the actor scheme); other relays do not care which actor a change has.
    let install: [u8; 8] = uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or([0; 8]);
    device.actor =
        liaison_core::id::actor_id_for(crate::seed::TENANT, &format!("msl-{}", team_of(i)), &device_name(i), &install);
    device
}

/// Waits for every task; a task that failed counts as an error.
async fn join_all<T>(wire: &Wire, tasks: Vec<tokio::task::JoinHandle<Result<T>>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => wire.error("device failed", &format!("{e:#}")),
            Err(e) => wire.error("device task panicked", &e),
        }
    }
    out
}

/// Connects every device (at most `parallel` handshakes at once) and pulls `docs[team]`.
async fn connect_and_pull(
    target: &Target,
    wire: &Arc<Wire>,
    devices: usize,
    docs: &Arc<HashMap<usize, Vec<SeedDoc>>>,
    timeout: Duration,
) -> Vec<Device> {
    let gate = Arc::new(Semaphore::new(256));
    let tasks = (0..devices)
        .map(|i| {
            let (target, wire, docs, gate) = (target.clone(), wire.clone(), docs.clone(), gate.clone());
            tokio::spawn(async move {
                let mut dev = new_device(i, &wire);
                {
                    let _permit = gate.acquire().await?;
                    dev.connect(&target).await?;
                }
                let mine = docs.get(&team_of(i)).cloned().unwrap_or_default();
                for d in &mine {
                    dev.open(d.id).await?;
                }
                let done = |dev: &Device| {
                    mine.iter().all(|d| dev.docs.get(&d.id).is_some_and(|x| x.am.get_heads() == d.heads))
                };
                if !dev.until(Instant::now() + timeout, |_| {}, done).await? {
                    anyhow::bail!("{}: the team's plans did not arrive", dev.name);
                }
                Ok(dev)
            })
        })
        .collect();
    join_all(wire, tasks).await
}

// ---------------------------------------------------------------------------------------------
// 1. Initial sync

/// Every device connects and pulls its team's documents, none of which it has seen. A sample is
/// one device's time from starting to connect until it holds all of them.
pub async fn initial_sync(target: &Target, sizes: &Sizes, docs: &[SeedDoc]) -> Result<Measured> {
    let wire = Arc::new(Wire::default());
    let teams = Arc::new(by_team(docs));
    let pulled = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let tasks = (0..sizes.devices)
        .map(|i| {
            let (target, wire, teams, pulled, gate, retried) =
                (target.clone(), wire.clone(), teams.clone(), pulled.clone(), gate.clone(), retried.clone());
            let timeout = sizes.timeout;
            tokio::spawn(async move {
                let t0 = Instant::now();
                let mut dev = new_device(i, &wire);
                {
                    let _permit = gate.acquire().await?;
                    dev.connect(&target).await?;
                }
                let mine: HashMap<DocumentId, Vec<ChangeHash>> = teams
                    .get(&team_of(i))
                    .map(|v| v.iter().map(|d| (d.id, d.heads.clone())).collect())
                    .unwrap_or_default();
                for id in mine.keys() {
                    dev.open(*id).await?;
                }
                let mut left = mine.len();
                let mut tries: HashMap<DocumentId, u32> = HashMap::new();
                let deadline = Instant::now() + timeout;
                while left > 0 {
                    let ev = match tokio::time::timeout(
                        deadline.saturating_duration_since(Instant::now()),
                        dev.next_event(),
                    )
                    .await
                    {
                        Ok(ev) => ev?,
                        Err(_) => anyhow::bail!("{}: {left} documents did not arrive in time", dev.name),
                    };
                    match ev {
                        Event::Changed(id, _)
                            if mine
                                .get(&id)
                                .is_some_and(|h| dev.docs.get(&id).is_some_and(|d| &d.am.get_heads() == h)) =>
                        {
                            left -= 1;
                            pulled.fetch_add(1, Ordering::Relaxed);
                            // Bounded memory in the load generator: a pulled document is done with.
                            dev.forget(id);
                        }
                        Event::Unavailable(id) if mine.contains_key(&id) => {
                            // An app would ask again later: retry twice before counting an error
                            // (the Node peer sometimes answers "unavailable" for a stored
                            // document under concurrent requests).
                            let n = tries.entry(id).or_insert(0u32);
                            if *n < 2 {
                                *n += 1;
                                retried.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                dev.docs.remove(&id);
                                dev.open(id).await?;
                            } else {
                                wire.unavailable.fetch_add(1, Ordering::Relaxed);
                                left -= 1;
                            }
                        }
                        _ => {}
                    }
                }
                Ok(t0.elapsed().as_micros() as u64)
            })
        })
        .collect();
    let latencies_us = join_all(&wire, tasks).await;
    let wall = start.elapsed();
    let expected = (sizes.devices * sizes.docs_per_device) as u64;
    let ops = pulled.load(Ordering::Relaxed);
    Ok(Measured {
        ops,
        unit: "docs/s",
        wall,
        latencies_us,
        errors: wire.errors() + expected.saturating_sub(ops),
        wire_bytes: wire.bytes(),
        extra: vec![
            ("documents pulled".into(), format!("{ops} of {expected}")),
            ("unavailable answers retried".into(), retried.load(Ordering::Relaxed).to_string()),
        ],
        rss_at_point: None,
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Team editing

/// Edits waiting to be seen by every teammate.
#[derive(Debug, Default)]
struct Tracker {
    pending: Mutex<HashMap<ChangeHash, (Instant, u8, usize)>>,
    samples: Mutex<Vec<u64>>,
    completed: AtomicU64,
    made: AtomicU64,
    /// Per author: edits fully seen, and a wake-up for closed-loop authors.
    done: Vec<AtomicU64>,
    wake: Vec<Notify>,
}

impl Tracker {
    fn new(devices: usize) -> Self {
        Self {
            done: (0..devices).map(|_| AtomicU64::new(0)).collect(),
            wake: (0..devices).map(|_| Notify::new()).collect(),
            ..Self::default()
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn made(&self, hash: ChangeHash, at: Instant, recipients: u8, author: usize) {
        self.made.fetch_add(1, Ordering::Relaxed);
        Self::lock(&self.pending).insert(hash, (at, recipients, author));
    }

    fn seen(&self, hashes: &[ChangeHash]) {
        let now = Instant::now();
        let mut pending = Self::lock(&self.pending);
        let mut samples = Vec::new();
        for h in hashes {
            let Some(entry) = pending.get_mut(h) else { continue };
            samples.push(now.duration_since(entry.0).as_micros() as u64);
            entry.1 -= 1;
            if entry.1 == 0 {
                let (_, _, author) = entry.to_owned();
                pending.remove(h);
                self.completed.fetch_add(1, Ordering::Relaxed);
                self.done[author].fetch_add(1, Ordering::Relaxed);
                self.wake[author].notify_one();
            }
        }
        drop(pending);
        Self::lock(&self.samples).extend(samples);
    }

    fn outstanding(&self) -> usize {
        Self::lock(&self.pending).len()
    }
}

fn team_size(devices: usize, device: usize) -> usize {
    let t = team_of(device);
    (devices - t * 5).min(5)
}

/// Devices in teams of five edit their team's shared plans for `duration`, at `rate` edits per
/// second each (or closed loop). A sample is one edit becoming visible at one teammate.
pub async fn team_editing(target: &Target, sizes: &Sizes, docs: &[SeedDoc], closed_loop: bool) -> Result<Measured> {
    let wire = Arc::new(Wire::default());
    let teams = Arc::new(by_team(docs));
    let devices = connect_and_pull(target, &wire, sizes.devices, &teams, sizes.timeout).await;
    let bytes_before = wire.bytes();
    let tracker = Arc::new(Tracker::new(sizes.devices));
    let stop_editing = Arc::new(AtomicBool::new(false));
    // Devices between checking `stop_editing` and recording their edit: the window's end
    // waits for them, or an edit made just then would be recorded after the wait for
    // deliveries ended, and count as lost while the devices disconnect under it.
    let editing = Arc::new(AtomicUsize::new(0));
    let (finish, finished) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let rate = sizes.rate;
    let tasks: Vec<_> = devices
        .into_iter()
        .enumerate()
        .map(|(n, mut dev)| {
            let (tracker, stop_editing, finished, teams) =
                (tracker.clone(), stop_editing.clone(), finished.clone(), teams.clone());
            let editing = editing.clone();
            let mut finished = finished;
            let i: usize = dev.name[1..].parse().unwrap_or(n);
            let recipients = (team_size(sizes.devices, i) - 1) as u8;
            tokio::spawn(async move {
                let plans: Vec<DocumentId> =
                    teams.get(&team_of(i)).map(|v| v.iter().map(|d| d.id).collect()).unwrap_or_default();
                let period = if closed_loop || rate <= 0.0 {
                    Duration::from_secs(3600)
                } else {
                    Duration::from_secs_f64(1.0 / rate)
                };
                // A random phase over the whole period so devices do not edit in lockstep (capping
                // it at 1 s made every device edit in the same second at rates below 1/s: bursts).
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + period.mul_f64(fastrand::f64()), period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut made = 0u64;
                let mut edit = closed_loop && recipients > 0;
                loop {
                    editing.fetch_add(1, Ordering::SeqCst);
                    if edit && !stop_editing.load(Ordering::SeqCst) {
                        edit = false;
                        let doc = plans[fastrand::usize(..plans.len())];
                        let edited = dev.edit(doc, "edit-text-16byte");
                        if let Ok((hash, _)) = &edited
                            && recipients > 0
                        {
                            tracker.made(*hash, Instant::now(), recipients, i);
                            made += 1;
                        }
                        editing.fetch_sub(1, Ordering::SeqCst);
                        edited?;
                        dev.flush(doc).await?;
                    } else {
                        editing.fetch_sub(1, Ordering::SeqCst);
                    }
                    tokio::select! {
                        msg = dev.recv_message() => {
                            if let Event::Changed(_, hashes) = dev.handle(msg?).await? {
                                tracker.seen(&hashes);
                            }
                        }
                        _ = ticker.tick(), if !closed_loop => edit = true,
                        _ = tracker.wake[i].notified(), if closed_loop => {
                            edit = tracker.done[i].load(Ordering::Relaxed) >= made;
                        }
                        _ = finished.changed() => break,
                    }
                }
                dev.disconnect().await;
                Ok(())
            })
        })
        .collect();
    tokio::time::sleep(sizes.duration).await;
    stop_editing.store(true, Ordering::SeqCst);
    let window = start.elapsed();
    // An edit begun before the stop is recorded before the wait for deliveries starts.
    while editing.load(Ordering::SeqCst) > 0 {
        tokio::task::yield_now().await;
    }
    // Let what was sent arrive; what has not by then counts as lost.
    let grace = Instant::now() + Duration::from_secs(10);
    while tracker.outstanding() > 0 && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = finish.send(true);
    join_all(&wire, tasks).await;
    let made = tracker.made.load(Ordering::Relaxed);
    let completed = tracker.completed.load(Ordering::Relaxed);
    let samples = std::mem::take(&mut *Tracker::lock(&tracker.samples));
    let deliveries = samples.len() as u64;
    Ok(Measured {
        ops: completed,
        unit: "edits/s",
        wall: window,
        latencies_us: samples,
        errors: wire.errors() + (made - completed),
        wire_bytes: wire.bytes() - bytes_before,
        extra: vec![
            ("edits made".into(), made.to_string()),
            ("edits visible at every teammate".into(), completed.to_string()),
            ("deliveries/s".into(), format!("{:.0}", deliveries as f64 / window.as_secs_f64())),
        ],
        rss_at_point: None,
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Reconnect storm

/// Devices sync the team plans, go offline, each makes `offline_edits` edits, and all come back
/// at once. A sample is one offline edit reaching one teammate, timed from the storm's start.
/// Reports wire bytes against the least any relay must move: each new change up once and down
/// to each teammate.
pub async fn reconnect_storm(target: &Target, sizes: &Sizes, docs: &[SeedDoc]) -> Result<Measured> {
    let wire = Arc::new(Wire::default());
    let teams = Arc::new(by_team(docs));
    let mut devices = connect_and_pull(target, &wire, sizes.devices, &teams, sizes.timeout).await;
    for d in &mut devices {
        d.disconnect().await;
    }
    let tracker = Arc::new(Tracker::new(sizes.devices));
    let mut edits = Vec::new();
    let mut least_bytes = 0u64;
    let mut change_bytes = 0u64;
    for dev in &mut devices {
        let i: usize = dev.name[1..].parse().unwrap_or(0);
        let plans: Vec<DocumentId> =
            teams.get(&team_of(i)).map(|v| v.iter().map(|d| d.id).collect()).unwrap_or_default();
        let recipients = team_size(sizes.devices, i) - 1;
        for k in 0..sizes.offline_edits {
            let (hash, size) = dev.edit(plans[k % plans.len()], "offline-edit-016")?;
            change_bytes += size as u64;
            least_bytes += (size * (1 + recipients)) as u64;
            edits.push((hash, recipients as u8, i));
        }
    }
    let bytes_before = wire.bytes();
    let errors_before = wire.errors();
    let start = Instant::now();
    for (hash, r, i) in edits {
        if r > 0 {
            tracker.made(hash, start, r, i);
        }
    }
    let (finish, finished) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = devices
        .into_iter()
        .map(|mut dev| {
            let (target, tracker, mut finished) = (target.clone(), tracker.clone(), finished.clone());
            tokio::spawn(async move {
                dev.connect(&target).await?;
                let ids: Vec<DocumentId> = dev.docs.keys().copied().collect();
                for id in ids {
                    dev.flush(id).await?;
                }
                loop {
                    tokio::select! {
                        msg = dev.recv_message() => {
                            if let Event::Changed(_, hashes) = dev.handle(msg?).await? {
                                tracker.seen(&hashes);
                            }
                        }
                        _ = finished.changed() => break,
                    }
                }
                dev.disconnect().await;
                Ok(())
            })
        })
        .collect();
    let deadline = Instant::now() + sizes.timeout;
    while tracker.outstanding() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = start.elapsed();
    // Quiet period: whatever the sync protocol still says after convergence is counted too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = finish.send(true);
    join_all(&wire, tasks).await;
    let bytes = wire.bytes() - bytes_before;
    let made = tracker.made.load(Ordering::Relaxed);
    let completed = tracker.completed.load(Ordering::Relaxed);
    let samples = std::mem::take(&mut *Tracker::lock(&tracker.samples));
    Ok(Measured {
        ops: completed,
        unit: "edits/s",
        wall,
        latencies_us: samples,
        errors: wire.errors() - errors_before + (made - completed),
        wire_bytes: bytes,
        extra: vec![
            ("new change bytes".into(), change_bytes.to_string()),
            ("least bytes to move (up once, down to each teammate)".into(), least_bytes.to_string()),
            ("wire bytes / least bytes".into(), format!("{:.2}", bytes as f64 / least_bytes.max(1) as f64)),
        ],
        rss_at_point: None,
    })
}

// ---------------------------------------------------------------------------------------------
// 4. Idle scale

/// Opens `idle_connections` connections (handshake done, no documents) and holds them. A sample
/// is one connection's connect + handshake time. The server's RSS (its nodes' summed) is
/// sampled once all are open.
pub async fn idle_scale(target: &Target, sizes: &Sizes, server_pids: &[u32]) -> Result<Measured> {
    let wire = Arc::new(Wire::default());
    let baseline = crate::procstat::rss_now(server_pids);
    let gate = Arc::new(Semaphore::new(256));
    let open = Arc::new(AtomicU64::new(0));
    let release = Arc::new(Notify::new());
    let released = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..sizes.idle_connections)
        .map(|k| {
            let (target, wire, gate, open, release, released, dropped) = (
                target.clone(),
                wire.clone(),
                gate.clone(),
                open.clone(),
                release.clone(),
                released.clone(),
                dropped.clone(),
            );
            let devices = sizes.devices;
            tokio::spawn(async move {
                // One token per device; several connections per device, as several app
                // processes would, each with its own peer id.
                let name = device_name(k % devices);
                let mut dev = Device::new(&name, &format!("{name}/idle{k}"), k, wire.clone());
                let t0 = Instant::now();
                {
                    let _permit = gate.acquire().await?;
                    dev.connect(&target).await?;
                }
                let took = t0.elapsed().as_micros() as u64;
                open.fetch_add(1, Ordering::Relaxed);
                loop {
                    tokio::select! {
                        ev = dev.recv_message() => if let Err(e) = ev {
                            if !released.load(Ordering::Relaxed) {
                                dropped.fetch_add(1, Ordering::Relaxed);
                                wire.error("idle connection dropped", &e);
                            }
                            break;
                        },
                        _ = release.notified() => break,
                    }
                }
                dev.disconnect().await;
                Ok(took)
            })
        })
        .collect();
    let deadline = Instant::now() + sizes.timeout;
    while (open.load(Ordering::Relaxed) as usize) + (wire.errors.load(Ordering::Relaxed) as usize)
        < sizes.idle_connections
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_wall = start.elapsed();
    tokio::time::sleep(sizes.idle_hold).await;
    let held = open.load(Ordering::Relaxed) - dropped.load(Ordering::Relaxed);
    let rss = crate::procstat::rss_now(server_pids);
    released.store(true, Ordering::Relaxed);
    release.notify_waiters();
    // Tasks still connecting see the release too late; let them notice through the flag.
    let latencies_us = join_all(&wire, tasks).await;
    let mut extra = vec![
        ("connections held".into(), format!("{held} of {}", sizes.idle_connections)),
        ("time to open all".into(), format!("{:.1} s", connect_wall.as_secs_f64())),
    ];
    if let (Some(rss), Some(base)) = (rss, baseline) {
        extra.push((
            "server RSS per connection".into(),
            format!("{:.1} KiB", rss.saturating_sub(base) as f64 / held.max(1) as f64 / 1024.0),
        ));
    }
    Ok(Measured {
        ops: held,
        unit: "conns/s",
        wall: connect_wall,
        latencies_us,
        errors: wire.errors() + (sizes.idle_connections as u64).saturating_sub(held),
        wire_bytes: wire.bytes(),
        extra,
        rss_at_point: rss,
    })
}

// ---------------------------------------------------------------------------------------------
// 5. Cold store

/// The relay holds `cold_docs` documents; devices touch a random `cold_touch` share of them (each
/// only its team's): pull, edit once, wait until the relay acknowledges the edit. A sample is
/// one document's pull + edit + acknowledgement.
pub async fn cold_store(target: &Target, sizes: &Sizes, docs: &[SeedDoc]) -> Result<Measured> {
    let wire = Arc::new(Wire::default());
    let teams = by_team(docs);
    let touch_total = ((docs.len() as f64) * sizes.cold_touch).round() as usize;
    let per_device = touch_total.div_ceil(sizes.devices).max(1);
    // Each team's five devices take distinct random documents of the team.
    let mut plan: Vec<Vec<(DocumentId, Vec<ChangeHash>)>> = vec![Vec::new(); sizes.devices];
    for (team, list) in &teams {
        let mut list = list.clone();
        fastrand::shuffle(&mut list);
        let members: Vec<usize> = (team * 5..(team * 5 + 5).min(sizes.devices)).collect();
        let mut it = list.into_iter();
        for &m in &members {
            plan[m] = it.by_ref().take(per_device).map(|d| (d.id, d.heads)).collect();
        }
    }
    let touched = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(256));
    let start = Instant::now();
    let tasks: Vec<_> = plan
        .into_iter()
        .enumerate()
        .map(|(i, mine)| {
            let (target, wire, touched, gate) = (target.clone(), wire.clone(), touched.clone(), gate.clone());
            let timeout = sizes.timeout;
            tokio::spawn(async move {
                let mut dev = new_device(i, &wire);
                {
                    let _permit = gate.acquire().await?;
                    dev.connect(&target).await?;
                }
                let deadline = Instant::now() + timeout;
                let mut samples = Vec::new();
                for (id, heads) in mine {
                    let t0 = Instant::now();
                    dev.open(id).await?;
                    let got = dev
                        .until(deadline, |_| {}, |d| d.docs.get(&id).is_some_and(|x| x.am.get_heads() == heads))
                        .await?;
                    if !got {
                        anyhow::bail!("{}: a stored document did not arrive", dev.name);
                    }
                    dev.edit(id, "cold-store-edit!")?;
                    dev.flush(id).await?;
                    let acked =
                        dev.until(deadline, |_| {}, |d| d.docs.get(&id).is_some_and(|x| x.acknowledged())).await?;
                    if !acked {
                        anyhow::bail!("{}: an edit was not acknowledged", dev.name);
                    }
                    samples.push(t0.elapsed().as_micros() as u64);
                    touched.fetch_add(1, Ordering::Relaxed);
                    dev.forget(id);
                }
                dev.disconnect().await;
                Ok(samples)
            })
        })
        .collect();
    let latencies_us: Vec<u64> = join_all(&wire, tasks).await.into_iter().flatten().collect();
    let wall = start.elapsed();
    let ops = touched.load(Ordering::Relaxed);
    let expected = (per_device * sizes.devices).min(docs.len()) as u64;
    Ok(Measured {
        ops,
        unit: "docs/s",
        wall,
        latencies_us,
        errors: wire.errors() + expected.saturating_sub(ops),
        wire_bytes: wire.bytes(),
        extra: vec![
            ("documents stored".into(), docs.len().to_string()),
            ("documents touched".into(), format!("{ops} of {expected}")),
        ],
        rss_at_point: None,
    })
}

/// Requests a client of a relay without a catalog keeps in flight.
const NODE_WINDOW: usize = 2_000;

/// New phone: one device of a team of `sizes.phone_docs` documents, with an empty store, pulls
/// them all. liaison's device knows no id: it asks for the catalog in its join and requests what
/// the catalog lists. Other relays' device is given every id in advance (they have no catalog).
/// Then, for liaison, a reconnect with nothing new, from the position the catalog gave.
/// Round trips are the waits on the critical path: join → answer, then requests → documents.
pub async fn new_phone(target: &Target, sizes: &Sizes, docs: &[SeedDoc]) -> Result<Measured> {
    use liaison_core::sync::catalog::CatalogRequest;
    let wire = Arc::new(Wire::default());
    let want: HashMap<DocumentId, Vec<ChangeHash>> = docs.iter().map(|d| (d.id, d.heads.clone())).collect();
    let liaison = target.tokens.is_some();
    let start = Instant::now();
    let mut dev = new_device(0, &wire);
    if liaison {
        dev.catalog = Some(CatalogRequest::default());
    }
    dev.connect(target).await?;
    let mut round_trips = 1;
    let mut left = want.len();
    let mut listed = 0usize;
    let mut end = None;
    // Other relays get every id in advance, asked for in a window of NODE_WINDOW at a time: the
    // Node server resets a connection that sends all 44,000 requests at once (seen in the first
    // full run), so this is the best a client of it can do; each window is a round trip.
    let mut ids: Vec<DocumentId> = want.keys().copied().collect();
    if !liaison {
        round_trips += ids.len().div_ceil(NODE_WINDOW);
        for id in ids.split_off(ids.len().saturating_sub(NODE_WINDOW)) {
            dev.open(id).await?;
        }
    }
    let deadline = Instant::now() + sizes.timeout;
    while left > 0 || (liaison && end.is_none()) {
        let ev = match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), dev.next_event()).await
        {
            Ok(ev) => ev?,
            Err(_) => anyhow::bail!("new phone: {left} documents did not arrive in time"),
        };
        match ev {
            Event::Catalog(page) => {
                if listed == 0 && !page.entries.is_empty() {
                    round_trips += 1;
                }
                for e in &page.entries {
                    listed += 1;
                    dev.open(e.doc).await?;
                }
                if let Some(e) = page.end {
                    end = Some(CatalogRequest { cursor: e.cursor, scope: e.scope.fingerprint() });
                }
            }
            Event::Changed(id, _)
                if want.get(&id).is_some_and(|h| dev.docs.get(&id).is_some_and(|d| &d.am.get_heads() == h)) =>
            {
                left -= 1;
                dev.forget(id);
                if let Some(next) = ids.pop().filter(|_| !liaison) {
                    dev.open(next).await?;
                }
            }
            Event::Unavailable(id) if want.contains_key(&id) => {
                wire.unavailable.fetch_add(1, Ordering::Relaxed);
                left -= 1;
                if let Some(next) = ids.pop().filter(|_| !liaison) {
                    dev.open(next).await?;
                }
            }
            _ => {}
        }
    }
    let wall = start.elapsed();
    let initial_bytes = wire.bytes();
    let initial_frames = wire.frames_in.load(Ordering::Relaxed) + wire.frames_out.load(Ordering::Relaxed);
    let mut extra = vec![
        ("documents".to_owned(), want.len().to_string()),
        ("initial sync s".to_owned(), format!("{:.2}", wall.as_secs_f64())),
        ("initial sync bytes".to_owned(), initial_bytes.to_string()),
        ("initial sync frames".to_owned(), initial_frames.to_string()),
        ("initial sync round trips".to_owned(), round_trips.to_string()),
    ];
    if liaison {
        extra.push(("listed by the catalog".to_owned(), listed.to_string()));
        // A reconnect with nothing new: the join with the position, the answer, nothing else.
        dev.disconnect().await;
        dev.catalog = end;
        let (bytes0, frames0) =
            (wire.bytes(), wire.frames_in.load(Ordering::Relaxed) + wire.frames_out.load(Ordering::Relaxed));
        let t = Instant::now();
        dev.connect(target).await?;
        let mut entries = 0;
        loop {
            match tokio::time::timeout(sizes.timeout, dev.next_event()).await {
                Ok(Ok(Event::Catalog(page))) => {
                    entries += page.entries.len();
                    if page.end.is_some() {
                        break;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => anyhow::bail!("no catalog answer on reconnect"),
            }
        }
        let frames = wire.frames_in.load(Ordering::Relaxed) + wire.frames_out.load(Ordering::Relaxed) - frames0;
        extra.push(("reconnect ms".to_owned(), format!("{:.1}", t.elapsed().as_secs_f64() * 1000.0)));
        extra.push(("reconnect bytes".to_owned(), (wire.bytes() - bytes0).to_string()));
        extra.push(("reconnect frames".to_owned(), frames.to_string()));
        extra.push(("reconnect round trips".to_owned(), "1".to_owned()));
        extra.push(("reconnect entries".to_owned(), entries.to_string()));
    }
    dev.disconnect().await;
    Ok(Measured {
        ops: (want.len() - wire.unavailable.load(Ordering::Relaxed) as usize) as u64,
        unit: "docs/s",
        wall,
        latencies_us: vec![wall.as_micros() as u64],
        errors: wire.errors(),
        wire_bytes: initial_bytes,
        extra,
        rss_at_point: None,
    })
}
