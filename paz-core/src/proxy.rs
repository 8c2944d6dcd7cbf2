//! The `Proxy` port: applies route tables at the edge (built-in router, HAProxy), and a fake.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::route::RouteTable;

/// Routes traffic by host name to backends.
///
/// Every implementation must pass the contract suite `paz_core::contract::proxy` (feature `contract`).
#[async_trait]
pub trait Proxy: Send + Sync + 'static {
    /// Makes `table` the routing state; a backend marked draining takes no new requests.
    async fn apply(&self, table: &RouteTable) -> Result<()>;
    /// The routing state now in effect.
    async fn routes(&self) -> Result<RouteTable>;
    /// Requests in flight to a backend (`ip:port`); 0 for an unknown backend.
    async fn in_flight(&self, address: &str) -> Result<u64>;
    /// Waits until a backend has no request in flight or `timeout` passes; returns how many
    /// requests were still in flight at the end. By default [`Proxy::in_flight`] is polled
    /// every 10 ms; a proxy that can be told when a backend drains does better.
    async fn wait_drained(&self, address: &str, timeout: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.in_flight(address).await?;
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// An in-memory proxy for tests: keeps the table; in-flight counts are set by the test.
#[derive(Default)]
pub struct FakeProxy {
    table: Mutex<RouteTable>,
    in_flight: Mutex<BTreeMap<String, u64>>,
    failing: std::sync::atomic::AtomicBool,
}

impl FakeProxy {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `apply` fail (`false` ends it), as if the proxy refused the table.
    pub fn fail_apply(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sets the in-flight count of a backend.
    pub fn set_in_flight(&self, address: &str, count: u64) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.to_owned(), count);
    }
}

#[async_trait]
impl Proxy for FakeProxy {
    async fn apply(&self, table: &RouteTable) -> Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::Error::proxy(
                crate::PortErrorKind::Internal,
                "the fake proxy refused the table",
            ));
        }
        *self.table.lock().unwrap_or_else(|p| p.into_inner()) = table.clone();
        Ok(())
    }

    async fn routes(&self) -> Result<RouteTable> {
        Ok(self.table.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn in_flight(&self, address: &str) -> Result<u64> {
        Ok(self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
            .copied()
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_passes_the_proxy_contract() {
        crate::contract::proxy::run(&FakeProxy::new()).await;
    }

    #[tokio::test]
    async fn wait_drained_reports_what_is_left() {
        let proxy = FakeProxy::new();
        proxy.set_in_flight("10.0.0.1:80", 2);
        assert_eq!(
            proxy
                .wait_drained("10.0.0.1:80", Duration::from_millis(30))
                .await
                .unwrap(),
            2
        );
    }
}
