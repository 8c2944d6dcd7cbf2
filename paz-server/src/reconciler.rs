//! The reconciler: the loop that makes the running instances and the routes match the
//! declared services. Each tick it lists the instances, asks the pure planner
//! ([`paz_core::deploy::plan`]) what to do for each service, carries the actions out, records
//! every step in the deployment, and applies the route table. A health task checks new
//! instances on the exact address, host name and path the router uses, and wakes the loop the
//! moment one passes, so it becomes routable at once.
//!
//! Nothing here is needed to resume after a crash: the plan depends only on the stored
//! target and what the scheduler reports, so a restarted server plans again and continues.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paz_core::deploy::{Action, ObservedInstance, PlanInput, plan};
use paz_core::health::{HealthChecker, HealthTarget};
use paz_core::model::StepStatus;
use paz_core::planning::DesiredState;
use paz_core::proxy::Proxy;
use paz_core::route::{Backend, BackendState, INTERNAL_SUFFIX, RouteTable};
use paz_core::scheduler::{InstanceSpec, Scheduler};
use paz_core::{
    DeploymentStatus, HealthCheck, HealthKind, HumanDuration, Instance, InstanceState, Paz,
    Release, Service,
};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// How often the loop runs without being woken.
const TICK: Duration = Duration::from_millis(500);
/// How often a starting instance is checked.
const STARTING_CHECK: Duration = Duration::from_millis(50);
/// How long a stopped instance gets to finish after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a restarted slot must stay healthy before its crash count is forgotten.
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// Longest wait between restarts of a crashing instance.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the health task knows about one instance.
#[derive(Debug, Clone)]
struct Tracked {
    service: String,
    address: Option<String>,
    check: Option<HealthCheck>,
    host: String,
    started: Instant,
    healthy: bool,
    /// When the health check first passed, until the instance is routed.
    healthy_at: Option<Instant>,
    failures: u32,
    next_check: Instant,
    checking: bool,
}

impl Tracked {
    /// A newly seen instance: not healthy yet, checked at once.
    fn new(instance: &Instance, check: Option<HealthCheck>, host: String) -> Self {
        let now = Instant::now();
        Tracked {
            service: instance.service.clone(),
            address: instance.address.clone(),
            check,
            host,
            started: now,
            healthy: false,
            healthy_at: None,
            failures: 0,
            next_check: now,
            checking: false,
        }
    }
}

/// An instance on its way out.
struct DrainJob {
    id: String,
    address: Option<String>,
    timeout: Duration,
}

/// Restart backoff of one slot of one service.
#[derive(Debug, Clone)]
struct Backoff {
    restarts: u32,
    until: Instant,
}

#[derive(Default)]
struct Shared {
    tracked: HashMap<String, Tracked>,
    draining: HashSet<String>,
    backoff: HashMap<(String, u32), Backoff>,
    instances: Vec<Instance>,
    problems: BTreeMap<String, String>,
    table: RouteTable,
    releases: HashMap<(String, u64), Release>,
    /// The services, router weights and domain of the last tick, for route refreshes
    /// between ticks.
    services: Vec<Service>,
    weights: HashMap<(String, u64), u32>,
    domain: String,
    /// When each service seen was created: a different time means it was deleted and
    /// created again, and its cached releases are dropped.
    epochs: HashMap<String, jiff::Timestamp>,
}

/// The reconciler. Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

struct Inner {
    paz: Paz,
    scheduler: Arc<dyn Scheduler>,
    proxy: Arc<dyn Proxy>,
    health: Arc<dyn HealthChecker>,
    shared: Mutex<Shared>,
    wake: Notify,
    /// Serializes computing and applying route tables, so an older table never replaces a
    /// newer one.
    routes: tokio::sync::Mutex<()>,
}

/// One service's instances and problems, as `GET /v1/services/{name}/status` shows them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    /// The instances, with the state the reconciler sees (health included).
    pub instances: Vec<Instance>,
    /// Crash loops and scheduler errors, for people.
    pub problems: Vec<String>,
}

impl Reconciler {
    /// A reconciler over the engine and its backends.
    pub fn new(
        paz: Paz,
        scheduler: Arc<dyn Scheduler>,
        proxy: Arc<dyn Proxy>,
        health: Arc<dyn HealthChecker>,
    ) -> Self {
        Reconciler {
            inner: Arc::new(Inner {
                paz,
                scheduler,
                proxy,
                health,
                shared: Mutex::new(Shared::default()),
                routes: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
            }),
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a tick as soon as possible.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Runs the loop and the health task until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let health = tokio::spawn(self.clone().run_health_checks(shutdown.clone()));
        let scheduler_events = tokio::spawn(self.clone().follow_scheduler_events(shutdown.clone()));
        let mut engine_events = self.inner.paz.subscribe();
        loop {
            if let Err(error) = self.tick().await {
                tracing::warn!(%error, "reconcile failed; retrying");
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = engine_events.recv() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        health.abort();
        scheduler_events.abort();
    }

    async fn follow_scheduler_events(self, mut shutdown: watch::Receiver<bool>) {
        use futures_util::StreamExt;
        loop {
            match self.inner.scheduler.events().await {
                Ok(mut events) => loop {
                    tokio::select! {
                        event = events.next() => match event {
                            Some(_) => self.wake(),
                            None => break,
                        },
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                },
                Err(error) => tracing::warn!(%error, "scheduler events unavailable; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// The instances of one service and its problems.
    pub fn status(&self, service: &str) -> ServiceStatus {
        let shared = self.shared();
        let instances = shared
            .instances
            .iter()
            .filter(|i| i.service == service)
            .map(|i| Instance {
                state: observed_state(&shared, i),
                ..i.clone()
            })
            .collect();
        let mut problems: Vec<String> = shared.problems.get(service).cloned().into_iter().collect();
        let now = Instant::now();
        for ((name, slot), backoff) in &shared.backoff {
            if name == service && backoff.restarts > 0 {
                let wait = backoff.until.saturating_duration_since(now);
                problems.push(format!(
                    "crash loop: slot {slot} restarted {} times; next start in {}",
                    backoff.restarts,
                    HumanDuration(Duration::from_millis(wait.as_millis() as u64))
                ));
            }
        }
        ServiceStatus {
            instances,
            problems,
        }
    }

    async fn release(&self, service: &str, version: u64) -> paz_core::Result<Release> {
        if let Some(release) = self.shared().releases.get(&(service.to_owned(), version)) {
            return Ok(release.clone());
        }
        let release = self.inner.paz.release(service, version).await?;
        self.shared()
            .releases
            .insert((service.to_owned(), version), release.clone());
        Ok(release)
    }

    /// One pass over every service.
    pub async fn tick(&self) -> paz_core::Result<()> {
        let paz = &self.inner.paz;
        let services = paz.services().await?;
        let instances = match self.inner.scheduler.list(None).await {
            Ok(instances) => instances,
            Err(error) => {
                let message = format!("the scheduler is unavailable: {error}");
                {
                    let mut shared = self.shared();
                    for service in &services {
                        shared
                            .problems
                            .insert(service.spec.name.clone(), message.clone());
                    }
                }
                self.note_in_deployments(&services, &message).await;
                return Err(error);
            }
        };
        let domain = paz.config().domain.clone();
        {
            let mut shared = self.shared();
            shared.problems.clear();
            let live: HashSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
            shared.tracked.retain(|id, _| live.contains(id.as_str()));
            shared.draining.retain(|id| live.contains(id.as_str()));
            // Releases and crash counts belong to one life of a service: a service deleted
            // (or deleted and created again, which restarts at v1) starts afresh.
            let lives: HashMap<&str, jiff::Timestamp> = services
                .iter()
                .map(|s| (s.spec.name.as_str(), s.created_at))
                .collect();
            shared
                .epochs
                .retain(|name, created| lives.get(name.as_str()) == Some(created));
            for (name, created) in &lives {
                shared.epochs.entry((*name).to_owned()).or_insert(*created);
            }
            let epochs = shared.epochs.clone();
            shared
                .releases
                .retain(|(name, _), _| epochs.contains_key(name));
            shared
                .backoff
                .retain(|(name, _), _| epochs.contains_key(name));
            // An instance seen without an address (created, not started) may get one later.
            for instance in &instances {
                if let Some(tracked) = shared.tracked.get_mut(&instance.id)
                    && tracked.address.is_none()
                {
                    tracked.address.clone_from(&instance.address);
                }
            }
            shared.instances = instances.clone();
        }
        for instance in &instances {
            if !self.shared().tracked.contains_key(&instance.id)
                && let Some(service) = services.iter().find(|s| s.spec.name == instance.service)
            {
                let check = self
                    .release(&instance.service, instance.release)
                    .await
                    .ok()
                    .map(|r| health_check_of(&r));
                let tracked = Tracked::new(
                    instance,
                    check.flatten(),
                    format!("{}.{domain}", service.spec.name),
                );
                self.shared().tracked.insert(instance.id.clone(), tracked);
            }
        }

        let mut weights: HashMap<(String, u64), u32> = HashMap::new();
        let mut drains = Vec::new();
        for service in &services {
            let name = &service.spec.name;
            let observed = self.observe(&instances, service);
            match self
                .reconcile_service(service, &observed, &mut drains)
                .await
            {
                Ok(service_weights) => {
                    for (release, weight) in service_weights {
                        weights.insert((name.clone(), release), weight);
                    }
                }
                Err(error) => {
                    tracing::warn!(service = %name, %error, "reconcile of service failed");
                    let mut shared = self.shared();
                    shared.problems.insert(name.clone(), error.to_string());
                    // Keep routing it as before rather than dropping its backends.
                    for (key, weight) in &shared.weights {
                        if &key.0 == name {
                            weights.insert(key.clone(), *weight);
                        }
                    }
                }
            }
        }
        // Instances of services that no longer exist, or of an earlier life of a service
        // deleted and created again under the same name.
        for instance in &instances {
            let owner = services.iter().find(|s| s.spec.name == instance.service);
            if owner.is_none_or(|service| !same_life(instance, service)) {
                drains.push(instance.id.clone());
            }
        }

        let jobs: Vec<DrainJob> = {
            // One lock: a route refresh between the two would see the new weights without
            // the drains and drop the old instances instead of draining them.
            let mut shared = self.shared();
            shared.services = services;
            shared.weights = weights;
            shared.domain = domain;
            drains
                .into_iter()
                .filter_map(|id| mark_draining(&mut shared, id))
                .collect()
        };
        if let Err(error) = self.refresh_routes().await {
            let mut shared = self.shared();
            for job in &jobs {
                shared.draining.remove(&job.id);
            }
            return Err(error);
        }
        for job in jobs {
            self.spawn_drain(job);
        }
        Ok(())
    }

    /// Records a problem that holds up every deployment in progress (once per distinct
    /// message), so `paz deploy` and the history say why nothing moves.
    async fn note_in_deployments(&self, services: &[Service], message: &str) {
        for service in services {
            let Ok(Some(mut deployment)) =
                self.inner.paz.latest_deployment(&service.spec.name).await
            else {
                continue;
            };
            let already = deployment
                .steps
                .last()
                .is_some_and(|s| s.message.as_deref() == Some(message));
            if deployment.status.is_final() || already {
                continue;
            }
            deployment.record(
                "waiting for the scheduler",
                StepStatus::Failed,
                Some(message.to_owned()),
            );
            if let Err(error) = self.inner.paz.save_deployment(&deployment).await {
                tracing::warn!(%error, "cannot record the scheduler problem");
            }
        }
    }

    fn observe(&self, instances: &[Instance], service: &Service) -> Vec<ObservedInstance> {
        let shared = self.shared();
        let now = Instant::now();
        instances
            .iter()
            .filter(|i| i.service == service.spec.name && same_life(i, service))
            .map(|i| ObservedInstance {
                id: i.id.clone(),
                release: i.release,
                slot: i.slot,
                state: observed_state(&shared, i),
                age: shared
                    .tracked
                    .get(&i.id)
                    .map_or(Duration::ZERO, |t| now.duration_since(t.started)),
            })
            .collect()
    }

    async fn reconcile_service(
        &self,
        service: &Service,
        observed: &[ObservedInstance],
        drains: &mut Vec<String>,
    ) -> paz_core::Result<BTreeMap<u64, u32>> {
        {
            // A slot that has been healthy for a while is out of its crash loop.
            let mut shared = self.shared();
            for o in observed
                .iter()
                .filter(|o| o.state == InstanceState::Healthy && o.age > BACKOFF_RESET)
            {
                shared.backoff.remove(&(service.spec.name.clone(), o.slot));
            }
        }
        let paz = &self.inner.paz;
        let name = &service.spec.name;
        let Some(target) = service.current_release else {
            for instance in observed {
                drains.push(instance.id.clone());
            }
            return Ok(BTreeMap::new());
        };
        let release = self.release(name, target).await?;
        let mut deployment = paz
            .latest_deployment(name)
            .await?
            .filter(|d| !d.status.is_final() && d.release == target);
        if let Some(d) = deployment.as_mut()
            && d.status == DeploymentStatus::Pending
        {
            d.status = DeploymentStatus::Running;
            d.started_at = Some(jiff::Timestamp::now());
            d.record(
                format!("deploying v{target} ({:?})", d.strategy).to_lowercase(),
                StepStatus::Succeeded,
                None,
            );
            paz.save_deployment(d).await?;
        }
        let plan = plan(&PlanInput {
            release: target,
            instances: service.spec.instances,
            settings: &release.spec.deploy,
            deploying: deployment.is_some(),
            canary_step: deployment.as_ref().map_or(0, |d| d.canary_step as usize),
            observed,
        });
        let mut steps: Vec<(String, StepStatus, Option<String>)> = Vec::new();
        let mut failure = None;
        let mut starts = Vec::new();
        for action in &plan.actions {
            match action {
                Action::Fail { reason } => {
                    failure.get_or_insert_with(|| reason.clone());
                }
                Action::Drain { id } => {
                    if !self.shared().draining.contains(id) {
                        drains.push(id.clone());
                        steps.push((format!("drain {id}"), StepStatus::Succeeded, None));
                    }
                }
                Action::Remove { id } => {
                    let failed = observed
                        .iter()
                        .find(|o| &o.id == id)
                        .filter(|o| o.state == InstanceState::Failed);
                    if let Some(failed) = failed {
                        self.note_crash(name, failed.slot);
                        steps.push((
                            format!("remove failed instance {id}"),
                            StepStatus::Succeeded,
                            None,
                        ));
                    }
                    if let Err(error) = self.inner.scheduler.remove(id).await {
                        tracing::warn!(%id, %error, "remove failed");
                    }
                }
                Action::Start { slot } => {
                    if failure.is_none() && !self.in_backoff(name, *slot) {
                        starts.push(*slot);
                    }
                }
            }
        }
        // Start the new instances at once: each `docker create` + `start` takes a while.
        let started = futures_util::future::join_all(starts.iter().map(|&slot| {
            let mut spec = InstanceSpec::from_release(&release, slot);
            spec.epoch = Some(epoch_of(service));
            async move { (slot, self.inner.scheduler.start(&spec).await) }
        }))
        .await;
        for (slot, result) in started {
            match result {
                Ok(instance) => {
                    tracing::info!(service = %name, release = target, slot, id = %instance.id, "instance started");
                    steps.push((
                        format!("start v{target} slot {slot}: {}", instance.id),
                        StepStatus::Succeeded,
                        None,
                    ));
                    self.track_new(&instance, &release);
                }
                Err(error) => {
                    let message = format!("cannot start v{target} slot {slot}: {error}");
                    steps.push((
                        format!("start v{target} slot {slot}"),
                        StepStatus::Failed,
                        Some(error.to_string()),
                    ));
                    if deployment.is_some() {
                        failure.get_or_insert(message);
                    } else {
                        self.note_crash(name, slot);
                        self.shared().problems.insert(name.clone(), message);
                    }
                }
            }
        }
        if let Some(d) = deployment.as_mut() {
            if !steps.is_empty() {
                for (step, status, message) in steps {
                    d.record(step, status, message);
                }
                paz.save_deployment(d).await?;
            }
            if let Some(reason) = failure {
                tracing::warn!(service = %name, deployment = %d.id, %reason, "deployment failed; reverting");
                paz.finish_deployment(&d.id, Err(reason)).await?;
                self.wake();
            } else if plan.converged {
                tracing::info!(service = %name, deployment = %d.id, "deployment succeeded");
                paz.finish_deployment(&d.id, Ok(())).await?;
            }
        }
        Ok(plan.weights)
    }

    /// Recomputes the route table from the latest state and applies it if it changed.
    pub async fn refresh_routes(&self) -> paz_core::Result<()> {
        let _one_at_a_time = self.inner.routes.lock().await;
        let table = build_table(&self.shared());
        self.apply_routes(table).await
    }

    async fn apply_routes(&self, table: RouteTable) -> paz_core::Result<()> {
        if self.shared().table == table {
            return Ok(());
        }
        self.inner.proxy.apply(&table).await?;
        let mut shared = self.shared();
        let routed: HashSet<&String> = table
            .routes
            .values()
            .flat_map(|r| r.backends.iter())
            .filter(|(_, b)| b.state == BackendState::Active)
            .map(|(address, _)| address)
            .collect();
        for (id, tracked) in shared.tracked.iter_mut() {
            if let (Some(at), Some(address)) = (tracked.healthy_at, &tracked.address)
                && routed.contains(address)
            {
                tracing::info!(%id, service = %tracked.service, after_healthy_us = at.elapsed().as_micros() as u64, "instance routable");
                tracked.healthy_at = None;
            }
        }
        shared.table = table;
        Ok(())
    }

    /// Waits until the router has no request in flight to the instance (at most its drain
    /// timeout), then stops and removes it.
    fn spawn_drain(&self, job: DrainJob) {
        let DrainJob {
            id,
            address,
            timeout,
        } = job;
        let this = self.clone();
        tokio::spawn(async move {
            // For an address the router never had this returns 0 at once.
            if let Some(address) = &address {
                match this.inner.proxy.wait_drained(address, timeout).await {
                    Ok(0) => {}
                    Ok(left) => {
                        tracing::warn!(%id, left, "drain timeout reached; stopping with requests in flight")
                    }
                    Err(error) => tracing::warn!(%id, %error, "drain wait failed"),
                }
            }
            let stopped = this.inner.scheduler.stop(&id, STOP_GRACE).await;
            let removed = this.inner.scheduler.remove(&id).await;
            if let Err(error) = stopped.and(removed) {
                // Let the next tick plan the drain again rather than leave it half done.
                tracing::warn!(%id, %error, "stopping a drained instance failed; will retry");
                this.shared().draining.remove(&id);
            }
            this.wake();
        });
    }

    fn track_new(&self, instance: &Instance, release: &Release) {
        let host = format!("{}.{}", instance.service, self.inner.paz.config().domain);
        let tracked = Tracked::new(instance, health_check_of(release), host);
        self.shared().tracked.insert(instance.id.clone(), tracked);
    }

    fn in_backoff(&self, service: &str, slot: u32) -> bool {
        self.shared()
            .backoff
            .get(&(service.to_owned(), slot))
            .is_some_and(|b| b.until > Instant::now())
    }

    fn note_crash(&self, service: &str, slot: u32) {
        let mut shared = self.shared();
        let backoff = shared
            .backoff
            .entry((service.to_owned(), slot))
            .or_insert(Backoff {
                restarts: 0,
                until: Instant::now(),
            });
        backoff.restarts += 1;
        let wait =
            Duration::from_millis(250 * 2u64.pow(backoff.restarts.min(10) - 1)).min(MAX_BACKOFF);
        backoff.until = Instant::now() + wait;
        tracing::warn!(%service, slot, restarts = backoff.restarts, ?wait, "instance crashed; restarting after backoff");
    }

    async fn run_health_checks(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let due: Vec<(String, HealthTarget, Duration)> = {
                let mut shared = self.shared();
                let now = Instant::now();
                let draining = shared.draining.clone();
                shared
                    .tracked
                    .iter_mut()
                    .filter(|(id, t)| !t.checking && t.next_check <= now && !draining.contains(*id))
                    .filter_map(|(id, t)| {
                        let check = t.check.clone()?;
                        let address = t.address.as_deref()?;
                        let address = check
                            .port
                            .map_or_else(|| address.to_owned(), |port| with_port(address, port));
                        t.checking = true;
                        let interval = if t.healthy {
                            check.interval.get()
                        } else {
                            STARTING_CHECK
                        };
                        Some((
                            id.clone(),
                            HealthTarget {
                                address,
                                check,
                                host: Some(t.host.clone()),
                            },
                            interval,
                        ))
                    })
                    .collect()
            };
            for (id, target, interval) in due {
                let this = self.clone();
                tokio::spawn(async move {
                    let report = this.inner.health.check(&target).await;
                    let mut wake = false;
                    {
                        let mut shared = this.shared();
                        if let Some(t) = shared.tracked.get_mut(&id) {
                            t.checking = false;
                            t.next_check = Instant::now() + interval;
                            let retries = target.check.retries;
                            let grace = target.check.start_period.get();
                            if report.healthy {
                                t.failures = 0;
                                if !t.healthy {
                                    t.healthy = true;
                                    t.healthy_at = Some(Instant::now());
                                    wake = true;
                                    tracing::info!(%id, service = %t.service, after = ?t.started.elapsed(), "instance healthy");
                                }
                            } else if t.healthy && t.started.elapsed() > grace {
                                t.failures += 1;
                                if t.failures >= retries {
                                    tracing::warn!(%id, detail = %report.detail, "instance failed its health check");
                                    t.healthy = false;
                                    wake = true;
                                }
                            }
                        }
                    }
                    if wake {
                        // Route a newly healthy instance now, not at the next tick.
                        if let Err(error) = this.refresh_routes().await {
                            tracing::warn!(%error, "route refresh failed");
                        }
                        this.wake();
                    }
                });
            }
            // Instances without a check (no port) are healthy once running.
            let woke = {
                let mut shared = self.shared();
                let mut changed = false;
                for t in shared.tracked.values_mut() {
                    // With a check but no address yet (created, not started), it stays
                    // starting: the health timeout replaces it if it never gets one.
                    if t.check.is_none() && !t.healthy {
                        t.healthy = true;
                        changed = true;
                    }
                }
                changed
            };
            if woke {
                self.wake();
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}

/// Marks an instance as draining (no new requests once the routes are applied) and returns
/// what its drain needs; `None` when it is already draining.
fn mark_draining(shared: &mut Shared, id: String) -> Option<DrainJob> {
    if !shared.draining.insert(id.clone()) {
        return None;
    }
    let instance = shared.instances.iter().find(|i| i.id == id);
    let address = instance.and_then(|i| i.address.clone());
    let timeout = instance
        .and_then(|i| shared.releases.get(&(i.service.clone(), i.release)))
        .map_or(Duration::from_secs(30), |r| {
            r.spec.deploy.drain_timeout.get()
        });
    Some(DrainJob {
        id,
        address,
        timeout,
    })
}

/// The life of a service its instances are labelled with: its creation time.
fn epoch_of(service: &Service) -> String {
    service.created_at.to_string()
}

/// Whether an instance belongs to this life of its service (unlabelled ones are adopted).
fn same_life(instance: &Instance, service: &Service) -> bool {
    instance
        .epoch
        .as_ref()
        .is_none_or(|epoch| *epoch == epoch_of(service))
}

/// The route table: every public and internal host name of every service, with its healthy
/// instances weighted by release, and the instances being drained.
fn build_table(shared: &Shared) -> RouteTable {
    let mut desired = DesiredState::from_services(&shared.services, &shared.domain);
    for service in &shared.services {
        if service.spec.routed_port().is_some() {
            desired.hostnames.insert(
                format!("{}{INTERNAL_SUFFIX}", service.spec.name),
                service.spec.name.clone(),
            );
        }
    }
    let mut table = desired.route_table(&[]);
    for instance in &shared.instances {
        let Some(address) = &instance.address else {
            continue;
        };
        let backend = match observed_state(shared, instance) {
            InstanceState::Draining => {
                // Only instances that were routed need draining in the router.
                if !shared
                    .table
                    .routes
                    .values()
                    .any(|r| r.backends.contains_key(address))
                {
                    continue;
                }
                Backend {
                    weight: 0,
                    state: BackendState::Draining,
                }
            }
            InstanceState::Healthy => {
                let key = (instance.service.clone(), instance.release);
                match shared.weights.get(&key).copied() {
                    Some(weight) if weight > 0 => Backend {
                        weight,
                        state: BackendState::Active,
                    },
                    _ => continue,
                }
            }
            _ => continue,
        };
        for route in table
            .routes
            .values_mut()
            .filter(|r| r.service == instance.service)
        {
            route.backends.insert(address.clone(), backend);
        }
    }
    table
}

/// The state of an instance as the planner sees it: the scheduler's state, with health and
/// draining from the reconciler.
fn observed_state(shared: &Shared, instance: &Instance) -> InstanceState {
    match instance.state {
        InstanceState::Stopped | InstanceState::Failed => instance.state,
        _ if shared.draining.contains(&instance.id) => InstanceState::Draining,
        _ => match shared.tracked.get(&instance.id) {
            Some(t) if t.healthy => InstanceState::Healthy,
            // A checked instance that failed its check after being healthy counts as failed.
            Some(t)
                if t.failures > 0 && t.check.as_ref().is_some_and(|c| t.failures >= c.retries) =>
            {
                InstanceState::Failed
            }
            _ => InstanceState::Starting,
        },
    }
}

/// The check for instances of a release: the declared one, else a TCP check of the routed
/// port, else none (healthy once running).
fn health_check_of(release: &Release) -> Option<HealthCheck> {
    let spec = &release.spec;
    match &spec.health {
        Some(check) => {
            let mut check = check.clone();
            if check.port.is_none() {
                check.port = spec
                    .routed_port()
                    .map(u32::from)
                    .or_else(|| spec.ports.first().map(|p| p.port));
            }
            Some(check)
        }
        None => {
            let port = spec
                .routed_port()
                .map(u32::from)
                .or_else(|| spec.ports.first().map(|p| p.port))?;
            Some(HealthCheck {
                kind: HealthKind::Tcp,
                port: Some(port),
                ..HealthCheck::default()
            })
        }
    }
}

/// Replaces the port of `ip:port` with `port` (health checks may use another port).
pub fn with_port(address: &str, port: u32) -> String {
    match address.rsplit_once(':') {
        Some((ip, _)) => format!("{ip}:{port}"),
        None => format!("{address}:{port}"),
    }
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").finish_non_exhaustive()
    }
}
