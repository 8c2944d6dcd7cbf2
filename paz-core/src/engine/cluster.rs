//! The cluster's identity: a name kept in the store, so every replica on one store agrees on
//! it and a server on another store (or an empty one) has a different one. Schedulers label
//! what they create with it and never touch what carries another cluster's label.

use super::{CLUSTER, Paz};
use crate::error::{Error, Result};
use crate::store::{Condition, Txn};

impl Paz {
    /// The cluster id kept in the store; a store without one is given `candidate` (by
    /// compare-and-swap: replicas racing on an empty store all end up with the winner's).
    ///
    /// The candidate must be 1 to 64 characters of `[a-zA-Z0-9_.-]` (it becomes a container
    /// label value).
    pub async fn claim_cluster_id(&self, candidate: &str) -> Result<String> {
        check_cluster_id(candidate)?;
        loop {
            if let Some(kv) = self.store.get(CLUSTER).await? {
                return Ok(String::from_utf8_lossy(&kv.value).into_owned());
            }
            let txn = Txn::new()
                .when(CLUSTER, Condition::Absent)
                .put(CLUSTER, candidate.as_bytes().to_vec());
            match self.store.commit(txn).await {
                Ok(_) => return Ok(candidate.to_owned()),
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Refuses a cluster id that cannot be a label value in a filter.
pub fn check_cluster_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "cluster",
            "INVALID_CLUSTER_ID",
            format!("cluster id {id:?} must be 1 to 64 characters of [a-zA-Z0-9_.-]"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::paz;

    #[tokio::test]
    async fn the_first_claim_wins_and_stays() {
        let paz = paz();
        assert_eq!(paz.claim_cluster_id("a1").await.unwrap(), "a1");
        assert_eq!(paz.claim_cluster_id("b2").await.unwrap(), "a1");
        assert_eq!(
            paz.claim_cluster_id("bad id").await.unwrap_err().code(),
            "INVALID_CLUSTER_ID"
        );
    }
}
