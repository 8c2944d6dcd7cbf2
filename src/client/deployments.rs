//! Deployments and releases: deploying, rolling back, canary steps, the history, and
//! waiting for a deployment to end.

use std::time::{Duration, Instant};

use futures_util::stream::StreamExt;
use paz_core::api::{DeployRequest, RollbackRequest};
use paz_core::{Deployment, EventKind, Release};
use reqwest::Method;

use super::request::{Json, NoBody};
use super::{Client, Error};

/// How many times in a row [`Client::wait_for_deployment`] subscribes again to an event
/// stream that the server closed at once.
const MAX_RESUBSCRIBES: u32 = 3;

impl Client {
    /// `POST /v1/services/{name}/deploy`: makes a new release (with `image`, or the current
    /// spec again) and starts deploying it; follow it with [`Client::deployment`].
    pub async fn deploy(&self, name: &str, image: Option<String>) -> Result<Deployment, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "deploy"],
            Json(&DeployRequest { image }),
            None,
        )
        .await
    }

    /// `POST /v1/services/{name}/rollback`: deploys release `to`, by default the one before
    /// the current.
    pub async fn rollback(&self, name: &str, to: Option<u64>) -> Result<Deployment, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "rollback"],
            Json(&RollbackRequest { to }),
            None,
        )
        .await
    }

    /// `POST /v1/services/{name}/promote`: moves the service's canary deployment to its next
    /// traffic step. Fails with `INVALID_STATE` (409) when no canary deployment is in
    /// progress or it is already at 100 %.
    pub async fn promote(&self, name: &str) -> Result<Deployment, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "promote"],
            NoBody,
            None,
        )
        .await
    }

    /// `POST /v1/services/{name}/abort`: stops the service's running deployment. It fails
    /// and the previous release keeps serving. Fails with `INVALID_STATE` (409) when no
    /// deployment is in progress.
    pub async fn abort(&self, name: &str) -> Result<Deployment, Error> {
        self.call(
            Method::POST,
            &["v1", "services", name, "abort"],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/releases`: the releases of a service, oldest first.
    pub async fn releases(&self, name: &str) -> Result<Vec<Release>, Error> {
        self.call(
            Method::GET,
            &["v1", "services", name, "releases"],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/releases/{version}`: one release.
    pub async fn release(&self, name: &str, version: u64) -> Result<Release, Error> {
        let version = version.to_string();
        self.call(
            Method::GET,
            &["v1", "services", name, "releases", &version],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/services/{name}/deployments`: the deploy history of a service, oldest first.
    pub async fn deployments(&self, name: &str) -> Result<Vec<Deployment>, Error> {
        self.call(
            Method::GET,
            &["v1", "services", name, "deployments"],
            NoBody,
            None,
        )
        .await
    }

    /// `GET /v1/deployments/{id}`: one deployment (ids look like `web-3`).
    pub async fn deployment(&self, id: &str) -> Result<Deployment, Error> {
        self.call(Method::GET, &["v1", "deployments", id], NoBody, None)
            .await
    }

    /// Waits until deployment `id` is over (succeeded, failed or cancelled) and returns it
    /// as it ended. A failed deployment is an `Ok`: look at its `status` and `error`.
    ///
    /// Watches the server's event stream ([`Client::events`]) and reads the deployment again
    /// when it changes, so it reacts at once without polling. Gives up with
    /// [`Error::WaitTimedOut`] (carrying the deployment as last seen) after `timeout`; the
    /// deployment goes on on the server. When not even the first read of the deployment
    /// finished in time, the error is the [`Error::Http`] timeout.
    ///
    /// ```no_run
    /// # async fn run(client: paz::Client) -> Result<(), paz::Error> {
    /// use std::time::Duration;
    ///
    /// let started = client.deploy("web", Some("demo:v2".into())).await?;
    /// let ended = client.wait_for_deployment(&started.id, Duration::from_secs(600)).await?;
    /// if let Some(error) = &ended.error {
    ///     eprintln!("{} {}: {error}", ended.id, ended.status);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_for_deployment(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Deployment, Error> {
        let deadline = Instant::now() + timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let timed_out = |deployment: Deployment| Error::WaitTimedOut {
            deployment: Box::new(deployment),
            after: timeout,
        };
        let mut closed_in_a_row = 0;
        let mut current: Option<Deployment> = None;
        loop {
            // Subscribe first, then read: no change can slip in between.
            let mut events = match self.events_until(remaining()).await {
                Ok(events) => events,
                Err(Error::Http(e)) if e.is_timeout() => match current {
                    Some(current) => return Err(timed_out(current)),
                    None => return Err(Error::Http(e)),
                },
                Err(e) => return Err(e),
            };
            let mut seen = match self.deployment_until(id, remaining()).await {
                Ok(deployment) => deployment,
                Err(Error::Http(e)) if e.is_timeout() && current.is_some() => {
                    return Err(timed_out(current.take().expect("checked")));
                }
                Err(e) => return Err(e),
            };
            loop {
                if seen.status.is_final() {
                    return Ok(seen);
                }
                let reread = match events.next().await {
                    Some(Ok(event)) => {
                        closed_in_a_row = 0;
                        match &event.kind {
                            EventKind::DeploymentChanged { id: changed, .. } => changed == id,
                            EventKind::ServiceDeleted { service } => *service == seen.service,
                            _ => false,
                        }
                    }
                    // A `resync` event (some events were missed) or one this client does not
                    // know: read again to be sure.
                    Some(Err(Error::Decode { .. } | Error::EventsMissed { .. })) => true,
                    Some(Err(Error::Http(e))) if e.is_timeout() => return Err(timed_out(seen)),
                    Some(Err(e)) => return Err(e),
                    None => break,
                };
                if reread {
                    seen = match self.deployment_until(id, remaining()).await {
                        Ok(deployment) => deployment,
                        Err(Error::Http(e)) if e.is_timeout() => return Err(timed_out(seen)),
                        Err(e) => return Err(e),
                    };
                }
            }
            // The server closed the stream (e.g. it restarts): subscribe again.
            closed_in_a_row += 1;
            if closed_in_a_row > MAX_RESUBSCRIBES {
                return Err(Error::EventStreamClosed);
            }
            current = Some(seen);
        }
    }

    /// [`Client::deployment`] within `limit` (and within the client's request timeout).
    async fn deployment_until(&self, id: &str, limit: Duration) -> Result<Deployment, Error> {
        self.clone()
            .with_timeout(limit.min(self.timeout))
            .deployment(id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::testing::{deployment_json, fake_server, one_shot_server, runtime};

    #[test]
    fn promote_and_abort_post_to_their_paths() {
        for (path, call) in [("promote", true), ("abort", false)] {
            let (url, requests) = one_shot_server("200 OK", &deployment_json("web-4", "running"));
            let client = Client::new(&url, None).unwrap();
            let deployment = runtime()
                .block_on(async {
                    if call {
                        client.promote("web").await
                    } else {
                        client.abort("web").await
                    }
                })
                .unwrap();
            assert_eq!(deployment.id, "web-4");
            let request = requests.recv().unwrap().to_ascii_lowercase();
            assert!(
                request.starts_with(&format!("post /v1/services/web/{path} http/1.1")),
                "{request}"
            );
        }
    }

    #[test]
    fn wait_for_deployment_reads_again_on_each_change() {
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = reads.clone();
        let url = fake_server(move |head| {
            if head.starts_with("GET /v1/events ") {
                let other = r#"{"revision":8,"at":"2026-01-01T00:00:00Z","type":"deployment_changed","service":"api","id":"api-1","release":1,"status":"running"}"#;
                let ours = r#"{"revision":9,"at":"2026-01-01T00:00:00Z","type":"deployment_changed","service":"web","id":"web-4","release":2,"status":"succeeded"}"#;
                let body = format!(
                    ": hi\n\nevent: deployment_changed\ndata: {other}\n\nevent: deployment_changed\ndata: {ours}\n\n"
                );
                ("200 OK".into(), body, true)
            } else if head.starts_with("GET /v1/deployments/web-4 ") {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let status = if n == 0 { "running" } else { "succeeded" };
                ("200 OK".into(), deployment_json("web-4", status), false)
            } else {
                ("404 Not Found".into(), String::new(), false)
            }
        });
        let client = Client::new(&url, None).unwrap();
        let ended = runtime()
            .block_on(client.wait_for_deployment("web-4", Duration::from_secs(20)))
            .unwrap();
        assert_eq!(ended.status, paz_core::DeploymentStatus::Succeeded);
        // Once after subscribing, once for its own event (not for the other service's).
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn wait_for_deployment_gives_up_with_the_last_state() {
        let url = fake_server(|head| {
            if head.starts_with("GET /v1/events ") {
                ("200 OK".into(), ": keep-alive\n\n".into(), true)
            } else {
                ("200 OK".into(), deployment_json("web-4", "running"), false)
            }
        });
        let client = Client::new(&url, None).unwrap();
        let started = std::time::Instant::now();
        let err = runtime()
            .block_on(client.wait_for_deployment("web-4", Duration::from_millis(400)))
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let Error::WaitTimedOut { deployment, after } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(deployment.status, paz_core::DeploymentStatus::Running);
        assert_eq!(*after, Duration::from_millis(400));
        assert_eq!(
            err.to_string(),
            "deployment web-4 is still running after 400ms"
        );
    }

    #[test]
    fn wait_for_deployment_returns_a_finished_one_at_once() {
        let url = fake_server(|head| {
            if head.starts_with("GET /v1/events ") {
                ("200 OK".into(), String::new(), true)
            } else {
                ("200 OK".into(), deployment_json("web-4", "failed"), false)
            }
        });
        let client = Client::new(&url, None).unwrap();
        let ended = runtime()
            .block_on(client.wait_for_deployment("web-4", Duration::from_secs(20)))
            .unwrap();
        assert_eq!(ended.status, paz_core::DeploymentStatus::Failed);
    }

    #[test]
    fn wait_for_deployment_gives_up_when_the_stream_keeps_closing() {
        let url = fake_server(|head| {
            if head.starts_with("GET /v1/events ") {
                ("200 OK".into(), String::new(), false)
            } else {
                ("200 OK".into(), deployment_json("web-4", "running"), false)
            }
        });
        let client = Client::new(&url, None).unwrap();
        let err = runtime()
            .block_on(client.wait_for_deployment("web-4", Duration::from_secs(20)))
            .unwrap_err();
        assert!(matches!(err, Error::EventStreamClosed), "{err:?}");
    }
}
