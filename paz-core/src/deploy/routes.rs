//! The route table, built in one place from the declared services and what the runtime
//! observes: every public and internal host name of every service, its healthy instances
//! weighted by release, and the instances being drained.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::model::InstanceState;
#[cfg(doc)]
use crate::planning::DesiredState;
use crate::route::{Backend, BackendState, INTERNAL_SUFFIX, Route, RouteTable};
use crate::service::Service;
#[cfg(doc)]
use crate::service::ServiceSpec;

/// One instance as the route builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutedInstance<'a> {
    /// Its service.
    pub service: &'a str,
    /// The release it runs.
    pub release: u64,
    /// Where the router reaches it.
    pub address: &'a str,
    /// Its state as the planner sees it ([`super::health::instance_state`]).
    pub state: InstanceState,
}

/// Router weights: service → release → weight (the planner's [`super::Plan::weights`]).
/// A release not listed, or listed with 0, takes no new traffic.
pub type Weights = HashMap<String, BTreeMap<u64, u32>>;

/// Builds the route table.
///
/// - Host names: each service's public names ([`ServiceSpec::hostnames`]) and, for a service
///   with a routed port, `<name>.paz`; each carries the service's
///   [`https_redirect`](ServiceSpec::https_redirect). A name claimed twice (the engine refuses that; older
///   data might hold it) goes to the service whose name sorts first, as in
///   [`DesiredState::from_services`].
/// - A healthy instance is an active backend with its release's weight, if that is > 0.
/// - A draining instance stays as a draining backend (weight 0: in-flight requests finish,
///   no new ones) only if `previous` routed it; one that never took traffic needs no drain.
/// - Starting, stopped and failed instances are not routed.
pub fn route_table<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    domain: &str,
    instances: &[RoutedInstance<'_>],
    weights: &Weights,
    previous: &RouteTable,
) -> RouteTable {
    let routed_before: HashSet<&str> =
        if instances.iter().any(|i| i.state == InstanceState::Draining) {
            previous
                .routes
                .values()
                .flat_map(|r| r.backends.keys().map(String::as_str))
                .collect()
        } else {
            HashSet::new()
        };
    let mut backends: HashMap<&str, BTreeMap<String, Backend>> = HashMap::new();
    for instance in instances {
        let backend = match instance.state {
            InstanceState::Draining if routed_before.contains(instance.address) => Backend {
                weight: 0,
                state: BackendState::Draining,
            },
            InstanceState::Healthy => {
                let weight = weights
                    .get(instance.service)
                    .and_then(|w| w.get(&instance.release))
                    .copied()
                    .unwrap_or(0);
                if weight == 0 {
                    continue;
                }
                Backend {
                    weight,
                    state: BackendState::Active,
                }
            }
            _ => continue,
        };
        backends
            .entry(instance.service)
            .or_default()
            .insert(instance.address.to_owned(), backend);
    }
    let mut routes: BTreeMap<String, Route> = BTreeMap::new();
    for service in services {
        let spec = &service.spec;
        let mut hosts = spec.hostnames(domain);
        if spec.routed_port().is_some() {
            hosts.push(format!("{}{INTERNAL_SUFFIX}", spec.name));
        }
        let backends = backends.get(spec.name.as_str());
        let health_path = spec.health.as_ref().and_then(|check| {
            (check.kind == crate::service::HealthKind::Http
                && check
                    .port
                    .is_none_or(|p| Some(p) == spec.routed_port().map(u32::from)))
            .then(|| check.path.clone())
        });
        for host in hosts {
            let route = || Route {
                service: spec.name.clone(),
                backends: backends.cloned().unwrap_or_default(),
                https_redirect: spec.https_redirect,
                health_path: health_path.clone(),
            };
            match routes.entry(host) {
                Entry::Vacant(entry) => {
                    entry.insert(route());
                }
                Entry::Occupied(mut entry) if spec.name < entry.get().service => {
                    entry.insert(route());
                }
                Entry::Occupied(_) => {}
            }
        }
    }
    RouteTable { routes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{PortSpec, Protocol, ServiceSpec};
    use proptest::prelude::*;

    fn service(name: &str, public: bool, port: bool) -> Service {
        let mut spec = ServiceSpec::new(name, "demo:v1");
        if port {
            spec.ports.push(PortSpec {
                port: 8080,
                protocol: Protocol::Http,
            });
        }
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
    fn routes_weighted_healthy_and_previously_routed_draining_instances() {
        let services = [service("web", true, true), service("db", false, true)];
        let weights: Weights = [("web".to_owned(), BTreeMap::from([(1, 90), (2, 10)]))].into();
        let at = |n: u8| format!("10.0.0.{n}:8080");
        let addresses: Vec<String> = (1..=5).map(at).collect();
        let i = |n: usize, release, state| RoutedInstance {
            service: "web",
            release,
            address: &addresses[n - 1],
            state,
        };
        let mut previous = RouteTable::default();
        previous.routes.insert(
            "web.localhost".into(),
            Route {
                service: "web".into(),
                backends: [(
                    at(3),
                    Backend {
                        weight: 100,
                        state: BackendState::Active,
                    },
                )]
                .into(),
                https_redirect: true,
                health_path: None,
            },
        );
        let instances = [
            i(1, 1, InstanceState::Healthy),
            i(2, 2, InstanceState::Healthy),
            i(3, 1, InstanceState::Draining),
            i(4, 1, InstanceState::Draining),
            i(5, 3, InstanceState::Healthy),
        ];
        let table = route_table(&services, "localhost", &instances, &weights, &previous);
        assert_eq!(
            table.routes.keys().collect::<Vec<_>>(),
            ["db.paz", "web.localhost", "web.paz"]
        );
        let web = &table.routes["web.localhost"].backends;
        assert_eq!(web[&at(1)].weight, 90);
        assert_eq!(web[&at(2)].weight, 10);
        assert_eq!(web[&at(3)].state, BackendState::Draining);
        assert!(!web.contains_key(&at(4)), "never routed: no drain");
        assert!(!web.contains_key(&at(5)), "release without weight");
        assert_eq!(table.routes["web.paz"].backends, *web);
        assert!(table.routes["db.paz"].backends.is_empty());
    }

    #[test]
    fn every_host_name_of_a_service_carries_its_https_redirect() {
        let mut plain = service("plain", true, true);
        plain.spec.https_redirect = false;
        plain.spec.domains = vec!["plain.example.com".into()];
        let mut web = service("web", true, true);
        web.spec.domains = vec!["www.example.com".into()];
        let table = route_table(
            &[plain, web],
            "localhost",
            &[],
            &Weights::new(),
            &RouteTable::default(),
        );
        let redirected: Vec<(&str, bool)> = table
            .routes
            .iter()
            .map(|(host, route)| (host.as_str(), route.https_redirect))
            .collect();
        assert_eq!(
            redirected,
            [
                ("plain.example.com", false),
                ("plain.localhost", false),
                ("plain.paz", false),
                ("web.localhost", true),
                ("web.paz", true),
                ("www.example.com", true),
            ]
        );
    }

    #[test]
    fn routes_carry_the_http_health_path_on_the_routed_port_only() {
        use crate::service::{HealthCheck, HealthKind};
        let mut http = service("http", true, true);
        http.spec.health = Some(HealthCheck {
            path: "/ready".into(),
            ..HealthCheck::default()
        });
        let mut tcp = service("tcp", true, true);
        tcp.spec.health = Some(HealthCheck {
            kind: HealthKind::Tcp,
            ..HealthCheck::default()
        });
        let mut other_port = service("other", true, true);
        other_port.spec.health = Some(HealthCheck {
            port: Some(9000),
            ..HealthCheck::default()
        });
        let none = service("none", true, true);
        let table = route_table(
            &[http, tcp, other_port, none],
            "localhost",
            &[],
            &Weights::new(),
            &RouteTable::default(),
        );
        let paths: Vec<(&str, Option<&str>)> = table
            .routes
            .iter()
            .filter(|(host, _)| host.ends_with(".localhost"))
            .map(|(host, route)| (host.as_str(), route.health_path.as_deref()))
            .collect();
        assert_eq!(
            paths,
            [
                ("http.localhost", Some("/ready")),
                ("none.localhost", None),
                ("other.localhost", None),
                ("tcp.localhost", None),
            ]
        );
    }

    fn state() -> impl Strategy<Value = InstanceState> {
        prop_oneof![
            Just(InstanceState::Starting),
            Just(InstanceState::Healthy),
            Just(InstanceState::Draining),
            Just(InstanceState::Stopped),
            Just(InstanceState::Failed),
        ]
    }

    proptest! {
        /// Every backend belongs to its route's service; active ones are healthy with a
        /// positive weight of their release; draining ones were routed before; every host
        /// name of every service has a route.
        #[test]
        fn the_table_follows_the_rules(
            raw in proptest::collection::vec((0usize..3, 1u64..4, 0u8..20, state()), 0..40),
            weight_of in proptest::collection::vec(0u32..3, 9),
            routed in proptest::collection::btree_set(0u8..20, 0..10),
        ) {
            let names = ["a", "b", "c"];
            let services: Vec<Service> = names.iter().map(|n| service(n, true, true)).collect();
            let mut weights = Weights::new();
            for (s, name) in names.iter().enumerate() {
                for release in 1..4u64 {
                    weights.entry((*name).to_owned()).or_default()
                        .insert(release, weight_of[s * 3 + release as usize - 1] * 50);
                }
            }
            // Addresses are unique per instance, as the scheduler gives them.
            let mut seen = HashSet::new();
            let raw: Vec<_> = raw.into_iter().filter(|(_, _, a, _)| seen.insert(*a)).collect();
            let addresses: Vec<String> = raw.iter().map(|(_, _, a, _)| format!("10.0.0.{a}:80")).collect();
            let instances: Vec<RoutedInstance> = raw.iter().zip(&addresses).map(|((s, r, _, st), a)| RoutedInstance {
                service: names[*s], release: *r, address: a, state: *st,
            }).collect();
            let mut previous = RouteTable::default();
            previous.routes.insert("old".into(), Route {
                service: "a".into(),
                backends: routed.iter().map(|a| (format!("10.0.0.{a}:80"), Backend { weight: 1, state: BackendState::Active })).collect(),
                https_redirect: true,
                health_path: None,
            });
            let table = route_table(&services, "example.com", &instances, &weights, &previous);
            for name in names {
                let public = format!("{name}.example.com");
                let internal = format!("{name}.paz");
                prop_assert!(table.routes.contains_key(&public));
                prop_assert!(table.routes.contains_key(&internal));
            }
            for route in table.routes.values() {
                for (address, backend) in &route.backends {
                    let instance = instances.iter().find(|i| i.address == address).unwrap();
                    prop_assert_eq!(instance.service, route.service.as_str());
                    match backend.state {
                        BackendState::Active => {
                            prop_assert_eq!(instance.state, InstanceState::Healthy);
                            prop_assert!(backend.weight > 0);
                            prop_assert_eq!(Some(&backend.weight), weights[instance.service].get(&instance.release));
                        }
                        BackendState::Draining => {
                            prop_assert_eq!(instance.state, InstanceState::Draining);
                            prop_assert!(previous.routes["old"].backends.contains_key(address));
                        }
                    }
                }
            }
            // Every routable instance is routed.
            for instance in &instances {
                let expected = match instance.state {
                    InstanceState::Healthy => weights[instance.service][&instance.release] > 0,
                    InstanceState::Draining => previous.routes["old"].backends.contains_key(instance.address),
                    _ => false,
                };
                let routed = table.routes[&format!("{}.paz", instance.service)].backends.contains_key(instance.address);
                prop_assert_eq!(routed, expected);
            }
        }
    }
}
