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

fn store_line(store: &paz_core::store::StoreHealth) -> String {
    let state = if store.healthy {
        "healthy"
    } else {
        "UNHEALTHY"
    };
    if store.members.is_empty() {
        return match &store.error {
            Some(error) => format!("store: {state}: {error}"),
            None => format!("store: {state}"),
        };
    }
    let up = store.members.iter().filter(|m| m.healthy).count();
    format!(
        "store: etcd {state}, {up}/{} members, leader {}",
        store.members.len(),
        store.leader.as_deref().unwrap_or("none")
    )
}

/// `paz status --cluster`: the replicas, the routers and the store's members.
pub(super) fn cluster_text(cluster: &paz_core::cluster::ClusterStatus, tty: bool) -> String {
    use paz_core::cluster::ReplicaRole;
    let leader = cluster.leader.as_ref().map(|l| l.id.as_str());
    let mut text = String::new();
    text.push_str(&format!(
        "leader: {}\n{}\n\n",
        leader.unwrap_or("none"),
        store_line(&cluster.store)
    ));
    let mut replicas = new_table(
        &["REPLICA", "ROLE", "API", "ROUTER", "APPLIED", "VERSION"],
        tty,
    );
    for replica in &cluster.replicas {
        let role = match (replica.role, Some(replica.id.as_str()) == leader) {
            (ReplicaRole::Server, true) => "server (leader)",
            (ReplicaRole::Server, false) => "server",
            (ReplicaRole::Router, _) => "router",
        };
        let applied = cluster
            .routers
            .iter()
            .find(|r| r.id == replica.id)
            .map_or_else(|| "-".to_owned(), |r| r.applied.to_string());
        let this = if cluster.replica.as_deref() == Some(replica.id.as_str()) {
            " *"
        } else {
            ""
        };
        replicas.add_row(vec![
            format!("{}{this}", replica.id),
            role.to_owned(),
            or_dash(replica.api.clone().unwrap_or_default()),
            or_dash(replica.router.clone().unwrap_or_default()),
            applied,
            replica.version.clone(),
        ]);
    }
    text.push_str(&render(replicas, tty));
    if !cluster.store.members.is_empty() {
        text.push('\n');
        let mut members = new_table(
            &["ETCD MEMBER", "ENDPOINT", "HEALTHY", "VERSION", "ERROR"],
            tty,
        );
        for member in &cluster.store.members {
            members.add_row(vec![
                member.name.clone(),
                member.endpoint.clone(),
                if member.healthy { "yes" } else { "no" }.to_owned(),
                or_dash(member.version.clone().unwrap_or_default()),
                or_dash(member.error.clone().unwrap_or_default()),
            ]);
        }
        text.push_str(&render(members, tty));
    }
    text
}

/// The lines `paz status` adds in a cluster.
pub(super) fn proxy_summary(proxy: &paz_core::api::ProxyHealth) -> String {
    let state = if proxy.running {
        format!(
            "running (worker pid {}, {} connections)",
            proxy.pid.map_or("-".into(), |p| p.to_string()),
            proxy.connections.unwrap_or(0)
        )
    } else {
        "NOT RUNNING".to_owned()
    };
    let problem = proxy
        .last_error
        .as_deref()
        .map(|e| format!("\n  last problem: {e}"))
        .unwrap_or_default();
    format!(
        "\nproxy: {} {} {state}; {} reloads, {} restarts{problem}\n",
        proxy.kind, proxy.version, proxy.reloads, proxy.restarts
    )
}

pub(super) fn cluster_summary(cluster: &paz_core::cluster::ClusterStatus) -> String {
    format!(
        "\ncluster: {} replicas, leader {}; {} (paz status --cluster)\n",
        cluster.replicas.len(),
        cluster.leader.as_ref().map_or("none", |l| l.id.as_str()),
        store_line(&cluster.store)
    )
}

#[cfg(test)]
mod cluster_tests {
    use super::*;
    use paz_core::cluster::{ClusterStatus, Replica, ReplicaRole, RouterRecord};
    use paz_core::store::{StoreHealth, StoreMember};

    #[test]
    fn the_cluster_shows_the_leader_the_routers_and_the_members() {
        let replica = |id: &str, role| Replica {
            id: id.into(),
            role,
            api: Some("10.0.0.1:7700".into()),
            router: Some("10.0.0.1:8080".into()),
            version: "0.1.0".into(),
            started_at: jiff::Timestamp::UNIX_EPOCH,
        };
        let cluster = ClusterStatus {
            replica: Some("a".into()),
            leader: Some(replica("b", ReplicaRole::Server)),
            replicas: vec![
                replica("a", ReplicaRole::Server),
                replica("b", ReplicaRole::Server),
                replica("edge", ReplicaRole::Router),
            ],
            routers: vec![RouterRecord {
                id: "edge".into(),
                address: "10.0.0.2:8080".into(),
                applied: 42,
            }],
            store: StoreHealth {
                healthy: true,
                leader: Some("m1".into()),
                members: vec![StoreMember {
                    name: "m1".into(),
                    endpoint: "http://10.0.0.1:2379".into(),
                    healthy: true,
                    version: Some("3.4.23".into()),
                    error: None,
                }],
                error: None,
            },
        };
        let text = cluster_text(&cluster, false);
        assert!(text.contains("leader: b"), "{text}");
        assert!(
            text.contains("store: etcd healthy, 1/1 members, leader m1"),
            "{text}"
        );
        assert!(
            text.contains("server (leader)") && text.contains("a *"),
            "{text}"
        );
        assert!(text.contains("router") && text.contains("42"), "{text}");
        assert!(text.contains("3.4.23"), "{text}");
        assert!(cluster_summary(&cluster).contains("3 replicas, leader b"));
    }
}
