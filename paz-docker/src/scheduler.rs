//! [`DockerScheduler`]: Paz's [`Scheduler`] on one local (or `DOCKER_HOST`) Docker Engine.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings,
    HostConfig, Mount, MountType, NetworkCreateRequest, NetworkingConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptions,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use paz_core::image::ImageRef;
use paz_core::model::{Host, HostStatus, Instance};
use paz_core::scheduler::{EventStream, InstanceSpec, LogOptions, LogStream, Scheduler};
use paz_core::service::{Constraint, VolumeSpec};

use crate::config::DockerConfig;
use crate::error::{Error, Result, is_not_found, status_of};
use crate::state::{
    Context, LABEL_CLUSTER, LABEL_EPOCH, LABEL_INSTANCE, LABEL_MANAGED, LABEL_PORT, LABEL_RELEASE,
    LABEL_SERVICE, STOPPED_SUFFIX, instance_of, is_managed, is_marked_stopped,
};

/// How long `connect` waits for the daemon's first answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to the grace period for the `stop` call's own deadline (the kill and the reply).
const STOP_SLACK: Duration = Duration::from_secs(30);
/// How many containers `list` inspects at once.
const INSPECT_CONCURRENCY: usize = 8;

/// Serializes network creation within the process: Docker 20.10 accepts two networks with
/// the same name, so two schedulers connecting at once must not both create it.
static NETWORK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The user-defined bridge network instances run on.
#[derive(Debug, Clone)]
struct NetworkInfo {
    id: String,
    name: String,
    gateway: Option<IpAddr>,
    /// The IPv4 subnet instances get addresses from, as (network, prefix length).
    subnet: Option<(std::net::Ipv4Addr, u8)>,
}

/// What the daemon says about its machine (read at connect).
#[derive(Debug, Clone)]
struct DaemonInfo {
    id: String,
    name: String,
    labels: BTreeMap<String, String>,
}

struct Inner {
    docker: Docker,
    config: DockerConfig,
    host: String,
    network: NetworkInfo,
    daemon: DaemonInfo,
}

/// Runs Paz instances as containers on one Docker Engine.
///
/// Every container carries the labels `paz.managed=true`, `paz.cluster` (the
/// [`DockerConfig::cluster`] it belongs to: containers of other clusters are never listed,
/// stopped or removed), `paz.service`, `paz.release`,
/// `paz.instance` (the slot) and, when the instance has an http port, `paz.port`, so
/// `docker ps --filter label=paz.service=web` shows a service's instances. Containers join
/// the Paz network (no published ports: the host reaches them on their bridge IP), get the
/// configured DNS servers, restart policy `no` (Paz replaces crashed instances itself) and
/// stop signal `SIGTERM`. See [`crate::state`] for how container states map to instance
/// states.
///
/// Cheap to clone: clones share one connection pool and configuration.
#[derive(Clone)]
pub struct DockerScheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DockerScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerScheduler")
            .field("host", &self.inner.host)
            .field("network", &self.inner.network.name)
            .field("daemon", &self.inner.daemon.name)
            .finish()
    }
}

impl DockerScheduler {
    /// Connects to the daemon, checks that it answers, and makes sure the Paz network exists
    /// (creating it, labelled `paz.managed=true`, when missing).
    ///
    /// Fails with [`Error::DaemonUnavailable`] ("Docker daemon is not reachable at …") when
    /// nothing answers within 10 s.
    pub async fn connect(config: DockerConfig) -> Result<Self> {
        let host = config.resolved_host();
        let (docker, info) = connect_engine(&host, config.request_timeout).await?;
        let daemon = DaemonInfo {
            id: info.id.clone().unwrap_or_default(),
            name: info.name.clone().unwrap_or_else(|| "docker".to_owned()),
            labels: host_labels(&info),
        };
        let network = ensure_network(&docker, &config).await?;
        warn_of_foreign_containers(&docker, &config.cluster).await;
        tracing::info!(
            %host,
            daemon = %daemon.name,
            version = info.server_version.as_deref().unwrap_or("?"),
            network = %network.name,
            gateway = ?network.gateway,
            "connected to Docker"
        );
        Ok(DockerScheduler {
            inner: Arc::new(Inner {
                docker,
                config,
                host,
                network,
                daemon,
            }),
        })
    }

    /// The gateway IP of the Paz network: the host side of the bridge, where paz-server can
    /// listen for traffic from instances (and answer their DNS). `None` when the network has
    /// no IPv4 gateway (e.g. it is internal).
    pub fn network_gateway(&self) -> Option<IpAddr> {
        self.inner.network.gateway
    }

    /// The IPv4 subnet of the Paz network, as (network, prefix length): where instances'
    /// addresses come from.
    pub fn network_subnet(&self) -> Option<(std::net::Ipv4Addr, u8)> {
        self.inner.network.subnet
    }

    /// The name of the Paz network.
    pub fn network_name(&self) -> &str {
        &self.inner.network.name
    }

    /// The Docker host this scheduler talks to (e.g. `unix:///var/run/docker.sock`).
    pub fn docker_host(&self) -> &str {
        &self.inner.host
    }

    /// Whether the daemon has `image` locally (no pull is attempted).
    pub async fn image_exists(&self, image: &str) -> Result<bool> {
        match self.inner.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(Error::api(format!("inspect image {image:?}"), source)),
        }
    }

    /// The logs of every instance of `service` (as listed now) in one stream; each
    /// [`LogLine`](paz_core::scheduler::LogLine) names its instance. With `follow` the
    /// instances' streams are interleaved as lines arrive (instances started later are not
    /// added); without it they come one instance after the other, ordered by release and slot.
    /// `tail` applies per instance.
    pub async fn logs_of_service(&self, service: &str, options: LogOptions) -> Result<LogStream> {
        let mut instances = self.list_instances(Some(service)).await?;
        instances.sort_by(|a, b| (a.release, a.slot, &a.id).cmp(&(b.release, b.slot, &b.id)));
        let mut streams = Vec::with_capacity(instances.len());
        for instance in instances {
            match self.instance_logs(&instance.id, options.clone()).await {
                Ok(stream) => streams.push(stream),
                // Removed between the listing and now: nothing to read.
                Err(Error::InstanceNotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        if options.follow {
            Ok(Box::pin(futures_util::stream::select_all(streams)))
        } else {
            Ok(Box::pin(futures_util::stream::iter(streams).flatten()))
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            network_id: &self.inner.network.id,
            network_name: &self.inner.network.name,
            host: &self.inner.daemon.name,
            cluster: &self.inner.config.cluster,
        }
    }

    /// Inspects a container; `None` when it does not exist.
    async fn inspect_raw(&self, id: &str) -> Result<Option<ContainerInspectResponse>> {
        match self.inner.docker.inspect_container(id, None).await {
            Ok(container) => Ok(Some(container)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(Error::api(format!("inspect container {id}"), source)),
        }
    }

    /// Inspects a container Paz manages; `None` when it does not exist or is not Paz's.
    async fn inspect_managed(&self, id: &str) -> Result<Option<ContainerInspectResponse>> {
        Ok(self.inspect_raw(id).await?.filter(|c| {
            let labels = c
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            let managed = is_managed(&labels, &self.inner.config.cluster);
            if !managed {
                tracing::warn!(
                    id,
                    "container is not managed by this Paz cluster: left alone"
                );
            }
            managed
        }))
    }

    async fn inspect_instance(&self, id: &str) -> Result<Option<Instance>> {
        Ok(self
            .inspect_raw(id)
            .await?
            .and_then(|c| instance_of(&c, &self.context())))
    }

    /// Pins `image` to exactly the image it names now, pulling it when missing: the
    /// repository digest (`RepoDigests`) of its own repository, `<repository>@sha256:…`,
    /// when it came from a registry, else the local image id `sha256:…`. A reference that
    /// names a digest (or is an image id) is its own pin.
    pub async fn pin_image(&self, image: &str) -> Result<String> {
        if is_image_id(image) {
            self.ensure_image(image).await?;
            return Ok(image.to_owned());
        }
        let reference = ImageRef::parse(image).map_err(|source| Error::InvalidImage {
            image: image.to_owned(),
            source,
        })?;
        if let Some(digest) = &reference.digest {
            return Ok(format!("{}@{digest}", reference.name()));
        }
        self.ensure_image(image).await?;
        let inspected = self
            .inner
            .docker
            .inspect_image(image)
            .await
            .map_err(|source| Error::api(format!("inspect image {image:?}"), source))?;
        let own = canonical_name(&reference.name());
        let repo_digest = inspected.repo_digests.iter().flatten().find(|d| {
            d.rsplit_once('@')
                .is_some_and(|(name, _)| canonical_name(name) == own)
        });
        match (repo_digest, inspected.id) {
            (Some(digest), _) => Ok(digest.clone()),
            (None, Some(id)) if is_image_id(&id) => Ok(id),
            _ => Err(Error::api(
                format!("inspect image {image:?}"),
                bollard::errors::Error::DockerStreamError {
                    error: "the daemon gave neither a repository digest nor an image id".into(),
                },
            )),
        }
    }

    /// Makes sure `image` is on the daemon, pulling it when missing.
    async fn ensure_image(&self, image: &str) -> Result<()> {
        if self.image_exists(image).await? {
            return Ok(());
        }
        if is_image_id(image) {
            // Never in a registry (else the release would be pinned to a repository digest):
            // nothing to pull it from.
            return Err(Error::ImageUnavailable {
                image: image.to_owned(),
                source: bollard::errors::Error::DockerStreamError {
                    error: "this local image is gone from the daemon and never came from a                             registry, so it cannot be pulled again; build or load it again"
                        .into(),
                },
            });
        }
        let reference = ImageRef::parse(image).map_err(|source| Error::InvalidImage {
            image: image.to_owned(),
            source,
        })?;
        // Without a tag or digest Docker would pull every tag: ask for `latest`, as the CLI.
        let mut options = CreateImageOptionsBuilder::new().from_image(image);
        if reference.tag.is_none() && reference.digest.is_none() {
            options = options.tag("latest");
        }
        let options = options.build();
        tracing::info!(image, "image not present locally: pulling");
        let unavailable = |source| Error::ImageUnavailable {
            image: image.to_owned(),
            source,
        };
        let pull = async {
            let mut progress = self.inner.docker.create_image(Some(options), None, None);
            while let Some(item) = progress.next().await {
                match item {
                    Ok(_) => {}
                    // bollard 0.21 sometimes fails to parse a progress frame: not fatal.
                    Err(error @ bollard::errors::Error::JsonDataError { .. }) => {
                        tracing::debug!(%error, image, "unparsable pull progress frame ignored");
                    }
                    Err(source) => return Err(unavailable(source)),
                }
            }
            Ok(())
        };
        tokio::time::timeout(self.inner.config.pull_timeout, pull)
            .await
            .map_err(|_| unavailable(bollard::errors::Error::RequestTimeoutError))??;
        if self.image_exists(image).await? {
            Ok(())
        } else {
            Err(unavailable(bollard::errors::Error::DockerStreamError {
                error: "the pull ended but the image is still missing".to_owned(),
            }))
        }
    }

    /// Fails when a placement constraint excludes the daemon's machine (the only host).
    fn check_placement(&self, spec: &InstanceSpec) -> Result<()> {
        for text in &spec.constraints {
            let satisfied = Constraint::parse(text)
                .map(|c| c.matches(&self.inner.daemon.labels))
                .unwrap_or(false);
            if !satisfied {
                return Err(Error::Unschedulable {
                    constraint: text.clone(),
                    host: self.inner.daemon.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// The create request of an instance.
    fn container_body(&self, spec: &InstanceSpec) -> ContainerCreateBody {
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
        match &spec.epoch {
            Some(epoch) => labels.insert(LABEL_EPOCH.to_owned(), epoch.clone()),
            None => labels.remove(LABEL_EPOCH),
        };
        match spec.routed_port() {
            Some(port) => labels.insert(LABEL_PORT.to_owned(), port.to_string()),
            None => labels.remove(LABEL_PORT),
        };
        let network_id = self.inner.network.id.clone();
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            labels: Some(labels),
            exposed_ports: Some(
                spec.ports
                    .iter()
                    .map(|p| format!("{}/tcp", p.port))
                    .collect(),
            ),
            stop_signal: Some("SIGTERM".to_owned()),
            host_config: Some(HostConfig {
                memory: spec
                    .resources
                    .memory_mb
                    .map(|mb| i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)),
                nano_cpus: spec.resources.cpus.map(|cpus| (cpus * 1e9).round() as i64),
                mounts: (!spec.volumes.is_empty())
                    .then(|| spec.volumes.iter().map(mount_of).collect()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                network_mode: Some(network_id.clone()),
                dns: (!config.dns.is_empty()).then(|| config.dns.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(network_id, EndpointSettings::default())])),
            }),
            ..Default::default()
        }
    }

    async fn start_instance(&self, spec: &InstanceSpec) -> Result<Instance> {
        self.check_placement(spec)?;
        self.ensure_image(&spec.image).await?;
        let name = container_name(spec);
        let docker = &self.inner.docker;
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                self.container_body(spec),
            )
            .await
            .map_err(|source| Error::CreateContainer {
                name: name.clone(),
                image: spec.image.clone(),
                source,
            })?;
        for warning in &created.warnings {
            tracing::warn!(container = %name, %warning, "Docker warning");
        }
        if let Err(source) = docker.start_container(&created.id, None).await {
            // Nothing runs: do not leave a dead container behind.
            if let Err(error) = docker.remove_container(&created.id, Some(force())).await {
                tracing::warn!(container = %name, %error, "cannot remove the container that failed to start");
            }
            return Err(Error::StartContainer { name, source });
        }
        tracing::info!(container = %name, id = %created.id, image = %spec.image, "instance started");
        self.inspect_instance(&created.id)
            .await?
            .ok_or(Error::InstanceNotFound { id: created.id })
    }

    async fn stop_instance(&self, id: &str, grace: Duration) -> Result<()> {
        let Some(container) = self.inspect_managed(id).await? else {
            return Ok(());
        };
        let status = container.state.as_ref().and_then(|s| s.status);
        use ContainerStateStatusEnum as S;
        if matches!(status, Some(S::EXITED | S::DEAD | S::REMOVING)) {
            // Ended already (on its own, or stopped before): nothing to stop, nothing to mark.
            return Ok(());
        }
        let docker = &self.inner.docker;
        let name = container.name.unwrap_or_default();
        let name = name.trim_start_matches('/');
        if !is_marked_stopped(name) {
            let marked = format!("{name}{STOPPED_SUFFIX}");
            match docker
                .rename_container(
                    id,
                    RenameContainerOptionsBuilder::new().name(&marked).build(),
                )
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => return Ok(()),
                // Best effort: without the mark the instance will read as failed.
                Err(error) => {
                    tracing::warn!(id, %error, "cannot mark the container as stopped by Paz")
                }
            }
        }
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptionsBuilder::new()
            .t(i32::try_from(seconds).unwrap_or(i32::MAX))
            .build();
        // The daemon answers once the container is gone: the call may take the whole grace.
        let deadline = (grace + STOP_SLACK).max(self.inner.config.request_timeout);
        let stopper = docker.clone().with_timeout(deadline);
        match stopper.stop_container(id, Some(options)).await {
            Ok(()) => {
                tracing::info!(id, ?grace, "instance stopped");
                Ok(())
            }
            Err(e) if is_not_found(&e) || status_of(&e) == Some(304) => Ok(()),
            Err(source) => Err(Error::api(format!("stop container {id}"), source)),
        }
    }

    async fn remove_instance(&self, id: &str) -> Result<()> {
        if self.inspect_managed(id).await?.is_none() {
            return Ok(());
        }
        match self.inner.docker.remove_container(id, Some(force())).await {
            Ok(()) => Ok(()),
            // 409: a removal is already in progress.
            Err(e) if is_not_found(&e) || status_of(&e) == Some(409) => Ok(()),
            Err(source) => Err(Error::api(format!("remove container {id}"), source)),
        }
    }

    async fn list_instances(&self, service: Option<&str>) -> Result<Vec<Instance>> {
        let mut labels = vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_CLUSTER}={}", self.inner.config.cluster),
        ];
        if let Some(service) = service {
            labels.push(format!("{LABEL_SERVICE}={service}"));
        }
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&HashMap::from([("label", labels)]))
            .build();
        let summaries = self
            .inner
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| Error::api("list containers", source))?;
        // The summary lacks the exit code and OOM flag: inspect each (a few at a time).
        let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
        let inspected: Vec<Result<Option<Instance>>> = futures_util::stream::iter(ids)
            .map(|id| async move { self.inspect_instance(&id).await })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .collect()
            .await;
        let mut instances = Vec::new();
        for instance in inspected {
            // `None`: removed since the listing.
            if let Some(instance) = instance? {
                instances.push(instance);
            }
        }
        instances.sort_by(|a, b| {
            (&a.service, a.release, a.slot, &a.id).cmp(&(&b.service, b.release, b.slot, &b.id))
        });
        Ok(instances)
    }

    async fn instance_logs(&self, id: &str, options: LogOptions) -> Result<LogStream> {
        let Some(container) = self.inspect_managed(id).await? else {
            return Err(Error::InstanceNotFound { id: id.to_owned() });
        };
        let id = container.id.unwrap_or_else(|| id.to_owned());
        let tail = options
            .tail
            .map_or_else(|| "all".to_owned(), |n| n.to_string());
        let options = LogsOptionsBuilder::new()
            .follow(options.follow)
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let frames = self.inner.docker.logs(&id, Some(options));
        Ok(crate::logs::lines_of(id, frames))
    }

    async fn host(&self) -> Host {
        let daemon = &self.inner.daemon;
        let status = match self.inner.docker.ping().await {
            Ok(_) => HostStatus::Ready,
            Err(error) => {
                tracing::warn!(%error, host = %self.inner.host, "Docker daemon unreachable");
                HostStatus::Down
            }
        };
        Host {
            id: if daemon.id.is_empty() {
                daemon.name.clone()
            } else {
                daemon.id.clone()
            },
            name: daemon.name.clone(),
            address: host_address(&self.inner.host),
            labels: daemon.labels.clone(),
            status,
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        }
    }
}

#[async_trait]
impl Scheduler for DockerScheduler {
    /// One host: the daemon's machine, `Ready` when the daemon answers a ping, else `Down`.
    async fn hosts(&self) -> paz_core::Result<Vec<Host>> {
        Ok(vec![self.host().await])
    }

    async fn start(&self, spec: &InstanceSpec) -> paz_core::Result<Instance> {
        Ok(self.start_instance(spec).await?)
    }

    /// `docker stop -t <grace, rounded up to whole seconds>`: SIGTERM, then SIGKILL.
    async fn stop(&self, id: &str, grace: Duration) -> paz_core::Result<()> {
        Ok(self.stop_instance(id, grace).await?)
    }

    /// Force-removes the container (and its anonymous volumes; named volumes stay).
    async fn remove(&self, id: &str) -> paz_core::Result<()> {
        Ok(self.remove_instance(id).await?)
    }

    async fn list(&self, service: Option<&str>) -> paz_core::Result<Vec<Instance>> {
        Ok(self.list_instances(service).await?)
    }

    async fn inspect(&self, id: &str) -> paz_core::Result<Option<Instance>> {
        Ok(self.inspect_instance(id).await?)
    }

    /// A follow stream ends when the container stops (it is not reattached if the container
    /// were restarted: Paz never restarts containers, it replaces them).
    async fn logs(&self, id: &str, options: LogOptions) -> paz_core::Result<LogStream> {
        Ok(self.instance_logs(id, options).await?)
    }

    /// See [`DockerScheduler::pin_image`].
    async fn resolve_image(&self, image: &str) -> paz_core::Result<Option<String>> {
        Ok(Some(self.pin_image(image).await?))
    }

    /// See [`crate::events`]: reconnects with backoff and emits `Resync` after every gap.
    async fn events(&self) -> paz_core::Result<EventStream> {
        Ok(crate::events::event_stream(
            self.inner.docker.clone(),
            SystemTime::now(),
            self.inner.config.cluster.clone(),
        ))
    }
}

/// Connects to the engine at `host`, negotiates the API version and reads its `info`;
/// [`Error::DaemonUnavailable`] when nothing answers within 10 s.
pub(crate) async fn connect_engine(
    host: &str,
    request_timeout: Duration,
) -> Result<(Docker, bollard::models::SystemInfo)> {
    let docker = Docker::connect_with_host(host).map_err(|source| match source {
        bollard::errors::Error::SocketNotFoundError(_) => Error::DaemonUnavailable {
            host: host.to_owned(),
            source,
        },
        source => Error::Connect {
            host: host.to_owned(),
            source,
        },
    })?;
    let docker = docker.with_timeout(request_timeout.max(Duration::from_secs(1)));
    let unavailable = |source| Error::DaemonUnavailable {
        host: host.to_owned(),
        source,
    };
    // Once, before any clone (bollard: `negotiate_version` consumes the client).
    let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
        .await
        .map_err(|_| unavailable(bollard::errors::Error::RequestTimeoutError))?
        .map_err(unavailable)?;
    let info = tokio::time::timeout(CONNECT_TIMEOUT, docker.info())
        .await
        .map_err(|_| unavailable(bollard::errors::Error::RequestTimeoutError))?
        .map_err(unavailable)?;
    Ok((docker, info))
}

/// Whether `image` is a full image id, `sha256:<64 hex>`.
pub(crate) fn is_image_id(image: &str) -> bool {
    image
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A repository name as Docker Hub spells it in full (`nginx` → `docker.io/library/nginx`),
/// other registries' names as they are: Docker reports `RepoDigests` in the short form.
fn canonical_name(name: &str) -> String {
    match ImageRef::parse(name) {
        Ok(reference) => match paz_core::hook::docker_hub_name(&reference) {
            Some(hub) => format!("docker.io/{hub}"),
            None => reference.name(),
        },
        Err(_) => name.to_owned(),
    }
}

/// Says (once, at connect) how many Paz containers on this engine belong to other clusters,
/// or to a Paz from before cluster labels: they are left alone, and this is how to find them.
async fn warn_of_foreign_containers(docker: &Docker, cluster: &str) {
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([(
            "label",
            vec![format!("{LABEL_MANAGED}=true")],
        )]))
        .build();
    let Ok(containers) = docker.list_containers(Some(options)).await else {
        return;
    };
    let foreign = containers
        .iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_CLUSTER))
                .map(String::as_str)
                != Some(cluster)
        })
        .count();
    if foreign > 0 {
        tracing::warn!(
            foreign,
            %cluster,
            "Paz containers of other clusters (other stores) are on this engine; this server \
             leaves them alone (see them with `docker ps -a --filter label=paz.managed=true \
             --format '{{{{.Names}}}} {{{{.Label \"paz.cluster\"}}}}'`)"
        );
    }
}

/// `docker rm -fv`: kill if running, and drop anonymous volumes (named volumes stay).
fn force() -> RemoveContainerOptions {
    RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build()
}

/// A named volume, or a bind mount when the source is an absolute path.
pub(crate) fn mount_of(volume: &VolumeSpec) -> Mount {
    let typ = if volume.source.starts_with('/') {
        MountType::BIND
    } else {
        MountType::VOLUME
    };
    Mount {
        target: Some(volume.target.clone()),
        source: Some(volume.source.clone()),
        typ: Some(typ),
        read_only: Some(volume.read_only),
        ..Default::default()
    }
}

/// `paz-<service>-v<release>-<slot>-<6 random base-36 characters>`.
pub(crate) fn container_name(spec: &InstanceSpec) -> String {
    format!(
        "paz-{}-v{}-{}-{}",
        spec.service,
        spec.release,
        spec.slot,
        random_suffix()
    )
}

/// Six random base-36 characters (std's per-process random hash keys, no extra crate).
pub(crate) fn random_suffix() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let mut n = hasher.finish();
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..6)
        .map(|_| {
            let c = ALPHABET[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

/// The daemon's labels (`key=value`; a bare `key` gets an empty value), plus
/// `docker.version`, `docker.os` and `docker.arch` unless the daemon sets those itself.
fn host_labels(info: &bollard::models::SystemInfo) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = info
        .labels
        .iter()
        .flatten()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.clone(), String::new()),
        })
        .collect();
    let facts = [
        ("docker.version", info.server_version.clone()),
        ("docker.os", info.os_type.clone()),
        ("docker.arch", info.architecture.clone()),
    ];
    for (key, value) in facts {
        if let Some(value) = value {
            labels.entry(key.to_owned()).or_insert(value);
        }
    }
    labels
}

/// The address other hosts reach the daemon's machine on: the host of a `tcp://` Docker host,
/// else (local socket) `127.0.0.1`.
pub(crate) fn host_address(host: &str) -> String {
    host.strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
        .and_then(|rest| rest.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

/// Finds (or creates) the Paz network and reads its gateway.
async fn ensure_network(docker: &Docker, config: &DockerConfig) -> Result<NetworkInfo> {
    let name = config.network.as_str();
    let failed = |source| Error::Network {
        network: name.to_owned(),
        source,
    };
    let _guard = NETWORK_LOCK.lock().await;
    let mut found = networks_named(docker, name).await.map_err(failed)?;
    if found.is_empty() {
        let mut labels: HashMap<String, String> = config
            .extra_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
        let created = docker
            .create_network(NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".to_owned()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(failed)?;
        tracing::info!(network = name, id = %created.id, "created the Paz network");
        found = networks_named(docker, name).await.map_err(failed)?;
        // Another process may have created one at the same time: the oldest wins.
        if found.len() > 1 && found[0].0 != created.id {
            tracing::warn!(
                network = name,
                "network created twice concurrently: keeping the oldest"
            );
            if let Err(error) = docker.remove_network(&created.id).await {
                tracing::warn!(network = name, %error, "cannot remove the duplicate network");
            }
            found.retain(|(id, _)| *id != created.id);
        }
    }
    let Some((id, _)) = found.into_iter().next() else {
        return Err(Error::NetworkUnusable {
            network: name.to_owned(),
            reason: "it vanished right after it was created".to_owned(),
        });
    };
    let inspected = docker.inspect_network(&id, None).await.map_err(failed)?;
    if let Some(driver) = inspected.driver.as_deref()
        && !matches!(driver, "bridge" | "overlay" | "macvlan" | "ipvlan")
    {
        return Err(Error::NetworkUnusable {
            network: name.to_owned(),
            reason: format!("its driver is {driver:?}; Paz needs a bridge network"),
        });
    }
    let configs: Vec<_> = inspected
        .ipam
        .and_then(|ipam| ipam.config)
        .into_iter()
        .flatten()
        .collect();
    let subnet = configs
        .iter()
        .filter_map(|c| c.subnet.as_deref())
        .find_map(parse_ipv4_subnet);
    let gateways: Vec<IpAddr> = configs
        .into_iter()
        .filter_map(|c| c.gateway)
        .filter_map(|g| g.split('/').next().and_then(|ip| ip.parse().ok()))
        .collect();
    let gateway = gateways
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(gateways.first())
        .copied();
    Ok(NetworkInfo {
        id,
        name: name.to_owned(),
        gateway,
        subnet,
    })
}

/// `172.20.0.0/16` as (network, prefix length); `None` for IPv6 or anything malformed.
fn parse_ipv4_subnet(text: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (ip, prefix) = text.split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((ip.parse().ok()?, prefix))
}

/// The `(id, created)` of the networks named exactly `name`, oldest first.
async fn networks_named(
    docker: &Docker,
    name: &str,
) -> std::result::Result<Vec<(String, String)>, bollard::errors::Error> {
    // The daemon's `name` filter matches substrings: compare exactly here.
    let options = ListNetworksOptionsBuilder::new()
        .filters(&HashMap::from([("name", vec![name])]))
        .build();
    let mut found: Vec<(String, String)> = docker
        .list_networks(Some(options))
        .await?
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .filter_map(|n| Some((n.id?, n.created.unwrap_or_default())))
        .collect();
    found.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_the_pattern() {
        let spec = paz_core::contract::scheduler::Fixture {
            image: "demo:v1".into(),
            port: 8080,
        }
        .spec("web", 2);
        let name = container_name(&spec);
        let (prefix, suffix) = name.rsplit_once('-').unwrap();
        assert_eq!(prefix, "paz-web-v1-2");
        assert_eq!(suffix.len(), 6);
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(container_name(&spec), name, "names are random");
    }

    #[test]
    fn image_ids_and_canonical_names() {
        let id = format!("sha256:{}", "ab".repeat(32));
        assert!(is_image_id(&id));
        assert!(!is_image_id("sha256:abc") && !is_image_id("paz-demo:v1"));
        assert_eq!(canonical_name("nginx"), "docker.io/library/nginx");
        assert_eq!(
            canonical_name("docker.io/library/nginx"),
            "docker.io/library/nginx"
        );
        assert_eq!(canonical_name("acme/web"), "docker.io/acme/web");
        assert_eq!(
            canonical_name("127.0.0.1:5000/paz-demo"),
            "127.0.0.1:5000/paz-demo"
        );
    }

    #[test]
    fn host_addresses() {
        assert_eq!(host_address("unix:///var/run/docker.sock"), "127.0.0.1");
        assert_eq!(host_address("tcp://10.0.0.7:2375"), "10.0.0.7");
        assert_eq!(host_address("tcp://docker.lan"), "docker.lan");
    }

    #[test]
    fn mounts_are_volumes_or_binds() {
        let volume = mount_of(&VolumeSpec {
            source: "data".into(),
            target: "/data".into(),
            read_only: false,
        });
        assert_eq!(volume.typ, Some(MountType::VOLUME));
        let bind = mount_of(&VolumeSpec {
            source: "/srv/config".into(),
            target: "/config".into(),
            read_only: true,
        });
        assert_eq!(
            (bind.typ, bind.read_only),
            (Some(MountType::BIND), Some(true))
        );
    }

    #[test]
    fn daemon_labels_become_host_labels() {
        let info = bollard::models::SystemInfo {
            labels: Some(vec!["zone=a".into(), "gpu".into()]),
            server_version: Some("20.10.24".into()),
            architecture: Some("x86_64".into()),
            ..Default::default()
        };
        let labels = host_labels(&info);
        assert_eq!(labels["zone"], "a");
        assert_eq!(labels["gpu"], "");
        assert_eq!(labels["docker.version"], "20.10.24");
        assert_eq!(labels["docker.arch"], "x86_64");
    }
}
