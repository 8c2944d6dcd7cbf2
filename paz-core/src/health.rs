//! The `HealthChecker` port: active checks on the exact address and path the router uses.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::service::HealthCheck;

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTarget {
    /// `ip:port` of the instance.
    pub address: String,
    /// The check (kind, path, timeout…).
    pub check: HealthCheck,
    /// The `Host` header to send (the service's routed host name), if any.
    pub host: Option<String>,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Whether the instance passed.
    pub healthy: bool,
    /// What was seen (status code, error), for people.
    pub detail: String,
    /// How long the check took.
    pub latency: Duration,
}

/// Runs one active health check. Never fails: an error is an unhealthy report.
///
/// Every implementation must pass the contract suite `paz_core::contract::health` (feature `contract`).
#[async_trait]
pub trait HealthChecker: Send + Sync + 'static {
    /// Checks a target once, within its timeout.
    async fn check(&self, target: &HealthTarget) -> HealthReport;
}

/// A checker for tests: each address is healthy or not as the test sets it; unknown
/// addresses are unreachable.
#[derive(Default)]
pub struct FakeHealthChecker {
    results: Mutex<BTreeMap<String, bool>>,
}

impl FakeHealthChecker {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets whether an address passes.
    pub fn set(&self, address: &str, healthy: bool) {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.to_owned(), healthy);
    }
}

#[async_trait]
impl HealthChecker for FakeHealthChecker {
    async fn check(&self, target: &HealthTarget) -> HealthReport {
        let result = self
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target.address)
            .copied();
        let (healthy, detail) = match result {
            Some(true) => (true, "200 OK".to_owned()),
            Some(false) => (false, "HTTP 500".to_owned()),
            None => (false, format!("connection to {} refused", target.address)),
        };
        HealthReport {
            healthy,
            detail,
            latency: Duration::from_millis(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_passes_the_health_contract() {
        let checker = FakeHealthChecker::new();
        checker.set("127.0.0.1:1001", true);
        checker.set("127.0.0.1:1002", false);
        let fixture = crate::contract::health::Fixture {
            healthy: "127.0.0.1:1001".into(),
            unhealthy: "127.0.0.1:1002".into(),
            unreachable: "127.0.0.1:1003".into(),
        };
        crate::contract::health::run(&checker, &fixture).await;
    }
}
