//! The settings of [`FleetScheduler`](crate::FleetScheduler).

use std::ops::RangeInclusive;
use std::time::Duration;

/// How to reach fleet and run instances there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// fleet's API, a plain `http://host:port` (the TCP `ListenStream` of `fleet.socket`);
    /// the base path `/fleet/v1` is appended.
    pub endpoint: String,
    /// The cluster id: only this cluster's units are listed and touched.
    pub cluster: String,
    /// The host ports the routed port of instances is published on (`docker run -p`).
    pub host_ports: RangeInclusive<u16>,
    /// How often `events` polls fleet.
    pub poll_interval: Duration,
    /// How long `start` waits for fleet to schedule a unit to a machine.
    pub start_timeout: Duration,
    /// The docker binary on the machines.
    pub docker: String,
    /// The `docker stop -t` grace written into units (`ExecStop`); `stop` waits for its
    /// own grace on top.
    pub stop_grace: Duration,
    /// The timeout of one HTTP request to fleet.
    pub request_timeout: Duration,
    /// The name servers of the instances (`docker run --dns`; empty: the machine's). Given
    /// the address of the `<service>.paz` names on every machine, instances reach each
    /// other by service name through the machine's router.
    pub dns: Vec<std::net::IpAddr>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            endpoint: "http://127.0.0.1:49153".into(),
            cluster: "default".into(),
            host_ports: 20000..=29999,
            poll_interval: Duration::from_secs(1),
            start_timeout: Duration::from_secs(30),
            docker: "/usr/bin/docker".into(),
            stop_grace: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            dns: Vec::new(),
        }
    }
}
