//! Planning input: the desired state built from the declared services (what should run and
//! which host names route to it). The route table itself is built by
//! [`crate::deploy::routes::route_table`].

use std::collections::BTreeMap;

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
    pub fn from_services<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        cluster_domain: &str,
    ) -> Self {
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
            pruned_below: 0,
            pinned_releases: Default::default(),
            secrets: Default::default(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
            updated_at: jiff::Timestamp::UNIX_EPOCH,
            revision: 1,
        }
    }

    #[test]
    fn only_public_services_get_public_host_names() {
        let desired =
            DesiredState::from_services(&[service("web", true), service("db", false)], "localhost");
        assert_eq!(
            desired.hostnames.keys().collect::<Vec<_>>(),
            ["web.localhost"]
        );
        assert_eq!(desired.services.len(), 2);
    }
}
