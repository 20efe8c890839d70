//! The routing key a relay hands each device (the `Liaison-Route` response header of the
//! WebSocket upgrade), which the device sends back on every later connection. A load balancer
//! in front of a cluster hashes it to pick a node, so a team's devices meet on one node and the
//! nodes seldom write the same shared record at once (each such write conflicts in the store
//! and is judged again: see ARCHITECTURE.md, the cluster invariant). Routing is a matter of
//! speed only: any node serves any device, whatever key it sends or forgets to send.
//!
//! The key is opaque (a hash of the tenant and the device's first team), so the balancer's logs
//! learn neither; the same for every device of the team, on every node, with nothing to
//! configure or share between nodes.

use sha2::{Digest as _, Sha256};

use crate::auth::Principal;

/// The key for `p`'s connections: 16 hex digits of SHA-256 over the tenant and the first of
/// its teams in sort order (the tenant alone when it has none, as a system admin).
pub(super) fn route_of(p: &Principal) -> String {
    let team = p.teams.iter().min().map_or("", String::as_str);
    let digest = Sha256::new()
        .chain_update(b"liaison-route\0")
        .chain_update(p.tenant.as_bytes())
        .chain_update(b"\0")
        .chain_update(team.as_bytes())
        .finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::RoleName;

    fn principal(tenant: &str, user: &str, teams: &[&str]) -> Principal {
        Principal {
            tenant: tenant.into(),
            user: user.into(),
            device: format!("{user}-phone"),
            role: RoleName::Msl,
            teams: teams.iter().map(|t| (*t).to_owned()).collect(),
            token_id: "t1".into(),
            token_hash: "h".into(),
            support: Vec::new(),
        }
    }

    #[test]
    fn a_teams_devices_share_a_key_that_names_neither_tenant_nor_team() {
        let sato = route_of(&principal("acme", "sato", &["east", "west"]));
        let suzuki = route_of(&principal("acme", "suzuki", &["west", "east"]));
        assert_eq!(sato, suzuki, "same first team, in any order: same key");
        assert_eq!(sato.len(), 16);
        assert!(sato.bytes().all(|b| b.is_ascii_hexdigit()) && !sato.contains("acme") && !sato.contains("east"));
        assert_ne!(sato, route_of(&principal("acme", "tanaka", &["north"])), "another team");
        assert_ne!(sato, route_of(&principal("globex", "sato", &["east", "west"])), "another tenant's team");
        assert_ne!(route_of(&principal("acme", "admin", &[])), route_of(&principal("acmeeast", "x", &[])));
    }
}
