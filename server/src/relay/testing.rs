//! A relay's actor over a temporary data directory, for the unit tests of the actor and of the
//! socket loop.

use std::sync::Arc;

use crate::auth::{Principal, RoleName};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::now_ms;

use super::{RelayHandle, RelaySettings, spawn};

/// The actor, its data, and one MSL of `pharma-a` with a token.
pub(crate) struct TestRelay {
    _dir: tempfile::TempDir,
    pub(crate) data: crate::Data,
    pub(crate) relay: RelayHandle,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: Config,
    pub(crate) token_id: String,
    pub(crate) principal: Principal,
}

impl std::fmt::Debug for TestRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRelay").finish_non_exhaustive()
    }
}

/// Starts the actor (inside a tokio runtime).
pub(crate) fn start() -> TestRelay {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    let data = crate::open_data(&config).expect("the data directory opens");
    let now = now_ms();
    let auth = &data.auth;
    auth.add_tenant("pharma-a", now).expect("tenant");
    auth.add_team("pharma-a", "tokyo").expect("team");
    auth.put_user("pharma-a", "sato", RoleName::Msl, &["tokyo".to_owned()]).expect("user");
    let (token, secret) = auth.issue_token("pharma-a", "sato", "phone", None, now).expect("token");
    let principal = auth.authenticate(&secret, now).expect("the token works");
    let metrics = Arc::new(Metrics::default());
    let relay = spawn(
        data.store.clone(),
        data.auth.clone(),
        data.ledger.clone(),
        metrics.clone(),
        RelaySettings::from_config(&config),
        None,
    );
    TestRelay { _dir: dir, data, relay, metrics, config, token_id: token.id, principal }
}

impl TestRelay {
    /// How many closes `/metrics` counts under `reason`.
    pub(crate) fn closed(&self, reason: &str) -> u64 {
        let wanted = format!("liaison_connections_closed_total{{reason=\"{reason}\"}} ");
        let rendered = self.metrics.render();
        rendered.lines().find_map(|l| l.strip_prefix(&wanted)).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Every close `/metrics` counts, whatever the reason.
    pub(crate) fn closed_total(&self) -> u64 {
        let rendered = self.metrics.render();
        rendered
            .lines()
            .filter(|l| l.starts_with("liaison_connections_closed_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Waits until the actor has handled everything sent to it before.
    pub(crate) async fn settled(&self) {
        assert!(self.relay.alive(std::time::Duration::from_secs(10)).await, "the actor answers");
    }
}
