//! The `HealthChecker` contract.

use std::time::{Duration, Instant};

use crate::duration::HumanDuration;
use crate::health::{HealthChecker, HealthTarget};
use crate::service::HealthCheck;

/// Addresses prepared by the test: one that answers `/health` with 200, one that answers
/// it with 500, and one where nothing listens.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Answers 2xx.
    pub healthy: String,
    /// Answers 5xx.
    pub unhealthy: String,
    /// Refuses connections.
    pub unreachable: String,
}

fn target(address: &str) -> HealthTarget {
    HealthTarget {
        address: address.to_owned(),
        check: HealthCheck {
            path: "/health".into(),
            timeout: HumanDuration::from_secs(2),
            ..HealthCheck::default()
        },
        host: Some("contract.localhost".into()),
    }
}

/// Runs every check.
pub async fn run(checker: &impl HealthChecker, fixture: &Fixture) {
    let report = checker.check(&target(&fixture.healthy)).await;
    assert!(report.healthy, "a 2xx answer is healthy: {}", report.detail);
    let report = checker.check(&target(&fixture.unhealthy)).await;
    assert!(!report.healthy, "a 5xx answer is unhealthy");
    assert!(!report.detail.is_empty(), "an unhealthy report says why");
    let started = Instant::now();
    let report = checker.check(&target(&fixture.unreachable)).await;
    assert!(!report.healthy, "an unreachable instance is unhealthy");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a check ends within its timeout"
    );
}
