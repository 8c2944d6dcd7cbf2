//! The reconciler: makes the running instances and the routes of each service match its
//! declaration. For a service it observes (the scheduler's instances, the health it tracks),
//! asks the pure policy of [`paz_core::deploy`] what to do, carries the effects out (start,
//! drain, remove, record deployment steps, apply the route table) and ends with an
//! [`Action`]: requeue soon while something is in motion, else await the next change.
//!
//! A health task checks instances on the exact address, host name and path the router uses,
//! and on a transition refreshes the routes at once (a new instance is routable within a
//! millisecond of passing) and makes its service due.
//!
//! Nothing here is needed to resume after a crash: the plan depends only on the stored
//! target and what the scheduler reports, so a restarted runtime plans again and continues.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paz_core::api::ServiceStatus;
use paz_core::deploy::health::{
    HealthState, STARTING_CHECK, Transition, check_for, instance_state,
};
use paz_core::deploy::lifecycle::{self, Outcome};
use paz_core::deploy::routes::{RoutedInstance, Weights, route_table};
use paz_core::deploy::{ObservedInstance, PlanInput, backoff, plan};
use paz_core::event::EventKind;
use paz_core::health::{HealthChecker, HealthTarget};
use paz_core::model::StepStatus;
use paz_core::proxy::Proxy;
use paz_core::route::{BackendState, RouteTable};
use paz_core::scheduler::{InstanceSpec, Scheduler, SchedulerEvent};
use paz_core::{Error, HealthCheck, HumanDuration, Instance, InstanceState, Paz, Release, Service};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::queue::{Action, WorkQueue};

/// How soon a service with something in motion (a deployment, starting or draining
/// instances, a crash loop) is reconciled again.
const BUSY: Duration = Duration::from_millis(500);
/// How soon a service whose reconcile failed is tried again.
const AFTER_ERROR: Duration = Duration::from_secs(1);
/// How long a stopped instance gets to finish after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Above this many services in one batch, one list of every instance is cheaper than one
/// list per service.
const LIST_ALL_ABOVE: usize = 8;
/// At start-up, more instances than this of services the store does not know means the
/// store is not the one these instances were made from (restored from an old backup, or the
/// cluster id given to another store): they are left alone and reported, not removed.
pub const MAX_UNKNOWN_AT_START: usize = 5;
/// Longest sleep of the health task when nothing is due.
const HEALTH_IDLE: Duration = Duration::from_secs(1);

/// What the health task knows about one instance.
#[derive(Debug, Clone)]
struct Tracked {
    service: String,
    release: u64,
    address: Option<String>,
    check: Option<HealthCheck>,
    host: String,
    started: Instant,
    health: HealthState,
    /// When the health check first passed, until the instance is routed.
    healthy_at: Option<Instant>,
    next_check: Instant,
    checking: bool,
    /// Whether a check has finished (or none applies): until every instance seen at
    /// start-up has one, the first route table is held back.
    checked: bool,
}

impl Tracked {
    /// A newly seen instance: checked at once; one without a check is healthy once running.
    fn new(instance: &Instance, check: Option<HealthCheck>, host: String) -> Self {
        let now = Instant::now();
        let checked = check.is_none() || instance.address.is_none();
        Tracked {
            service: instance.service.clone(),
            release: instance.release,
            address: instance.address.clone(),
            health: HealthState {
                healthy: check.is_none(),
                failures: 0,
            },
            check,
            host,
            started: now,
            healthy_at: None,
            next_check: now,
            checking: false,
            checked,
        }
    }
}

/// An instance on its way out.
struct DrainJob {
    id: String,
    service: String,
    release: u64,
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
    /// By instance id.
    tracked: HashMap<String, Tracked>,
    /// Instance id → service, for instances being drained.
    draining: HashMap<String, String>,
    backoff: HashMap<(String, u32), Backoff>,
    /// The instances last observed, by service.
    instances: BTreeMap<String, Vec<Instance>>,
    problems: BTreeMap<String, String>,
    /// The route table last applied.
    table: RouteTable,
    releases: HashMap<(String, u64), Release>,
    /// The services last reconciled, with the router weights of their releases.
    services: BTreeMap<String, Service>,
    weights: Weights,
    /// When each service seen was created: a different time means it was deleted and
    /// created again, and its cached releases and crash counts are dropped.
    epochs: HashMap<String, jiff::Timestamp>,
    /// Drains marked but not started: they start after the next route table applied.
    pending_drains: Vec<DrainJob>,
    /// Whether a full pass has listed the instances once (start-up is over).
    listed_once: bool,
    /// Whether the first full pass has tracked every instance it listed.
    first_pass_done: bool,
    /// Services unknown to the store whose instances were found at start-up, too many to
    /// be ordinary orphans: never touched (until a service of that name is created), with
    /// how many instances each had.
    held: BTreeMap<String, usize>,
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
    queue: Mutex<WorkQueue>,
    /// Wakes the loop: a service became due, or a full resync was asked for.
    wake: Notify,
    /// Wakes the health task: an instance is tracked or a check finished.
    health_wake: Notify,
    full_resync: AtomicBool,
    panics: std::sync::atomic::AtomicU64,
    resync: Duration,
    /// Serializes computing and applying route tables, so an older table never replaces a
    /// newer one.
    routes: tokio::sync::Mutex<()>,
    /// Whether the routes are restored: the first full pass listed the instances and each
    /// of them was checked once (or [`Reconciler::finish_restore`] gave up waiting). Until
    /// then no route table is applied, so a restarted router keeps the table it was given
    /// (or serves nothing yet) instead of a table missing instances not checked so far.
    restored: AtomicBool,
    /// In a cluster: announces the instances in the store for every router.
    announcer: std::sync::OnceLock<Arc<crate::announce::Announcer>>,
}

impl Reconciler {
    /// A reconciler over the engine and its backends, with a full resync every
    /// [`DEFAULT_RESYNC`](crate::DEFAULT_RESYNC).
    pub fn new(
        paz: Paz,
        scheduler: Arc<dyn Scheduler>,
        proxy: Arc<dyn Proxy>,
        health: Arc<dyn HealthChecker>,
    ) -> Self {
        Self::with_resync(paz, scheduler, proxy, health, crate::DEFAULT_RESYNC)
    }

    /// A reconciler that reconciles every service every `resync` even without events.
    pub fn with_resync(
        paz: Paz,
        scheduler: Arc<dyn Scheduler>,
        proxy: Arc<dyn Proxy>,
        health: Arc<dyn HealthChecker>,
        resync: Duration,
    ) -> Self {
        Reconciler {
            inner: Arc::new(Inner {
                paz,
                scheduler,
                proxy,
                health,
                shared: Mutex::new(Shared::default()),
                queue: Mutex::new(WorkQueue::default()),
                wake: Notify::new(),
                health_wake: Notify::new(),
                full_resync: AtomicBool::new(true),
                panics: Default::default(),
                resync,
                routes: tokio::sync::Mutex::new(()),
                restored: AtomicBool::new(false),
                announcer: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Announces the instances and their routes through `announcer` whenever the routes are
    /// refreshed (a cluster's leader: routers on every host follow the announcements). Set
    /// once, before the reconciler runs.
    pub fn announce_with(&self, announcer: Arc<crate::announce::Announcer>) {
        let _ = self.inner.announcer.set(announcer);
    }

    /// The scheduler it drives.
    pub fn scheduler(&self) -> &Arc<dyn Scheduler> {
        &self.inner.scheduler
    }

    /// The proxy it routes through.
    pub fn proxy(&self) -> &Arc<dyn Proxy> {
        &self.inner.proxy
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, WorkQueue> {
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `service` due for a reconcile now.
    pub fn wake(&self, service: &str) {
        self.requeue(service, Duration::ZERO);
    }

    /// Asks for a reconcile of every service as soon as possible.
    pub fn resync_now(&self) {
        self.inner.full_resync.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// How many services are waiting for a reconcile.
    pub fn queued(&self) -> usize {
        self.queue().len()
    }

    fn requeue(&self, service: &str, after: Duration) {
        self.queue().schedule(service, Instant::now() + after);
        self.inner.wake.notify_one();
    }

    /// Runs the loop, the health task and the scheduler-event follower until `shutdown`
    /// turns true. The first pass reconciles every service. Each of the three is
    /// supervised: a panic is logged, counted ([`Reconciler::panics`]) and the task started
    /// again after a second (the loop with a full pass), so none ends silently.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let (reconciles, checks, events) = (self.clone(), self.clone(), self.clone());
        let changes = self.clone();
        tokio::join!(
            self.supervise("store changes", shutdown.clone(), move |stop| {
                changes.clone().follow_store_changes(stop)
            }),
            self.supervise("reconcile loop", shutdown.clone(), move |stop| {
                reconciles.clone().run_loop(stop)
            }),
            self.supervise("health checks", shutdown.clone(), move |stop| {
                checks.clone().run_health_checks(stop)
            }),
            self.supervise("scheduler events", shutdown, move |stop| {
                events.clone().follow_scheduler_events(stop)
            }),
        );
    }

    /// How many times a runtime task panicked (and was restarted).
    pub fn panics(&self) -> u64 {
        self.inner.panics.load(Ordering::SeqCst)
    }

    /// Runs the task `start` makes until it ends by itself or `shutdown`; a panic is logged,
    /// counted, and the task started again after a second.
    pub(crate) async fn supervise<F, Fut>(
        &self,
        task: &'static str,
        mut shutdown: watch::Receiver<bool>,
        start: F,
    ) where
        F: Fn(watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        loop {
            match tokio::spawn(start(shutdown.clone())).await {
                Err(error) if error.is_panic() => {
                    self.inner.panics.fetch_add(1, Ordering::SeqCst);
                    tracing::error!(task, "runtime task panicked; starting it again in 1 s");
                }
                _ => return,
            }
            if crate::hosts::stopped_during(Duration::from_secs(1), &mut shutdown).await {
                return;
            }
            self.resync_now();
        }
    }

    async fn run_loop(self, mut shutdown: watch::Receiver<bool>) {
        let mut engine_events = self.inner.paz.subscribe();
        let mut next_resync = Instant::now();
        loop {
            if self.inner.full_resync.swap(false, Ordering::SeqCst) || Instant::now() >= next_resync
            {
                next_resync = match self.reconcile_all().await {
                    Ok(()) => Instant::now() + self.inner.resync,
                    Err(error) => {
                        tracing::warn!(%error, "reconcile of every service failed; retrying");
                        Instant::now() + AFTER_ERROR
                    }
                };
            }
            let due = self.queue().pop_due(Instant::now());
            if !due.is_empty() {
                self.reconcile_services(due).await;
            }
            let next = self
                .queue()
                .next_due()
                .map_or(next_resync, |due| due.min(next_resync));
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.inner.wake.notified() => {}
                event = engine_events.recv() => {
                    // Take every event already queued, so a burst is one batch, not one
                    // pass per event.
                    let mut event = event;
                    loop {
                        match event {
                            Ok(event) => self.note_engine_event(&event.kind),
                            Err(broadcast::error::RecvError::Lagged(_)) => self.resync_now(),
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                        event = match engine_events.try_recv() {
                            Ok(next) => Ok(next),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                Err(broadcast::error::RecvError::Lagged(n))
                            }
                            Err(_) => break,
                        };
                    }
                }
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    fn note_engine_event(&self, kind: &EventKind) {
        let service = match kind {
            EventKind::ServiceCreated { service }
            | EventKind::ServiceUpdated { service }
            | EventKind::ServiceDeleted { service }
            | EventKind::ReleaseCreated { service, .. }
            | EventKind::DeploymentChanged { service, .. } => service,
            // The runtime's own reports (and steps, which it recorded) change nothing here;
            // a delivery that deploys makes a release and a deployment of its own.
            EventKind::DeploymentStep { .. }
            | EventKind::InstanceStarted { .. }
            | EventKind::InstanceHealthy { .. }
            | EventKind::InstanceUnhealthy { .. }
            | EventKind::InstanceStopped { .. }
            | EventKind::DeliveryRecorded { .. } => return,
        };
        self.wake(service);
    }

    /// Wakes the services whose records change in the store, whoever changed them (another
    /// replica's API in a cluster); a watch that fell behind means a full pass.
    async fn follow_store_changes(self, mut shutdown: watch::Receiver<bool>) {
        use futures_util::StreamExt;
        const WATCHED: [&str; 2] = ["/paz/services/", "/paz/deployments/"];
        let store = self.inner.paz.store().clone();
        let mut from = [0; 2];
        loop {
            let mut streams = Vec::new();
            for (prefix, from) in WATCHED.iter().zip(&from) {
                match store.watch(prefix, *from).await {
                    Ok(stream) => streams.push(stream.map(move |event| (*prefix, event))),
                    Err(error) => {
                        tracing::debug!(%error, prefix, "cannot watch the store yet");
                        break;
                    }
                }
            }
            if streams.len() == WATCHED.len() {
                let mut events = futures_util::stream::select_all(streams);
                loop {
                    tokio::select! {
                        event = events.next() => match event {
                            Some((prefix, Ok(event))) => {
                                let i = WATCHED.iter().position(|p| *p == prefix).unwrap_or(0);
                                from[i] = event.kv.mod_revision + 1;
                                let name = event.kv.key[prefix.len()..].split('/').next().unwrap_or("");
                                if !name.is_empty() {
                                    self.wake(name);
                                }
                            }
                            Some((_, Err(_))) | None => break,
                        },
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                }
            }
            // Changes may have been missed (a compaction, an outage): a full pass finds them.
            from = [0; 2];
            self.resync_now();
            if crate::hosts::stopped_during(Duration::from_secs(1), &mut shutdown).await {
                return;
            }
        }
    }

    async fn follow_scheduler_events(self, mut shutdown: watch::Receiver<bool>) {
        use futures_util::StreamExt;
        loop {
            let mut fresh = true;
            match self.inner.scheduler.events().await {
                // Whatever happened before the feed started is caught by a full pass.
                Ok(mut events) => loop {
                    if std::mem::take(&mut fresh) {
                        self.resync_now();
                    }
                    tokio::select! {
                        event = events.next() => match event {
                            Some(Ok(SchedulerEvent::Started { service, .. }
                                | SchedulerEvent::Exited { service, .. }
                                | SchedulerEvent::Removed { service, .. })) => self.wake(&service),
                            Some(Ok(SchedulerEvent::Resync) | Err(_)) => self.resync_now(),
                            None => break,
                        },
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                },
                Err(error) => tracing::warn!(%error, "scheduler events unavailable; retrying"),
            }
            // Events may have been missed meanwhile.
            self.resync_now();
            if crate::hosts::stopped_during(Duration::from_secs(1), &mut shutdown).await {
                return;
            }
        }
    }

    /// A service's instances, with the state the runtime sees (health included).
    pub fn instances(&self, service: &str) -> Vec<Instance> {
        let shared = self.shared();
        shared
            .instances
            .get(service)
            .into_iter()
            .flatten()
            .map(|i| Instance {
                state: observed_state(&shared, i),
                ..i.clone()
            })
            .collect()
    }

    /// The instances of every service, by service, as [`Reconciler::instances`] sees them,
    /// read under one lock (a page of a thousand services takes one, not a thousand).
    pub fn all_instances(&self) -> BTreeMap<String, Vec<Instance>> {
        let shared = self.shared();
        shared
            .instances
            .iter()
            .map(|(service, list)| {
                let list = list
                    .iter()
                    .map(|i| Instance {
                        state: observed_state(&shared, i),
                        ..i.clone()
                    })
                    .collect();
                (service.clone(), list)
            })
            .collect()
    }

    /// What is wrong with a service (scheduler errors, crash loops), for people.
    pub fn problems(&self, service: &str) -> Vec<String> {
        let shared = self.shared();
        let mut problems: Vec<String> = shared.problems.get(service).cloned().into_iter().collect();
        let now = Instant::now();
        let mut loops: Vec<_> = shared
            .backoff
            .iter()
            .filter(|((name, _), b)| name == service && b.restarts > 0)
            .collect();
        loops.sort_by_key(|((_, slot), _)| *slot);
        for ((_, slot), backoff) in loops {
            let wait = backoff.until.saturating_duration_since(now);
            problems.push(format!(
                "crash loop: slot {slot} restarted {} times; next start in {}",
                backoff.restarts,
                HumanDuration(Duration::from_millis(wait.as_millis() as u64))
            ));
        }
        problems
    }

    /// What the operator should know about the runtime as a whole: instances found at
    /// start-up of services the store does not know, left alone (see
    /// [`MAX_UNKNOWN_AT_START`]).
    pub fn warnings(&self) -> Vec<String> {
        let shared = self.shared();
        if shared.held.is_empty() {
            return Vec::new();
        }
        let count: usize = shared.held.values().sum();
        let names: Vec<&str> = shared.held.keys().map(String::as_str).collect();
        vec![format!(
            "found {count} instances of {} services this store does not know at start-up ({}); \
             left them alone, as the store may not be the one they were made from; create the \
             services again to adopt them, or remove them with the scheduler's own tools",
            names.len(),
            names.join(", ")
        )]
    }

    /// A service's whole status.
    pub async fn status(&self, service: &str) -> paz_core::Result<ServiceStatus> {
        let paz = &self.inner.paz;
        let record = paz.service(service).await?;
        let deployment = paz.latest_deployment_of(&record).await?;
        Ok(ServiceStatus {
            service: record,
            deployment,
            instances: self.instances(service),
            problems: self.problems(service),
        })
    }

    /// Pins `release` to the image its tag names now (the scheduler resolves it, pulling it
    /// when missing) and records the pin on the release; the release as it is when the
    /// scheduler cannot tell.
    async fn pin(&self, release: &Release) -> paz_core::Result<Release> {
        let Some(pin) = self
            .inner
            .scheduler
            .resolve_image(&release.spec.image)
            .await?
        else {
            return Ok(release.clone());
        };
        let pinned = self
            .inner
            .paz
            .pin_release(&release.service, release.version, &pin)
            .await?;
        tracing::info!(
            service = %release.service,
            release = release.version,
            image = %release.spec.image,
            pinned = pinned.image(),
            "release pinned to its image"
        );
        self.shared()
            .releases
            .insert((release.service.clone(), release.version), pinned.clone());
        Ok(pinned)
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

    /// Reconciles every service, and every instance whatever its service: one list of the
    /// services, one of the instances.
    pub async fn reconcile_all(&self) -> paz_core::Result<()> {
        let services = self.inner.paz.services().await?;
        let instances = match self.inner.scheduler.list(None).await {
            Ok(instances) => instances,
            Err(error) => {
                let names: Vec<String> = services.iter().map(|s| s.spec.name.clone()).collect();
                self.scheduler_down(&names, &error).await;
                return Err(error);
            }
        };
        let mut batch: BTreeMap<String, Option<Service>> = self
            .shared()
            .services
            .keys()
            .map(|name| (name.clone(), None))
            .collect();
        for instance in &instances {
            batch.entry(instance.service.clone()).or_insert(None);
        }
        for service in services {
            batch.insert(service.spec.name.clone(), Some(service));
        }
        self.hold_unknown_at_start(&batch, &instances);
        // Also whatever the runtime still remembers of services that are gone.
        {
            let shared = self.shared();
            for name in shared.instances.keys().chain(shared.draining.values()) {
                batch.entry(name.clone()).or_insert(None);
            }
        }
        let result = self
            .reconcile_batch(batch, group_by_service(instances))
            .await;
        // Every instance is tracked now: once each has had a check, routes are restored.
        if !std::mem::replace(&mut self.shared().first_pass_done, true)
            && let Err(error) = self.refresh_routes().await
        {
            tracing::warn!(%error, "route refresh failed");
        }
        result
    }

    /// On the first full pass only: when more than [`MAX_UNKNOWN_AT_START`] instances belong
    /// to services the store does not know, holds those services (never touched) and says so.
    fn hold_unknown_at_start(
        &self,
        batch: &BTreeMap<String, Option<Service>>,
        instances: &[Instance],
    ) {
        let mut shared = self.shared();
        if std::mem::replace(&mut shared.listed_once, true) {
            return;
        }
        let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
        for instance in instances {
            if matches!(batch.get(&instance.service), Some(None)) {
                *unknown.entry(instance.service.clone()).or_default() += 1;
            }
        }
        let count: usize = unknown.values().sum();
        if count > MAX_UNKNOWN_AT_START {
            tracing::warn!(
                count,
                services = ?unknown.keys().collect::<Vec<_>>(),
                "at start-up, many instances belong to services this store does not know: \
                 leaving them alone instead of removing them (is this the right store?)"
            );
            shared.held = unknown;
        }
    }

    /// Reconciles the named services.
    async fn reconcile_services(&self, names: Vec<String>) {
        let mut batch = BTreeMap::new();
        for name in names {
            match self.inner.paz.service(&name).await {
                Ok(service) => {
                    batch.insert(name, Some(service));
                }
                Err(Error::NotFound { .. }) => {
                    batch.insert(name, None);
                }
                Err(error) => {
                    tracing::warn!(service = %name, %error, "cannot load the service; retrying");
                    self.requeue(&name, AFTER_ERROR);
                }
            }
        }
        if batch.is_empty() {
            return;
        }
        let listed = if batch.len() > LIST_ALL_ABOVE {
            self.inner.scheduler.list(None).await.map(group_by_service)
        } else {
            let mut grouped = HashMap::new();
            let mut failed = None;
            for name in batch.keys() {
                match self.inner.scheduler.list(Some(name)).await {
                    Ok(instances) => {
                        grouped.insert(name.clone(), instances);
                    }
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            failed.map_or(Ok(grouped), Err)
        };
        match listed {
            Ok(grouped) => {
                // A failed route apply has requeued the batch's services already.
                let _ = self.reconcile_batch(batch, grouped).await;
            }
            Err(error) => {
                let names: Vec<String> = batch.into_keys().collect();
                self.scheduler_down(&names, &error).await;
                for name in &names {
                    self.requeue(name, AFTER_ERROR);
                }
            }
        }
    }

    /// Records that the scheduler cannot be reached, for `paz status` and the deployments.
    async fn scheduler_down(&self, names: &[String], error: &Error) {
        let message = format!("the scheduler is unavailable: {error}");
        {
            let mut shared = self.shared();
            for name in names {
                shared.problems.insert(name.clone(), message.clone());
            }
        }
        self.note_in_deployments(names, &message).await;
    }

    /// Reconciles a batch of services (`None`: the service no longer exists) given their
    /// instances, then applies the routes and starts the drains.
    async fn reconcile_batch(
        &self,
        batch: BTreeMap<String, Option<Service>>,
        mut instances: HashMap<String, Vec<Instance>>,
    ) -> paz_core::Result<()> {
        let domain = self.inner.paz.config().domain.clone();
        let mut batch = batch;
        {
            // Held services are not touched; a service created under a held name adopts
            // (or replaces) what was held.
            let mut shared = self.shared();
            if !shared.held.is_empty() {
                batch.retain(|name, service| {
                    if service.is_some() {
                        shared.held.remove(name);
                        true
                    } else {
                        !shared.held.contains_key(name)
                    }
                });
                instances.retain(|name, _| batch.contains_key(name));
            }
        }
        // Observe: forget what is gone (one pass over the tracked instances for the whole
        // batch), remember what is seen.
        {
            let mut shared = self.shared();
            let live: HashSet<&str> = batch
                .keys()
                .flat_map(|name| instances.get(name).into_iter().flatten())
                .map(|i| i.id.as_str())
                .collect();
            shared
                .tracked
                .retain(|id, t| !batch.contains_key(&t.service) || live.contains(id.as_str()));
            shared
                .draining
                .retain(|id, owner| !batch.contains_key(owner) || live.contains(id.as_str()));
            for (name, service) in &batch {
                let list = instances.get(name).map(Vec::as_slice).unwrap_or_default();
                shared.problems.remove(name);
                // Releases and crash counts belong to one life of a service.
                let life = service.as_ref().map(|s| s.created_at);
                if shared.epochs.get(name).copied() != life {
                    shared.releases.retain(|(owner, _), _| owner != name);
                    shared.backoff.retain(|(owner, _), _| owner != name);
                    match life {
                        Some(created) => shared.epochs.insert(name.clone(), created),
                        None => shared.epochs.remove(name),
                    };
                }
                // An instance seen without an address (created, not started) may get one;
                // one whose address changed or went (fleet moved its unit to another
                // machine, or its machine was lost) is gated again from scratch: it is
                // tracked anew below, unhealthy until a check passes at its new address.
                for instance in list {
                    let Some(tracked) = shared.tracked.get_mut(&instance.id) else {
                        continue;
                    };
                    if tracked.address.is_none() {
                        tracked.address.clone_from(&instance.address);
                    } else if tracked.address != instance.address {
                        tracing::info!(
                            id = %instance.id,
                            from = ?tracked.address,
                            to = ?instance.address,
                            "instance moved: checking it again before it is routed"
                        );
                        shared.tracked.remove(&instance.id);
                    }
                }
                if list.is_empty() {
                    shared.instances.remove(name);
                } else {
                    shared.instances.insert(name.clone(), list.to_vec());
                }
            }
        }
        // Track the health of instances seen for the first time.
        for (name, service) in &batch {
            let Some(service) = service else { continue };
            for instance in instances.get(name).into_iter().flatten() {
                if self.shared().tracked.contains_key(&instance.id) || !same_life(instance, service)
                {
                    continue;
                }
                // Without its release the check is unknown: it stays starting (untracked)
                // and the next pass tries again, rather than counting as check-less.
                let check = match self.release(name, instance.release).await {
                    Ok(release) => check_on_address(&release.spec),
                    Err(error) => {
                        tracing::warn!(id = %instance.id, %error, "cannot load the instance's release; tracking it later");
                        continue;
                    }
                };
                let tracked = Tracked::new(instance, check, format!("{name}.{domain}"));
                self.shared().tracked.insert(instance.id.clone(), tracked);
            }
        }
        self.inner.health_wake.notify_one();

        // Plan and act, service by service.
        let mut drains: Vec<(String, String)> = Vec::new();
        let mut actions: Vec<(String, Action)> = Vec::new();
        let mut weights: Vec<(String, Option<BTreeMap<u64, u32>>)> = Vec::new();
        for (name, service) in &batch {
            let list = instances.remove(name).unwrap_or_default();
            let Some(service) = service else {
                // Deleted: its instances go.
                for instance in &list {
                    drains.push((name.clone(), instance.id.clone()));
                }
                weights.push((name.clone(), None));
                if !list.is_empty() {
                    actions.push((name.clone(), Action::requeue(BUSY)));
                }
                continue;
            };
            // Instances of an earlier life of a service deleted and created again.
            for instance in list.iter().filter(|i| !same_life(i, service)) {
                drains.push((name.clone(), instance.id.clone()));
            }
            let observed = self.observe(&list, service);
            // Its drains count only if its reconcile went through: a failed one keeps its
            // old weights, so it must keep its old instances too.
            let mut service_drains = Vec::new();
            let span = tracing::debug_span!(
                "reconcile",
                service = %name,
                release = service.current_release.unwrap_or_default()
            );
            match self
                .reconcile_service(service, &observed, &mut service_drains)
                .instrument(span)
                .await
            {
                Ok((service_weights, action)) => {
                    drains.extend(service_drains);
                    weights.push((name.clone(), Some(service_weights)));
                    actions.push((name.clone(), action));
                }
                Err(error) => {
                    tracing::warn!(service = %name, %error, "reconcile of service failed");
                    self.shared()
                        .problems
                        .insert(name.clone(), error.to_string());
                    // Keep routing it as before rather than dropping its backends.
                    actions.push((name.clone(), Action::requeue(AFTER_ERROR)));
                }
            }
        }

        let jobs: Vec<DrainJob> = {
            // One lock: a route refresh between the two would see the new weights without
            // the drains and drop the old instances instead of draining them.
            let mut shared = self.shared();
            for (name, service) in batch {
                match service {
                    Some(service) => shared.services.insert(name, service),
                    None => shared.services.remove(&name),
                };
            }
            for (name, service_weights) in weights {
                match service_weights {
                    Some(w) => shared.weights.insert(name, w),
                    None => shared.weights.remove(&name),
                };
            }
            drains
                .into_iter()
                .filter_map(|(service, id)| mark_draining(&mut shared, service, id))
                .collect()
        };
        // Drains start once a table without their instances' traffic is applied; if this
        // apply fails they stay marked and wait for the next one that succeeds (so the old
        // instances are drained, not dropped), and every service here is looked at again.
        self.shared().pending_drains.extend(jobs);
        let applied = self.refresh_routes().await;
        if let Err(error) = &applied {
            tracing::warn!(%error, "applying the routes failed; retrying");
        }
        for (name, action) in actions {
            let action = match (&applied, action) {
                (Err(_), action) => action.sooner(Action::requeue(AFTER_ERROR)),
                (Ok(()), action) => action,
            };
            if let Action::Requeue(after) = action {
                self.requeue(&name, after);
            }
        }
        applied
    }

    /// Records a problem that holds up every deployment in progress (once per distinct
    /// message), so `paz deploy` and the history say why nothing moves.
    async fn note_in_deployments(&self, names: &[String], message: &str) {
        for name in names {
            let Ok(Some(mut deployment)) = self.inner.paz.latest_deployment(name).await else {
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
            .filter(|i| same_life(i, service))
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

    /// One service: plan, act, record. Returns the router weights of its releases and when
    /// to look at it again.
    async fn reconcile_service(
        &self,
        service: &Service,
        observed: &[ObservedInstance],
        drains: &mut Vec<(String, String)>,
    ) -> paz_core::Result<(BTreeMap<u64, u32>, Action)> {
        let name = &service.spec.name;
        {
            // A slot that has been healthy for a while is out of its crash loop.
            let mut shared = self.shared();
            for o in observed
                .iter()
                .filter(|o| o.state == InstanceState::Healthy && backoff::is_forgiven(o.age))
            {
                shared.backoff.remove(&(name.clone(), o.slot));
            }
        }
        let paz = &self.inner.paz;
        let Some(target) = service.current_release else {
            for instance in observed {
                drains.push((name.clone(), instance.id.clone()));
            }
            let action = if observed.is_empty() {
                Action::await_change()
            } else {
                Action::requeue(BUSY)
            };
            return Ok((BTreeMap::new(), action));
        };
        let release = self.release(name, target).await?;
        let mut deployment = paz
            .latest_deployment_of(service)
            .await?
            .filter(|d| !d.status.is_final() && d.release == target);
        if let Some(d) = deployment.as_mut()
            && lifecycle::begin(d, jiff::Timestamp::now())
        {
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
                paz_core::deploy::Action::Fail { reason } => {
                    failure.get_or_insert_with(|| reason.clone());
                }
                paz_core::deploy::Action::Drain { id } => {
                    if !self.shared().draining.contains_key(id) {
                        drains.push((name.clone(), id.clone()));
                        steps.push((format!("drain {id}"), StepStatus::Succeeded, None));
                    }
                }
                paz_core::deploy::Action::Remove { id } => {
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
                    match self.inner.scheduler.remove(id).await {
                        Ok(()) => {
                            if let Some(o) = observed.iter().find(|o| &o.id == id) {
                                self.inner.paz.publish(EventKind::InstanceStopped {
                                    service: name.clone(),
                                    instance: id.clone(),
                                    release: o.release,
                                });
                            }
                        }
                        Err(error) => tracing::warn!(%id, %error, "remove failed"),
                    }
                }
                paz_core::deploy::Action::Start { slot } => {
                    if failure.is_none() && !self.in_backoff(name, *slot) {
                        starts.push(*slot);
                    }
                }
            }
        }
        // The release's environment with its secrets opened (only for the instances).
        let env = if starts.is_empty() {
            None
        } else {
            match self.inner.paz.instance_env(&release).await {
                Ok(env) => Some(env),
                Err(error) => {
                    tracing::warn!(service = %name, release = target, %error, "cannot start instances");
                    steps.push((
                        format!("start v{target}"),
                        StepStatus::Failed,
                        Some(error.to_string()),
                    ));
                    if deployment.is_some() {
                        failure.get_or_insert(error.to_string());
                    }
                    starts.clear();
                    None
                }
            }
        };
        // The release's exact image, pinned when it first starts (its tag may move later):
        // every instance of it, crash replacements and rollbacks included, runs that image.
        let (release, pin_error) = if starts.is_empty() || release.image_digest.is_some() {
            (release, None)
        } else {
            match self.pin(&release).await {
                Ok(pinned) => (pinned, None),
                Err(error) => (release, Some(error)),
            }
        };
        // Start the new instances at once: each `docker create` + `start` takes a while.
        let started = match &pin_error {
            Some(error) => starts
                .iter()
                .map(|&slot| (slot, Err(scheduler_error_like(error))))
                .collect(),
            None => {
                futures_util::future::join_all(starts.iter().map(|&slot| {
                    let mut spec = InstanceSpec::from_release(&release, slot);
                    if let Some(env) = &env {
                        spec.env.clone_from(env);
                    }
                    spec.epoch = Some(epoch_of(service));
                    async move { (slot, self.inner.scheduler.start(&spec).await) }
                }))
                .await
            }
        };
        for (slot, result) in started {
            match result {
                Ok(instance) => {
                    tracing::info!(service = %name, release = target, slot, id = %instance.id, "instance started");
                    self.inner.paz.publish(EventKind::InstanceStarted {
                        service: name.clone(),
                        instance: instance.id.clone(),
                        release: target,
                    });
                    steps.push((
                        format!("start v{target} slot {slot}: {}", instance.id),
                        StepStatus::Succeeded,
                        None,
                    ));
                    self.track_new(&instance, &release);
                }
                Err(error) => {
                    let message = format!("cannot start v{target} slot {slot}: {error}");
                    // The scheduler out of reach is not the release's fault: the deployment
                    // waits (recorded once per distinct error) and the start is retried.
                    // Anything else (an image that cannot be pulled, a refused spec) fails it.
                    let transient = error.port_kind().is_some_and(|k| k.is_transient());
                    let said_already = deployment.as_ref().is_some_and(|d| {
                        d.steps.last().and_then(|s| s.message.as_deref())
                            == Some(error.to_string().as_str())
                    });
                    if !(transient && said_already) {
                        steps.push((
                            format!("start v{target} slot {slot}"),
                            StepStatus::Failed,
                            Some(error.to_string()),
                        ));
                    }
                    if deployment.is_some() && !transient {
                        failure.get_or_insert(message);
                    } else if deployment.is_some() {
                        tracing::warn!(service = %name, slot, %error, "the scheduler is out of reach; the deployment waits");
                        self.shared().problems.insert(name.clone(), message);
                    } else {
                        self.note_crash(name, slot);
                        self.shared().problems.insert(name.clone(), message);
                    }
                }
            }
        }
        let mut finished = false;
        if let Some(d) = deployment.as_mut() {
            if !steps.is_empty() {
                for (step, status, message) in steps {
                    d.record(step, status, message);
                }
                paz.save_deployment(d).await?;
            }
            match lifecycle::outcome(&plan, failure) {
                Outcome::Continue => {}
                Outcome::Failed(reason) => {
                    tracing::warn!(service = %name, deployment = %d.id, %reason, "deployment failed; reverting");
                    paz.finish_deployment(&d.id, Err(reason)).await?;
                    finished = true;
                }
                Outcome::Succeeded => {
                    tracing::info!(service = %name, deployment = %d.id, "deployment succeeded");
                    paz.finish_deployment(&d.id, Ok(())).await?;
                    finished = true;
                }
            }
        }
        let settled = plan.converged
            && plan.actions.is_empty()
            && observed.iter().all(|o| o.state == InstanceState::Healthy);
        let action = if finished || deployment.is_some() || !settled {
            Action::requeue(BUSY)
        } else if self.shared().backoff.keys().any(|(owner, _)| owner == name) {
            // Forgive the crash loop once its slot has stayed healthy long enough.
            Action::requeue(backoff::RESET_AFTER)
        } else {
            Action::await_change()
        };
        Ok((plan.weights, action))
    }

    /// Whether the routes are restored after start-up: the first full pass listed the
    /// instances and every one of them has had its first health check. Until then no route
    /// table is applied.
    pub fn is_restored(&self) -> bool {
        if self.inner.restored.load(Ordering::SeqCst) {
            return true;
        }
        let shared = self.shared();
        let done = shared.first_pass_done
            && shared
                .tracked
                .iter()
                .all(|(id, t)| t.checked || shared.draining.contains_key(id));
        drop(shared);
        if done {
            self.inner.restored.store(true, Ordering::SeqCst);
        }
        done
    }

    /// Stops waiting for the first checks: route tables are applied from now on, and the
    /// current one at once.
    pub async fn finish_restore(&self) -> paz_core::Result<()> {
        self.inner.restored.store(true, Ordering::SeqCst);
        self.refresh_routes().await
    }

    /// Waits until the routes are [restored](Reconciler::is_restored) and applied, for at
    /// most `timeout` (then applies what it has); returns whether they were restored in
    /// time. A server calls it before it accepts traffic, so a restart never answers 404 for
    /// a service whose instances are running.
    pub async fn wait_restored(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let restored = loop {
            if self.is_restored() {
                break true;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    ?timeout,
                    "routes not restored in time (instances not checked yet): routing what is known"
                );
                break false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if let Err(error) = self.finish_restore().await {
            tracing::warn!(%error, "cannot apply the restored routes");
        }
        restored
    }

    /// Recomputes the route table from the latest state and applies it if it changed
    /// (once the routes are [restored](Reconciler::is_restored); before, it does nothing).
    pub async fn refresh_routes(&self) -> paz_core::Result<()> {
        if !self.is_restored() {
            return Ok(());
        }
        let _one_at_a_time = self.inner.routes.lock().await;
        let (table, drains) = {
            let mut shared = self.shared();
            let drains = std::mem::take(&mut shared.pending_drains);
            (
                build_table(&shared, &self.inner.paz.config().domain),
                drains,
            )
        };
        if let Some(announcer) = self.inner.announcer.get() {
            let instances = self.all_instances();
            let records = crate::announce::announcements(instances.values().flatten(), &table);
            if let Err(error) = announcer.publish(&records).await {
                self.shared().pending_drains.extend(drains);
                return Err(error);
            }
        }
        match self.apply_routes(table).await {
            Ok(()) => {
                for job in drains {
                    self.spawn_drain(job);
                }
                Ok(())
            }
            Err(error) => {
                self.shared().pending_drains.extend(drains);
                Err(error)
            }
        }
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
            service,
            release,
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
                // Let the next reconcile plan the drain again rather than leave it half done.
                tracing::warn!(%id, %error, "stopping a drained instance failed; will retry");
                this.shared().draining.remove(&id);
                this.requeue(&service, AFTER_ERROR);
                return;
            }
            this.inner.paz.publish(EventKind::InstanceStopped {
                service: service.clone(),
                instance: id,
                release,
            });
            this.wake(&service);
        });
    }

    /// Tracks an instance this runtime just started, and counts it among the service's
    /// instances at once: if it passes its check before the next observation lists it, the
    /// route refresh of that pass must already see it.
    fn track_new(&self, instance: &Instance, release: &Release) {
        let host = format!("{}.{}", instance.service, self.inner.paz.config().domain);
        let tracked = Tracked::new(instance, check_on_address(&release.spec), host);
        let mut shared = self.shared();
        shared.tracked.insert(instance.id.clone(), tracked);
        let listed = shared
            .instances
            .entry(instance.service.clone())
            .or_default();
        if !listed.iter().any(|i| i.id == instance.id) {
            listed.push(instance.clone());
        }
        drop(shared);
        self.inner.health_wake.notify_one();
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
        let wait = backoff::restart_delay(backoff.restarts);
        backoff.until = Instant::now() + wait;
        tracing::warn!(%service, slot, restarts = backoff.restarts, ?wait, "instance crashed; restarting after backoff");
    }

    async fn run_health_checks(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let (due, next, checking) = self.due_checks();
            let started_checks = !due.is_empty();
            for (id, target) in due {
                let this = self.clone();
                tokio::spawn(async move {
                    // In a task of its own: a checker that panics fails this check instead of
                    // leaving the instance marked as being checked forever.
                    let report = {
                        let (health, target) = (this.inner.health.clone(), target.clone());
                        tokio::spawn(async move { health.check(&target).await })
                            .await
                            .unwrap_or_else(|error| {
                                tracing::error!(%id, %error, "the health checker panicked");
                                paz_core::health::HealthReport {
                                    healthy: false,
                                    detail: "the health checker panicked".into(),
                                    latency: Duration::ZERO,
                                }
                            })
                    };
                    let transition = {
                        let mut shared = this.shared();
                        match shared.tracked.get_mut(&id) {
                            Some(t) => {
                                t.checking = false;
                                t.checked = true;
                                let transition = t.health.observe(
                                    report.healthy,
                                    t.started.elapsed(),
                                    &target.check,
                                );
                                t.next_check =
                                    Instant::now() + t.health.next_interval(&target.check);
                                match transition {
                                    Transition::BecameHealthy => {
                                        t.healthy_at = Some(Instant::now());
                                        tracing::info!(%id, service = %t.service, after = ?t.started.elapsed(), "instance healthy");
                                        this.inner.paz.publish(EventKind::InstanceHealthy {
                                            service: t.service.clone(),
                                            instance: id.clone(),
                                            release: t.release,
                                        });
                                    }
                                    Transition::BecameUnhealthy => {
                                        tracing::warn!(%id, detail = %report.detail, "instance failed its health check");
                                        this.inner.paz.publish(EventKind::InstanceUnhealthy {
                                            service: t.service.clone(),
                                            instance: id.clone(),
                                            release: t.release,
                                            detail: report.detail.clone(),
                                        });
                                    }
                                    Transition::None => {}
                                }
                                (transition != Transition::None).then(|| t.service.clone())
                            }
                            None => None,
                        }
                    };
                    // Route a newly healthy instance now, not at the next reconcile; during
                    // start-up, the last first check applies the restored table.
                    let restoring = !this.inner.restored.load(Ordering::SeqCst);
                    if (transition.is_some() || restoring)
                        && let Err(error) = this.refresh_routes().await
                    {
                        tracing::warn!(%error, "route refresh failed");
                    }
                    if let Some(service) = transition {
                        this.wake(&service);
                    }
                });
            }
            // Checks in flight are looked at again within STARTING_CHECK of finishing (they
            // do not wake the task one by one: that would be one pass per check).
            let mut wait = next.map_or(HEALTH_IDLE, |at| {
                at.saturating_duration_since(Instant::now())
                    .min(HEALTH_IDLE)
            });
            if checking || started_checks {
                wait = wait.min(STARTING_CHECK);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.health_wake.notified() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// The checks due now (marked as running), when the next one is due, and whether any
    /// check is still running.
    fn due_checks(&self) -> (Vec<(String, HealthTarget)>, Option<Instant>, bool) {
        let mut shared = self.shared();
        let now = Instant::now();
        let Shared {
            tracked, draining, ..
        } = &mut *shared;
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        let mut checking = false;
        for (id, t) in tracked.iter_mut() {
            checking |= t.checking;
            if t.checking || draining.contains_key(id) {
                continue;
            }
            let (Some(check), Some(address)) = (&t.check, &t.address) else {
                continue;
            };
            if t.next_check > now {
                next = Some(next.map_or(t.next_check, |n| n.min(t.next_check)));
                continue;
            }
            let address = check
                .port
                .map_or_else(|| address.clone(), |port| with_port(address, port));
            t.checking = true;
            due.push((
                id.clone(),
                HealthTarget {
                    address,
                    check: check.clone(),
                    host: Some(t.host.clone()),
                },
            ));
        }
        (due, next, checking)
    }
}

/// Groups instances by service.
fn group_by_service(instances: Vec<Instance>) -> HashMap<String, Vec<Instance>> {
    let mut grouped: HashMap<String, Vec<Instance>> = HashMap::new();
    for instance in instances {
        grouped
            .entry(instance.service.clone())
            .or_default()
            .push(instance);
    }
    grouped
}

/// Marks an instance as draining (no new requests once the routes are applied) and returns
/// what its drain needs; `None` when it is already draining.
fn mark_draining(shared: &mut Shared, service: String, id: String) -> Option<DrainJob> {
    if shared.draining.contains_key(&id) {
        return None;
    }
    shared.draining.insert(id.clone(), service.clone());
    let instance = shared
        .instances
        .get(&service)
        .and_then(|list| list.iter().find(|i| i.id == id));
    let address = instance.and_then(|i| i.address.clone());
    let release = instance.map_or(0, |i| i.release);
    let timeout = instance
        .and_then(|i| shared.releases.get(&(i.service.clone(), i.release)))
        .map_or(Duration::from_secs(30), |r| {
            r.spec.deploy.drain_timeout.get()
        });
    Some(DrainJob {
        id,
        service,
        release,
        address,
        timeout,
    })
}

/// The life of a service its instances are labelled with: its creation time.
/// A scheduler error like `error`, for each slot a failed pin stops from starting.
fn scheduler_error_like(error: &paz_core::Error) -> paz_core::Error {
    match error {
        paz_core::Error::Scheduler(e) => paz_core::Error::scheduler(e.kind, e.message.clone()),
        other => paz_core::Error::scheduler(
            other
                .port_kind()
                .unwrap_or(paz_core::PortErrorKind::Internal),
            other.to_string(),
        ),
    }
}

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

/// The route table from what the runtime knows, by the one builder of the policy.
fn build_table(shared: &Shared, domain: &str) -> RouteTable {
    let routed: Vec<RoutedInstance> = shared
        .instances
        .values()
        .flatten()
        .filter_map(|instance| {
            Some(RoutedInstance {
                service: &instance.service,
                release: instance.release,
                address: instance.address.as_deref()?,
                state: observed_state(shared, instance),
            })
        })
        .collect();
    route_table(
        shared.services.values(),
        domain,
        &routed,
        &shared.weights,
        &shared.table,
    )
}

/// The state of an instance as the planner sees it.
fn observed_state(shared: &Shared, instance: &Instance) -> InstanceState {
    let tracked = shared.tracked.get(&instance.id);
    instance_state(
        instance.state,
        shared.draining.contains_key(&instance.id),
        tracked.map(|t| &t.health),
        tracked.and_then(|t| t.check.as_ref()),
    )
}

/// The instance's health check, with no port of its own when it checks the routed port:
/// then it checks the instance's address as the scheduler gave it, which on Swarm and fleet
/// is the host's address and the port published there, not the container's port.
fn check_on_address(spec: &paz_core::ServiceSpec) -> Option<HealthCheck> {
    let mut check = check_for(spec)?;
    if check.port.is_some() && check.port == spec.routed_port().map(u32::from) {
        check.port = None;
    }
    Some(check)
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
