//! Rendering data on stdout: tables for people, JSON for programs.
//!
//! [`Output`] prints each kind of data; the tables and text forms live by concern in the
//! submodules: `service`, `deploy` (deployments, releases, steps), `status`, `hosts`, `plan`
//! (`paz apply`), with the shared `table` rendering and `text` forms.

mod access;
mod deploy;
#[cfg(test)]
mod fixtures;
mod hosts;
mod plan;
mod service;
mod status;
mod table;
mod text;

use std::io::{IsTerminal, Write};

use jiff::Timestamp;
use paz::ServiceStatus;
use paz_core::scheduler::LogLine;
use paz_core::secret::SecretInfo;
use paz_core::token::TokenInfo;
use paz_core::{Deployment, Host, Release, Service};

use crate::args::OutputFormat;

pub use deploy::{deployment_took, step_text};
pub use plan::{change_json, plan_text};
pub use text::strategy_text;

/// Where and how data is printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Table or JSON.
    pub format: OutputFormat,
    /// Whether stdout is a terminal (tables get borders).
    pub tty: bool,
}

/// Where a server serves services: its cluster domain and router port (from `/v1/health`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Public services answer at `<name>.<domain>`.
    pub domain: String,
    /// The router's public port, when known.
    pub router_port: Option<u16>,
}

impl Default for Site {
    fn default() -> Self {
        Site {
            domain: "localhost".into(),
            router_port: None,
        }
    }
}

impl From<paz_core::api::HealthResponse> for Site {
    fn from(health: paz_core::api::HealthResponse) -> Self {
        Site {
            domain: health.domain.unwrap_or_else(|| Site::default().domain),
            router_port: health.router_port,
        }
    }
}

impl Output {
    /// Output in `format` to the process's stdout.
    pub fn new(format: OutputFormat) -> Self {
        Output {
            format,
            tty: std::io::stdout().is_terminal(),
        }
    }

    /// Whether data is printed as JSON.
    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Writes text (and a final newline) to stdout. A closed pipe (`paz … | head`) is not an
    /// error.
    pub fn text(&self, text: &str) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        let result = stdout.write_all(text.as_bytes()).and_then(|()| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                stdout.write_all(b"\n")
            }
        });
        match result.and_then(|()| stdout.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Writes a value as pretty JSON.
    pub fn json<T: serde::Serialize + ?Sized>(&self, value: &T) -> anyhow::Result<()> {
        self.text(&serde_json::to_string_pretty(value)?)
    }

    /// Prints services (JSON array or table).
    pub fn services(&self, services: &[Service]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(services);
        }
        if services.is_empty() {
            eprintln!("no services yet; create one with `paz service create NAME --image IMAGE`");
            return Ok(());
        }
        self.text(&service::services_table(
            services,
            self.tty,
            Timestamp::now(),
        ))
    }

    /// Prints one service (JSON or a field/value table) with the URLs `site` serves it at.
    pub fn service_at(&self, service: &Service, site: &Site) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(service);
        }
        self.text(&service::service_detail(service, site, self.tty))
    }

    /// Prints one deployment (JSON or a field/value table).
    pub fn deployment(&self, deployment: &Deployment) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(deployment);
        }
        self.text(&deploy::deployment_detail(deployment, self.tty))
    }

    /// Prints the releases of a service.
    pub fn releases(&self, releases: &[Release]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(releases);
        }
        self.text(&deploy::releases_table(
            releases,
            self.tty,
            Timestamp::now(),
        ))
    }

    /// Prints the deploy history of a service.
    pub fn deployments(&self, deployments: &[Deployment]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(deployments);
        }
        self.text(&deploy::deployments_table(
            deployments,
            self.tty,
            Timestamp::now(),
        ))
    }

    /// Prints a service's secrets (names and when set).
    pub fn secrets(&self, secrets: &[SecretInfo]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(secrets);
        }
        if secrets.is_empty() {
            eprintln!("no secrets; set one with `paz secret set SERVICE NAME` (value on stdin)");
            return Ok(());
        }
        self.text(&access::secrets_table(secrets, self.tty, Timestamp::now()))
    }

    /// Prints the scoped tokens.
    pub fn tokens(&self, tokens: &[TokenInfo]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(tokens);
        }
        if tokens.is_empty() {
            eprintln!(
                "no tokens; create one with `paz token create NAME --scope read|deploy|admin`"
            );
            return Ok(());
        }
        self.text(&access::tokens_table(tokens, self.tty, Timestamp::now()))
    }

    /// Prints a service's hooks.
    pub fn hooks(&self, hooks: &[paz_core::hook::HookInfo]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(hooks);
        }
        if hooks.is_empty() {
            eprintln!(
                "no hooks; create one with `paz hook create SERVICE --source dockerhub|registry|ci`"
            );
            return Ok(());
        }
        self.text(&access::hooks_table(hooks, self.tty, Timestamp::now()))
    }

    /// Prints a service's delivery log.
    pub fn deliveries(&self, deliveries: &[paz_core::hook::Delivery]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(deliveries);
        }
        if deliveries.is_empty() {
            eprintln!("no deliveries yet");
            return Ok(());
        }
        self.text(&access::deliveries_table(
            deliveries,
            self.tty,
            Timestamp::now(),
        ))
    }

    /// Prints the hosts.
    pub fn hosts(&self, hosts: &[Host]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(hosts);
        }
        self.text(&hosts::hosts_table(hosts, self.tty))
    }

    /// Prints the cluster: replicas, leader, routers and the store's members.
    pub fn cluster(&self, cluster: &paz_core::cluster::ClusterStatus) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(cluster);
        }
        self.text(&hosts::cluster_text(cluster, self.tty))
    }

    /// Prints the short cluster lines after `paz status`'s services.
    pub fn cluster_summary(
        &self,
        cluster: &paz_core::cluster::ClusterStatus,
    ) -> anyhow::Result<()> {
        self.text(&hosts::cluster_summary(cluster))
    }

    /// Prints the proxy's health line (HAProxy), under the services' status.
    pub fn proxy_summary(&self, proxy: &paz_core::api::ProxyHealth) -> anyhow::Result<()> {
        self.text(&hosts::proxy_summary(proxy))
    }

    /// Prints the status of every service: one row each.
    pub fn statuses(&self, statuses: &[ServiceStatus]) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(statuses);
        }
        if statuses.is_empty() {
            eprintln!("no services yet; create one with `paz service create NAME --image IMAGE`");
            return Ok(());
        }
        self.text(&status::status_table(statuses, self.tty))
    }

    /// Prints the status of one service: summary, latest deployment, instances, problems.
    pub fn status(&self, status: &ServiceStatus) -> anyhow::Result<()> {
        if self.is_json() {
            return self.json(status);
        }
        self.text(&status::status_detail(
            status,
            self.tty,
            colour_for(self.tty),
            Timestamp::now(),
        ))
    }

    /// Prints one log line as it arrives: `<instance> | <line>`, or one JSON object per line.
    /// Returns `false` once stdout is closed (`paz logs -f web | head`).
    pub fn log_line(&self, line: &LogLine) -> anyhow::Result<bool> {
        let text = if self.is_json() {
            serde_json::to_string(line)?
        } else {
            text::log_line_text(line)
        };
        write_line(text)
    }
}

/// Writes `text` and a newline to stdout at once; `false` once stdout is closed.
fn write_line(mut text: String) -> anyhow::Result<bool> {
    text.push('\n');
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl Output {
    /// Prints one event as it arrives: `<time> <type> <service> <details>`, or one JSON
    /// object per line. Returns `false` once stdout is closed.
    pub fn event_line(&self, event: &paz::Event) -> anyhow::Result<bool> {
        let text = if self.is_json() {
            serde_json::to_string(event)?
        } else {
            text::event_line_text(event)
        };
        write_line(text)
    }
}

/// Whether to colour text for a terminal: only on a terminal, and not when `NO_COLOR` is
/// set (<https://no-color.org>).
pub fn colour_for(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
