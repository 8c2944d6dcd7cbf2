//! How a route table maps onto HAProxy: one backend per service with numbered server slots,
//! host names in a map file. Pure: planning a table onto the current layout, rendering the
//! configuration, and the runtime-API commands that turn one layout into another.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use paz_core::route::{BackendState, RouteTable};

use super::HaproxyConfig;
use crate::error::{Error, Result};

/// HAProxy's largest server weight.
const MAX_WEIGHT: u32 = 256;
/// The fewest slots a backend gets.
const MIN_SLOTS: usize = 4;
/// A service's health path and its addresses with (weight, draining), while planning.
type Wanted<'a> = (Option<&'a String>, BTreeMap<SocketAddr, (u32, bool)>);

/// The name of the backend that answers hosts without a route.
pub const NO_ROUTE: &str = "paz_no_route";
/// Where an empty slot points (it is in maintenance: nothing connects to it).
const EMPTY_SLOT: &str = "127.0.0.1:1";

/// One occupied server slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The instance's address.
    pub address: SocketAddr,
    /// HAProxy's weight (1 to 256; 0 while draining).
    pub weight: u32,
    /// Takes no new requests.
    pub draining: bool,
}

/// One service's backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendLayout {
    /// The HTTP path of its health checks (`None`: TCP connect checks).
    pub health_path: Option<String>,
    /// Its servers `s1`..`sN`: an instance, or empty (in maintenance).
    pub slots: Vec<Option<Slot>>,
}

/// The whole of what HAProxy is told.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// Backends by service name.
    pub backends: BTreeMap<String, BackendLayout>,
    /// Host name → service name (the map file).
    pub hosts: BTreeMap<String, String>,
}

/// The backend name of a service.
pub fn backend_name(service: &str) -> String {
    format!("be_{service}")
}

/// The slot count for `needed` servers: room for as many again (a surge during a rolling
/// deploy), at least [`MIN_SLOTS`], a power of two so growth reloads rarely.
fn slots_for(needed: usize) -> usize {
    (needed * 2).max(MIN_SLOTS).next_power_of_two()
}

fn check_host(host: &str) -> Result<()> {
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidRoute {
            host: host.to_owned(),
            reason: "a host name is letters, digits, '-', '_' and '.' only".into(),
        })
    }
}

fn check_service(host: &str, service: &str) -> Result<()> {
    let valid = !service.is_empty()
        && service.len() <= 100
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidRoute {
            host: host.to_owned(),
            reason: format!("service name {service:?} is not letters, digits, '-' and '_'"),
        })
    }
}

fn check_health_path(host: &str, path: &str) -> Result<()> {
    // Printable ASCII without spaces, quotes or backslashes: nothing HAProxy's config parser
    // reads as syntax.
    let valid = path.starts_with('/')
        && path.len() <= 1024
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\' | b'#'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidRoute {
            host: host.to_owned(),
            reason: format!(
                "health path {path:?} must start with '/' and hold no spaces, quotes, '\\' or '#'"
            ),
        })
    }
}

/// HAProxy weights for Paz weights: kept as they are up to 256, else scaled so the largest
/// is 256 (an active backend never drops to 0).
fn scaled_weights(weights: &[u32]) -> impl Fn(u32) -> u32 + use<> {
    let max = weights.iter().copied().max().unwrap_or(0);
    move |w| {
        if w == 0 {
            0
        } else if max <= MAX_WEIGHT {
            w
        } else {
            ((u64::from(w) * u64::from(MAX_WEIGHT)) / u64::from(max)).max(1) as u32
        }
    }
}

impl Layout {
    /// The layout that serves `table`, keeping every address that stays in the slot it has
    /// in `self` (so a change is a few runtime-API commands, not a reload).
    ///
    /// All host names of a service share one backend: an address routed under any of them
    /// is a server of it (active if it is active under any).
    pub fn plan(&self, table: &RouteTable) -> Result<Layout> {
        let mut hosts = BTreeMap::new();
        let mut wanted: BTreeMap<&str, Wanted<'_>> = BTreeMap::new();
        for (host, route) in &table.routes {
            check_host(host)?;
            check_service(host, &route.service)?;
            if let Some(path) = &route.health_path {
                check_health_path(host, path)?;
            }
            hosts.insert(host.to_ascii_lowercase(), route.service.clone());
            let entry = wanted
                .entry(route.service.as_str())
                .or_insert_with(|| (route.health_path.as_ref(), BTreeMap::new()));
            if entry.0.is_none() {
                entry.0 = route.health_path.as_ref();
            }
            for (address, backend) in &route.backends {
                let parsed: SocketAddr = address.parse().map_err(|_| Error::InvalidBackend {
                    host: host.clone(),
                    address: address.clone(),
                })?;
                let draining = backend.state == BackendState::Draining || backend.weight == 0;
                let weight = if draining { 0 } else { backend.weight };
                let slot = entry.1.entry(parsed).or_insert((weight, draining));
                if !draining && (slot.1 || weight > slot.0) {
                    *slot = (weight, false);
                }
            }
        }
        let mut backends = BTreeMap::new();
        for (service, (health_path, addresses)) in wanted {
            let old = self.backends.get(service);
            let weights: Vec<u32> = addresses.values().map(|(w, _)| *w).collect();
            let scale = scaled_weights(&weights);
            let slot_of = |address: SocketAddr| Slot {
                address,
                weight: scale(addresses[&address].0),
                draining: addresses[&address].1,
            };
            let mut slots: Vec<Option<Slot>> = match old {
                Some(old) => old
                    .slots
                    .iter()
                    .map(|s| {
                        s.and_then(|s| {
                            addresses
                                .contains_key(&s.address)
                                .then(|| slot_of(s.address))
                        })
                    })
                    .collect(),
                None => Vec::new(),
            };
            // Slots freed now are reused last: in-flight requests may still use them.
            let freed: Vec<usize> = match old {
                Some(old) => (0..old.slots.len())
                    .filter(|&i| old.slots[i].is_some() && slots[i].is_none())
                    .collect(),
                None => Vec::new(),
            };
            let placed: std::collections::BTreeSet<SocketAddr> =
                slots.iter().flatten().map(|s| s.address).collect();
            let mut new = addresses.keys().filter(|a| !placed.contains(a)).copied();
            let mut free: Vec<usize> = (0..slots.len())
                .filter(|&i| slots[i].is_none() && !freed.contains(&i))
                .chain(freed.iter().copied())
                .collect();
            free.reverse();
            let mut overflow = Vec::new();
            for address in new.by_ref() {
                match free.pop() {
                    Some(i) => slots[i] = Some(slot_of(address)),
                    None => overflow.push(slot_of(address)),
                }
            }
            if !overflow.is_empty() || slots.len() < MIN_SLOTS {
                let needed = slots.iter().flatten().count() + overflow.len();
                let size = slots_for(needed).max(slots.len());
                slots.resize(size, None);
                for slot in overflow {
                    let i = slots
                        .iter()
                        .position(Option::is_none)
                        .expect("room was made");
                    slots[i] = Some(slot);
                }
            }
            backends.insert(
                service.to_owned(),
                BackendLayout {
                    health_path: health_path.cloned(),
                    slots,
                },
            );
        }
        Ok(Layout { backends, hosts })
    }

    /// Whether going from `self` to `next` needs a reload: backends added or removed, slots
    /// added, or a health check changed. Everything else is a runtime-API change.
    pub fn needs_reload(&self, next: &Layout) -> bool {
        self.backends.len() != next.backends.len()
            || self
                .backends
                .iter()
                .zip(&next.backends)
                .any(|((a, old), (b, new))| {
                    a != b
                        || old.health_path != new.health_path
                        || old.slots.len() != new.slots.len()
                })
    }

    /// The runtime-API commands that turn `self` into `next` (when
    /// [`Layout::needs_reload`] is false); `map` is the map file's path as the config names it.
    ///
    /// What starts taking traffic comes first and what stops last, so no request finds a
    /// backend (or a host name) with nothing to serve it between two commands.
    pub fn commands(&self, next: &Layout, map: &str) -> Vec<String> {
        let mut starting = Vec::new();
        let mut stopping = Vec::new();
        for (service, new) in &next.backends {
            let backend = backend_name(service);
            let old = self.backends.get(service);
            for (i, slot) in new.slots.iter().enumerate() {
                let before = old.and_then(|o| o.slots.get(i).copied().flatten());
                let server = format!("{backend}/s{}", i + 1);
                match (before, slot) {
                    (None, None) => {}
                    (Some(_), None) => stopping.push(format!("set server {server} state maint")),
                    (before, Some(slot)) if before != Some(*slot) => {
                        let commands = if slot.draining {
                            &mut stopping
                        } else {
                            &mut starting
                        };
                        if before.map(|b| b.address) != Some(slot.address) {
                            commands.push(format!(
                                "set server {server} addr {} port {}",
                                slot.address.ip(),
                                slot.address.port()
                            ));
                        }
                        commands.push(format!("set server {server} weight {}", slot.weight));
                        let state = if slot.draining { "drain" } else { "ready" };
                        commands.push(format!("set server {server} state {state}"));
                    }
                    (_, Some(_)) => {}
                }
            }
        }
        for (host, service) in &next.hosts {
            match self.hosts.get(host) {
                None => starting.push(format!("add map {map} {host} {}", backend_name(service))),
                Some(old) if old != service => {
                    starting.push(format!("set map {map} {host} {}", backend_name(service)))
                }
                Some(_) => {}
            }
        }
        for host in self.hosts.keys() {
            if !next.hosts.contains_key(host) {
                stopping.push(format!("del map {map} {host}"));
            }
        }
        starting.extend(stopping);
        starting
    }

    /// The map file: `host backend` lines.
    pub fn map_file(&self) -> String {
        let mut text = String::new();
        for (host, service) in &self.hosts {
            let _ = writeln!(text, "{host} {}", backend_name(service));
        }
        text
    }

    /// The complete `haproxy.cfg` for this layout; the servers carry their current state, so
    /// a reload or a restart serves exactly what the runtime API had set.
    pub fn render(&self, config: &HaproxyConfig, paths: &Paths) -> String {
        let mut c = String::new();
        let _ = writeln!(
            c,
            "# Rendered by Paz; rewritten on every change (edit Paz's settings, not this file).\n\
             global\n\
             \x20   master-worker\n\
             \x20   nbthread {threads}\n\
             \x20   maxconn {maxconn}\n\
             \x20   stats socket {admin} mode 600 level admin expose-fd listeners\n\
             \x20   stats timeout 30s\n\
             \x20   hard-stop-after {hard_stop}s\n\
             \n\
             defaults\n\
             \x20   mode http\n\
             \x20   option idle-close-on-response\n\
             \x20   option redispatch\n\
             \x20   retries 2\n\
             \x20   maxconn {maxconn}\n\
             \x20   timeout connect 5s\n\
             \x20   timeout client 60s\n\
             \x20   timeout server 60s\n\
             \x20   timeout http-request 10s\n\
             \x20   timeout http-keep-alive 10s\n\
             \x20   timeout queue 10s\n\
             \x20   timeout tunnel 1h\n\
             \x20   timeout client-fin 5s",
            threads = config.threads.max(1),
            maxconn = config.maxconn,
            admin = paths.admin_socket,
            hard_stop = config.hard_stop_after.as_secs().max(1),
        );
        for line in &config.extra_defaults {
            let _ = writeln!(c, "    {line}");
        }
        let _ = writeln!(
            c,
            "\nfrontend public\n\
             \x20   bind {listen}\n\
             \x20   http-request set-var(txn.host) req.hdr(host),field(1,:),lower\n\
             \x20   use_backend %[var(txn.host),map({map})]\n\
             \x20   default_backend {NO_ROUTE}\n\
             \n\
             backend {NO_ROUTE}\n\
             \x20   http-request return status 404 content-type text/plain string \"no route for this host\"",
            listen = config.listen,
            map = paths.map,
        );
        for (service, backend) in &self.backends {
            let _ = writeln!(
                c,
                "\nbackend {}\n    balance roundrobin\n    http-reuse safe",
                backend_name(service)
            );
            if let Some(path) = &backend.health_path {
                let _ = writeln!(
                    c,
                    "    option httpchk\n    http-check send meth GET uri {path}\n    http-check expect rstatus ^2"
                );
            }
            let _ = writeln!(
                c,
                "    default-server check inter 2s fastinter 500ms downinter 2s rise 1 fall 3"
            );
            for (i, slot) in backend.slots.iter().enumerate() {
                match slot {
                    Some(slot) => {
                        let _ = writeln!(
                            c,
                            "    server s{} {} weight {}{}",
                            i + 1,
                            slot.address,
                            slot.weight,
                            if slot.draining { " # draining" } else { "" }
                        );
                    }
                    None => {
                        let _ = writeln!(c, "    server s{} {EMPTY_SLOT} disabled", i + 1);
                    }
                }
            }
        }
        c
    }

    /// Where each address is served: `(backend, server)` names.
    pub fn servers(&self) -> BTreeMap<SocketAddr, (String, String)> {
        let mut servers = BTreeMap::new();
        for (service, backend) in &self.backends {
            for (i, slot) in backend.slots.iter().enumerate() {
                if let Some(slot) = slot {
                    servers.insert(slot.address, (backend_name(service), format!("s{}", i + 1)));
                }
            }
        }
        servers
    }
}

/// The files and sockets of one HAProxy, as the config names them.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The runtime API's socket (`stats socket … level admin`).
    pub admin_socket: String,
    /// The map file of host names.
    pub map: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use paz_core::route::{Backend, Route};

    type Rows<'a> = [(&'a str, &'a str, &'a [(&'a str, u32, bool)])];

    fn table(rows: &Rows<'_>) -> RouteTable {
        let mut table = RouteTable::default();
        for (host, service, backends) in rows {
            let mut route = Route::new(*service);
            route.health_path = Some("/health".into());
            for (address, weight, draining) in *backends {
                route.backends.insert(
                    (*address).into(),
                    Backend {
                        weight: *weight,
                        state: if *draining {
                            BackendState::Draining
                        } else {
                            BackendState::Active
                        },
                    },
                );
            }
            table.routes.insert((*host).into(), route);
        }
        table
    }

    #[test]
    fn addresses_keep_their_slots_and_changes_are_runtime_commands() {
        let first = Layout::default()
            .plan(&table(&[
                (
                    "web.example.com",
                    "web",
                    &[("10.0.0.1:80", 100, false), ("10.0.0.2:80", 100, false)],
                ),
                (
                    "www.example.com",
                    "web",
                    &[("10.0.0.1:80", 100, false), ("10.0.0.2:80", 100, false)],
                ),
            ]))
            .unwrap();
        assert_eq!(first.backends["web"].slots.len(), 4);
        assert_eq!(first.hosts.len(), 2);
        // A rolling step: .1 drains, .3 joins, a host is added.
        let next = first
            .plan(&table(&[
                (
                    "web.example.com",
                    "web",
                    &[
                        ("10.0.0.1:80", 0, true),
                        ("10.0.0.2:80", 100, false),
                        ("10.0.0.3:80", 100, false),
                    ],
                ),
                (
                    "www.example.com",
                    "web",
                    &[
                        ("10.0.0.1:80", 0, true),
                        ("10.0.0.2:80", 100, false),
                        ("10.0.0.3:80", 100, false),
                    ],
                ),
                ("new.example.com", "web", &[]),
            ]))
            .unwrap();
        assert!(!first.needs_reload(&next));
        assert_eq!(next.servers()[&"10.0.0.1:80".parse().unwrap()].1, "s1");
        assert_eq!(next.servers()[&"10.0.0.2:80".parse().unwrap()].1, "s2");
        assert_eq!(
            first.commands(&next, "/m"),
            [
                "set server be_web/s3 addr 10.0.0.3 port 80",
                "set server be_web/s3 weight 100",
                "set server be_web/s3 state ready",
                "add map /m new.example.com be_web",
                "set server be_web/s1 weight 0",
                "set server be_web/s1 state drain",
            ]
        );
        // .1 leaves: its slot goes to maintenance.
        let last = next
            .plan(&table(&[(
                "web.example.com",
                "web",
                &[("10.0.0.2:80", 100, false), ("10.0.0.3:80", 100, false)],
            )]))
            .unwrap();
        assert_eq!(
            next.commands(&last, "/m"),
            [
                "set server be_web/s1 state maint",
                "del map /m new.example.com",
                "del map /m www.example.com",
            ]
        );
        assert!(last.commands(&last, "/m").is_empty());
    }

    #[test]
    fn new_services_more_instances_and_health_changes_reload() {
        let one = Layout::default()
            .plan(&table(&[(
                "a.localhost",
                "a",
                &[("10.0.0.1:80", 100, false)],
            )]))
            .unwrap();
        let two = one
            .plan(&table(&[
                ("a.localhost", "a", &[("10.0.0.1:80", 100, false)]),
                ("b.localhost", "b", &[]),
            ]))
            .unwrap();
        assert!(one.needs_reload(&two));
        let five: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}:80")).collect();
        let rows: Vec<(&str, u32, bool)> = five.iter().map(|a| (a.as_str(), 100, false)).collect();
        let grown = one.plan(&table(&[("a.localhost", "a", &rows)])).unwrap();
        assert!(one.needs_reload(&grown));
        assert_eq!(grown.backends["a"].slots.len(), 16);
        // The address already placed keeps its slot across the growth.
        assert_eq!(grown.servers()[&"10.0.0.1:80".parse().unwrap()].1, "s1");
        let mut tcp = table(&[("a.localhost", "a", &[("10.0.0.1:80", 100, false)])]);
        tcp.routes.get_mut("a.localhost").unwrap().health_path = None;
        assert!(one.needs_reload(&one.plan(&tcp).unwrap()));
    }

    #[test]
    fn weights_above_256_are_scaled_and_active_ones_never_reach_zero() {
        let layout = Layout::default()
            .plan(&table(&[(
                "a.localhost",
                "a",
                &[("10.0.0.1:80", 1, false), ("10.0.0.2:80", 1000, false)],
            )]))
            .unwrap();
        let weights: Vec<u32> = layout.backends["a"]
            .slots
            .iter()
            .flatten()
            .map(|s| s.weight)
            .collect();
        assert_eq!(weights, [1, 256]);
    }

    #[test]
    fn input_haproxy_would_read_as_syntax_is_refused() {
        for (host, service, path, address) in [
            ("bad host", "a", "/h", "10.0.0.1:80"),
            ("a.localhost\nglobal", "a", "/h", "10.0.0.1:80"),
            ("a.localhost", "a b", "/h", "10.0.0.1:80"),
            ("a.localhost", "a", "/h x", "10.0.0.1:80"),
            ("a.localhost", "a", "/h'", "10.0.0.1:80"),
            ("a.localhost", "a", "/h#", "10.0.0.1:80"),
            ("a.localhost", "a", "h", "10.0.0.1:80"),
            ("a.localhost", "a", "/h", "backend.local:80"),
            ("a.localhost", "a", "/h", "10.0.0.1"),
        ] {
            let mut table = table(&[(host, service, &[(address, 100, false)])]);
            table.routes.get_mut(host).unwrap().health_path = Some(path.into());
            let error = Layout::default().plan(&table).unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::InvalidRoute { .. } | Error::InvalidBackend { .. }
                ),
                "{host:?} {service:?} {path:?} {address:?}: {error}"
            );
        }
    }

    #[test]
    fn the_config_carries_the_servers_state() {
        let layout = Layout::default()
            .plan(&table(&[(
                "a.localhost",
                "a",
                &[("10.0.0.1:80", 100, false), ("10.0.0.2:81", 0, true)],
            )]))
            .unwrap();
        let config = HaproxyConfig::new("127.0.0.1:8080".parse().unwrap(), "/run/paz".into());
        let paths = Paths {
            admin_socket: "/run/paz/admin.sock".into(),
            map: "/run/paz/hosts.map".into(),
        };
        let text = layout.render(&config, &paths);
        for line in [
            "    master-worker",
            "    stats socket /run/paz/admin.sock mode 600 level admin expose-fd listeners",
            "    option idle-close-on-response",
            "    bind 127.0.0.1:8080",
            "    use_backend %[var(txn.host),map(/run/paz/hosts.map)]",
            "backend be_a",
            "    http-check send meth GET uri /health",
            "    server s1 10.0.0.1:80 weight 100",
            "    server s2 10.0.0.2:81 weight 0 # draining",
            "    server s3 127.0.0.1:1 disabled",
            "    server s4 127.0.0.1:1 disabled",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(layout.map_file(), "a.localhost be_a\n");
    }
}
