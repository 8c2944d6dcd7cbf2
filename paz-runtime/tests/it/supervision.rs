//! A runtime task that panics is restarted, counted and reported, and the runtime keeps
//! deploying.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use paz_core::health::FakeHealthChecker;
use paz_core::proxy::FakeProxy;
use paz_core::scheduler::{
    EventStream, FakeScheduler, InstanceSpec, LogOptions, LogStream, Scheduler,
};
use paz_core::{
    DeploymentStatus, EngineConfig, Host, Instance, MemoryStore, Paz, ServiceSpec, Trigger,
};
use paz_runtime::Runtime;

/// The fake scheduler, but its event feed panics the first time it is asked for.
struct PanicsOnce {
    inner: FakeScheduler,
    panicked: AtomicBool,
}

#[async_trait]
impl Scheduler for PanicsOnce {
    async fn hosts(&self) -> paz_core::Result<Vec<Host>> {
        self.inner.hosts().await
    }
    async fn start(&self, spec: &InstanceSpec) -> paz_core::Result<Instance> {
        self.inner.start(spec).await
    }
    async fn stop(&self, id: &str, grace: Duration) -> paz_core::Result<()> {
        self.inner.stop(id, grace).await
    }
    async fn remove(&self, id: &str) -> paz_core::Result<()> {
        self.inner.remove(id).await
    }
    async fn list(&self, service: Option<&str>) -> paz_core::Result<Vec<Instance>> {
        self.inner.list(service).await
    }
    async fn inspect(&self, id: &str) -> paz_core::Result<Option<Instance>> {
        self.inner.inspect(id).await
    }
    async fn logs(&self, id: &str, options: LogOptions) -> paz_core::Result<LogStream> {
        self.inner.logs(id, options).await
    }
    async fn events(&self) -> paz_core::Result<EventStream> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("the event feed broke");
        }
        self.inner.events().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_task_is_restarted_counted_and_the_runtime_goes_on() {
    let paz = Paz::new(Arc::new(MemoryStore::new()), EngineConfig::default());
    let scheduler = Arc::new(PanicsOnce {
        inner: FakeScheduler::new(),
        panicked: AtomicBool::new(false),
    });
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let runtime = Runtime::builder(paz.clone())
        .scheduler(scheduler.clone())
        .proxy(Arc::new(FakeProxy::new()))
        .health(Arc::new(FakeHealthChecker::new()))
        .build()
        .unwrap()
        .spawn(shutdown);
    let mut web = ServiceSpec::new("web", "demo:v1");
    web.instances = 2;
    paz.create_service(web, Trigger::create()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done = paz.deployment("web-1").await.unwrap().status == DeploymentStatus::Succeeded;
        if done && runtime.panics() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deployment {:?}, panics {}",
            paz.deployment("web-1").await.unwrap().status,
            runtime.panics()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(scheduler.panicked.load(Ordering::SeqCst));
    assert_eq!(runtime.instances("web").len(), 2);
    stop.send(true).unwrap();
    runtime.join().await;
}
