//! The route table: host name → backends. Declarative, ordered and diffable, so proxy
//! backends can apply only what changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Host names ending in this suffix are internal (`<service>.paz`): the router serves them
/// only to the services' own containers, never on its public listener.
pub const INTERNAL_SUFFIX: &str = ".paz";

/// Whether a backend takes new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BackendState {
    /// Takes new requests.
    #[default]
    Active,
    /// Takes no new requests; in-flight ones finish.
    Draining,
}

/// One backend of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Backend {
    /// Relative share of traffic (canary splits); 0 takes none.
    pub weight: u32,
    /// Active or draining.
    pub state: BackendState,
}

impl Default for Backend {
    fn default() -> Self {
        Backend {
            weight: 100,
            state: BackendState::Active,
        }
    }
}

/// The backends of one host name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Route {
    /// The service the host name belongs to.
    pub service: String,
    /// Backends by `ip:port`.
    pub backends: BTreeMap<String, Backend>,
    /// Whether plain-HTTP requests for the host name are redirected to HTTPS when the proxy
    /// has a certificate for it (the service's `https_redirect`; default true).
    #[serde(default = "yes")]
    pub https_redirect: bool,
    /// The HTTP path a proxy that checks backends itself (HAProxy) checks them on: the
    /// service's HTTP health check on the routed port. `None`: a TCP connect check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for Route {
    fn default() -> Self {
        Route {
            service: String::new(),
            backends: BTreeMap::new(),
            https_redirect: true,
            health_path: None,
        }
    }
}

impl Route {
    /// A route of `service` without backends, redirected to HTTPS by default.
    pub fn new(service: impl Into<String>) -> Self {
        Route {
            service: service.into(),
            ..Route::default()
        }
    }
}

/// Host name → route.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteTable {
    /// Routes by host name.
    pub routes: BTreeMap<String, Route>,
}

/// One change to a route table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RouteOp {
    /// Add a host name, or point it at another service or change its redirect or health path
    /// (its backends are cleared).
    SetRoute {
        /// The host name.
        host: String,
        /// The service.
        service: String,
        /// Whether plain HTTP is redirected to HTTPS.
        #[serde(default = "yes")]
        https_redirect: bool,
        /// The health path (see [`Route::health_path`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health_path: Option<String>,
    },
    /// Remove a host name and its backends.
    RemoveRoute {
        /// The host name.
        host: String,
    },
    /// Add or change a backend of a host name.
    SetBackend {
        /// The host name.
        host: String,
        /// `ip:port`.
        address: String,
        /// Weight and state.
        backend: Backend,
    },
    /// Remove a backend of a host name.
    RemoveBackend {
        /// The host name.
        host: String,
        /// `ip:port`.
        address: String,
    },
}

impl RouteTable {
    /// The operations that turn `self` into `target`; applying them to `self` gives `target`.
    pub fn diff(&self, target: &RouteTable) -> Vec<RouteOp> {
        let mut ops = Vec::new();
        for host in self.routes.keys() {
            if !target.routes.contains_key(host) {
                ops.push(RouteOp::RemoveRoute { host: host.clone() });
            }
        }
        for (host, route) in &target.routes {
            let empty = Route::default();
            let old = match self.routes.get(host) {
                Some(old)
                    if old.service == route.service
                        && old.https_redirect == route.https_redirect
                        && old.health_path == route.health_path =>
                {
                    old
                }
                _ => {
                    ops.push(RouteOp::SetRoute {
                        host: host.clone(),
                        service: route.service.clone(),
                        https_redirect: route.https_redirect,
                        health_path: route.health_path.clone(),
                    });
                    &empty
                }
            };
            for address in old.backends.keys() {
                if !route.backends.contains_key(address) {
                    ops.push(RouteOp::RemoveBackend {
                        host: host.clone(),
                        address: address.clone(),
                    });
                }
            }
            for (address, backend) in &route.backends {
                if old.backends.get(address) != Some(backend) {
                    ops.push(RouteOp::SetBackend {
                        host: host.clone(),
                        address: address.clone(),
                        backend: *backend,
                    });
                }
            }
        }
        ops
    }

    /// Applies operations in order. Backend operations on unknown hosts are ignored.
    pub fn apply(&mut self, ops: &[RouteOp]) {
        for op in ops {
            match op {
                RouteOp::SetRoute {
                    host,
                    service,
                    https_redirect,
                    health_path,
                } => {
                    self.routes.insert(
                        host.clone(),
                        Route {
                            service: service.clone(),
                            backends: BTreeMap::new(),
                            https_redirect: *https_redirect,
                            health_path: health_path.clone(),
                        },
                    );
                }
                RouteOp::RemoveRoute { host } => {
                    self.routes.remove(host);
                }
                RouteOp::SetBackend {
                    host,
                    address,
                    backend,
                } => {
                    if let Some(route) = self.routes.get_mut(host) {
                        route.backends.insert(address.clone(), *backend);
                    }
                }
                RouteOp::RemoveBackend { host, address } => {
                    if let Some(route) = self.routes.get_mut(host) {
                        route.backends.remove(address);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table() -> impl Strategy<Value = RouteTable> {
        let backend = (0u32..3, any::<bool>()).prop_map(|(w, draining)| Backend {
            weight: w * 50,
            state: if draining {
                BackendState::Draining
            } else {
                BackendState::Active
            },
        });
        let route = (
            "[ab]",
            proptest::collection::btree_map("10\\.0\\.0\\.[1-4]:80", backend, 0..4),
            any::<bool>(),
            proptest::option::of("/(health|ready)"),
        )
            .prop_map(|(service, backends, https_redirect, health_path)| Route {
                service,
                backends,
                https_redirect,
                health_path,
            });
        proptest::collection::btree_map("[abc]\\.localhost", route, 0..4)
            .prop_map(|routes| RouteTable { routes })
    }

    proptest! {
        #[test]
        fn applying_the_diff_gives_the_target(old in table(), new in table()) {
            let ops = old.diff(&new);
            let mut applied = old.clone();
            applied.apply(&ops);
            prop_assert_eq!(&applied, &new);
            prop_assert!(new.diff(&new).is_empty());
        }
    }

    #[test]
    fn a_route_redirects_by_default_and_tables_without_the_field_load_so() {
        assert!(Route::default().https_redirect);
        assert!(Route::new("web").https_redirect);
        let table: RouteTable = serde_json::from_str(
            r#"{"routes": {"web.example.com": {"service": "web", "backends": {}}}}"#,
        )
        .unwrap();
        assert!(table.routes["web.example.com"].https_redirect);
        // Turning the redirect off is a change the diff carries.
        let mut off = table.clone();
        off.routes
            .get_mut("web.example.com")
            .unwrap()
            .https_redirect = false;
        let ops = table.diff(&off);
        assert_eq!(
            ops,
            [RouteOp::SetRoute {
                host: "web.example.com".into(),
                service: "web".into(),
                https_redirect: false,
                health_path: None,
            }]
        );
    }
}
