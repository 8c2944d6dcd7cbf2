//! Planning input: the desired state built from the declared services, and the route table
//! it implies once instances are known.

use std::collections::BTreeMap;

use crate::model::{Instance, InstanceState};
use crate::route::{Backend, BackendState, Route, RouteTable};
use crate::service::Service;

/// What one service should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredService {
    /// The release that should run.
    pub release: Option<u64>,
    /// How many instances.
    pub instances: u32,
    /// The routed container port.
    pub routed_port: Option<u16>,
    /// The host names routed to it.
    pub hostnames: Vec<String>,
}

/// The desired state of the whole cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// By service name.
    pub services: BTreeMap<String, DesiredService>,
    /// Host name → service name.
    pub hostnames: BTreeMap<String, String>,
}

impl DesiredState {
    /// Builds the desired state from the declared services. A host name claimed twice goes
    /// to the service whose name sorts first (the engine refuses such claims; this keeps the
    /// result deterministic even for data written by an older version).
    pub fn from_services(services: &[Service], cluster_domain: &str) -> Self {
        let mut state = DesiredState::default();
        for service in services {
            let spec = &service.spec;
            let hostnames = spec.hostnames(cluster_domain);
            for host in &hostnames {
                state
                    .hostnames
                    .entry(host.clone())
                    .and_modify(|owner| {
                        if spec.name < *owner {
                            owner.clone_from(&spec.name);
                        }
                    })
                    .or_insert_with(|| spec.name.clone());
            }
            state.services.insert(
                spec.name.clone(),
                DesiredService {
                    release: service.current_release,
                    instances: spec.instances,
                    routed_port: spec.routed_port(),
                    hostnames,
                },
            );
        }
        state
    }

    /// The route table: each host name to the healthy (active) and draining instances of its
    /// service that have an address.
    pub fn route_table(&self, instances: &[Instance]) -> RouteTable {
        let mut by_service: BTreeMap<&str, BTreeMap<String, Backend>> = BTreeMap::new();
        for instance in instances {
            let state = match instance.state {
                InstanceState::Healthy => BackendState::Active,
                InstanceState::Draining => BackendState::Draining,
                _ => continue,
            };
            if let Some(address) = &instance.address {
                by_service
                    .entry(instance.service.as_str())
                    .or_default()
                    .insert(address.clone(), Backend { weight: 100, state });
            }
        }
        let routes = self
            .hostnames
            .iter()
            .map(|(host, service)| {
                let backends = by_service
                    .get(service.as_str())
                    .cloned()
                    .unwrap_or_default();
                (
                    host.clone(),
                    Route {
                        service: service.clone(),
                        backends,
                    },
                )
            })
            .collect();
        RouteTable { routes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{PortSpec, Protocol, ServiceSpec};

    fn service(name: &str, public: bool) -> Service {
        let mut spec = ServiceSpec::new(name, "demo:v1");
        spec.ports.push(PortSpec {
            port: 8080,
            protocol: Protocol::Http,
        });
        spec.public = public;
        Service {
            spec,
            current_release: Some(1),
            latest_release: 1,
            latest_deployment: 1,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            updated_at: jiff::Timestamp::UNIX_EPOCH,
            revision: 1,
        }
    }

    #[test]
    fn routes_only_healthy_and_draining_instances() {
        let desired =
            DesiredState::from_services(&[service("web", true), service("db", false)], "localhost");
        assert_eq!(
            desired.hostnames.keys().collect::<Vec<_>>(),
            ["web.localhost"]
        );
        let instance = |id: &str, state| Instance {
            id: id.into(),
            service: "web".into(),
            release: 1,
            slot: 0,
            host: "h".into(),
            address: Some(format!("10.0.0.{id}:8080")),
            state,
            message: None,
            epoch: None,
        };
        let table = desired.route_table(&[
            instance("1", InstanceState::Healthy),
            instance("2", InstanceState::Starting),
            instance("3", InstanceState::Draining),
        ]);
        let backends = &table.routes["web.localhost"].backends;
        assert_eq!(backends.len(), 2);
        assert_eq!(backends["10.0.0.3:8080"].state, BackendState::Draining);
    }
}
