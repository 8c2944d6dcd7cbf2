//! [`SwarmScheduler`]: Paz's [`Scheduler`] on Docker Swarm, through a manager's Engine API.
//!
//! Swarm places the tasks; Paz keeps what Swarm does badly: its own health gate, draining,
//! the zero-downtime switch and the routing.
//!
//! # The mapping: one Swarm service per instance
//! Each Paz instance (service, release, slot) is a Swarm service of one replica, named
//! `paz-<service>-v<release>-<slot>-<random>` and labelled like the Docker backend's
//! containers (`paz.managed`, `paz.cluster`, `paz.service`, `paz.release`, `paz.instance`,
//! `paz.port`, `paz.epoch`). The instance id is the Swarm service id.
//! - **Why not one Swarm service per release** (N replicas): scaling a service down stops
//!   tasks Swarm picks, so Paz could not drain exactly the instance it took out of the
//!   routes, and an update rolls tasks on Swarm's schedule, not behind Paz's health gate.
//!   One service per instance lets Paz start, drain and stop each instance on its own.
//! - **Spread**: Swarm ranks nodes by the tasks of the same service, then by their total
//!   tasks; with one task per service the second rule spreads a release's instances over the
//!   nodes.
//! - **Restart policy `none`**: a task that exits stays exited and Paz replaces it (with its
//!   crash backoff), as with the Docker backend. Swarm's own update and rollback are never
//!   used: a rollback restarts the healthy old task with start-first (moby/moby#43081); Paz
//!   rolls back by deploying the previous release.
//! - **Ports in host mode**: each routed port is published on the task's node at a port the
//!   node's engine picks; the instance's address is the node's address and that port, and
//!   Paz's routers (on every host) send traffic there. The ingress routing mesh is not used:
//!   it needs IPVS and hides client addresses.
//! - **Placement**: a constraint `zone==a` becomes the Swarm constraint
//!   `node.labels.zone==a` (`!=` too); constraints already written in Swarm's terms
//!   (`node.hostname==…`, `node.role==manager`, `engine.labels.…`) are passed as they are.
//!   A node's labels are its Swarm node labels (`docker node update --label-add zone=a`).
//! - **Stop**: the service is scaled to zero replicas and labelled `paz.stopped=true`; the
//!   task gets SIGTERM and, after the grace period fixed at creation
//!   ([`SwarmConfig::stop_grace`]), SIGKILL.
//!
//! # State rules
//! | Swarm | Paz state |
//! |---|---|
//! | no task yet, or `new` … `starting` | `Starting` (no address until it runs) |
//! | `running` on a ready node | `Starting`: Paz's health checker decides `Healthy` |
//! | `running` (or on its way) on a node that is down or disconnected | `Failed` ("node … is down"): Paz replaces it on the others |
//! | scaled to zero by Paz (`paz.stopped`) | `Stopped` |
//! | `complete`, `failed`, `rejected`, `shutdown`, `orphaned`, `remove` | `Failed`, with Swarm's error |
//!
//! Events are a poll of the services and tasks every [`SwarmConfig::poll_interval`]
//! (Swarm's event feed has no task states); `Resync` follows every failed poll.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, Limit, Node, NodeState,
    Service, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecDnsConfig, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder, LogsOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use paz_core::model::{Host, HostStatus, Instance, InstanceState};
use paz_core::scheduler::{
    EventStream, InstanceSpec, LogOptions, LogStream, Scheduler, SchedulerEvent,
};
use paz_core::service::Constraint;

use crate::error::{Error, Result, is_not_found};
use crate::scheduler::{connect_engine, mount_of, random_suffix};
use crate::state::{
    LABEL_CLUSTER, LABEL_EPOCH, LABEL_INSTANCE, LABEL_MANAGED, LABEL_PORT, LABEL_RELEASE,
    LABEL_SERVICE,
};

/// Set on a Swarm service Paz scaled to zero: its instance was stopped on purpose.
pub const LABEL_STOPPED: &str = "paz.stopped";
/// Added to the grace period for the wait of `stop`.
const STOP_SLACK: Duration = Duration::from_secs(30);
/// How often `start` and `stop` look at the task.
const TASK_POLL: Duration = Duration::from_millis(100);
/// Swarm service names are at most 63 characters.
const MAX_NAME: usize = 63;

/// Settings of [`SwarmScheduler`].
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmConfig {
    /// A Swarm manager's engine: `unix:///…/docker.sock` or `tcp://host:port` (plain HTTP).
    /// `None` uses `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// The cluster this scheduler acts for (label `paz.cluster`): it lists, stops and
    /// removes only Swarm services carrying this id.
    pub cluster: String,
    /// Labels added to every Swarm service and container; the `paz.*` labels win.
    pub extra_labels: BTreeMap<String, String>,
    /// How long one API call may wait for the manager's answer.
    pub request_timeout: Duration,
    /// How long `start` waits for the task to run (placement, image, start).
    pub start_timeout: Duration,
    /// SIGTERM to SIGKILL when a task stops (Swarm fixes it when the service is created).
    pub stop_grace: Duration,
    /// How often the event poll looks at the services and tasks.
    pub poll_interval: Duration,
    /// The name servers of the instances (`DNSConfig`; empty: the node's). Given the
    /// address of the `<service>.paz` names on every node, instances reach each other by
    /// service name through the node's router.
    pub dns: Vec<String>,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            host: None,
            cluster: "default".to_owned(),
            extra_labels: BTreeMap::new(),
            request_timeout: Duration::from_secs(120),
            start_timeout: Duration::from_secs(120),
            stop_grace: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            dns: Vec::new(),
        }
    }
}

struct Inner {
    docker: Docker,
    config: SwarmConfig,
    host: String,
}

/// Runs Paz instances as one-replica Swarm services (see the [module docs](self)).
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct SwarmScheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SwarmScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmScheduler")
            .field("host", &self.inner.host)
            .field("cluster", &self.inner.config.cluster)
            .finish()
    }
}

/// The nodes of the Swarm, by id, with the names Paz shows for them.
struct Nodes {
    by_id: HashMap<String, Node>,
    names: HashMap<String, String>,
}

impl Nodes {
    fn new(nodes: Vec<Node>) -> Self {
        let mut hostnames: HashMap<String, usize> = HashMap::new();
        for node in &nodes {
            *hostnames.entry(hostname(node)).or_default() += 1;
        }
        let mut by_id = HashMap::new();
        let mut names = HashMap::new();
        for node in nodes {
            let Some(id) = node.id.clone() else { continue };
            let host = hostname(&node);
            // Nodes sharing a host name (containers, namespaces) are told apart by address.
            let name = if hostnames.get(&host).copied().unwrap_or(0) > 1 {
                format!("{host}@{}", node_address(&node).unwrap_or("?"))
            } else {
                host
            };
            names.insert(id.clone(), name);
            by_id.insert(id, node);
        }
        Nodes { by_id, names }
    }

    fn name(&self, id: &str) -> String {
        self.names.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }
}

fn hostname(node: &Node) -> String {
    node.description
        .as_ref()
        .and_then(|d| d.hostname.clone())
        .unwrap_or_else(|| node.id.clone().unwrap_or_default())
}

fn node_address(node: &Node) -> Option<&str> {
    node.status.as_ref().and_then(|s| s.addr.as_deref())
}

fn node_state(node: &Node) -> NodeState {
    node.status
        .as_ref()
        .and_then(|s| s.state)
        .unwrap_or(NodeState::UNKNOWN)
}

impl SwarmScheduler {
    /// Connects to the engine and checks that it is a manager of an active Swarm
    /// ([`Error::NotSwarmManager`] otherwise).
    pub async fn connect(config: SwarmConfig) -> Result<Self> {
        let host = crate::DockerConfig {
            host: config.host.clone(),
            ..crate::DockerConfig::default()
        }
        .resolved_host();
        let (docker, info) = connect_engine(&host, config.request_timeout).await?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm
            .local_node_state
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".to_owned());
        if state != "active" || swarm.control_available != Some(true) {
            let state = if state == "active" {
                "active, as a worker".to_owned()
            } else {
                state
            };
            return Err(Error::NotSwarmManager { host, state });
        }
        tracing::info!(
            %host,
            nodes = swarm.nodes.unwrap_or(0),
            managers = swarm.managers.unwrap_or(0),
            "connected to the Swarm"
        );
        Ok(SwarmScheduler {
            inner: Arc::new(Inner {
                docker,
                config,
                host,
            }),
        })
    }

    /// The Docker host of the manager this scheduler talks to.
    pub fn docker_host(&self) -> &str {
        &self.inner.host
    }

    async fn nodes(&self) -> Result<Nodes> {
        let nodes = self
            .inner
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|source| Error::api("list Swarm nodes", source))?;
        Ok(Nodes::new(nodes))
    }

    /// The Swarm services of this cluster (of one Paz service, or all).
    async fn services(&self, service: Option<&str>) -> Result<Vec<Service>> {
        let mut labels = vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_CLUSTER}={}", self.inner.config.cluster),
        ];
        if let Some(service) = service {
            labels.push(format!("{LABEL_SERVICE}={service}"));
        }
        let options = ListServicesOptionsBuilder::new()
            .filters(&HashMap::from([("label", labels)]))
            .build();
        self.inner
            .docker
            .list_services(Some(options))
            .await
            .map_err(|source| Error::api("list Swarm services", source))
    }

    /// The tasks of these Swarm services (by service id).
    async fn tasks(&self, services: &[&str]) -> Result<HashMap<String, Vec<Task>>> {
        let mut by_service: HashMap<String, Vec<Task>> = HashMap::new();
        if services.is_empty() {
            return Ok(by_service);
        }
        let options = ListTasksOptionsBuilder::new()
            .filters(&HashMap::from([("service", services.to_vec())]))
            .build();
        let docker = &self.inner.docker;
        let tasks = match docker.list_tasks(Some(options)).await {
            Ok(tasks) => tasks,
            // One of the services was removed since it was listed (the manager answers 404
            // for the whole filter): every task, then only these services'.
            Err(e) if is_not_found(&e) => docker
                .list_tasks(None::<bollard::query_parameters::ListTasksOptions>)
                .await
                .map_err(|source| Error::api("list Swarm tasks", source))?,
            Err(source) => return Err(Error::api("list Swarm tasks", source)),
        };
        for task in tasks {
            if let Some(service) = task.service_id.clone()
                && services.contains(&service.as_str())
            {
                by_service.entry(service).or_default().push(task);
            }
        }
        Ok(by_service)
    }

    /// A Swarm service of this cluster, or `None` (also for another cluster's).
    async fn managed_service(&self, id: &str) -> Result<Option<Service>> {
        match self.inner.docker.inspect_service(id, None).await {
            Ok(service) if is_ours(&service, &self.inner.config.cluster) => Ok(Some(service)),
            Ok(_) => {
                tracing::warn!(
                    id,
                    "Swarm service is not managed by this Paz cluster: left alone"
                );
                Ok(None)
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(Error::api(format!("inspect Swarm service {id}"), source)),
        }
    }

    async fn instances(&self, service: Option<&str>) -> Result<Vec<Instance>> {
        let services = self.services(service).await?;
        let ids: Vec<&str> = services.iter().filter_map(|s| s.id.as_deref()).collect();
        let (tasks, nodes) = tokio::try_join!(self.tasks(&ids), self.nodes())?;
        let mut instances: Vec<Instance> = services
            .iter()
            .filter_map(|s| {
                let id = s.id.as_deref()?;
                instance_of(s, tasks.get(id).map(Vec::as_slice).unwrap_or(&[]), &nodes)
            })
            .collect();
        instances.sort_by(|a, b| {
            (&a.service, a.release, a.slot, &a.id).cmp(&(&b.service, b.release, b.slot, &b.id))
        });
        Ok(instances)
    }

    async fn instance(&self, id: &str) -> Result<Option<Instance>> {
        let Some(service) = self.managed_service(id).await? else {
            return Ok(None);
        };
        let service_id = service.id.clone().unwrap_or_else(|| id.to_owned());
        let ids = [service_id.as_str()];
        let (tasks, nodes) = tokio::try_join!(self.tasks(&ids), self.nodes())?;
        Ok(instance_of(
            &service,
            tasks.get(&service_id).map(Vec::as_slice).unwrap_or(&[]),
            &nodes,
        ))
    }

    /// The Swarm service spec of an instance.
    fn service_spec(&self, spec: &InstanceSpec, name: &str) -> Result<ServiceSpec> {
        if let Some(port) = spec.health_port {
            return Err(Error::HealthPortUnreachable {
                port,
                routed: spec.routed_port(),
            });
        }
        let config = &self.inner.config;
        let mut labels: HashMap<String, String> = config
            .extra_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
        labels.insert(LABEL_CLUSTER.to_owned(), config.cluster.clone());
        labels.insert(LABEL_SERVICE.to_owned(), spec.service.clone());
        labels.insert(LABEL_RELEASE.to_owned(), spec.release.to_string());
        labels.insert(LABEL_INSTANCE.to_owned(), spec.slot.to_string());
        labels.remove(LABEL_STOPPED);
        match &spec.epoch {
            Some(epoch) => labels.insert(LABEL_EPOCH.to_owned(), epoch.clone()),
            None => labels.remove(LABEL_EPOCH),
        };
        match spec.routed_port() {
            Some(port) => labels.insert(LABEL_PORT.to_owned(), port.to_string()),
            None => labels.remove(LABEL_PORT),
        };
        let constraints = spec
            .constraints
            .iter()
            .map(|c| swarm_constraint(c))
            .collect::<Result<Vec<_>>>()?;
        let ports = spec
            .ports
            .iter()
            .map(|p| EndpointPortConfig {
                target_port: Some(i64::from(p.port)),
                // None: the node's engine picks a free port (reported in the task status).
                published_port: None,
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            })
            .collect();
        let limits = Limit {
            nano_cpus: spec.resources.cpus.map(|cpus| (cpus * 1e9).round() as i64),
            memory_bytes: spec
                .resources
                .memory_mb
                .map(|mb| i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
            pids: None,
        };
        Ok(ServiceSpec {
            name: Some(name.to_owned()),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(spec.image.clone()),
                    labels: Some(labels),
                    args: (!spec.command.is_empty()).then(|| spec.command.clone()),
                    env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                    mounts: (!spec.volumes.is_empty())
                        .then(|| spec.volumes.iter().map(mount_of).collect()),
                    stop_signal: Some("SIGTERM".to_owned()),
                    dns_config: (!config.dns.is_empty()).then(|| TaskSpecContainerSpecDnsConfig {
                        nameservers: Some(config.dns.clone()),
                        ..Default::default()
                    }),
                    stop_grace_period: Some(
                        i64::try_from(config.stop_grace.as_nanos()).unwrap_or(i64::MAX),
                    ),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(limits),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: (!constraints.is_empty()).then_some(constraints),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn start_instance(&self, spec: &InstanceSpec) -> Result<Instance> {
        let name = service_name(spec);
        let body = self.service_spec(spec, &name)?;
        let docker = &self.inner.docker;
        let created = docker
            .create_service(body, None)
            .await
            .map_err(|source| Error::api(format!("create Swarm service {name:?}"), source))?;
        let Some(id) = created.id else {
            return Err(Error::TaskFailed {
                name,
                reason: "the manager gave no service id".into(),
                unschedulable: false,
            });
        };
        tracing::info!(service = %name, %id, image = %spec.image, "Swarm service created");
        let deadline = tokio::time::Instant::now() + self.inner.config.start_timeout;
        loop {
            let outcome = match self.instance(&id).await {
                Ok(Some(instance)) => started(&id, &instance, spec.routed_port().is_some()),
                Ok(None) => Some(Err(Error::InstanceNotFound { id: id.clone() })),
                Err(error) => Some(Err(error)),
            };
            match outcome {
                Some(Ok(instance)) => return Ok(instance),
                Some(Err(error)) => {
                    self.discard(&id).await;
                    return Err(error);
                }
                None if tokio::time::Instant::now() >= deadline => {
                    let reason = match self.tasks(&[id.as_str()]).await {
                        Ok(tasks) => tasks
                            .get(&id)
                            .and_then(|t| latest(t))
                            .map(task_summary)
                            .unwrap_or_else(|| "no task was created".into()),
                        Err(error) => error.to_string(),
                    };
                    self.discard(&id).await;
                    return Err(Error::TaskFailed {
                        unschedulable: is_unschedulable(&reason),
                        name,
                        reason: format!(
                            "not running after {:?}: {reason}",
                            self.inner.config.start_timeout
                        ),
                    });
                }
                None => tokio::time::sleep(TASK_POLL).await,
            }
        }
    }
}

/// Whether a starting instance is done: `Some(Ok)` once it runs (with its address when it
/// has an http port), `Some(Err)` when its task failed or cannot be placed, `None` while it
/// is on its way.
fn started(id: &str, instance: &Instance, has_port: bool) -> Option<Result<Instance>> {
    match instance.state {
        InstanceState::Failed | InstanceState::Stopped => {
            let reason = instance.message.clone().unwrap_or_default();
            Some(Err(Error::TaskFailed {
                name: id.to_owned(),
                unschedulable: is_unschedulable(&reason),
                reason,
            }))
        }
        _ if instance.started_at.is_some() && (instance.address.is_some() || !has_port) => {
            Some(Ok(instance.clone()))
        }
        // Pending with "no suitable node": Swarm would wait for one forever.
        _ => match &instance.message {
            Some(message) if is_unschedulable(message) => Some(Err(Error::TaskFailed {
                name: id.to_owned(),
                reason: message.clone(),
                unschedulable: true,
            })),
            _ => None,
        },
    }
}

impl SwarmScheduler {
    /// Removes a Swarm service that failed to start (best effort).
    async fn discard(&self, id: &str) {
        if let Err(error) = self.inner.docker.delete_service(id).await
            && !is_not_found(&error)
        {
            tracing::warn!(id, %error, "cannot remove the Swarm service that failed to start");
        }
    }

    async fn stop_instance(&self, id: &str, grace: Duration) -> Result<()> {
        let Some(service) = self.managed_service(id).await? else {
            return Ok(());
        };
        let replicas = service
            .spec
            .as_ref()
            .and_then(|s| s.mode.as_ref())
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas);
        if replicas != Some(0) {
            let mut spec = service.spec.clone().unwrap_or_default();
            spec.mode = Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
                ..Default::default()
            });
            spec.labels
                .get_or_insert_with(HashMap::new)
                .insert(LABEL_STOPPED.to_owned(), "true".to_owned());
            let version = service
                .version
                .as_ref()
                .and_then(|v| v.index)
                .unwrap_or_default();
            let options = UpdateServiceOptionsBuilder::new()
                .version(i32::try_from(version).unwrap_or(i32::MAX))
                .build();
            match self
                .inner
                .docker
                .update_service(id, spec, options, None)
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(source) => {
                    return Err(Error::api(
                        format!("scale Swarm service {id} to zero"),
                        source,
                    ));
                }
            }
        }
        // Until no task of it runs any more (or its node is gone).
        let deadline =
            tokio::time::Instant::now() + grace.max(self.inner.config.stop_grace) + STOP_SLACK;
        loop {
            let tasks = self.tasks(&[id]).await?;
            let nodes = self.nodes().await?;
            let live = tasks.get(id).into_iter().flatten().any(|t| {
                is_live(t)
                    && t.node_id
                        .as_deref()
                        .and_then(|n| nodes.by_id.get(n))
                        .is_some_and(|n| node_state(n) == NodeState::READY)
            });
            if !live {
                tracing::info!(id, "instance stopped (Swarm service scaled to zero)");
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::TaskFailed {
                    name: id.to_owned(),
                    reason: format!(
                        "its task still runs {:?} after the stop",
                        deadline.elapsed()
                    ),
                    unschedulable: false,
                });
            }
            tokio::time::sleep(TASK_POLL).await;
        }
    }

    async fn remove_instance(&self, id: &str) -> Result<()> {
        if self.managed_service(id).await?.is_none() {
            return Ok(());
        }
        match self.inner.docker.delete_service(id).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(Error::api(format!("remove Swarm service {id}"), source)),
        }
    }

    async fn instance_logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        let Some(service) = self.managed_service(id).await? else {
            return Err(Error::InstanceNotFound { id: id.to_owned() });
        };
        let id = service.id.unwrap_or_else(|| id.to_owned());
        let tail = options
            .tail
            .map_or_else(|| "all".to_owned(), |n| n.to_string());
        let options = LogsOptionsBuilder::new()
            .follow(options.follow)
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let frames = self.inner.docker.service_logs(&id, Some(options));
        Ok(crate::logs::lines_of(id, frames))
    }

    async fn swarm_hosts(&self) -> Result<Vec<Host>> {
        let nodes = self.nodes().await?;
        let mut hosts: Vec<Host> = nodes
            .by_id
            .iter()
            .map(|(id, node)| host_of(id, node, nodes.name(id)))
            .collect();
        hosts.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(hosts)
    }
}

/// A Swarm node as a Paz host: its labels are the node's labels, plus `swarm.role` and
/// `swarm.availability`.
fn host_of(id: &str, node: &Node, name: String) -> Host {
    let spec = node.spec.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> =
        spec.labels.unwrap_or_default().into_iter().collect();
    if let Some(role) = spec.role {
        labels.insert("swarm.role".to_owned(), role.to_string());
    }
    if let Some(availability) = spec.availability {
        labels.insert("swarm.availability".to_owned(), availability.to_string());
    }
    let available = spec
        .availability
        .is_none_or(|a| a == bollard::models::NodeSpecAvailabilityEnum::ACTIVE);
    let status = match node_state(node) {
        NodeState::READY if available => HostStatus::Ready,
        NodeState::READY => HostStatus::Drained,
        _ => HostStatus::Down,
    };
    Host {
        id: id.to_owned(),
        name,
        address: node_address(node).unwrap_or_default().to_owned(),
        labels,
        status,
        version: None,
    }
}

/// Whether a Swarm service is one of `cluster`'s instances.
fn is_ours(service: &Service, cluster: &str) -> bool {
    let labels = service.spec.as_ref().and_then(|s| s.labels.as_ref());
    labels.is_some_and(|l| {
        l.get(LABEL_MANAGED).map(String::as_str) == Some("true")
            && l.get(LABEL_CLUSTER).map(String::as_str) == Some(cluster)
            && l.contains_key(LABEL_SERVICE)
    })
}

/// A task that is (or may be about to be) running on its node.
fn is_live(task: &Task) -> bool {
    use TaskState as S;
    matches!(
        task.status.as_ref().and_then(|s| s.state),
        Some(
            S::NEW
                | S::ALLOCATED
                | S::PENDING
                | S::ASSIGNED
                | S::ACCEPTED
                | S::PREPARING
                | S::READY
                | S::STARTING
                | S::RUNNING
        )
    )
}

/// The newest task of a service (Swarm keeps a few old ones).
fn latest(tasks: &[Task]) -> Option<&Task> {
    tasks.iter().max_by(|a, b| {
        let key = |t: &Task| {
            (
                t.version.as_ref().and_then(|v| v.index),
                t.created_at.clone(),
            )
        };
        key(a).cmp(&key(b))
    })
}

/// `state: error` of a task, for messages.
fn task_summary(task: &Task) -> String {
    let status = task.status.clone().unwrap_or_default();
    let state = status
        .state
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".into());
    match status.err.filter(|e| !e.is_empty()) {
        Some(err) => format!("task {state}: {err}"),
        None => match status.message.filter(|m| !m.is_empty()) {
            Some(message) => format!("task {state} ({message})"),
            None => format!("task {state}"),
        },
    }
}

fn is_unschedulable(reason: &str) -> bool {
    reason.contains("no suitable node")
}

/// A Swarm service and its tasks as a Paz instance; `None` when it is not one.
fn instance_of(service: &Service, tasks: &[Task], nodes: &Nodes) -> Option<Instance> {
    let spec = service.spec.as_ref()?;
    let labels = spec.labels.as_ref()?;
    let id = service.id.clone()?;
    let port: Option<i64> = labels.get(LABEL_PORT).and_then(|p| p.parse().ok());
    let stopped = labels.get(LABEL_STOPPED).map(String::as_str) == Some("true");
    let task = latest(tasks);
    let status = task.and_then(|t| t.status.clone()).unwrap_or_default();
    let node = task
        .and_then(|t| t.node_id.as_deref())
        .and_then(|n| nodes.by_id.get(n));
    let host = task
        .and_then(|t| t.node_id.as_deref())
        .map(|n| nodes.name(n))
        .unwrap_or_default();
    let running = status.state == Some(TaskState::RUNNING);
    let node_down = node.is_some_and(|n| node_state(n) != NodeState::READY);
    let (state, message) = if stopped {
        (InstanceState::Stopped, Some("stopped by Paz".to_owned()))
    } else if node_down && task.is_some_and(is_live) {
        // Running there, or assigned to it before Swarm noticed it was gone: either way the
        // task will not run again, and Paz replaces it on the others.
        let node = node.map(|n| format!("{} ({})", hostname(n), node_address(n).unwrap_or("?")));
        (
            InstanceState::Failed,
            Some(format!(
                "its Swarm node {} is {}",
                node.unwrap_or_default(),
                task.and_then(|t| t.node_id.as_deref())
                    .and_then(|n| nodes.by_id.get(n))
                    .map(node_state)
                    .unwrap_or(NodeState::UNKNOWN)
            )),
        )
    } else {
        match status.state {
            None => (InstanceState::Starting, Some("no task yet".to_owned())),
            Some(TaskState::RUNNING) => (InstanceState::Starting, None),
            Some(_) if task.is_some_and(is_live) => {
                (InstanceState::Starting, task.map(task_summary))
            }
            Some(_) => (InstanceState::Failed, task.map(task_summary)),
        }
    };
    let published = status
        .port_status
        .and_then(|p| p.ports)
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.target_port == port && p.published_port.is_some_and(|p| p > 0))
        .and_then(|p| p.published_port);
    let address = match (
        running && !node_down,
        node.and_then(node_address),
        published,
    ) {
        (true, Some(ip), Some(published)) => Some(format!("{ip}:{published}")),
        _ => None,
    };
    Some(Instance {
        id,
        service: labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
        release: labels
            .get(LABEL_RELEASE)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
        slot: labels
            .get(LABEL_INSTANCE)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        host,
        address,
        state,
        message,
        epoch: labels.get(LABEL_EPOCH).cloned(),
        started_at: running
            .then(|| status.timestamp.as_deref()?.parse::<jiff::Timestamp>().ok())
            .flatten(),
    })
}

/// A Paz placement constraint in Swarm's terms.
fn swarm_constraint(text: &str) -> Result<String> {
    let constraint = Constraint::parse(text).map_err(|reason| Error::InvalidConstraint {
        constraint: text.to_owned(),
        reason,
    })?;
    let label = &constraint.label;
    let swarm_terms = ["node.", "engine.labels."];
    let label = if swarm_terms.iter().any(|p| label.starts_with(p)) {
        label.clone()
    } else {
        format!("node.labels.{label}")
    };
    if label.contains(char::is_whitespace) || constraint.value.contains(char::is_whitespace) {
        return Err(Error::InvalidConstraint {
            constraint: text.to_owned(),
            reason: "Swarm constraints cannot hold spaces".into(),
        });
    }
    let op = if constraint.equal { "==" } else { "!=" };
    Ok(format!("{label}{op}{}", constraint.value))
}

/// `paz-<service>-v<release>-<slot>-<random>`, at most 63 characters (the service part is
/// shortened; the labels carry the full name).
fn service_name(spec: &InstanceSpec) -> String {
    let tail = format!("-v{}-{}-{}", spec.release, spec.slot, random_suffix());
    let room = MAX_NAME.saturating_sub(4 + tail.len());
    let service: String = spec.service.chars().take(room).collect();
    let service = service.trim_end_matches('-');
    format!("paz-{service}{tail}")
}

#[async_trait]
impl Scheduler for SwarmScheduler {
    /// The Swarm's nodes: `Ready` when ready and active, `Drained` when ready but drained or
    /// paused, else `Down`.
    async fn hosts(&self) -> paz_core::Result<Vec<Host>> {
        Ok(self.swarm_hosts().await?)
    }

    /// Creates the instance's Swarm service and waits (up to
    /// [`SwarmConfig::start_timeout`]) until its task runs; a task that fails or cannot be
    /// placed is an error, and its Swarm service is removed.
    async fn start(&self, spec: &InstanceSpec) -> paz_core::Result<Instance> {
        Ok(self.start_instance(spec).await?)
    }

    /// Scales the instance's Swarm service to zero and waits until its task is gone.
    async fn stop(&self, id: &str, grace: Duration) -> paz_core::Result<()> {
        Ok(self.stop_instance(id, grace).await?)
    }

    /// Removes the instance's Swarm service (Swarm removes its task and container).
    async fn remove(&self, id: &str) -> paz_core::Result<()> {
        Ok(self.remove_instance(id).await?)
    }

    async fn list(&self, service: Option<&str>) -> paz_core::Result<Vec<Instance>> {
        Ok(self.instances(service).await?)
    }

    async fn inspect(&self, id: &str) -> paz_core::Result<Option<Instance>> {
        Ok(self.instance(id).await?)
    }

    /// `docker service logs` of the instance's Swarm service.
    async fn logs(&self, id: &str, options: LogOptions) -> paz_core::Result<LogStream> {
        Ok(self.instance_logs(id, options).await?)
    }

    /// A poll of the services and tasks (see the module docs).
    async fn events(&self) -> paz_core::Result<EventStream> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let this = self.clone();
        tokio::spawn(async move { this.poll_events(tx).await });
        Ok(Box::pin(tokio_stream_of(rx)))
    }
}

impl SwarmScheduler {
    async fn poll_events(&self, tx: tokio::sync::mpsc::Sender<paz_core::Result<SchedulerEvent>>) {
        // What ran at the last look, by instance id → its service.
        let mut last: Option<HashMap<String, (String, bool)>> = None;
        let mut failed = false;
        loop {
            match self.instances(None).await {
                Ok(instances) => {
                    let now: HashMap<String, (String, bool)> = instances
                        .into_iter()
                        .map(|i| {
                            let running =
                                i.state == InstanceState::Starting && i.started_at.is_some();
                            (i.id, (i.service, running))
                        })
                        .collect();
                    let mut events = Vec::new();
                    if failed {
                        events.push(SchedulerEvent::Resync);
                        failed = false;
                    }
                    if let Some(before) = &last {
                        for (id, (service, running)) in &now {
                            let was = before.get(id).map(|(_, r)| *r);
                            if *running && was != Some(true) {
                                events.push(SchedulerEvent::Started {
                                    id: id.clone(),
                                    service: service.clone(),
                                });
                            } else if !running && was == Some(true) {
                                events.push(SchedulerEvent::Exited {
                                    id: id.clone(),
                                    service: service.clone(),
                                    exit_code: None,
                                });
                            }
                        }
                        for (id, (service, _)) in before {
                            if !now.contains_key(id) {
                                events.push(SchedulerEvent::Removed {
                                    id: id.clone(),
                                    service: service.clone(),
                                });
                            }
                        }
                    } else {
                        // The first look: what runs already counts as started.
                        for (id, (service, running)) in &now {
                            if *running {
                                events.push(SchedulerEvent::Started {
                                    id: id.clone(),
                                    service: service.clone(),
                                });
                            }
                        }
                    }
                    for event in events {
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    last = Some(now);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot poll the Swarm for events; trying again");
                    failed = true;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.poll_interval) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

/// A stream over a channel's receiver.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_become_node_labels() {
        assert_eq!(swarm_constraint("zone==a").unwrap(), "node.labels.zone==a");
        assert_eq!(
            swarm_constraint("zone != b").unwrap(),
            "node.labels.zone!=b"
        );
        assert_eq!(
            swarm_constraint("node.role==manager").unwrap(),
            "node.role==manager"
        );
        assert!(matches!(
            swarm_constraint("zone"),
            Err(Error::InvalidConstraint { .. })
        ));
    }

    #[test]
    fn service_names_fit_swarm() {
        let mut spec = paz_core::contract::scheduler::Fixture {
            image: "demo:v1".into(),
            port: 8080,
        }
        .spec("web", 2);
        let name = service_name(&spec);
        assert!(name.starts_with("paz-web-v1-2-"), "{name}");
        spec.service = "a".repeat(63);
        spec.release = 123_456;
        let name = service_name(&spec);
        assert!(name.len() <= MAX_NAME, "{name}");
        assert!(name.ends_with(&name[name.len() - 6..]));
    }

    fn node(id: &str, host: &str, addr: &str, state: NodeState) -> Node {
        Node {
            id: Some(id.into()),
            description: Some(bollard::models::NodeDescription {
                hostname: Some(host.into()),
                ..Default::default()
            }),
            status: Some(bollard::models::NodeStatus {
                state: Some(state),
                addr: Some(addr.into()),
                message: None,
            }),
            ..Default::default()
        }
    }

    fn service(labels: &[(&str, &str)]) -> Service {
        Service {
            id: Some("svc1".into()),
            spec: Some(ServiceSpec {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(node: &str, state: TaskState, published: Option<i64>) -> Task {
        Task {
            node_id: Some(node.into()),
            status: Some(bollard::models::TaskStatus {
                state: Some(state),
                timestamp: Some("2026-12-02T18:27:02.510940104Z".into()),
                port_status: Some(bollard::models::PortStatus {
                    ports: published.map(|p| {
                        vec![EndpointPortConfig {
                            target_port: Some(8080),
                            published_port: Some(p),
                            ..Default::default()
                        }]
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const LABELS: &[(&str, &str)] = &[
        (LABEL_MANAGED, "true"),
        (LABEL_CLUSTER, "c"),
        (LABEL_SERVICE, "web"),
        (LABEL_RELEASE, "3"),
        (LABEL_INSTANCE, "1"),
        (LABEL_PORT, "8080"),
    ];

    #[test]
    fn a_running_task_is_starting_at_its_node_address() {
        let nodes = Nodes::new(vec![
            node("n1", "vm", "10.1.0.2", NodeState::READY),
            node("n2", "vm", "10.1.0.3", NodeState::READY),
        ]);
        let instance = instance_of(
            &service(LABELS),
            &[task("n2", TaskState::RUNNING, Some(32768))],
            &nodes,
        )
        .unwrap();
        assert_eq!(instance.state, InstanceState::Starting);
        assert_eq!(instance.address.as_deref(), Some("10.1.0.3:32768"));
        assert_eq!(instance.host, "vm@10.1.0.3", "nodes sharing a host name");
        assert_eq!((instance.release, instance.slot), (3, 1));
        assert!(instance.started_at.is_some());
        assert!(is_ours(&service(LABELS), "c") && !is_ours(&service(LABELS), "other"));
    }

    #[test]
    fn a_task_on_a_down_node_failed_and_has_no_address() {
        let nodes = Nodes::new(vec![node("n1", "a", "10.1.0.2", NodeState::DOWN)]);
        let instance = instance_of(
            &service(LABELS),
            &[task("n1", TaskState::RUNNING, Some(32768))],
            &nodes,
        )
        .unwrap();
        assert_eq!(instance.state, InstanceState::Failed);
        assert_eq!(instance.address, None);
        assert!(instance.message.unwrap().contains("down"));
        assert_eq!(instance.host, "a");
        // Assigned to the node before Swarm noticed it was gone: it will never run.
        let assigned = instance_of(
            &service(LABELS),
            &[task("n1", TaskState::ASSIGNED, None)],
            &nodes,
        )
        .unwrap();
        assert_eq!(assigned.state, InstanceState::Failed);
    }

    #[test]
    fn stopped_pending_and_failed_tasks() {
        let nodes = Nodes::new(vec![node("n1", "a", "10.1.0.2", NodeState::READY)]);
        let mut labels = LABELS.to_vec();
        labels.push((LABEL_STOPPED, "true"));
        let stopped = instance_of(&service(&labels), &[], &nodes).unwrap();
        assert_eq!(stopped.state, InstanceState::Stopped);
        let pending = instance_of(
            &service(LABELS),
            &[task("n1", TaskState::PENDING, None)],
            &nodes,
        )
        .unwrap();
        assert_eq!(
            (pending.state, pending.address),
            (InstanceState::Starting, None)
        );
        let failed = instance_of(
            &service(LABELS),
            &[task("n1", TaskState::REJECTED, None)],
            &nodes,
        )
        .unwrap();
        assert_eq!(failed.state, InstanceState::Failed);
        assert!(failed.message.unwrap().contains("rejected"));
    }

    #[test]
    fn drained_and_down_nodes() {
        let mut drained = node("n1", "a", "10.1.0.2", NodeState::READY);
        drained.spec = Some(bollard::models::NodeSpec {
            availability: Some(bollard::models::NodeSpecAvailabilityEnum::DRAIN),
            labels: Some(HashMap::from([("zone".to_owned(), "a".to_owned())])),
            ..Default::default()
        });
        let host = host_of("n1", &drained, "a".into());
        assert_eq!(host.status, HostStatus::Drained);
        assert_eq!(host.labels["zone"], "a");
        let down = host_of(
            "n2",
            &node("n2", "b", "10.1.0.3", NodeState::DOWN),
            "b".into(),
        );
        assert_eq!(
            (down.status, down.address.as_str()),
            (HostStatus::Down, "10.1.0.3")
        );
    }
}
