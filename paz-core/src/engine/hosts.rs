//! Hosts: the machines that registered themselves on a lease.

use std::time::Duration;

use super::{HOSTS, Paz, decode, encode};
use crate::error::Result;
use crate::model::Host;
use crate::store::{LeaseId, Txn};

impl Paz {
    /// The hosts that registered themselves.
    pub async fn hosts(&self) -> Result<Vec<Host>> {
        let listing = self.store.list(HOSTS).await?;
        listing.items.iter().map(decode).collect()
    }

    /// Registers a host on a lease of `ttl`; keep the lease alive to stay listed.
    pub async fn register_host(&self, host: &Host, ttl: Duration) -> Result<LeaseId> {
        let lease = self.store.grant_lease(ttl).await?;
        self.store
            .commit(Txn::new().put_with_lease(format!("{HOSTS}{}", host.id), encode(host), lease))
            .await?;
        Ok(lease)
    }

    /// Writes a host record on an existing lease (a scheduler's inventory: Swarm nodes,
    /// fleet machines).
    pub async fn put_host(&self, host: &Host, lease: LeaseId) -> Result<()> {
        self.store
            .commit(Txn::new().put_with_lease(format!("{HOSTS}{}", host.id), encode(host), lease))
            .await?;
        Ok(())
    }

    /// Removes a host record.
    pub async fn remove_host(&self, id: &str) -> Result<()> {
        self.store
            .commit(Txn::new().delete(format!("{HOSTS}{id}")))
            .await?;
        Ok(())
    }
}
