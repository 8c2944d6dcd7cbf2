//! Services: the list (`paz service list`) and one service in detail (`paz service show`).

use std::fmt::Write as _;

use jiff::Timestamp;
use paz_core::route::INTERNAL_SUFFIX;
use paz_core::{Service, ServiceSpec, Strategy};

use super::Site;
use super::table::{detail_table, new_table, render};
use super::text::{
    ago, or_dash, ports_text, release_text, shell_words, strategy_text, timestamp_text,
};

pub(super) fn services_table(services: &[Service], tty: bool, now: Timestamp) -> String {
    let mut table = new_table(
        &["NAME", "IMAGE", "INSTANCES", "PUBLIC", "RELEASE", "UPDATED"],
        tty,
    );
    for service in services {
        table.add_row(vec![
            service.spec.name.clone(),
            service.spec.image.clone(),
            service.spec.instances.to_string(),
            if service.spec.public { "yes" } else { "no" }.to_owned(),
            release_text(service.current_release),
            ago(service.updated_at, now),
        ]);
    }
    render(table, tty)
}

/// Where a service answers: its public host names (`<name>.<cluster domain>` when public,
/// then its custom domains) and, when it has an http port, `<name>.paz` for the other
/// services' containers. Host names only: the router's port is the server's setting.
/// The URLs a service is served at: its public host names on the router's port (none for a
/// service that is not public), and `<name>.paz` for the other services' containers.
pub(super) fn served_at(spec: &ServiceSpec, site: &Site) -> Vec<String> {
    if spec.routed_port().is_none() {
        return Vec::new();
    }
    let port = match site.router_port {
        Some(80) | None => String::new(),
        Some(port) => format!(":{port}"),
    };
    let mut urls: Vec<String> = spec
        .hostnames(&site.domain)
        .into_iter()
        .map(|host| format!("http://{host}{port}/"))
        .collect();
    urls.push(format!("http://{}{INTERNAL_SUFFIX}/ (internal)", spec.name));
    urls
}

pub(super) fn service_detail(service: &Service, site: &Site, tty: bool) -> String {
    let spec = &service.spec;
    let mut rows = vec![
        ("name", spec.name.clone()),
        ("image", spec.image.clone()),
        ("instances", spec.instances.to_string()),
        ("ports", or_dash(ports_text(&spec.ports))),
        ("public", if spec.public { "yes" } else { "no" }.to_owned()),
        ("served at", or_dash(served_at(spec, site).join("\n"))),
        (
            "redirect",
            if spec.https_redirect {
                "http → https (host names with a certificate)"
            } else {
                "none: plain HTTP is served too (--https-redirect=false)"
            }
            .to_owned(),
        ),
        (
            "env",
            or_dash(
                spec.env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        ),
        ("command", or_dash(shell_words(&spec.command))),
        (
            "volumes",
            or_dash(
                spec.volumes
                    .iter()
                    .map(|v| {
                        format!(
                            "{}:{}{}",
                            v.source,
                            v.target,
                            if v.read_only { ":ro" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        ),
        (
            "health",
            match &spec.health {
                None => "port accepts connections".to_owned(),
                Some(h) => {
                    let target = match h.kind {
                        paz_core::HealthKind::Http => format!("GET {}", h.path),
                        paz_core::HealthKind::Tcp => "tcp connect".to_owned(),
                    };
                    let port = h.port.map(|p| format!(" on port {p}")).unwrap_or_default();
                    format!(
                        "{target}{port} every {}, timeout {}, {} retries",
                        h.interval, h.timeout, h.retries
                    )
                }
            },
        ),
    ];
    let mut limits = Vec::new();
    if let Some(memory) = spec.resources.memory_mb {
        limits.push(format!("{memory} MiB"));
    }
    if let Some(cpus) = spec.resources.cpus {
        limits.push(format!("{cpus} cpus"));
    }
    rows.push(("resources", or_dash(limits.join(", "))));
    let mut placement = spec.placement.constraints.clone();
    if let Some(spread) = &spec.placement.spread {
        placement.push(format!("spread over {spread}"));
    }
    rows.push(("placement", or_dash(placement.join(", "))));
    let deploy = &spec.deploy;
    let mut deploy_text = format!(
        "{}, max surge {}, drain {}, health timeout {}",
        strategy_text(deploy.strategy),
        deploy.max_surge,
        deploy.drain_timeout,
        deploy.health_timeout
    );
    if deploy.strategy == Strategy::Canary {
        let steps: Vec<String> = deploy
            .canary_steps
            .iter()
            .map(|s| format!("{s}%"))
            .collect();
        let _ = write!(deploy_text, ", steps {}", steps.join(" "));
    }
    rows.push(("deploy", deploy_text));
    rows.push((
        "release",
        format!(
            "{} (latest v{})",
            release_text(service.current_release),
            service.latest_release
        ),
    ));
    rows.push(("created", timestamp_text(service.created_at)));
    rows.push(("updated", timestamp_text(service.updated_at)));
    rows.push(("revision", service.revision.to_string()));
    detail_table(rows, tty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::{at, service};
    use paz_core::{PortSpec, Protocol};

    fn http(port: u32) -> PortSpec {
        PortSpec {
            port,
            protocol: Protocol::Http,
        }
    }

    #[test]
    fn plain_tables_have_no_borders_or_trailing_blanks() {
        let text = services_table(
            &[service("web", Some(3)), service("worker", None)],
            false,
            at(1_090),
        );
        assert_eq!(
            text,
            "NAME    IMAGE    INSTANCES  PUBLIC  RELEASE  UPDATED\n\
             web     demo:v1  2          no      v3       1m ago\n\
             worker  demo:v1  2          no      -        1m ago\n"
        );
        assert!(services_table(&[service("web", Some(1))], true, at(0)).contains('│'));
    }

    #[test]
    fn services_show_the_urls_they_are_served_at() {
        let site = |domain: &str, port| Site {
            domain: domain.into(),
            router_port: port,
        };
        let mut web = service("web", Some(1));
        web.spec.ports = vec![http(8080)];
        web.spec.public = true;
        assert_eq!(
            served_at(&web.spec, &site("localhost", Some(8080))),
            ["http://web.localhost:8080/", "http://web.paz/ (internal)"]
        );
        web.spec.domains = vec!["www.example.com".into(), "example.com".into()];
        assert_eq!(
            served_at(&web.spec, &site("apps.example.net", Some(80))),
            [
                "http://web.apps.example.net/",
                "http://www.example.com/",
                "http://example.com/",
                "http://web.paz/ (internal)"
            ]
        );
        let text = service_detail(&web, &site("localhost", Some(8080)), false);
        assert!(
            text.contains(
                "\nserved at  http://web.localhost:8080/\n           http://www.example.com:8080/\n           http://example.com:8080/\n           http://web.paz/ (internal)\n"
            ),
            "{text}"
        );

        // Internal only: reachable from the other services' containers.
        let mut api = service("api", Some(1));
        api.spec.ports = vec![http(8080)];
        assert_eq!(
            served_at(&api.spec, &Site::default()),
            ["http://api.paz/ (internal)"]
        );
        // No http port (a worker, or tcp only): routed nowhere.
        let mut worker = service("worker", Some(1));
        worker.spec.ports = vec![PortSpec {
            port: 5432,
            protocol: Protocol::Tcp,
        }];
        assert!(served_at(&worker.spec, &Site::default()).is_empty());
        let text = service_detail(&worker, &Site::default(), false);
        assert!(text.contains("\nserved at  -\n"), "{text}");
    }

    #[test]
    fn the_detail_shows_whether_plain_http_is_redirected() {
        let mut web = service("web", Some(1));
        let text = service_detail(&web, &Site::default(), false);
        assert!(
            text.contains("\nredirect   http → https (host names with a certificate)\n"),
            "{text}"
        );
        web.spec.https_redirect = false;
        let text = service_detail(&web, &Site::default(), false);
        assert!(
            text.contains("\nredirect   none: plain HTTP is served too (--https-redirect=false)\n"),
            "{text}"
        );
    }
}
