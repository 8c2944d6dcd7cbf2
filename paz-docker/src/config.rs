//! How to reach the Docker daemon and how to run containers on it.

use std::collections::BTreeMap;
use std::time::Duration;

/// The socket Docker listens on by default on Linux.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The default name of the user-defined bridge network Paz runs instances on.
pub const DEFAULT_NETWORK: &str = "paz";

/// Settings of [`DockerScheduler`](crate::DockerScheduler).
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// The daemon: `unix:///path/to/docker.sock` (or a bare absolute socket path) or
    /// `tcp://host:port` (plain HTTP; TLS is not supported). `None` uses the `DOCKER_HOST`
    /// environment variable, else [`DEFAULT_DOCKER_HOST`].
    pub host: Option<String>,
    /// The user-defined bridge network instances run on; created (labelled
    /// `paz.managed=true`) when missing. Default [`DEFAULT_NETWORK`].
    pub network: String,
    /// DNS servers given to containers (`--dns`), e.g. the network gateway where paz-server
    /// answers DNS. Empty keeps Docker's default (the embedded resolver forwarding to the
    /// host's resolvers).
    pub dns: Vec<String>,
    /// The cluster this scheduler acts for (label `paz.cluster`): it lists, stops and
    /// removes only containers carrying this id, so servers of other clusters (another
    /// store, `--store memory`, a wrong data dir) on the same engine never touch each
    /// other's containers. `paz::config` sets it to the id kept in the store. Default
    /// `"default"`.
    pub cluster: String,
    /// Labels added to every container and to the network Paz creates. The `paz.*` labels
    /// Paz sets itself always win over these.
    pub extra_labels: BTreeMap<String, String>,
    /// How long one API call may wait for the daemon's response headers (bollard's client
    /// timeout; at least one second). `stop` raises it for its own call to cover the grace
    /// period. Default 120 s.
    pub request_timeout: Duration,
    /// The deadline of a whole image pull. Default 10 minutes.
    pub pull_timeout: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            network: DEFAULT_NETWORK.to_owned(),
            dns: Vec::new(),
            cluster: "default".to_owned(),
            extra_labels: BTreeMap::new(),
            request_timeout: Duration::from_secs(120),
            pull_timeout: Duration::from_secs(600),
        }
    }
}

impl DockerConfig {
    /// The daemon address to use: [`DockerConfig::host`], else `DOCKER_HOST`, else
    /// [`DEFAULT_DOCKER_HOST`]. A bare absolute path is taken as a unix socket.
    pub fn resolved_host(&self) -> String {
        let host = self
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned());
        if host.starts_with('/') {
            format!("unix://{host}")
        } else {
            host
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_host_wins_and_bare_paths_are_sockets() {
        let config = DockerConfig {
            host: Some("/run/docker.sock".into()),
            ..DockerConfig::default()
        };
        assert_eq!(config.resolved_host(), "unix:///run/docker.sock");
        let config = DockerConfig {
            host: Some("tcp://127.0.0.1:2375".into()),
            ..DockerConfig::default()
        };
        assert_eq!(config.resolved_host(), "tcp://127.0.0.1:2375");
        assert_eq!(DockerConfig::default().network, "paz");
    }
}
