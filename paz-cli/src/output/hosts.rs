//! `paz hosts`.

use paz_core::{Host, HostStatus};

use super::table::{new_table, render};
use super::text::or_dash;

fn host_status_text(status: HostStatus) -> &'static str {
    match status {
        HostStatus::Ready => "ready",
        HostStatus::Drained => "drained",
        HostStatus::Down => "down",
    }
}

/// The hosts table of `paz hosts`.
pub(super) fn hosts_table(hosts: &[Host], tty: bool) -> String {
    let mut table = new_table(
        &["ID", "NAME", "ADDRESS", "STATUS", "LABELS", "VERSION"],
        tty,
    );
    for host in hosts {
        let labels: Vec<String> = host
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        table.add_row(vec![
            host.id.clone(),
            host.name.clone(),
            host.address.clone(),
            host_status_text(host.status).to_owned(),
            or_dash(labels.join(",")),
            host.version.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    render(table, tty)
}
